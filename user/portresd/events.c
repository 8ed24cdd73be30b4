// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * events.c - the agent's event sink. Operations (ops.c, resv.c) and the data
 * plane's ring (events_from_ring) hand every event to events_emit, which
 *
 *   stamps it      "time" (UTC, RFC 3339 with ms) and the reservation's "name"
 *   keeps it       one JSON line in <state-dir>/events.log; past
 *                  --events-log-size bytes that file becomes events.log.1
 *                  (the one before is dropped), so at most twice that is kept,
 *                  across restarts
 *   delivers it    to each subscriber whose filter it passes
 *
 * The server registers subscribers (events_sub_start with its own delivery
 * function) and never gets a call from here it did not ask for; nothing here
 * knows about sockets. The events op (events_request) answers from the log.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "portresd.h"

#define EVENTS_LOG      "events.log"
#define EVENTS_LOG_OLD  "events.log.1"
#define EVENTS_TIME_LEN 32 /* "2025-01-31T12:00:00.123Z" and room */

static const char *const type_names[] = { "deny", "audit", "exhausted", "created", "deleted", "updated",
					  "acquired", "released", "attached", "detached", "ended" };
#define N_TYPES (sizeof(type_names) / sizeof(type_names[0]))

struct event_filter {
	char since[EVENTS_TIME_LEN]; /* "" or a time: events at or after it */
	long long tail;              /* the last N; -1 all */
	char *name;                  /* events of the reservation of that name, or NULL */
	unsigned types;              /* bit i: type_names[i]; 0 all */
};

struct event_sub {
	struct event_filter f;
	bool (*deliver)(void *ctx, char *text);
	void *ctx;
	struct events *sink;         /* whose list it joins */
	struct event_sub *next;
};

/* --- the log ---------------------------------------------------------------- */

static void log_path(const struct agent *a, const char *file, char *out, size_t len)
{
	snprintf(out, len, "%s/%s", a->opts.state_dir, file);
}

static void log_close(struct events *ev)
{
	if (ev->log_open)
		close(ev->log_fd);
	ev->log_open = false;
}

static int log_open(struct agent *a)
{
	struct events *ev = &a->events;
	char path[PATH_MAX];
	struct stat sb;
	int err;

	log_path(a, EVENTS_LOG, path, sizeof(path));
	ev->log_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (ev->log_fd < 0)
		return -errno;
	if (fstat(ev->log_fd, &sb)) {
		err = -errno;
		close(ev->log_fd);
		return err;
	}
	ev->log_open = true;
	ev->log_size = sb.st_size;
	return 0;
}

/* Appends one line; the file turns into events.log.1 once it would pass the size. */
static void log_write(struct agent *a, const char *text)
{
	struct events *ev = &a->events;
	size_t len = strlen(text);
	char path[PATH_MAX], old[PATH_MAX];
	int err = 0;

	if (!a->opts.events_log_size)
		return;
	if (ev->log_open && ev->log_size > 0 && (uint64_t)ev->log_size + len + 1 > a->opts.events_log_size) {
		log_close(ev);
		log_path(a, EVENTS_LOG, path, sizeof(path));
		log_path(a, EVENTS_LOG_OLD, old, sizeof(old));
		if (rename(path, old))
			err = -errno;
	}
	if (!err && !ev->log_open)
		err = log_open(a);
	if (!err) {
		struct iovec iov[2] = { { (void *)text, len }, { "\n", 1 } };
		ssize_t n = writev(ev->log_fd, iov, 2);

		if (n == (ssize_t)len + 1)
			ev->log_size += n;
		else
			err = n < 0 ? -errno : -EIO;
	}
	if (!err) {
		ev->log_failed = false;
		return;
	}
	ev->stats.dropped_log++;
	if (!ev->log_failed)
		log_msg(LOG_WARN, "events", "%s/%s: %s: events are not kept until it works again", a->opts.state_dir,
			EVENTS_LOG, strerror(-err));
	ev->log_failed = true;
}

void events_close(struct agent *a)
{
	struct events *ev = &a->events;
	struct event_sub *s;

	log_close(ev);
	while ((s = ev->subs)) {
		ev->subs = s->next;
		free(s->f.name);
		free(s);
	}
}

/* --- filters ---------------------------------------------------------------- */

static int type_bit(const char *type)
{
	for (size_t i = 0; i < N_TYPES; i++)
		if (!strcmp(type, type_names[i]))
			return (int)i;
	return -1;
}

