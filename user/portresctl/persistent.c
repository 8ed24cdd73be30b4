// SPDX-License-Identifier: LGPL-2.1-or-later
/* persistent.c - create, lookup, delete: persistent reservations (SPEC §3, §7). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "subcommands.h"

/* --proto --start --count, as parsed by range_opt(). */
struct range_args {
	const char *proto;
	const char *start_s, *count_s;
	uint16_t start, count;
};

enum { OPT_PROTO = 'p', OPT_START = 's', OPT_COUNT = 'c', OPT_NAME = 'n', OPT_TOKEN = 't', OPT_MODE = 'm',
       OPT_GRANT_UID = 0x200, OPT_GRANT_GID, OPT_GRANT_CGROUP, OPT_FORCE, OPT_DRY_RUN };

#define RANGE_OPTIONS                                           \
	{ "proto", required_argument, NULL, OPT_PROTO },        \
	{ "start", required_argument, NULL, OPT_START },        \
	{ "count", required_argument, NULL, OPT_COUNT }

static bool range_opt(int c, struct range_args *r)
{
	switch (c) {
	case OPT_PROTO: r->proto = optarg; return true;
	case OPT_START: r->start_s = optarg; return true;
	case OPT_COUNT: r->count_s = optarg; return true;
	}
	return false;
}

static bool range_given(const struct range_args *r)
{
	return r->proto || r->start_s || r->count_s;
}

/* All three given and valid; the request gets proto, start, count. */
static int range_check(struct range_args *r, json_t *req, char *what, size_t len)
{
	if (!r->proto || !r->start_s || !r->count_s)
		return ctl_bad_usage("--proto, --start and --count are all needed");
	if (ctl_parse_proto(r->proto, &r->proto) || ctl_parse_port("--start", r->start_s, false, &r->start) ||
	    ctl_parse_count(r->count_s, &r->count))
		return CTL_USAGE;
	if ((uint32_t)r->start + r->count > 65536)
		return ctl_bad_usage("--start %u --count %u goes past port 65535", r->start, r->count);
	json_object_set_new(req, "proto", json_string(r->proto));
	json_object_set_new(req, "start", json_integer(r->start));
	json_object_set_new(req, "count", json_integer(r->count));
	snprintf(what, len, "%s %s %u-%u", ctl.cmd, r->proto, r->start, r->start + r->count - 1);
	return 0;
}

static int add_grant(json_t *grants, const char *type, const char *arg)
{
	char path[PATH_MAX];
	uint64_t id;
	int err;

	if (!strcmp(type, "cgroup")) {
		if ((err = ctl_cgroup_path(arg, path, sizeof(path))))
			return ctl_bad_usage("--grant-cgroup %s: %s", arg, strerror(-err));
		json_array_append_new(grants, json_pack("{s:s, s:s}", "type", "cgroup", "path", path));
		return 0;
	}
	if (!strcmp(type, "uid") ? ctl_parse_uid(arg, &id) : ctl_parse_gid(arg, &id))
		return CTL_USAGE;
	json_array_append_new(grants, json_pack("{s:s, s:I}", "type", type, "id", (json_int_t)id));
	return 0;
}

int cmd_create(int argc, char *argv[])
{
	static const struct option opts[] = {
		RANGE_OPTIONS,
		{ "name", required_argument, NULL, OPT_NAME },
		{ "mode", required_argument, NULL, OPT_MODE },
		{ "grant-uid", required_argument, NULL, OPT_GRANT_UID },
		{ "grant-gid", required_argument, NULL, OPT_GRANT_GID },
		{ "grant-cgroup", required_argument, NULL, OPT_GRANT_CGROUP },
		CTL_NETNS_OPTION,
		CTL_COMMON_OPTIONS,
		{ 0 }
	};
	json_t *req = ctl_req("create"), *grants = json_array(), *reply;
	struct range_args r = { 0 };
	const char *name = NULL, *mode = NULL;
	char what[96];
	int c, ret = CTL_USAGE;

	while ((c = ctl_getopt(argc, argv, "hp:s:c:n:m:", opts)) != -1) {
		if (range_opt(c, &r))
			continue;
		switch (c) {
		case OPT_NAME: name = optarg; continue;
		case OPT_MODE: mode = optarg; continue;
		case OPT_GRANT_UID: if (add_grant(grants, "uid", optarg)) goto out; continue;
		case OPT_GRANT_GID: if (add_grant(grants, "gid", optarg)) goto out; continue;
		case OPT_GRANT_CGROUP: if (add_grant(grants, "cgroup", optarg)) goto out; continue;
		}
		if (ctl_common_opt(c, &ret))
			goto out;
	}
	if (optind < argc) {
		ret = ctl_bad_usage("unexpected argument \"%s\"", argv[optind]);
		goto out;
	}
	if ((ret = range_check(&r, req, what, sizeof(what))))
		goto out;
	ret = CTL_USAGE;
	if (name && ctl_parse_name(name))
		goto out;
	if (mode && ctl_parse_mode(mode))
		goto out;
	if (name)
		json_object_set_new(req, "name", json_string(name));
	if (mode)
		json_object_set_new(req, "mode", json_string(mode));
	if (json_array_size(grants))
		json_object_set(req, "grants", grants);
	ret = CTL_FAIL;
	if (!(reply = ctl_request(what, req, NULL)))
		goto out;
	if (ctl.json) {
		json_t *o = json_pack("{s:O, s:s, s:i, s:i, s:s}", "token", json_object_get(reply, "token"), "proto",
				      r.proto, "start", r.start, "count", r.count, "mode", mode ? mode : "enforce");

		if (name)
			json_object_set_new(o, "name", json_string(name));
		if (json_object_get(reply, "netns_inode"))
			json_object_set(o, "netns_inode", json_object_get(reply, "netns_inode"));
		if (json_object_get(reply, "netns_path"))
			json_object_set(o, "netns_path", json_object_get(reply, "netns_path"));
		ctl_print_json(o, false);
		json_decref(o);
	} else {
		printf("%s\n", ctl_jstr(reply, "token", ""));
	}
	json_decref(reply);
	ret = CTL_OK;
out:
	json_decref(req);
	json_decref(grants);
	return ret;
}

