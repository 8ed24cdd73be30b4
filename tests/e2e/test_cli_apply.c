// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_cli_apply.c - portresctl apply -f FILE against a real agent
 * (idempotence, dry run, prune, all-or-nothing on a conflict and on a
 * failure mid-way), and the planner of user/common/apply.c on its own.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apply.h"
#include "cli_helpers.h"

TestSuite(cli_apply, .init = cli_setup, .fini = cli_teardown, .timeout = 90);

static const char *file_with(const char *cg, const char *dns_mode)
{
	static char text[8192];

	snprintf(text, sizeof(text),
		 "{ \"version\": 1,\n"
		 "  \"reservations\": [\n"
		 "    { \"name\": \"web\", \"proto\": \"tcp\", \"ports\": \"40000-40009\" },\n"
		 "    { \"name\": \"dns\", \"proto\": \"udp\", \"start\": 5300, \"count\": 4, \"mode\": \"%s\",\n"
		 "      \"grants\": [ { \"type\": \"uid\", \"id\": 1000 } ] },\n"
		 "    { \"name\": \"kubelet\", \"proto\": \"tcp\", \"ports\": 10250 }\n"
		 "  ],\n"
		 "  \"attachments\": [ { \"cgroup\": \"%s\", \"reservation\": \"web\", \"confine\": true } ]\n"
		 "}\n",
		 dns_mode, cg);
	return cli_write_tmp("reservations.json", text);
}

Test(cli_apply, idempotent_dry_run_prune)
{
	char cg[4200], file[400], web_token[17], dns_token[17];
	struct cli_result r;
	json_t *l, *j;

	cli_cgroup("web", cg, sizeof(cg));
	snprintf(file, sizeof(file), "%s", file_with(cg, "audit"));

	r = cli_ctl("apply", "-f", file, NULL);
	CLI_ASSERT_STATUS(r, 0);
	cr_assert(strstr(r.out, "create web tcp 40000-40009") && strstr(r.out, "create kubelet tcp 10250") &&
		  strstr(r.out, "attach ") && strstr(r.out, "4 changes applied"), "%s", r.out);
	cli_result_free(&r);
	l = cli_list();
	cr_assert_not_null(ag_named(l, "web"));
	cr_assert_str_eq(json_string_value(json_object_get(ag_named(l, "dns"), "mode")), "audit");
	cr_assert_eq(json_integer_value(json_object_get(ag_named(l, "kubelet"), "count")), 1);
	snprintf(web_token, sizeof(web_token), "%s", json_string_value(json_object_get(ag_named(l, "web"), "token")));
	snprintf(dns_token, sizeof(dns_token), "%s", json_string_value(json_object_get(ag_named(l, "dns"), "token")));
	json_decref(l);
	j = cli_show("web");
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(j, "attachments"), 0), "path"))
			 ?: "", cg);
	json_decref(j);

	/* again: nothing to do, and it says so */
	r = cli_ctl("apply", "-f", file, NULL);
	CLI_ASSERT_STATUS(r, 0);
	cr_assert(strstr(r.out, "no changes"), "%s", r.out);
	cli_result_free(&r);
	r = cli_ctl("apply", "-f", file, "--json", NULL);
	CLI_ASSERT_STATUS(r, 0);
	j = cli_json(&r);
	cr_assert_eq(json_array_size(json_object_get(j, "changes")), 0);
	cr_assert_eq(json_integer_value(json_object_get(j, "unchanged")), 4);
	json_decref(j);
	cli_result_free(&r);

	/* a mode change: dry run shows it and changes nothing */
	snprintf(file, sizeof(file), "%s", file_with(cg, "enforce"));
	r = cli_ctl("apply", "-f", file, "--dry-run", NULL);
	CLI_ASSERT_STATUS(r, 0);
	cr_assert(strstr(r.out, "would update dns mode audit -> enforce") && strstr(r.out, "dry run"), "%s", r.out);
	cli_result_free(&r);
	l = cli_list();
	cr_assert_str_eq(json_string_value(json_object_get(ag_named(l, "dns"), "mode")), "audit");
	json_decref(l);
	r = cli_ctl("apply", "-f", file, NULL);
	CLI_ASSERT_STATUS(r, 0);
	cli_result_free(&r);
	l = cli_list();
	cr_assert_str_eq(json_string_value(json_object_get(ag_named(l, "dns"), "mode")), "enforce");
	cr_assert_str_eq(json_string_value(json_object_get(ag_named(l, "dns"), "token")), dns_token, "token changed");
	cr_assert_str_eq(json_string_value(json_object_get(ag_named(l, "web"), "token")), web_token);
	json_decref(l);

	/* prune: a named reservation the file does not list goes only with --prune */
	cli_create("tcp", 41000, 2, "old");
	cli_create("tcp", 41100, 2, NULL);
	r = cli_ctl("apply", "-f", file, NULL);
	CLI_ASSERT_STATUS(r, 0);
	cr_assert(strstr(r.out, "no changes"), "%s", r.out);
	cli_result_free(&r);
	r = cli_ctl("apply", "-f", file, "--prune", "--dry-run", NULL);
	CLI_ASSERT_STATUS(r, 0);
	cr_assert(strstr(r.out, "would delete old tcp 41000-41001"), "%s", r.out);
	cli_result_free(&r);
	r = cli_ctl("apply", "-f", file, "--prune", NULL);
	CLI_ASSERT_STATUS(r, 0);
	cli_result_free(&r);
	l = cli_list();
	cr_assert_null(ag_named(l, "old"));
	cr_assert_eq(json_array_size(json_object_get(l, "reservations")), 4, "unnamed ones stay: %s",
		     json_dumps(l, 0));
	json_decref(l);
}

