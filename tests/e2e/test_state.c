// SPDX-License-Identifier: LGPL-2.1-or-later
/* test_state.c - the agent and its state: a corrupt state.json is never imported; feature probe; metrics. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"

TestSuite(state, .init = ag_setup, .fini = ag_teardown, .timeout = 60);

static char *slurp(const char *path)
{
	static char buf[65536];
	FILE *f = fopen(path, "r");
	size_t n;

	if (!f)
		return NULL;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strdup(buf);
}

static void put(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	cr_assert(f);
	fputs(text, f);
	fclose(f);
}

Test(state, corrupt_file_stops_the_agent_unchanged)
{
	static const char *const bad[] = {
		"{\"version\":1,\"reservations\":[{\"token\":\"00000000000000aa\",\"proto\":\"tcp\",",
		"{\"version\":1,\"reservations\":[{\"token\":\"0000000000000000\",\"proto\":\"tcp\",\"start\":1,\"count\":1}]}",
		"{\"version\":1,\"reservations\":[{\"token\":\"00000000000000aa\",\"proto\":\"tcp\",\"start\":100,\"count\":10},"
		"{\"token\":\"00000000000000bb\",\"proto\":\"tcp\",\"start\":105,\"count\":1}]}",
		"",
	};
	char path[400], *before, *after;
	struct stat st0, st1;

	snprintf(path, sizeof(path), "%s/state.json", ag.state);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		put(path, bad[i]);
		before = slurp(path);
		cr_assert_eq(stat(path, &st0), 0);
		cr_assert_neq(ag_run(NULL), 0, "agent started with bad state %zu", i);
		cr_assert(ag_log_has(path), "the message does not name %s", path);
		cr_assert(ag_log_has("refusing to start"));
		after = slurp(path);
		cr_assert_str_eq(after, before, "state file changed");
		cr_assert_eq(stat(path, &st1), 0);
		cr_assert_eq(st0.st_ino, st1.st_ino, "state file replaced");
		free(before);
		free(after);
	}
}

/* The feature probe names what is missing and changes nothing. */
Test(state, probe_names_the_missing_feature)
{
	char plain[400], bad_bpffs[500];

	snprintf(plain, sizeof(plain), "%s/plain", ag.tmp);
	mkdir(plain, 0700);
	snprintf(bad_bpffs, sizeof(bad_bpffs), "%s/pins", plain);
	cr_assert_neq(ag_run((const char *const[]){ "--bpffs", bad_bpffs, NULL }), 0);
	cr_assert(ag_log_has("missing feature: bpffs"));
	cr_assert_neq(ag_run((const char *const[]){ "--cgroup", plain, NULL }), 0);
	cr_assert(ag_log_has("missing feature: cgroup2"));
	cr_assert_neq(access(bad_bpffs, F_OK), 0);
}

/* --metrics-listen serves the same text as the metrics op, from the agent's loop. */
Test(state, metrics_listen)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(9464), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	char buf[16384];
	portres_token_t t;
	size_t got = 0;
	ssize_t n;
	int c;

	ag_start((const char *const[]){ "--metrics-listen", "127.0.0.1:9464", NULL });
	cr_assert_eq(portres_create_persistent(IPPROTO_TCP, 8000, 10, &t), 0);
	c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_eq(connect(c, (struct sockaddr *)&sa, sizeof(sa)), 0, "%s", strerror(errno));
	cr_assert(write(c, "GET /metrics HTTP/1.0\r\n\r\n", 25) == 25);
	while ((n = read(c, buf + got, sizeof(buf) - 1 - got)) > 0)
		got += (size_t)n;
	buf[got] = '\0';
	close(c);
	cr_assert(strstr(buf, "200 OK"), "%s", buf);
	cr_assert(strstr(buf, "portres_reservations{kind=\"persistent\"} 1"), "%s", buf);
}

/*
 * A start that fails after the socket is up (the metrics address is taken)
 * undoes what it set up: no socket file is left behind (server_run's early
 * return used to leave it, and its fds, issue 11 item 6).
 */
Test(state, failed_start_leaves_no_socket)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(9465), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int one = 1, taken = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert(taken >= 0);
	setsockopt(taken, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	cr_assert_eq(bind(taken, (struct sockaddr *)&sa, sizeof(sa)), 0, "%s", strerror(errno));
	cr_assert_eq(listen(taken, 1), 0);
	cr_assert_neq(ag_run((const char *const[]){ "--metrics-listen", "127.0.0.1:9465", NULL }), 0);
	cr_assert(ag_log_has("cannot serve metrics on 127.0.0.1:9465"));
	cr_assert_neq(access(ag.sock, F_OK), 0, "%s is left behind", ag.sock);
	close(taken);
}
