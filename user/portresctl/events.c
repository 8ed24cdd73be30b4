// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * events.c - events: what the data plane decided (deny, audit, exhausted) and
 * what changed (created, deleted, updated, acquired, released, attached,
 * detached), from the agent's events op. The agent keeps them in a bounded log
 * across restarts and filters them (--since, --tail, --name, --type); each is
 * printed as one line, with --json one object:
 *
 *   {"time":"2025-01-31T12:00:00.123Z","type":"deny","protocol":"tcp","port":8005,
 *    "family":"ipv4","address":"127.0.0.1","pid":4121,"command":"nginx","uid":0,
 *    "cgroup":"/sys/fs/cgroup/web","cgroup_id":4242,"reservation":"5f0c2a9e1b7d4c33",
 *    "name":"web","errno":"EACCES","reason":"foreign-block"}
 *
 * Without --follow the kept events are printed, then it exits; --follow
 * prints new ones as they come (and first the kept ones --since or --tail ask for).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"
#include "proto.h"
#include "subcommands.h"
#include "transport.h"

enum { OPT_FOLLOW = 'f', OPT_TAIL = 'n', OPT_COUNT = 0x200, OPT_TIMEOUT, OPT_SINCE, OPT_NAME, OPT_TYPE };

static const char *const event_types[] = { "deny", "audit", "exhausted", "created", "deleted", "updated",
					   "acquired", "released", "attached", "detached", "ended" };

/* The agent's event with the names portresctl(8) documents (command, protocol, reservation, address). */
static json_t *normalize(json_t *ev)
{
	static const struct {
		const char *from, *to;
	} renames[] = { { "comm", "command" }, { "proto", "protocol" }, { "token", "reservation" },
			{ "addr", "address" } };
	json_t *out = json_object(), *v;
	const char *key, *token = ctl_jstr(ev, "token", NULL);

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
	return out;
}

/* 127.0.0.1:8005, [::1]:8005 */
static void endpoint(const json_t *e, char *buf, size_t len)
{
	const char *addr = ctl_jstr(e, "address", NULL);
	long long port = ctl_jint(e, "port", 0);

	if (!addr)
		snprintf(buf, len, "port %lld", port);
	else if (strchr(addr, ':'))
		snprintf(buf, len, "[%s]:%lld", addr, port);
	else
		snprintf(buf, len, "%s:%lld", addr, port);
}

