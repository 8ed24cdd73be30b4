// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_cgroup.c - cgroup association (portres_cgroup_attach): sockets created
 * in an attached cgroup, or below it, are associated with its token (nearest
 * attached ancestor wins); --confine denies binds outside the block; detach
 * undoes it. The work runs in forked children moved into child cgroups.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

#define START 26000
#define COUNT 4
#define OUTSIDE 26500 /* in no block */

TestSuite(cgroup, .init = fx_setup, .fini = fx_teardown);

/* What a child checks in its cgroup, for one family x protocol. */
struct expect {
	const char *cgroup;  /* entered by the child; NULL: stay in the test's cgroup */
	int family, proto;
	uint64_t token;      /* expected association, 0: none (ENOENT) */
	uint16_t start;      /* the token's block, when token != 0 */
	int outside;         /* expected bind of OUTSIDE: 0 or -EACCES */
};

static uint64_t h_cgid(const char *path)
{
	uint64_t id;

	cr_assert_eq(portres_cgroup_id(path, &id), 0, "cgroup id of %s", path);
	return id;
}

static int check_in_cgroup(void *arg)
{
	const struct expect *e = arg;
	const char *n = fp_name(e->family, e->proto);
	uint64_t got;
	uint16_t port;
	int fd, err;

	if (e->cgroup && (err = h_enter_cgroup(e->cgroup)))
		return h_fail("enter %s: %s", e->cgroup, strerror(-err));
	fd = h_socket(e->family, e->proto);
	if (fd < 0)
		return h_fail("%s: socket: %s", n, strerror(-fd));
	err = h_getassoc(fd, &got);
	if (e->token && (err || got != e->token))
		return h_fail("%s: getsockopt: %s, token %#llx, want %#llx", n, strerror(-err),
			      (unsigned long long)got, (unsigned long long)e->token);
	if (!e->token && err != -ENOENT)
		return h_fail("%s: getsockopt of an unassociated socket: %s, token %#llx", n,
			      strerror(-err), (unsigned long long)got);
	err = fx_bind(fd, e->family, 0);
	/* Confined without a usable block (other protocol): every port is outside. */
	if (!e->token && e->outside) {
		if (err != -EACCES)
			return h_fail("%s: confined bind(0) without a block: %s", n, strerror(-err));
		close(fd);
		goto outside;
	}
	if (err)
		return h_fail("%s: bind(0): %s", n, strerror(-err));
	port = h_local_port(fd);
	if (e->token && (port < e->start || port >= e->start + COUNT))
		return h_fail("%s: bind(0) got %u, block %u-%u", n, port, e->start,
			      e->start + COUNT - 1);
	if (!e->token && port >= START && port < START + 1000)
		return h_fail("%s: unassociated bind(0) got %u", n, port);
	close(fd);
outside:
	fd = h_socket(e->family, e->proto);
	err = fx_bind(fd, e->family, OUTSIDE);
	if (err != e->outside)
		return h_fail("%s: bind of %u outside the block: %s, want %s", n, OUTSIDE,
			      strerror(-err), strerror(-e->outside));
	close(fd);
	if (e->token) {
		fd = h_socket(e->family, e->proto);
		err = fx_bind(fd, e->family, e->start + COUNT - 1);
		if (err)
			return h_fail("%s: bind of %u in the block: %s", n, e->start + COUNT - 1,
				      strerror(-err));
		close(fd);
	}
	return 0;
}

static void expect_in(const char *cgroup, int family, int proto, uint64_t token, uint16_t start,
		      int outside, const char *what)
{
	struct expect e = { cgroup, family, proto, token, start, outside };
	char msg[512], label[256];
	int st;

	snprintf(label, sizeof(label), "%s, %s", what, fp_name(family, proto));
	st = h_child(check_in_cgroup, &e, msg, sizeof(msg));
	cr_expect_eq(st, 0, "%s: child exit %d: %s", label, st, msg);
}

