// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_runtime.c - the lifetime of a RUNTIME reservation: it lives as long as
 * its anchor socket (portres_anchor_add). Closing the socket, or the death of
 * its process, marks it PORTRES_RESV_DEAD, sends PORTRES_EV_RELEASED and gives
 * its ports back to everyone.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "helpers.h"

#define START 27000
#define COUNT 4

TestSuite(runtime, .init = fx_setup, .fini = fx_teardown);

static uint8_t resv_flags(uint64_t token)
{
	struct portres_resv r;

	cr_assert_eq(portres_resv_get(fx.l, token, &r), 0, "portres_resv_get %#llx",
		     (unsigned long long)token);
	return r.flags;
}

static const struct portres_event *released_event(struct h_events *log, uint64_t token)
{
	int i, waited;

	for (waited = 0; waited < 1000; waited += 20) {
		for (i = 0; i < log->n; i++)
			if (log->ev[i].type == PORTRES_EV_RELEASED && log->ev[i].token == token)
				return &log->ev[i];
		portres_events_poll(fx.l, 20);
	}
	return NULL;
}

FP_TEST(runtime, anchor_close_ends_reservation)
{
	const char *n = fp_name(p->family, p->proto);
	uint64_t t = fx_reserve(p->proto, START, COUNT, PORTRES_KIND_RUNTIME, PORTRES_MODE_ENFORCE);
	const struct portres_event *ev;
	struct h_events log;
	int anchor, fd, held;

	h_events_open(&log);
	/* The owner uses it; others are kept out. */
	held = fx_socket(p->family, p->proto);
	cr_assert_eq(h_associate(held, t), 0, "%s: owner associates: %s", n, strerror(errno));
	cr_assert_eq(fx_bind(held, p->family, START), 0, "%s: owner binds %u", n, START);
	fd = fx_socket(p->family, p->proto);
	cr_expect_eq(fx_bind(fd, p->family, START + 1), -EACCES, "%s: foreign bind while alive", n);
	close(fd);

	anchor = fx_socket(p->family, p->proto);
	cr_assert_eq(portres_anchor_add(fx.l, anchor, t), 0);
	cr_expect_eq(resv_flags(t) & PORTRES_RESV_DEAD, 0, "%s: dead before its anchor closed", n);
	cr_expect_null(h_events_wait(&log, PORTRES_EV_RELEASED, 0), "%s: RELEASED before close", n);
	close(anchor);

	cr_expect_neq(resv_flags(t) & PORTRES_RESV_DEAD, 0, "%s: not dead after its anchor closed", n);
	ev = released_event(&log, t);
	cr_assert_not_null(ev, "%s: no RELEASED event", n);
	cr_expect_eq(ev->proto, p->proto, "%s: RELEASED proto", n);
	cr_expect_eq(ev->port, START, "%s: RELEASED port %u", n, ev->port);
	cr_expect_eq(ev->netns, fx.netns, "%s: RELEASED netns", n);
	cr_expect_eq(ev->pid, (uint32_t)getpid(), "%s: RELEASED pid", n);

	/* Its ports are ordinary ports again, and the token associates no more. */
	fd = fx_socket(p->family, p->proto);
	cr_expect_eq(fx_bind(fd, p->family, START + 1), 0, "%s: foreign bind after release", n);
	close(fd);
	fd = fx_socket(p->family, p->proto);
	cr_expect_eq(h_associate(fd, t), -EINVAL, "%s: associating a dead token", n);
	close(fd);
	cr_expect_eq(h_stats(t).denied, 1, "%s: denied", n);
	close(held);
}

