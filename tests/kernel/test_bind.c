// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_bind.c - bind(2) against a reservation, for both families and both
 * protocols: unreserved ports stay free, reserved ports are denied to others,
 * associated sockets get ports from their block until it is exhausted, and a
 * closed socket's port can be handed out again.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <stdio.h>

#include "helpers.h"

#define START 20000
#define COUNT 4

TestSuite(bind, .init = fx_setup, .fini = fx_teardown);

static uint64_t reserve_enforced(int proto)
{
	return fx_reserve(proto, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
}

static int assoc_socket(const struct fp *p, uint64_t token)
{
	int fd = fx_socket(p->family, p->proto);

	cr_assert_eq(h_associate(fd, token), 0, "%s: associate: %s", fp_name(p->family, p->proto),
		     strerror(errno));
	return fd;
}

/* Ports outside every block, and ports of a block of the other protocol, are left to the kernel. */
FP_TEST(bind, not_reserved_allowed)
{
	const char *n = fp_name(p->family, p->proto);
	int fd;

	reserve_enforced(p->proto);
	fx_reserve(other_proto(p->proto), 21000, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);

	fd = fx_socket(p->family, p->proto);
	cr_expect_eq(fx_bind(fd, p->family, START + COUNT), 0, "%s: port after the block", n);
	close(fd);
	fd = fx_socket(p->family, p->proto);
	cr_expect_eq(fx_bind(fd, p->family, START - 1), 0, "%s: port before the block", n);
	close(fd);
	fd = fx_socket(p->family, p->proto);
	cr_expect_eq(fx_bind(fd, p->family, 21001), 0, "%s: port of the other protocol's block", n);
	close(fd);
	fd = fx_socket(p->family, p->proto);
	cr_expect_eq(fx_bind(fd, p->family, 0), 0, "%s: bind(0) of an unassociated socket", n);
	cr_expect(fx_local_port(fd) < START || fx_local_port(fd) >= START + COUNT,
		  "%s: unassociated bind(0) got reserved port %u", n, fx_local_port(fd));
	close(fd);
}

FP_TEST(bind, reserved_denied)
{
	const char *n = fp_name(p->family, p->proto);
	const char *lo = p->family == AF_INET ? "127.0.0.1" : "::1";
	uint16_t port;
	int fd;

	reserve_enforced(p->proto);
	for (port = START; port < START + COUNT; port++) {
		fd = fx_socket(p->family, p->proto);
		cr_expect_eq(fx_bind(fd, p->family, port), -EACCES, "%s: unassociated bind of %u", n,
			     port);
		close(fd);
	}
	/* The address does not matter: the port is reserved on every address. */
	fd = fx_socket(p->family, p->proto);
	cr_expect_eq(h_bind_addr(fd, p->family, lo, START + 1), -EACCES, "%s: bind %s:%u", n, lo,
		     START + 1);
	close(fd);
}

FP_TEST(bind, associated_bind0_in_block)
{
	const char *n = fp_name(p->family, p->proto);
	uint64_t t = reserve_enforced(p->proto);
	int fd = assoc_socket(p, t);
	uint16_t port;

	cr_assert_eq(fx_bind(fd, p->family, 0), 0, "%s: associated bind(0)", n);
	port = fx_local_port(fd);
	cr_expect(port >= START && port < START + COUNT, "%s: bind(0) got %u, block %u-%u", n, port,
		  START, START + COUNT - 1);
	cr_expect_eq(h_users(p->proto, port), 1, "%s: users of %u after bind(0)", n, port);
	close(fd);
}

FP_TEST(bind, associated_explicit_in_block)
{
	const char *n = fp_name(p->family, p->proto);
	uint64_t t = reserve_enforced(p->proto);
	int fd = assoc_socket(p, t), fd2;

	cr_assert_eq(fx_bind(fd, p->family, START + 2), 0, "%s: associated bind of %u", n, START + 2);
	cr_expect_eq(fx_local_port(fd), START + 2, "%s: local port", n);
	cr_expect_eq(h_users(p->proto, START + 2), 1, "%s: users after explicit bind", n);
	/* The explicitly bound port is not handed out by bind(0). */
	fd2 = assoc_socket(p, t);
	cr_assert_eq(fx_bind(fd2, p->family, 0), 0, "%s: second associated bind(0)", n);
	cr_expect_neq(fx_local_port(fd2), START + 2, "%s: bind(0) handed out a held port", n);
	close(fd2);
	close(fd);
}

FP_TEST(bind, exhaustion)
{
	const char *n = fp_name(p->family, p->proto);
	uint64_t t = reserve_enforced(p->proto);
	bool seen[COUNT] = { false };
	int fds[COUNT], extra, i;

	for (i = 0; i < COUNT; i++) {
		uint16_t port;

		fds[i] = assoc_socket(p, t);
		cr_assert_eq(fx_bind(fds[i], p->family, 0), 0, "%s: bind(0) #%d of a block of %d", n,
			     i + 1, COUNT);
		port = fx_local_port(fds[i]);
		cr_assert(port >= START && port < START + COUNT, "%s: bind(0) #%d got %u", n, i + 1, port);
		cr_expect_not(seen[port - START], "%s: port %u handed out twice", n, port);
		seen[port - START] = true;
	}
	extra = assoc_socket(p, t);
	cr_expect_eq(fx_bind(extra, p->family, 0), -EADDRINUSE, "%s: bind(0) #%d of a block of %d", n,
		     COUNT + 1, COUNT);
	/* The failed bind claimed nothing. */
	for (i = 0; i < COUNT; i++)
		cr_expect_eq(h_users(p->proto, START + i), 1, "%s: users of %u", n, START + i);
	close(extra);
	for (i = 0; i < COUNT; i++)
		close(fds[i]);
}

FP_TEST(bind, release_on_close)
{
	const char *n = fp_name(p->family, p->proto);
	uint64_t t = reserve_enforced(p->proto);
	int fds[COUNT], fd, i, victim = 1;
	uint16_t freed;

	for (i = 0; i < COUNT; i++) {
		fds[i] = assoc_socket(p, t);
		cr_assert_eq(fx_bind(fds[i], p->family, 0), 0, "%s: bind(0) #%d", n, i + 1);
	}
	freed = fx_local_port(fds[victim]);
	close(fds[victim]);
	cr_expect_eq(h_users(p->proto, freed), 0, "%s: users of %u after close", n, freed);

	fd = assoc_socket(p, t);
	cr_assert_eq(fx_bind(fd, p->family, 0), 0, "%s: bind(0) after a close in a full block", n);
	cr_expect_eq(fx_local_port(fd), freed, "%s: got %u, the freed port was %u", n,
		     fx_local_port(fd), freed);
	fds[victim] = fd;
	for (i = 0; i < COUNT; i++)
		close(fds[i]);
	for (i = 0; i < COUNT; i++)
		cr_expect_eq(h_users(p->proto, START + i), 0, "%s: users of %u after all closed", n,
			     START + i);
}

/*
 * The kernel unbinds a closed socket only after cgroup/sock_release has
 * dropped its claim: a port released moments ago is offered last, so that
 * bind(0) does not land on a port that is still bound.
 */
FP_TEST(bind, released_port_offered_last)
{
	const char *n = fp_name(p->family, p->proto);
	uint64_t t = reserve_enforced(p->proto);
	uint16_t last = 0, port;
	int i, fd;

	for (i = 0; i < 3 * COUNT; i++) {
		fd = assoc_socket(p, t);
		cr_assert_eq(fx_bind(fd, p->family, 0), 0, "%s: bind(0) #%d", n, i + 1);
		port = fx_local_port(fd);
		cr_expect_neq(port, last, "%s: bind(0) #%d got %u, released just before", n, i + 1,
			      port);
		close(fd);
		last = port;
	}
}

/* A second bind attempt on the same socket drops the first claim. */
FP_TEST(bind, failed_bind_then_rebind)
{
	const char *n = fp_name(p->family, p->proto);
	uint64_t t = reserve_enforced(p->proto);
	int a = assoc_socket(p, t), b = assoc_socket(p, t);

	cr_assert_eq(fx_bind(a, p->family, START), 0, "%s: bind %u", n, START);
	cr_expect_eq(fx_bind(b, p->family, START), -EADDRINUSE, "%s: second bind of %u", n, START);
	cr_expect_eq(fx_bind(b, p->family, START + 1), 0, "%s: rebind after a failed bind", n);
	close(a);
	cr_expect_eq(h_users(p->proto, START), 0, "%s: users of %u after its holder closed", n, START);
	close(b);
	cr_expect_eq(h_users(p->proto, START + 1), 0, "%s: users of %u after close", n, START + 1);
}

/*
 * inet_bind accepts AF_UNSPEC with INADDR_ANY as AF_INET ("compatibility
 * games"): the reservation must hold for such a bind as well.
 */
Test(bind, unspec_family_is_ipv4)
{
	int protos[2] = { IPPROTO_TCP, IPPROTO_UDP }, i;

	for (i = 0; i < 2; i++) {
		struct sockaddr_in sin = { .sin_family = AF_UNSPEC, .sin_port = htons(START + 1) };
		uint64_t t = fx_reserve(protos[i], START, COUNT, PORTRES_KIND_PERSISTENT,
					PORTRES_MODE_ENFORCE);
		int fd = fx_socket(AF_INET, protos[i]);

		errno = 0;
		cr_expect_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), -1,
			     "%s: AF_UNSPEC bind of a reserved port succeeded", proto_name(protos[i]));
		cr_expect_eq(errno, EACCES, "%s: AF_UNSPEC bind: %s", proto_name(protos[i]),
			     strerror(errno));
		close(fd);

		/* Associated: bind(0) through AF_UNSPEC is served from the block too. */
		fd = fx_socket(AF_INET, protos[i]);
		cr_assert_eq(h_associate(fd, t), 0);
		sin.sin_port = 0;
		cr_expect_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0, "%s: %s",
			     proto_name(protos[i]), strerror(errno));
		cr_expect(fx_local_port(fd) >= START && fx_local_port(fd) < START + COUNT,
			  "%s: AF_UNSPEC bind(0) got %u", proto_name(protos[i]), fx_local_port(fd));
		close(fd);
	}
}