Test(cli_apply, conflict_changes_nothing)
{
	static const char text[] =
		"{ \"reservations\": [\n"
		"    { \"name\": \"a\", \"proto\": \"tcp\", \"ports\": \"42000-42009\" },\n"
		"    { \"name\": \"b\", \"proto\": \"tcp\", \"ports\": \"43000-43009\" } ] }\n";
	struct cli_result r;
	const char *file;
	json_t *l;

	cli_create("tcp", 43005, 1, NULL);
	file = cli_write_tmp("conflict.json", text);
	r = cli_ctl("apply", "-f", file, NULL);
	CLI_ASSERT_STATUS(r, 1);
	cr_assert(strstr(r.err, "b (tcp 43000-43009) overlaps persistent reservation tcp 43005") &&
		  strstr(r.err, "nothing changed"), "%s", r.err);
	cli_result_free(&r);
	l = cli_list();
	cr_assert_null(ag_named(l, "a"), "a was created although the apply failed");
	cr_assert_eq(json_array_size(json_object_get(l, "reservations")), 1);
	json_decref(l);
}

Test(cli_apply, failure_midway_rolls_back)
{
	static const char text[] =
		"{ \"reservations\": [\n"
		"    { \"name\": \"first\", \"proto\": \"tcp\", \"ports\": \"44000-44009\" },\n"
		"    { \"name\": \"held\", \"proto\": \"tcp\", \"ports\": \"45000-45009\" } ] }\n";
	struct cli_result r;
	const char *file;
	int fd = -1;
	json_t *l;

	/* a socket in the second block: its create fails after the first one was done */
	cr_assert_eq(ag_bind(IPPROTO_TCP, 45003, &fd), 0);
	file = cli_write_tmp("midway.json", text);
	r = cli_ctl("apply", "-f", file, NULL);
	CLI_ASSERT_STATUS(r, 1);
	cr_assert(strstr(r.err, "create held tcp 45000-45009") && strstr(r.err, "rolled back"), "%s", r.err);
	cli_result_free(&r);
	l = cli_list();
	cr_assert_eq(json_array_size(json_object_get(l, "reservations")), 0, "left behind: %s", json_dumps(l, 0));
	json_decref(l);
	close(fd);
	/* once the port is free the same file applies */
	r = cli_ctl("apply", "-f", file, NULL);
	CLI_ASSERT_STATUS(r, 0);
	cli_result_free(&r);
}

