// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_cli.c - portresctl against a real portresd: every command's success
 * path, its main errors with exit status and message, and --json output.
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
#include <unistd.h>

#include "cli_helpers.h"

TestSuite(cli, .init = cli_setup, .fini = cli_teardown, .timeout = 90);

#define ASSERT_ERR_HAS(r, text) cr_assert(strstr((r).err, (text)), "stderr lacks \"%s\": %s", (text), (r).err)
#define ASSERT_OUT_HAS(r, text) cr_assert(strstr((r).out, (text)), "stdout lacks \"%s\": %s", (text), (r).out)

static bool is_token(const char *s)
{
	if (strlen(s) < 16)
		return false;
	for (int i = 0; i < 16; i++)
		if (!strchr("0123456789abcdef", s[i]))
			return false;
	return true;
}

Test(cli, usage_and_help)
{
	struct cli_result r = cli_ctlv((const char *const[]){ NULL });

	CLI_ASSERT_STATUS(r, 2);
	ASSERT_ERR_HAS(r, "usage: portresctl");
	cli_result_free(&r);

	r = cli_ctl("help", NULL);
	CLI_ASSERT_STATUS(r, 0);
	for (const char *const *c = (const char *const[]){ "create", "lookup", "delete", "list", "show", "who", "attach",
							    "detach", "run", "apply", "events", "metrics", "status", NULL };
	     *c; c++)
		ASSERT_OUT_HAS(r, *c);
	cli_result_free(&r);

	r = cli_ctl("help", "run", NULL);
	CLI_ASSERT_STATUS(r, 0);
	ASSERT_OUT_HAS(r, "usage: portresctl run");
	ASSERT_OUT_HAS(r, "example:");
	cli_result_free(&r);

	r = cli_ctl("create", "--help", NULL);
	CLI_ASSERT_STATUS(r, 0);
	ASSERT_OUT_HAS(r, "usage: portresctl create");
	ASSERT_OUT_HAS(r, "example:\n  portresctl create");
	cli_result_free(&r);

	r = cli_ctl("frobnicate", NULL);
	CLI_ASSERT_STATUS(r, 2);
	ASSERT_ERR_HAS(r, "unknown command \"frobnicate\"");
	cli_result_free(&r);

	r = cli_ctl("create", "--proto", "sctp", "--start", "8000", "--count", "10", NULL);
	CLI_ASSERT_STATUS(r, 2);
	ASSERT_ERR_HAS(r, "not tcp or udp");
	cli_result_free(&r);

	r = cli_ctl("create", "--proto", "tcp", "--start", "65530", "--count", "10", NULL);
	CLI_ASSERT_STATUS(r, 2);
	ASSERT_ERR_HAS(r, "past port 65535");
	cli_result_free(&r);

	r = cli_ctl("create", "--proto", "tcp", "--start", "8000", NULL);
	CLI_ASSERT_STATUS(r, 2);
	cli_result_free(&r);

	r = cli_ctl("list", "--bogus", NULL);
	CLI_ASSERT_STATUS(r, 2);
	cli_result_free(&r);

	r = cli_ctl("delete", "--token", "xyz", NULL);
	CLI_ASSERT_STATUS(r, 2);
	ASSERT_ERR_HAS(r, "not a token");
	cli_result_free(&r);
}

Test(cli, no_agent)
{
	char path[400];
	struct cli_result r;

	snprintf(path, sizeof(path), "%s/nobody.sock", ag.tmp);
	r = cli_ctl("--socket", path, "status", NULL);
	CLI_ASSERT_STATUS(r, 1);
	cr_assert(strstr(r.err, "portresctl: no agent at ") && strstr(r.err, path) && strstr(r.err, "(start portresd)"),
		  "%s", r.err);
	cli_result_free(&r);

	/* PORTRES_SOCKET is honoured, and --socket after the command too */
	setenv("PORTRES_SOCKET", path, 1);
	r = cli_ctl("list", NULL);
	CLI_ASSERT_STATUS(r, 1);
	ASSERT_ERR_HAS(r, path);
	cli_result_free(&r);
	r = cli_ctl("list", "--socket", ag.sock, NULL);
	CLI_ASSERT_STATUS(r, 0);
	cli_result_free(&r);
	setenv("PORTRES_SOCKET", ag.sock, 1);
}

