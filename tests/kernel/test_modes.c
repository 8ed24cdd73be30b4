// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_modes.c - what a foreign bind does in each mode (enforce: EACCES,
 * audit: allowed and reported, advisory: allowed silently), and the counters
 * and events of denials, audits, allocations and exhaustion.
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
#include <bpf/bpf.h>

#include "helpers.h"

#define START 24000
#define COUNT 2

TestSuite(modes, .init = fx_setup, .fini = fx_teardown);

static const int protos[2] = { IPPROTO_TCP, IPPROTO_UDP };

static void my_comm(char comm[16])
{
	FILE *f = fopen("/proc/self/comm", "r");

	cr_assert_not_null(f);
	memset(comm, 0, 16);
	cr_assert_not_null(fgets(comm, 16, f));
	comm[strcspn(comm, "\n")] = '\0';
	fclose(f);
}

/* addr: the bind's local address (a literal of family), NULL for the wildcard. */
static void expect_event(const struct portres_event *ev, const char *n, uint8_t type, uint64_t token,
			 int proto, int family, uint16_t port, int err, uint8_t reason, const char *addr)
{
	uint32_t want[4] = { 0 };
	char comm[16];

	cr_assert_not_null(ev, "%s: no event of type %u", n, type);
	my_comm(comm);
	cr_expect_eq(ev->type, type, "%s: event type", n);
	cr_expect_eq(ev->token, token, "%s: event token %#llx, want %#llx", n,
		     (unsigned long long)ev->token, (unsigned long long)token);
	cr_expect_eq(ev->pid, (uint32_t)getpid(), "%s: event pid %u, want %d", n, ev->pid, getpid());
	cr_expect_eq(ev->uid, 0, "%s: event uid", n);
	cr_expect_eq(ev->proto, proto, "%s: event proto %u", n, ev->proto);
	cr_expect_eq(ev->family, family, "%s: event family %u", n, ev->family);
	cr_expect_eq(ev->port, port, "%s: event port %u, want %u", n, ev->port, port);
	cr_expect_eq(ev->err, err, "%s: event err %d, want %d", n, ev->err, err);
	cr_expect_eq(ev->netns, fx.netns, "%s: event netns", n);
	cr_expect(ev->ts_ns > 0, "%s: event timestamp", n);
	cr_expect_str_eq(ev->comm, comm, "%s: event comm '%.16s', want '%s'", n, ev->comm, comm);
	cr_expect_eq(ev->reason, reason, "%s: event reason %u, want %u", n, ev->reason, reason);
	if (addr)
		cr_assert_eq(inet_pton(family, addr, want), 1);
	cr_expect_arr_eq(ev->addr, want, sizeof(want), "%s: event address %08x %08x %08x %08x, want %s", n,
			 ev->addr[0], ev->addr[1], ev->addr[2], ev->addr[3], addr ? addr : "wildcard");
}

Test(modes, enforce_denies_counts_and_reports)
{
	struct h_events log;
	int i, f;

	h_events_open(&log);
	for (i = 0; i < 2; i++) {
		for (f = 0; f < 2; f++) {
			int family = f ? AF_INET6 : AF_INET;
			const char *n = fp_name(family, protos[i]);
			uint64_t t = fx_reserve(protos[i], START, COUNT, PORTRES_KIND_PERSISTENT,
						PORTRES_MODE_ENFORCE);
			int fd = fx_socket(family, protos[i]);
			const char *lo = family == AF_INET ? "127.0.0.1" : "::1";

			log.n = 0;
			cr_expect_eq(h_bind_addr(fd, family, lo, START + 1), -EACCES, "%s: enforce bind", n);
			close(fd);
			cr_expect_eq(h_stats(t).denied, 1, "%s: counter denied", n);
			cr_expect_eq(h_stats(t).audited, 0, "%s: counter audited", n);
			expect_event(h_events_wait(&log, PORTRES_EV_DENY, 1000), n, PORTRES_EV_DENY, t,
				     protos[i], family, START + 1, EACCES, PORTRES_REASON_FOREIGN_BLOCK, lo);
			cr_assert_eq(portres_resv_del(fx.l, t), 0);
		}
	}
}