/* Sockets of another network namespace are neither restricted nor served. */
static uint64_t other_ns_token[2]; /* tcp, udp */

static int other_netns_child(void *arg)
{
	int i, fd, err;

	if (unshare(CLONE_NEWNET))
		return h_fail("unshare: %s", strerror(errno));
	for (i = 0; i < 4; i++) {
		const struct fp *p = &fp_all[i];

		fd = h_socket(p->family, p->proto);
		if (fd < 0)
			return h_fail("socket: %s", strerror(-fd));
		err = fx_bind(fd, p->family, START + 1);
		if (err)
			return h_fail("%s: bind of a port reserved in another netns: %s",
				      fp_name(p->family, p->proto), strerror(-err));
		close(fd);
		fd = h_socket(p->family, p->proto);
		err = h_setassoc(fd, other_ns_token[p->proto == IPPROTO_UDP]);
		if (err != -EINVAL)
			return h_fail("%s: associating a token of another netns: %s (want EINVAL)",
				      fp_name(p->family, p->proto), strerror(-err));
		close(fd);
	}
	return 0;
}

Test(bind, other_netns_unaffected)
{
	other_ns_token[0] = reserve_enforced(IPPROTO_TCP);
	other_ns_token[1] = reserve_enforced(IPPROTO_UDP);
	h_expect_child(other_netns_child, NULL, "bind in a new netns");
}

