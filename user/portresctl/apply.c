// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * apply.c - apply -f FILE: the declarative file of named persistent
 * reservations and cgroup attachments (schema and rules: user/common/apply.h).
 *
 *   read the file -> the agent's list (+ each reservation's attachments)
 *   -> plan (every conflict found first: then nothing is done)
 *   -> --dry-run prints it; else each step, rolled back if one fails.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "apply.h"
#include "cgroup.h"
#include "ctl.h"
#include "netns_path.h"
#include "proto.h"
#include "subcommands.h"
#include "transport.h"

enum { OPT_FILE = 'f', OPT_DRY_RUN = 0x200, OPT_PRUNE, OPT_FORCE };

/* The agent's reservations, each with its "attachments" (from show when list lacks them). */
static json_t *current_state(void)
{
	json_t *req, *list, *r;
	size_t i;

	req = ctl_req("list");
	list = ctl_request("apply: list", req, NULL);
	json_decref(req);
	if (!list)
		return NULL;
	json_array_foreach(json_object_get(list, "reservations"), i, r) {
		json_t *show;

		if (json_object_get(r, "attachments"))
			continue;
		req = json_pack("{s:i, s:s, s:O}", "v", PROTO_VERSION, "op", "show", "token", json_object_get(r, "token"));
		show = ctl_request("apply: show", req, NULL);
		json_decref(req);
		if (!show) {
			json_decref(list);
			return NULL;
		}
		json_object_set(r, "attachments",
				json_object_get(json_object_get(show, "reservation"), "attachments") ?: json_array());
		json_decref(show);
	}
	return list;
}

/* apply_call_fn over our connection: quiet, the message goes back to apply_execute. */
static int call_agent(void *arg, json_t *req, char *err, size_t len)
{
	const char *netns = json_string_value(json_object_get(req, "netns"));
	char path[PATH_MAX];
	int *fd = arg, e, nsfd = -1;
	json_t *reply;

	/* the file names the netns: it goes along opened (proto.h) */
	if (netns && (nsfd = netns_spec_open(netns, path, sizeof(path), err, len)) < 0)
		return nsfd;
	e = portres_transport_call(*fd, req, nsfd, -1, &reply);
	if (nsfd >= 0)
		close(nsfd);
	if (e) {
		snprintf(err, len, "the agent at %s: %s", ctl.socket, strerror(-e));
		return e;
	}
	if ((e = portres_transport_error(reply)))
		snprintf(err, len, "%s", ctl_jstr(reply, "error", "refused"));
	json_decref(reply);
	return -e;
}

/* refused: why prune would refuse (holders), or NULL */
static void print_json(const struct apply_plan *plan, bool dry_run, size_t applied, const char *refused)
{
	json_t *o = json_pack("{s:b, s:[], s:I, s:I, s:s*}", "dry_run", dry_run, "changes", "unchanged",
			      (json_int_t)plan->unchanged, "applied", (json_int_t)applied, "refused", refused);
	json_t *changes = json_object_get(o, "changes");

	for (size_t i = 0; i < plan->n; i++)
		json_array_append_new(changes, json_pack("{s:s, s:s, s:O}", "action",
							 apply_action_name(plan->steps[i].action), "description",
							 plan->steps[i].desc, "request", plan->steps[i].req));
	ctl_print_json(o, false);
	json_decref(o);
}

/* Prune would delete reservations in use: the holders, and how to go ahead anyway. */
static int refuse_busy(const char *file, const char *why, bool dry_run)
{
	ctl_fail("apply %s: %s", file, why);
	fprintf(stderr, "%s; --force deletes them anyway.\n",
		dry_run ? "These reservations are in use: apply would refuse" : "Nothing changed");
	return CTL_FAIL;
}

int cmd_apply(int argc, char *argv[])
{
	static const struct option opts[] = {
		{ "file", required_argument, NULL, OPT_FILE },
		{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
		{ "prune", no_argument, NULL, OPT_PRUNE },
		{ "force", no_argument, NULL, OPT_FORCE },
		CTL_COMMON_OPTIONS,
		{ 0 }
	};
	struct apply_opts ao = { .check_cgroups = true };
	char err[APPLY_ERR_LEN], busy_err[APPLY_ERR_LEN];
	struct apply_file f = { 0 };
	struct apply_plan plan = { 0 };
	const char *file = NULL;
	json_t *current = NULL;
	struct stat sb;
	bool dry_run = false;
	size_t done = 0;
	int c, ret, e, busy, fd = -1;

	while ((c = ctl_getopt(argc, argv, "hf:", opts)) != -1) {
		switch (c) {
		case OPT_FILE: file = optarg; continue;
		case OPT_DRY_RUN: dry_run = true; continue;
		case OPT_PRUNE: ao.prune = true; continue;
		case OPT_FORCE: ao.force = true; continue;
		}
		if (ctl_common_opt(c, &ret))
			return ret;
	}
	if (optind < argc)
		return ctl_bad_usage("unexpected argument \"%s\"", argv[optind]);
	if (!file)
		return ctl_bad_usage("-f FILE is needed");
	if (apply_file_load(file, cgroup2_mount(), &f, err, sizeof(err)) ||
	    apply_file_resolve_netns(&f, file, err, sizeof(err))) {
		apply_file_free(&f);
		return ctl_fail("apply: %s", err);
	}
	/* reservations without "netns" go where this process lives */
	if (!stat("/proc/self/ns/net", &sb))
		ao.netns_inode = (uint64_t)sb.st_ino;
	ret = CTL_FAIL;
	if (!(current = current_state()))
		goto out;
	if (apply_plan(&f, current, &ao, &plan, err, sizeof(err))) {
		ctl_fail("apply %s: %s; nothing changed", file, err);
		goto out;
	}
	if (plan.n && (fd = ctl_connect()) < 0)
		goto out;
	/* reservations to prune that are in use: refused, named with their holders, dry run or not */
	busy = plan.n ? apply_check_holders(&plan, call_agent, &fd, busy_err, sizeof(busy_err)) : 0;
	ret = CTL_OK;
	if (!plan.n || dry_run) {
		if (ctl.json) {
			print_json(&plan, dry_run, 0, busy ? busy_err : NULL);
		} else if (!plan.n) {
			printf("no changes: %zu reservation%s and attachment%s already as %s says\n", plan.unchanged,
			       plan.unchanged == 1 ? "" : "s", plan.unchanged == 1 ? "" : "s", file);
		} else {
			for (size_t i = 0; i < plan.n; i++)
				printf("would %s\n", plan.steps[i].desc);
			printf("%zu change%s, %zu unchanged (dry run: nothing done)\n", plan.n, plan.n == 1 ? "" : "s",
			       plan.unchanged);
		}
		if (busy)
			ret = refuse_busy(file, busy_err, true);
		goto out;
	}
	if (busy) {
		ret = refuse_busy(file, busy_err, false);
		goto out;
	}
	if ((e = apply_execute(&plan, call_agent, &fd, &done, err, sizeof(err)))) {
		ret = ctl_fail("apply %s: %s", file, err);
		goto out;
	}
	if (ctl.json) {
		print_json(&plan, false, done, NULL);
	} else {
		for (size_t i = 0; i < plan.n; i++)
			printf("%s\n", plan.steps[i].desc);
		printf("%zu change%s applied, %zu unchanged\n", plan.n, plan.n == 1 ? "" : "s", plan.unchanged);
	}
out:
	if (fd >= 0)
		close(fd);
	apply_plan_free(&plan);
	json_decref(current);
	apply_file_free(&f);
	return ret;
}
