// Package apilint holds the configuration of the OpenAPI linters that
// scripts/apilint.sh runs on app/httpapi/openapi.yaml — Spectral's and
// Redocly's recommended rules, the npm packages pinned by package-lock.json
// here — and the test that keeps the document clean under them.
package apilint
