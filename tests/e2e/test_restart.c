// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_restart.c - kill -9 of the agent opens no gap: binds stay denied from
 * the pinned links, the next agent adopts the maps with the same tokens, and
 * a socket release that happened while no agent ran is reconciled.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"

TestSuite(restart, .init = ag_setup, .fini = ag_teardown, .timeout = 60);

Test(restart, kill9_keeps_enforcement_and_tokens)
{
	portres_token_t t, t2;

	ag_start(NULL);
	cr_assert_eq(portres_create_persistent(IPPROTO_TCP, 8000, 10, &t), 0);
	cr_assert_eq(ag_bind(IPPROTO_TCP, 8005, NULL), -EACCES);
	ag_kill9();
	/* no agent: still enforced */
	cr_assert_eq(ag_bind(IPPROTO_TCP, 8005, NULL), -EACCES);
	cr_assert_str_eq(ag_sysctl(), "8000-8009");
	ag_start(NULL);
	cr_assert(ag_log_has("adopted programs"));
	cr_assert_eq(portres_lookup_persistent(IPPROTO_TCP, 8000, 10, &t2), 0);
	cr_assert_eq(t2, t, "token changed across the restart");
	cr_assert_eq(ag_bind(IPPROTO_TCP, 8005, NULL), -EACCES);
	cr_assert_eq(portres_delete_persistent(IPPROTO_TCP, 8000, 10), 0);
	cr_assert_eq(ag_bind(IPPROTO_TCP, 8005, NULL), 0);
	cr_assert_str_eq(ag_sysctl(), "");
}

Test(restart, clean_stop_and_fresh_load_keep_tokens)
{
	portres_token_t t, t2;
	char path[400];

	ag_start(NULL);
	cr_assert_eq(portres_create_persistent(IPPROTO_UDP, 7000, 3, &t), 0);
	ag_stop();
	/* A reboot: pins gone, the state file stays. */
	ag_run((const char *const[]){ "--teardown", NULL });
	snprintf(path, sizeof(path), "%s/maps", ag.bpffs);
	cr_assert_neq(access(path, F_OK), 0, "pins left after --teardown");
	cr_assert_str_eq(ag_sysctl(), "");
	ag_start(NULL);
	cr_assert_eq(portres_lookup_persistent(IPPROTO_UDP, 7000, 3, &t2), 0);
	cr_assert_eq(t2, t);
	cr_assert_eq(ag_bind(IPPROTO_UDP, 7001, NULL), -EACCES);
	cr_assert_str_eq(ag_sysctl(), "7000-7002");
}

Test(restart, release_while_down_is_reconciled)
{
	struct portres_instance in;
	int p[2], go[2];
	pid_t pid;
	char c = 0;

	ag_start(NULL);
	cr_assert_eq(pipe(p), 0);
	cr_assert_eq(pipe(go), 0);
	pid = fork();
	if (pid == 0) {
		int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (portres_acquire(s, &(struct portres_range){ 0, 4 }, &in) ||
		    write(p[1], &in, sizeof(in)) != sizeof(in) || read(go[0], &c, 1) != 1)
			_exit(1);
		_exit(0); /* closes s while no agent runs */
	}
	cr_assert_eq(read(p[0], &in, sizeof(in)), (ssize_t)sizeof(in));
	cr_assert_eq(ag_bind(IPPROTO_TCP, in.range.start, NULL), -EACCES);
	ag_kill9();
	cr_assert_eq(write(go[1], &c, 1), 1);
	cr_assert_eq(waitpid(pid, NULL, 0), pid);
	/* the data plane ended it at once, agent or not */
	cr_assert_eq(ag_bind(IPPROTO_TCP, in.range.start, NULL), 0);
	ag_start(NULL);
	cr_assert(ag_wait_gone(in.token));
	cr_assert_str_eq(ag_sysctl(), "", "sysctl entries of the released block stayed: %s", ag_sysctl());
}

Test(restart, live_runtime_reservation_survives_restart)
{
	struct portres_instance in;
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ag_start(NULL);
	cr_assert_eq(portres_acquire(s, &(struct portres_range){ 0, 4 }, &in), 0);
	ag_kill9();
	ag_start(NULL);
	cr_assert(ag_has_token(in.token));
	cr_assert_eq(ag_bind(IPPROTO_TCP, in.range.start, NULL), -EACCES);
	/* still owned by us and ended by closing */
	close(s);
	cr_assert(ag_wait_gone(in.token));
	cr_assert_str_eq(ag_sysctl(), "");
}

Test(restart, second_agent_refuses_same_socket)
{
	ag_start(NULL);
	cr_assert_neq(ag_run(NULL), 0);
	cr_assert(ag_log_has("another portresd answers"));
}
