#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# install-deps.sh [run|test]: installs the Debian packages portres needs.
#   run   to build and run the agent and the CLI (make run), and python3 for
#         the README's examples
#   test  that, and what the tests need (make check, .ci/run): Criterion,
#         the fuzzers' symbolizer, man-db and systemd-analyze (install test),
#         dpkg-dev (make deb), iproute2, procps; runc, busybox-static and
#         util-linux (nsenter): the e2e tests run real containers; sqlite3:
#         the tests read the agent's database as an administrator would;
#         strace: a test watches the order of the agent's syncs and replies
# Without an argument: test (everything).
set -eu
run=(make gcc clang pkg-config bpftool libbpf-dev libelf-dev zlib1g-dev
     libjansson-dev libmnl-dev libmicrohttpd-dev libsqlite3-dev uthash-dev python3)
test=("${run[@]}" libcriterion-dev llvm man-db groff-base systemd dpkg-dev iproute2 procps
      runc busybox-static util-linux sqlite3 strace)
case "${1:-test}" in
run) pkgs=("${run[@]}") ;;
test) pkgs=("${test[@]}") ;;
*) echo "usage: $0 [run|test]" >&2; exit 2 ;;
esac
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing packages: ${missing[*]} (run as root to install them)" >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
