// SPDX-License-Identifier: LGPL-2.1-or-later
/* ctl.c - portresctl's shared pieces: options, the agent connection, errors, parsing. */
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cgroup.h"
#include "ctl.h"
#include "msg.h"
#include "netns_path.h"
#include "portres.h"
#include "proto.h"
#include "state.h"
#include "subcommands.h"

struct ctl_opts ctl = { .netns_fd = -1 };

static int agent_fd = -1;

/* --- usage and errors ----------------------------------------------------- */

void ctl_usage(const char *cmd, bool to_stderr)
{
	FILE *f = to_stderr ? stderr : stdout;

	for (size_t i = 0; i < n_subcommands; i++) {
		const struct subcommand *s = &subcommands[i];

		if (strcmp(s->name, cmd))
			continue;
		fprintf(f, "usage: portresctl %s\n%s\n", s->usage, s->description);
		fprintf(f, "common options: --socket PATH (or $%s), --json, -h/--help\n", PORTRES_SOCKET_ENV);
		if (s->example)
			fprintf(f, "example:\n  %s\n", s->example);
		return;
	}
}

int ctl_fail(const char *fmt, ...)
{
	va_list ap;

	fputs("portresctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return CTL_FAIL;
}

int ctl_bad_usage(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "portresctl: %s: ", ctl.cmd ? ctl.cmd : "usage");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'portresctl help%s%s'.\n", ctl.cmd ? " " : "", ctl.cmd ? ctl.cmd : "");
	return CTL_USAGE;
}

bool ctl_common_opt(int c, int *status)
{
	switch (c) {
	case CTL_OPT_JSON:
		ctl.json = true;
		return false;
	case CTL_OPT_SOCKET:
		ctl.socket = optarg;
		return false;
	case CTL_OPT_NETNS: {
		char err[512];
		int fd = netns_spec_open(optarg, ctl.netns_path, sizeof(ctl.netns_path), err, sizeof(err));

		if (fd < 0) {
			ctl_bad_usage("--netns %s", err);
			*status = CTL_USAGE;
			return true;
		}
		if (ctl.netns_fd >= 0)
			close(ctl.netns_fd);
		ctl.netns_fd = fd;
		return false;
	}
	case 'h':
		ctl_usage(ctl.cmd, false);
		*status = CTL_OK;
		return true;
	}
	/* getopt already said what was wrong */
	fprintf(stderr, "Try 'portresctl help %s'.\n", ctl.cmd);
	*status = CTL_USAGE;
	return true;
}

/* --- the agent ------------------------------------------------------------ */

int ctl_connect(void)
{
	int fd = msg_connect(ctl.socket);

	if (fd >= 0)
		return fd;
	if (fd == -ECONNREFUSED)
		ctl_fail("no agent at %s (start portresd)", ctl.socket);
	else if (fd == -ENAMETOOLONG)
		ctl_fail("socket path too long: %s", ctl.socket);
	else
		ctl_fail("cannot reach the agent at %s: %s", ctl.socket, strerror(-fd));
	return -1;
}

void ctl_disconnect(void)
{
	if (agent_fd >= 0)
		close(agent_fd);
	agent_fd = -1;
}

int ctl_recv(int fd, json_t **msg, int timeout_ms)
{
	return msg_recv(fd, msg, timeout_ms);
}

int ctl_transact_fd(int fd, json_t *req, int passfd, json_t **reply)
{
	int err = msg_send(fd, req, passfd);

	json_decref(req);
	*reply = NULL;
	return err ? err : msg_recv(fd, reply, -1);
}

/* True when req's op takes a network namespace (proto.h). */
static bool takes_netns(const json_t *req)
{
	const char *op = json_string_value(json_object_get(req, "op"));

	for (int i = 0; op && i < PROTO_OP__COUNT; i++)
		if (!strcmp(op, proto_op_name((enum proto_op)i)))
			return proto_op_takes_netns((enum proto_op)i);
	return false;
}