Test(cli_apply, bad_files)
{
	static const struct {
		const char *text, *expect;
	} cases[] = {
		{ "{ \"reservations\": [ { \"name\": \"x\" ", "bad.json:1:" },
		{ "{ \"reservations\": [ { \"name\": \"x\", \"proto\": \"tcp\", \"ports\": 80, \"mdoe\": \"audit\" } ] }",
		  "unknown field \"mdoe\"" },
		{ "{ \"reservations\": [ { \"proto\": \"tcp\", \"ports\": 80 } ] }", "reservations[0].name" },
		{ "{ \"reservations\": [ { \"name\": \"x\", \"proto\": \"tcp\", \"ports\": \"90-80\" } ] }", "ports" },
		{ "{ \"reservations\": [ { \"name\": \"x\", \"proto\": \"tcp\", \"ports\": \"80-89\" },"
		  " { \"name\": \"y\", \"proto\": \"tcp\", \"ports\": 85 } ] }", "overlap" },
		{ "{ \"attachments\": [ { \"cgroup\": \"/sys/fs/cgroup/nope/nope\", \"reservation\": \"x\" } ] }",
		  "no reservation named x" },
		{ "{ \"reservations\": [ { \"name\": \"x\", \"proto\": \"tcp\", \"ports\": 80 } ],"
		  " \"attachments\": [ { \"cgroup\": \"/sys/fs/cgroup/nope/nope\", \"reservation\": \"x\" } ] }",
		  "cgroup /sys/fs/cgroup/nope/nope does not exist" },
		{ "[ 1, 2 ]", "must be a JSON object" },
	};
	struct cli_result r;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *file = cli_write_tmp("bad.json", cases[i].text);

		r = cli_ctl("apply", "-f", file, NULL);
		CLI_ASSERT_STATUS(r, 1);
		cr_assert(strstr(r.err, cases[i].expect), "case %zu: stderr lacks \"%s\": %s", i, cases[i].expect, r.err);
		cli_result_free(&r);
	}
	r = cli_ctl("apply", NULL);
	CLI_ASSERT_STATUS(r, 2);
	cli_result_free(&r);
	r = cli_ctl("apply", "-f", "/nonexistent/file.json", NULL);
	CLI_ASSERT_STATUS(r, 1);
	cr_assert(strstr(r.err, "/nonexistent/file.json"), "%s", r.err);
	cli_result_free(&r);
}

Test(cli_apply, replace_keeps_cgroups_attached)
{
	char cg[4200], old_token[17];
	struct cli_result r;
	const char *file;
	json_t *res, *att;

	snprintf(old_token, sizeof(old_token), "%s", cli_create("tcp", 47000, 5, "svc"));
	cli_cgroup("svc", cg, sizeof(cg));
	r = cli_ctl("attach", "--cgroup", cg, "--name", "svc", "--confine", NULL);
	CLI_ASSERT_STATUS(r, 0);
	cli_result_free(&r);

	/* the file moves svc to other ports: deleted, created again, its cgroup attached again */
	file = cli_write_tmp("svc.json", "{ \"reservations\": [ { \"name\": \"svc\", \"proto\": \"tcp\", \"ports\": \"47100-47109\" } ] }");
	r = cli_ctl("apply", "-f", file, NULL);
	CLI_ASSERT_STATUS(r, 0);
	cr_assert(strstr(r.out, "delete svc tcp 47000-47004") && strstr(r.out, "create svc tcp 47100-47109"), "%s", r.out);
	cli_result_free(&r);
	res = cli_show("svc");
	att = json_array_get(json_object_get(res, "attachments"), 0);
	cr_assert_eq(json_integer_value(json_object_get(res, "start")), 47100);
	cr_assert_str_neq(json_string_value(json_object_get(res, "token")), old_token);
	cr_assert_str_eq(json_string_value(json_object_get(att, "path")) ?: "", cg);
	cr_assert(json_is_true(json_object_get(att, "confine")));
	json_decref(res);
	r = cli_ctl("apply", "-f", file, NULL);
	CLI_ASSERT_STATUS(r, 0);
	cr_assert(strstr(r.out, "no changes"), "%s", r.out);
	cli_result_free(&r);
}