/* The usual shape: the reservation is acquired on the very socket that uses it. */
FP_TEST(runtime, anchor_is_the_bound_socket)
{
	const char *n = fp_name(p->family, p->proto);
	uint64_t t = fx_reserve(p->proto, START, COUNT, PORTRES_KIND_RUNTIME, PORTRES_MODE_ENFORCE);
	int s = fx_socket(p->family, p->proto), fd;
	uint16_t port;

	cr_assert_eq(portres_anchor_add(fx.l, s, t), 0);
	cr_assert_eq(h_associate(s, t), 0);
	cr_assert_eq(fx_bind(s, p->family, 0), 0);
	port = fx_local_port(s);
	cr_expect(port >= START && port < START + COUNT, "%s: bind(0) got %u", n, port);
	close(s);
	cr_expect_neq(resv_flags(t) & PORTRES_RESV_DEAD, 0, "%s: not dead", n);
	cr_expect_eq(h_users(p->proto, port), 0, "%s: users of %u", n, port);
	fd = fx_socket(p->family, p->proto);
	cr_expect_eq(fx_bind(fd, p->family, port), 0, "%s: bind of the freed port by another", n);
	close(fd);
}

Test(runtime, anchor_capacity_and_kinds)
{
	uint64_t t[PORTRES_MAX_ANCHORS + 1], pers;
	struct h_events log;
	int s = fx_socket(AF_INET, IPPROTO_UDP), i;

	h_events_open(&log);
	for (i = 0; i <= PORTRES_MAX_ANCHORS; i++)
		t[i] = fx_reserve(IPPROTO_UDP, START + 10 * i, 2, PORTRES_KIND_RUNTIME,
				  PORTRES_MODE_ENFORCE);
	for (i = 0; i < PORTRES_MAX_ANCHORS; i++)
		cr_assert_eq(portres_anchor_add(fx.l, s, t[i]), 0, "anchor #%d", i + 1);
	cr_expect_eq(portres_anchor_add(fx.l, s, t[0]), 0, "anchoring twice is a no-op");
	cr_expect_eq(portres_anchor_add(fx.l, s, t[PORTRES_MAX_ANCHORS]), -ENOSPC,
		     "anchor #%d on one socket", PORTRES_MAX_ANCHORS + 1);
	cr_expect_eq(portres_anchor_del(fx.l, s, t[PORTRES_MAX_ANCHORS]), -ENOENT, "del of no anchor");
	close(s);
	for (i = 0; i < PORTRES_MAX_ANCHORS; i++) {
		cr_expect_neq(resv_flags(t[i]) & PORTRES_RESV_DEAD, 0, "token #%d not dead", i + 1);
		cr_expect_not_null(released_event(&log, t[i]), "no RELEASED for token #%d", i + 1);
	}
	cr_expect_eq(resv_flags(t[PORTRES_MAX_ANCHORS]) & PORTRES_RESV_DEAD, 0,
		     "the token that was not anchored died");

	/* A persistent reservation is never ended by a socket. */
	pers = fx_reserve(IPPROTO_UDP, START + 200, 2, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	s = fx_socket(AF_INET, IPPROTO_UDP);
	cr_assert_eq(portres_anchor_add(fx.l, s, pers), 0);
	close(s);
	cr_expect_eq(resv_flags(pers) & PORTRES_RESV_DEAD, 0, "persistent reservation ended by close");
}

Test(runtime, anchor_del_keeps_reservation)
{
	uint64_t t = fx_reserve(IPPROTO_TCP, START, COUNT, PORTRES_KIND_RUNTIME, PORTRES_MODE_ENFORCE);
	int s = fx_socket(AF_INET6, IPPROTO_TCP), fd;

	cr_assert_eq(portres_anchor_add(fx.l, s, t), 0);
	cr_assert_eq(portres_anchor_del(fx.l, s, t), 0);
	close(s);
	cr_expect_eq(resv_flags(t) & PORTRES_RESV_DEAD, 0, "ended by a socket that no longer anchors it");
	fd = fx_socket(AF_INET, IPPROTO_TCP);
	cr_expect_eq(fx_bind(fd, AF_INET, START), -EACCES, "still enforced");
	close(fd);
}

/* Only sockets that pass through cgroup/sock_release can anchor: others would never end it. */
Test(runtime, anchor_must_be_tcp_or_udp)
{
	uint64_t t = fx_reserve(IPPROTO_TCP, START, COUNT, PORTRES_KIND_RUNTIME, PORTRES_MODE_ENFORCE);
	int u = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int raw = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP);
	int pipefd[2];

	cr_assert(u >= 0 && raw >= 0);
	cr_expect_eq(portres_anchor_add(fx.l, u, t), -EOPNOTSUPP, "unix socket as anchor");
	cr_expect_eq(portres_anchor_add(fx.l, raw, t), -EOPNOTSUPP, "raw socket as anchor");
	cr_assert_eq(pipe(pipefd), 0);
	cr_expect_eq(portres_anchor_add(fx.l, pipefd[0], t), -ENOTSOCK, "pipe as anchor");
	close(pipefd[0]);
	close(pipefd[1]);
	close(u);
	close(raw);
	cr_expect_eq(resv_flags(t) & PORTRES_RESV_DEAD, 0);
}

