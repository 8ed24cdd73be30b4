// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * metrics.c - Prometheus text of the agent's and the data plane's counters,
 * for the metrics op and for --metrics-listen ADDR:PORT (libmicrohttpd driven
 * from the agent's own epoll loop: no thread).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "portresd.h"

struct buf {
	char *p;
	size_t len, cap;
	bool oom;
};

static void put(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if (b->p && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = (b->cap ? b->cap * 2 : 4096) + (size_t)n;
		char *np = realloc(b->p, cap);

		if (!np) {
			b->oom = true;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
}

char *metrics_text(struct agent *a)
{
	static const struct {
		const char *name, *help;
		size_t off;
	} per_resv[] = {
		{ "allowed", "binds into the block by its holders", offsetof(struct portres_stats, allowed) },
		{ "denied", "binds refused because of this block", offsetof(struct portres_stats, denied) },
		{ "allocated", "ports chosen from the block (bind 0, connect)", offsetof(struct portres_stats, allocated) },
		{ "exhausted", "no free port when one was asked for", offsetof(struct portres_stats, exhausted) },
		{ "audited", "foreign binds let through by mode audit", offsetof(struct portres_stats, audited) },
	};
	struct portres_gstats g = { 0 };
	struct buf b = { 0 };
	size_t persistent = a->n_persistent;

	portres_global_stats(a->loader, &g);
	put(&b, "# HELP portres_reservations Reservations held, by kind.\n# TYPE portres_reservations gauge\n");
	put(&b, "portres_reservations{kind=\"persistent\"} %zu\n", persistent);
	put(&b, "portres_reservations{kind=\"runtime\"} %zu\n", a->n_resv - persistent);
	put(&b, "# HELP portres_decisions_total Bind decisions taken by the data plane.\n# TYPE portres_decisions_total counter\n");
	put(&b, "portres_decisions_total %llu\n", (unsigned long long)g.decisions);
	put(&b, "# HELP portres_events_total Events of the data plane, sent or dropped.\n# TYPE portres_events_total counter\n");
	put(&b, "portres_events_total{outcome=\"sent\"} %llu\n", (unsigned long long)g.events_sent);
	put(&b, "portres_events_total{outcome=\"dropped\"} %llu\n", (unsigned long long)g.events_dropped);
	put(&b, "# HELP portres_events_dropped_total Events lost: the data plane's ring was full or over its rate "
		"(kernel), a subscriber read too slowly (subscriber), the events log could not be written (log).\n"
		"# TYPE portres_events_dropped_total counter\n");
	put(&b, "portres_events_dropped_total{stage=\"kernel\"} %llu\n", (unsigned long long)g.events_dropped);
	put(&b, "portres_events_dropped_total{stage=\"subscriber\"} %llu\n",
	    (unsigned long long)a->events.stats.dropped_subscriber);
	put(&b, "portres_events_dropped_total{stage=\"log\"} %llu\n", (unsigned long long)a->events.stats.dropped_log);
	put(&b, "# HELP portres_agent_requests_total Requests served by portresd.\n# TYPE portres_agent_requests_total counter\n");
	put(&b, "portres_agent_requests_total{outcome=\"ok\"} %llu\n", (unsigned long long)(a->requests - a->errors));
	put(&b, "portres_agent_requests_total{outcome=\"error\"} %llu\n", (unsigned long long)a->errors);
	put(&b, "# HELP portres_agent_clients Connected clients.\n# TYPE portres_agent_clients gauge\n");
	put(&b, "portres_agent_clients %zu\n", a->n_clients);
	for (size_t k = 0; k < sizeof(per_resv) / sizeof(per_resv[0]); k++) {
		put(&b, "# HELP portres_%s_total Per reservation: %s.\n# TYPE portres_%s_total counter\n",
		    per_resv[k].name, per_resv[k].help, per_resv[k].name);
		struct resv *r, *tmp;

		resv_foreach(a, r, tmp) {
			const struct state_resv *sr = r->sr;
			struct portres_stats s = { 0 };
			uint64_t v;

			portres_resv_stats(a->loader, r->token, &s);
			memcpy(&v, (const char *)&s + per_resv[k].off, sizeof(v));
			put(&b, "portres_%s_total{token=\"%016llx\",proto=\"%s\",start=\"%u\",count=\"%u\",name=\"%s\"} %llu\n",
			    per_resv[k].name, (unsigned long long)r->token, state_proto_name(r->r.proto), r->r.start,
			    r->r.count, sr && sr->name ? sr->name : "", (unsigned long long)v);
		}
	}
	if (b.oom) {
		free(b.p);
		return NULL;
	}
	return b.p ? b.p : strdup("");
}

static enum MHD_Result serve(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
			     const char *version, const char *upload, size_t *upload_len, void **ctx)
{
	struct agent *a = cls;
	struct MHD_Response *resp;
	enum MHD_Result ret;
	unsigned int status = MHD_HTTP_OK;
	char *text;

	if (strcmp(method, "GET") && strcmp(method, "HEAD"))
		return MHD_NO;
	if (strcmp(url, "/metrics")) {
		text = strdup("portresd: see /metrics\n");
		status = MHD_HTTP_NOT_FOUND;
	} else {
		text = metrics_text(a);
	}
	if (!text)
		return MHD_NO;
	resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(text);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4");
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

int metrics_start(struct agent *a, int *fd)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	char host[64];
	const char *colon = strrchr(a->opts.metrics_listen, ':');
	const union MHD_DaemonInfo *info;
	long port;

	if (!colon || (size_t)(colon - a->opts.metrics_listen) >= sizeof(host))
		return -EINVAL;
	memcpy(host, a->opts.metrics_listen, (size_t)(colon - a->opts.metrics_listen));
	host[colon - a->opts.metrics_listen] = '\0';
	port = strtol(colon + 1, NULL, 10);
	if (port <= 0 || port > 65535 || inet_pton(AF_INET, host[0] ? host : "0.0.0.0", &sa.sin_addr) != 1)
		return -EINVAL;
	sa.sin_port = htons((uint16_t)port);
	a->mhd = MHD_start_daemon(MHD_USE_EPOLL, (uint16_t)port, NULL, NULL, serve, a, MHD_OPTION_SOCK_ADDR, &sa,
				  MHD_OPTION_CONNECTION_LIMIT, 64U, MHD_OPTION_CONNECTION_TIMEOUT, 10U, MHD_OPTION_END);
	if (!a->mhd)
		return -EADDRNOTAVAIL;
	info = MHD_get_daemon_info(a->mhd, MHD_DAEMON_INFO_EPOLL_FD);
	if (!info) {
		metrics_stop(a);
		return -ENOTSUP;
	}
	*fd = info->epoll_fd;
	log_msg(LOG_INFO, "metrics", "serving http://%s/metrics", a->opts.metrics_listen);
	return 0;
}

void metrics_run(struct agent *a)
{
	if (a->mhd)
		MHD_run(a->mhd);
}

void metrics_stop(struct agent *a)
{
	if (a->mhd)
		MHD_stop_daemon(a->mhd);
	a->mhd = NULL;
}