/* The JSON of the shipped ConfigMap (scripts/kubernetes), unindented. */
static char *configmap_json(void)
{
	char *yaml = cli_read("scripts/kubernetes/reservations-configmap.yaml"), *p, *out, *o;

	p = strstr(yaml, "reservations.json: |\n");
	cr_assert_not_null(p, "no reservations.json in the ConfigMap");
	p = strchr(p, '\n') + 1;
	out = o = calloc(1, strlen(p) + 1);
	while (!strncmp(p, "    ", 4)) {
		size_t n = strcspn(p, "\n") + 1;

		memcpy(o, p + 4, n - 4);
		o += n - 4;
		p += n;
	}
	free(yaml);
	return out;
}

Test(cli_apply, shipped_kubernetes_configmap)
{
	char *text = configmap_json();
	const char *file = cli_write_tmp("configmap.json", text);
	struct cli_result r;
	json_t *l;

	r = cli_ctl("apply", "-f", file, NULL);
	CLI_ASSERT_STATUS(r, 0);
	cli_result_free(&r);
	l = cli_list();
	cr_assert_eq(json_integer_value(json_object_get(ag_named(l, "nodeports-tcp"), "start")), 30000);
	cr_assert_eq(json_integer_value(json_object_get(ag_named(l, "nodeports-udp"), "count")), 2768);
	json_decref(l);
	/* a NodePort is refused to whoever is not tied to it */
	cr_assert_eq(ag_bind(IPPROTO_TCP, 31000, NULL), -EACCES);
	r = cli_ctl("apply", "-f", file, NULL);
	CLI_ASSERT_STATUS(r, 0);
	cr_assert(strstr(r.out, "no changes"), "%s", r.out);
	cli_result_free(&r);
	free(text);
}

/* --- the planner alone ----------------------------------------------------- */

static struct apply_file load(const char *text)
{
	char err[APPLY_ERR_LEN];
	struct apply_file f;

	cr_assert_eq(apply_file_parse(text, strlen(text), "t.json", "/cg", &f, err, sizeof(err)), 0, "%s", err);
	return f;
}

static void plan(const char *file, const char *current, bool prune, struct apply_plan *p)
{
	struct apply_opts o = { .prune = prune };
	struct apply_file f = load(file);
	char err[APPLY_ERR_LEN];
	json_t *cur = json_loads(current, 0, NULL);

	cr_assert_not_null(cur);
	cr_assert_eq(apply_plan(&f, cur, &o, p, err, sizeof(err)), 0, "%s", err);
	json_decref(cur);
	apply_file_free(&f);
}

