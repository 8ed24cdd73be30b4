// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_cli_events.c - portresctl events: reasons, families and addresses of
 * denials in text and JSON; --since, --tail, --name, --type; --follow without
 * replay; history kept across agent restarts in a bounded log; and
 * portres_events_dropped_total for a subscriber that does not read.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_helpers.h"

TestSuite(cli_events, .init = cli_setup, .fini = cli_teardown, .timeout = 120);

#define ASSERT_HAS(text, needle) cr_assert(strstr((text), (needle)), "lacks \"%s\": %s", (needle), (text))
#define ASSERT_LACKS(text, needle) cr_assert(!strstr((text), (needle)), "has \"%s\": %s", (needle), (text))

/* bind(::1, port): 0 or -errno */
static int bind6(uint16_t port)
{
	struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0), err = 0;

	cr_assert(fd >= 0);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)))
		err = -errno;
	close(fd);
	return err;
}

/* stdout of `portresctl events ARGS...` (exit 0 asserted); malloc'd. */
static char *events(const char *a1, const char *a2, const char *a3, const char *a4)
{
	const char *argv[] = { "events", a1, a2, a3, a4, NULL };
	struct cli_result r = cli_ctlv(argv);
	char *out;

	CLI_ASSERT_STATUS(r, 0);
	out = r.out;
	r.out = NULL;
	cli_result_free(&r);
	return out;
}

