// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_loader.c - the loader against the real kernel: a re-open adopts the
 * pins of an earlier loader without a moment of non-enforcement, reservations
 * are added all or nothing, and teardown leaves no pin and no program behind.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <bpf/bpf.h>

#include "helpers.h"

#define START 29000
#define COUNT 10

TestSuite(loader, .init = fx_setup, .fini = fx_teardown);

/* The hooks at the attach root; sock_create is linked at each attached cgroup instead. */
static const enum bpf_attach_type hooks[] = {
	BPF_CGROUP_INET4_BIND, BPF_CGROUP_INET6_BIND, BPF_CGROUP_INET4_CONNECT,
	BPF_CGROUP_INET6_CONNECT, BPF_CGROUP_UDP4_SENDMSG, BPF_CGROUP_UDP6_SENDMSG,
	BPF_CGROUP_INET_SOCK_RELEASE, BPF_CGROUP_SETSOCKOPT, BPF_CGROUP_GETSOCKOPT,
};
#define NHOOKS (int)(sizeof(hooks) / sizeof(hooks[0]))

/* Opens a loader as the fixture does (same directory, cgroup and map sizes). */
static int open_again(struct portres_loader **l)
{
	struct portres_loader_opts opts = {
		.bpffs_dir = fx.bpffs, .cgroup_path = fx.cgroup, .max_resv = 70000, .max_ports = 70000,
	};

	return portres_loader_open(&opts, l);
}