static void print_event(json_t *raw)
{
	json_t *e = normalize(raw);
	const char *type = ctl_jstr(e, "type", "?"), *res = ctl_jstr(e, "reservation", NULL);
	char where[80];

	if (ctl.json) {
		ctl_print_json(e, true);
		json_decref(e);
		return;
	}
	printf("%s %-9s", ctl_jstr(e, "time", "-"), type);
	if (json_object_get(e, "protocol"))
		printf(" %s", ctl_jstr(e, "protocol", ""));
	if (json_object_get(e, "count")) {
		printf(" %lld-%lld", ctl_jint(e, "start", 0), ctl_jint(e, "start", 0) + ctl_jint(e, "count", 1) - 1);
	} else if (json_object_get(e, "port")) {
		endpoint(e, where, sizeof(where));
		printf(" %s %s", where, ctl_jstr(e, "family", "?"));
	}
	if (json_object_get(e, "pid"))
		printf(" pid %lld", ctl_jint(e, "pid", 0));
	if (json_object_get(e, "command"))
		printf(" (%s)", ctl_jstr(e, "command", ""));
	if (json_object_get(e, "uid"))
		printf(" uid %lld", ctl_jint(e, "uid", 0));
	if (json_object_get(e, "cgroup"))
		printf(" cgroup %s%s", ctl_jstr(e, "cgroup", ""),
		       json_is_true(json_object_get(e, "confine")) ? " (confined)" : "");
	if (json_object_get(e, "mode"))
		printf(" mode %s", ctl_jstr(e, "mode", ""));
	if (res)
		printf(" reservation %s", res);
	if (json_object_get(e, "name"))
		printf(" (%s)", ctl_jstr(e, "name", ""));
	if (json_object_get(e, "why"))
		printf(": %s", ctl_jstr(e, "why", ""));
	if (json_object_get(e, "errno"))
		printf(": %s", ctl_jstr(e, "errno", ""));
	if (json_object_get(e, "reason"))
		printf("%s reason %s", json_object_get(e, "errno") ? "," : ":", ctl_jstr(e, "reason", ""));
	putchar('\n');
	json_decref(e);
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "90s", "10m", "1h30m", "2d": seconds; -1 if not a duration. */
static long long parse_duration(const char *s)
{
	long long total = 0;

	if (!*s)
		return -1;
	while (*s) {
		char *end;
		long long v = strtoll(s, &end, 10);

		if (end == s || v < 0)
			return -1;
		switch (*end) {
		case 's': total += v; break;
		case 'm': total += v * 60; break;
		case 'h': total += v * 3600; break;
		case 'd': total += v * 86400; break;
		default: return -1;
		}
		s = end + 1;
	}
	return total;
}

/*
 * --since: a duration back from now, or a time: 2025-01-31T12:00[:00[.123]] with Z
 * (UTC) or +hh:mm, else local time; a space may stand for the T; a date alone
 * is its midnight. Written as the agent compares times: 2025-01-31T12:00:00.000Z.
 */
static int parse_since(const char *s, char *out, size_t len)
{
	long long back = parse_duration(s), ms = 0;
	struct tm tm = { 0 };
	struct timespec now;
	const char *p;
	time_t t;

	if (back >= 0) {
		clock_gettime(CLOCK_REALTIME, &now);
		t = now.tv_sec - (time_t)back;
		ms = now.tv_nsec / 1000000;
	} else {
		if (!(p = strptime(s, "%Y-%m-%d", &tm)))
			return -1;
		if (*p == 'T' || *p == ' ') {
			if (!(p = strptime(p + 1, "%H:%M", &tm)))
				return -1;
			if (*p == ':' && !(p = strptime(p + 1, "%S", &tm)))
				return -1;
			if (*p == '.') {
				char *end;

				ms = strtoll(p + 1, &end, 10);
				for (long d = end - (p + 1); d > 3; d--)
					ms /= 10;
				for (long d = end - (p + 1); d < 3; d++)
					ms *= 10;
				p = end;
			}
		}
		if (*p == 'Z' || *p == '+' || *p == '-') {
			int hh = 0, mm = 0, sign = *p == '-' ? -1 : 1;

			if (*p != 'Z' && sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2)
				return -1;
			p += *p == 'Z' ? 1 : 6;
			t = timegm(&tm) - sign * (hh * 3600 + mm * 60);
		} else {
			tm.tm_isdst = -1;
			t = mktime(&tm);
		}
		if (*p || t == (time_t)-1)
			return -1;
	}
	gmtime_r(&t, &tm);
	snprintf(out + strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm), len - 19, ".%03lldZ", ms);
	return 0;
}

/* --type deny,audit (repeatable): the types, checked. */
static int add_types(json_t *types, const char *arg)
{
	char *copy = strdup(arg), *save = NULL;
	const size_t n = sizeof(event_types) / sizeof(event_types[0]);

	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		size_t i;
		const char *hint;

		for (i = 0; i < n && strcmp(t, event_types[i]); i++)
			;
		if (i == n) {
			hint = ctl_suggest(t, event_types, n);
			ctl_bad_usage("--type: \"%s\" is not an event type%s%s%s (deny, audit, exhausted, created, deleted, "
				      "updated, acquired, released, attached, detached)", t, hint ? "; did you mean \"" : "",
				      hint ? hint : "", hint ? "\"?" : "");
			free(copy);
			return -1;
		}
		json_array_append_new(types, json_string(t));
	}
	free(copy);
	return 0;
}