/*
 * The process dies without closing: the kernel closes its sockets, and that
 * ends it. As with the agent, the socket reaches the loader's process over
 * SCM_RIGHTS, is anchored there, and only the child holds it afterwards.
 */
static void send_fd(int via, int fd)
{
	char c = 0, ctl[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { &c, 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);

	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	if (sendmsg(via, &m, 0) != 1)
		_exit(3);
}

static int recv_fd(int via)
{
	char c, ctl[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { &c, 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl) };
	int fd = -1;

	if (recvmsg(via, &m, 0) == 1 && CMSG_FIRSTHDR(&m))
		memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof(int));
	return fd;
}

Test(runtime, process_exit_ends_reservation)
{
	uint64_t t = fx_reserve(IPPROTO_TCP, START, COUNT, PORTRES_KIND_RUNTIME, PORTRES_MODE_ENFORCE);
	struct h_events log;
	int sv[2], fd, st;
	pid_t pid;
	char c;

	h_events_open(&log);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		int s = socket(AF_INET, SOCK_STREAM, 0);

		send_fd(sv[1], s);
		_exit(read(sv[1], &c, 1) == 1 ? 0 : 2); /* with the socket open */
	}
	fd = recv_fd(sv[0]);
	cr_assert(fd >= 0, "no socket from the child");
	cr_expect_eq(portres_anchor_add(fx.l, fd, t), 0);
	close(fd);
	cr_expect_eq(resv_flags(t) & PORTRES_RESV_DEAD, 0, "dead while its process lives");
	cr_assert_eq(write(sv[0], "x", 1), 1);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	close(sv[0]);
	close(sv[1]);
	cr_expect_neq(resv_flags(t) & PORTRES_RESV_DEAD, 0, "not dead after its process exited");
	cr_expect_not_null(released_event(&log, t), "no RELEASED event");
	fd = fx_socket(AF_INET, IPPROTO_TCP);
	cr_expect_eq(fx_bind(fd, AF_INET, START + 2), 0, "bind after the owner died");
	close(fd);
}

/* Only the loader's process sets anchors: another one (even root) cannot end a reservation. */
static uint64_t foreign_token;

static int anchor_from_elsewhere(void *arg)
{
	struct portres_anchor_op a = { .token = foreign_token };
	int s = h_socket(AF_INET, IPPROTO_TCP);

	if (setsockopt(s, SOL_PORTRES, PORTRES_ANCHOR_ADD, &a, sizeof(a)) == 0 || errno != EACCES)
		return h_fail("PORTRES_ANCHOR_ADD from another process: %s", strerror(errno));
	close(s);
	return 0;
}

Test(runtime, anchor_only_by_the_loader)
{
	foreign_token = fx_reserve(IPPROTO_TCP, START, COUNT, PORTRES_KIND_RUNTIME, PORTRES_MODE_ENFORCE);
	h_expect_child(anchor_from_elsewhere, NULL, "anchor from another process");
	cr_expect_eq(resv_flags(foreign_token) & PORTRES_RESV_DEAD, 0, "ended by another process's socket");
}

