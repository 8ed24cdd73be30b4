// SPDX-License-Identifier: LGPL-2.1-or-later
/* metrics_http.c - GET /metrics over libmicrohttpd, in its own thread (metrics_http.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "metrics_http.h"

struct metrics_http {
	struct MHD_Daemon *mhd;
	char *(*render)(void *arg);
	void *arg;
	pthread_mutex_t lock;  /* one render at a time */
	uint16_t port;
};

static enum MHD_Result respond(struct MHD_Connection *conn, unsigned int status, char *body, const char *type)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
	enum MHD_Result ret;

	if (!resp) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result serve(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
			     const char *version, const char *upload, size_t *upload_len, void **ctx)
{
	struct metrics_http *m = cls;
	char *text;

	(void)version, (void)upload, (void)ctx;
	if (*upload_len)
		return MHD_NO; /* no body expected */
	if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
		return respond(conn, MHD_HTTP_METHOD_NOT_ALLOWED, strdup("only GET /metrics\n"), "text/plain");
	if (strcmp(url, "/metrics"))
		return respond(conn, MHD_HTTP_NOT_FOUND, strdup("portresd: see /metrics\n"), "text/plain");
	pthread_mutex_lock(&m->lock);
	text = m->render(m->arg);
	pthread_mutex_unlock(&m->lock);
	if (!text)
		return respond(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, strdup("portresd: cannot render metrics\n"),
			       "text/plain");
	return respond(conn, MHD_HTTP_OK, text, "text/plain; version=0.0.4; charset=utf-8");
}

/* "host:port", ":port" or "[v6]:port" into a socket address. */
static int parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	const char *colon = strrchr(s, ':');
	char host[INET6_ADDRSTRLEN + 2], *end;
	size_t hlen;
	long port;

	if (!colon || !colon[1])
		return -EINVAL;
	port = strtol(colon + 1, &end, 10);
	if (*end || port < 0 || port > 65535)
		return -EINVAL;
	hlen = (size_t)(colon - s);
	if (hlen >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	memset(ss, 0, sizeof(*ss));
	if (host[0] == '[') {
		struct sockaddr_in6 *sa = (struct sockaddr_in6 *)ss;

		if (hlen < 2 || host[hlen - 1] != ']')
			return -EINVAL;
		host[hlen - 1] = '\0';
		if (inet_pton(AF_INET6, host + 1, &sa->sin6_addr) != 1)
			return -EINVAL;
		sa->sin6_family = AF_INET6;
		sa->sin6_port = htons((uint16_t)port);
		*len = sizeof(*sa);
	} else {
		struct sockaddr_in *sa = (struct sockaddr_in *)ss;

		if (inet_pton(AF_INET, host[0] ? host : "0.0.0.0", &sa->sin_addr) != 1)
			return -EINVAL;
		sa->sin_family = AF_INET;
		sa->sin_port = htons((uint16_t)port);
		*len = sizeof(*sa);
	}
	return 0;
}

int metrics_http_start(const char *addr_port, char *(*render)(void *arg), void *arg, struct metrics_http **out)
{
	struct sockaddr_storage ss;
	const union MHD_DaemonInfo *info;
	struct metrics_http *m;
	socklen_t len;
	int err;

	*out = NULL;
	if (!addr_port || !render || (err = parse_addr(addr_port, &ss, &len)))
		return -EINVAL;
	if (!(m = calloc(1, sizeof(*m))))
		return -ENOMEM;
	m->render = render;
	m->arg = arg;
	pthread_mutex_init(&m->lock, NULL);
	errno = 0;
	/* stages: parse -> daemon on the address (its own thread) -> learn the port */
	m->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
					  (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0),
				  0, NULL, NULL, serve, m, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
				  MHD_OPTION_CONNECTION_LIMIT, 64U, MHD_OPTION_CONNECTION_TIMEOUT, 10U,
				  MHD_OPTION_END);
	if (!m->mhd) {
		err = errno ? -errno : -EADDRNOTAVAIL;
		pthread_mutex_destroy(&m->lock);
		free(m);
		return err;
	}
	info = MHD_get_daemon_info(m->mhd, MHD_DAEMON_INFO_BIND_PORT);
	m->port = info ? info->port : ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
								      : ((struct sockaddr_in *)&ss)->sin_port);
	*out = m;
	return 0;
}

uint16_t metrics_http_port(const struct metrics_http *m)
{
	return m ? m->port : 0;
}

void metrics_http_stop(struct metrics_http *m)
{
	if (!m)
		return;
	MHD_stop_daemon(m->mhd);
	pthread_mutex_destroy(&m->lock);
	free(m);
}