int cmd_events(int argc, char *argv[])
{
	static const struct option opts[] = {
		{ "follow", no_argument, NULL, OPT_FOLLOW },
		{ "since", required_argument, NULL, OPT_SINCE },
		{ "tail", required_argument, NULL, OPT_TAIL },
		{ "name", required_argument, NULL, OPT_NAME },
		{ "type", required_argument, NULL, OPT_TYPE },
		{ "count", required_argument, NULL, OPT_COUNT },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		CTL_COMMON_OPTIONS,
		{ 0 }
	};
	long long deadline = -1, count = -1, seen = 0, tail = -1;
	json_t *req = ctl_req("events"), *types = json_array(), *reply = NULL, *ev;
	const char *since = NULL, *name = NULL;
	bool follow = false;
	char since_utc[40];
	int c, ret = CTL_USAGE, fd = -1, err;
	char *end;
	size_t i;

	while ((c = ctl_getopt(argc, argv, "hfn:", opts)) != -1) {
		switch (c) {
		case OPT_FOLLOW:
			follow = true;
			continue;
		case OPT_SINCE:
			since = optarg;
			continue;
		case OPT_NAME:
			name = optarg;
			continue;
		case OPT_TYPE:
			if (add_types(types, optarg))
				goto out;
			continue;
		case OPT_TAIL:
		case OPT_COUNT: {
			long long v = strtoll(optarg, &end, 10);

			if (*end || !*optarg || v < (c == OPT_TAIL ? 0 : 1)) {
				ret = ctl_bad_usage("--%s: \"%s\" is not a %s number", c == OPT_TAIL ? "tail" : "count",
						    optarg, c == OPT_TAIL ? "whole" : "positive");
				goto out;
			}
			*(c == OPT_TAIL ? &tail : &count) = v;
			continue;
		}
		case OPT_TIMEOUT: {
			double sec = strtod(optarg, &end);

			if (*end || sec <= 0) {
				ret = ctl_bad_usage("--timeout: \"%s\" is not a positive number of seconds", optarg);
				goto out;
			}
			deadline = now_ms() + (long long)(sec * 1000);
			continue;
		}
		}
		if (ctl_common_opt(c, &ret))
			goto out;
	}
	if (optind < argc) {
		ret = ctl_bad_usage("unexpected argument \"%s\"", argv[optind]);
		goto out;
	}
	if (since && parse_since(since, since_utc, sizeof(since_utc))) {
		ret = ctl_bad_usage("--since: \"%s\" is neither a duration (30s, 10m, 2h, 1d) nor a time "
				    "(2025-01-31T12:00:00Z, 2025-01-31 12:00)", since);
		goto out;
	}
	if (name && ctl_parse_name(name))
		goto out;
	/* --follow shows what comes; the kept events only when --since or --tail asks */
	json_object_set_new(req, "replay", json_boolean(!follow || since || tail >= 0));
	json_object_set_new(req, "follow", json_boolean(follow));
	if (since)
		json_object_set_new(req, "since", json_string(since_utc));
	if (tail >= 0)
		json_object_set_new(req, "tail", json_integer(tail));
	if (name)
		json_object_set_new(req, "name", json_string(name));
	if (json_array_size(types))
		json_object_set(req, "types", types);
	setvbuf(stdout, NULL, _IOLBF, 0);
	ret = CTL_FAIL;
	if ((fd = ctl_connect()) < 0)
		goto out;
	if ((err = portres_transport_call(fd, req, -1, -1, &reply))) {
		ctl_fail("events: the agent at %s: %s", ctl.socket, strerror(-err));
		goto out;
	}
	if (portres_transport_error(reply)) {
		ctl_fail("events: %s", ctl_jstr(reply, "error", "refused"));
		goto out;
	}
	json_array_foreach(json_object_get(reply, "recent"), i, ev) {
		if (count >= 0 && seen >= count)
			break;
		print_event(ev);
		seen++;
	}
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
			print_event(ev);
			seen++;
		}
		json_decref(msg);
	}
out:
	json_decref(reply);
	json_decref(req);
	json_decref(types);
	if (fd >= 0)
		close(fd);
	return ret;
}
