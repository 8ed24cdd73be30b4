// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * attach.c - attach, detach: tie a cgroup subtree to a reservation (SPEC §4.1).
 * A relative --cgroup is taken below the cgroup2 mount ("system.slice/x"),
 * or from the current directory when it starts with ./ or ../.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "ctl.h"
#include "subcommands.h"

enum { OPT_CGROUP = 'g', OPT_NAME = 'n', OPT_TOKEN = 't', OPT_CONFINE = 0x200, OPT_FORCE };

static int cgroup_arg(const char *arg, char *path, size_t len)
{
	struct stat sb;
	int err;

	if (!arg)
		return ctl_bad_usage("--cgroup PATH is needed");
	if ((err = ctl_cgroup_path(arg, path, len)))
		return ctl_bad_usage("--cgroup %s: %s", arg, strerror(-err));
	if (stat(path, &sb) || !S_ISDIR(sb.st_mode))
		return ctl_fail("%s: cgroup %s does not exist", ctl.cmd, path);
	return 0;
}

int cmd_attach(int argc, char *argv[])
{
	static const struct option opts[] = {
		{ "cgroup", required_argument, NULL, OPT_CGROUP },
		{ "name", required_argument, NULL, OPT_NAME },
		{ "token", required_argument, NULL, OPT_TOKEN },
		{ "confine", optional_argument, NULL, OPT_CONFINE },
		{ "force", no_argument, NULL, OPT_FORCE },
		CTL_COMMON_OPTIONS,
		{ 0 }
	};
	const char *cgroup = NULL, *name = NULL, *token = NULL;
	json_t *req = ctl_req("attach"), *reply, *confine = json_false(), *replaced;
	char path[PATH_MAX], what[PATH_MAX + 32];
	bool force = false;
	int c, ret = CTL_USAGE;

	while ((c = ctl_getopt(argc, argv, "hg:n:t:", opts)) != -1) {
		switch (c) {
		case OPT_CGROUP: cgroup = optarg; continue;
		case OPT_NAME: name = optarg; continue;
		case OPT_TOKEN: token = optarg; continue;
		case OPT_FORCE: force = true; continue;
		case OPT_CONFINE:
			/* --confine: the protocols the cgroup has blocks for; --confine=all: every one */
			json_decref(confine);
			if (optarg && strcmp(optarg, "all")) {
				ret = ctl_bad_usage("--confine=%s: only --confine or --confine=all", optarg);
				goto out;
			}
			confine = optarg ? json_string("all") : json_true();
			continue;
		}
		if (ctl_common_opt(c, &ret))
			goto out;
	}
	if (optind < argc) {
		ret = ctl_bad_usage("unexpected argument \"%s\"", argv[optind]);
		goto out;
	}
	if ((ret = ctl_set_selector(req, token, name, true)) || (ret = cgroup_arg(cgroup, path, sizeof(path))))
		goto out;
	json_object_set_new(req, "cgroup", json_string(path));
	json_object_set(req, "confine", confine);
	if (force)
		json_object_set_new(req, "force", json_true());
	snprintf(what, sizeof(what), "attach %s", path);
	reply = ctl_request(what, req, NULL);
	ret = reply ? CTL_OK : CTL_FAIL;
	replaced = json_object_get(reply, "replaced");
	if (replaced && ctl.json) {
		ctl_print_json(ctl_reply_data(reply), false);
	} else if (replaced) {
		long long start = ctl_jint(replaced, "start", 0);

		printf("replaced %s %lld-%lld (%s%stoken %s)\n", ctl_jstr(replaced, "proto", "?"), start,
		       start + ctl_jint(replaced, "count", 1) - 1, ctl_jstr(replaced, "name", ""),
		       json_object_get(replaced, "name") ? ", " : "", ctl_jstr(replaced, "token", "?"));
	}
	json_decref(reply);
out:
	json_decref(confine);
	json_decref(req);
	return ret;
}

int cmd_detach(int argc, char *argv[])
{
	static const struct option opts[] = {
		{ "cgroup", required_argument, NULL, OPT_CGROUP },
		{ "name", required_argument, NULL, OPT_NAME },
		{ "token", required_argument, NULL, OPT_TOKEN },
		CTL_COMMON_OPTIONS,
		{ 0 }
	};
	char path[PATH_MAX], what[PATH_MAX + 32];
	const char *cgroup = NULL, *name = NULL, *token = NULL;
	json_t *req, *reply;
	int c, ret, err;

	while ((c = ctl_getopt(argc, argv, "hg:n:t:", opts)) != -1) {
		switch (c) {
		case OPT_CGROUP: cgroup = optarg; continue;
		case OPT_NAME: name = optarg; continue;
		case OPT_TOKEN: token = optarg; continue;
		}
		if (ctl_common_opt(c, &ret))
			return ret;
	}
	if (optind < argc)
		return ctl_bad_usage("unexpected argument \"%s\"", argv[optind]);
	if (!cgroup)
		return ctl_bad_usage("--cgroup PATH is needed");
	/* a removed cgroup can still be detached: no existence check here */
	if ((err = ctl_cgroup_path(cgroup, path, sizeof(path))))
		return ctl_bad_usage("--cgroup %s: %s", cgroup, strerror(-err));
	req = json_pack("{s:i, s:s, s:s}", "v", 1, "op", "detach", "cgroup", path);
	if ((ret = ctl_set_selector(req, token, name, false))) {
		json_decref(req);
		return ret;
	}
	snprintf(what, sizeof(what), "detach %s", path);
	reply = ctl_request(what, req, NULL);
	json_decref(req);
	ret = reply ? CTL_OK : CTL_FAIL;
	json_decref(reply);
	return ret;
}