Test(cli, create_lookup_delete)
{
	char token[17];
	struct cli_result r;
	json_t *j;
	int held = -1;

	snprintf(token, sizeof(token), "%s", cli_create("tcp", 20000, 10, "web"));
	cr_assert(is_token(token));

	r = cli_ctl("lookup", "--proto", "tcp", "--start", "20000", "--count", "10", NULL);
	CLI_ASSERT_STATUS(r, 0);
	cr_assert(!strncmp(r.out, token, 16) && r.out[16] == '\n', "lookup printed %s, create %s", r.out, token);
	cli_result_free(&r);

	r = cli_ctl("lookup", "--name", "web", "--json", NULL);
	CLI_ASSERT_STATUS(r, 0);
	j = cli_json(&r);
	cr_assert_str_eq(json_string_value(json_object_get(j, "token")), token);
	json_decref(j);
	cli_result_free(&r);

	/* start and count must match exactly */
	r = cli_ctl("lookup", "--proto", "tcp", "--start", "20000", "--count", "9", NULL);
	CLI_ASSERT_STATUS(r, 1);
	ASSERT_ERR_HAS(r, "portresctl: lookup tcp 20000-20008: ");
	cli_result_free(&r);

	/* overlap: the message names the command, the range and the other reservation */
	r = cli_ctl("create", "--proto", "tcp", "--start", "20005", "--count", "10", NULL);
	CLI_ASSERT_STATUS(r, 1);
	ASSERT_ERR_HAS(r, "portresctl: create tcp 20005-20014: ");
	ASSERT_ERR_HAS(r, "web");
	cli_result_free(&r);

	/* ports held by a socket: the holder is named */
	cr_assert_eq(ag_bind(IPPROTO_TCP, 21003, &held), 0);
	r = cli_ctl("create", "--proto", "tcp", "--start", "21000", "--count", "10", NULL);
	CLI_ASSERT_STATUS(r, 1);
	ASSERT_ERR_HAS(r, "portresctl: create tcp 21000-21009: ");
	{
		char pid[32];

		snprintf(pid, sizeof(pid), "pid %d", (int)getpid());
		ASSERT_ERR_HAS(r, pid);
	}
	cli_result_free(&r);
	close(held);

	r = cli_ctl("create", "--proto", "udp", "--start", "21000", "--count", "10", "--mode", "audit",
		    "--grant-uid", "1000", "--grant-gid", "root", "--json", NULL);
	CLI_ASSERT_STATUS(r, 0);
	j = cli_json(&r);
	cr_assert(is_token(json_string_value(json_object_get(j, "token"))));
	cr_assert_str_eq(json_string_value(json_object_get(j, "proto")), "udp");
	cr_assert_str_eq(json_string_value(json_object_get(j, "mode")), "audit");
	cr_assert_eq(json_integer_value(json_object_get(j, "start")), 21000);
	cr_assert_eq(json_integer_value(json_object_get(j, "count")), 10);
	json_decref(j);
	cli_result_free(&r);

	/* a name is unique */
	r = cli_ctl("create", "--proto", "tcp", "--start", "22000", "--count", "1", "--name", "web", NULL);
	CLI_ASSERT_STATUS(r, 1);
	ASSERT_ERR_HAS(r, "web");
	cli_result_free(&r);

	/* delete by name, token, range */
	r = cli_ctl("delete", "--name", "web", NULL);
	CLI_ASSERT_STATUS(r, 0);
	cr_assert_str_eq(r.out, "");
	cli_result_free(&r);
	r = cli_ctl("delete", "--name", "web", NULL);
	CLI_ASSERT_STATUS(r, 1);
	ASSERT_ERR_HAS(r, "portresctl: delete web: no reservation named web");
	cli_result_free(&r);
	r = cli_ctl("lookup", "--proto", "tcp", "--start", "20000", "--count", "10", NULL);
	CLI_ASSERT_STATUS(r, 1);
	cli_result_free(&r);

	snprintf(token, sizeof(token), "%s", cli_create("tcp", 23000, 5, NULL));
	r = cli_ctl("delete", "--token", token, NULL);
	CLI_ASSERT_STATUS(r, 0);
	cli_result_free(&r);
	r = cli_ctl("delete", "--proto", "udp", "--start", "21000", "--count", "10", NULL);
	CLI_ASSERT_STATUS(r, 0);
	cli_result_free(&r);
	r = cli_ctl("delete", "--proto", "udp", "--start", "21000", "--count", "10", NULL);
	CLI_ASSERT_STATUS(r, 1);
	ASSERT_ERR_HAS(r, "portresctl: delete udp 21000-21009: ");
	cli_result_free(&r);
	r = cli_ctl("delete", "--name", "a", "--token", token, NULL);
	CLI_ASSERT_STATUS(r, 2);
	cli_result_free(&r);
}

