// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * log.c - one line per event on stderr: "portresd: level event: message" or
 * JSON ({"ts","level","event","msg"} plus the event's own fields).
 *
 * Data-plane events are rate-limited here (the data plane itself sends up
 * to 1000 a second per CPU): LOG_EVENTS_PER_SEC lines in each one-second
 * window, then one "N events suppressed" line when the window is over.
 */
#include <jansson.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "portresd.h"

/*
 * The process's logger, like openlog(3): set once by log_setup before
 * anything logs, read-only after; every file logs without an agent at hand.
 */
static bool log_json;
static int log_verbose;

static const char *const level_names[] = { "error", "warning", "info", "debug" };

/* lines held for log_flush */
#define LOG_HELD_MAX (64 * 1024)
static bool log_holding;
static char log_held[LOG_HELD_MAX];
static size_t log_held_len;

void log_flush(void)
{
	size_t off = 0;

	fflush(stderr);
	while (off < log_held_len) {
		ssize_t n = write(STDERR_FILENO, log_held + off, log_held_len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	log_held_len = 0;
}

void log_hold(bool on)
{
	if (!on)
		log_flush();
	log_holding = on;
}

/* One whole line to stderr, or to the held lines (a line longer than they hold goes at once). */
static void put_line(const char *line)
{
	size_t len = strlen(line);

	if (!log_holding) {
		fputs(line, stderr);
		return;
	}
	if (len > LOG_HELD_MAX - log_held_len)
		log_flush();
	if (len > LOG_HELD_MAX) {
		fputs(line, stderr);
		fflush(stderr);
		return;
	}
	memcpy(log_held + log_held_len, line, len);
	log_held_len += len;
}

void log_setup(bool json, int verbose)
{
	log_json = json;
	log_verbose = verbose;
}

int log_verbosity(void)
{
	return log_verbose;
}

/*
 * One line per event: a message of several lines (the holders of a port, one
 * a line) gets "; " between them, or a space after a colon.
 */
static void one_line(char *msg, size_t len)
{
	char out[1024];
	size_t n = 0;

	for (const char *r = msg; *r && n + 2 < sizeof(out); r++) {
		if (*r != '\n') {
			out[n++] = *r;
			continue;
		}
		while (r[1] == ' ')
			r++;
		if (n && out[n - 1] != ':')
			out[n++] = ';';
		out[n++] = ' ';
	}
	out[n] = '\0';
	snprintf(msg, len, "%s", out);
}

static void vlog(enum log_level lvl, const char *event, const json_t *fields, const char *fmt, va_list ap)
{
	char msg[1024];

	if (lvl == LOG_DEBUG && !log_verbose)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (!log_json)
		one_line(msg, sizeof(msg));
	if (log_json) {
		struct timespec ts;
		json_t *o;
		char *line;

		clock_gettime(CLOCK_REALTIME, &ts);
		o = json_pack("{s:f, s:s, s:s, s:s}", "ts", (double)ts.tv_sec + ts.tv_nsec / 1e9, "level",
			      level_names[lvl], "event", event, "msg", msg);
		if (o && fields)
			json_object_update_missing(o, (json_t *)fields);
		line = o ? json_dumps(o, JSON_COMPACT) : NULL;
		if (line) {
			put_line(line);
			put_line("\n");
		}
		free(line);
		json_decref(o);
	} else {
		char text[1200];

		snprintf(text, sizeof(text), "portresd: %s %s: %s\n", level_names[lvl], event, msg);
		put_line(text);
	}
}

void log_msg(enum log_level lvl, const char *event, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(lvl, event, NULL, fmt, ap);
	va_end(ap);
}

void log_event(enum log_level lvl, const char *event, const json_t *fields, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(lvl, event, fields, fmt, ap);
	va_end(ap);
}

/* --- rate limit of data-plane events --------------------------------------- */

static bool window_over(const struct log_limit *l, const struct timespec *now)
{
	return now->tv_sec - l->window.tv_sec > 1 ||
	       (now->tv_sec - l->window.tv_sec == 1 && now->tv_nsec >= l->window.tv_nsec);
}

static void report(struct log_limit *l)
{
	json_t *f;

	if (!l->suppressed)
		return;
	f = json_pack("{s:I, s:i}", "suppressed", (json_int_t)l->suppressed, "limit_per_sec", LOG_EVENTS_PER_SEC);
	log_event(LOG_WARN, "suppressed", f,
		  "%lu events suppressed (deny/audit/exhausted: at most %d lines a second; "
		  "events subscribers and counters have them all)", l->suppressed, LOG_EVENTS_PER_SEC);
	json_decref(f);
	l->suppressed = 0;
}

bool log_event_allowed(struct log_limit *l)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	if (window_over(l, &now)) {
		report(l);
		l->window = now;
		l->in_window = 0;
	}
	if (l->in_window < LOG_EVENTS_PER_SEC) {
		l->in_window++;
		return true;
	}
	l->suppressed++;
	return false;
}

void log_events_flush(struct log_limit *l, bool force)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	if (l->suppressed && (force || window_over(l, &now)))
		report(l);
}
