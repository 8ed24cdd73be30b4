// SPDX-License-Identifier: LGPL-2.1-or-later
/* ctl.c - portresctl's shared pieces: options, the agent connection (transport.h), errors, parsing. */
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cgroup.h"
#include "ctl.h"
#include "netns_path.h"
#include "portres.h"
#include "proto.h"
#include "state.h"
#include "subcommands.h"
#include "transport.h"

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
		fprintf(f, "common options: --socket PATH (or $%s), --json, -o text|wide|json|jsonpath=TEMPLATE,\n"
			   "  --no-headers, -h/--help\n", PORTRES_SOCKET_ENV);
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

/* --- options -------------------------------------------------------------- */

static const struct option *cur_longopts;
static char **cur_argv;
static int cur_argc;

int ctl_getopt(int argc, char *argv[], const char *shortopts, const struct option *longopts)
{
	static char buf[64];
	bool plus = shortopts[0] == '+';

	/* ":" first: a missing argument is ':', not '?'; we say what was wrong */
	snprintf(buf, sizeof(buf), "%s:%so:", plus ? "+" : "", shortopts + plus);
	cur_longopts = longopts;
	cur_argv = argv;
	cur_argc = argc;
	opterr = 0;
	return getopt_long(argc, argv, buf, longopts, NULL);
}

static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[64], prev, tmp;

	if (lb >= sizeof(row) / sizeof(row[0]))
		return (size_t)-1;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		prev = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t best = prev + (a[i - 1] != b[j - 1]);

			/* a swap of two neighbours counts as one typo */
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && best > prev)
				best = prev;
			if (row[j] + 1 < best)
				best = row[j] + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			tmp = row[j];
			row[j] = best;
			prev = tmp;
		}
	}
	return row[lb];
}

const char *ctl_suggest(const char *word, const char *const *cands, size_t n)
{
	size_t best = (size_t)-1, limit = strlen(word) < 5 ? 1 : 2;
	const char *pick = NULL;

	for (size_t i = 0; i < n; i++) {
		size_t d = edit_distance(word, cands[i]);

		/* a prefix is a suggestion too: --conf for --confine */
		if (strlen(word) >= 3 && !strncmp(cands[i], word, strlen(word)))
			d = 1;
		if (d < best) {
			best = d;
			pick = cands[i];
		}
	}
	return best <= limit ? pick : NULL;
}

/* "unknown option --nmae; did you mean --name?" for the option getopt stopped at. */
static void bad_option(int c)
{
	const char *arg = optind > 0 && optind <= cur_argc ? cur_argv[optind - 1] : NULL, *cands[64], *hint;
	char name[64];
	size_t n = 0;

	if (c == ':') {
		ctl_bad_usage("option %s needs a value", arg ? arg : "?");
		return;
	}
	if (optopt && optopt < 0x100 && (!arg || strncmp(arg, "--", 2))) {
		ctl_bad_usage("unknown option -%c", optopt);
		return;
	}
	snprintf(name, sizeof(name), "%s", arg ? arg + strspn(arg, "-") : "?");
	name[strcspn(name, "=")] = '\0';
	for (const struct option *o = cur_longopts; o && o->name && n < 64; o++)
		cands[n++] = o->name;
	if ((hint = ctl_suggest(name, cands, n)))
		ctl_bad_usage("unknown option --%s; did you mean --%s?", name, hint);
	else
		ctl_bad_usage("unknown option --%s", name);
}

bool ctl_common_opt(int c, int *status)
{
	switch (c) {
	case CTL_OPT_JSON:
		ctl.json = true;
		ctl.jsonpath = NULL;
		ctl.wide = false;
		return false;
	case 'o':
		if (!ctl_set_output(optarg))
			return false;
		*status = CTL_USAGE;
		return true;
	case CTL_OPT_NO_HEADERS:
		ctl.no_headers = true;
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
	bad_option(c);
	*status = CTL_USAGE;
	return true;
}

/* --- the agent ------------------------------------------------------------ */

int ctl_connect(void)
{
	int fd = portres_transport_connect(ctl.socket);

	if (fd == -ECONNREFUSED)
		ctl_fail("no agent at %s (start portresd)", ctl.socket);
	else if (fd == -ENAMETOOLONG)
		ctl_fail("socket path too long: %s", ctl.socket);
	else if (fd < 0)
		ctl_fail("cannot reach the agent at %s: %s", ctl.socket, strerror(-fd));
	return fd < 0 ? -1 : fd;
}

void ctl_disconnect(void)
{
	if (agent_fd >= 0)
		close(agent_fd);
	agent_fd = -1;
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
	int err = 0, passfd = -1;

	/* --netns travels with the requests that act in a network namespace */
	if (ctl.netns_fd >= 0 && takes_netns(req)) {
		passfd = ctl.netns_fd;
		if (!json_object_get(req, "netns"))
			json_object_set_new(req, "netns", json_string(ctl.netns_path));
	}
	if (err_out)
		*err_out = 0;
	for (int attempt = 0; attempt < 2; attempt++) {
		if (agent_fd < 0 && (agent_fd = ctl_connect()) < 0) {
			err = ECONNREFUSED;
			goto out;
		}
		err = -portres_transport_call(agent_fd, req, passfd, -1, &reply);
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
	err = portres_transport_error(reply);
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
