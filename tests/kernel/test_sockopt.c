// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_sockopt.c - the SOL_PORTRES socket options and the errno table of
 * SPEC §3 that the data plane owns, through portres_associate and through the
 * raw setsockopt, and who may associate a token (runtime owner, grants).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

#define START 25000
#define COUNT 4

TestSuite(sockopt, .init = fx_setup, .fini = fx_teardown);

/* Both ways to associate: the library call and the raw socket option. */
typedef int (*assoc_fn)(int fd, uint64_t token);
static const struct {
	assoc_fn fn;
	const char *name;
} ways[2] = { { h_associate, "portres_associate" }, { h_setassoc, "setsockopt" } };

FP_TEST(sockopt, getsockopt_reads_token)
{
	const char *n = fp_name(p->family, p->proto);
	uint64_t t = fx_reserve(p->proto, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	uint64_t t2 = fx_reserve(p->proto, START + 10, COUNT, PORTRES_KIND_PERSISTENT,
				 PORTRES_MODE_ENFORCE);
	uint64_t got, small[2] = { 0, 0 };
	socklen_t len;
	int w;

	for (w = 0; w < 2; w++) {
		int fd = fx_socket(p->family, p->proto);

		cr_expect_eq(h_getassoc(fd, &got), -ENOENT, "%s: getsockopt before association", n);
		cr_assert_eq(ways[w].fn(fd, t), 0, "%s: %s: %s", n, ways[w].name, strerror(errno));
		cr_expect_eq(h_getassoc(fd, &got), 0, "%s: getsockopt: %s", n, strerror(errno));
		cr_expect_eq(got, t, "%s: getsockopt read %#llx, want %#llx", n,
			     (unsigned long long)got, (unsigned long long)t);
		/* Before bind the association may change; the last one counts. */
		cr_assert_eq(ways[w].fn(fd, t2), 0, "%s: %s again", n, ways[w].name);
		cr_expect_eq(h_getassoc(fd, &got), 0);
		cr_expect_eq(got, t2, "%s: re-association not read back", n);
		/* optlen shorter than a token */
		len = 4;
		cr_expect_eq(getsockopt(fd, SOL_PORTRES, PORTRES_ASSOCIATION, small, &len), -1);
		cr_expect_eq(errno, EINVAL, "%s: getsockopt optlen 4: %s", n, strerror(errno));
		/* optlen longer: the token, and optlen says 8 */
		len = sizeof(small);
		cr_expect_eq(getsockopt(fd, SOL_PORTRES, PORTRES_ASSOCIATION, small, &len), 0);
		cr_expect_eq(len, sizeof(uint64_t), "%s: optlen %u after getsockopt", n, len);
		cr_expect_eq(small[0], t2);
		/* Once bound, the association is fixed. */
		cr_assert_eq(fx_bind(fd, p->family, 0), 0);
		cr_expect_eq(ways[w].fn(fd, t), -EINVAL, "%s: %s after bind", n, ways[w].name);
		cr_expect_eq(h_getassoc(fd, &got), 0);
		cr_expect_eq(got, t2, "%s: association changed after bind", n);
		cr_expect(fx_local_port(fd) >= START + 10 && fx_local_port(fd) < START + 10 + COUNT,
			  "%s: bind(0) got %u, not from the re-associated block", n, fx_local_port(fd));
		close(fd);
	}
}

FP_TEST(sockopt, einval)
{
	const char *n = fp_name(p->family, p->proto);
	uint64_t t = fx_reserve(p->proto, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	uint64_t big[2] = { t, 0 };
	uint32_t small = (uint32_t)t;
	int w, fd;

	for (w = 0; w < 2; w++) {
		fd = fx_socket(p->family, p->proto);
		cr_expect_eq(ways[w].fn(fd, t ^ 0x5a5a5a5a00000000ULL), -EINVAL, "%s: %s unknown token",
			     n, ways[w].name);
		cr_expect_eq(ways[w].fn(fd, 0), -EINVAL, "%s: %s token 0", n, ways[w].name);
		cr_expect_eq(h_getassoc(fd, &big[1]), -ENOENT, "%s: failed association left a token", n);
		close(fd);

		fd = fx_socket(p->family, p->proto);
		cr_assert_eq(fx_bind(fd, p->family, START + 100), 0);
		cr_expect_eq(ways[w].fn(fd, t), -EINVAL, "%s: %s on a bound socket", n, ways[w].name);
		close(fd);

		/* A deleted reservation is an unknown token. */
		if (w == 1) {
			uint64_t gone = fx_reserve(p->proto, START + 50, 1, PORTRES_KIND_PERSISTENT,
						   PORTRES_MODE_ENFORCE);

			cr_assert_eq(portres_resv_del(fx.l, gone), 0);
			fd = fx_socket(p->family, p->proto);
			cr_expect_eq(h_associate(fd, gone), -EINVAL, "%s: deleted token", n);
			cr_expect_eq(h_setassoc(fd, gone), -EINVAL, "%s: deleted token (raw)", n);
			close(fd);
		}
	}
	fd = fx_socket(p->family, p->proto);
	cr_expect_eq(setsockopt(fd, SOL_PORTRES, PORTRES_ASSOCIATE, &small, sizeof(small)), -1);
	cr_expect_eq(errno, EINVAL, "%s: optlen 4: %s", n, strerror(errno));
	cr_expect_eq(setsockopt(fd, SOL_PORTRES, PORTRES_ASSOCIATE, big, sizeof(big)), -1);
	cr_expect_eq(errno, EINVAL, "%s: optlen 16: %s", n, strerror(errno));
	cr_expect_eq(setsockopt(fd, SOL_PORTRES, PORTRES_ASSOCIATE, NULL, 0), -1);
	cr_expect_eq(errno, EINVAL, "%s: optlen 0: %s", n, strerror(errno));
	cr_expect_eq(h_getassoc(fd, &big[1]), -ENOENT, "%s: bad optlen left a token", n);
	close(fd);
}

FP_TEST(sockopt, eprototype)
{
	const char *n = fp_name(p->family, p->proto);
	uint64_t other = fx_reserve(other_proto(p->proto), START, COUNT, PORTRES_KIND_PERSISTENT,
				    PORTRES_MODE_ENFORCE);
	uint64_t got;
	int w;

	for (w = 0; w < 2; w++) {
		int fd = fx_socket(p->family, p->proto);

		cr_expect_eq(ways[w].fn(fd, other), -EPROTOTYPE, "%s: %s with a %s token", n,
			     ways[w].name, proto_name(other_proto(p->proto)));
		cr_expect_eq(h_getassoc(fd, &got), -ENOENT, "%s: EPROTOTYPE left a token", n);
		close(fd);
	}
}

/* Sockets that are not TCP or UDP over IPv4/IPv6. */
static int odd_socket(int i, const char **name)
{
	static const struct {
		int domain, type, protocol;
		const char *name;
	} odd[] = {
		{ AF_UNIX, SOCK_STREAM, 0, "unix stream" },
		{ AF_UNIX, SOCK_DGRAM, 0, "unix dgram" },
		{ AF_INET, SOCK_RAW, IPPROTO_ICMP, "raw icmp" },
		{ AF_INET6, SOCK_RAW, IPPROTO_ICMPV6, "raw icmpv6" },
		{ AF_INET, SOCK_RAW, IPPROTO_UDP, "raw udp" },
	};
	int fd;

	if (i >= (int)(sizeof(odd) / sizeof(odd[0])))
		return -1;
	*name = odd[i].name;
	fd = socket(odd[i].domain, odd[i].type | SOCK_CLOEXEC, odd[i].protocol);
	cr_assert(fd >= 0, "socket %s: %s", odd[i].name, strerror(errno));
	return fd;
}

Test(sockopt, eopnotsupp)
{
	uint64_t t = fx_reserve(IPPROTO_UDP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	const char *name;
	uint64_t got;
	int i, w, fd;

	for (i = 0; (fd = odd_socket(i, &name)) >= 0; i++) {
		for (w = 0; w < 2; w++)
			cr_expect_eq(ways[w].fn(fd, t), -EOPNOTSUPP, "%s: %s", name, ways[w].name);
		cr_expect_eq(h_getassoc(fd, &got), -EOPNOTSUPP, "%s: getsockopt", name);
		close(fd);
	}
}

Test(sockopt, enotsock)
{
	uint64_t t = fx_reserve(IPPROTO_TCP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	char path[300];
	int pipefd[2], fd;

	cr_assert_eq(pipe(pipefd), 0);
	cr_expect_eq(h_associate(pipefd[0], t), -ENOTSOCK, "pipe");
	cr_expect_eq(h_setassoc(pipefd[1], t), -ENOTSOCK, "pipe (raw)");
	close(pipefd[0]);
	close(pipefd[1]);
	snprintf(path, sizeof(path), "%s/file", fx.tmp);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	cr_assert(fd >= 0);
	cr_expect_eq(h_associate(fd, t), -ENOTSOCK, "regular file");
	close(fd);
	unlink(path);
	cr_expect_eq(h_associate(-1, t), -EBADF, "fd -1");
}

/* Unknown option names of our level are ENOPROTOOPT, other levels still reach the kernel. */
Test(sockopt, other_options)
{
	int fd = fx_socket(AF_INET, IPPROTO_TCP), one = 1, val = 0;
	socklen_t len = sizeof(val);
	uint64_t t = 1;

	cr_expect_eq(setsockopt(fd, SOL_PORTRES, 77, &t, sizeof(t)), -1);
	cr_expect_eq(errno, ENOPROTOOPT, "setsockopt optname 77: %s", strerror(errno));
	len = sizeof(t);
	cr_expect_eq(getsockopt(fd, SOL_PORTRES, 77, &t, &len), -1);
	cr_expect_eq(errno, ENOPROTOOPT, "getsockopt optname 77: %s", strerror(errno));
	cr_expect_eq(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)), 0, "SO_REUSEADDR: %s",
		     strerror(errno));
	len = sizeof(val);
	cr_expect_eq(getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &val, &len), 0);
	cr_expect_eq(val, 1, "SO_REUSEADDR read back %d", val);
	len = sizeof(val);
	cr_expect_eq(getsockopt(fd, SOL_SOCKET, SO_TYPE, &val, &len), 0);
	cr_expect_eq(val, SOCK_STREAM);
	close(fd);
}

/* Options longer than a page are not copied for cgroup programs: they must reach the kernel intact. */
Test(sockopt, long_options_pass_through)
{
	static char buf[8192];
	int fd = fx_socket(AF_INET6, IPPROTO_UDP);
	socklen_t len = sizeof(buf);

	snprintf(buf, sizeof(buf), "lo");
	cr_expect_eq(setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, buf, sizeof(buf)), 0,
		     "SO_BINDTODEVICE with optlen %zu: %s", sizeof(buf), strerror(errno));
	memset(buf, 0, sizeof(buf));
	cr_expect_eq(getsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, buf, &len), 0,
		     "getsockopt with optlen %zu: %s", sizeof(buf), strerror(errno));
	cr_expect_str_eq(buf, "lo");
	cr_expect_eq(len, 3, "optlen %u", len);
	close(fd);
}

