#!/usr/bin/env bash
# Lints and renders the Helm chart for every profile with the pinned Helm 3
# and Helm 4 (run scripts/helm-tools.sh first), and checks that a misspelt
# values key fails both. One line per check; exits non-zero if any fails.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
chart="$root/helm/bulkhead"
typo="$root/helm/testdata/values-typo.yaml"
kube_version="${KUBE_VERSION:-1.30.0}"
profiles=(saas regulated enterprise community)

# Keep Helm away from the user's own configuration, cache and plugins.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export HELM_CONFIG_HOME="$scratch/config" HELM_CACHE_HOME="$scratch/cache" HELM_DATA_HOME="$scratch/data"
export KUBECONFIG="$scratch/kubeconfig"

failures=0
# check NAME EXPECT CMD...: EXPECT is pass, or fail:PATTERN for a command
# that must fail with PATTERN in its output (so that it fails for the reason
# under test). The output of CMD is shown only when the check goes wrong.
check() {
	local name="$1" expect="$2"
	shift 2
	local out status
	out="$("$@" 2>&1)"
	status=$?
	if { [[ $expect == pass ]] && ((status == 0)); } ||
		{ [[ $expect == fail:* ]] && ((status != 0)) && grep -qF -- "${expect#fail:}" <<<"$out"; }; then
		echo "ok   $name"
	else
		echo "FAIL $name (exit $status, expected $expect)"
		head -n 40 <<<"$out" | while IFS= read -r line; do echo "     $line"; done
		failures=$((failures + 1))
	fi
}

for major in 3 4; do
	helm="$root/bin/tools/helm$major/helm"
	if [[ ! -x $helm ]]; then
		echo "FAIL helm$major: $helm missing; run scripts/helm-tools.sh"
		failures=$((failures + 1))
		continue
	fi
	for p in "${profiles[@]}"; do
		values="$chart/values-$p.yaml"
		check "helm$major lint --strict $p" pass \
			"$helm" lint --strict --kube-version "$kube_version" "$chart" -f "$values"
		check "helm$major template $p" pass \
			"$helm" template bulkhead "$chart" --namespace bulkhead --kube-version "$kube_version" -f "$values"
	done
	# Every optional toggle at once (admin component, secret files, Ingress,
	# HTTPRoute, ServiceMonitor), and the connection budget guard.
	check "helm$major template every option" pass \
		"$helm" template bulkhead "$chart" --namespace bulkhead --kube-version "$kube_version" -f "$chart/values-saas.yaml" -f "$root/helm/testdata/values-everything.yaml"
	check "helm$major template rejects pools over database.maxConnections" "fail:database.maxConnections" \
		"$helm" template bulkhead "$chart" --kube-version "$kube_version" -f "$chart/values-saas.yaml" --set config.database.pooler=none,database.maxConnections=100,config.database.max_connections=40
	# The typo must be caught on top of a valid profile, for lint and template.
	reason="additional properties 'replicaCont' not allowed"
	check "helm$major lint rejects replicaCont" "fail:$reason" \
		"$helm" lint --strict --kube-version "$kube_version" "$chart" -f "$chart/values-saas.yaml" -f "$typo"
	check "helm$major template rejects replicaCont" "fail:$reason" \
		"$helm" template bulkhead "$chart" --kube-version "$kube_version" -f "$chart/values-saas.yaml" -f "$typo"
done

if ((failures > 0)); then
	echo "$failures check(s) failed"
	exit 1
fi
echo "all helm checks passed"
