// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * show.c - list, show, who: what is reserved, which ports are in use and by
 * whom. --json prints the agent's reply (without "v" and "ok"); each socket
 * carries the path of its cgroup ("cgroup") when it can be found.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "state.h"
#include "subcommands.h"

enum { OPT_NAME = 'n', OPT_TOKEN = 't', OPT_PROTO = 'p' };

/* The agent gives each socket's cgroup path; an older agent only its id, which is looked up here. */
static void add_cgroup_paths(json_t *sockets)
{
	size_t i;
	json_t *s;

	json_array_foreach(sockets, i, s) {
		const char *path;

		if (json_is_string(json_object_get(s, "cgroup")))
			continue;
		if ((path = ctl_cgroup_from_id((uint64_t)ctl_jint(s, "cgroup_id", 0))))
			json_object_set_new(s, "cgroup", json_string(path));
	}
}

/* 127.0.0.1:8005, [::]:8005 (as ss prints them) */
static void local_address(const json_t *s, char *buf, size_t len)
{
	const char *addr = ctl_jstr(s, "addr", NULL);

	if (!addr)
		snprintf(buf, len, "*:%lld", ctl_jint(s, "port", 0));
	else
		snprintf(buf, len, strchr(addr, ':') ? "[%s]:%lld" : "%s:%lld", addr, ctl_jint(s, "port", 0));
}

/* "4121,4122" and "nginx" (each command once) of every process holding the socket. */
static void processes(const json_t *s, char *pids, size_t plen, char *comms, size_t clen)
{
	json_t *procs = json_object_get(s, "processes"), *p;
	size_t i, pn = 0, cn = 0;

	pids[0] = comms[0] = '\0';
	if (!json_array_size(procs) && json_object_get(s, "pid")) {
		snprintf(pids, plen, "%lld", ctl_jint(s, "pid", 0));
		snprintf(comms, clen, "%s", ctl_jstr(s, "comm", ""));
		return;
	}
	json_array_foreach(procs, i, p) {
		const char *comm = ctl_jstr(p, "comm", "?");
		const char *at = strstr(comms, comm);
		size_t l = strlen(comm);

		if (pn < plen)
			pn += (size_t)snprintf(pids + pn, plen - pn, "%s%lld", i ? "," : "", ctl_jint(p, "pid", 0));
		if (!(at && (at == comms || at[-1] == ',') && (at[l] == ',' || !at[l])) && cn < clen)
			cn += (size_t)snprintf(comms + cn, clen - cn, "%s%s", cn ? "," : "", comm);
	}
}

/* The sockets of a block (sorted by the agent as ss sorts them), as a table. */
static void print_sockets(const json_t *sockets)
{
	static const char *const head[] = { "PROTO", "LOCAL", "STATE", "PIDS", "COMMAND", "UID", "CGROUP", "INODE" };
	struct ctl_table *t;
	size_t i, ncols = ctl.wide ? 8 : 7;
	json_t *s;

	if (!json_is_array(sockets)) {
		printf("  sockets: unknown (the agent could not list them)\n");
		return;
	}
	if (!json_array_size(sockets)) {
		printf("  sockets: none\n");
		return;
	}
	t = ctl_table_new("  ", ncols, head);
	json_array_foreach(sockets, i, s) {
		char local[80], pids[256], comms[256], uid[16], inode[24];
		const char *row[8];

		local_address(s, local, sizeof(local));
		processes(s, pids, sizeof(pids), comms, sizeof(comms));
		snprintf(uid, sizeof(uid), "%lld", ctl_jint(s, "uid", -1));
		snprintf(inode, sizeof(inode), "%lld", ctl_jint(s, "inode", 0));
		row[0] = ctl_jstr(s, "proto", "?");
		row[1] = local;
		row[2] = ctl_jstr(s, "state", "");
		row[3] = pids;
		row[4] = comms;
		row[5] = uid;
		row[6] = ctl_jstr(s, "cgroup", "");
		row[7] = inode;
		ctl_table_row(t, row);
	}
	ctl_table_print(t);
	ctl_table_free(t);
}