Test(cli, list_show_who)
{
	char token[17], pidstr[16];
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(24004) };
	struct cli_result r;
	json_t *j, *res, *s;
	int fd;
	uint64_t t;

	snprintf(token, sizeof(token), "%s", cli_create("tcp", 24000, 10, "app"));
	/* a socket of ours inside it: associated (root may), then bound */
	t = strtoull(token, NULL, 16);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_eq(portres_associate(fd, t), 0, "associate: %s", strerror(errno));
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "bind 24004: %s", strerror(errno));
	cr_assert_eq(listen(fd, 1), 0);
	snprintf(pidstr, sizeof(pidstr), "%d", (int)getpid());

	r = cli_ctl("list", NULL);
	CLI_ASSERT_STATUS(r, 0);
	ASSERT_OUT_HAS(r, token);
	ASSERT_OUT_HAS(r, "24000-24009");
	ASSERT_OUT_HAS(r, "app");
	cli_result_free(&r);

	r = cli_ctl("list", "--json", NULL);
	CLI_ASSERT_STATUS(r, 0);
	j = cli_json(&r);
	res = json_array_get(json_object_get(j, "reservations"), 0);
	cr_assert_str_eq(json_string_value(json_object_get(res, "token")), token);
	cr_assert_str_eq(json_string_value(json_object_get(res, "name")), "app");
	cr_assert_str_eq(json_string_value(json_object_get(res, "kind")), "persistent");
	cr_assert_null(json_object_get(j, "ok"), "--json prints the data, not the protocol envelope");
	json_decref(j);
	cli_result_free(&r);

	/* show by name and by token: the socket, its process and cgroup */
	r = cli_ctl("show", "app", "--json", NULL);
	CLI_ASSERT_STATUS(r, 0);
	j = cli_json(&r);
	res = json_object_get(j, "reservation");
	cr_assert_str_eq(json_string_value(json_object_get(res, "token")), token);
	s = json_array_get(json_object_get(res, "sockets"), 0);
	cr_assert_not_null(s, "no socket in %s", r.out);
	cr_assert_eq(json_integer_value(json_object_get(s, "port")), 24004);
	cr_assert_eq(json_integer_value(json_object_get(s, "pid")), getpid());
	cr_assert_str_eq(json_string_value(json_object_get(s, "cgroup")) ?: "", ag.cgroup);
	json_decref(j);
	cli_result_free(&r);

	r = cli_ctl("show", token, NULL);
	CLI_ASSERT_STATUS(r, 0);
	ASSERT_OUT_HAS(r, "24000-24009");
	ASSERT_OUT_HAS(r, "24004");
	ASSERT_OUT_HAS(r, pidstr);
	ASSERT_OUT_HAS(r, ag.cgroup);
	cli_result_free(&r);

	r = cli_ctl("show", "--name", "nosuch", NULL);
	CLI_ASSERT_STATUS(r, 1);
	ASSERT_ERR_HAS(r, "portresctl: show nosuch: no reservation named nosuch");
	cli_result_free(&r);
	r = cli_ctl("show", NULL);
	CLI_ASSERT_STATUS(r, 2);
	cli_result_free(&r);

	/* who: the owner and the holder */
	r = cli_ctl("who", "24004", "--proto", "tcp", "--json", NULL);
	CLI_ASSERT_STATUS(r, 0);
	j = cli_json(&r);
	res = json_array_get(json_object_get(j, "reservations"), 0);
	cr_assert_str_eq(json_string_value(json_object_get(res, "token")) ?: "", token);
	s = json_array_get(json_object_get(j, "sockets"), 0);
	cr_assert_eq(json_integer_value(json_object_get(s, "pid")), getpid());
	cr_assert_str_eq(json_string_value(json_object_get(s, "cgroup")) ?: "", ag.cgroup);
	json_decref(j);
	cli_result_free(&r);

	r = cli_ctl("who", "24004", NULL);
	CLI_ASSERT_STATUS(r, 0);
	ASSERT_OUT_HAS(r, token);
	ASSERT_OUT_HAS(r, pidstr);
	cli_result_free(&r);

	r = cli_ctl("who", "25000", NULL);
	CLI_ASSERT_STATUS(r, 0);
	ASSERT_OUT_HAS(r, "port 25000: no reservation");
	ASSERT_OUT_HAS(r, "sockets: none");
	cli_result_free(&r);

	r = cli_ctl("who", "70000", NULL);
	CLI_ASSERT_STATUS(r, 2);
	cli_result_free(&r);
	close(fd);
}