Test(cli_apply_plan, replace_orders_delete_before_create_and_keeps_cgroups)
{
	struct apply_plan p;

	/* web moves to other ports; its cgroup /cg/a (not in the file) follows it */
	plan("{ \"reservations\": [ { \"name\": \"web\", \"proto\": \"tcp\", \"ports\": \"8000-8019\" } ] }",
	     "{ \"reservations\": [ { \"token\": \"00000000000000a1\", \"proto\": \"tcp\", \"start\": 8000, \"count\": 10,"
	     " \"kind\": \"persistent\", \"mode\": \"enforce\", \"name\": \"web\", \"grants\": [], \"netns\": 1,"
	     " \"attachments\": [ { \"path\": \"/cg/a\", \"confine\": true } ] } ] }",
	     false, &p);
	cr_assert_eq(p.n, 3);
	cr_assert_eq(p.steps[0].action, APPLY_DELETE);
	cr_assert_eq(p.steps[1].action, APPLY_CREATE);
	cr_assert_eq(p.steps[2].action, APPLY_ATTACH);
	cr_assert_str_eq(json_string_value(json_object_get(p.steps[2].req, "cgroup")), "/cg/a");
	cr_assert(json_is_true(json_object_get(p.steps[2].req, "confine")));
	/* undoing the delete creates it again with its old ports and cgroup */
	cr_assert_eq(json_integer_value(json_object_get(json_array_get(p.steps[0].undo, 0), "count")), 10);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(p.steps[0].undo, 1), "op")), "attach");
	apply_plan_free(&p);
}

Test(cli_apply_plan, other_netns_and_relative_cgroups)
{
	struct apply_plan p;

	/* a runtime block of another netns does not conflict; "a/b" is below the cgroup2 mount */
	plan("{ \"reservations\": [ { \"name\": \"x\", \"proto\": \"udp\", \"ports\": \"9000-9009\" } ],"
	     " \"attachments\": [ { \"cgroup\": \"a/b/\", \"reservation\": \"x\" } ] }",
	     "{ \"reservations\": ["
	     " { \"token\": \"00000000000000b1\", \"proto\": \"udp\", \"start\": 9005, \"count\": 1, \"kind\": \"runtime\","
	     "   \"mode\": \"enforce\", \"netns\": 2, \"netns_inode\": 4026532002, \"attachments\": [] },"
	     " { \"token\": \"00000000000000b2\", \"proto\": \"tcp\", \"start\": 1, \"count\": 1, \"kind\": \"persistent\","
	     "   \"mode\": \"enforce\", \"netns\": 1, \"netns_inode\": 4026532001, \"grants\": [], \"attachments\": [] } ] }",
	     false, &p);
	cr_assert_eq(p.n, 2);
	cr_assert_str_eq(json_string_value(json_object_get(p.steps[1].req, "cgroup")), "/cg/a/b");
	apply_plan_free(&p);
}

/* An apply_call_fn that logs the requests into arg and refuses the third. */
static int fail_third(void *arg, json_t *req, char *msg, size_t len)
{
	json_array_append(arg, req);
	if (json_array_size(arg) == 3) {
		snprintf(msg, len, "no");
		return -EADDRINUSE;
	}
	return 0;
}

Test(cli_apply_plan, execute_rolls_back_in_reverse)
{
	json_t *log = json_array();
	char err[APPLY_ERR_LEN];
	struct apply_plan p;
	size_t done;
	int e;

	plan("{ \"reservations\": [ { \"name\": \"a\", \"proto\": \"tcp\", \"ports\": 1000 },"
	     " { \"name\": \"b\", \"proto\": \"tcp\", \"ports\": 2000 }, { \"name\": \"c\", \"proto\": \"tcp\", \"ports\": 3000 } ] }",
	     "{ \"reservations\": [] }", false, &p);
	cr_assert_eq(p.n, 3);
	e = apply_execute(&p, fail_third, log, &done, err, sizeof(err));
	cr_assert_eq(e, -EADDRINUSE);
	cr_assert_eq(done, 0);
	cr_assert(strstr(err, "create c tcp 3000") && strstr(err, "2 changes rolled back"), "%s", err);
	/* create a, create b, create c (fails), delete b, delete a */
	cr_assert_eq(json_array_size(log), 5);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(log, 3), "name")), "b");
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(log, 4), "op")), "delete");
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(log, 4), "name")), "a");
	json_decref(log);
	apply_plan_free(&p);
}
