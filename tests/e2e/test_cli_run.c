// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_cli_run.c - portresctl run: an unmodified program in a fresh cgroup
 * tied to a reservation, its environment, its exit status, the runtime
 * reservation of --acquire held exactly as long as it runs, and cleanup.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_helpers.h"

TestSuite(cli_run, .init = cli_setup, .fini = cli_teardown, .timeout = 120);

/* No portresctl-run-* cgroup is left below the test's. */
static bool no_run_cgroups(void)
{
	DIR *d = opendir(ag.cgroup);
	struct dirent *e;
	bool none = true;

	cr_assert(d);
	while ((e = readdir(d)))
		if (!strncmp(e->d_name, "portresctl-run-", 15))
			none = false;
	closedir(d);
	return none;
}

Test(cli_run, acquire_python_http_server)
{
	char out[400], path[64], *body = NULL;
	json_t *l, *res, *who, *s;
	long long start, count;
	uint16_t port;
	pid_t pid;
	struct cli_result r;
	bool python = false;
	size_t i;
	int status;

	snprintf(out, sizeof(out), "%s/run.out", ag.tmp);
	pid = cli_spawn(out, "run", "--acquire", "5", "--proto", "tcp", "--", "python3", "-m", "http.server", "0",
			"--bind", "127.0.0.1", NULL);
	port = cli_wait_listener(30000);
	cr_assert(port, "python3 -m http.server never listened; output: %s", cli_read(out));

	/* its port is one of the runtime block the run holds */
	l = cli_list();
	res = cli_find_runtime(l, 5);
	cr_assert_not_null(res, "no runtime reservation of 5 ports while CMD runs");
	start = json_integer_value(json_object_get(res, "start"));
	count = json_integer_value(json_object_get(res, "count"));
	cr_assert(port >= start && port < start + count, "python listens on %u, outside the block %lld-%lld", port,
		  start, start + count - 1);

	/* who names the block and the python process */
	snprintf(path, sizeof(path), "%u", port);
	r = cli_ctl("who", path, "--json", NULL);
	CLI_ASSERT_STATUS(r, 0);
	who = cli_json(&r);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(who, "reservations"), 0),
							   "token")) ?: "",
			 json_string_value(json_object_get(res, "token")));
	json_array_foreach(json_object_get(who, "sockets"), i, s)
		python |= !strncmp(json_string_value(json_object_get(s, "comm")) ?: "", "python", 6) &&
			  strstr(json_string_value(json_object_get(s, "cgroup")) ?: "", "/portresctl-run-");
	cr_assert(python, "who %u does not show python in the run cgroup: %s", port, r.out);
	json_decref(who);
	cli_result_free(&r);
	json_decref(l);

	/* it serves */
	cr_assert_eq(cli_http_get(port, "/", &body), 200);
	free(body);

	/* SIGTERM to portresctl reaches python; the status is passed through; all is cleaned */
	kill(pid, SIGTERM);
	status = cli_wait(pid, 20000);
	cr_assert_eq(status, 128 + SIGTERM, "run exited %d: %s", status, cli_read(out));
	l = cli_list();
	cr_assert_null(cli_find_runtime(l, 5), "the runtime reservation outlived CMD");
	json_decref(l);
	cr_assert(no_run_cgroups(), "the run's cgroup is left");
	/* the block is free for anyone again */
	cr_assert_eq(ag_bind(IPPROTO_TCP, (uint16_t)start, NULL), 0);
}