static int bind_port(void *arg)
{
	uint16_t port = (uint16_t)(uintptr_t)arg;
	int err = ag_bind(IPPROTO_TCP, port, NULL);

	return err == 0 ? 0 : err == -EACCES ? 13 : 99;
}

static int bind_zero(void *arg)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	(void)arg;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || getsockname(fd, (struct sockaddr *)&sa, &len))
		return 99;
	return ntohs(sa.sin_port) - 26000; /* the offset in the block */
}

Test(cli, attach_confine_detach)
{
	char cg[4200], rel[300];
	struct cli_result r;
	json_t *j, *att;
	int off;

	cli_create("tcp", 26000, 10, "box");
	cli_cgroup("box", cg, sizeof(cg));

	r = cli_ctl("attach", "--cgroup", cg, "--name", "box", "--confine", NULL);
	CLI_ASSERT_STATUS(r, 0);
	cli_result_free(&r);

	/* inside: bind(0) lands in the block, inside binds work, outside ones are denied */
	off = cli_in_cgroup(cg, bind_zero, NULL);
	cr_assert(off >= 0 && off < 10, "bind(0) in the attached cgroup got offset %d", off);
	cr_assert_eq(cli_in_cgroup(cg, bind_port, (void *)(uintptr_t)26007), 0);
	cr_assert_eq(cli_in_cgroup(cg, bind_port, (void *)(uintptr_t)27000), 13, "confined: outside bind not denied");
	/* outside the cgroup: the block is refused, the rest free */
	cr_assert_eq(ag_bind(IPPROTO_TCP, 26007, NULL), -EACCES);
	cr_assert_eq(ag_bind(IPPROTO_TCP, 27000, NULL), 0);

	j = cli_show("box");
	att = json_array_get(json_object_get(j, "attachments"), 0);
	cr_assert_str_eq(json_string_value(json_object_get(att, "path")) ?: "", cg);
	cr_assert(json_is_true(json_object_get(att, "confine")));
	json_decref(j);

	/* a relative cgroup is below the cgroup2 mount */
	snprintf(rel, sizeof(rel), "%s/box", strrchr(ag.cgroup, '/') + 1);
	r = cli_ctl("detach", "--cgroup", rel, NULL);
	CLI_ASSERT_STATUS(r, 0);
	cli_result_free(&r);
	cr_assert_eq(cli_in_cgroup(cg, bind_port, (void *)(uintptr_t)27000), 0, "detached: still confined");

	r = cli_ctl("detach", "--cgroup", cg, NULL);
	CLI_ASSERT_STATUS(r, 1);
	ASSERT_ERR_HAS(r, "not attached");
	cli_result_free(&r);

	r = cli_ctl("attach", "--cgroup", "/sys/fs/cgroup/no/such/cgroup", "--name", "box", NULL);
	CLI_ASSERT_STATUS(r, 1);
	ASSERT_ERR_HAS(r, "does not exist");
	cli_result_free(&r);

	r = cli_ctl("attach", "--cgroup", cg, NULL);
	CLI_ASSERT_STATUS(r, 2);
	ASSERT_ERR_HAS(r, "--token");
	cli_result_free(&r);

	r = cli_ctl("attach", "--cgroup", cg, "--name", "nosuch", NULL);
	CLI_ASSERT_STATUS(r, 1);
	ASSERT_ERR_HAS(r, "no reservation named nosuch");
	cli_result_free(&r);
}

