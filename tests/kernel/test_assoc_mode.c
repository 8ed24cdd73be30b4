// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_assoc_mode.c - association mode PORTRES_ASSOC_AGENT (portresd
 * --associate=agent): no setsockopt program is loaded or linked (a pinned one
 * of an earlier loader is unlinked), our level is ENOPROTOOPT, and user space
 * writes the association and the anchors into the socket's storage, keeping
 * what the data plane wrote there. Switching back links the program again.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <bpf/bpf.h>

#include "helpers.h"
#include "progs.h"

#define START 26000
#define COUNT 4

TestSuite(assoc_mode, .init = fx_setup, .fini = fx_teardown);

/* Programs linked directly at the test's cgroup on a hook. */
static unsigned progs_on(enum bpf_attach_type type)
{
	return test_progs_on(fx.cgroup, type);
}

/* The loader of the fixture closed (pins stay) and opened again in mode: it adopts the pins. */
static void reopen(enum portres_assoc_mode mode)
{
	struct portres_loader_opts opts = { .bpffs_dir = fx.bpffs, .cgroup_path = fx.cgroup,
					    .max_resv = 70000, .max_ports = 70000, .assoc = mode };
	int err;

	portres_loader_close(fx.l);
	fx.l = NULL;
	err = portres_loader_open(&opts, &fx.l);
	cr_assert_eq(err, 0, "portres_loader_open (mode %d): %s", mode, strerror(-err));
	cr_assert(portres_loader_adopted(fx.l));
	cr_assert_eq(portres_loader_assoc(fx.l), mode);
}

static bool dead(uint64_t token)
{
	struct portres_resv r;

	cr_assert_eq(portres_resv_get(fx.l, token, &r), 0);
	return r.flags & PORTRES_RESV_DEAD;
}

Test(assoc_mode, agent_mode_links_no_setsockopt_program)
{
	uint64_t t = fx_reserve(IPPROTO_TCP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE), got;
	char pin[400];
	int fd;

	cr_assert_eq(progs_on(BPF_CGROUP_SETSOCKOPT), 1, "the default mode links portres_setsopt");
	reopen(PORTRES_ASSOC_AGENT);
	cr_expect_eq(progs_on(BPF_CGROUP_SETSOCKOPT), 0, "agent mode: a setsockopt program is linked");
	cr_expect_eq(progs_on(BPF_CGROUP_GETSOCKOPT), 1, "agent mode keeps portres_getsopt");
	cr_expect_eq(progs_on(BPF_CGROUP_INET4_BIND), 1);
	cr_expect_eq(progs_on(BPF_CGROUP_INET_SOCK_RELEASE), 1);
	snprintf(pin, sizeof(pin), "%s/links/portres_setsopt", fx.bpffs);
	cr_expect_eq(access(pin, F_OK), -1, "the earlier loader's setsockopt link is still pinned");
	cr_expect(portres_prog_fd(fx.l, "portres_setsopt") < 0, "portres_setsopt was loaded");

	/* The kernel's own answer for a level it does not know: what libportres falls back on. */
	fd = fx_socket(AF_INET, IPPROTO_TCP);
	cr_expect_eq(h_setassoc(fd, t), -ENOPROTOOPT);
	cr_expect_eq(h_getassoc(fd, &got), -ENOENT, "getsockopt is still portres's");

	/* User space associates: getsockopt reads it, bind(0) takes a port of the block. */
	cr_assert_eq(portres_sk_associate(fx.l, fd, t), 0);
	cr_expect_eq(h_getassoc(fd, &got), 0);
	cr_expect_eq(got, t);
	cr_assert_eq(fx_bind(fd, AF_INET, 0), 0);
	cr_expect(fx_local_port(fd) >= START && fx_local_port(fd) < START + COUNT, "bind(0) got %u",
		  fx_local_port(fd));
	close(fd);
	fd = fx_socket(AF_INET6, IPPROTO_TCP);
	cr_expect_eq(fx_bind(fd, AF_INET6, START + 1), -EACCES, "enforcement goes on in agent mode");
	close(fd);

	/* Back to the default: the program is linked again. */
	reopen(PORTRES_ASSOC_SOCKOPT);
	cr_expect_eq(progs_on(BPF_CGROUP_SETSOCKOPT), 1);
	fd = fx_socket(AF_INET, IPPROTO_TCP);
	cr_expect_eq(h_setassoc(fd, t), 0, "setsockopt after switching back");
	close(fd);
}

Test(assoc_mode, anchors_written_from_user_space)
{
	uint64_t r[PORTRES_MAX_ANCHORS + 1], t;
	int fd, other, i;
	uint16_t port;

	reopen(PORTRES_ASSOC_AGENT);
	t = fx_reserve(IPPROTO_UDP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	for (i = 0; i <= PORTRES_MAX_ANCHORS; i++)
		r[i] = fx_reserve(IPPROTO_TCP, START + 10 + i * COUNT, COUNT, PORTRES_KIND_RUNTIME, PORTRES_MODE_ENFORCE);
	fd = fx_socket(AF_INET, IPPROTO_UDP);
	other = fx_socket(AF_INET, IPPROTO_TCP);
	for (i = 0; i < PORTRES_MAX_ANCHORS; i++)
		cr_assert_eq(portres_anchor_add(fx.l, fd, r[i]), 0, "anchor %d", i);
	cr_expect_eq(portres_anchor_add(fx.l, fd, r[0]), 0, "the same anchor again");
	cr_expect_eq(portres_anchor_add(fx.l, fd, r[PORTRES_MAX_ANCHORS]), -ENOSPC);
	cr_expect_eq(portres_anchor_del(fx.l, fd, r[PORTRES_MAX_ANCHORS]), -ENOENT);
	cr_expect_eq(portres_anchor_del(fx.l, other, r[0]), -ENOENT, "a socket without storage");
	cr_assert_eq(portres_anchor_del(fx.l, fd, r[1]), 0);

	/* An association written over them keeps them, and a bind's claim keeps the association. */
	cr_assert_eq(portres_sk_associate(fx.l, fd, t), 0);
	cr_assert_eq(fx_bind(fd, AF_INET, 0), 0);
	port = fx_local_port(fd);
	cr_expect(port >= START && port < START + COUNT, "bind(0) got %u", port);
	cr_expect_eq(h_users(IPPROTO_UDP, port), 1, "the bind(0) claimed its port");
	cr_expect(!dead(r[0]) && !dead(r[1]) && !dead(r[2]));
	close(fd);
	cr_expect(dead(r[0]), "closing the anchor ended its reservation");
	cr_expect(dead(r[2]) && dead(r[3]));
	cr_expect(!dead(r[1]), "a deleted anchor ended its reservation");
	cr_expect_eq(h_users(IPPROTO_UDP, port), 0, "the claim was dropped at close");
	close(other);
}