Test(cli_run, environment_and_exit_status)
{
	struct cli_result r;
	char token[17];
	unsigned start, count;

	r = cli_ctl("run", "--acquire", "3", "--", "sh", "-c",
		    "echo \"$PORTRES_TOKEN $PORTRES_START $PORTRES_COUNT $PORTRES_PROTO\"; exit 7", NULL);
	CLI_ASSERT_STATUS(r, 7);
	cr_assert_eq(sscanf(r.out, "%16s %u %u", token, &start, &count), 3, "%s", r.out);
	cr_assert_eq(strlen(token), 16);
	cr_assert_eq(count, 3);
	cr_assert(strstr(r.out, " tcp\n"), "%s", r.out);
	cli_result_free(&r);

	/* killed by a signal: 128 + N */
	r = cli_ctl("run", "--acquire", "1", "--proto", "udp", "--", "sh", "-c", "kill -KILL $$", NULL);
	CLI_ASSERT_STATUS(r, 128 + SIGKILL);
	cli_result_free(&r);

	/* CMD not found: 127 */
	r = cli_ctl("run", "--acquire", "1", "--", "/nonexistent/program", NULL);
	CLI_ASSERT_STATUS(r, 127);
	cr_assert(strstr(r.err, "/nonexistent/program"), "%s", r.err);
	cli_result_free(&r);
	cr_assert(no_run_cgroups());

	/* a specific block */
	r = cli_ctl("run", "--acquire", "2", "--start", "31000", "--", "sh", "-c", "echo $PORTRES_START", NULL);
	CLI_ASSERT_STATUS(r, 0);
	cr_assert_str_eq(r.out, "31000\n");
	cli_result_free(&r);
}

Test(cli_run, persistent_name_and_confine)
{
	static const char script[] =
		"import errno, socket\n"
		"s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])\n"
		"t = socket.socket()\n"
		"try:\n"
		"    t.bind(('127.0.0.1', 33000)); print('outside-allowed')\n"
		"except OSError as e:\n"
		"    print('outside-denied' if e.errno == errno.EACCES else 'outside-' + str(e.errno))\n";
	struct cli_result r;
	unsigned port = 0;
	char token[17];
	json_t *j;

	snprintf(token, sizeof(token), "%s", cli_create("tcp", 32000, 10, "app"));
	r = cli_ctl("run", "--name", "app", "--confine", "--", "python3", "-c", script, NULL);
	CLI_ASSERT_STATUS(r, 0);
	cr_assert_eq(sscanf(r.out, "%u", &port), 1, "%s", r.out);
	cr_assert(port >= 32000 && port < 32010, "bind(0) got %u, outside 32000-32009", port);
	cr_assert(strstr(r.out, "outside-denied"), "confined CMD bound outside its block: %s", r.out);
	cli_result_free(&r);

	/* without --confine outside binds work; --token works as --name */
	r = cli_ctl("run", "--token", token, "--", "python3", "-c", script, NULL);
	CLI_ASSERT_STATUS(r, 0);
	cr_assert(strstr(r.out, "outside-allowed"), "%s", r.out);
	cli_result_free(&r);

	/* nothing stays attached */
	j = cli_show("app");
	cr_assert_eq(json_array_size(json_object_get(j, "attachments")), 0, "%s", json_dumps(j, 0));
	json_decref(j);
	cr_assert(no_run_cgroups());
}

Test(cli_run, errors)
{
	struct cli_result r;

	r = cli_ctl("run", "--", "true", NULL);
	CLI_ASSERT_STATUS(r, 2);
	cr_assert(strstr(r.err, "--acquire"), "%s", r.err);
	cli_result_free(&r);

	r = cli_ctl("run", "--acquire", "1", NULL);
	CLI_ASSERT_STATUS(r, 2);
	cli_result_free(&r);

	r = cli_ctl("run", "--name", "a", "--acquire", "1", "--", "true", NULL);
	CLI_ASSERT_STATUS(r, 2);
	cli_result_free(&r);

	r = cli_ctl("run", "--name", "nosuch", "--", "true", NULL);
	CLI_ASSERT_STATUS(r, 1);
	cr_assert(strstr(r.err, "no reservation named nosuch"), "%s", r.err);
	cli_result_free(&r);

	/* a block that is taken */
	cli_create("tcp", 34000, 10, NULL);
	r = cli_ctl("run", "--acquire", "2", "--start", "34005", "--", "true", NULL);
	CLI_ASSERT_STATUS(r, 1);
	cr_assert(strstr(r.err, "portresctl: run: acquire tcp 34005-34006"), "%s", r.err);
	cli_result_free(&r);
	cr_assert(no_run_cgroups());
}
