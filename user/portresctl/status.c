// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * status.c - status: the agent at a glance; metrics: its counters in the
 * Prometheus text format (--json: {"samples":[{"name","labels","value"}]}).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "subcommands.h"

/* Sends op, which takes no options but the common ones; NULL with *ret set on failure. */
static json_t *simple_request(int argc, char *argv[], const char *op, int *ret)
{
	static const struct option opts[] = { CTL_COMMON_OPTIONS, { 0 } };
	json_t *req, *reply;
	int c;

	*ret = CTL_OK;
	while ((c = ctl_getopt(argc, argv, "h", opts)) != -1)
		if (ctl_common_opt(c, ret))
			return NULL;
	if (optind < argc) {
		*ret = ctl_bad_usage("unexpected argument \"%s\"", argv[optind]);
		return NULL;
	}
	req = ctl_req(op);
	reply = ctl_request(op, req, NULL);
	json_decref(req);
	if (!reply)
		*ret = CTL_FAIL;
	return reply;
}

int cmd_status(int argc, char *argv[])
{
	json_t *reply, *res, *k;
	long long up;
	int ret;

	if (!(reply = simple_request(argc, argv, "status", &ret)))
		return ret;
	if (ctl.json) {
		ctl_print_json(ctl_reply_data(reply), false);
		json_decref(reply);
		return CTL_OK;
	}
	res = json_object_get(reply, "reservations");
	k = json_object_get(reply, "kernel");
	up = ctl_jint(reply, "uptime_s", 0);
	printf("portresd %s, pid %lld, up %lldd %02lld:%02lld:%02lld%s\n", ctl_jstr(reply, "version", "?"),
	       ctl_jint(reply, "pid", 0), up / 86400, up / 3600 % 24, up / 60 % 60, up % 60,
	       json_is_true(json_object_get(reply, "adopted")) ? ", adopted the pinned programs of an earlier agent" : "");
	printf("  socket       %s\n  cgroup root  %s\n  bpffs        %s\n  state dir    %s\n",
	       ctl_jstr(reply, "socket", "?"), ctl_jstr(reply, "cgroup", "?"), ctl_jstr(reply, "bpffs", "?"),
	       ctl_jstr(reply, "state_dir", "?"));
	printf("  reservations %lld persistent, %lld runtime (quota %lld runtime ports per uid)\n",
	       ctl_jint(res, "persistent", 0), ctl_jint(res, "runtime", 0), ctl_jint(reply, "quota", 0));
	printf("  clients      %lld connected, %lld requests served\n", ctl_jint(reply, "clients", 0),
	       ctl_jint(reply, "requests", 0));
	printf("  data plane   %lld bind decisions, %lld events sent, %lld dropped\n", ctl_jint(k, "decisions", 0),
	       ctl_jint(k, "events_sent", 0), ctl_jint(k, "events_dropped", 0));
	json_decref(reply);
	return CTL_OK;
}

/* One sample line "name{k="v",...} value" into {"name","labels","value"}; NULL if not one. */
static json_t *parse_sample(const char *line)
{
	size_t n = strspn(line, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:");
	json_t *labels = json_object(), *o;
	const char *p = line + n;
	char *name, *end;
	double v;

	if (!n)
		goto bad;
	name = strndup(line, n);
	if (*p == '{') {
		p++;
		while (*p && *p != '}') {
			size_t k = strcspn(p, "=");
			char *key = strndup(p, k), val[1024];
			size_t vl = 0;

			p += k;
			if (strncmp(p, "=\"", 2)) {
				free(key);
				free(name);
				goto bad;
			}
			for (p += 2; *p && *p != '"' && vl + 1 < sizeof(val); p++) {
				if (*p == '\\' && p[1]) {
					p++;
					val[vl++] = *p == 'n' ? '\n' : *p;
				} else {
					val[vl++] = *p;
				}
			}
			val[vl] = '\0';
			json_object_set_new(labels, key, json_string(val));
			free(key);
			if (*p == '"')
				p++;
			if (*p == ',')
				p++;
		}
		if (*p == '}')
			p++;
	}
	v = strtod(p, &end);
	if (end == p) {
		free(name);
		goto bad;
	}
	o = json_pack("{s:s, s:o, s:f}", "name", name, "labels", labels, "value", v);
	free(name);
	return o;
bad:
	json_decref(labels);
	return NULL;
}

int cmd_metrics(int argc, char *argv[])
{
	json_t *reply, *samples;
	const char *text;
	int ret;

	if (!(reply = simple_request(argc, argv, "metrics", &ret)))
		return ret;
	text = ctl_jstr(reply, "text", "");
	if (!ctl.json) {
		fputs(text, stdout);
		json_decref(reply);
		return CTL_OK;
	}
	samples = json_array();
	for (const char *line = text; *line;) {
		size_t len = strcspn(line, "\n");
		char *copy = strndup(line, len);
		json_t *s = copy && copy[0] != '#' ? parse_sample(copy) : NULL;

		if (s)
			json_array_append_new(samples, s);
		free(copy);
		line += len + (line[len] == '\n');
	}
	json_decref(reply);
	reply = json_pack("{s:o}", "samples", samples);
	ctl_print_json(reply, false);
	json_decref(reply);
	return CTL_OK;
}