static bool passes(const struct event_filter *f, const json_t *ev)
{
	const char *time = json_string_value(json_object_get(ev, "time"));
	const char *name = json_string_value(json_object_get(ev, "name"));
	int t = type_bit(json_string_value(json_object_get(ev, "type")) ?: "");

	/* the times are of one fixed format: they compare as strings */
	if (f->since[0] && (!time || strcmp(time, f->since) < 0))
		return false;
	if (f->name && (!name || strcmp(name, f->name)))
		return false;
	return !f->types || (t >= 0 && (f->types & (1u << t)));
}

/* "2025-01-31T12:00:00.123Z", the one form the agent writes and compares. */
static bool time_valid(const char *s)
{
	static const char form[] = "dddd-dd-ddTdd:dd:dd.dddZ";

	if (strlen(s) != sizeof(form) - 1)
		return false;
	for (size_t i = 0; form[i]; i++)
		if (form[i] == 'd' ? s[i] < '0' || s[i] > '9' : s[i] != form[i])
			return false;
	return true;
}

static int bad(char *err, size_t len, const char *msg)
{
	snprintf(err, len, "%s", msg);
	return -EINVAL;
}

static int parse_filter(const json_t *req, struct event_filter *f, char *err, size_t len)
{
	json_t *since = json_object_get(req, "since"), *tail = json_object_get(req, "tail"),
	       *name = json_object_get(req, "name"), *types = json_object_get(req, "types"), *t;
	size_t i;

	memset(f, 0, sizeof(*f));
	f->tail = -1;
	if (since && (!json_is_string(since) || !time_valid(json_string_value(since))))
		return bad(err, len, "since: a UTC time as 2025-01-31T12:00:00.000Z");
	if (since)
		strcpy(f->since, json_string_value(since));
	if (tail && (!json_is_integer(tail) || json_integer_value(tail) < 0))
		return bad(err, len, "tail: a number of events, 0 or more");
	if (tail)
		f->tail = json_integer_value(tail);
	if (name && (!json_is_string(name) || !state_name_valid(json_string_value(name))))
		return bad(err, len, "name: a reservation name");
	if (name && !(f->name = strdup(json_string_value(name))))
		return -ENOMEM;
	if (types && !json_is_array(types))
		return bad(err, len, "types: an array of event types");
	json_array_foreach(types, i, t) {
		int b = type_bit(json_string_value(t) ?: "");

		if (b < 0) {
			free(f->name);
			f->name = NULL;
			return bad(err, len, "types: each one of deny, audit, exhausted, created, deleted, updated, "
					     "acquired, released, attached, detached");
		}
		f->types |= 1u << b;
	}
	return 0;
}

/* The kept events that pass f, oldest first: the last f->tail of them. */
static json_t *history(struct agent *a, const struct event_filter *f)
{
	const char *const files[] = { EVENTS_LOG_OLD, EVENTS_LOG };
	json_t *out = json_array();
	char path[PATH_MAX], *line = NULL;
	size_t cap = 0;

	for (size_t k = 0; out && f->tail != 0 && k < 2; k++) {
		FILE *fp;
		ssize_t n;

		log_path(a, files[k], path, sizeof(path));
		if (!(fp = fopen(path, "re")))
			continue;
		while ((n = getline(&line, &cap, fp)) > 0) {
			json_t *ev = json_loadb(line, (size_t)n, 0, NULL);

			/* a line cut by a crash or a full disk is skipped */
			if (json_is_object(ev) && passes(f, ev)) {
				json_array_append(out, ev);
				if (f->tail > 0 && json_array_size(out) > (size_t)f->tail)
					json_array_remove(out, 0);
			}
			json_decref(ev);
		}
		fclose(fp);
	}
	free(line);
	return out;
}

int events_request(struct agent *a, const json_t *req, json_t **recent, struct event_sub **sub, char *err,
		   size_t len)
{
	json_t *replay = json_object_get(req, "replay"), *follow = json_object_get(req, "follow");
	struct event_filter f;
	int e;

	*recent = NULL;
	if ((replay && !json_is_boolean(replay)) || (follow && !json_is_boolean(follow)))
		return bad(err, len, "replay, follow: true or false");
	if (!json_is_false(follow) && !sub)
		return bad(err, len, "follow: not on this connection");
	if ((e = parse_filter(req, &f, err, len)))
		return e;
	if (!json_is_false(replay) && !(*recent = history(a, &f))) {
		free(f.name);
		return -ENOMEM;
	}
	if (json_is_false(replay))
		*recent = json_array();
	if (json_is_false(follow)) {
		free(f.name);
		return 0;
	}
	if (!(*sub = calloc(1, sizeof(**sub)))) {
		free(f.name);
		json_decref(*recent);
		*recent = NULL;
		return -ENOMEM;
	}
	(*sub)->f = f;
	(*sub)->sink = &a->events;
	/* history already covers since and tail: what follows is every new event */
	(*sub)->f.since[0] = '\0';
	return 0;
}

