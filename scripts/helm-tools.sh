#!/usr/bin/env bash
# Installs the pinned Helm 3 and Helm 4 the chart tests run against, with
# `go install`, into bin/tools/helm3/helm and bin/tools/helm4/helm.
# Idempotent: a binary built from the same version and flags is kept.
set -euo pipefail

HELM3_VERSION="${HELM3_VERSION:-v3.22.0}"
HELM4_VERSION="${HELM4_VERSION:-v4.3.1}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# install MAJOR VERSION LDFLAGS: builds helm.sh/helm/vMAJOR/cmd/helm@VERSION.
install() {
	local major="$1" version="$2" ldflags="$3"
	local dir="$root/bin/tools/helm$major"
	local bin="$dir/helm" stamp="$dir/.installed"
	local want="helm.sh/helm/v$major/cmd/helm@$version $ldflags"
	if [[ -x $bin && -f $stamp && "$(cat "$stamp")" == "$want" ]] &&
		[[ "$("$bin" version --template '{{.Version}}' 2>/dev/null)" == "$version" ]]; then
		echo "ok   helm $version already in ${bin#"$root"/}"
		return
	fi
	mkdir -p "$dir"
	rm -f "$stamp"
	local start=$SECONDS
	GOBIN="$dir" CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v$major/cmd/helm@$version"
	echo "$want" >"$stamp"
	echo "ok   helm $version installed in ${bin#"$root"/} ($((SECONDS - start))s)"
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

install 3 "$HELM3_VERSION" "$helm3_ldflags"
install 4 "$HELM4_VERSION" "$helm4_ldflags"