int ctl_transact(int fd, json_t *req, json_t **reply)
{
	if (ctl.netns_fd < 0 || !takes_netns(req))
		return ctl_transact_fd(fd, req, -1, reply);
	if (!json_object_get(req, "netns"))
		json_object_set_new(req, "netns", json_string(ctl.netns_path));
	return ctl_transact_fd(fd, req, ctl.netns_fd, reply);
}

const char *ctl_reply_errno(const json_t *reply)
{
	return ctl_jstr(reply, "errno", "");
}

json_t *ctl_req(const char *op)
{
	return json_pack("{s:i, s:s}", "v", PROTO_VERSION, "op", op);
}

/* The agent's message without a leading "<what's object>: " or "<object> " that we print already. */
static const char *strip_context(const char *what, const char *msg)
{
	const char *obj = strchr(what, ' ');
	size_t n;

	if (!obj)
		return msg;
	obj++;
	n = strlen(obj);
	if (!strncmp(msg, obj, n) && !strncmp(msg + n, ": ", 2))
		return msg + n + 2;
	if (!strncmp(msg, obj, n) && msg[n] == ' ')
		return msg + n + 1;
	return msg;
}

json_t *ctl_request(const char *what, json_t *req, int *err_out)
{
	json_t *reply = NULL;
	int err = 0, code;

	if (err_out)
		*err_out = 0;
	for (int attempt = 0; attempt < 2; attempt++) {
		if (agent_fd < 0 && (agent_fd = ctl_connect()) < 0) {
			err = ECONNREFUSED;
			goto out;
		}
		json_incref(req);
		err = -ctl_transact(agent_fd, req, &reply);
		/* The agent drops idle connections: a closed one is reopened once. */
		if (err == EPIPE || err == ECONNRESET || err == ENOTCONN) {
			ctl_disconnect();
			continue;
		}
		break;
	}
	if (err) {
		ctl_fail("%s: the agent at %s: %s", what, ctl.socket, strerror(err));
		goto out;
	}
	if (json_is_true(json_object_get(reply, "ok")))
		goto out;
	code = proto_errno_from_name(ctl_reply_errno(reply));
	err = code ? code : EIO;
	ctl_fail("%s: %s", what, strip_context(what, ctl_jstr(reply, "error", strerror(err))));
	json_decref(reply);
	reply = NULL;
out:
	if (err_out)
		*err_out = err;
	return reply;
}

/* --- arguments ------------------------------------------------------------ */

int ctl_parse_proto(const char *s, const char **out)
{
	int p = state_proto_parse(s);

	if (p < 0) {
		ctl_bad_usage("--proto: \"%s\" is not tcp or udp", s);
		return -1;
	}
	*out = state_proto_name((uint8_t)p);
	return 0;
}

static int parse_ulong(const char *s, unsigned long max, unsigned long *out)
{
	char *end;

	if (!s[0] || s[0] == '-' || s[0] == '+')
		return -1;
	errno = 0;
	*out = strtoul(s, &end, 10);
	return errno || *end || *out > max ? -1 : 0;
}

int ctl_parse_port(const char *opt, const char *s, bool zero_ok, uint16_t *out)
{
	unsigned long v;

	if (parse_ulong(s, 65535, &v) || (!zero_ok && v == 0)) {
		ctl_bad_usage("%s: \"%s\" is not a port (%d..65535)", opt, s, zero_ok ? 0 : 1);
		return -1;
	}
	*out = (uint16_t)v;
	return 0;
}

int ctl_parse_count(const char *s, uint16_t *out)
{
	unsigned long v;

	if (parse_ulong(s, 65535, &v) || v == 0) {
		ctl_bad_usage("--count: \"%s\" is not a number of ports (1..65535)", s);
		return -1;
	}
	*out = (uint16_t)v;
	return 0;
}

int ctl_parse_token(const char *s, uint64_t *out)
{
	if (state_token_parse(s, out)) {
		ctl_bad_usage("\"%s\" is not a token (16 hex digits, as create and lookup print)", s);
		return -1;
	}
	return 0;
}

int ctl_parse_name(const char *s)
{
	if (!state_name_valid(s)) {
		ctl_bad_usage("\"%s\" is not a name (1..%d of A-Z a-z 0-9 . _ -, not starting with . or -)", s,
			      STATE_NAME_MAX);
		return -1;
	}
	return 0;
}

