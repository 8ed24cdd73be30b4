// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_dualstack.c - IPv4 and IPv6 share a reservation's port space: a
 * dual-stack AF_INET6 socket is held to the reservation like any other, and a
 * port held through one family is not handed out through the other.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

#define START 23000
#define COUNT 3

TestSuite(dualstack, .init = fx_setup, .fini = fx_teardown);

static const int protos[2] = { IPPROTO_TCP, IPPROTO_UDP };

static int v6_socket(int proto, int v6only)
{
	int fd = fx_socket(AF_INET6, proto);

	cr_assert_eq(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only)), 0);
	return fd;
}

Test(dualstack, v6_wildcard_denied_unassociated)
{
	int i, fd;

	for (i = 0; i < 2; i++) {
		const char *n = proto_name(protos[i]);

		fx_reserve(protos[i], START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
		fd = v6_socket(protos[i], 0);
		cr_expect_eq(h_bind_addr(fd, AF_INET6, "::", START + 1), -EACCES,
			     "%s: dual-stack bind [::]:%u", n, START + 1);
		close(fd);
		fd = v6_socket(protos[i], 0);
		cr_expect_eq(h_bind_addr(fd, AF_INET6, "::ffff:127.0.0.1", START + 1), -EACCES,
			     "%s: bind [::ffff:127.0.0.1]:%u", n, START + 1);
		close(fd);
		fd = v6_socket(protos[i], 1);
		cr_expect_eq(h_bind_addr(fd, AF_INET6, "::", START + 1), -EACCES,
			     "%s: v6-only bind [::]:%u", n, START + 1);
		close(fd);
	}
}

/*
 * An associated dual-stack v6 socket holds P: an associated v4 bind of P gets
 * the kernel's EADDRINUSE, and v4 bind(0) hands out every other port but P.
 */
Test(dualstack, shared_port_space)
{
	int i, j;

	for (i = 0; i < 2; i++) {
		const char *n = proto_name(protos[i]);
		uint64_t t = fx_reserve(protos[i], START, COUNT, PORTRES_KIND_PERSISTENT,
					PORTRES_MODE_ENFORCE);
		int v6 = v6_socket(protos[i], 0), v4, fds[COUNT - 1], extra;
		uint16_t held = START + 1;

		cr_assert_eq(h_associate(v6, t), 0);
		cr_assert_eq(h_bind_addr(v6, AF_INET6, "::", held), 0, "%s: v6 bind of %u", n, held);

		v4 = fx_socket(AF_INET, protos[i]);
		cr_assert_eq(h_associate(v4, t), 0);
		cr_expect_eq(fx_bind(v4, AF_INET, held), -EADDRINUSE,
			     "%s: v4 bind of %u held by a dual-stack v6 socket", n, held);
		close(v4);

		for (j = 0; j < COUNT - 1; j++) {
			fds[j] = fx_socket(AF_INET, protos[i]);
			cr_assert_eq(h_associate(fds[j], t), 0);
			cr_assert_eq(fx_bind(fds[j], AF_INET, 0), 0, "%s: v4 bind(0) #%d", n, j + 1);
			cr_expect_neq(fx_local_port(fds[j]), held,
				      "%s: v4 bind(0) handed out %u, held through v6", n, held);
		}
		extra = fx_socket(AF_INET, protos[i]);
		cr_assert_eq(h_associate(extra, t), 0);
		cr_expect_eq(fx_bind(extra, AF_INET, 0), -EADDRINUSE,
			     "%s: v4 bind(0) with the rest of the block held", n);
		close(extra);

		/* Released through v6: the v4 side gets it. */
		close(v6);
		extra = fx_socket(AF_INET, protos[i]);
		cr_assert_eq(h_associate(extra, t), 0);
		cr_expect_eq(fx_bind(extra, AF_INET, 0), 0, "%s: v4 bind(0) after the v6 close", n);
		cr_expect_eq(fx_local_port(extra), held, "%s: v4 bind(0) after the v6 close got %u", n,
			     fx_local_port(extra));
		close(extra);
		for (j = 0; j < COUNT - 1; j++)
			close(fds[j]);
		for (j = 0; j < COUNT; j++)
			cr_expect_eq(h_users(protos[i], START + j), 0, "%s: users of %u", n, START + j);
		cr_assert_eq(portres_resv_del(fx.l, t), 0);
	}
}

/* And the other way round: a v4 holder keeps the port from v6 bind(0). */
Test(dualstack, v4_holder_v6_bind0)
{
	int i, j;

	for (i = 0; i < 2; i++) {
		const char *n = proto_name(protos[i]);
		uint64_t t = fx_reserve(protos[i], START, COUNT, PORTRES_KIND_PERSISTENT,
					PORTRES_MODE_ENFORCE);
		int v4 = fx_socket(AF_INET, protos[i]), fds[COUNT - 1];
		uint16_t held;

		cr_assert_eq(h_associate(v4, t), 0);
		cr_assert_eq(fx_bind(v4, AF_INET, 0), 0);
		held = fx_local_port(v4);
		for (j = 0; j < COUNT - 1; j++) {
			fds[j] = v6_socket(protos[i], 0);
			cr_assert_eq(h_associate(fds[j], t), 0);
			cr_assert_eq(fx_bind(fds[j], AF_INET6, 0), 0, "%s: v6 bind(0) #%d", n, j + 1);
			cr_expect_neq(fx_local_port(fds[j]), held, "%s: v6 bind(0) got %u held by v4", n,
				      held);
		}
		for (j = 0; j < COUNT - 1; j++)
			close(fds[j]);
		close(v4);
		cr_assert_eq(portres_resv_del(fx.l, t), 0);
	}
}