/* "tcp 8000-8009 persistent enforce" (+ " name web" / " owner pid 42") */
static void resv_line(const json_t *r, char *buf, size_t len)
{
	long long start = ctl_jint(r, "start", 0), count = ctl_jint(r, "count", 0);
	int n;

	n = snprintf(buf, len, "%s %lld", ctl_jstr(r, "proto", "?"), start);
	if (count > 1)
		n += snprintf(buf + n, len - (size_t)n, "-%lld", start + count - 1);
	n += snprintf(buf + n, len - (size_t)n, " %s %s", ctl_jstr(r, "kind", "?"), ctl_jstr(r, "mode", "?"));
	if (json_object_get(r, "name"))
		snprintf(buf + n, len - (size_t)n, " name %s", ctl_jstr(r, "name", ""));
	else if (json_object_get(r, "owner_pid"))
		snprintf(buf + n, len - (size_t)n, " owner pid %lld", ctl_jint(r, "owner_pid", 0));
}

/* Its network namespace as lsns and ip netns name it: a path, net:[inode], else the agent's cookie. */
static void netns_str(const json_t *r, char *buf, size_t len)
{
	if (json_object_get(r, "netns_path"))
		snprintf(buf, len, "%s", ctl_jstr(r, "netns_path", ""));
	else if (json_object_get(r, "netns_inode"))
		snprintf(buf, len, "net:[%lld]", ctl_jint(r, "netns_inode", 0));
	else
		snprintf(buf, len, "cookie %lld", ctl_jint(r, "netns", 0));
}

/* By protocol (tcp first), then first port: the order ss and the tables use. */
static int resv_cmp(const void *pa, const void *pb)
{
	const json_t *a = *(json_t *const *)pa, *b = *(json_t *const *)pb;
	int c = strcmp(ctl_jstr(a, "proto", ""), ctl_jstr(b, "proto", ""));
	long long sa = ctl_jint(a, "start", 0), sb = ctl_jint(b, "start", 0);

	return c ? c : (sa > sb) - (sa < sb);
}

void ctl_sort_reservations(json_t *arr)
{
	size_t n = json_array_size(arr);
	json_t **v = n ? calloc(n, sizeof(*v)) : NULL;

	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		v[i] = json_incref(json_array_get(arr, i));
	qsort(v, n, sizeof(*v), resv_cmp);
	json_array_clear(arr);
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, v[i]);
	free(v);
}

