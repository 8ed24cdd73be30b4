// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_cli_metrics.c - /metrics over HTTP: the agent's --metrics-listen
 * scraped like Prometheus does, and `portresctl metrics` telling the same.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>

#include "cli_helpers.h"

#define METRICS_PORT "19464"

static void metrics_setup(void)
{
	ag_setup();
	ag_start((const char *const[]){ "--metrics-listen", "127.0.0.1:" METRICS_PORT, NULL });
}

TestSuite(cli_metrics, .init = metrics_setup, .fini = cli_teardown, .timeout = 60);

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
