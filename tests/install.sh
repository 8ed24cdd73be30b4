#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The installed portres, two ways:
#
# 1. `make install` into a scratch DESTDIR lays out every file, a program that
#    includes portres.h and links -lportres builds against that tree (found via
#    pkg-config), only the public API is exported, the man pages render without
#    a warning, and `make uninstall` undoes it.
# 2. `make deb` builds the Debian package; dpkg -i installs it on this machine
#    (binaries, library, headers, pkg-config, man pages found by man, bash
#    completion, systemd unit), the example of portres(3) builds against it and
#    runs, and dpkg -r then dpkg -P leave nothing behind, even when a check fails.
set -eu
cd "$(dirname "$0")/.."
dest=$(mktemp -d /tmp/portres-install-XXXXXX)
installed=
cleanup() {
	if [ -n "$installed" ]; then
		dpkg -P portres >/dev/null 2>&1 || echo "install test: dpkg -P portres failed" >&2
	fi
	rm -rf "$dest"
}
trap cleanup EXIT
fail() { echo "install test: $*" >&2; exit 1; }

# --- 1. make install / uninstall into DESTDIR --------------------------------
make -s install DESTDIR="$dest" PREFIX=/usr >/dev/null
for f in usr/include/portres.h usr/lib/libportres.a usr/lib/libportres.so \
	 usr/lib/libportres.so.0 usr/lib/pkgconfig/libportres.pc; do
	[ -e "$dest/$f" ] || fail "missing $f"
done
for f in usr/share/man/man8/portresd.8 usr/share/man/man8/portresctl.8 usr/share/man/man3/portres.3 \
	 usr/share/man/man3/portres_acquire.3 usr/share/bash-completion/completions/portresctl; do
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
bash -n "$dest/usr/share/bash-completion/completions/portresctl" || fail "the bash completion does not parse"
complete_words() { # the completions of a command line whose last word is being typed
	bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _portresctl; echo "${COMPREPLY[*]}"' \
		_ "$dest/usr/share/bash-completion/completions/portresctl" "$@"
}
[ "$(complete_words portresctl to)" = top ] || fail "completion of 'portresctl to': $(complete_words portresctl to)"
[ "$(complete_words portresctl events --type deny,cr)" = "deny,created" ] ||
	fail "completion of 'events --type deny,cr': $(complete_words portresctl events --type deny,cr)"
[ "$(complete_words portresctl delete --f)" = --force ] || fail "completion of 'delete --f'"