int cmd_list(int argc, char *argv[])
{
	static const struct option opts[] = { CTL_NETNS_OPTION, CTL_COMMON_OPTIONS, { 0 } };
	static const char *const head[] = { "TOKEN", "PROTO", "PORTS", "KIND", "MODE", "NAME/OWNER",
					    "IN-USE", "NETNS", "ATTACHED" };
	json_t *req, *reply, *r, *arr;
	struct ctl_table *t;
	size_t i;
	int c, ret;

	while ((c = ctl_getopt(argc, argv, "h", opts)) != -1)
		if (ctl_common_opt(c, &ret))
			return ret;
	if (optind < argc)
		return ctl_bad_usage("unexpected argument \"%s\"", argv[optind]);
	req = ctl_req("list");
	/* the wide table and scripts' JSON get ports in use, counters and netns inodes */
	if (ctl.wide || ctl.json)
		json_object_set_new(req, "usage", json_true());
	reply = ctl_request("list", req, NULL);
	json_decref(req);
	if (!reply)
		return CTL_FAIL;
	arr = json_object_get(reply, "reservations");
	ctl_sort_reservations(arr);
	if (ctl.json) {
		ctl_print_json(ctl_reply_data(reply), false);
		json_decref(reply);
		return CTL_OK;
	}
	if (!json_array_size(arr)) {
		printf("no reservations\n");
		json_decref(reply);
		return CTL_OK;
	}
	t = ctl_table_new("", ctl.wide ? 9 : 6, head);
	json_array_foreach(arr, i, r) {
		long long start = ctl_jint(r, "start", 0), count = ctl_jint(r, "count", 1), end = start + count - 1;
		char ports[16], owner[40] = "", use[32], netns[300], cgs[2048] = "";
		const char *row[9];
		json_t *x;
		size_t k, n = 0;

		snprintf(ports, sizeof(ports), end > start ? "%lld-%lld" : "%lld", start, end);
		if (json_object_get(r, "name"))
			snprintf(owner, sizeof(owner), "%s", ctl_jstr(r, "name", ""));
		else if (json_object_get(r, "owner_pid"))
			snprintf(owner, sizeof(owner), "pid %lld", ctl_jint(r, "owner_pid", 0));
		if (ctl_jint(r, "in_use", -1) >= 0)
			snprintf(use, sizeof(use), "%lld/%lld", ctl_jint(r, "in_use", 0), count);
		else
			snprintf(use, sizeof(use), "?/%lld", count);
		netns_str(r, netns, sizeof(netns));
		json_array_foreach(json_object_get(r, "attachments"), k, x)
			if (n < sizeof(cgs))
				n += (size_t)snprintf(cgs + n, sizeof(cgs) - n, "%s%s%s", k ? "," : "",
						      ctl_jstr(x, "path", "?"),
						      json_is_true(json_object_get(x, "confine")) ? "(confined)" : "");
		row[0] = ctl_jstr(r, "token", "?");
		row[1] = ctl_jstr(r, "proto", "?");
		row[2] = ports;
		row[3] = ctl_jstr(r, "kind", "?");
		row[4] = ctl_jstr(r, "mode", "?");
		row[5] = owner;
		row[6] = use;
		row[7] = netns;
		row[8] = cgs;
		ctl_table_row(t, row);
	}
	ctl_table_print(t);
	ctl_table_free(t);
	json_decref(reply);
	return CTL_OK;
}

/* TOKEN or NAME: a token when it is one of the agent's, else a name. */
static int positional_selector(json_t *req, const char *arg)
{
	uint64_t t;

	if (!state_token_parse(arg, &t)) {
		json_t *lreq = ctl_req("list"), *reply = ctl_request("show", lreq, NULL), *r;
		bool found = false;
		size_t i;

		json_decref(lreq);
		if (!reply)
			return CTL_FAIL;
		json_array_foreach(json_object_get(reply, "reservations"), i, r) {
			uint64_t rt;

			if (!state_token_parse(ctl_jstr(r, "token", ""), &rt) && rt == t)
				found = true;
		}
		json_decref(reply);
		if (found || !state_name_valid(arg))
			return ctl_set_selector(req, arg, NULL, true);
	}
	if (!state_name_valid(arg))
		return ctl_bad_usage("\"%s\" is neither a token (16 hex digits) nor a name", arg);
	return ctl_set_selector(req, NULL, arg, true);
}

