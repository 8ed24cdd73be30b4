// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_cgroup.c - cgroup association (portres_cgroup_attach): sockets created
 * in an attached cgroup, or below it, are associated with the token of their
 * protocol's slot (nearest attached ancestor wins); PORTRES_CG_CONFINE denies
 * binds outside the block of the protocols with a block, CONFINE_ALL those of
 * the others too; denials say why (confined, gone, wrong netns); detach
 * undoes it. The work runs in forked children moved into child cgroups.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

#define START 26000
#define COUNT 4
#define OUTSIDE 26500 /* in no block */

TestSuite(cgroup, .init = fx_setup, .fini = fx_teardown);

static int count_cgroups(uint64_t id, const struct portres_cgroup *c, void *arg);

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
	cr_assert_eq(h_attach(a, p->proto, t, 0), 0);
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
	cr_assert_eq(h_attach(a, IPPROTO_TCP, conn_token, 0), 0);
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
	cr_assert_eq(h_attach(a, IPPROTO_UDP, t1, 0), 0);
	cr_assert_eq(h_attach(b, IPPROTO_UDP, t2, 0), 0);
	expect_in(a, AF_INET, IPPROTO_UDP, t1, START, 0, "a (attached to t1)");
	expect_in(b, AF_INET6, IPPROTO_UDP, t2, START + 100, 0, "a/b (attached to t2)");
	expect_in(c, AF_INET, IPPROTO_UDP, t2, START + 100, 0, "a/b/c (below a/b)");
	expect_in(x, AF_INET6, IPPROTO_UDP, t1, START, 0, "a/x (below a)");
	/* Detaching the nearer one hands a/b/c to a's token. */
	cr_assert_eq(portres_cgroup_detach(fx.l, h_cgid(b)), 0);
	expect_in(c, AF_INET, IPPROTO_UDP, t1, START, 0, "a/b/c after a/b was detached");
}

