#!/usr/bin/env bash
# Installs what the tests and `make run` need and the machine lacks: a
# PostgreSQL server (15 where the distribution has it, else its default),
# PgBouncer, Chromium (with a font) for the web console's browser tests, and
# jq and curl, which the README's commands use (and a test runs them), and
# node with npm, which run the OpenAPI linters (scripts/apilint.sh).
# Only as root with apt-get; anywhere else it prints what to install and
# exits 1. Idempotent, and a quick no-op when all are present.
#
# The tests run throwaway clusters of their own, so the packaged ones must
# not run: services are kept from starting while installing, a cluster the
# package creates is dropped, and the packaged PgBouncer is stopped and
# disabled. Clusters and services that were there before are left alone.
set -euo pipefail

have_postgres() {
	local dir
	if [[ -n ${PG_BINDIR:-} ]]; then
		[[ -x $PG_BINDIR/initdb && -x $PG_BINDIR/postgres ]]
		return
	fi
	for dir in /usr/lib/postgresql/*/bin; do
		[[ -x $dir/initdb && -x $dir/postgres ]] && return 0
	done
	if command -v pg_config >/dev/null; then
		dir="$(pg_config --bindir 2>/dev/null || true)"
		[[ -n $dir && -x $dir/initdb && -x $dir/postgres ]] && return 0
	fi
	command -v initdb >/dev/null && command -v postgres >/dev/null
}

have_pgbouncer() {
	command -v pgbouncer >/dev/null || [[ -x /usr/sbin/pgbouncer ]]
}

# The browser tests take BULKHEAD_CHROMIUM, else the first of these on PATH
# (internal/browser).
have_chromium() {
	if [[ -n ${BULKHEAD_CHROMIUM:-} ]]; then
		[[ -x $BULKHEAD_CHROMIUM ]]
		return
	fi
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null ||
		command -v google-chrome >/dev/null || command -v google-chrome-stable >/dev/null
}

# The tests check that errors are classified the same on a server whose
# messages are German (lc_messages, internal/pgtest): the locale must exist.
have_locale() {
	locale -a 2>/dev/null | grep -qix 'de_DE\.utf-\?8'
}

# A missing locale is generated here, as root, from the C library's locale
# sources (the locales package, installed when they are missing).
if ! have_locale && [[ $(id -u) == 0 ]]; then
	if [[ ! -e /usr/share/i18n/locales/de_DE ]] && command -v apt-get >/dev/null; then
		echo "...  apt-get install locales"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends locales >/dev/null ||
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends locales >/dev/null; }
	fi
	echo "...  generating the locale de_DE.UTF-8"
	localedef -i de_DE -f UTF-8 de_DE.UTF-8
fi
if ! have_locale; then
	echo "install-deps: the tests need the locale de_DE.UTF-8: generate it as root (localedef -i de_DE -f UTF-8 de_DE.UTF-8)" >&2
	exit 1
fi

missing=()
have_postgres || missing+=(postgresql)
have_pgbouncer || missing+=(pgbouncer)
have_chromium || missing+=(chromium)
command -v jq >/dev/null || missing+=(jq)
command -v curl >/dev/null || missing+=(curl)
{ command -v node >/dev/null && command -v npm >/dev/null; } || missing+=(npm)
if ((${#missing[@]} == 0)); then
	echo "ok   PostgreSQL, PgBouncer, Chromium, jq, curl and npm present"
	exit 0
fi

if [[ -n ${PG_BINDIR:-} ]] && [[ " ${missing[*]} " == *" postgresql "* ]]; then
	echo "install-deps: PG_BINDIR=$PG_BINDIR holds no initdb and postgres; fix or unset it" >&2
	exit 1
fi

if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
	{
		echo "install-deps: missing: ${missing[*]}"
		echo "Install them with the system package manager, then run this again:"
		if command -v apt-get >/dev/null; then
			pkgs=()
			[[ " ${missing[*]} " == *" postgresql "* ]] && pkgs+=(postgresql-15)
			[[ " ${missing[*]} " == *" pgbouncer "* ]] && pkgs+=(pgbouncer)
			[[ " ${missing[*]} " == *" chromium "* ]] && pkgs+=(chromium fonts-dejavu-core)
			[[ " ${missing[*]} " == *" jq "* ]] && pkgs+=(jq)
			[[ " ${missing[*]} " == *" curl "* ]] && pkgs+=(curl)
			[[ " ${missing[*]} " == *" npm "* ]] && pkgs+=(nodejs npm)
			echo "  sudo apt-get update && sudo apt-get install -y ${pkgs[*]}"
			if [[ " ${pkgs[*]} " == *" postgresql-15 "* ]]; then
				echo "  (or postgresql, the distribution's default, where there is no postgresql-15)"
			fi
		else
			echo "  Debian/Ubuntu: apt-get install postgresql-15 pgbouncer chromium jq curl nodejs npm"
			echo "  Fedora/RHEL:   dnf install postgresql-server pgbouncer chromium jq curl nodejs npm"
			echo "  macOS:         brew install postgresql@15 pgbouncer jq node; brew install --cask chromium"
			echo "or set PG_BINDIR to a directory holding initdb and postgres,"
			echo "and BULKHEAD_CHROMIUM to a Chromium or Chrome binary."
		fi
	} >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# candidate PKG: true when apt can install PKG.
candidate() {
	local c
	c="$(apt-cache policy "$1" 2>/dev/null | awk '$1 == "Candidate:" { print $2 }')"
	[[ -n $c && $c != "(none)" ]]
}

want=()
[[ " ${missing[*]} " == *" postgresql "* ]] && want+=(postgresql-15)
[[ " ${missing[*]} " == *" pgbouncer "* ]] && want+=(pgbouncer)
[[ " ${missing[*]} " == *" chromium "* ]] && want+=(chromium fonts-dejavu-core)
[[ " ${missing[*]} " == *" jq "* ]] && want+=(jq)
[[ " ${missing[*]} " == *" curl "* ]] && want+=(curl)
[[ " ${missing[*]} " == *" npm "* ]] && want+=(nodejs npm)
updated=0
for pkg in "${want[@]}"; do
	if ! candidate "$pkg" && ((updated == 0)); then
		echo "...  apt-get update"
		apt-get update -qq
		updated=1
	fi
done
pkgs=()
for pkg in "${want[@]}"; do
	if candidate "$pkg"; then
		pkgs+=("$pkg")
	elif [[ $pkg == postgresql-15 ]] && candidate postgresql; then
		echo "...  no postgresql-15 here; installing the distribution's postgresql"
		pkgs+=(postgresql)
	else
		echo "install-deps: apt has no package $pkg" >&2
		exit 1
	fi
done

# Keep the packages' services from starting (the Debian policy-rc.d
# convention, honoured by invoke-rc.d and deb-systemd-invoke) unless a policy
# is already in place, and remember the clusters that existed before.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [[ ! -e $policy ]]; then
	printf '#!/bin/sh\n# install-deps.sh: no service starts while installing\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	own_policy=1
fi
cleanup() { if ((own_policy)); then rm -f "$policy"; fi; }
trap cleanup EXIT

before=""
if command -v pg_lsclusters >/dev/null; then
	before="$(pg_lsclusters -h 2>/dev/null | awk '{ print $1 "/" $2 }')"
fi

echo "...  apt-get install ${pkgs[*]}"
start=$SECONDS
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null

# Drop the cluster a server package creates (for example 15/main): the tests
# never use it, and it would hold port 5432.
if command -v pg_lsclusters >/dev/null; then
	while read -r ver name _; do
		[[ -z $ver ]] && continue
		if ! grep -qx "$ver/$name" <<<"$before"; then
			echo "...  dropping the packaged cluster $ver/$name"
			pg_dropcluster --stop "$ver" "$name"
		fi
	done < <(pg_lsclusters -h 2>/dev/null)
fi

if [[ " ${pkgs[*]} " == *" pgbouncer "* ]]; then
	if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
		systemctl disable --now pgbouncer >/dev/null 2>&1 || true
	elif command -v service >/dev/null; then
		service pgbouncer stop >/dev/null 2>&1 || true
	fi
	if command -v update-rc.d >/dev/null; then
		update-rc.d pgbouncer disable >/dev/null 2>&1 || true
	fi
fi

if ! have_postgres || ! have_pgbouncer || ! have_chromium; then
	echo "install-deps: installed ${pkgs[*]} but still cannot find initdb/postgres, pgbouncer and chromium" >&2
	exit 1
fi
echo "ok   installed ${pkgs[*]} ($((SECONDS - start))s)"
