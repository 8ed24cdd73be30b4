// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * events.c - events: what the data plane decided (deny, audit, exhausted) and
 * what changed (created, deleted, acquired), from the agent's events
 * subscription. Each event is printed as one line, with --json one object:
 *
 *   {"time":"2025-01-31T12:00:00.123Z","type":"deny","pid":4121,"command":"nginx",
 *    "uid":0,"cgroup":"/sys/fs/cgroup/web","cgroup_id":4242,"protocol":"tcp",
 *    "port":8005,"family":"ipv4","reservation":"5f0c2a9e1b7d4c33","name":"web",
 *    "errno":"EACCES"}
 *
 * Without --follow only the agent's recent events are printed (the "recent"
 * array of its reply, when it keeps one).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"
#include "state.h"
#include "subcommands.h"
#include "transport.h"

enum { OPT_FOLLOW = 'f', OPT_COUNT = 'n', OPT_TIMEOUT = 0x200 };

static json_t *names;      /* token -> name of the named reservations */
static time_t names_time;

static void refresh_names(void)
{
	json_t *req = ctl_req("list"), *reply, *r;
	size_t i;

	names_time = time(NULL);
	reply = ctl_request("events: list", req, NULL);
	json_decref(req);
	if (!reply)
		return;
	json_object_clear(names);
	json_array_foreach(json_object_get(reply, "reservations"), i, r)
		if (json_object_get(r, "name"))
			json_object_set(names, ctl_jstr(r, "token", ""), json_object_get(r, "name"));
	json_decref(reply);
}

static const char *name_of(const char *token)
{
	json_t *n = json_object_get(names, token);

	/* a reservation we have not seen yet: ask again, at most once a second */
	if (!n && time(NULL) != names_time && strcmp(token, "0000000000000000")) {
		refresh_names();
		n = json_object_get(names, token);
	}
	return json_string_value(n);
}

/* ts_ns is CLOCK_MONOTONIC (the kernel's); 0: now. */
static void format_time(long long ts_ns, char *buf, size_t len)
{
	struct timespec mono, real;
	long long ns;
	time_t sec;
	struct tm tm;
	size_t n;

	clock_gettime(CLOCK_REALTIME, &real);
	ns = (long long)real.tv_sec * 1000000000LL + real.tv_nsec;
	if (ts_ns > 0) {
		clock_gettime(CLOCK_MONOTONIC, &mono);
		ns -= (long long)mono.tv_sec * 1000000000LL + mono.tv_nsec - ts_ns;
	}
	sec = (time_t)(ns / 1000000000LL);
	gmtime_r(&sec, &tm);
	n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, len - n, ".%03dZ", (int)(ns / 1000000 % 1000));
}

/* The agent's event with the names of SPEC §7 (time, command, protocol, reservation, cgroup). */
static json_t *normalize(json_t *ev)
{
	static const struct {
		const char *from, *to;
	} renames[] = { { "comm", "command" }, { "proto", "protocol" }, { "token", "reservation" } };
	json_t *out = json_object(), *v;
	const char *key, *token = ctl_jstr(ev, "token", NULL), *name, *cg;
	char when[40];

	format_time(ctl_jint(ev, "ts_ns", 0), when, sizeof(when));
	json_object_set_new(out, "time", json_string(when));
	json_object_foreach(ev, key, v) {
		const char *to = key;

		if (!strcmp(key, "ts_ns") || !strcmp(key, "netns") || !strcmp(key, "err") ||
		    (!strcmp(key, "errno") && !strcmp(json_string_value(v) ? json_string_value(v) : "", "")))
			continue;
		for (size_t i = 0; i < sizeof(renames) / sizeof(renames[0]); i++)
			if (!strcmp(key, renames[i].from))
				to = renames[i].to;
		json_object_set(out, to, v);
	}
	if (token && !strcmp(token, "0000000000000000"))
		json_object_set_new(out, "reservation", json_null());
	else if (token && (name = name_of(token)))
		json_object_set_new(out, "name", json_string(name));
	/* the agent names the cgroup itself; an older one only gives its id */
	if (!json_object_get(out, "cgroup") && (cg = ctl_cgroup_from_id((uint64_t)ctl_jint(ev, "cgroup_id", 0))))
		json_object_set_new(out, "cgroup", json_string(cg));
	return out;
}