/*
 * One port reserved in two network namespaces: the first takes the port's
 * slot of portres_ports, the second its overflow (portres_portx). Each is
 * enforced in its own netns only, and deleting one leaves the other whole.
 */
Test(bind, same_port_two_netns)
{
	struct portres_resv r = { 0 };
	struct portres_port ent;
	uint64_t ta = reserve_enforced(IPPROTO_TCP), tb = ta ^ 0xb0b0, nsb;
	int home, bns, fd, err, map;
	char path[600];
	uint32_t word;
	uint64_t bits;

	home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	cr_assert(home >= 0);
	cr_assert_eq(unshare(CLONE_NEWNET), 0, "unshare: %s", strerror(errno));
	cr_assert_eq(portres_netns_cookie(&nsb), 0);
	cr_assert_neq(nsb, fx.netns);
	r.netns = nsb;
	r.proto = IPPROTO_TCP;
	r.start = START;
	r.count = COUNT;
	r.kind = PORTRES_KIND_PERSISTENT;
	err = portres_resv_add(fx.l, tb, &r);
	cr_assert_eq(err, 0, "second netns, same ports: %s", strerror(-err));
	cr_assert_eq(portres_resv_add(fx.l, tb ^ 1, &r), -EADDRINUSE, "overlap in the second netns");

	bns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	cr_assert(bns >= 0);
	/* In netns B: B's reservation rules. */
	fd = fx_socket(AF_INET, IPPROTO_TCP);
	cr_expect_eq(fx_bind(fd, AF_INET, START + 1), -EACCES, "unassociated bind in B");
	close(fd);
	fd = fx_socket(AF_INET, IPPROTO_TCP);
	cr_assert_eq(h_setassoc(fd, tb), 0);
	cr_expect_eq(h_setassoc(fx_socket(AF_INET, IPPROTO_TCP), ta), -EINVAL, "A's token in B");
	cr_assert_eq(fx_bind(fd, AF_INET, 0), 0);
	cr_expect(h_local_port(fd) >= START && h_local_port(fd) < START + COUNT);
	cr_assert_eq(portres_port_owner(fx.l, nsb, IPPROTO_TCP, h_local_port(fd), &ent), 0);
	cr_expect_eq(ent.token, tb);
	cr_expect_eq(ent.users, 1);
	close(fd);

	/* Back in A: A's reservation is untouched by B's. */
	cr_assert_eq(setns(home, CLONE_NEWNET), 0, "setns: %s", strerror(errno));
	fd = fx_socket(AF_INET, IPPROTO_TCP);
	cr_expect_eq(fx_bind(fd, AF_INET, START + 1), -EACCES, "unassociated bind in A");
	close(fd);
	cr_assert_eq(portres_port_owner(fx.l, fx.netns, IPPROTO_TCP, START, &ent), 0);
	cr_expect_eq(ent.token, ta);

	/* Deleting A leaves B enforced, and B's entries are found from A's slot being free. */
	cr_assert_eq(portres_resv_del(fx.l, ta), 0);
	fd = fx_socket(AF_INET, IPPROTO_TCP);
	cr_expect_eq(fx_bind(fd, AF_INET, START + 1), 0, "A deleted: bind in A");
	close(fd);
	cr_assert_eq(portres_port_owner(fx.l, nsb, IPPROTO_TCP, START, &ent), 0);
	cr_expect_eq(ent.token, tb, "B's entry after A's deletion");
	/* A's slot is empty, B's entry is in the overflow: B's ports still refused in B. */
	cr_assert_eq(setns(bns, CLONE_NEWNET), 0, "setns B: %s", strerror(errno));
	fd = fx_socket(AF_INET, IPPROTO_TCP);
	cr_expect_eq(fx_bind(fd, AF_INET, START + 1), -EACCES, "A deleted: unassociated bind in B");
	close(fd);
	cr_assert_eq(setns(home, CLONE_NEWNET), 0, "setns: %s", strerror(errno));
	close(bns);
	cr_assert_eq(portres_resv_del(fx.l, tb), 0);
	cr_assert_eq(portres_port_owner(fx.l, nsb, IPPROTO_TCP, START, &ent), 0);
	cr_expect_eq(ent.token, 0, "B's entry after B's deletion");
	/* Both gone: the port's bit in portres_pbits is clear again (unassociated binds take the short path). */
	snprintf(path, sizeof(path), "%s/maps/portres_pbits", fx.bpffs);
	map = bpf_obj_get(path);
	cr_assert_geq(map, 0, "%s: %s", path, strerror(errno));
	word = portres_pbits_word(IPPROTO_TCP, START + 1);
	cr_assert_eq(bpf_map_lookup_elem(map, &word, &bits), 0);
	cr_expect_eq((bits >> ((START + 1) & 63)) & 1, 0, "the bit of %u after both deletions", START + 1);
	close(map);
	close(home);
}

