// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_agent_quota.c - what portres_acquire reports when the agent says no:
 * EDQUOT past the per-uid runtime quota (not a SPEC §3 row: the agent's own,
 * documented in portresd --help and portresd(8)), EADDRINUSE when no free
 * block is left for a wildcard acquire or a specific block overlaps.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli_helpers.h"

TestSuite(agent_quota, .init = ag_setup, .fini = cli_teardown, .timeout = 60);

/* Acquires (and keeps, for the life of the process) *count ports; errno or 0. */
static int acquire(void *arg)
{
	struct portres_instance in;
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	return portres_acquire(s, &(struct portres_range){ 0, *(uint16_t *)arg }, &in) ? errno : 0;
}

/* 6 ports, then 3 more from the same process: the second passes the quota of 8. */
static int acquire_twice(void *arg)
{
	uint16_t six = 6, three = 3, two = 2;
	int err;

	if ((err = acquire(&six)))
		return 100 + err;
	if ((err = acquire(&three)) != EDQUOT)
		return 200 + err;
	return acquire(&two); /* 8 exactly is allowed */
}

Test(agent_quota, edquot_and_eaddrinuse)
{
	static const char *const extra[] = { "--quota", "8", NULL };
	struct portres_instance in;
	uint16_t n = 9;
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct test_user u;

	test_user_new(&u);
	ag_start(extra);
	/* past the quota at once, and on the way there */
	cr_assert_eq(ag_as_user(&u, acquire, &n, NULL, 0), EDQUOT);
	cr_assert_eq(ag_as_user(&u, acquire_twice, NULL, NULL, 0), 0);
	/* root is exempt */
	cr_assert_eq(portres_acquire(s, &(struct portres_range){ 0, 100 }, &in), 0, "%s", strerror(errno));
	/* a specific block over a reservation */
	errno = 0;
	cr_assert_eq(portres_acquire(t, &(struct portres_range){ in.range.start + 10, 5 }, &in), -1);
	cr_assert_eq(errno, EADDRINUSE, "%s", strerror(errno));
	/* a wildcard acquire with no free block: everything above 1023 is kept aside (this netns only) */
	ag_sysctl_set("1024-65535");
	errno = 0;
	cr_assert_eq(portres_acquire(t, &(struct portres_range){ 0, 1 }, &in), -1);
	cr_assert_eq(errno, EADDRINUSE, "%s", strerror(errno));
	close(s);
	close(t);
}
