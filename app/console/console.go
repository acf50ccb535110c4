// Package console serves Bulkhead's web console: a single-page app built
// from web/ (make console) into dist/, embedded in the binary and served
// under Prefix by the same server as the API, whose public endpoints are
// the console's only source of data.
//
// Everything is served from this origin under a strict
// Content-Security-Policy: scripts and styles from files here only (no
// inline script, no inline style), connections to this origin only — and,
// when the console signs in with identity providers, to their origins —
// no framing, and Trusted Types so that no string becomes markup.
//
// Why an identity provider's origin is in connect-src: signing in with one
// is the Authorization Code flow with PKCE run by the browser as a public
// client, so the page itself reads the provider's discovery document and
// posts the code and its verifier to the token endpoint (a fetch, which
// connect-src governs). Going to the authorization endpoint is a top-level
// navigation, which the policy does not govern: form-action stays 'none'.
// The origin is exactly the issuer's (scheme, host and port; no wildcard),
// added only for issuers configured with a console client, and it grants
// fetches only: scripts, styles, images and frames stay this origin's. A
// page that could be made to send data there would be sending it to the
// party already trusted to vouch for its users, and script-src 'self' with
// Trusted Types is what keeps foreign script out in the first place.
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
)

// Prefix is the path the console is served under.
const Prefix = "/console/"

// CSP is the Content-Security-Policy of every console response when the
// console signs in with no identity provider.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; font-src 'self'; " +
	"connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; " +
	"require-trusted-types-for 'script'; trusted-types 'none'"

// policy is CSP with the origins of signIn also allowed in connect-src.
// Each must be a bare origin: scheme://host[:port], nothing else.
func policy(signIn []string) (string, error) {
	if len(signIn) == 0 {
		return CSP, nil
	}
	for _, o := range signIn {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
			u.Scheme+"://"+u.Host != o || strings.ContainsAny(o, " ;,*'\"") {
			return "", fmt.Errorf("console: %q is not an origin (scheme://host[:port])", o)
		}
	}
	return strings.Replace(CSP, "connect-src 'self';", "connect-src 'self' "+strings.Join(signIn, " ")+";", 1), nil
}

//go:embed all:dist
var dist embed.FS

// asset is one embedded file, read once.
type asset struct {
	body        []byte
	etag        string
	contentType string
}

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".txt":  "text/plain; charset=utf-8",
}

// Handler serves the console: files under Prefix+"assets/", and the app's
// page for every other path under Prefix, which the app routes itself.
// Only GET and HEAD are answered; anything else is a 405.
type Handler struct {
	assets map[string]asset // by path under dist, "index.html", "assets/console.js"
	csp    string
}

// New reads the embedded build. signIn are the origins of the identity
// providers the console signs in with (config.OIDC.ConsoleOrigins), which
// its policy lets it connect to. It fails when the build is broken — the
// binary was built without `make console` output — or an origin is not one.
func New(signIn ...string) (*Handler, error) {
	csp, err := policy(signIn)
	if err != nil {
		return nil, err
	}
	h := &Handler{assets: map[string]asset{}, csp: csp}
	err = fs.WalkDir(dist, "dist", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := dist.ReadFile(p)
		if err != nil {
			return err
		}
		ct, ok := contentTypes[path.Ext(p)]
		if !ok {
			return fmt.Errorf("console: no content type for %s", p)
		}
		sum := sha256.Sum256(body)
		h.assets[strings.TrimPrefix(p, "dist/")] = asset{body: body, etag: `"` + hex.EncodeToString(sum[:12]) + `"`, contentType: ct}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("console: read the embedded build: %w", err)
	}
	if _, ok := h.assets["index.html"]; !ok {
		return nil, fmt.Errorf("console: the embedded build has no index.html: run make console")
	}
	return h, nil
}

// ServeHTTP answers one request under Prefix.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", h.csp)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("Cross-Origin-Opener-Policy", "same-origin")
	hdr.Set("Cross-Origin-Resource-Policy", "same-origin")
	hdr.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=()")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, Prefix)
	if !ok {
		http.NotFound(w, r)
		return
	}
	name := "index.html"
	if strings.HasPrefix(rest, "assets/") || path.Ext(rest) != "" {
		// A file: it exists, or it is a 404 (never the page, which would
		// hand HTML to a script or style tag).
		name = path.Clean(rest)
	}
	a, ok := h.assets[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	hdr.Set("Content-Type", a.contentType)
	hdr.Set("ETag", a.etag)
	// Revalidate every time: file names carry no hash, and a 304 is cheap.
	hdr.Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}
