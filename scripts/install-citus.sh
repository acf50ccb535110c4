#!/usr/bin/env bash
# Builds Citus from the vendored source tarball and installs it into the
# local PostgreSQL 15, for `make test/citus` and `withpg -citus`. No Citus
# package exists in Debian here, so the project builds its own.
#
# Idempotent and cached: a quick no-op when the installed citus.so is the
# one this script built from the same tarball for the same PostgreSQL; a
# build tree kept under the cache directory makes a reinstall (after a
# PostgreSQL upgrade removed the files, say) a `make install` only. The
# tarball is only read, never changed.
#
# Where the tarball is, first found wins:
#   $BULKHEAD_VENDOR_DIR
#   $(git rev-parse --show-toplevel)/../shared/vendor     (the checkout's)
#   the main worktree's ../shared/vendor                  (from a worktree)
#   /work/shared/vendor
# Other overrides: PG_CONFIG (default: the postgresql-15 one),
# BULKHEAD_CACHE_DIR (default: ${XDG_CACHE_HOME:-$HOME/.cache}/bulkhead).
#
# Build dependencies come from apt-get, as root; anywhere else it prints
# what to install and exits 1.
set -euo pipefail

CITUS_VERSION=13.2.2
PG_MAJOR=15
tarball_name="citus-$CITUS_VERSION.tar.gz"
start=$SECONDS

say() { echo "...  $*"; }
die() {
	echo "install-citus: $*" >&2
	exit 1
}

# vendor_dir prints the first directory holding the tarball.
vendor_dir() {
	local candidates=() top common
	[[ -n ${BULKHEAD_VENDOR_DIR:-} ]] && candidates+=("$BULKHEAD_VENDOR_DIR")
	if top="$(git rev-parse --show-toplevel 2>/dev/null)"; then
		candidates+=("$top/../shared/vendor")
	fi
	# In a linked worktree, the common git directory is the main
	# checkout's .git: its parent is the main checkout.
	if common="$(git rev-parse --path-format=absolute --git-common-dir 2>/dev/null)"; then
		candidates+=("$(dirname "$common")/../shared/vendor")
	fi
	candidates+=(/work/shared/vendor)
	local d
	for d in "${candidates[@]}"; do
		if [[ -f $d/$tarball_name ]]; then
			(cd "$d" && pwd)
			return 0
		fi
	done
	return 1
}

cd "$(dirname "$0")/.."
vendor="$(vendor_dir)" || die "no $tarball_name in \$BULKHEAD_VENDOR_DIR, ../shared/vendor or /work/shared/vendor: set BULKHEAD_VENDOR_DIR to the directory holding it"
tarball="$vendor/$tarball_name"

pg_config="${PG_CONFIG:-/usr/lib/postgresql/$PG_MAJOR/bin/pg_config}"
[[ -x $pg_config ]] || die "no $pg_config: install PostgreSQL $PG_MAJOR first (scripts/install-deps.sh), or set PG_CONFIG"
pg_version="$("$pg_config" --version)" # PostgreSQL 15.18 (Debian 15.18-0+deb12u1)
[[ $pg_version == "PostgreSQL $PG_MAJOR."* ]] || die "$pg_config is $pg_version, not PostgreSQL $PG_MAJOR"
pkglibdir="$("$pg_config" --pkglibdir)"
sharedir="$("$pg_config" --sharedir)"

tar_sum="$(sha256sum "$tarball" | cut -d' ' -f1)"
cache="${BULKHEAD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/bulkhead}/citus-$CITUS_VERSION-${tar_sum:0:12}-pg$PG_MAJOR"
stamp="$cache/installed"
want_stamp="$tar_sum ${pg_version// /_}"

# installed: the citus.so in place is the one recorded after the last
# install from this tarball for this PostgreSQL.
installed() {
	[[ -f $stamp && -f $pkglibdir/citus.so && -f $sharedir/extension/citus.control ]] || return 1
	local so_sum
	so_sum="$(sha256sum "$pkglibdir/citus.so" | cut -d' ' -f1)"
	[[ "$(cat "$stamp")" == "$want_stamp $so_sum" ]]
}

if installed; then
	echo "ok   Citus $CITUS_VERSION installed in $pkglibdir"
	exit 0
fi

if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
	{
		echo "install-citus: Citus $CITUS_VERSION is not installed in $pkglibdir, and installing it needs root and apt-get."
		echo "Run this script as root, or build it by hand from $tarball:"
		echo "  ./configure --without-libcurl PG_CONFIG=$pg_config && make -j2 with_llvm=no && sudo make install with_llvm=no"
	} >&2
	exit 1
