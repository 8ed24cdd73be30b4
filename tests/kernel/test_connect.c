// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_connect.c - connect(2) of an unbound associated socket takes its local
 * port from the block (bpf_bind in cgroup/connect4/6), TCP to a listener on
 * 127.0.0.1 / ::1 and UDP; an exhausted block gives EADDRNOTAVAIL.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

#define START 22000
#define COUNT 3

TestSuite(connect, .init = fx_setup, .fini = fx_teardown);

/* A TCP listener, or for UDP nothing (connect needs no peer): returns its fd or -1. */
static int peer(const struct fp *p, uint16_t *port)
{
	if (p->proto == IPPROTO_TCP)
		return h_listener(p->family, port);
	*port = 9; /* discard: a UDP connect only sets the default destination */
	return -1;
}

static bool in_block(uint16_t port)
{
	return port >= START && port < START + COUNT;
}

/* Closes a socket; a TCP one with RST, so that no FIN_WAIT/TIME_WAIT keeps its port. */
static void close_now(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
	close(fd);
}

FP_TEST(connect, autobind_from_block)
{
	const char *n = fp_name(p->family, p->proto);
	uint64_t t = fx_reserve(p->proto, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	uint16_t dport, lport;
	int srv = peer(p, &dport), fd = fx_socket(p->family, p->proto);

	cr_assert_eq(h_associate(fd, t), 0, "%s: associate: %s", n, strerror(errno));
	cr_assert_eq(h_connect_lo(fd, p->family, dport), 0, "%s: connect: %s", n, strerror(errno));
	lport = fx_local_port(fd);
	cr_expect(in_block(lport), "%s: connect autobound to %u, block %u-%u", n, lport, START,
		  START + COUNT - 1);
	cr_expect_eq(h_users(p->proto, lport), 1, "%s: users of %u after connect", n, lport);
	cr_expect_eq(h_stats(t).allocated, 1, "%s: counter allocated after connect", n);
	close(fd);
	cr_expect_eq(h_users(p->proto, lport), 0, "%s: users of %u after close", n, lport);

	/* An unassociated socket still gets an ephemeral port, outside the block. */
	fd = fx_socket(p->family, p->proto);
	cr_assert_eq(h_connect_lo(fd, p->family, dport), 0, "%s: unassociated connect", n);
	cr_expect_not(in_block(fx_local_port(fd)), "%s: unassociated connect got %u", n,
		      fx_local_port(fd));
	close(fd);
	if (srv >= 0)
		close(srv);
}

/* A socket bound before connect keeps its port: only unbound sockets are autobound. */
FP_TEST(connect, bound_socket_keeps_port)
{
	const char *n = fp_name(p->family, p->proto);
	uint64_t t = fx_reserve(p->proto, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	uint16_t dport;
	int srv = peer(p, &dport), fd = fx_socket(p->family, p->proto);

	cr_assert_eq(h_associate(fd, t), 0);
	cr_assert_eq(fx_bind(fd, p->family, START + 2), 0, "%s: bind %u", n, START + 2);
	cr_assert_eq(h_connect_lo(fd, p->family, dport), 0, "%s: connect: %s", n, strerror(errno));
	cr_expect_eq(fx_local_port(fd), START + 2, "%s: local port after connect", n);
	cr_expect_eq(h_users(p->proto, START + 2), 1, "%s: users of the bound port", n);
	cr_expect_eq(h_stats(t).allocated, 0, "%s: connect of a bound socket allocated", n);
	close(fd);
	if (srv >= 0)
		close(srv);
}

FP_TEST(connect, exhaustion_eaddrnotavail)
{
	const char *n = fp_name(p->family, p->proto);
	uint64_t t = fx_reserve(p->proto, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	const struct portres_event *ev;
	bool seen[COUNT] = { false };
	int fds[COUNT], extra, i, srv;
	struct h_events log;
	uint16_t dport;

	h_events_open(&log);
	srv = peer(p, &dport);
	for (i = 0; i < COUNT; i++) {
		uint16_t lport;

		fds[i] = fx_socket(p->family, p->proto);
		cr_assert_eq(h_associate(fds[i], t), 0);
		cr_assert_eq(h_connect_lo(fds[i], p->family, dport), 0, "%s: connect #%d: %s", n, i + 1,
			     strerror(errno));
		lport = fx_local_port(fds[i]);
		cr_assert(in_block(lport), "%s: connect #%d got %u", n, i + 1, lport);
		cr_expect_not(seen[lport - START], "%s: port %u handed out twice", n, lport);
		seen[lport - START] = true;
	}
	extra = fx_socket(p->family, p->proto);
	cr_assert_eq(h_associate(extra, t), 0);
	cr_expect_eq(h_connect_lo(extra, p->family, dport), -EADDRNOTAVAIL,
		     "%s: connect #%d on a block of %d", n, COUNT + 1, COUNT);
	cr_expect_eq(h_stats(t).exhausted, 1, "%s: counter exhausted", n);
	cr_expect_eq(h_stats(t).allocated, COUNT, "%s: counter allocated", n);
	ev = h_events_wait(&log, PORTRES_EV_EXHAUSTED, 1000);
	cr_assert_not_null(ev, "%s: no EXHAUSTED event", n);
	cr_expect(ev->token == t && ev->err == EADDRNOTAVAIL && ev->proto == p->proto &&
		  ev->family == p->family && ev->pid == (uint32_t)getpid(),
		  "%s: EXHAUSTED event token %#llx err %d proto %u family %u pid %u", n,
		  (unsigned long long)ev->token, ev->err, ev->proto, ev->family, ev->pid);

	/* A port freed by close serves the next connect (TCP: abortive close, no TIME_WAIT). */
	close_now(fds[0]);
	cr_expect_eq(h_connect_lo(extra, p->family, dport), 0, "%s: connect after a close: %s", n,
		     strerror(errno));
	cr_expect(in_block(fx_local_port(extra)), "%s: got %u", n, fx_local_port(extra));
	close(extra);
	for (i = 1; i < COUNT; i++)
		close(fds[i]);
	if (srv >= 0)
		close(srv);
}

/* A dual-stack socket connecting to a v4-mapped address is served from the block too. */
Test(connect, v4_mapped_from_v6_socket)
{
	int protos[2] = { IPPROTO_TCP, IPPROTO_UDP }, i;

	for (i = 0; i < 2; i++) {
		const char *n = proto_name(protos[i]);
		uint64_t t = fx_reserve(protos[i], START + 10 * i, COUNT, PORTRES_KIND_PERSISTENT,
					PORTRES_MODE_ENFORCE);
		struct sockaddr_in6 sa = { .sin6_family = AF_INET6 };
		uint16_t dport = 9, lport;
		int srv = -1, fd, off = 0;

		if (protos[i] == IPPROTO_TCP)
			srv = h_listener(AF_INET, &dport);
		fd = fx_socket(AF_INET6, protos[i]);
		cr_assert_eq(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off)), 0);
		cr_assert_eq(h_associate(fd, t), 0);
		sa.sin6_port = htons(dport);
		inet_pton(AF_INET6, "::ffff:127.0.0.1", &sa.sin6_addr);
		cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "%s: connect: %s", n,
			     strerror(errno));
		lport = fx_local_port(fd);
		cr_expect(lport >= START + 10 * i && lport < START + 10 * i + COUNT,
			  "%s: v4-mapped connect got %u", n, lport);
		close(fd);
		if (srv >= 0)
			close(srv);
	}
}

