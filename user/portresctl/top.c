// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * top.c - top: the usage of every block, refreshed like watch(1): ports in
 * use of its size, and per second since the last refresh the binds it
 * allowed, denied, the ports it allocated, the times it was exhausted and
 * the foreign binds audit let through; totals of the counters alongside.
 * On a terminal the screen is redrawn; otherwise (or with --iterations N)
 * each refresh is printed after the last, which scripts and tests can read.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"
#include "subcommands.h"

enum { OPT_INTERVAL = 'd', OPT_ITERATIONS = 'n', OPT_NAME = 0x200 };

static const char *const counters[] = { "allowed", "denied", "allocated", "exhausted", "audited" };
#define N_COUNTERS (sizeof(counters) / sizeof(counters[0]))

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

/* One refresh: the table, with rates against prev (token -> stats; updated). */
static void print_round(json_t *arr, json_t *prev, double secs, const char *name, bool tty)
{
	static const char *const head[] = { "NAME/TOKEN", "PROTO", "PORTS", "MODE", "IN-USE", "ALLOWED/s", "DENIED/s",
					    "ALLOC/s", "EXHAUST/s", "AUDIT/s", "DENIED" };
	char when[32];
	time_t now = time(NULL);
	struct ctl_table *t = ctl_table_new("", 11, head);
	json_t *r;
	size_t i;

	strftime(when, sizeof(when), "%H:%M:%S", localtime(&now));
	if (tty)
		fputs("\033[H\033[2J", stdout);
	if (!ctl.no_headers)
		printf("portres top - %s - %zu reservation%s%s\n\n", when, json_array_size(arr),
		       json_array_size(arr) == 1 ? "" : "s", tty ? " - Ctrl-C quits" : "");
	json_array_foreach(arr, i, r) {
		const char *token = ctl_jstr(r, "token", "?");
		json_t *stats = json_object_get(r, "stats"), *before = json_object_get(prev, token);
		long long start = ctl_jint(r, "start", 0), count = ctl_jint(r, "count", 1);
		char ports[16], use[32], rate[N_COUNTERS][24], denied[24], who[40];
		const char *row[11];

		if (name && strcmp(ctl_jstr(r, "name", ""), name))
			continue;
		snprintf(ports, sizeof(ports), count > 1 ? "%lld-%lld" : "%lld", start, start + count - 1);
		if (ctl_jint(r, "in_use", -1) >= 0)
			snprintf(use, sizeof(use), "%lld/%lld", ctl_jint(r, "in_use", 0), count);
		else
			snprintf(use, sizeof(use), "?/%lld", count);
		if (json_object_get(r, "name"))
			snprintf(who, sizeof(who), "%s", ctl_jstr(r, "name", ""));
		else
			snprintf(who, sizeof(who), "%s", token);
		for (size_t k = 0; k < N_COUNTERS; k++) {
			long long d = ctl_jint(stats, counters[k], 0) - ctl_jint(before, counters[k], 0);

			/* the first round has nothing to compare with */
			if (!before || secs <= 0)
				snprintf(rate[k], sizeof(rate[k]), "-");
			else
				snprintf(rate[k], sizeof(rate[k]), "%.1f", (double)d / secs);
		}
		snprintf(denied, sizeof(denied), "%lld", ctl_jint(stats, "denied", 0));
		row[0] = who;
		row[1] = ctl_jstr(r, "proto", "?");
		row[2] = ports;
		row[3] = ctl_jstr(r, "mode", "?");
		row[4] = use;
		for (size_t k = 0; k < N_COUNTERS; k++)
			row[5 + k] = rate[k];
		row[10] = denied;
		ctl_table_row(t, row);
		json_object_set(prev, token, stats ? stats : json_object());
	}
	ctl_table_print(t);
	ctl_table_free(t);
	fflush(stdout);
}

static double now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int cmd_top(int argc, char *argv[])
{
	static const struct option opts[] = {
		{ "interval", required_argument, NULL, OPT_INTERVAL },
		{ "iterations", required_argument, NULL, OPT_ITERATIONS },
		{ "name", required_argument, NULL, OPT_NAME },
		CTL_COMMON_OPTIONS,
		{ 0 }
	};
	double interval = 2, last = 0;
	long long iterations = -1;
	const char *name = NULL;
	json_t *prev = json_object();
	bool tty = isatty(STDOUT_FILENO);
	int c, ret = CTL_USAGE;
	char *end;

	while ((c = ctl_getopt(argc, argv, "hd:n:", opts)) != -1) {
		switch (c) {
		case OPT_INTERVAL:
			interval = strtod(optarg, &end);
			if (*end || !(interval >= 0.1)) {
				ret = ctl_bad_usage("--interval: \"%s\" is not a number of seconds (0.1 or more)", optarg);
				goto out;
			}
			continue;
		case OPT_ITERATIONS:
			iterations = strtoll(optarg, &end, 10);
			if (*end || iterations <= 0) {
				ret = ctl_bad_usage("--iterations: \"%s\" is not a positive number", optarg);
				goto out;
			}
			/* a given number of rounds is for scripts: one after the other */
			tty = false;
			continue;
		case OPT_NAME:
			name = optarg;
			continue;
		}
		if (ctl_common_opt(c, &ret))
			goto out;
	}
	if (optind < argc) {
		ret = ctl_bad_usage("unexpected argument \"%s\"", argv[optind]);
		goto out;
	}
	if (name && ctl_parse_name(name))
		goto out;
	if (ctl.json) {
		ret = ctl_bad_usage("top is for people; scripts read `portresctl list -o json` (ports in use, counters)");
		goto out;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	ret = CTL_OK;
	for (long long i = 0; !stop && (iterations < 0 || i < iterations); i++) {
		json_t *req = ctl_req("list"), *reply;
		double now;

		json_object_set_new(req, "usage", json_true());
		reply = ctl_request("top", req, NULL);
		json_decref(req);
		if (!reply) {
			ret = CTL_FAIL;
			break;
		}
		now = now_sec();
		ctl_sort_reservations(json_object_get(reply, "reservations"));
		if (i && !tty)
			putchar('\n');
		print_round(json_object_get(reply, "reservations"), prev, last ? now - last : 0, name, tty);
		last = now;
		json_decref(reply);
		if (iterations >= 0 && i + 1 >= iterations)
			break;
		/* interrupted by a signal: stop says so */
		for (double until = now_sec() + interval; !stop && now_sec() < until;) {
			double left = until - now_sec();
			struct timespec ts = { (time_t)left, (long)((left - (double)(time_t)left) * 1e9) };

			if (left > 0)
				nanosleep(&ts, NULL);
		}
	}
out:
	json_decref(prev);
	return ret;
}