/* A connection on port from a client socket of the block, closed first (active close). */
static void time_wait_on(const struct fp *p, uint64_t t, uint16_t *port)
{
	uint16_t lport;
	int lis = h_listener(p->family, &lport), cli = assoc_socket(p, t), acc;

	cr_assert_eq(fx_bind(cli, p->family, 0), 0);
	*port = fx_local_port(cli);
	cr_assert_eq(h_connect_lo(cli, p->family, lport), 0, "connect: %s", strerror(errno));
	acc = accept(lis, NULL, NULL);
	cr_assert(acc >= 0, "accept: %s", strerror(errno));
	close(cli); /* FIN first: this side ends in TIME_WAIT */
	usleep(20000);
	close(acc);
	close(lis);
	usleep(20000);
}

/*
 * A block full but for two ports: one the kernel still holds (TIME_WAIT of a
 * normal active close, or a closed listener's accepted connection) and one
 * really free, with the next-fit offset on the held one. bind(0) must return
 * the free port: the held one would fail with EADDRINUSE.
 */
static void full_but_one(const struct fp *p, bool listener)
{
	const char *n = fp_name(p->family, p->proto);
	uint16_t start = START + (p->family == AF_INET6 ? 100 : 0) + (listener ? 200 : 0);
	uint64_t t = fx_reserve(p->proto, start, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	int fds[COUNT], i, fd, cli = -1, acc = -1, lis;
	uint16_t held;

	if (!listener) {
		time_wait_on(p, t, &held);
	} else {
		lis = assoc_socket(p, t);
		cr_assert_eq(fx_bind(lis, p->family, 0), 0);
		cr_assert_eq(listen(lis, 4), 0);
		held = fx_local_port(lis);
		cli = fx_socket(p->family, IPPROTO_TCP);
		cr_assert_eq(h_connect_lo(cli, p->family, held), 0, "%s: connect: %s", n, strerror(errno));
		acc = accept(lis, NULL, NULL);
		cr_assert(acc >= 0, "%s: accept: %s", n, strerror(errno));
		close(lis); /* acc stays connected on the port */
	}
	/* bind(0) through the rest of the block: next fit comes back to the held port. */
	for (i = 1; i < COUNT; i++) {
		fds[i] = assoc_socket(p, t);
		cr_assert_eq(fx_bind(fds[i], p->family, 0), 0, "%s: bind(0) #%d", n, i);
		cr_assert_neq(fx_local_port(fds[i]), held, "%s: bind(0) #%d got the held port", n, i);
	}
	close(fds[1]);
	usleep(5000); /* past the quarantine of a plain close */
	fd = assoc_socket(p, t);
	cr_expect_eq(fx_bind(fd, p->family, 0), 0, "%s: bind(0) with one free port and one held: %s", n,
		     strerror(errno));
	cr_expect_neq(fx_local_port(fd), held, "%s: bind(0) got %u, which the kernel still holds", n,
		      held);
	close(fd);
	for (i = 2; i < COUNT; i++)
		close(fds[i]);
	if (acc >= 0)
		close(acc);
	if (cli >= 0)
		close(cli);
}

Test(bind, bind0_skips_time_wait_port)
{
	struct fp v4 = { AF_INET, IPPROTO_TCP }, v6 = { AF_INET6, IPPROTO_TCP };

	full_but_one(&v4, false);
	full_but_one(&v6, false);
}

Test(bind, bind0_skips_port_of_closed_listener)
{
	struct fp v4 = { AF_INET, IPPROTO_TCP }, v6 = { AF_INET6, IPPROTO_TCP };

	full_but_one(&v4, true);
	full_but_one(&v6, true);
}

/*
 * A hold stamped in this very tick is now + hold + 1 (free_at is odd), and
 * another CPU's clock may run a little ahead: such a port is still held.
 * held() once took it for free: bind(0) handed it out first, and connect's
 * probe, dropping a port the kernel still had and finding it again in the
 * same tick, tried it eight times over and failed with EADDRNOTAVAIL.
 * Here the first port of a 2-port block is stamped 1 ms past the longest
 * hold; bind(0) must give the second port first.
 */
Test(bind, hold_stamped_past_this_clock_still_held)
{
	char path[600];
	uint64_t t = fx_reserve(IPPROTO_TCP, START, 2, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	uint32_t slot = portres_port_slot(IPPROTO_TCP, START);
	struct portres_port ent;
	int map, fd;

	snprintf(path, sizeof(path), "%s/maps/portres_ports", fx.bpffs);
	map = bpf_obj_get(path);
	cr_assert_geq(map, 0, "%s: %s", path, strerror(errno));
	cr_assert_eq(bpf_map_lookup_elem(map, &slot, &ent), 0);
	cr_assert_eq(ent.token, t, "the block's first port is not in its slot");
	ent.free_at = (h_now_us() + PORTRES_HOLD_US + 1000) | 1;
	cr_assert_eq(bpf_map_update_elem(map, &slot, &ent, BPF_EXIST), 0);
	close(map);

	fd = fx_socket(AF_INET, IPPROTO_TCP);
	cr_assert_eq(h_associate(fd, t), 0);
	cr_assert_eq(fx_bind(fd, AF_INET, 0), 0);
	cr_expect_eq(fx_local_port(fd), START + 1, "bind(0) took the held port %u first", START);
	close(fd);
}