/*
 * A TCP connection closed first by our side leaves its port in the kernel
 * (FIN_WAIT2, then TIME_WAIT) although no socket of ours claims it any more.
 * connect must then take another free port of the block, not fail with
 * EADDRINUSE; when the lingering ports are all that is left: EADDRNOTAVAIL.
 */
Test(connect, tcp_lingering_port_skipped)
{
	int families[2] = { AF_INET, AF_INET6 }, f, i, err;

	for (f = 0; f < 2; f++) {
		const char *n = fp_name(families[f], IPPROTO_TCP);
		uint64_t t = fx_reserve(IPPROTO_TCP, START + 10 * f, 2, PORTRES_KIND_PERSISTENT,
					PORTRES_MODE_ENFORCE);
		uint16_t dport, lingering;
		int srv = h_listener(families[f], &dport), fd, held;

		fd = fx_socket(families[f], IPPROTO_TCP);
		cr_assert_eq(h_associate(fd, t), 0);
		cr_assert_eq(h_connect_lo(fd, families[f], dport), 0, "%s: first connect", n);
		lingering = fx_local_port(fd);
		close(fd); /* graceful: the port stays in FIN_WAIT2 (the listener never closes) */
		cr_expect_eq(h_users(IPPROTO_TCP, lingering), 0, "%s: users after close", n);

		/* Each connect must get the other port; a random pick would hit the lingering one. */
		for (i = 0; i < 20; i++) {
			fd = fx_socket(families[f], IPPROTO_TCP);
			cr_assert_eq(h_associate(fd, t), 0);
			err = h_connect_lo(fd, families[f], dport);
			if (err) {
				char a[96], b[96];

				cr_assert_fail("%s: connect #%d with one lingering port: %s (%s; %s)", n,
					       i + 1, strerror(-err),
					       h_port_state(IPPROTO_TCP, START + 10 * f, a, sizeof(a)),
					       h_port_state(IPPROTO_TCP, START + 10 * f + 1, b, sizeof(b)));
			}
			cr_expect_neq(fx_local_port(fd), lingering, "%s: connect #%d got the lingering port",
				      n, i + 1);
			cr_expect_eq(h_users(IPPROTO_TCP, lingering), 0,
				     "%s: the lingering port stayed claimed", n);
			if (i < 19)
				close_now(fd);
		}
		/* Now the only port left is lingering: no usable port. */
		held = fd;
		fd = fx_socket(families[f], IPPROTO_TCP);
		cr_assert_eq(h_associate(fd, t), 0);
		cr_expect_eq(h_connect_lo(fd, families[f], dport), -EADDRNOTAVAIL,
			     "%s: connect with only a lingering port left", n);
		cr_expect_eq(h_users(IPPROTO_TCP, lingering), 0, "%s: users of the lingering port", n);
		close(fd);
		close_now(held);
		close(srv);
	}
}