/* Programs attached to a cgroup at one hook. */
static int progs_in(const char *cgroup, enum bpf_attach_type type)
{
	int fd = open(cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	__u32 cnt = 0;

	cr_assert(fd >= 0);
	cr_assert_eq(bpf_prog_query(fd, type, 0, NULL, NULL, &cnt), 0, "bpf_prog_query %d: %s", type,
		     strerror(errno));
	close(fd);
	return cnt;
}

static int progs_at(enum bpf_attach_type type)
{
	return progs_in(fx.cgroup, type);
}

/* Entries of a bpffs directory, less those a fresh bpffs has (bpf_preload's *.debug). */
static int entries_in(const char *dir)
{
	char fresh[400], names[16][256];
	int n = 0, nfresh = 0, i;
	struct dirent *de;
	bool known;
	DIR *d;

	snprintf(fresh, sizeof(fresh), "%s/fresh", fx.tmp);
	cr_assert_eq(mkdir(fresh, 0700), 0);
	cr_assert_eq(mount("bpf", fresh, "bpf", 0, NULL), 0, "mount bpffs: %s", strerror(errno));
	d = opendir(fresh);
	cr_assert_not_null(d);
	while ((de = readdir(d)) && nfresh < 16)
		snprintf(names[nfresh++], sizeof(names[0]), "%s", de->d_name);
	closedir(d);
	umount2(fresh, MNT_DETACH);
	rmdir(fresh);

	d = opendir(dir);
	cr_assert_not_null(d, "opendir %s: %s", dir, strerror(errno));
	while ((de = readdir(d))) {
		for (known = false, i = 0; i < nfresh; i++)
			known |= !strcmp(de->d_name, names[i]);
		if (!known)
			n++;
	}
	closedir(d);
	return n;
}

static int count_resv(uint64_t token, const struct portres_resv *r, void *arg)
{
	(*(int *)arg)++;
	return 0;
}

static int bind_port(int family, int proto, uint16_t port)
{
	int fd = fx_socket(family, proto), err = fx_bind(fd, family, port);

	close(fd);
	return err;
}

Test(loader, fresh_open_attaches_once)
{
	int i;

	cr_expect_not(portres_loader_adopted(fx.l), "a fresh open adopted something");
	for (i = 0; i < NHOOKS; i++)
		cr_expect_eq(progs_at(hooks[i]), 1, "programs at hook %d", hooks[i]);
}

Test(loader, reopen_adopts_and_keeps_enforcing)
{
	uint64_t t = fx_reserve(IPPROTO_TCP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	struct portres_resv r;
	struct portres_port pp;
	char a[4200];
	uint64_t cgid;
	uint16_t held;
	int s, s2, i, err, n = 0;

	s = fx_socket(AF_INET, IPPROTO_TCP);
	cr_assert_eq(h_associate(s, t), 0);
	cr_assert_eq(fx_bind(s, AF_INET, 0), 0);
	held = fx_local_port(s);
	cr_assert_eq(portres_grant_add(fx.l, t, PORTRES_GRANT_UID, 4242), 0);
	fx_child_cgroup("a", a, sizeof(a));
	cr_assert_eq(portres_cgroup_id(a, &cgid), 0);
	cr_assert_eq(h_attach(a, IPPROTO_TCP, t, 0), 0);

	portres_loader_close(fx.l);
	fx.l = NULL;
	/* No loader: the pinned links still enforce and serve. */
	cr_expect_eq(bind_port(AF_INET, IPPROTO_TCP, START + 1), -EACCES, "bind with the loader closed");
	s2 = fx_socket(AF_INET6, IPPROTO_TCP);
	cr_expect_eq(h_associate(s2, t), 0, "associate with the loader closed");
	cr_expect_eq(fx_bind(s2, AF_INET6, 0), 0);
	cr_expect(fx_local_port(s2) >= START && fx_local_port(s2) < START + COUNT &&
		  fx_local_port(s2) != held, "bind(0) with the loader closed got %u", fx_local_port(s2));

	err = open_again(&fx.l);
	cr_assert_eq(err, 0, "re-open: %s", strerror(-err));
	cr_expect(portres_loader_adopted(fx.l), "re-open did not adopt");
	for (i = 0; i < NHOOKS; i++)
		cr_expect_eq(progs_at(hooks[i]), 1, "programs at hook %d after re-open", hooks[i]);
	cr_assert_eq(portres_resv_get(fx.l, t, &r), 0, "reservation lost by re-open");
	cr_expect(r.start == START && r.count == COUNT && r.proto == IPPROTO_TCP &&
		  r.mode == PORTRES_MODE_ENFORCE && r.netns == fx.netns, "reservation changed");
	cr_assert_eq(portres_resv_foreach(fx.l, count_resv, &n), 0);
	cr_expect_eq(n, 1, "%d reservations after re-open", n);
	cr_assert_eq(portres_port_owner(fx.l, fx.netns, IPPROTO_TCP, held, &pp), 0);
	cr_expect(pp.token == t && pp.users == 1, "claim of %u lost: token %#llx users %u", held,
		  (unsigned long long)pp.token, pp.users);
	cr_expect_eq(h_stats(t).denied, 1, "denial while closed not counted");
	cr_expect_eq(portres_grant_del(fx.l, t, PORTRES_GRANT_UID, 4242), 0, "grant lost");
	cr_expect_eq(portres_cgroup_detach(fx.l, cgid), 0, "cgroup attachment lost");

	cr_expect_eq(bind_port(AF_INET6, IPPROTO_TCP, START + 2), -EACCES, "bind after re-open");
	close(s);
	close(s2);
	cr_expect_eq(h_users(IPPROTO_TCP, held), 0, "release after re-open");
}

/*
 * A child binds a reserved port over and over while the loader is closed
 * and re-opened: not one bind may get through.
 */
static int hammer(void *arg)
{
	int stop = *(int *)arg, fd, err, n = 0;
	char c;

	for (;;) {
		if (read(stop, &c, 1) == 0)
			break;
		fd = h_socket(n % 2 ? AF_INET6 : AF_INET, IPPROTO_UDP);
		if (fd < 0)
			return h_fail("socket: %s", strerror(-fd));
		err = fx_bind(fd, n % 2 ? AF_INET6 : AF_INET, START + 3);
		close(fd);
		if (err != -EACCES)
			return h_fail("bind #%d during close/re-open: %s", n, strerror(-err));
		n++;
	}
	return n > 0 ? 0 : h_fail("no bind tried");
}

Test(loader, enforcement_never_stops)
{
	int stop[2], status, i, err;
	pid_t pid;

	fx_reserve(IPPROTO_UDP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	cr_assert_eq(pipe2(stop, O_NONBLOCK | O_CLOEXEC), 0);
	/* Not h_child: the child must run while this process works. */
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		close(stop[1]);
		_exit(hammer(&stop[0]));
	}
	close(stop[0]);
	for (i = 0, err = 0; i < 10 && !err; i++) {
		portres_loader_close(fx.l);
		fx.l = NULL;
		err = open_again(&fx.l);
		cr_expect_eq(err, 0, "re-open #%d: %s", i + 1, strerror(-err));
		cr_expect(!err && portres_loader_adopted(fx.l), "re-open #%d did not adopt", i + 1);
	}
	/* Stop and reap the child before any assert: its cgroup must be empty at teardown. */
	close(stop[1]);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert_eq(err, 0);
	cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "a bind got through while the loader was re-opened (status %#x)", status);
	for (i = 0; i < NHOOKS; i++)
		cr_expect_eq(progs_at(hooks[i]), 1, "programs at hook %d after 10 re-opens", hooks[i]);
}

Test(loader, overlap_rejected_leaves_nothing)
{
	static const struct { uint16_t start, count; } bad[] = {
		{ START - 5, 6 },          /* ends on the first port */
		{ START + COUNT - 1, 3 },  /* starts on the last port */
		{ START + 3, 2 },          /* inside */
		{ START - 10, COUNT + 20 },/* around */
		{ START, COUNT },          /* the same */
	};
	uint64_t a = fx_reserve(IPPROTO_TCP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	struct portres_resv r = { 0 }, got;
	struct portres_stats st;
	struct portres_port pp;
	uint64_t b = 0xb0b0b0b0ULL;
	int i, n = 0;
	uint32_t p;

	r.netns = fx.netns;
	r.proto = IPPROTO_TCP;
	r.kind = PORTRES_KIND_PERSISTENT;
	for (i = 0; i < (int)(sizeof(bad) / sizeof(bad[0])); i++) {
		r.start = bad[i].start;
		r.count = bad[i].count;
		cr_expect_eq(portres_resv_add(fx.l, b, &r), -EADDRINUSE, "%u+%u over %u+%u", r.start,
			     r.count, START, COUNT);
		cr_expect_eq(portres_resv_get(fx.l, b, &got), -ENOENT, "%u+%u left its reservation",
			     r.start, r.count);
		cr_expect_eq(portres_resv_stats(fx.l, b, &st), -ENOENT, "%u+%u left its counters",
			     r.start, r.count);
		for (p = r.start; p < (uint32_t)r.start + r.count; p++) {
			cr_assert_eq(portres_port_owner(fx.l, fx.netns, IPPROTO_TCP, p, &pp), 0);
			cr_expect(pp.token == (p >= START && p < START + COUNT ? a : 0),
				  "%u+%u: port %u now owned by %#llx", r.start, r.count, p,
				  (unsigned long long)pp.token);
		}
		/* Binds outside the original block are still free. */
		if (r.start < START)
			cr_expect_eq(bind_port(AF_INET, IPPROTO_TCP, r.start), 0, "bind %u", r.start);
	}
	/* Adjacent blocks, the other protocol and another netns do not overlap. */
	r.start = START + COUNT;
	r.count = 5;
	cr_expect_eq(portres_resv_add(fx.l, b, &r), 0, "adjacent block");
	cr_expect_eq(portres_resv_add(fx.l, b, &r), -EEXIST, "same token twice");
	r.start = START;
	r.count = COUNT;
	r.proto = IPPROTO_UDP;
	cr_expect_eq(portres_resv_add(fx.l, b + 1, &r), 0, "same ports, other protocol");
	r.proto = IPPROTO_TCP;
	r.netns = fx.netns + 1;
	cr_expect_eq(portres_resv_add(fx.l, b + 2, &r), 0, "same ports, other netns");
	cr_assert_eq(portres_resv_foreach(fx.l, count_resv, &n), 0);
	cr_expect_eq(n, 4, "%d reservations", n);
}

Test(loader, invalid_ranges)
{
	struct portres_resv ok = { 0 }, r;
	uint64_t tok = 0x1234;
	int n = 0;

	ok.netns = fx.netns;
	ok.proto = IPPROTO_UDP;
	ok.kind = PORTRES_KIND_PERSISTENT;
	ok.mode = PORTRES_MODE_ENFORCE;
	ok.start = 65000;
	ok.count = 536; /* up to 65535 exactly */

#define BAD(field, value, what)                                                           \
	do {                                                                               \
		r = ok;                                                                    \
		r.field = value;                                                           \
		cr_expect_eq(portres_resv_add(fx.l, tok, &r), -EINVAL, "%s", what);        \
	} while (0)
	BAD(count, 0, "count 0");
	BAD(start, 0, "start 0");
	BAD(count, 537, "start + count = 65537");
	BAD(start, 65535, "start 65535 count 536");
	BAD(proto, IPPROTO_ICMP, "proto icmp");
	BAD(proto, 0, "proto 0");
	BAD(kind, 0, "kind 0");
	BAD(kind, 3, "kind 3");
	BAD(mode, 3, "mode 3");
#undef BAD
	cr_expect_eq(portres_resv_add(fx.l, 0, &ok), -EINVAL, "token 0");
	cr_expect_eq(portres_resv_add(fx.l, tok, NULL), -EINVAL, "no reservation");
	cr_assert_eq(portres_resv_foreach(fx.l, count_resv, &n), 0);
	cr_expect_eq(n, 0, "an invalid add left %d reservations", n);
	cr_expect_eq(h_users(IPPROTO_UDP, 65000), 0);

	cr_expect_eq(portres_resv_add(fx.l, tok, &ok), 0, "65000+536");
	r = ok;
	r.start = 1;
	r.count = 1;
	cr_expect_eq(portres_resv_add(fx.l, tok + 1, &r), 0, "port 1 alone");
	cr_expect_eq(bind_port(AF_INET, IPPROTO_UDP, 65535), -EACCES, "port 65535 reserved");
	cr_expect_eq(portres_resv_del(fx.l, tok + 7), -ENOENT, "delete of an unknown token");
}

Test(loader, resv_del_frees_ports)
{
	uint64_t t = fx_reserve(IPPROTO_TCP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	struct portres_stats st;
	struct portres_port pp;
	int s = fx_socket(AF_INET, IPPROTO_TCP);

	cr_assert_eq(h_associate(s, t), 0);
	cr_expect_eq(bind_port(AF_INET, IPPROTO_TCP, START), -EACCES);
	cr_assert_eq(portres_resv_del(fx.l, t), 0);
	cr_expect_eq(bind_port(AF_INET, IPPROTO_TCP, START), 0, "bind after delete");
	cr_assert_eq(portres_port_owner(fx.l, fx.netns, IPPROTO_TCP, START, &pp), 0);
	cr_expect_eq(pp.token, 0, "port entry left by delete");
	cr_expect_eq(portres_resv_stats(fx.l, t, &st), -ENOENT, "counters left by delete");
	/* A socket associated before: ordinary bind(0) now. */
	cr_expect_eq(fx_bind(s, AF_INET, 0), 0);
	cr_expect(fx_local_port(s) < START || fx_local_port(s) >= START + COUNT, "got %u",
		  fx_local_port(s));
	close(s);
}

/*
 * portres_resv_del takes the reservation's grants (a walk of the grants
 * map); portres_resv_del_nogrants, for a caller that deleted them, leaves
 * the grants map alone and frees the same ports.
 */
Test(loader, resv_del_grants_or_not)
{
	uint64_t a = fx_reserve(IPPROTO_TCP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	uint64_t b = fx_reserve(IPPROTO_UDP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	struct portres_port pp;

	cr_assert_eq(portres_grant_add(fx.l, a, PORTRES_GRANT_UID, 4242), 0);
	cr_assert_eq(portres_grant_add(fx.l, a, PORTRES_GRANT_GID, 4243), 0);
	cr_assert_eq(portres_grant_add(fx.l, b, PORTRES_GRANT_UID, 4244), 0);
	/* the caller's own grant delete, then the reservation's: a's other grant stays, b's too */
	cr_assert_eq(portres_grant_del(fx.l, a, PORTRES_GRANT_UID, 4242), 0);
	cr_assert_eq(portres_resv_del_nogrants(fx.l, a), 0);
	cr_expect_eq(portres_grant_has(fx.l, a, PORTRES_GRANT_GID, 4243), 1, "nogrants took a grant");
	cr_expect_eq(portres_grant_has(fx.l, b, PORTRES_GRANT_UID, 4244), 1, "another reservation's grant went");
	cr_expect_eq(bind_port(AF_INET, IPPROTO_TCP, START), 0, "bind after the delete");
	cr_assert_eq(portres_port_owner(fx.l, fx.netns, IPPROTO_TCP, START, &pp), 0);
	cr_expect_eq(pp.token, 0, "port entry left by the delete");
	cr_expect_eq(portres_resv_del_nogrants(fx.l, a), -ENOENT, "a second delete");
	/* the plain delete takes them all */
	cr_assert_eq(portres_resv_del(fx.l, b), 0);
	cr_expect_eq(portres_grant_has(fx.l, b, PORTRES_GRANT_UID, 4244), 0, "a deleted reservation kept its grant");
	cr_expect_eq(portres_grant_has(fx.l, a, PORTRES_GRANT_GID, 4243), 1, "another token's grant went");
}

Test(loader, teardown_leaves_nothing)
{
	uint64_t t = fx_reserve(IPPROTO_TCP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	int i, fd, err;

	cr_expect_eq(bind_port(AF_INET, IPPROTO_TCP, START), -EACCES);
	cr_expect_gt(entries_in(fx.bpffs), 0, "nothing pinned before teardown");
	err = portres_loader_teardown(fx.l);
	fx.l = NULL;
	cr_expect_eq(err, 0, "teardown: %s", strerror(-err));
	cr_expect_eq(entries_in(fx.bpffs), 0, "bpffs not empty after teardown");
	for (i = 0; i < NHOOKS; i++)
		cr_expect_eq(progs_at(hooks[i]), 0, "programs left at hook %d", hooks[i]);
	cr_expect_eq(bind_port(AF_INET, IPPROTO_TCP, START), 0, "bind after teardown");
	cr_expect_eq(bind_port(AF_INET6, IPPROTO_TCP, START + 1), 0, "bind after teardown");
	fd = fx_socket(AF_INET, IPPROTO_TCP);
	cr_expect_eq(h_associate(fd, t), -EINVAL, "associate with nothing loaded");
	close(fd);

	/* A new open starts from scratch. */
	err = open_again(&fx.l);
	cr_assert_eq(err, 0, "open after teardown: %s", strerror(-err));
	cr_expect_not(portres_loader_adopted(fx.l), "open after teardown adopted");
	cr_expect_eq(portres_resv_get(fx.l, t, &(struct portres_resv){ 0 }), -ENOENT,
		     "reservation survived teardown");
}

/*
 * An open that fails part-way (here: a directory stands where the last
 * program's link is to be pinned) takes back the links and, on a fresh start, the map
 * pins it made: no half-attached data plane is left behind.
 */
Test(loader, failed_fresh_open_leaves_nothing)
{
	char dir[400], links[450], blocker[500];
	struct portres_loader_opts opts = { .cgroup_path = fx.cgroup, .max_resv = 70000, .max_ports = 70000 };
	struct portres_loader *l = NULL;
	int i, err;

	snprintf(dir, sizeof(dir), "%s/second", fx.bpffs);
	snprintf(links, sizeof(links), "%s/links", dir);
	snprintf(blocker, sizeof(blocker), "%s/portres_getsopt", links);
	cr_assert_eq(mkdir(dir, 0700), 0);
	cr_assert_eq(mkdir(links, 0700), 0);
	cr_assert_eq(mkdir(blocker, 0700), 0);

	opts.bpffs_dir = dir;
	err = portres_loader_open(&opts, &l);
	cr_assert_neq(err, 0, "open succeeded over a blocked link path");
	for (i = 0; i < NHOOKS; i++)
		cr_expect_eq(progs_at(hooks[i]), 1, "hook %d: the failed open left a program", hooks[i]);
	cr_expect_eq(entries_in(links), 1, "links left besides the blocker");
	snprintf(links, sizeof(links), "%s/maps", dir);
	cr_expect_eq(entries_in(links), 0, "map pins left by the failed open");
	rmdir(blocker);
}

/*
 * Counters live in per-CPU slots the loader hands out: an adopting loader
 * knows the slots in use, so a reservation added after a restart never shares
 * counters with one from before, and a freed slot starts again from zero.
 */
Test(loader, counter_slots_survive_adoption)
{
	uint64_t a = fx_reserve(IPPROTO_TCP, START, 1, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	uint64_t b, c;
	struct portres_resv ra, rb;
	int err;

	cr_expect_eq(bind_port(AF_INET, IPPROTO_TCP, START), -EACCES);
	portres_loader_close(fx.l);
	err = open_again(&fx.l);
	cr_assert_eq(err, 0, "re-open: %s", strerror(-err));
	b = fx_reserve(IPPROTO_TCP, START + 1, 1, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	cr_assert_eq(portres_resv_get(fx.l, a, &ra), 0);
	cr_assert_eq(portres_resv_get(fx.l, b, &rb), 0);
	cr_expect_neq(ra.slot, rb.slot, "a slot handed out twice after adoption");
	cr_expect_eq(bind_port(AF_INET, IPPROTO_TCP, START + 1), -EACCES);
	cr_expect_eq(h_stats(a).denied, 1, "denials of the first reservation");
	cr_expect_eq(h_stats(b).denied, 1, "denials of the second reservation");

	/* A deleted reservation's slot is reused from zero. */
	cr_assert_eq(portres_resv_del(fx.l, a), 0);
	c = fx_reserve(IPPROTO_TCP, START + 2, 1, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	cr_expect_eq(h_stats(c).denied, 0, "a reused slot kept old counts");
}

/* The kernel's view of the license (GPL-compatible for the helpers used) and the SPDX line agree. */
Test(loader, license_matches_spdx)
{
	struct bpf_prog_info info;
	__u32 len = sizeof(info);
	char line[256] = "";
	FILE *f = fopen("bpf/portres.bpf.c", "r");
	bool dual = false;

	memset(&info, 0, sizeof(info));
	cr_assert_eq(bpf_obj_get_info_by_fd(portres_prog_fd(fx.l, "portres_bind4"), &info, &len), 0);
	cr_expect(info.gpl_compatible, "the kernel does not see a GPL-compatible license");
	cr_assert_not_null(f, "bpf/portres.bpf.c (tests run from the repository root)");
	cr_assert_not_null(fgets(line, sizeof(line), f));
	cr_expect_str_eq(line, "// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)\n",
			 "SPDX line: %s", line);
	while (fgets(line, sizeof(line), f))
		dual |= strstr(line, "SEC(\"license\") = \"Dual BSD/GPL\"") != NULL;
	fclose(f);
	cr_expect(dual, "the license string is not \"Dual BSD/GPL\", the SPDX line's dual license");
}

/*
 * socket() runs portres_create only below attached cgroups: linked at attach,
 * unlinked at detach, kept and re-pointed by a re-open, removed by teardown.
 */
Test(loader, create_linked_per_attached_cgroup)
{
	uint64_t t = fx_reserve(IPPROTO_UDP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	char a[4200], b[4200];
	uint64_t ida;
	int err;

	fx_child_cgroup("a", a, sizeof(a));
	fx_child_cgroup("b", b, sizeof(b));
	cr_assert_eq(portres_cgroup_id(a, &ida), 0);
	cr_expect_eq(progs_at(BPF_CGROUP_INET_SOCK_CREATE), 0, "sock_create at the attach root");
	cr_assert_eq(h_attach(a, IPPROTO_UDP, t, 0), 0);
	cr_assert_eq(h_attach(a, IPPROTO_UDP, t, PORTRES_CG_CONFINE), 0); /* a change: still one link */
	cr_expect_eq(progs_in(a, BPF_CGROUP_INET_SOCK_CREATE), 1, "sock_create at the attached cgroup");
	cr_expect_eq(progs_in(b, BPF_CGROUP_INET_SOCK_CREATE), 0, "sock_create at a sibling");
	portres_loader_close(fx.l);
	fx.l = NULL;
	err = open_again(&fx.l);
	cr_assert_eq(err, 0, "re-open: %s", strerror(-err));
	cr_expect_eq(progs_in(a, BPF_CGROUP_INET_SOCK_CREATE), 1, "sock_create after a re-open");
	cr_assert_eq(portres_cgroup_detach(fx.l, ida), 0);
	cr_expect_eq(progs_in(a, BPF_CGROUP_INET_SOCK_CREATE), 0, "sock_create after detach");
	cr_assert_eq(h_attach(b, IPPROTO_UDP, t, 0), 0);
	err = portres_loader_teardown(fx.l);
	fx.l = NULL;
	cr_expect_eq(err, 0, "teardown: %s", strerror(-err));
	cr_expect_eq(progs_in(b, BPF_CGROUP_INET_SOCK_CREATE), 0, "sock_create after teardown");
}

/*
 * Map sizes: the per-CPU counters and the reservation maps follow max_resv
 * (default PORTRES_DEFAULT_RESV), a full map refuses with ENOSPC, and a
 * re-open with another size keeps the pinned maps' size.
 */
Test(loader, sizes_follow_max_resv)
{
	struct portres_loader_opts opts = { .cgroup_path = fx.cgroup };
	struct portres_loader *l;
	struct portres_resv r = { .netns = fx.netns, .proto = IPPROTO_UDP, .count = 1,
				  .kind = PORTRES_KIND_PERSISTENT };
	char dir[400], path[500];
	struct bpf_map_info info;
	__u32 len;
	int i, fd, err;

	snprintf(dir, sizeof(dir), "%s/sized", fx.bpffs);
	opts.bpffs_dir = dir;
	for (i = 0; i < 2; i++) {
		opts.max_resv = i ? 8 : 0;
		if (i) {
			err = portres_loader_teardown(l);
			cr_assert_eq(err, 0);
		}
		err = portres_loader_open(&opts, &l);
		cr_assert_eq(err, 0, "open: %s", strerror(-err));
		snprintf(path, sizeof(path), "%s/maps/portres_stats", dir);
		fd = bpf_obj_get(path);
		cr_assert(fd >= 0);
		memset(&info, 0, sizeof(info));
		len = sizeof(info);
		cr_assert_eq(bpf_obj_get_info_by_fd(fd, &info, &len), 0);
		close(fd);
		cr_expect_eq(info.max_entries, i ? 8u : (unsigned)PORTRES_DEFAULT_RESV, "portres_stats sized %u",
			     info.max_entries);
	}
	for (i = 0; i < 9; i++) {
		r.start = START + 100 + i;
		err = portres_resv_add(l, 0x5100 + i, &r);
		cr_expect_eq(err, i < 8 ? 0 : -ENOSPC, "reservation #%d of 8: %s", i + 1, strerror(-err));
	}
	portres_loader_close(l);
	opts.max_resv = 64;
	err = portres_loader_open(&opts, &l);
	cr_assert_eq(err, 0, "re-open with another size: %s", strerror(-err));
	cr_expect(portres_loader_adopted(l));
	r.start = START + 200;
	cr_expect_eq(portres_resv_add(l, 0x5200, &r), -ENOSPC, "the pinned size (8) did not hold");
	portres_loader_teardown(l);
}

/*
 * Pins of a loader that had no portres_pbits (the bitmap an unassociated
 * bind reads first): the next open makes the bits again from the slots and
 * the overflow before its programs run, so a reserved port stays refused.
 */
Test(loader, pins_without_port_bits_are_rebuilt)
{
	char path[600];

	fx_reserve(IPPROTO_TCP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	cr_expect_eq(bind_port(AF_INET, IPPROTO_TCP, START + 1), -EACCES);
	portres_loader_close(fx.l);
	fx.l = NULL;
	snprintf(path, sizeof(path), "%s/maps/portres_pbits", fx.bpffs);
	cr_assert_eq(unlink(path), 0, "%s: %s", path, strerror(errno));
	cr_assert_eq(open_again(&fx.l), 0);
	cr_expect(portres_loader_adopted(fx.l), "the pins were not adopted");
	cr_expect_eq(bind_port(AF_INET, IPPROTO_TCP, START + 1), -EACCES, "a reserved port after the rebuild");
	cr_expect_eq(bind_port(AF_INET6, IPPROTO_TCP, START + COUNT - 1), -EACCES, "the block's last port");
	cr_expect_eq(bind_port(AF_INET, IPPROTO_TCP, START + COUNT), 0, "the port after the block");
}
