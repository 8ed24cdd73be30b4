#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# `make install` into a scratch DESTDIR lays out every file, a program that
# includes portres.h and links -lportres builds against that tree (found via
# pkg-config), only the public API is exported, and `make uninstall` undoes it.
set -eu
cd "$(dirname "$0")/.."
dest=$(mktemp -d /tmp/portres-install-XXXXXX)
trap 'rm -rf "$dest"' EXIT
fail() { echo "install test: $*" >&2; exit 1; }

make -s install DESTDIR="$dest" PREFIX=/usr >/dev/null
for f in usr/include/portres.h usr/lib/libportres.a usr/lib/libportres.so \
	 usr/lib/libportres.so.0 usr/lib/pkgconfig/libportres.pc; do
	[ -e "$dest/$f" ] || fail "missing $f"
done
for f in usr/share/man/man8/portresd.8 usr/share/man/man8/portresctl.8 \
	 usr/share/bash-completion/completions/portresctl; do
	[ -e "$dest/$f" ] || fail "missing $f"
done
[ -e build/portresd ] && { [ -x "$dest/usr/sbin/portresd" ] || fail "missing usr/sbin/portresd"; }
[ -e build/portresctl ] && { [ -x "$dest/usr/bin/portresctl" ] || fail "missing usr/bin/portresctl"; }
if [ -e build/portres-oci-hook ]; then
	[ -x "$dest/usr/libexec/portres/portres-oci-hook" ] || fail "missing usr/libexec/portres/portres-oci-hook"
	hooks="$dest/usr/share/containers/oci/hooks.d/portres.json"
	[ -e "$hooks" ] || fail "missing usr/share/containers/oci/hooks.d/portres.json"
	python3 -c 'import json,sys; h=json.load(open(sys.argv[1])); assert h["hook"]["path"] == "/usr/libexec/portres/portres-oci-hook", h; assert "createRuntime" in h["stages"] and "poststop" in h["stages"]' "$hooks" ||
		fail "hooks.d/portres.json does not name the installed hook and its stages"
fi

# The systemd unit is valid for the installed agent (systemd-analyze is on Debian's machines).
if command -v systemd-analyze >/dev/null; then
	sed "s|/usr/local/sbin/portresd|$dest/usr/sbin/portresd|" scripts/portresd.service >"$dest/portresd.service"
	out=$(MANPATH="$dest/usr/share/man" systemd-analyze verify "$dest/portresd.service" 2>&1) ||
		fail "systemd-analyze verify scripts/portresd.service: $out"
	[ -z "$out" ] || fail "systemd-analyze verify scripts/portresd.service: $out"
fi

soname=$(readelf -d "$dest/usr/lib/libportres.so" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
[ "$soname" = libportres.so.0 ] || fail "soname is '$soname'"
exported=$(nm -D --defined-only "$dest/usr/lib/libportres.so" | awk '$2=="T"{sub(/@.*/, "", $3); print $3}' | sort | tr '\n' ' ')
want="portres_acquire portres_associate portres_create_persistent portres_create_persistent_ns portres_delete_persistent portres_delete_persistent_ns portres_lookup_persistent portres_lookup_persistent_ns portres_release "
[ "$exported" = "$want" ] || fail "exported symbols: $exported"

cat >"$dest/prog.c" <<'C'
#include <portres.h>
#include <stdio.h>
int main(void)
{
	struct portres_instance inst;
	portres_token_t t = 0;
	printf("%d %d\n", SOL_PORTRES, PORTRES_ASSOCIATE);
	return portres_lookup_persistent(6, 8080, 10, &t) == 0 && portres_acquire(-1, 0, &inst) == 0;
}
C
flags=$(PKG_CONFIG_SYSROOT_DIR="$dest" PKG_CONFIG_PATH="$dest/usr/lib/pkgconfig" pkg-config --cflags --libs libportres)
cc -Wall -Werror -o "$dest/prog" "$dest/prog.c" $flags || fail "prog.c does not build against the installed tree"
LD_LIBRARY_PATH="$dest/usr/lib" "$dest/prog" >/dev/null || true

make -s uninstall DESTDIR="$dest" PREFIX=/usr >/dev/null
left=$(find "$dest/usr" -type f | head -n 5)
[ ! -e "$dest/usr/libexec/portres" ] || fail "uninstall left usr/libexec/portres"
[ -z "$left" ] || fail "uninstall left: $left"
echo "install test: ok"