static void print_event(json_t *raw)
{
	json_t *e = normalize(raw);
	const char *type = ctl_jstr(e, "type", "?"), *res = ctl_jstr(e, "reservation", NULL);

	if (ctl.json) {
		ctl_print_json(e, true);
		json_decref(e);
		return;
	}
	printf("%s %-9s %s", ctl_jstr(e, "time", ""), type, ctl_jstr(e, "protocol", "?"));
	if (json_object_get(e, "count"))
		printf(" %lld-%lld", ctl_jint(e, "start", 0), ctl_jint(e, "start", 0) + ctl_jint(e, "count", 1) - 1);
	else
		printf(" port %lld", ctl_jint(e, "port", 0));
	if (json_object_get(e, "pid"))
		printf(" pid %lld", ctl_jint(e, "pid", 0));
	if (json_object_get(e, "command"))
		printf(" (%s)", ctl_jstr(e, "command", ""));
	if (json_object_get(e, "uid"))
		printf(" uid %lld", ctl_jint(e, "uid", 0));
	if (json_object_get(e, "cgroup"))
		printf(" cgroup %s", ctl_jstr(e, "cgroup", ""));
	if (res)
		printf(" reservation %s", res);
	if (json_object_get(e, "name"))
		printf(" (%s)", ctl_jstr(e, "name", ""));
	if (json_object_get(e, "errno"))
		printf(": %s", ctl_jstr(e, "errno", ""));
	putchar('\n');
	json_decref(e);
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int cmd_events(int argc, char *argv[])
{
	static const struct option opts[] = {
		{ "follow", no_argument, NULL, OPT_FOLLOW },
		{ "count", required_argument, NULL, OPT_COUNT },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		CTL_COMMON_OPTIONS,
		{ 0 }
	};
	long long deadline = -1, count = -1, seen = 0;
	bool follow = false;
	json_t *req, *reply = NULL, *ev;
	int c, ret, fd, err;
	char *end;
	size_t i;

	while ((c = ctl_getopt(argc, argv, "hfn:", opts)) != -1) {
		switch (c) {
		case OPT_FOLLOW:
			follow = true;
			continue;
		case OPT_COUNT:
			count = strtoll(optarg, &end, 10);
			if (*end || count <= 0)
				return ctl_bad_usage("--count: \"%s\" is not a positive number", optarg);
			continue;
		case OPT_TIMEOUT: {
			double sec = strtod(optarg, &end);

			if (*end || sec <= 0)
				return ctl_bad_usage("--timeout: \"%s\" is not a positive number of seconds", optarg);
			deadline = now_ms() + (long long)(sec * 1000);
			continue;
		}
		}
		if (ctl_common_opt(c, &ret))
			return ret;
	}
	if (optind < argc)
		return ctl_bad_usage("unexpected argument \"%s\"", argv[optind]);
	setvbuf(stdout, NULL, _IOLBF, 0);
	names = json_object();
	refresh_names();
	if ((fd = ctl_connect()) < 0) {
		json_decref(names);
		return CTL_FAIL;
	}
	ret = CTL_FAIL;
	req = ctl_req("events");
	err = portres_transport_call(fd, req, -1, -1, &reply);
	json_decref(req);
	if (err) {
		ctl_fail("events: the agent at %s: %s", ctl.socket, strerror(-err));
		goto out;
	}
	if (!json_is_true(json_object_get(reply, "ok"))) {
		ctl_fail("events: %s", ctl_jstr(reply, "error", "refused"));
		goto out;
	}
	json_array_foreach(json_object_get(reply, "recent"), i, ev) {
		if (count >= 0 && seen >= count)
			break;
		print_event(ev);
		seen++;
	}
	if (!follow && !json_object_get(reply, "recent"))
		fprintf(stderr, "portresctl: events: this agent keeps no recent events; --follow shows new ones\n");
	ret = CTL_OK;
	while (follow && (count < 0 || seen < count)) {
		long long left = deadline < 0 ? -1 : deadline - now_ms();
		json_t *msg;

		if (deadline >= 0 && left <= 0)
			break;
		err = portres_transport_recv(fd, &msg, (int)(left < 0 ? -1 : left));
		if (err == -ETIMEDOUT)
			break;
		if (err) {
			ret = ctl_fail("events: the agent at %s: %s", ctl.socket,
				       err == -ECONNRESET ? "closed the connection" : strerror(-err));
			break;
		}
		if ((ev = json_object_get(msg, "event"))) {
			const char *type = ctl_jstr(ev, "type", "");

			if (!strcmp(type, "created") || !strcmp(type, "deleted"))
				names_time = 0; /* names may have changed */
			print_event(ev);
			seen++;
		}
		json_decref(msg);
	}
out:
	json_decref(reply);
	json_decref(names);
	close(fd);
	return ret;
}
