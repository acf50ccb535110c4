#!/usr/bin/env bash
# Installs the pinned Helm 3 and Helm 4 the chart tests run against into
# bin/tools/helm3/helm and bin/tools/helm4/helm.
#
# Each is built once per version and flags with `go install` and kept in a
# cache shared by every checkout of the repository:
# ${BULKHEAD_CACHE:-${XDG_CACHE_HOME:-~/.cache}/bulkhead}/helm/. A later run,
# in this checkout or a fresh one, only links the cached binary (well under a
# second). A first build compiles several hundred packages and can take many
# minutes on a busy machine, so it prints how far it got every 15 seconds.
set -euo pipefail

HELM3_VERSION="${HELM3_VERSION:-v3.22.0}"
HELM4_VERSION="${HELM4_VERSION:-v4.3.1}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${BULKHEAD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bulkhead}/helm"

# install MAJOR VERSION LDFLAGS: builds helm.sh/helm/vMAJOR/cmd/helm@VERSION
# into the cache unless it is there, and links it into bin/tools/helmMAJOR.
install() {
	local major="$1" version="$2" ldflags="$3"
	local want="helm.sh/helm/v$major/cmd/helm@$version $ldflags"
	# The cache entry is keyed by everything that makes the binary: the
	# package, version and flags, and the Go toolchain.
	local key
	key="$(printf '%s\n%s\n' "$want" "$(go env GOVERSION GOOS GOARCH)" | sha256sum | cut -c1-16)"
	local entry="$cache/helm$major-$version-$key"
	local link="$root/bin/tools/helm$major/helm"
	local start=$SECONDS
	if [[ ! -x $entry/helm ]]; then
		echo "..   helm $version: building once into ${entry/#"$HOME"/\~} (minutes on a busy machine; progress every 15s)"
		mkdir -p "$cache"
		local tmp
		tmp="$(mktemp -d "$cache/.build-XXXXXX")"
		# go install -v names each package it compiles on stderr: their
		# count is the progress shown.
		GOBIN="$tmp" CGO_ENABLED=0 go install -v -trimpath -ldflags "$ldflags" \
			"helm.sh/helm/v$major/cmd/helm@$version" 2>"$tmp/build.log" &
		local pid=$!
		while kill -0 "$pid" 2>/dev/null; do
			for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do
				sleep 1
				kill -0 "$pid" 2>/dev/null || break 2
			done
			local n
			n="$(grep -vc '^go: ' "$tmp/build.log" || true)"
			echo "..   helm $version: $n packages compiled so far (those in the Go build cache are reused), $((SECONDS - start))s"
		done
		if ! wait "$pid"; then
			echo "FAIL helm $version: go install failed:" >&2
			tail -n 40 "$tmp/build.log" >&2
			rm -rf "$tmp"
			exit 1
		fi
		rm -f "$tmp/build.log"
		if [[ "$("$tmp/helm" version --template '{{.Version}}' 2>/dev/null)" != "$version" ]]; then
			echo "FAIL helm $version: the binary built does not report $version" >&2
			rm -rf "$tmp"
			exit 1
		fi
		# Another checkout may have finished the same build meanwhile: either
		# result is the same binary, so the first rename wins.
		mv -T "$tmp" "$entry" 2>/dev/null || rm -rf "$tmp"
	fi
	mkdir -p "$(dirname "$link")"
	ln -sfn "$entry/helm" "$link"
	echo "ok   helm $version in ${link#"$root"/} ($((SECONDS - start))s)"
}

# The flags Helm's own Makefile builds its releases with. Without the version
# flag `helm version` reports a placeholder. Helm 3 also takes the Kubernetes
# version it assumes when there is no cluster (`helm template` without
# --kube-version) from flags, derived from the client-go it is built with;
# left out it would assume v1.20. Helm 4 reads that from the build info.
helm3_gomod="$(go mod download -json "helm.sh/helm/v3@$HELM3_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
k8s_minor="$(awk '$1 == "k8s.io/client-go" { split($2, v, "."); print v[2]; exit }' "$helm3_gomod")"
if [[ -z $k8s_minor ]]; then
	echo "helm-tools: cannot find the client-go version of helm $HELM3_VERSION in $helm3_gomod" >&2
	exit 1
fi
helm3_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM3_VERSION"
for pkg in pkg/chartutil pkg/lint/rules; do
	helm3_ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$k8s_minor"
done
helm4_ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$HELM4_VERSION"

# The two are different modules (v3 and v4) with different flags, so one
# `go install` cannot build both; they share most dependencies' compiled
# packages through the Go build cache instead.
install 3 "$HELM3_VERSION" "$helm3_ldflags"
install 4 "$HELM4_VERSION" "$helm4_ldflags"
