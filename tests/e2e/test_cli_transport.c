// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_cli_transport.c - libportres and portresctl share one request path
 * (user/lib/transport.c): against a stand-in agent that answers what a real
 * one never does, both see the same errors; and a reply far larger than
 * any request (list of many reservations) comes through whole.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_helpers.h"

TestSuite(cli_transport, .init = cli_setup, .fini = cli_teardown, .timeout = 120);

#define ASSERT_HAS(text, needle) cr_assert(strstr((text), (needle)), "lacks \"%s\": %s", (needle), (text))

/* A stand-in agent at path answering every request with reply; its pid. */
static pid_t fake_agent(const char *path, const char *reply)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	pid_t pid;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	unlink(path);
	cr_assert(lfd >= 0 && !bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) && !listen(lfd, 8));
	fflush(NULL);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		for (;;) {
			char buf[65536];
			int c = accept(lfd, NULL, NULL);

			if (c < 0)
				_exit(1);
			while (recv(c, buf, sizeof(buf), 0) > 0)
				if (send(c, reply, strlen(reply), MSG_NOSIGNAL) < 0)
					break;
			close(c);
		}
	}
	close(lfd);
	return pid;
}

static void stop(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

Test(cli_transport, same_errors_for_library_and_cli)
{
	static const struct {
		const char *reply, *cli_says;
	} cases[] = {
		/* an errno name this side does not know: EPROTO, the agent's message shown */
		{ "{\"v\":1,\"ok\":false,\"errno\":\"EFUTURE\",\"error\":\"a newer agent's refusal\"}",
		  "portresctl: status: a newer agent's refusal\n" },
		/* not the protocol */
		{ "this is not JSON", "portresctl: status: the agent at %s: Protocol error\n" },
		{ "{\"v\":2,\"ok\":true}", "portresctl: status: the agent at %s: Protocol error\n" },
	};
	char path[400], want[600];
	portres_token_t t;

	snprintf(path, sizeof(path), "%s/fake.sock", ag.tmp);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		pid_t pid = fake_agent(path, cases[i].reply);
		struct cli_result r = cli_ctl("--socket", path, "status", NULL);

		CLI_ASSERT_STATUS(r, 1);
		snprintf(want, sizeof(want), cases[i].cli_says, path);
		cr_assert_str_eq(r.err, want, "reply %s", cases[i].reply);
		cli_result_free(&r);
		setenv("PORTRES_SOCKET", path, 1);
		errno = 0;
		cr_assert_eq(portres_lookup_persistent(IPPROTO_TCP, 8000, 10, &t), -1);
		cr_assert_eq(errno, EPROTO, "reply %s: library errno %d (%s)", cases[i].reply, errno, strerror(errno));
		setenv("PORTRES_SOCKET", ag.sock, 1);
		stop(pid);
	}

	/* an error the agent names is the library's errno and the CLI's message */
	{
		pid_t pid = fake_agent(path, "{\"v\":1,\"ok\":false,\"errno\":\"EADDRINUSE\",\"error\":\"tcp 8000-8009 overlaps\"}");
		struct cli_result r = cli_ctl("--socket", path, "create", "--proto", "tcp", "--start", "8000", "--count",
					      "10", NULL);

		CLI_ASSERT_STATUS(r, 1);
		cr_assert_str_eq(r.err, "portresctl: create tcp 8000-8009: overlaps\n");
		cli_result_free(&r);
		setenv("PORTRES_SOCKET", path, 1);
		cr_assert_eq(portres_create_persistent(IPPROTO_TCP, 8000, 10, &t), -1);
		cr_assert_eq(errno, EADDRINUSE);
		setenv("PORTRES_SOCKET", ag.sock, 1);
		stop(pid);
	}

	/* nobody there: ECONNREFUSED, "no agent" */
	unlink(path);
	{
		struct cli_result r = cli_ctl("--socket", path, "status", NULL);

		CLI_ASSERT_STATUS(r, 1);
		ASSERT_HAS(r.err, "portresctl: no agent at ");
		cli_result_free(&r);
		setenv("PORTRES_SOCKET", path, 1);
		cr_assert_eq(portres_lookup_persistent(IPPROTO_TCP, 8000, 10, &t), -1);
		cr_assert_eq(errno, ECONNREFUSED);
		setenv("PORTRES_SOCKET", ag.sock, 1);
	}
}

Test(cli_transport, reply_larger_than_a_request)
{
	enum { N = 800 };
	struct cli_result r;
	portres_token_t t;
	char want[32];

	for (int i = 0; i < N; i++)
		cr_assert_eq(portres_create_persistent(IPPROTO_UDP, (uint16_t)(20000 + 2 * i), 2, &t), 0, "%s",
			     strerror(errno));
	r = cli_ctl("list", "--json", NULL);
	CLI_ASSERT_STATUS(r, 0);
	cr_assert_gt(strlen(r.out), 64 * 1024, "the reply should pass a request's 64 KiB");
	cli_result_free(&r);
	r = cli_ctl("list", "-o", "jsonpath={.reservations[-1].start}", NULL);
	CLI_ASSERT_STATUS(r, 0);
	snprintf(want, sizeof(want), "%d\n", 20000 + 2 * (N - 1));
	cr_assert_str_eq(r.out, want);
	cli_result_free(&r);
}