Test(cli, status_and_metrics)
{
	struct cli_result r;
	json_t *j, *s;
	size_t i;
	bool found = false;

	cli_create("tcp", 28000, 4, "m");
	r = cli_ctl("status", NULL);
	CLI_ASSERT_STATUS(r, 0);
	ASSERT_OUT_HAS(r, "portresd");
	ASSERT_OUT_HAS(r, ag.sock);
	ASSERT_OUT_HAS(r, "1 persistent");
	cli_result_free(&r);

	r = cli_ctl("status", "--json", NULL);
	CLI_ASSERT_STATUS(r, 0);
	j = cli_json(&r);
	cr_assert_str_eq(json_string_value(json_object_get(j, "socket")) ?: "", ag.sock);
	cr_assert_str_eq(json_string_value(json_object_get(j, "cgroup")) ?: "", ag.cgroup);
	cr_assert_eq(json_integer_value(json_object_get(json_object_get(j, "reservations"), "persistent")), 1);
	json_decref(j);
	cli_result_free(&r);

	r = cli_ctl("metrics", NULL);
	CLI_ASSERT_STATUS(r, 0);
	ASSERT_OUT_HAS(r, "# TYPE portres_reservations gauge");
	ASSERT_OUT_HAS(r, "portres_reservations{kind=\"persistent\"} 1");
	ASSERT_OUT_HAS(r, "name=\"m\"");
	cli_result_free(&r);

	r = cli_ctl("metrics", "--json", NULL);
	CLI_ASSERT_STATUS(r, 0);
	j = cli_json(&r);
	json_array_foreach(json_object_get(j, "samples"), i, s)
		if (!strcmp(json_string_value(json_object_get(s, "name")) ?: "", "portres_reservations") &&
		    !strcmp(json_string_value(json_object_get(json_object_get(s, "labels"), "kind")) ?: "", "persistent"))
			found = json_real_value(json_object_get(s, "value")) == 1.0;
	cr_assert(found, "no portres_reservations{kind=persistent} 1 sample in %s", r.out);
	json_decref(j);
	cli_result_free(&r);

	/* events without --follow: what the agent keeps, then exit */
	r = cli_ctl("events", "--json", NULL);
	CLI_ASSERT_STATUS(r, 0);
	cli_result_free(&r);
	r = cli_ctl("events", "--count", "0", NULL);
	CLI_ASSERT_STATUS(r, 2);
	cli_result_free(&r);
}