Test(modes, audit_allows_counts_and_reports)
{
	struct h_events log;
	int i;

	h_events_open(&log);
	for (i = 0; i < 2; i++) {
		const char *n = proto_name(protos[i]);
		uint64_t t = fx_reserve(protos[i], START, COUNT, PORTRES_KIND_PERSISTENT,
					PORTRES_MODE_AUDIT);
		int fd = fx_socket(AF_INET, protos[i]);

		log.n = 0;
		cr_expect_eq(fx_bind(fd, AF_INET, START), 0, "%s: audit bind", n);
		close(fd);
		cr_expect_eq(h_stats(t).audited, 1, "%s: counter audited", n);
		cr_expect_eq(h_stats(t).denied, 0, "%s: counter denied", n);
		expect_event(h_events_wait(&log, PORTRES_EV_AUDIT, 1000), n, PORTRES_EV_AUDIT, t,
			     protos[i], AF_INET, START, 0, PORTRES_REASON_FOREIGN_BLOCK, NULL);
		cr_expect_eq(h_events_count(&log, PORTRES_EV_DENY), 0, "%s: DENY event in audit mode", n);
		cr_assert_eq(portres_resv_del(fx.l, t), 0);
	}
}

Test(modes, advisory_allows_silently)
{
	struct portres_gstats before, after;
	struct h_events log;
	int i;

	h_events_open(&log);
	cr_assert_eq(portres_global_stats(fx.l, &before), 0);
	for (i = 0; i < 2; i++) {
		const char *n = proto_name(protos[i]);
		uint64_t t = fx_reserve(protos[i], START, COUNT, PORTRES_KIND_PERSISTENT,
					PORTRES_MODE_ADVISORY);
		int fd = fx_socket(AF_INET6, protos[i]);
		struct portres_stats s;

		cr_expect_eq(fx_bind(fd, AF_INET6, START), 0, "%s: advisory bind", n);
		close(fd);
		s = h_stats(t);
		cr_expect(s.denied == 0 && s.audited == 0, "%s: advisory counted denied %llu audited %llu",
			  n, (unsigned long long)s.denied, (unsigned long long)s.audited);
	}
	cr_expect_null(h_events_wait(&log, 0xff, 300), "advisory sent an event");
	cr_expect_eq(log.n, 0, "advisory sent %d events", log.n);
	cr_assert_eq(portres_global_stats(fx.l, &after), 0);
	cr_expect_eq(after.events_sent, before.events_sent, "events_sent moved in advisory mode");
	cr_expect(after.decisions >= before.decisions + 2, "decisions %llu -> %llu",
		  (unsigned long long)before.decisions, (unsigned long long)after.decisions);
}

