// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_agent_log.c - the agent's log of data-plane events: one line per
 * event, JSON with --log-format json, at most LOG_EVENTS_PER_SEC lines a
 * second, the rest counted in an "N events suppressed" line; events
 * subscribers still get every event.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_helpers.h"

TestSuite(agent_log, .init = ag_setup, .fini = cli_teardown, .timeout = 90);

#define FLOOD      200
#define PER_SEC    10   /* LOG_EVENTS_PER_SEC of user/portresd/portresd.h */
#define FLOOD_PORT 42000

/* Creates an enforced reservation of FLOOD_PORT and binds it FLOOD times (each denied). */
static void flood(void)
{
	json_t *r = ag_req("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":42000,\"count\":1}", -1);

	cr_assert_str_eq(ag_errno(r), "");
	json_decref(r);
	for (int i = 0; i < FLOOD; i++)
		cr_assert_eq(ag_bind(IPPROTO_TCP, FLOOD_PORT, NULL), -EACCES);
}

/* The deny events the agent received (its recent ones: FLOOD < 256). */
static long denies_seen(void)
{
	json_t *r = ag_req("{\"v\":1,\"op\":\"events\"}", -1), *ev;
	long n = 0;
	size_t i;

	json_array_foreach(json_object_get(r, "recent"), i, ev)
		n += !strcmp(json_string_value(json_object_get(ev, "type")) ?: "", "deny");
	json_decref(r);
	return n;
}

Test(agent_log, text_rate_limited)
{
	long lines = 0, suppressed = 0, seen;
	char *log, *line, *save;

	ag_start(NULL);
	flood();
	cr_assert(ag_log_wait("events suppressed", 5000), "no suppressed line in %s", ag.log);
	seen = denies_seen();
	cr_assert_geq(seen, FLOOD - 10, "the agent saw %ld of %d denials", seen, FLOOD);
	log = cli_read(ag.log);
	for (line = strtok_r(log, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		unsigned long n;

		if (!strncmp(line, "portresd: info deny: tcp port 42000 pid ", 40))
			lines++;
		else if (sscanf(line, "portresd: warning suppressed: %lu events suppressed", &n) == 1)
			suppressed += (long)n;
	}
	free(log);
	cr_assert(lines >= 1 && lines <= 2 * PER_SEC, "%ld deny lines", lines);
	cr_assert_eq(lines + suppressed, seen, "%ld lines + %ld suppressed != %ld events", lines, suppressed, seen);
}

Test(agent_log, json_rate_limited)
{
	static const char *const extra[] = { "--log-format", "json", NULL };
	long lines = 0, suppressed = 0, seen;
	char *log, *line, *save;

	ag_start(extra);
	flood();
	cr_assert(ag_log_wait("\"event\":\"suppressed\"", 5000), "no suppressed line in %s", ag.log);
	seen = denies_seen();
	log = cli_read(ag.log);
	for (line = strtok_r(log, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		json_error_t e;
		json_t *j = json_loads(line, 0, &e);
		const char *event;

		cr_assert(j, "not JSON (%s): %s", e.text, line);
		cr_assert(json_is_string(json_object_get(j, "level")) && json_is_string(json_object_get(j, "msg")) &&
			  json_is_real(json_object_get(j, "ts")), "%s", line);
		event = json_string_value(json_object_get(j, "event")) ?: "";
		if (!strcmp(event, "deny")) {
			/* the event's own fields, for log pipelines */
			cr_assert_eq(json_integer_value(json_object_get(j, "port")), FLOOD_PORT, "%s", line);
			cr_assert_str_eq(json_string_value(json_object_get(j, "proto")) ?: "", "tcp");
			cr_assert_str_eq(json_string_value(json_object_get(j, "errno")) ?: "", "EACCES");
			cr_assert(json_is_string(json_object_get(j, "token")) && json_is_integer(json_object_get(j, "pid")));
			lines++;
		} else if (!strcmp(event, "suppressed")) {
			cr_assert_str_eq(json_string_value(json_object_get(j, "level")), "warning");
			suppressed += (long)json_integer_value(json_object_get(j, "suppressed"));
		}
		json_decref(j);
	}
	free(log);
	cr_assert(lines >= 1 && lines <= 2 * PER_SEC, "%ld deny lines", lines);
	cr_assert_eq(lines + suppressed, seen, "%ld lines + %ld suppressed != %ld events", lines, suppressed, seen);
}
