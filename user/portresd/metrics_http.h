/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * metrics_http.h - the HTTP endpoint of `portresd --metrics-listen ADDR:PORT`:
 * GET (or HEAD) /metrics answers with the Prometheus text that render()
 * returns; any other path is 404, any other method 405.
 *
 * ADDR:PORT is "127.0.0.1:9464", ":9464" (every IPv4 address), or
 * "[::1]:9464" for IPv6; port 0 picks a free port (metrics_http_port tells).
 *
 * The server runs its own thread (libmicrohttpd's internal polling thread):
 * render(arg) is called from that thread, one call at a time, and must
 * return a malloc'd NUL-terminated string (NULL: 500). The caller makes what
 * render reads safe to read from another thread (or renders a snapshot).
 */
#ifndef PORTRESD_METRICS_HTTP_H
#define PORTRESD_METRICS_HTTP_H

#include <stdint.h>

struct metrics_http;

/* 0, or -EINVAL (bad ADDR:PORT), -EADDRINUSE/-errno (cannot listen), -ENOMEM. */
int metrics_http_start(const char *addr_port, char *(*render)(void *arg), void *arg, struct metrics_http **out);
/* The port listened on (useful after port 0). */
uint16_t metrics_http_port(const struct metrics_http *m);
/* Stops the server and waits for its thread; NULL is fine. */
void metrics_http_stop(struct metrics_http *m);

#endif /* PORTRESD_METRICS_HTTP_H */
