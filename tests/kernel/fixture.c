// SPDX-License-Identifier: LGPL-2.1-or-later
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <bpf/libbpf.h>

#include "cgroup.h"
#include "fixture.h"

struct fixture fx;

static int quiet_libbpf(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_DEBUG || !getenv("PORTRES_TEST_VERBOSE"))
		return level == LIBBPF_WARN ? vfprintf(stderr, fmt, ap) : 0;
	return vfprintf(stderr, fmt, ap);
}

const char *fx_cgroup2_root(void)
{
	const char *root = cgroup2_mount();

	cr_assert_not_null(root, "no cgroup2 mount in /proc/self/mountinfo");
	return root;
}

void fx_enter_cgroup(const char *path)
{
	int err = cgroup2_enter(path);

	cr_assert(err == 0, "enter cgroup %s: %s", path, strerror(-err));
}

/* Test cgroups of processes that died without cleaning up are removed here. */
static void sweep_stale_cgroups(const char *root)
{
	char path[4200];
	struct dirent *de;
	DIR *d = opendir(root);
	int pid;

	if (!d)
		return;
	while ((de = readdir(d))) {
		if (sscanf(de->d_name, "portres-test-%d", &pid) != 1)
			continue;
		if (kill(pid, 0) == 0 || errno != ESRCH)
			continue;
		snprintf(path, sizeof(path), "%s/%s", root, de->d_name);
		rmdir(path);
	}
	closedir(d);
}

void fx_private_namespaces(void)
{
	struct ifreq ifr;
	int fd;

	cr_assert(unshare(CLONE_NEWNS | CLONE_NEWNET) == 0, "unshare: %s", strerror(errno));
	cr_assert(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0, "make-rprivate: %s",
		  strerror(errno));
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	cr_assert(fd >= 0);
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	cr_assert(ioctl(fd, SIOCGIFFLAGS, &ifr) == 0);
	ifr.ifr_flags |= IFF_UP;
	cr_assert(ioctl(fd, SIOCSIFFLAGS, &ifr) == 0, "lo up: %s", strerror(errno));
	close(fd);
}

void fx_setup(void)
{
	struct portres_loader_opts opts = { 0 };
	int err;

	libbpf_set_print(quiet_libbpf);
	memset(&fx, 0, sizeof(fx));
	test_users_sweep();
	fx_private_namespaces();

	snprintf(fx.tmp, sizeof(fx.tmp), "/tmp/portres-test-XXXXXX");
	cr_assert_not_null(mkdtemp(fx.tmp));
	snprintf(fx.bpffs, sizeof(fx.bpffs), "%s/bpffs", fx.tmp);
	cr_assert(mkdir(fx.bpffs, 0700) == 0);
	cr_assert(mount("bpf", fx.bpffs, "bpf", 0, NULL) == 0, "mount bpffs: %s", strerror(errno));

	sweep_stale_cgroups(fx_cgroup2_root());
	err = cgroup2_self(fx.home_cgroup, sizeof(fx.home_cgroup));
	cr_assert(err == 0, "own cgroup: %s", strerror(-err));
	snprintf(fx.cgroup, sizeof(fx.cgroup), "%s/portres-test-%d", fx_cgroup2_root(), getpid());
	cr_assert(mkdir(fx.cgroup, 0755) == 0 || errno == EEXIST, "mkdir %s: %s", fx.cgroup,
		  strerror(errno));
	fx_enter_cgroup(fx.cgroup);

	opts.bpffs_dir = fx.bpffs;
	opts.cgroup_path = fx.cgroup;
	opts.max_resv = 70000;
	opts.max_ports = 70000;
	err = portres_loader_open(&opts, &fx.l);
	cr_assert(err == 0, "portres_loader_open: %s", strerror(-err));
	cr_assert(portres_netns_cookie(&fx.netns) == 0);
}

void fx_teardown(void)
{
	if (fx.l)
		portres_loader_teardown(fx.l);
	fx.l = NULL;
	if (fx.home_cgroup[0])
		fx_enter_cgroup(fx.home_cgroup);
	if (fx.cgroup[0])
		cgroup2_remove(fx.cgroup);
	if (fx.bpffs[0])
		umount2(fx.bpffs, MNT_DETACH);
	if (fx.bpffs[0])
		rmdir(fx.bpffs);
	if (fx.tmp[0])
		rmdir(fx.tmp);
	test_users_remove();
}

void fx_child_cgroup(const char *name, char *path, size_t len)
{
	snprintf(path, len, "%s/%s", fx.cgroup, name);
	cr_assert(mkdir(path, 0755) == 0 || errno == EEXIST, "mkdir %s: %s", path, strerror(errno));
}

uint64_t fx_reserve(uint8_t proto, uint16_t start, uint16_t count, uint8_t kind, uint8_t mode)
{
	static uint64_t next = 0x1000;
	struct portres_resv r = { 0 };
	uint64_t token = ++next ^ ((uint64_t)getpid() << 32);
	int err;

	r.netns = fx.netns;
	r.proto = proto;
	r.start = start;
	r.count = count;
	r.kind = kind;
	r.mode = mode;
	r.owner_tgid = kind == PORTRES_KIND_RUNTIME ? getpid() : 0;
	err = portres_resv_add(fx.l, token, &r);
	cr_assert(err == 0, "portres_resv_add %u-%u: %s", start, start + count - 1, strerror(-err));
	return token;
}

int fx_sotype(int proto)
{
	return proto == IPPROTO_TCP ? SOCK_STREAM : SOCK_DGRAM;
}

int fx_socket(int family, int proto)
{
	int fd = socket(family, fx_sotype(proto) | SOCK_CLOEXEC, proto);

	cr_assert(fd >= 0, "socket: %s", strerror(errno));
	return fd;
}

int fx_bind(int fd, int family, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len;

	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		len = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		len = sizeof(*sin6);
	}
	return bind(fd, (struct sockaddr *)&ss, len) ? -errno : 0;
}

uint16_t fx_local_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	cr_assert(getsockname(fd, (struct sockaddr *)&ss, &len) == 0);
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}
