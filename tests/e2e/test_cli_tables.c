// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_cli_tables.c - what list, who and top print: sorted by protocol and
 * port, -o wide (ports in use, netns inode as lsns shows it, attachments),
 * --no-headers, -o json and -o jsonpath=... for scripts, top --iterations.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_helpers.h"

TestSuite(cli_tables, .init = cli_setup, .fini = cli_teardown, .timeout = 90);

#define ASSERT_HAS(text, needle) cr_assert(strstr((text), (needle)), "lacks \"%s\": %s", (needle), (text))

static char *ctl_out(const char *const *argv, int want)
{
	struct cli_result r = cli_ctlv(argv);
	char *out;

	CLI_ASSERT_STATUS(r, want);
	out = r.out;
	r.out = NULL;
	cli_result_free(&r);
	return out;
}

/* A socket of ours bound to 127.0.0.1:port inside the reservation of token. */
static int hold(const char *token, uint16_t port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_eq(portres_associate(fd, strtoull(token, NULL, 16)), 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "bind %u: %s", port, strerror(errno));
	cr_assert_eq(listen(fd, 4), 0);
	return fd;
}

Test(cli_tables, sorted_wide_no_headers)
{
	char tok_b[17], cg[4200], inode[64], *out, *a, *b, *c;
	struct stat sb;
	int fd;

	cli_create("udp", 40000, 5, "c-udp");
	snprintf(tok_b, sizeof(tok_b), "%s", cli_create("tcp", 41000, 10, "b-tcp"));
	cli_create("tcp", 39000, 2, "a-tcp");

	out = ctl_out((const char *const[]){ "list", NULL }, 0);
	cr_assert(!strncmp(out, "TOKEN ", 6), "%s", out);
	a = strstr(out, "a-tcp");
	b = strstr(out, "b-tcp");
	c = strstr(out, "c-udp");
	cr_assert(a && b && c && a < b && b < c, "not by protocol and port: %s", out);
	free(out);

	out = ctl_out((const char *const[]){ "list", "--no-headers", NULL }, 0);
	cr_assert(!strstr(out, "TOKEN"), "%s", out);
	cr_assert(strstr(out, "a-tcp") && strstr(out, "a-tcp") < strchr(out, '\n'), "a-tcp is the first line: %s", out);
	free(out);

	/* wide: ports in use of the size, the netns inode lsns shows, the attached cgroup */
	fd = hold(tok_b, 41003);
	cli_cgroup("web", cg, sizeof(cg));
	{
		struct cli_result r = cli_ctl("attach", "--cgroup", cg, "--name", "b-tcp", NULL);

		CLI_ASSERT_STATUS(r, 0);
		cli_result_free(&r);
	}
	cr_assert_eq(stat("/proc/self/ns/net", &sb), 0);
	snprintf(inode, sizeof(inode), "net:[%llu]", (unsigned long long)sb.st_ino);
	out = ctl_out((const char *const[]){ "list", "-o", "wide", NULL }, 0);
	ASSERT_HAS(out, "IN-USE");
	ASSERT_HAS(out, "NETNS");
	ASSERT_HAS(out, "ATTACHED");
	b = strstr(out, "b-tcp");
	cr_assert_not_null(b);
	ASSERT_HAS(b, "1/10");
	ASSERT_HAS(b, inode);
	ASSERT_HAS(b, cg);
	ASSERT_HAS(strstr(out, "a-tcp"), "0/2");
	free(out);

	/* who: the owner and the socket, address and pid */
	out = ctl_out((const char *const[]){ "who", "41003", NULL }, 0);
	ASSERT_HAS(out, "port 41003/tcp: reservation ");
	ASSERT_HAS(out, "LOCAL");
	ASSERT_HAS(out, "127.0.0.1:41003");
	ASSERT_HAS(out, "listen");
	{
		char pid[32];

		snprintf(pid, sizeof(pid), "  %d  ", (int)getpid());
		ASSERT_HAS(out, pid);
	}
	free(out);
	out = ctl_out((const char *const[]){ "who", "41003", "--no-headers", NULL }, 0);
	cr_assert(!strstr(out, "LOCAL"), "%s", out);
	free(out);
	close(fd);
}

