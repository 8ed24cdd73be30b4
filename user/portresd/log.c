// SPDX-License-Identifier: LGPL-2.1-or-later
/* log.c - one line per event on stderr: "portresd: level event: message" or JSON. */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "portresd.h"

static bool log_json;
static int log_verbose;

static const char *const level_names[] = { "error", "warning", "info", "debug" };

void log_setup(bool json, int verbose)
{
	log_json = json;
	log_verbose = verbose;
}

void log_msg(enum log_level lvl, const char *event, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	if (lvl == LOG_DEBUG && !log_verbose)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (log_json) {
		struct timespec ts;
		json_t *o;
		char *line;

		clock_gettime(CLOCK_REALTIME, &ts);
		o = json_pack("{s:f, s:s, s:s, s:s}", "ts", (double)ts.tv_sec + ts.tv_nsec / 1e9, "level",
			      level_names[lvl], "event", event, "msg", msg);
		line = o ? json_dumps(o, JSON_COMPACT) : NULL;
		if (line)
			fprintf(stderr, "%s\n", line);
		free(line);
		json_decref(o);
	} else {
		fprintf(stderr, "portresd: %s %s: %s\n", level_names[lvl], event, msg);
	}
}