static size_t count_lines(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

Test(cli_events, reason_family_address_text_and_json)
{
	char cgroup[4200];
	char *out;
	json_t *ev;

	cli_create("tcp", 31000, 10, "guarded");
	cr_assert_eq(ag_bind(IPPROTO_TCP, 31005, NULL), -EACCES);
	cr_assert_eq(bind6(31005), -EACCES);

	/* text: the IPv4 and the IPv6 denial of one port differ, and say why */
	out = events(NULL, NULL, NULL, NULL);
	ASSERT_HAS(out, "deny      tcp 127.0.0.1:31005 ipv4 pid ");
	ASSERT_HAS(out, "deny      tcp [::1]:31005 ipv6 pid ");
	ASSERT_HAS(out, "(guarded): EACCES, reason foreign-block");
	free(out);

	/* JSON: one object per line with reason, family and address */
	out = events("--json", "--type", "deny", "--tail=1");
	cr_assert_eq(count_lines(out), 1, "%s", out);
	ev = json_loads(out, 0, NULL);
	cr_assert_not_null(ev, "%s", out);
	cr_assert_str_eq(json_string_value(json_object_get(ev, "reason")) ?: "", "foreign-block");
	cr_assert_str_eq(json_string_value(json_object_get(ev, "family")) ?: "", "ipv6");
	cr_assert_str_eq(json_string_value(json_object_get(ev, "address")) ?: "", "::1");
	cr_assert_eq(json_integer_value(json_object_get(ev, "port")), 31005);
	cr_assert_str_eq(json_string_value(json_object_get(ev, "name")) ?: "", "guarded");
	json_decref(ev);
	free(out);

	/* a confined cgroup binding outside its block: reason confined */
	cli_create("tcp", 31100, 2, "inside");
	cli_cgroup("confined", cgroup, sizeof(cgroup));
	{
		struct cli_result r = cli_ctl("attach", "--cgroup", cgroup, "--name", "inside", "--confine", NULL);

		CLI_ASSERT_STATUS(r, 0);
		cli_result_free(&r);
	}
	{
		int pid = fork();

		cr_assert(pid >= 0);
		if (pid == 0) {
			char procs[4300];
			FILE *f;

			snprintf(procs, sizeof(procs), "%s/cgroup.procs", cgroup);
			f = fopen(procs, "we");
			if (!f || fprintf(f, "0") < 0 || fclose(f))
				_exit(125);
			_exit(ag_bind(IPPROTO_TCP, 31200, NULL) == -EACCES ? 0 : 1);
		}
		cr_assert_eq(cli_wait(pid, 20000), 0, "a confined bind outside the block was not refused");
	}
	out = events("--type", "deny", "--tail", "1");
	ASSERT_HAS(out, "127.0.0.1:31200 ipv4");
	ASSERT_HAS(out, "cgroup ");
	ASSERT_HAS(out, ": EACCES, reason confined");
	free(out);
}

Test(cli_events, since_tail_name_type_filters)
{
	char *out;
	struct cli_result r;

	cli_create("tcp", 32000, 4, "alpha");
	cli_create("tcp", 32100, 4, "beta");
	cr_assert_eq(ag_bind(IPPROTO_TCP, 32001, NULL), -EACCES);
	cr_assert_eq(ag_bind(IPPROTO_TCP, 32101, NULL), -EACCES);
	cr_assert_eq(ag_bind(IPPROTO_TCP, 32102, NULL), -EACCES);

	out = events("--name", "alpha", NULL, NULL);
	ASSERT_HAS(out, "created   tcp 32000-32003");
	ASSERT_HAS(out, "127.0.0.1:32001");
	ASSERT_LACKS(out, "beta");
	ASSERT_LACKS(out, "3210");
	free(out);

	out = events("--type", "created", NULL, NULL);
	cr_assert_eq(count_lines(out), 2, "%s", out);
	ASSERT_LACKS(out, "deny");
	free(out);
	out = events("--type", "deny,created", "--name", "beta");
	cr_assert_eq(count_lines(out), 3, "%s", out);
	free(out);

	out = events("--tail", "1", NULL, NULL);
	cr_assert_eq(count_lines(out), 1, "%s", out);
	ASSERT_HAS(out, "127.0.0.1:32102");
	free(out);
	out = events("--tail", "0", NULL, NULL);
	cr_assert_str_eq(out, "");
	free(out);

	/* a duration back from now, a time in the past, one in the future */
	out = events("--since", "1h", NULL, NULL);
	ASSERT_HAS(out, "127.0.0.1:32101");
	free(out);
	out = events("--since", "2000-01-01T00:00:00Z", NULL, NULL);
	cr_assert_eq(count_lines(out), 5, "%s", out);
	free(out);
	out = events("--since", "2999-01-01 00:00", NULL, NULL);
	cr_assert_str_eq(out, "");
	free(out);

	r = cli_ctl("events", "--since", "yesterday", NULL);
	CLI_ASSERT_STATUS(r, 2);
	ASSERT_HAS(r.err, "--since: \"yesterday\" is neither a duration");
	cli_result_free(&r);
	r = cli_ctl("events", "--type", "denny", NULL);
	CLI_ASSERT_STATUS(r, 2);
	ASSERT_HAS(r.err, "did you mean \"deny\"?");
	cli_result_free(&r);
}

Test(cli_events, follow_does_not_replay_and_history_survives_restart)
{
	char path[400];
	char *text, *out;
	pid_t pid;

	cli_create("tcp", 33000, 4, "kept");
	cr_assert_eq(ag_bind(IPPROTO_TCP, 33001, NULL), -EACCES);

	/* --follow: only what comes after it started */
	snprintf(path, sizeof(path), "%s/follow.out", ag.tmp);
	pid = cli_spawn(path, "events", "--follow", "--timeout", "60", NULL);
	for (int i = 0; i < 100 && !cli_wait_file(path, ":33002", 100); i++)
		cr_assert_eq(ag_bind(IPPROTO_TCP, 33002, NULL), -EACCES);
	kill(pid, SIGTERM);
	cli_wait(pid, 10000);
	text = cli_read(path);
	ASSERT_HAS(text, "127.0.0.1:33002");
	ASSERT_LACKS(text, ":33001");
	ASSERT_LACKS(text, "created");
	free(text);

	/* --follow --tail 1: the last kept one first */
	snprintf(path, sizeof(path), "%s/follow2.out", ag.tmp);
	pid = cli_spawn(path, "events", "--follow", "--tail", "1", "--count", "1", "--timeout", "30", NULL);
	cr_assert_eq(cli_wait(pid, 30000), 0);
	text = cli_read(path);
	cr_assert_eq(count_lines(text), 1, "%s", text);
	ASSERT_HAS(text, ":33002");
	free(text);

	/* a new agent still has them */
	ag_stop();
	ag_start(NULL);
	out = events("--name", "kept", NULL, NULL);
	ASSERT_HAS(out, "created   tcp 33000-33003");
	ASSERT_HAS(out, "127.0.0.1:33001");
	free(out);
}

Test(cli_events, log_is_bounded)
{
	const char *const extra[] = { "--events-log-size", "2048", NULL };
	char log[400], old[400], first[64], *out;
	struct stat sb;

	ag_stop();
	ag_start(extra);
	for (int i = 0; i < 40; i++) {
		char name[32], port[8];
		struct cli_result r;

		snprintf(name, sizeof(name), "churn%d", i);
		snprintf(port, sizeof(port), "%d", 34000 + i);
		r = cli_ctl("create", "--proto", "udp", "--start", port, "--count", "1", "--name", name, NULL);
		CLI_ASSERT_STATUS(r, 0);
		cli_result_free(&r);
		if (i == 0)
			snprintf(first, sizeof(first), "%s", "udp 34000-34000 reservation");
	}
	snprintf(log, sizeof(log), "%s/events.log", ag.state);
	snprintf(old, sizeof(old), "%s/events.log.1", ag.state);
	cr_assert_eq(stat(log, &sb), 0);
	cr_assert_leq(sb.st_size, 2048, "events.log is %lld bytes", (long long)sb.st_size);
	cr_assert_eq(stat(old, &sb), 0, "events.log was never rotated");
	cr_assert_leq(sb.st_size, 2048, "events.log.1 is %lld bytes", (long long)sb.st_size);
	snprintf(log, sizeof(log), "%s/events.log.2", ag.state);
	cr_assert_neq(stat(log, &sb), 0, "more than two log files");
	out = events(NULL, NULL, NULL, NULL);
	ASSERT_LACKS(out, first);
	ASSERT_HAS(out, "(churn39)");
	free(out);
}

Test(cli_events, dropped_events_are_counted)
{
	static const char req[] = "{\"v\":1,\"op\":\"events\",\"replay\":false}";
	struct cli_result r;
	json_t *reply;
	int c = ag_connect();
	char *line;

	cli_create("tcp", 35000, 2, "busy");
	/* a subscriber that never reads what it is sent */
	cr_assert(c >= 0);
	reply = ag_raw(c, req, sizeof(req) - 1, -1);
	cr_assert(json_is_true(json_object_get(reply, "ok")));
	json_decref(reply);
	for (int i = 0; i < 800; i++)
		cr_assert_eq(ag_bind(IPPROTO_TCP, 35001, NULL), -EACCES);
	/* the agent takes the ring's events in its own time: ask until they are through */
	for (int i = 0;; i++) {
		long dropped;

		r = cli_ctl("metrics", NULL);
		CLI_ASSERT_STATUS(r, 0);
		ASSERT_HAS(r.out, "# TYPE portres_events_dropped_total counter");
		ASSERT_HAS(r.out, "portres_events_dropped_total{stage=\"log\"} 0\n");
		line = strstr(r.out, "portres_events_dropped_total{stage=\"subscriber\"} ");
		cr_assert_not_null(line, "%s", r.out);
		dropped = atol(line + strlen("portres_events_dropped_total{stage=\"subscriber\"} "));
		cli_result_free(&r);
		if (dropped > 0)
			break;
		cr_assert_lt(i, 100, "800 events, a subscriber reading none, and nothing dropped");
		usleep(100000);
	}
	close(c);
}