/* The mode is read at each bind: switching it takes effect at once. */
Test(modes, set_mode_takes_effect)
{
	uint64_t t = fx_reserve(IPPROTO_TCP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	struct portres_resv r;
	int fd;

	fd = fx_socket(AF_INET, IPPROTO_TCP);
	cr_expect_eq(fx_bind(fd, AF_INET, START), -EACCES, "enforce");
	close(fd);
	cr_assert_eq(portres_resv_set_mode(fx.l, t, PORTRES_MODE_AUDIT), 0);
	cr_assert_eq(portres_resv_get(fx.l, t, &r), 0);
	cr_expect_eq(r.mode, PORTRES_MODE_AUDIT);
	fd = fx_socket(AF_INET, IPPROTO_TCP);
	cr_expect_eq(fx_bind(fd, AF_INET, START), 0, "audit");
	close(fd);
	cr_assert_eq(portres_resv_set_mode(fx.l, t, PORTRES_MODE_ENFORCE), 0);
	fd = fx_socket(AF_INET, IPPROTO_TCP);
	cr_expect_eq(fx_bind(fd, AF_INET, START), -EACCES, "enforce again");
	close(fd);
	cr_expect_eq(portres_resv_set_mode(fx.l, t, 7), -EINVAL, "mode 7");
	cr_expect_eq(h_stats(t).denied, 2);
	cr_expect_eq(h_stats(t).audited, 1);
}

Test(modes, exhaustion_counts_and_reports)
{
	struct h_events log;
	int i, j;

	h_events_open(&log);
	for (i = 0; i < 2; i++) {
		const char *n = proto_name(protos[i]);
		uint64_t t = fx_reserve(protos[i], START, COUNT, PORTRES_KIND_PERSISTENT,
					PORTRES_MODE_ENFORCE);
		int fds[COUNT + 1];

		log.n = 0;
		for (j = 0; j <= COUNT; j++) {
			fds[j] = fx_socket(AF_INET, protos[i]);
			cr_assert_eq(h_associate(fds[j], t), 0);
			cr_assert_eq(fx_bind(fds[j], AF_INET, 0), j < COUNT ? 0 : -EADDRINUSE,
				     "%s: bind(0) #%d of a block of %d", n, j + 1, COUNT);
		}
		cr_expect_eq(h_stats(t).allocated, COUNT, "%s: counter allocated", n);
		cr_expect_eq(h_stats(t).exhausted, 1, "%s: counter exhausted", n);
		expect_event(h_events_wait(&log, PORTRES_EV_EXHAUSTED, 1000), n, PORTRES_EV_EXHAUSTED, t,
			     protos[i], AF_INET, 0, EADDRINUSE, PORTRES_REASON_NONE, NULL);
		for (j = 0; j <= COUNT; j++)
			close(fds[j]);
		cr_assert_eq(portres_resv_del(fx.l, t), 0);
	}
}

Test(modes, allocated_and_allowed_counters)
{
	uint64_t t = fx_reserve(IPPROTO_UDP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	int a = fx_socket(AF_INET, IPPROTO_UDP), b = fx_socket(AF_INET6, IPPROTO_UDP);
	struct portres_stats s;

	cr_assert_eq(h_associate(a, t), 0);
	cr_assert_eq(h_associate(b, t), 0);
	s = h_stats(t);
	cr_expect(s.allocated == 0 && s.allowed == 0, "counters start at 0");
	cr_assert_eq(fx_bind(a, AF_INET, 0), 0);
	cr_expect_eq(h_stats(t).allocated, 1, "allocated after bind(0)");
	cr_expect_eq(h_stats(t).allowed, 0, "allowed after bind(0)");
	cr_assert_eq(fx_bind(b, AF_INET6, fx_local_port(a) == START ? START + 1 : START), 0);
	cr_expect_eq(h_stats(t).allowed, 1, "allowed after an explicit bind in the block");
	cr_expect_eq(h_stats(t).allocated, 1, "allocated after an explicit bind");
	close(a);
	close(b);
}

/* An associated socket binding a port of another reservation: that one's mode decides. */
Test(modes, associated_foreign_block)
{
	uint8_t modes[3] = { PORTRES_MODE_ENFORCE, PORTRES_MODE_AUDIT, PORTRES_MODE_ADVISORY };
	int want[3] = { -EACCES, 0, 0 }, i, m;

	for (i = 0; i < 2; i++) {
		for (m = 0; m < 3; m++) {
			const char *n = proto_name(protos[i]);
			uint64_t mine = fx_reserve(protos[i], START, COUNT, PORTRES_KIND_PERSISTENT,
						   PORTRES_MODE_ENFORCE);
			uint64_t other = fx_reserve(protos[i], START + 100, COUNT,
						    PORTRES_KIND_PERSISTENT, modes[m]);
			int fd = fx_socket(AF_INET, protos[i]);

			cr_assert_eq(h_associate(fd, mine), 0);
			cr_expect_eq(fx_bind(fd, AF_INET, START + 101), want[m],
				     "%s: associated bind into a block of mode %u", n, modes[m]);
			cr_expect_eq(h_stats(other).denied, m == 0, "%s mode %u: denied of the other block",
				     n, modes[m]);
			cr_expect_eq(h_stats(other).audited, m == 1,
				     "%s mode %u: audited of the other block", n, modes[m]);
			cr_expect_eq(h_users(protos[i], START + 101), 0,
				     "%s mode %u: a foreign bind claimed the port", n, modes[m]);
			close(fd);
			cr_assert_eq(portres_resv_del(fx.l, mine), 0);
			cr_assert_eq(portres_resv_del(fx.l, other), 0);
		}
	}
}

/* The event rate limit: beyond events_per_sec per CPU, events are counted as dropped. */
Test(modes, events_rate_limited)
{
	uint64_t t = fx_reserve(IPPROTO_TCP, START, COUNT, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	struct portres_gstats g;
	struct h_events log;
	int i, fd;

	cpu_set_t one;

	/* Default 1000 per second per CPU: 2500 denials within well under a second on 1 CPU. */
	h_events_open(&log);
	CPU_ZERO(&one);
	CPU_SET(0, &one);
	cr_assert_eq(sched_setaffinity(0, sizeof(one), &one), 0);
	for (i = 0; i < 2500; i++) {
		fd = fx_socket(AF_INET, IPPROTO_TCP);
		cr_assert_eq(fx_bind(fd, AF_INET, START), -EACCES);
		close(fd);
	}
	cr_expect_eq(h_stats(t).denied, 2500);
	cr_assert_eq(portres_global_stats(fx.l, &g), 0);
	cr_expect(g.events_dropped > 0, "no event dropped after 2500 denials");
	cr_expect(g.events_sent <= 2000, "events_sent %llu", (unsigned long long)g.events_sent);
}

/*
 * What the data plane writes about a reservation (anchor closed, next
 * bind(0) offset) lives apart from the value user space writes: the raw
 * portres_resv value keeps 0 there, and a mode change, even one racing the
 * anchor's close, never wipes it.
 */
Test(modes, set_mode_keeps_data_plane_state, .timeout = 60)
{
	char path[400];
	struct portres_resv raw, r;
	int i, rfd, lost = 0;
	uint64_t t;

	snprintf(path, sizeof(path), "%s/maps/portres_resv", fx.bpffs);
	rfd = bpf_obj_get(path);
	cr_assert(rfd >= 0, "%s: %s", path, strerror(errno));
	for (i = 0; i < 300; i++) {
		int anchor = fx_socket(AF_INET, IPPROTO_UDP);
		int a = fx_socket(AF_INET, IPPROTO_UDP);

		t = fx_reserve(IPPROTO_UDP, START + 10, 4, PORTRES_KIND_RUNTIME, PORTRES_MODE_ENFORCE);
		cr_assert_eq(portres_anchor_add(fx.l, anchor, t), 0);
		cr_assert_eq(h_associate(a, t), 0);
		cr_assert_eq(fx_bind(a, AF_INET, 0), 0);
		/* The close and the mode change race: each is one system call. */
		if (fork() == 0) {
			close(anchor);
			_exit(0);
		}
		close(anchor);
		portres_resv_set_mode(fx.l, t, PORTRES_MODE_AUDIT);
		portres_resv_set_mode(fx.l, t, PORTRES_MODE_ENFORCE);
		while (wait(NULL) > 0)
			;
		portres_resv_set_mode(fx.l, t, PORTRES_MODE_AUDIT);
		cr_assert_eq(portres_resv_get(fx.l, t, &r), 0);
		lost += !(r.flags & PORTRES_RESV_DEAD);
		cr_expect_eq(r.next, 1, "next bind(0) offset %u after one bind(0)", r.next);
		cr_assert_eq(bpf_map_lookup_elem(rfd, &t, &raw), 0);
		cr_expect(raw.flags == 0 && raw.next == 0,
			  "the data plane wrote the reservation's value: flags %#x next %u", raw.flags, raw.next);
		close(a);
		cr_assert_eq(portres_resv_del(fx.l, t), 0);
	}
	cr_expect_eq(lost, 0, "a mode change wiped the end of %d of 300 reservations", lost);
	close(rfd);
}