FP_TEST(cgroup, attached_cgroup_associates)
{
	uint64_t t = fx_reserve(p->proto, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	char a[4200];

	/* A block of the other protocol too: the cgroup's token alone decides. */
	fx_reserve(other_proto(p->proto), START + 100, COUNT, PORTRES_KIND_PERSISTENT,
		   PORTRES_MODE_ENFORCE);
	fx_child_cgroup("a", a, sizeof(a));
	cr_assert_eq(portres_cgroup_attach(fx.l, h_cgid(a), t, 0), 0);
	expect_in(a, p->family, p->proto, t, START, 0, "attached cgroup");
	/* The block is of one protocol: the other protocol's sockets are not associated. */
	expect_in(a, p->family, other_proto(p->proto), 0, 0, 0, "attached cgroup, other protocol");
	/* The test's own cgroup is not attached. */
	expect_in(NULL, p->family, p->proto, 0, 0, 0, "parent of the attached cgroup");
}

/* connect from an attached cgroup takes its local port from the block as well. */
static uint64_t conn_token;
static uint16_t conn_port;

static int connect_in_cgroup(void *arg)
{
	uint16_t lport;
	int fd, err;

	if ((err = h_enter_cgroup(arg)))
		return h_fail("enter: %s", strerror(-err));
	fd = h_socket(AF_INET6, IPPROTO_TCP);
	err = h_connect_lo(fd, AF_INET6, conn_port);
	if (err)
		return h_fail("connect: %s", strerror(-err));
	lport = h_local_port(fd);
	if (lport < START || lport >= START + COUNT)
		return h_fail("connect autobound to %u", lport);
	close(fd);
	return 0;
}

Test(cgroup, connect_from_attached_cgroup)
{
	char a[4200];
	int srv;

	conn_token = fx_reserve(IPPROTO_TCP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	srv = h_listener(AF_INET6, &conn_port);
	fx_child_cgroup("a", a, sizeof(a));
	cr_assert_eq(portres_cgroup_attach(fx.l, h_cgid(a), conn_token, 0), 0);
	h_expect_child(connect_in_cgroup, a, "connect from an attached cgroup");
	close(srv);
}

Test(cgroup, nested_nearest_ancestor)
{
	uint64_t t1 = fx_reserve(IPPROTO_UDP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	uint64_t t2 = fx_reserve(IPPROTO_UDP, START + 100, COUNT, PORTRES_KIND_PERSISTENT,
				 PORTRES_MODE_ENFORCE);
	char a[4200], b[4200], c[4200], x[4200];

	fx_child_cgroup("a", a, sizeof(a));
	fx_child_cgroup("a/b", b, sizeof(b));
	fx_child_cgroup("a/b/c", c, sizeof(c));
	fx_child_cgroup("a/x", x, sizeof(x));
	cr_assert_eq(portres_cgroup_attach(fx.l, h_cgid(a), t1, 0), 0);
	cr_assert_eq(portres_cgroup_attach(fx.l, h_cgid(b), t2, 0), 0);
	expect_in(a, AF_INET, IPPROTO_UDP, t1, START, 0, "a (attached to t1)");
	expect_in(b, AF_INET6, IPPROTO_UDP, t2, START + 100, 0, "a/b (attached to t2)");
	expect_in(c, AF_INET, IPPROTO_UDP, t2, START + 100, 0, "a/b/c (below a/b)");
	expect_in(x, AF_INET6, IPPROTO_UDP, t1, START, 0, "a/x (below a)");
	/* Detaching the nearer one hands a/b/c to a's token. */
	cr_assert_eq(portres_cgroup_detach(fx.l, h_cgid(b)), 0);
	expect_in(c, AF_INET, IPPROTO_UDP, t1, START, 0, "a/b/c after a/b was detached");
}

Test(cgroup, confine)
{
	uint64_t t = fx_reserve(IPPROTO_TCP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	char confined[4200], below[4200], open_[4200], plain[4200];
	int f, families[2] = { AF_INET, AF_INET6 };

	fx_child_cgroup("confined", confined, sizeof(confined));
	fx_child_cgroup("confined/below", below, sizeof(below));
	fx_child_cgroup("open", open_, sizeof(open_));
	fx_child_cgroup("plain", plain, sizeof(plain));
	cr_assert_eq(portres_cgroup_attach(fx.l, h_cgid(confined), t, PORTRES_CG_CONFINE), 0);
	cr_assert_eq(portres_cgroup_attach(fx.l, h_cgid(open_), t, 0), 0);
	for (f = 0; f < 2; f++) {
		expect_in(confined, families[f], IPPROTO_TCP, t, START, -EACCES, "confined cgroup");
		expect_in(below, families[f], IPPROTO_TCP, t, START, -EACCES, "below the confined cgroup");
		/* Confined to a TCP block: no UDP port is inside it. */
		expect_in(confined, families[f], IPPROTO_UDP, 0, 0, -EACCES,
			  "confined cgroup, other protocol");
		expect_in(open_, families[f], IPPROTO_TCP, t, START, 0, "unconfined sibling");
		expect_in(plain, families[f], IPPROTO_TCP, 0, 0, 0, "unattached sibling");
	}
	cr_expect(h_stats(t).denied >= 2, "confined denials counted: %llu",
		  (unsigned long long)h_stats(t).denied);
}

/* bind(0) of a confined UDP socket of the other protocol must fail too (nothing is inside). */
static int udp_bind0_in(void *arg)
{
	int fd, err;

	if ((err = h_enter_cgroup(arg)))
		return h_fail("enter: %s", strerror(-err));
	fd = h_socket(AF_INET, IPPROTO_UDP);
	err = fx_bind(fd, AF_INET, START + 1);
	if (err != -EACCES)
		return h_fail("confined udp bind of %u: %s", START + 1, strerror(-err));
	close(fd);
	return 0;
}

Test(cgroup, confine_other_protocol_block)
{
	uint64_t t = fx_reserve(IPPROTO_TCP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	char a[4200];

	fx_child_cgroup("a", a, sizeof(a));
	cr_assert_eq(portres_cgroup_attach(fx.l, h_cgid(a), t, PORTRES_CG_CONFINE), 0);
	h_expect_child(udp_bind0_in, a, "confined udp bind into the tcp block's numbers");
}

static int count_cgroups(uint64_t id, const struct portres_cgroup *c, void *arg)
{
	(*(int *)arg)++;
	return 0;
}

Test(cgroup, detach_restores)
{
	uint64_t t = fx_reserve(IPPROTO_UDP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	char a[4200];
	int n = 0;

	fx_child_cgroup("a", a, sizeof(a));
	cr_assert_eq(portres_cgroup_attach(fx.l, h_cgid(a), t, PORTRES_CG_CONFINE), 0);
	expect_in(a, AF_INET, IPPROTO_UDP, t, START, -EACCES, "attached and confined");
	cr_assert_eq(portres_cgroup_detach(fx.l, h_cgid(a)), 0);
	cr_expect_eq(portres_cgroup_detach(fx.l, h_cgid(a)), -ENOENT, "second detach");
	expect_in(a, AF_INET, IPPROTO_UDP, 0, 0, 0, "after detach");
	expect_in(a, AF_INET6, IPPROTO_UDP, 0, 0, 0, "after detach");
	/* A reserved port is still reserved for the now unassociated sockets. */
	{
		int fd = fx_socket(AF_INET, IPPROTO_UDP);

		cr_expect_eq(fx_bind(fd, AF_INET, START), -EACCES);
		close(fd);
	}
	cr_expect_eq(portres_cgroup_foreach(fx.l, count_cgroups, &n), 0);
	cr_expect_eq(n, 0, "%d cgroups still attached after detach", n);
}
