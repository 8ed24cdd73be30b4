// SPDX-License-Identifier: LGPL-2.1-or-later
/* test_sysctl.c - ip_local_reserved_ports is merged: entries portres did not add survive everything. */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"

TestSuite(sysctl, .init = ag_setup, .fini = ag_teardown, .timeout = 60);

Test(sysctl, preexisting_entries_survive_create_delete_teardown)
{
	struct portres_instance in;
	portres_token_t t;
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ag_sysctl_set("22,8005,9000-9001\n");
	ag_start(NULL);
	cr_assert_eq(portres_create_persistent(IPPROTO_TCP, 8000, 10, &t), 0);
	cr_assert_str_eq(ag_sysctl(), "22,8000-8009,9000-9001");
	/* the same ports in UDP: still one entry, kept while either exists */
	cr_assert_eq(portres_create_persistent(IPPROTO_UDP, 8000, 10, &t), 0);
	cr_assert_eq(portres_delete_persistent(IPPROTO_TCP, 8000, 10), 0);
	cr_assert_str_eq(ag_sysctl(), "22,8000-8009,9000-9001");
	cr_assert_eq(portres_delete_persistent(IPPROTO_UDP, 8000, 10), 0);
	cr_assert_str_eq(ag_sysctl(), "22,8005,9000-9001");
	/* runtime, then a restart, then teardown */
	cr_assert_eq(portres_acquire(s, &(struct portres_range){ 9000, 4 }, &in), 0);
	cr_assert_str_eq(ag_sysctl(), "22,8005,9000-9003");
	cr_assert_eq(portres_create_persistent(IPPROTO_TCP, 7000, 2, &t), 0);
	ag_kill9();
	ag_start(NULL);
	cr_assert_str_eq(ag_sysctl(), "22,7000-7001,8005,9000-9003");
	ag_stop();
	cr_assert_eq(ag_run((const char *const[]){ "--teardown", NULL }), 0);
	cr_assert_str_eq(ag_sysctl(), "22,8005,9000-9001");
	close(s);
}

Test(sysctl, entries_added_by_the_admin_meanwhile_survive)
{
	portres_token_t t;

	ag_start(NULL);
	cr_assert_eq(portres_create_persistent(IPPROTO_TCP, 8000, 10, &t), 0);
	ag_sysctl_set("8000-8009,443\n");
	cr_assert_eq(portres_delete_persistent(IPPROTO_TCP, 8000, 10), 0);
	cr_assert_str_eq(ag_sysctl(), "443");
}