# Every man page renders without a warning, and the roff of run's paragraph is whole words.
for m in scripts/man/*.[0-9]; do
	out=$(LC_ALL=C.UTF-8 groff -man -ww -z "$m" 2>&1) || fail "groff $m: $out"
	[ -z "$out" ] || fail "groff $m: $out"
done
LC_ALL=C.UTF-8 MANWIDTH=200 man -l scripts/man/portresctl.8 2>/dev/null | grep -Eq 'with EDQUOT\. +Without root' ||
	fail "portresctl.8: the sentence after EDQUOT runs into it"

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

# --- 2. the Debian package ----------------------------------------------------
# One package test at a time on this machine (worktrees share dpkg), and never
# over an installed portres or a live agent's pins and state.
exec 9>/run/lock/portres-install-test.lock
flock 9
dpkg-query -W -f='${Status}' portres 2>/dev/null | grep -q 'installed' &&
	fail "a portres package is installed on this machine; the test would replace and purge it"
for d in /sys/fs/bpf/portres /var/lib/portres; do
	[ ! -e "$d" ] || fail "$d exists (an agent of this machine): removing the package would take it"
done

make -s deb >/dev/null
deb=$(ls build/portres_*_"$(dpkg --print-architecture)".deb)
dpkg-deb --info "$deb" | grep -q '^ Depends: .*libbpf1' || fail "$deb: no dependency on libbpf1"
installed=yes
out=$(dpkg -i "$deb" 2>&1) || fail "dpkg -i $deb: $out"
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
files="/usr/sbin/portresd /usr/bin/portresctl /usr/include/portres.h
/usr/lib/$multiarch/libportres.so.0 /usr/lib/$multiarch/libportres.so /usr/lib/$multiarch/libportres.a
/usr/lib/$multiarch/pkgconfig/libportres.pc /usr/lib/systemd/system/portresd.service
/usr/share/man/man8/portresd.8.gz /usr/share/man/man8/portresctl.8.gz /usr/share/man/man3/portres.3.gz
/usr/share/man/man3/portres_acquire.3.gz /usr/share/bash-completion/completions/portresctl
/usr/share/doc/portres/copyright /usr/libexec/portres/portres-oci-hook
/usr/share/containers/oci/hooks.d/portres.json"
listed=$(dpkg -L portres)
for f in $files; do
	[ -e "$f" ] || fail "the package did not install $f"
	grep -qx "$f" <<<"$listed" || fail "dpkg -L portres lacks $f"
done
/usr/bin/portresctl --version | grep -qx 'portresctl 0.1.0' || fail "the installed portresctl does not run"
/usr/sbin/portresd --version >/dev/null || fail "the installed portresd does not run"
ldconfig -p | grep -q "libportres.so.0 .*/lib/$multiarch/libportres.so.0$" || fail "ldconfig does not know libportres.so.0"
grep -q '^ExecStart=/usr/sbin/portresd ' /usr/lib/systemd/system/portresd.service || fail "the unit does not start /usr/sbin/portresd"
if command -v systemd-analyze >/dev/null; then
	out=$(systemd-analyze verify /usr/lib/systemd/system/portresd.service 2>&1) || fail "systemd-analyze verify: $out"
	[ -z "$out" ] || fail "systemd-analyze verify: $out"
fi

# man finds every page, and the library's page says what each call's errors are
for p in portresd portresctl portres portres_acquire portres_delete_persistent; do
	[ "$(man -w "$p")" != "" ] || fail "man -w $p finds nothing"
done
page=$(LC_ALL=C.UTF-8 MANWIDTH=100 man portres_acquire 2>/dev/null)
for text in ERRORS EDQUOT EPROTOTYPE ECONNREFUSED 'portres_delete_persistent' 'PORTRES_SOCKET'; do
	grep -q -- "$text" <<<"$page" || fail "man portres_acquire lacks $text"
done

# The example of portres(3), as printed, builds against the package and runs:
# with no agent at its socket it says so (ECONNREFUSED).
sed -n '/^EXAMPLES/,/^SEE ALSO/p' <<<"$page" | sed -n '/#include <netinet/,/^       }$/p' | sed 's/^       //' >"$dest/example.c"
grep -q portres_acquire "$dest/example.c" || fail "no example program in portres(3)"
cc -Wall -Werror -o "$dest/example" "$dest/example.c" $(pkg-config --cflags --libs libportres) ||
	fail "the example of portres(3) does not build against the package"
out=$(PORTRES_SOCKET="$dest/none.sock" "$dest/example" 2>&1) && fail "the example ran without an agent: $out"
[ "$out" = "portres_acquire: Connection refused" ] || fail "the example printed: $out"

# remove, then purge: nothing of it stays
out=$(dpkg -r portres 2>&1) || fail "dpkg -r portres: $out"
for f in /usr/sbin/portresd /usr/bin/portresctl /usr/lib/$multiarch/libportres.so.0 /usr/share/man/man8/portresctl.8.gz; do
	[ ! -e "$f" ] || fail "dpkg -r left $f"
done
out=$(dpkg -P portres 2>&1) || fail "dpkg -P portres: $out"
installed=
dpkg-query -W -f='${Status}' portres 2>/dev/null | grep -q 'installed' && fail "portres is still installed after dpkg -P"
for f in $files /var/lib/portres /run/portres /var/lib/dpkg/info/portres.list; do
	[ ! -e "$f" ] || fail "dpkg -P left $f"
done
ldconfig -p | grep -q libportres && fail "ldconfig still lists libportres"
echo "install test: ok"
