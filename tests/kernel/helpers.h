/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * helpers.h - what the kernel tests share beyond the fixture: the four
 * family x protocol combinations, raw association sockopts, loopback peers,
 * child processes that report back through a pipe, and event collection.
 *
 * Every helper that may run in a forked child avoids Criterion's asserts (a
 * failing cr_assert in a child would unwind into Criterion's runner); those
 * return -errno instead. Helpers named h_expect_* are for the test process.
 */
#ifndef PORTRES_TEST_HELPERS_H
#define PORTRES_TEST_HELPERS_H

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include "fixture.h"

struct fp {
	int family; /* AF_INET or AF_INET6 */
	int proto;  /* IPPROTO_TCP or IPPROTO_UDP */
};

/* tcp4, udp4, tcp6, udp6 */
extern const struct fp fp_all[4];
/*
 * FP_TEST(suite, name) { ... } is a test run once per family x protocol, with
 * `struct fp *p` in scope (Criterion forks each instance separately).
 */
#define FP_TEST(suite, name)                                                           \
	ParameterizedTestParameters(suite, name)                                       \
	{                                                                              \
		static struct fp params[4];                                            \
                                                                                       \
		memcpy(params, fp_all, sizeof(params));                                \
		return cr_make_param_array(struct fp, params, 4);                     \
	}                                                                              \
	ParameterizedTest(struct fp *p, suite, name)

/* "tcp4", "udp6", ... for failure messages */
const char *fp_name(int family, int proto);
const char *proto_name(int proto);
int other_proto(int proto);

/* setsockopt(SOL_PORTRES, PORTRES_ASSOCIATE) with the token; 0 or -errno. */
int h_setassoc(int fd, uint64_t token);
/* getsockopt(SOL_PORTRES, PORTRES_ASSOCIATION); 0 or -errno. */
int h_getassoc(int fd, uint64_t *token);
/* portres_associate; 0 or -errno. */
int h_associate(int fd, uint64_t token);
/* A socket of family/proto (no Criterion assert): fd or -errno. */
int h_socket(int family, int proto);
/* bind to addr (a literal of family; NULL: wildcard); 0 or -errno. */
int h_bind_addr(int fd, int family, const char *addr, uint16_t port);
/* connect to the loopback address of family (127.0.0.1 or ::1); 0 or -errno. */
int h_connect_lo(int fd, int family, uint16_t port);
/* A TCP listener on the loopback of family, on an ephemeral port (outside every block). */
int h_listener(int family, uint16_t *port);
/* getsockname's port without Criterion asserts (children, threads): 0 on failure. */
uint16_t h_local_port(int fd);
/* users of a port entry (0 when the port is not reserved). */
uint32_t h_users(uint8_t proto, uint16_t port);
/* The data plane's clock, portres_port.free_at's (bpf_ktime_get_ns() >> 10, CLOCK_MONOTONIC). */
uint32_t h_now_us(void);
/* "users U, free in X us" of a port of ours, for a failure message (buf returned). */
const char *h_port_state(uint8_t proto, uint16_t port, char *buf, size_t len);

/*
 * Child processes. h_child forks; the child runs fn(arg) and exits with its
 * return value. A child reports a failure with h_fail(), whose message the
 * parent gets in msg. Returns the exit status (0 = success), or 256 + signal.
 */
int h_child(int (*fn)(void *arg), void *arg, char *msg, size_t msglen);
/* In a child: record a failure message and return 1 (use as `return h_fail(...)`). */
int h_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* In a child: move the calling process into cgroup path; 0 or -errno. */
int h_enter_cgroup(const char *path);
/* Runs fn in a child and asserts it succeeded, naming what in the failure message. */
#define h_expect_child(fn, arg, what)                                                  \
	do {                                                                           \
		char msg_[512] = "";                                                   \
		int st_ = h_child(fn, arg, msg_, sizeof(msg_));                        \
		cr_expect_eq(st_, 0, "%s: child exit %d: %s", what, st_, msg_);         \
	} while (0)

/* Events received by the loader's ring buffer during the test. */
struct h_events {
	int n;
	struct portres_event ev[256];
};
/* portres_events_open with a callback that appends to log. */
void h_events_open(struct h_events *log);
/* Polls until an event of type is in log (returns the first one) or timeout_ms elapses (NULL). */
const struct portres_event *h_events_wait(struct h_events *log, uint8_t type, int timeout_ms);
/* Number of events of type (0: any) collected so far. */
int h_events_count(const struct h_events *log, uint8_t type);

/*
 * portres_cgroup_attach of the cgroup at path: token in the slot of its
 * protocol proto (IPPROTO_TCP or IPPROTO_UDP); 0 or -errno.
 */
int h_attach(const char *path, int proto, uint64_t token, uint32_t flags);

/* Summed counters of a token (asserts the lookup works). */
struct portres_stats h_stats(uint64_t token);

#endif