int ctl_parse_mode(const char *s)
{
	if (state_mode_parse(s) < 0) {
		ctl_bad_usage("--mode: \"%s\" is not enforce, audit or advisory", s);
		return -1;
	}
	return 0;
}

int ctl_set_selector(json_t *req, const char *token, const char *name, bool required)
{
	char canonical[17];
	uint64_t t;

	if (token && name)
		return ctl_bad_usage("give --token or --name, not both");
	if (!token && !name)
		return required ? ctl_bad_usage("name the reservation with --token T or --name NAME") : 0;
	if (name) {
		if (ctl_parse_name(name))
			return CTL_USAGE;
		json_object_set_new(req, "name", json_string(name));
		return 0;
	}
	if (ctl_parse_token(token, &t))
		return CTL_USAGE;
	state_token_format(t, canonical);
	json_object_set_new(req, "token", json_string(canonical));
	return 0;
}

int ctl_parse_uid(const char *s, uint64_t *out)
{
	unsigned long v;
	struct passwd *pw;

	if (!parse_ulong(s, UINT32_MAX, &v)) {
		*out = v;
		return 0;
	}
	if ((pw = getpwnam(s))) {
		*out = pw->pw_uid;
		return 0;
	}
	ctl_bad_usage("--grant-uid: \"%s\" is neither a uid nor a user", s);
	return -1;
}

int ctl_parse_gid(const char *s, uint64_t *out)
{
	unsigned long v;
	struct group *gr;

	if (!parse_ulong(s, UINT32_MAX, &v)) {
		*out = v;
		return 0;
	}
	if ((gr = getgrnam(s))) {
		*out = gr->gr_gid;
		return 0;
	}
	ctl_bad_usage("--grant-gid: \"%s\" is neither a gid nor a group", s);
	return -1;
}

/* --- cgroups -------------------------------------------------------------- */

int ctl_cgroup_path(const char *in, char *out, size_t len)
{
	const char *root = cgroup2_mount();

	if (in[0] == '/') {
		snprintf(out, len, "%s", in);
	} else if (!strncmp(in, "./", 2) || !strncmp(in, "../", 3)) {
		if (!realpath(in, out))
			return -errno;
	} else {
		if (!root)
			return -ENODEV;
		snprintf(out, len, "%s/%s", root, in);
	}
	/* no trailing slashes: the agent compares paths */
	for (size_t n = strlen(out); n > 1 && out[n - 1] == '/'; n--)
		out[n - 1] = '\0';
	return 0;
}

static struct {
	uint64_t id;
	char *path;
} *cg_cache;
static size_t cg_cache_n;

const char *ctl_cgroup_from_id(uint64_t id)
{
	char path[PATH_MAX];
	void *grown;

	if (!id)
		return NULL;
	for (size_t i = 0; i < cg_cache_n; i++)
		if (cg_cache[i].id == id)
			return cg_cache[i].path;
	if (!(grown = realloc(cg_cache, (cg_cache_n + 1) * sizeof(*cg_cache))))
		return NULL;
	cg_cache = grown;
	cg_cache[cg_cache_n].id = id;
	cg_cache[cg_cache_n].path = cgroup2_path(id, path, sizeof(path)) ? NULL : strdup(path);
	return cg_cache[cg_cache_n++].path;
}

/* --- output --------------------------------------------------------------- */

void ctl_print_json(json_t *obj, bool compact)
{
	json_dumpf(obj, stdout, compact ? JSON_COMPACT : JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	fputc('\n', stdout);
}

json_t *ctl_reply_data(json_t *reply)
{
	json_object_del(reply, "v");
	json_object_del(reply, "ok");
	return reply;
}

const char *ctl_jstr(const json_t *o, const char *key, const char *dflt)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : dflt;
}

long long ctl_jint(const json_t *o, const char *key, long long dflt)
{
	json_t *v = json_object_get(o, key);

	return json_is_integer(v) ? (long long)json_integer_value(v) : dflt;
}