int cmd_show(int argc, char *argv[])
{
	static const struct option opts[] = {
		{ "name", required_argument, NULL, OPT_NAME },
		{ "token", required_argument, NULL, OPT_TOKEN },
		CTL_NETNS_OPTION,
		CTL_COMMON_OPTIONS,
		{ 0 }
	};
	const char *name = NULL, *token = NULL, *arg;
	json_t *req = ctl_req("show"), *reply = NULL, *r, *x;
	char what[96], line[128];
	int c, ret = CTL_USAGE;
	size_t i;

	while ((c = ctl_getopt(argc, argv, "hn:t:", opts)) != -1) {
		if (c == OPT_NAME || c == OPT_TOKEN) {
			*(c == OPT_NAME ? &name : &token) = optarg;
			continue;
		}
		if (ctl_common_opt(c, &ret))
			goto out;
	}
	if (argc - optind > 1 || (argc - optind == 1 && (name || token))) {
		ret = ctl_bad_usage("name one reservation: TOKEN, NAME, --token or --name");
		goto out;
	}
	arg = optind < argc ? argv[optind] : token ? token : name;
	if (optind < argc)
		ret = positional_selector(req, arg);
	else
		ret = ctl_set_selector(req, token, name, true);
	if (ret)
		goto out;
	snprintf(what, sizeof(what), "show %s", arg);
	ret = CTL_FAIL;
	if (!(reply = ctl_request(what, req, NULL)))
		goto out;
	r = json_object_get(reply, "reservation");
	add_cgroup_paths(json_object_get(r, "sockets"));
	ret = CTL_OK;
	if (ctl.json) {
		ctl_print_json(ctl_reply_data(reply), false);
		goto out;
	}
	resv_line(r, line, sizeof(line));
	printf("reservation %s: %s\n", ctl_jstr(r, "token", "?"), line);
	if (json_is_true(json_object_get(r, "dead")))
		printf("  ended: its socket is closed, the agent is removing it\n");
	/* a namespace named by a path is not the agent's: worth saying */
	if (ctl.wide || json_object_get(r, "netns_path")) {
		char netns[300];

		netns_str(r, netns, sizeof(netns));
		printf("  netns: %s\n", netns);
	}
	json_array_foreach(json_object_get(r, "grants"), i, x) {
		if (json_object_get(x, "path"))
			printf("  grant: cgroup %s\n", ctl_jstr(x, "path", ""));
		else
			printf("  grant: %s %lld\n", ctl_jstr(x, "type", "?"), ctl_jint(x, "id", 0));
	}
	json_array_foreach(json_object_get(r, "attachments"), i, x)
		printf("  attached: %s%s\n", ctl_jstr(x, "path", "?"),
		       json_is_string(json_object_get(x, "confine")) ? " (confined, all protocols)"
		       : json_is_true(json_object_get(x, "confine")) ? " (confined)" : "");
	x = json_object_get(r, "stats");
	if (x)
		printf("  counters: allowed %lld, denied %lld, allocated %lld, exhausted %lld, audited %lld\n",
		       ctl_jint(x, "allowed", 0), ctl_jint(x, "denied", 0), ctl_jint(x, "allocated", 0),
		       ctl_jint(x, "exhausted", 0), ctl_jint(x, "audited", 0));
	print_sockets(json_object_get(r, "sockets"));
out:
	json_decref(reply);
	json_decref(req);
	return ret;
}

int cmd_who(int argc, char *argv[])
{
	static const struct option opts[] = {
		{ "proto", required_argument, NULL, OPT_PROTO },
		CTL_NETNS_OPTION,
		CTL_COMMON_OPTIONS,
		{ 0 }
	};
	const char *proto = NULL;
	json_t *req, *reply, *r;
	char what[64], line[128];
	uint16_t port;
	int c, ret;
	size_t i;

	while ((c = ctl_getopt(argc, argv, "hp:", opts)) != -1) {
		if (c == OPT_PROTO) {
			proto = optarg;
			continue;
		}
		if (ctl_common_opt(c, &ret))
			return ret;
	}
	if (argc - optind != 1)
		return ctl_bad_usage("give one PORT");
	if (ctl_parse_port("PORT", argv[optind], false, &port) || (proto && ctl_parse_proto(proto, &proto)))
		return CTL_USAGE;
	req = json_pack("{s:i, s:s, s:i}", "v", 1, "op", "who", "port", port);
	if (proto)
		json_object_set_new(req, "proto", json_string(proto));
	snprintf(what, sizeof(what), "who %u", port);
	reply = ctl_request(what, req, NULL);
	json_decref(req);
	if (!reply)
		return CTL_FAIL;
	add_cgroup_paths(json_object_get(reply, "sockets"));
	if (ctl.json) {
		ctl_print_json(ctl_reply_data(reply), false);
		json_decref(reply);
		return CTL_OK;
	}
	if (!json_array_size(json_object_get(reply, "reservations")))
		printf("port %u%s%s: no reservation\n", port, proto ? "/" : "", proto ? proto : "");
	json_array_foreach(json_object_get(reply, "reservations"), i, r) {
		resv_line(r, line, sizeof(line));
		printf("port %u/%s: reservation %s: %s\n", port, ctl_jstr(r, "proto", "?"), ctl_jstr(r, "token", "?"),
		       line);
	}
	print_sockets(json_object_get(reply, "sockets"));
	json_decref(reply);
	return CTL_OK;
}