fi

# The server headers must match the server: the same Debian version as the
# installed postgresql-15 where apt still has it.
export DEBIAN_FRONTEND=noninteractive
server_version="$(dpkg-query -W -f='${Version}' "postgresql-$PG_MAJOR" 2>/dev/null || true)"
dev_pkg="postgresql-server-dev-$PG_MAJOR"
deps=(liblz4-dev libzstd-dev libkrb5-dev libssl-dev libselinux1-dev libxslt1-dev libpam0g-dev libreadline-dev autoconf flex bison make gcc)

# missing_pkgs prints the packages of "$@" that are not installed.
missing_pkgs() {
	local p
	for p in "$@"; do
		[[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == "install ok installed" ]] || echo "$p"
	done
}

# has_version PKG VERSION: apt can install PKG at VERSION.
has_version() {
	apt-cache madison "$1" 2>/dev/null | awk -F'|' '{ gsub(/ /, "", $2); print $2 }' | grep -qxF "$2"
}

dev_have="$(dpkg-query -W -f='${Status} ${Version}' "$dev_pkg" 2>/dev/null || true)"
want=($(missing_pkgs "${deps[@]}"))
dev_spec=""
if [[ $dev_have != "install ok installed $server_version" ]]; then
	dev_spec="$dev_pkg"
	[[ -n $server_version ]] && dev_spec="$dev_pkg=$server_version"
fi
if [[ -n $dev_spec || ${#want[@]} -gt 0 ]]; then
	if [[ -n $server_version ]] && ! has_version "$dev_pkg" "$server_version"; then
		say "apt-get update"
		apt-get update -qq
	fi
	if [[ -n $dev_spec && -n $server_version ]] && ! has_version "$dev_pkg" "$server_version"; then
		echo "install-citus: apt has no $dev_pkg $server_version (the installed postgresql-$PG_MAJOR); installing its newest" >&2
		dev_spec="$dev_pkg"
	fi
	[[ -n $dev_spec ]] && want+=("$dev_spec")
	say "apt-get install ${want[*]} (with their dependencies: several hundred MB the first time)"
	t=$SECONDS
	apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
	say "installed in $((SECONDS - t))s"
fi

includedir="$("$pg_config" --includedir-server)"
[[ -f $includedir/postgres.h ]] || die "no server headers in $includedir after installing $dev_pkg"

src="$cache/src"
if [[ ! -f $cache/built ]]; then
	rm -rf "$cache"
	mkdir -p "$cache"
	say "unpacking $tarball into $cache"
	tar -xzf "$tarball" -C "$cache"
	mv "$cache/citus-$CITUS_VERSION" "$src"

	# Headers newer than 15.18 declare have_createdb_privilege() in
	# commands/dbcommands.h, clashing with Citus's own copy for PG < 16.
	if grep -q 'have_createdb_privilege' "$includedir/commands/dbcommands.h" 2>/dev/null; then
		say "the server headers declare have_createdb_privilege: dropping Citus's own copy"
		perl -0pi -e 's/static inline bool\nhave_createdb_privilege\(void\)\n\{.*?\n\}\n//s' "$src/src/include/pg_version_compat.h"
		! grep -q '^have_createdb_privilege(void)' "$src/src/include/pg_version_compat.h" ||
			die "could not drop have_createdb_privilege from pg_version_compat.h"
	fi

	say "configure"
	t=$SECONDS
	(cd "$src" && ./configure --without-libcurl PG_CONFIG="$pg_config" >"$cache/configure.log" 2>&1) ||
		die "configure failed; see $cache/configure.log"
	say "configured in $((SECONDS - t))s; make -j2 with_llvm=no (log: $cache/make.log)"
	t=$SECONDS
	(cd "$src" && make -j2 with_llvm=no >"$cache/make.log" 2>&1) || {
		tail -n 30 "$cache/make.log" >&2
		die "make failed; see $cache/make.log"
	}
	say "built in $((SECONDS - t))s"
	touch "$cache/built"
fi

say "make install with_llvm=no"
(cd "$src" && make install with_llvm=no >"$cache/install.log" 2>&1) || {
	tail -n 30 "$cache/install.log" >&2
	die "make install failed; see $cache/install.log"
}
so_sum="$(sha256sum "$pkglibdir/citus.so" | cut -d' ' -f1)"
echo "$want_stamp $so_sum" >"$stamp"
echo "ok   installed Citus $CITUS_VERSION into $pkglibdir ($((SECONDS - start))s)"
