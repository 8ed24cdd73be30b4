// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_cli_metrics.c - /metrics over HTTP: the agent's --metrics-listen
 * scraped like Prometheus does, `portresctl metrics` telling the same, and
 * the metrics_http server (user/portresd/metrics_http.c) on its own.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_helpers.h"
/* Not part of any library the tests link: compiled in here. */
#include "../../user/portresd/metrics_http.c"

#define METRICS_PORT "19464"

static void metrics_setup(void)
{
	ag_setup();
	ag_start((const char *const[]){ "--metrics-listen", "127.0.0.1:" METRICS_PORT, NULL });
}

TestSuite(cli_metrics, .init = metrics_setup, .fini = cli_teardown, .timeout = 60);
TestSuite(cli_metrics_http, .init = ag_setup, .fini = cli_teardown, .timeout = 60);

Test(cli_metrics, scrape_matches_cli)
{
	struct cli_result r;
	char *body = NULL;
	int status;

	cli_create("tcp", 46000, 10, "scraped");
	cr_assert_eq(ag_bind(IPPROTO_TCP, 46001, NULL), -EACCES);

	status = cli_http_get(19464, "/metrics", &body);
	cr_assert_eq(status, 200, "GET /metrics: %d", status);
	cr_assert(strstr(body, "# TYPE portres_reservations gauge"), "%s", body);
	cr_assert(strstr(body, "portres_reservations{kind=\"persistent\"} 1"), "%s", body);
	cr_assert(strstr(body, "name=\"scraped\"} 1") && strstr(body, "portres_denied_total{"), "%s", body);
	free(body);

	r = cli_ctl("metrics", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert(strstr(r.out, "portres_reservations{kind=\"persistent\"} 1"), "%s", r.out);
	cr_assert(strstr(r.out, "portres_denied_total{") && strstr(r.out, "name=\"scraped\"} 1"), "%s", r.out);
	cli_result_free(&r);

	cr_assert_eq(cli_http_get(19464, "/other", &body), 404);
	free(body);
}

static char *render(void *arg)
{
	int *calls = arg;
	char *s;

	(*calls)++;
	return asprintf(&s, "# TYPE test_calls_total counter\ntest_calls_total %d\n", *calls) < 0 ? NULL : s;
}

static char *render_fails(void *arg)
{
	(void)arg;
	return NULL;
}

Test(cli_metrics_http, serves_render)
{
	struct metrics_http *m = NULL;
	int calls = 0;
	char *body = NULL;
	uint16_t port;

	cr_assert_eq(metrics_http_start("127.0.0.1:0", render, &calls, &m), 0);
	cr_assert_neq(metrics_http_port(m), 0);
	cr_assert_eq(cli_http_get(metrics_http_port(m), "/metrics", &body), 200);
	cr_assert_str_eq(body, "# TYPE test_calls_total counter\ntest_calls_total 1\n");
	free(body);
	cr_assert_eq(cli_http_get(metrics_http_port(m), "/metrics", &body), 200);
	cr_assert(strstr(body, "test_calls_total 2"), "%s", body);
	free(body);
	cr_assert_eq(cli_http_get(metrics_http_port(m), "/", &body), 404);
	free(body);
	cr_assert_eq(calls, 2, "render is called for /metrics only");
	port = metrics_http_port(m);
	metrics_http_stop(m);
	cr_assert_eq(cli_http_get(port, "/metrics", &body), 0, "still served after stop");

	/* IPv6 */
	cr_assert_eq(metrics_http_start("[::1]:0", render, &calls, &m), 0);
	cr_assert_neq(metrics_http_port(m), 0);
	metrics_http_stop(m);

	/* a failing render is a 500, not a crash */
	cr_assert_eq(metrics_http_start(":0", render_fails, NULL, &m), 0);
	cr_assert_eq(cli_http_get(metrics_http_port(m), "/metrics", &body), 500);
	free(body);
	metrics_http_stop(m);
	metrics_http_stop(NULL);
}

Test(cli_metrics_http, bad_addresses)
{
	static const char *const bad[] = { "", "9090", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "1.2.3:80",
					   "[::1:80", "localhost:x" };
	struct metrics_http *m = (struct metrics_http *)1;
	int calls = 0, fd = -1;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(metrics_http_start(bad[i], render, &calls, &m), -EINVAL, "\"%s\" accepted", bad[i]);
		cr_assert_null(m);
	}
	/* a port in use */
	cr_assert_eq(ag_bind(IPPROTO_TCP, 19465, &fd), 0);
	cr_assert_lt(metrics_http_start("127.0.0.1:19465", render, &calls, &m), 0);
	cr_assert_null(m);
	close(fd);
}