Test(cli_tables, json_and_jsonpath)
{
	char tok[17], want[64], *out;
	json_t *j;

	cli_create("udp", 42500, 1, "zeta");
	snprintf(tok, sizeof(tok), "%s", cli_create("tcp", 42000, 4, "alpha"));

	/* -o json is --json: sorted too, with the counters and ports in use */
	out = ctl_out((const char *const[]){ "list", "-o", "json", NULL }, 0);
	j = json_loads(out, 0, NULL);
	cr_assert_not_null(j, "%s", out);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(j, "reservations"), 0), "name")),
			 "alpha");
	cr_assert(json_is_integer(json_object_get(json_array_get(json_object_get(j, "reservations"), 0), "in_use")));
	cr_assert(json_is_object(json_object_get(json_array_get(json_object_get(j, "reservations"), 0), "stats")));
	json_decref(j);
	free(out);

	out = ctl_out((const char *const[]){ "list", "-o", "jsonpath={.reservations[*].name}", NULL }, 0);
	cr_assert_str_eq(out, "alpha zeta\n");
	free(out);
	out = ctl_out((const char *const[]){ "list", "-o",
					     "jsonpath={range .reservations[*]}{.name}:{.proto}/{.start}{\"\\n\"}{end}", NULL }, 0);
	cr_assert_str_eq(out, "alpha:tcp/42000\nzeta:udp/42500\n");
	free(out);
	out = ctl_out((const char *const[]){ "list", "-o", "jsonpath={.reservations[?(@.name==\"alpha\")].token}", NULL }, 0);
	snprintf(want, sizeof(want), "%s\n", tok);
	cr_assert_str_eq(out, want);
	free(out);
	out = ctl_out((const char *const[]){ "list", "-o", "jsonpath={.reservations[-1].count} {.nothing}", NULL }, 0);
	cr_assert_str_eq(out, "1 \n");
	free(out);
	out = ctl_out((const char *const[]){ "show", "alpha", "-o", "jsonpath={.reservation.kind}", NULL }, 0);
	cr_assert_str_eq(out, "persistent\n");
	free(out);
	/* --json before the command works too, and -o after it wins */
	out = ctl_out((const char *const[]){ "--json", "status", "-o", "jsonpath={.version}", NULL }, 0);
	cr_assert(strlen(out) > 2 && !strchr(out, '{'), "%s", out);
	free(out);

	{
		struct cli_result r = cli_ctl("list", "-o", "jsonpath={range .reservations[*]}{.name}", NULL);

		CLI_ASSERT_STATUS(r, 2);
		ASSERT_HAS(r.err, "-o jsonpath: {range} without {end}");
		cli_result_free(&r);
		r = cli_ctl("list", "-o", "yaml", NULL);
		CLI_ASSERT_STATUS(r, 2);
		ASSERT_HAS(r.err, "-o: \"yaml\" is not text, wide, json or jsonpath=TEMPLATE");
		cli_result_free(&r);
	}
}

/* The first line of text starting with want's first word equals want, spaces squeezed. */
static void expect_row(const char *text, const char *want)
{
	char first[64], line[512];
	const char *p;
	size_t n = 0;

	snprintf(first, sizeof(first), "%.*s", (int)strcspn(want, " "), want);
	p = strstr(text, first);
	cr_assert_not_null(p, "no row %s in %s", first, text);
	for (; *p && *p != '\n' && n + 1 < sizeof(line); p++)
		if (*p != ' ' || (n && line[n - 1] != ' '))
			line[n++] = *p;
	line[n] = '\0';
	cr_assert_str_eq(line, want, "in %s", text);
}

Test(cli_tables, top_iterations)
{
	char *out, *second;

	cli_create("tcp", 43000, 4, "watched");
	for (int i = 0; i < 3; i++)
		cr_assert_eq(ag_bind(IPPROTO_TCP, 43001, NULL), -EACCES);
	out = ctl_out((const char *const[]){ "top", "--iterations", "2", "--interval", "0.2", NULL }, 0);
	ASSERT_HAS(out, "portres top - ");
	ASSERT_HAS(out, "NAME/TOKEN");
	ASSERT_HAS(out, "DENIED/s");
	second = strstr(out + 1, "portres top - ");
	cr_assert_not_null(second, "two refreshes: %s", out);
	/* the first has no rates yet; both show the 3 denials so far */
	cr_assert(strstr(out, "watched") < second);
	expect_row(out, "watched tcp 43000-43003 enforce 0/4 - - - - - 3");
	expect_row(second, "watched tcp 43000-43003 enforce 0/4 0.0 0.0 0.0 0.0 0.0 3");
	free(out);

	{
		struct cli_result r = cli_ctl("top", "--iterations", "0", NULL);

		CLI_ASSERT_STATUS(r, 2);
		cli_result_free(&r);
		r = cli_ctl("top", "--iterations", "1", "--name", "nope", "--no-headers", NULL);
		CLI_ASSERT_STATUS(r, 0);
		cr_assert_str_eq(r.out, "");
		cli_result_free(&r);
	}
}