/* --- who may associate ---------------------------------------------------- */

struct who {
	uint64_t token;
	int want;            /* 0 or -errno */
	uid_t uid;           /* 0: stay root */
	gid_t gid;
	const char *cgroup;  /* entered first (as root), or NULL */
	int proto;
};

static int try_associate(void *arg)
{
	const struct who *w = arg;
	int fd, err, i;

	if (w->cgroup && (err = h_enter_cgroup(w->cgroup)))
		return h_fail("enter %s: %s", w->cgroup, strerror(-err));
	if (w->uid) {
		if (setgroups(0, NULL) || setgid(w->gid) || setuid(w->uid))
			return h_fail("drop to %u:%u: %s", w->uid, w->gid, strerror(errno));
	}
	for (i = 0; i < 2; i++) {
		fd = h_socket(AF_INET, w->proto);
		if (fd < 0)
			return h_fail("socket: %s", strerror(-fd));
		err = ways[i].fn(fd, w->token);
		if (err != w->want)
			return h_fail("%s as uid %u gid %u: got %s, want %s", ways[i].name, getuid(),
				      getgid(), strerror(-err), strerror(-w->want));
		if (!err) {
			uint64_t got;

			err = fx_bind(fd, AF_INET, 0);
			if (err || h_getassoc(fd, &got) || got != w->token)
				return h_fail("associated socket: bind(0) %s", strerror(-err));
		}
		close(fd);
	}
	return 0;
}

