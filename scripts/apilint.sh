#!/usr/bin/env bash
# Lints the OpenAPI document (app/httpapi/openapi.yaml, or the file given)
# with Spectral's and Redocly's recommended rules, as internal/apilint
# configures them. The linters are npm packages pinned by
# internal/apilint/package-lock.json; they are installed once per lockfile
# into a cache (BULKHEAD_APILINT_CACHE, else ~/.cache/bulkhead/apilint-HASH)
# and reused. Needs node and npm (scripts/install-deps.sh installs them).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/internal/apilint"
doc="${1:-$root/app/httpapi/openapi.yaml}"

for tool in node npm; do
	if ! command -v "$tool" >/dev/null; then
		echo "apilint: $tool is missing: run make deps (scripts/install-deps.sh)" >&2
		exit 1
	fi
done

hash="$(cat "$tools/package.json" "$tools/package-lock.json" | sha256sum | cut -c1-16)"
cache="${BULKHEAD_APILINT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bulkhead/apilint-$hash}"
install() {
	echo "apilint: installing Spectral and Redocly into $cache (once per lockfile)" >&2
	rm -rf "$cache.tmp.$$"
	mkdir -p "$cache.tmp.$$"
	trap 'rm -rf "$cache.tmp.$$"' EXIT
	cp "$tools/package.json" "$tools/package-lock.json" "$cache.tmp.$$/"
	(cd "$cache.tmp.$$" && npm ci --no-audit --no-fund --loglevel=error --ignore-scripts >&2)
	touch "$cache.tmp.$$/.installed"
	rm -rf "$cache"
	mv "$cache.tmp.$$" "$cache" # whole or not at all: a cut install is redone
	trap - EXIT
}
if [[ ! -f $cache/.installed ]]; then
	# One install at a time: runs that start together on a fresh machine
	# (the tests run in parallel) wait for the first instead of replacing
	# the cache under each other's feet.
	mkdir -p "$(dirname "$cache")"
	exec 9>"$cache.lock"
	flock 9
	if [[ ! -f $cache/.installed ]]; then install; fi
	flock -u 9
fi

bin="$cache/node_modules/.bin"
status=0
echo "== Spectral (spectral:oas recommended)"
"$bin/spectral" lint --ruleset "$tools/spectral.yaml" --fail-severity=warn "$doc" || status=1
echo "== Redocly (recommended)"
# Redocly fails on errors only; a warning of a recommended rule fails here too.
out="$(REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true \
	"$bin/redocly" lint --config "$tools/redocly.yaml" --format=stylish "$doc" 2>&1)" || status=1
echo "$out"
if grep -Eq 'You have [0-9]+ warnings?' <<<"$out"; then status=1; fi
exit "$status"
