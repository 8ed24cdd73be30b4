#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# build.sh VERSION OUTDIR: the Debian package of portres (make deb).
#
# `make install` into a staging tree laid out as Debian lays it out (/usr,
# the multiarch library directory, man pages compressed, the systemd unit in
# /usr/lib/systemd/system), DEBIAN/ from this folder (control with the
# dependencies dpkg-shlibdeps finds, maintainer scripts, shlibs, triggers,
# md5sums), then dpkg-deb --build. Prints the path of the .deb.
set -eu
version=$1 out=$2
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
work=$(mktemp -d "${TMPDIR:-/tmp}/portres-deb-XXXXXX")
trap 'rm -rf "$work"' EXIT
# dpkg-shlibdeps looks for debian/control and the package's files in debian/<package>
root=$work/debian/portres
mkdir -p "$root/DEBIAN"

make -s -C "$top" install DESTDIR="$root" PREFIX=/usr SBINDIR=/usr/sbin BINDIR=/usr/bin \
	LIBDIR="/usr/lib/$multiarch" >/dev/null
install -D -m 0644 "$top/scripts/portresd.service" "$root/usr/lib/systemd/system/portresd.service"
sed -i 's|^ExecStart=/usr/local/sbin/portresd|ExecStart=/usr/sbin/portresd|' "$root/usr/lib/systemd/system/portresd.service"
grep -q '^ExecStart=/usr/sbin/portresd ' "$root/usr/lib/systemd/system/portresd.service" ||
	{ echo "deb: the unit's ExecStart is not /usr/sbin/portresd" >&2; exit 1; }
# stripped, as dh_strip leaves them
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/sbin/portresd" \
	"$root/usr/bin/portresctl" "$root/usr/lib/$multiarch/libportres.so.$version"
strip --strip-debug "$root/usr/lib/$multiarch/libportres.a"
# Debian's man pages are gzipped; a .so page points at its target's new name
find "$root/usr/share/man" -type f -exec gzip -9n {} +
install -D -m 0644 "$here/copyright" "$root/usr/share/doc/portres/copyright"
sed "s/@VERSION@/$version/; s/@DATE@/$(date -R -u -d "@${SOURCE_DATE_EPOCH:-$(git -C "$top" log -1 --format=%ct 2>/dev/null || date +%s)}")/" \
	"$here/changelog.in" | gzip -9n >"$root/usr/share/doc/portres/changelog.Debian.gz"
chmod 0644 "$root/usr/share/doc/portres/changelog.Debian.gz"

printf 'Source: portres\n\nPackage: portres\nArchitecture: any\n' >"$work/debian/control"
depends=$(cd "$work" && dpkg-shlibdeps -O -e"$root/usr/sbin/portresd" -e"$root/usr/bin/portresctl" \
	-e"$root/usr/lib/$multiarch/libportres.so.$version" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "deb: dpkg-shlibdeps found no dependencies" >&2; exit 1; }
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@DEPENDS@/$depends/" -e "s/@SIZE@/$size/" \
	"$here/control.in" >"$root/DEBIAN/control"
for f in postinst prerm postrm; do install -m 0755 "$here/$f" "$root/DEBIAN/$f"; done
echo "libportres 0 portres (>= $version)" >"$root/DEBIAN/shlibs"
echo "activate-noawait ldconfig" >"$root/DEBIAN/triggers"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) \
	>"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/shlibs" "$root/DEBIAN/triggers" "$root/DEBIAN/md5sums"

mkdir -p "$out"
deb="$out/portres_${version}_$arch.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