Test(sockopt, runtime_token_other_process)
{
	uint64_t t = fx_reserve(IPPROTO_TCP, START, COUNT, PORTRES_KIND_RUNTIME, PORTRES_MODE_ENFORCE);
	struct who w = { .token = t, .want = -EACCES, .proto = IPPROTO_TCP };
	int fd = fx_socket(AF_INET, IPPROTO_TCP);

	/* The owner may; its child, even as root, may not. */
	cr_expect_eq(h_associate(fd, t), 0, "owner: %s", strerror(errno));
	close(fd);
	h_expect_child(try_associate, &w, "runtime token from a child process");
}

Test(sockopt, persistent_needs_grant)
{
	uint64_t t = fx_reserve(IPPROTO_UDP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	struct test_user u, other; /* other: another uid, and a group u is not in */
	struct who w = { .token = t, .proto = IPPROTO_UDP };
	char granted[4200], other_cg[4200];
	uint64_t cgid;

	test_user_new(&u);
	test_user_new(&other);
	w.want = 0;
	w.uid = 0;
	h_expect_child(try_associate, &w, "root without a grant");

	w.uid = u.uid;
	w.gid = u.gid;
	w.want = -EACCES;
	h_expect_child(try_associate, &w, "the user without a grant");

	cr_assert_eq(portres_grant_add(fx.l, t, PORTRES_GRANT_UID, other.uid), 0);
	h_expect_child(try_associate, &w, "the user with a grant for another uid");

	cr_assert_eq(portres_grant_add(fx.l, t, PORTRES_GRANT_UID, u.uid), 0);
	w.want = 0;
	h_expect_child(try_associate, &w, "the user with a uid grant");
	cr_assert_eq(portres_grant_del(fx.l, t, PORTRES_GRANT_UID, u.uid), 0);
	w.want = -EACCES;
	h_expect_child(try_associate, &w, "the user after the grant was deleted");

	cr_assert_eq(portres_grant_add(fx.l, t, PORTRES_GRANT_GID, other.gid), 0);
	h_expect_child(try_associate, &w, "the user's own gid with a grant for another gid");
	w.gid = other.gid;
	w.want = 0;
	h_expect_child(try_associate, &w, "primary gid of the granted group");
	cr_assert_eq(portres_grant_del(fx.l, t, PORTRES_GRANT_GID, other.gid), 0);
	w.want = -EACCES;
	h_expect_child(try_associate, &w, "the granted group after the grant was deleted");

	/* A cgroup grant covers the cgroup and everything below it. */
	w.gid = u.gid;
	fx_child_cgroup("granted", granted, sizeof(granted));
	fx_child_cgroup("granted/below", granted, sizeof(granted));
	fx_child_cgroup("other", other_cg, sizeof(other_cg));
	snprintf(granted, sizeof(granted), "%s/granted", fx.cgroup);
	cr_assert_eq(portres_cgroup_id(granted, &cgid), 0);
	cr_assert_eq(portres_grant_add(fx.l, t, PORTRES_GRANT_CGROUP, cgid), 0);
	w.cgroup = other_cg;
	h_expect_child(try_associate, &w, "the user in a cgroup without a grant");
	w.want = 0;
	w.cgroup = granted;
	h_expect_child(try_associate, &w, "the user in a granted cgroup");
	snprintf(granted, sizeof(granted), "%s/granted/below", fx.cgroup);
	h_expect_child(try_associate, &w, "the user below a granted cgroup");

	/* Deleting the reservation deletes its grants. */
	cr_assert_eq(portres_resv_del(fx.l, t), 0);
	cr_expect_eq(portres_grant_del(fx.l, t, PORTRES_GRANT_CGROUP, cgid), -ENOENT,
		     "grant left behind by portres_resv_del");
}

/* --- nested instances: one portres at the test's cgroup, one at a child ------ */

static struct portres_loader *inner;
static char inner_cg[4200];
static char inner_dir[400];

static uint64_t reserve_in(struct portres_loader *l, uint64_t token, uint16_t start)
{
	struct portres_resv r = { .netns = fx.netns, .proto = IPPROTO_TCP, .start = start, .count = COUNT,
				  .kind = PORTRES_KIND_PERSISTENT, .mode = PORTRES_MODE_ENFORCE };
	int err = portres_resv_add(l, token, &r);

	cr_assert_eq(err, 0, "reserve %u: %s", start, strerror(-err));
	return token;
}

static void inner_up(void)
{
	struct portres_loader_opts opts = { .max_resv = 64, .max_ports = 64 };
	int err;

	/* The suite's .init (fx_setup) has run: only the inner instance is added here. */
	fx_child_cgroup("inner", inner_cg, sizeof(inner_cg));
	snprintf(inner_dir, sizeof(inner_dir), "%s/inner", fx.bpffs);
	opts.bpffs_dir = inner_dir;
	opts.cgroup_path = inner_cg;
	err = portres_loader_open(&opts, &inner);
	cr_assert_eq(err, 0, "second instance: %s", strerror(-err));
	fx_enter_cgroup(inner_cg);
}

static void inner_down(void)
{
	if (fx.cgroup[0])
		fx_enter_cgroup(fx.cgroup);
	if (inner)
		portres_loader_teardown(inner);
	inner = NULL;
	/* the suite's .fini (fx_teardown) follows */
}

/* A TCP socket of the inner cgroup: both instances' programs run, the inner one first. */
static int nested_socket(void)
{
	return fx_socket(AF_INET, IPPROTO_TCP);
}

static uint64_t assoc_of(int fd)
{
	uint64_t got = 0;
	int err = h_getassoc(fd, &got);

	return err ? (uint64_t)err : got;
}

Test(sockopt, nested_instances, .init = inner_up, .fini = inner_down)
{
	uint64_t t_out = reserve_in(fx.l, 0x6f75740000000001ull, START);
	uint64_t t_in = reserve_in(inner, 0x696e000000000001ull, START + 100);
	uint64_t cg_out = reserve_in(fx.l, 0x6f75740000000002ull, START + 200);
	struct portres_cgroup c = { .tcp_token = cg_out };
	uint64_t inner_id;
	uint16_t port;
	int fd;

	/* Nobody knows it: EINVAL; nobody holds an association: ENOENT. */
	fd = nested_socket();
	cr_expect_eq(assoc_of(fd), (uint64_t)-ENOENT, "getsockopt of a fresh socket");
	cr_expect_eq(h_setassoc(fd, 0x1234), -EINVAL, "a token no instance knows");
	cr_expect_eq(h_associate(fd, 0x1234), -EINVAL, "portres_associate, a token no instance knows");
	close(fd);

	/* Known to the outer instance only (its programs run last). */
	fd = nested_socket();
	cr_expect_eq(h_setassoc(fd, t_out), 0, "the outer instance's token");
	cr_expect_eq(assoc_of(fd), t_out, "getsockopt after associating the outer token");
	cr_assert_eq(fx_bind(fd, AF_INET, 0), 0, "bind(0), outer token");
	port = fx_local_port(fd);
	cr_expect(port >= START && port < START + COUNT, "bind(0) got %u, outer block %u+", port, START);
	close(fd);

	/* Known to the inner instance only (its programs run first). */
	fd = nested_socket();
	{ int e_ = h_associate(fd, t_in); cr_expect_eq(e_, 0, "the inner instance token: %s", strerror(-e_)); }
	cr_expect_eq(assoc_of(fd), t_in, "getsockopt after associating the inner token");
	cr_assert_eq(fx_bind(fd, AF_INET, 0), 0, "bind(0), inner token");
	port = fx_local_port(fd);
	cr_expect(port >= START + 100 && port < START + 100 + COUNT, "bind(0) got %u, inner block", port);
	close(fd);

	/* Outer first, then inner: the inner association wins everywhere. */
	fd = nested_socket();
	cr_assert_eq(h_setassoc(fd, t_out), 0);
	cr_assert_eq(h_setassoc(fd, t_in), 0);
	cr_expect_eq(assoc_of(fd), t_in, "getsockopt after outer then inner");
	cr_assert_eq(fx_bind(fd, AF_INET, 0), 0);
	port = fx_local_port(fd);
	cr_expect(port >= START + 100 && port < START + 100 + COUNT, "outer then inner: bind(0) got %u", port);
	close(fd);

	/* Inner first, then outer: getsockopt reports the outer association. */
	fd = nested_socket();
	cr_assert_eq(h_setassoc(fd, t_in), 0);
	cr_assert_eq(h_setassoc(fd, t_out), 0);
	cr_expect_eq(assoc_of(fd), t_out, "getsockopt after inner then outer");
	/* A failed association changes nothing. */
	cr_expect_eq(h_setassoc(fd, 0x1234), -EINVAL);
	cr_expect_eq(assoc_of(fd), t_out, "getsockopt after a failed association");
	close(fd);

	/* The outer instance associates the cgroup; an explicit inner association beats it. */
	cr_assert_eq(portres_cgroup_id(inner_cg, &inner_id), 0);
	cr_assert_eq(portres_cgroup_attach(fx.l, inner_id, &c), 0);
	fd = nested_socket();
	cr_expect_eq(assoc_of(fd), cg_out, "getsockopt of a socket the outer instance's cgroup associated");
	cr_assert_eq(h_setassoc(fd, t_in), 0);
	cr_expect_eq(assoc_of(fd), t_in, "explicit inner association over the outer cgroup's");
	close(fd);

	/* Each instance enforces its own blocks. */
	cr_assert_eq(portres_cgroup_detach(fx.l, inner_id), 0);
	fd = nested_socket();
	cr_expect_eq(fx_bind(fd, AF_INET, START + 101), -EACCES, "unassociated bind into the inner block");
	close(fd);
	fd = nested_socket();
	cr_expect_eq(fx_bind(fd, AF_INET, START + 1), -EACCES, "unassociated bind into the outer block");
	close(fd);
}