/* A socket associated before the end binds like an unassociated one afterwards. */
Test(runtime, associated_socket_outlives_reservation)
{
	uint64_t t = fx_reserve(IPPROTO_UDP, START, COUNT, PORTRES_KIND_RUNTIME, PORTRES_MODE_ENFORCE);
	int anchor = fx_socket(AF_INET, IPPROTO_UDP), s = fx_socket(AF_INET, IPPROTO_UDP);

	cr_assert_eq(portres_anchor_add(fx.l, anchor, t), 0);
	cr_assert_eq(h_associate(s, t), 0);
	close(anchor);
	cr_expect_eq(fx_bind(s, AF_INET, 0), 0, "bind(0) after the reservation ended");
	cr_expect(fx_local_port(s) < START || fx_local_port(s) >= START + COUNT,
		  "bind(0) served from a dead reservation: %u", fx_local_port(s));
	close(s);
}

/* --- releases are never lost (their own ring, a count, a sweep) -------------- */

#define FLOOD_ANCHORS 16

struct release_log {
	uint64_t tokens[FLOOD_ANCHORS];
	int got;
};

static int on_release(const struct portres_event *ev, void *arg)
{
	struct release_log *rl = arg;
	int i;

	if (ev->type != PORTRES_EV_RELEASED)
		return 0;
	for (i = 0; i < FLOOD_ANCHORS; i++)
		if (rl->tokens[i] == ev->token) {
			rl->tokens[i] = 0;
			rl->got++;
		}
	return 0;
}

static int count_dead(uint64_t token, void *arg)
{
	(*(int *)arg)++;
	return 0;
}

/*
 * Denials fill the event ring buffer (nobody reads it meanwhile) while
 * anchors close: every RELEASED event still arrives, the data plane's count
 * says how many there were, and the sweep finds every dead reservation.
 */
Test(runtime, releases_survive_denial_flood, .timeout = 60)
{
	struct portres_loader_opts opts = { .bpffs_dir = fx.bpffs, .cgroup_path = fx.cgroup,
					    .max_resv = 70000, .max_ports = 70000,
					    .events_per_sec = 10000000 };
	struct release_log rl = { .got = 0 };
	int anchors[FLOOD_ANCHORS], i, err, dead = 0;
	struct portres_gstats g;
	uint64_t denied_tok, n;

	/* No rate limit: the flood fills the ring buffer. */
	portres_loader_teardown(fx.l);
	fx.l = NULL;
	err = portres_loader_open(&opts, &fx.l);
	cr_assert_eq(err, 0, "re-open without rate limit: %s", strerror(-err));
	denied_tok = fx_reserve(IPPROTO_UDP, START + 100, 1, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	for (i = 0; i < FLOOD_ANCHORS; i++) {
		rl.tokens[i] = fx_reserve(IPPROTO_TCP, START + 200 + i, 1, PORTRES_KIND_RUNTIME,
					  PORTRES_MODE_ENFORCE);
		anchors[i] = fx_socket(AF_INET, IPPROTO_TCP);
		cr_assert_eq(portres_anchor_add(fx.l, anchors[i], rl.tokens[i]), 0);
	}
	cr_assert_eq(portres_events_open(fx.l, on_release, &rl), 0);
	for (i = 0; i < 6000; i++) {
		int fd = fx_socket(AF_INET, IPPROTO_UDP);

		cr_assert_eq(fx_bind(fd, AF_INET, START + 100), -EACCES);
		close(fd);
		if (i == 3000)
			for (int k = 0; k < FLOOD_ANCHORS; k++)
				close(anchors[k]);
	}
	cr_assert_eq(portres_global_stats(fx.l, &g), 0);
	cr_expect_gt(g.events_dropped, 0, "the flood did not fill the ring buffer");
	for (i = 0; i < 50 && rl.got < FLOOD_ANCHORS; i++)
		portres_events_poll(fx.l, 20);
	cr_expect_eq(rl.got, FLOOD_ANCHORS, "RELEASED events: %d of %d", rl.got, FLOOD_ANCHORS);
	cr_assert_eq(portres_released_count(fx.l, &n), 0);
	cr_expect_eq(n, FLOOD_ANCHORS, "data plane counted %llu releases", (unsigned long long)n);
	cr_assert_eq(portres_dead_foreach(fx.l, count_dead, &dead), 0);
	cr_expect_eq(dead, FLOOD_ANCHORS, "sweep found %d dead reservations", dead);
	cr_expect_eq(h_stats(denied_tok).denied, 6000);
}