FP_TEST(cgroup, both_slots)
{
	uint64_t tcp = fx_reserve(IPPROTO_TCP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	uint64_t udp = fx_reserve(IPPROTO_UDP, START + 100, COUNT, PORTRES_KIND_PERSISTENT,
				  PORTRES_MODE_ENFORCE);
	struct portres_cgroup c = { .tcp_token = tcp, .udp_token = udp, .flags = PORTRES_CG_CONFINE };
	char a[4200];

	fx_child_cgroup("a", a, sizeof(a));
	cr_assert_eq(portres_cgroup_attach(fx.l, h_cgid(a), &c), 0);
	if (p->proto == IPPROTO_TCP)
		expect_in(a, p->family, p->proto, tcp, START, -EACCES, "tcp slot");
	else
		expect_in(a, p->family, p->proto, udp, START + 100, -EACCES, "udp slot");
}

Test(cgroup, confine)
{
	uint64_t t = fx_reserve(IPPROTO_TCP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	char confined[4200], below[4200], all[4200], open_[4200], plain[4200];
	int f, families[2] = { AF_INET, AF_INET6 };

	fx_child_cgroup("confined", confined, sizeof(confined));
	fx_child_cgroup("confined/below", below, sizeof(below));
	fx_child_cgroup("all", all, sizeof(all));
	fx_child_cgroup("open", open_, sizeof(open_));
	fx_child_cgroup("plain", plain, sizeof(plain));
	cr_assert_eq(h_attach(confined, IPPROTO_TCP, t, PORTRES_CG_CONFINE), 0);
	cr_assert_eq(h_attach(all, IPPROTO_TCP, t, PORTRES_CG_CONFINE | PORTRES_CG_CONFINE_ALL), 0);
	cr_assert_eq(h_attach(open_, IPPROTO_TCP, t, 0), 0);
	for (f = 0; f < 2; f++) {
		expect_in(confined, families[f], IPPROTO_TCP, t, START, -EACCES, "confined cgroup");
		expect_in(below, families[f], IPPROTO_TCP, t, START, -EACCES, "below the confined cgroup");
		/* CONFINE covers the protocols with a block: UDP has none here. */
		expect_in(confined, families[f], IPPROTO_UDP, 0, 0, 0, "confined cgroup, other protocol");
		expect_in(all, families[f], IPPROTO_TCP, t, START, -EACCES, "CONFINE_ALL cgroup");
		/* CONFINE_ALL: no UDP port is inside a block, every UDP bind is denied. */
		expect_in(all, families[f], IPPROTO_UDP, 0, 0, -EACCES, "CONFINE_ALL cgroup, other protocol");
		expect_in(open_, families[f], IPPROTO_TCP, t, START, 0, "unconfined sibling");
		expect_in(plain, families[f], IPPROTO_TCP, 0, 0, 0, "unattached sibling");
	}
	cr_expect(h_stats(t).denied >= 2, "confined denials counted: %llu",
		  (unsigned long long)h_stats(t).denied);
}

/* One bind of port in cgroup arg (after unsharing the netns if asked), expecting want. */
struct bind_in {
	const char *cgroup;
	int proto;
	uint16_t port;
	int want;
	bool new_netns;
};

static int bind_in(void *arg)
{
	const struct bind_in *b = arg;
	int fd, err;

	if ((err = h_enter_cgroup(b->cgroup)))
		return h_fail("enter: %s", strerror(-err));
	if (b->new_netns && unshare(CLONE_NEWNET))
		return h_fail("unshare(CLONE_NEWNET): %s", strerror(errno));
	fd = h_socket(AF_INET, b->proto);
	err = fx_bind(fd, AF_INET, b->port);
	if (err != b->want)
		return h_fail("%s bind of %u: %s, want %s", proto_name(b->proto), b->port,
			      strerror(-err), strerror(-b->want));
	close(fd);
	return 0;
}

/* The DENY event of a confined bind, with its token and reason. */
static void expect_deny(struct h_events *log, uint64_t token, uint8_t reason, const char *what)
{
	const struct portres_event *ev = h_events_wait(log, PORTRES_EV_DENY, 1000);

	cr_assert_not_null(ev, "%s: no DENY event", what);
	cr_expect_eq(ev->token, token, "%s: event token %#llx, want %#llx", what,
		     (unsigned long long)ev->token, (unsigned long long)token);
	cr_expect_eq(ev->reason, reason, "%s: reason %u, want %u", what, ev->reason, reason);
	cr_expect_eq(ev->err, EACCES, "%s: err %d", what, ev->err);
	log->n = 0;
}

Test(cgroup, confine_all_covers_other_protocol)
{
	uint64_t t = fx_reserve(IPPROTO_TCP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	struct bind_in b = { .proto = IPPROTO_UDP, .port = START + 1 };
	struct h_events log;
	char a[4200];

	h_events_open(&log);
	fx_child_cgroup("a", a, sizeof(a));
	b.cgroup = a;
	cr_assert_eq(h_attach(a, IPPROTO_TCP, t, PORTRES_CG_CONFINE), 0);
	h_expect_child(bind_in, &b, "udp bind in a cgroup confined to a tcp block");
	cr_assert_eq(h_attach(a, IPPROTO_TCP, t, PORTRES_CG_CONFINE | PORTRES_CG_CONFINE_ALL), 0);
	b.want = -EACCES;
	h_expect_child(bind_in, &b, "udp bind with CONFINE_ALL");
	expect_deny(&log, 0, PORTRES_REASON_CONFINED, "CONFINE_ALL, no udp block");
	b.proto = IPPROTO_TCP;
	b.port = OUTSIDE;
	h_expect_child(bind_in, &b, "tcp bind outside the block");
	expect_deny(&log, t, PORTRES_REASON_CONFINED, "confined tcp bind outside");
}

/* A confined cgroup whose block was deleted: every bind refused, reason GONE. */
Test(cgroup, confine_reason_gone)
{
	uint64_t t = fx_reserve(IPPROTO_UDP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	struct bind_in b = { .proto = IPPROTO_UDP, .port = START + 1, .want = -EACCES };
	struct h_events log;
	char a[4200];

	h_events_open(&log);
	fx_child_cgroup("a", a, sizeof(a));
	b.cgroup = a;
	cr_assert_eq(h_attach(a, IPPROTO_UDP, t, PORTRES_CG_CONFINE), 0);
	cr_assert_eq(portres_resv_del(fx.l, t), 0);
	h_expect_child(bind_in, &b, "confined bind into a deleted block");
	expect_deny(&log, t, PORTRES_REASON_GONE, "deleted block");
	b.port = 0;
	h_expect_child(bind_in, &b, "confined bind(0) with a deleted block");
	expect_deny(&log, t, PORTRES_REASON_GONE, "deleted block, bind(0)");
}

/* Processes of the cgroup in another netns than its block: refused, reason WRONG_NETNS. */
Test(cgroup, confine_reason_wrong_netns)
{
	uint64_t t = fx_reserve(IPPROTO_TCP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	struct bind_in b = { .proto = IPPROTO_TCP, .port = START, .want = -EACCES, .new_netns = true };
	struct h_events log;
	char a[4200];

	h_events_open(&log);
	fx_child_cgroup("a", a, sizeof(a));
	b.cgroup = a;
	cr_assert_eq(h_attach(a, IPPROTO_TCP, t, PORTRES_CG_CONFINE), 0);
	h_expect_child(bind_in, &b, "confined bind in another netns");
	expect_deny(&log, t, PORTRES_REASON_WRONG_NETNS, "block in another netns");
	/* Unconfined, the same socket is simply not served. */
	cr_assert_eq(h_attach(a, IPPROTO_TCP, t, 0), 0);
	b.want = 0;
	h_expect_child(bind_in, &b, "unconfined bind in another netns");
}

Test(cgroup, attach_checks_slots)
{
	uint64_t t = fx_reserve(IPPROTO_TCP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	char a[4200];
	int n = 0;

	fx_child_cgroup("a", a, sizeof(a));
	cr_expect_eq(h_attach(a, IPPROTO_UDP, t, 0), -EPROTOTYPE, "tcp block in the udp slot");
	cr_expect_eq(h_attach(a, IPPROTO_TCP, t, 0x80), -EINVAL, "unknown flag");
	cr_expect_eq(portres_cgroup_attach(fx.l, h_cgid(a), NULL), -EINVAL, "no value");
	cr_expect_eq(portres_cgroup_foreach(fx.l, count_cgroups, &n), 0);
	cr_expect_eq(n, 0, "a refused attach left %d entries", n);
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
	cr_assert_eq(h_attach(a, IPPROTO_UDP, t, PORTRES_CG_CONFINE), 0);
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

/* connect() of a confined socket whose block is gone: refused as its bind, reason GONE. */
static uint16_t gone_dport;

static int connect_confined_gone(void *arg)
{
	int fd, err;

	if ((err = h_enter_cgroup(arg)))
		return h_fail("enter: %s", strerror(-err));
	fd = h_socket(AF_INET, IPPROTO_TCP);
	err = h_connect_lo(fd, AF_INET, gone_dport);
	if (err != -EACCES)
		return h_fail("connect of a confined socket whose block is gone: %s (port %u)",
			      strerror(-err), h_local_port(fd));
	close(fd);
	fd = h_socket(AF_INET6, IPPROTO_UDP);
	err = h_connect_lo(fd, AF_INET6, 53);
	if (err)
		return h_fail("udp connect, a protocol without a block (CONFINE only): %s", strerror(-err));
	close(fd);
	return 0;
}

Test(cgroup, confined_connect_gone)
{
	uint64_t t = fx_reserve(IPPROTO_TCP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	struct h_events log;
	char a[4200];
	int srv;

	h_events_open(&log);
	srv = h_listener(AF_INET, &gone_dport);
	fx_child_cgroup("a", a, sizeof(a));
	cr_assert_eq(h_attach(a, IPPROTO_TCP, t, PORTRES_CG_CONFINE), 0);
	cr_assert_eq(portres_resv_del(fx.l, t), 0);
	h_expect_child(connect_confined_gone, a, "connect with the block gone");
	expect_deny(&log, t, PORTRES_REASON_GONE, "connect, block gone");
	close(srv);
}

/*
 * sendto() on an unbound UDP socket would get a kernel port outside the
 * block: an associated one is told to bind first (EINVAL), a confined one
 * without a usable block is refused (EACCES); once bound, sendto works.
 */
static int send_lo(int fd, int family)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char b = 'x';

	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(9);
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(9);
		sin6->sin6_addr = in6addr_loopback;
		len = sizeof(*sin6);
	}
	return sendto(fd, &b, 1, 0, (struct sockaddr *)&ss, len) < 0 ? -errno : 0;
}

static int sendto_confined(void *arg)
{
	int fd, err;

	if ((err = h_enter_cgroup(arg)))
		return h_fail("enter: %s", strerror(-err));
	fd = h_socket(AF_INET, IPPROTO_UDP);
	err = send_lo(fd, AF_INET);
	close(fd);
	return err == -EACCES ? 0 : h_fail("sendto of a confined socket, block gone: %s", strerror(-err));
}

Test(cgroup, sendto_unbound)
{
	uint64_t t = fx_reserve(IPPROTO_UDP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	int f, families[2] = { AF_INET, AF_INET6 };
	char a[4200];

	for (f = 0; f < 2; f++) {
		int fd = fx_socket(families[f], IPPROTO_UDP), plain = fx_socket(families[f], IPPROTO_UDP);

		int bound = fx_socket(families[f], IPPROTO_UDP);

		cr_assert_eq(h_associate(fd, t), 0);
		cr_expect_eq(send_lo(fd, families[f]), -EINVAL, "%s: sendto before bind",
			     fp_name(families[f], IPPROTO_UDP));
		cr_expect_eq(send_lo(fd, families[f]), -EINVAL, "%s: sendto again, on the kernel's port",
			     fp_name(families[f], IPPROTO_UDP));
		cr_assert_eq(h_associate(bound, t), 0);
		cr_assert_eq(fx_bind(bound, families[f], 0), 0);
		cr_expect_eq(send_lo(bound, families[f]), 0, "%s: sendto after bind(0)",
			     fp_name(families[f], IPPROTO_UDP));
		close(bound);
		cr_expect_eq(send_lo(plain, families[f]), 0, "%s: sendto of an unassociated socket",
			     fp_name(families[f], IPPROTO_UDP));
		close(fd);
		close(plain);
	}
	fx_child_cgroup("a", a, sizeof(a));
	cr_assert_eq(h_attach(a, IPPROTO_UDP, t, PORTRES_CG_CONFINE), 0);
	cr_assert_eq(portres_resv_del(fx.l, t), 0);
	h_expect_child(sendto_confined, a, "sendto in a confined cgroup whose block is gone");
}