void events_sub_start(struct event_sub *s, bool (*deliver)(void *ctx, char *text), void *ctx)
{
	s->deliver = deliver;
	s->ctx = ctx;
	s->next = s->sink->subs;
	s->sink->subs = s;
}

void events_sub_free(struct event_sub *s)
{
	struct event_sub **pp;

	if (!s)
		return;
	for (pp = &s->sink->subs; *pp && *pp != s; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = s->next;
	free(s->f.name);
	free(s);
}

/* --- emitting --------------------------------------------------------------- */

/* ts_ns (CLOCK_MONOTONIC, as the data plane stamps) as a UTC time. */
static void format_time(long long ts_ns, char out[EVENTS_TIME_LEN])
{
	struct timespec mono, real;
	long long ns;
	time_t sec;
	struct tm tm;
	size_t n;

	clock_gettime(CLOCK_REALTIME, &real);
	clock_gettime(CLOCK_MONOTONIC, &mono);
	ns = (long long)real.tv_sec * 1000000000LL + real.tv_nsec -
	     ((long long)mono.tv_sec * 1000000000LL + mono.tv_nsec - ts_ns);
	sec = (time_t)(ns / 1000000000LL);
	gmtime_r(&sec, &tm);
	n = strftime(out, EVENTS_TIME_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, EVENTS_TIME_LEN - n, ".%03dZ", (int)(ns / 1000000 % 1000));
}

void events_emit(struct agent *a, json_t *event)
{
	struct events *ev = &a->events;
	char when[EVENTS_TIME_LEN], *text, *msg = NULL;
	const struct resv *r;
	uint64_t token;
	json_t *wrap;

	if (!event)
		return;
	ev->stats.emitted++;
	/* nobody to tell and no log to keep: nothing to format */
	if (!a->opts.events_log_size && !ev->subs) {
		json_decref(event);
		return;
	}
	if (!json_object_get(event, "ts_ns")) {
		struct timespec now;

		clock_gettime(CLOCK_MONOTONIC, &now);
		json_object_set_new(event, "ts_ns", json_integer((json_int_t)now.tv_sec * 1000000000 + now.tv_nsec));
	}
	format_time((long long)json_integer_value(json_object_get(event, "ts_ns")), when);
	json_object_set_new(event, "time", json_string(when));
	if (!json_object_get(event, "name") &&
	    !state_token_parse(json_string_value(json_object_get(event, "token")) ?: "", &token) &&
	    (r = resv_find(a, token)) && r->sr && r->sr->name)
		json_object_set_new(event, "name", json_string(r->sr->name));
	text = json_dumps(event, JSON_COMPACT);
	if (text)
		log_write(a, text);
	wrap = json_pack("{s:i, s:O}", "v", PROTO_VERSION, "event", event);
	msg = wrap && ev->subs ? json_dumps(wrap, JSON_COMPACT) : NULL;
	for (struct event_sub *s = ev->subs, *next; msg && s; s = next) {
		char *copy;

		/* deliver may end the subscription (a client that went away) */
		next = s->next;
		if (!passes(&s->f, event))
			continue;
		if (!(copy = strdup(msg)) || !s->deliver(s->ctx, copy))
			ev->stats.dropped_subscriber++;
	}
	free(msg);
	free(text);
	json_decref(wrap);
	json_decref(event);
}

/* --- the data plane --------------------------------------------------------- */

int events_from_ring(const struct portres_event *ev, void *arg)
{
	struct agent *a = arg;
	json_t *json;

	a->events_seen++;
	if (ev->type == PORTRES_EV_RELEASED) {
		a->released_events++;
		runtime_end(a, ev->token, "socket closed");
		return 0;
	}
	json = event_json(ev);
	/* The data plane sends up to 1000 events a second per CPU: the log gets a few, the sink all. */
	if (json && log_event_allowed(&a->log_limit))
		log_event(LOG_INFO, json_string_value(json_object_get(json, "type")), json,
			  "%s port %u pid %u (%s) uid %u token %s address %s%s%s", json_string_value(json_object_get(json, "proto")),
			  ev->port, ev->pid, json_string_value(json_object_get(json, "comm")), ev->uid,
			  json_string_value(json_object_get(json, "token")), json_string_value(json_object_get(json, "addr")) ?: "?",
			  json_object_get(json, "reason") ? " reason " : "",
			  json_string_value(json_object_get(json, "reason")) ?: "");
	events_emit(a, json);
	return 0;
}