/* The first line of text holding needle, parsed as JSON (every line must be JSON). */
static json_t *event_line(const char *text, const char *needle)
{
	json_t *found = NULL;

	for (const char *line = text; *line;) {
		size_t n = strcspn(line, "\n");
		json_t *ev = json_loadb(line, n, 0, NULL);

		cr_assert_not_null(ev, "an event line is not JSON: %.*s", (int)n, line);
		if (!found && memmem(line, n, needle, strlen(needle)))
			found = json_incref(ev);
		json_decref(ev);
		line += n + (line[n] == '\n');
	}
	return found;
}

Test(cli, events_follow_sees_a_denial)
{
	char out[400], token[17];
	char *text;
	json_t *ev;
	pid_t pid;
	int status;

	snprintf(token, sizeof(token), "%s", cli_create("tcp", 29000, 10, "guarded"));
	snprintf(out, sizeof(out), "%s/events.out", ag.tmp);
	pid = cli_spawn(out, "events", "--follow", "--json", "--timeout", "60", NULL);
	/* the subscription starts at some point: deny until the event shows */
	for (int i = 0; i < 100 && !cli_wait_file(out, "\"deny\"", 100); i++)
		cr_assert_eq(ag_bind(IPPROTO_TCP, 29005, NULL), -EACCES);
	kill(pid, SIGTERM);
	cli_wait(pid, 10000);
	text = cli_read(out);
	ev = event_line(text, "\"deny\"");
	cr_assert_not_null(ev, "no deny event in %s", text);
	cr_assert_str_eq(json_string_value(json_object_get(ev, "protocol")) ?: "", "tcp");
	cr_assert_eq(json_integer_value(json_object_get(ev, "port")), 29005);
	cr_assert_eq(json_integer_value(json_object_get(ev, "pid")), getpid());
	cr_assert_eq(json_integer_value(json_object_get(ev, "uid")), 0);
	cr_assert_str_eq(json_string_value(json_object_get(ev, "reservation")) ?: "", token);
	cr_assert_str_eq(json_string_value(json_object_get(ev, "name")) ?: "", "guarded");
	cr_assert_str_eq(json_string_value(json_object_get(ev, "cgroup")) ?: "", ag.cgroup);
	cr_assert_str_eq(json_string_value(json_object_get(ev, "errno")) ?: "", "EACCES");
	cr_assert_not_null(json_string_value(json_object_get(ev, "command")));
	cr_assert(strlen(json_string_value(json_object_get(ev, "time")) ?: "") >= 20, "%s", text);
	json_decref(ev);
	free(text);

	/* without --follow: the agent's recent events, the denial among them, then exit */
	{
		struct cli_result r = cli_ctl("events", "--json", NULL);

		cr_assert_eq(r.status, 0, "%s", r.err);
		ev = event_line(r.out, "\"deny\"");
		cr_assert_not_null(ev, "recent events lack the denial: %s", r.out);
		json_decref(ev);
		cli_result_free(&r);
	}

	/* text form: one line naming port, pid and reservation; --count ends it */
	snprintf(out, sizeof(out), "%s/events.txt", ag.tmp);
	pid = cli_spawn(out, "events", "--follow", "--timeout", "30", NULL);
	for (int i = 0; i < 100 && !cli_wait_file(out, "127.0.0.1:29006", 100); i++)
		ag_bind(IPPROTO_TCP, 29006, NULL);
	kill(pid, SIGTERM);
	cli_wait(pid, 10000);
	text = cli_read(out);
	cr_assert(strstr(text, "deny") && strstr(text, "127.0.0.1:29006 ipv4") && strstr(text, token), "%s", text);
	free(text);
	pid = cli_spawn(out, "events", "--follow", "--count", "2", "--timeout", "30", NULL);
	status = -1;
	for (int i = 0; i < 100 && (status = cli_wait(pid, 100)) < 0; i++)
		ag_bind(IPPROTO_TCP, 29007, NULL);
	cr_assert_eq(status, 0, "events --count 2 did not end by itself (%d)", status);
}