int cmd_lookup(int argc, char *argv[])
{
	static const struct option opts[] = {
		RANGE_OPTIONS,
		{ "name", required_argument, NULL, OPT_NAME },
		CTL_NETNS_OPTION,
		CTL_COMMON_OPTIONS,
		{ 0 }
	};
	struct range_args r = { 0 };
	const char *name = NULL;
	json_t *req, *reply;
	const char *token;
	char what[96];
	int c, ret;

	while ((c = ctl_getopt(argc, argv, "hp:s:c:n:", opts)) != -1) {
		if (range_opt(c, &r))
			continue;
		if (c == OPT_NAME) {
			name = optarg;
			continue;
		}
		if (ctl_common_opt(c, &ret))
			return ret;
	}
	if (optind < argc)
		return ctl_bad_usage("unexpected argument \"%s\"", argv[optind]);
	if (name && range_given(&r))
		return ctl_bad_usage("give --proto/--start/--count or --name, not both");
	if (name) {
		/* the lookup op takes a range; a name is looked up with show */
		if (ctl_parse_name(name))
			return CTL_USAGE;
		req = json_pack("{s:i, s:s, s:s}", "v", 1, "op", "show", "name", name);
		snprintf(what, sizeof(what), "lookup %s", name);
		reply = ctl_request(what, req, NULL);
		json_decref(req);
		if (!reply)
			return CTL_FAIL;
		token = ctl_jstr(json_object_get(reply, "reservation"), "token", "");
	} else {
		req = ctl_req("lookup");
		if ((ret = range_check(&r, req, what, sizeof(what)))) {
			json_decref(req);
			return ret;
		}
		reply = ctl_request(what, req, NULL);
		json_decref(req);
		if (!reply)
			return CTL_FAIL;
		token = ctl_jstr(reply, "token", "");
	}
	if (ctl.json) {
		json_t *o = json_pack("{s:s}", "token", token);

		ctl_print_json(o, false);
		json_decref(o);
	} else {
		printf("%s\n", token);
	}
	json_decref(reply);
	return CTL_OK;
}

int cmd_delete(int argc, char *argv[])
{
	static const struct option opts[] = {
		RANGE_OPTIONS,
		{ "name", required_argument, NULL, OPT_NAME },
		{ "token", required_argument, NULL, OPT_TOKEN },
		{ "force", no_argument, NULL, OPT_FORCE },
		{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
		CTL_NETNS_OPTION,
		CTL_COMMON_OPTIONS,
		{ 0 }
	};
	struct range_args r = { 0 };
	const char *name = NULL, *token = NULL;
	json_t *req = ctl_req("delete"), *reply, *res;
	bool force = false, dry_run = false;
	char what[96];
	int c, err, ret = CTL_USAGE;

	while ((c = ctl_getopt(argc, argv, "hp:s:c:n:t:", opts)) != -1) {
		if (range_opt(c, &r))
			continue;
		switch (c) {
		case OPT_NAME: name = optarg; continue;
		case OPT_TOKEN: token = optarg; continue;
		case OPT_FORCE: force = true; continue;
		case OPT_DRY_RUN: dry_run = true; continue;
		}
		if (ctl_common_opt(c, &ret))
			goto out;
	}
	if (optind < argc) {
		ret = ctl_bad_usage("unexpected argument \"%s\"", argv[optind]);
		goto out;
	}
	if (range_given(&r)) {
		if (name || token) {
			ret = ctl_bad_usage("give one of --proto/--start/--count, --token, --name");
			goto out;
		}
		if ((ret = range_check(&r, req, what, sizeof(what))))
			goto out;
	} else {
		if ((ret = ctl_set_selector(req, token, name, true)))
			goto out;
		snprintf(what, sizeof(what), "delete %s", token ? token : name);
	}
	json_object_set_new(req, "force", json_boolean(force));
	json_object_set_new(req, "dry_run", json_boolean(dry_run));
	reply = ctl_request(what, req, &err);
	if (!reply && err == EBUSY)
		fprintf(stderr, "%s; --force deletes it anyway.\n", dry_run ? "delete would refuse" : "Nothing changed");
	ret = reply ? CTL_OK : CTL_FAIL;
	res = json_object_get(reply, "reservation");
	if (reply && dry_run && ctl.json) {
		ctl_print_json(ctl_reply_data(reply), false);
	} else if (reply && dry_run) {
		printf("would delete %s %s %lld-%lld%s%s%s\n", ctl_jstr(res, "kind", "?"), ctl_jstr(res, "proto", "?"),
		       ctl_jint(res, "start", 0), ctl_jint(res, "start", 0) + ctl_jint(res, "count", 1) - 1,
		       json_object_get(res, "name") ? " (" : "", ctl_jstr(res, "name", ""),
		       json_object_get(res, "name") ? ")" : "");
	}
	json_decref(reply);
out:
	json_decref(req);
	return ret;
}