/* Accepted sockets belong to the listener's port: closing them keeps its claim. */
Test(connect, accepted_socket_close_keeps_claim)
{
	int families[2] = { AF_INET, AF_INET6 }, f;

	for (f = 0; f < 2; f++) {
		const char *n = fp_name(families[f], IPPROTO_TCP);
		uint64_t t = fx_reserve(IPPROTO_TCP, START + 10 * f, COUNT, PORTRES_KIND_PERSISTENT,
					PORTRES_MODE_ENFORCE);
		int lis = fx_socket(families[f], IPPROTO_TCP), cli, acc, again;
		uint16_t port;

		cr_assert_eq(h_associate(lis, t), 0);
		cr_assert_eq(fx_bind(lis, families[f], 0), 0);
		cr_assert_eq(listen(lis, 4), 0);
		port = fx_local_port(lis);
		cli = fx_socket(families[f], IPPROTO_TCP);
		cr_assert_eq(h_connect_lo(cli, families[f], port), 0, "%s: connect: %s", n,
			     strerror(errno));
		acc = accept(lis, NULL, NULL);
		cr_assert(acc >= 0, "%s: accept: %s", n, strerror(errno));
		close(acc);
		close(cli);
		cr_expect_eq(h_users(IPPROTO_TCP, port), 1, "%s: listener's claim after the accepted close",
			     n);
		/* The listener's port is not handed out while it listens. */
		again = fx_socket(families[f], IPPROTO_TCP);
		cr_assert_eq(h_associate(again, t), 0);
		cr_assert_eq(fx_bind(again, families[f], 0), 0);
		cr_expect_neq(fx_local_port(again), port, "%s: bind(0) got the listener's port", n);
		close(again);
		close(lis);
		cr_expect_eq(h_users(IPPROTO_TCP, port), 0, "%s: users after the listener closed", n);
	}
}
