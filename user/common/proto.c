// SPDX-License-Identifier: LGPL-2.1-or-later
/* proto.c - strict parsing of portresd requests, building of replies. */
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "portres_abi.h"
#include "proto.h"
#include "state.h"

static const char *const op_names[PROTO_OP__COUNT] = {
	[PROTO_OP_ACQUIRE] = "acquire", [PROTO_OP_RELEASE] = "release",
	[PROTO_OP_CREATE] = "create",   [PROTO_OP_LOOKUP] = "lookup",
	[PROTO_OP_DELETE] = "delete",   [PROTO_OP_UPDATE] = "update",
	[PROTO_OP_LIST] = "list",       [PROTO_OP_SHOW] = "show",
	[PROTO_OP_WHO] = "who",         [PROTO_OP_ATTACH] = "attach",
	[PROTO_OP_DETACH] = "detach",   [PROTO_OP_STATUS] = "status",
	[PROTO_OP_METRICS] = "metrics", [PROTO_OP_EVENTS] = "events",
	[PROTO_OP_ASSOCIATE] = "associate",
};

const char *proto_op_name(enum proto_op op)
{
	return (unsigned)op < PROTO_OP__COUNT ? op_names[op] : "?";
}

bool proto_op_takes_netns(enum proto_op op)
{
	return op == PROTO_OP_CREATE || op == PROTO_OP_LOOKUP || op == PROTO_OP_DELETE || op == PROTO_OP_LIST ||
	       op == PROTO_OP_SHOW || op == PROTO_OP_WHO;
}

static int bad(struct proto_err *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int bad(struct proto_err *err, int code, const char *fmt, ...)
{
	va_list ap;

	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return -1;
}

/* 1: absent, 0: read, -1: error. */
static int get_int(json_t *root, const char *key, long min, long max, long *out,
		   struct proto_err *err)
{
	json_t *v = json_object_get(root, key);

	if (!v)
		return 1;
	if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
		return bad(err, EINVAL, "%s: must be an integer %ld..%ld", key, min, max);
	*out = (long)json_integer_value(v);
	return 0;
}

static int get_string(json_t *root, const char *key, const char **out, struct proto_err *err)
{
	json_t *v = json_object_get(root, key);

	if (!v)
		return 1;
	if (!json_is_string(v))
		return bad(err, EINVAL, "%s: must be a string", key);
	*out = json_string_value(v);
	if (strlen(*out) != json_string_length(v))
		return bad(err, EINVAL, "%s: must not contain NUL", key);
	return 0;
}

static int need(int r, const char *key, struct proto_err *err)
{
	return r == 1 ? bad(err, EINVAL, "%s: missing", key) : r;
}

/* proto (optional unless required), start, count; start 0 allowed only if allow_any. */
static int parse_range(struct proto_req *req, bool want_proto, bool allow_any, struct proto_err *err)
{
	const char *s;
	long start = 0, count;
	int r;

	if (want_proto) {
		if ((r = need(get_string(req->root, "proto", &s, err), "proto", err)))
			return r;
		if ((r = state_proto_parse(s)) < 0)
			return bad(err, EINVAL, "proto: \"%.32s\" is not tcp or udp", s);
		req->proto = (uint8_t)r;
	}
	if ((r = get_int(req->root, "start", 0, 65535, &start, err)) < 0)
		return r;
	if (r == 1 && !allow_any)
		return bad(err, EINVAL, "start: missing");
	if ((r = need(get_int(req->root, "count", 0, 65535, &count, err), "count", err)))
		return r;
	if (count == 0)
		return bad(err, EINVAL, "count: must not be 0");
	if (start == 0 && !allow_any)
		return bad(err, EINVAL, "start: must not be 0 for a persistent reservation");
	if (start + count > 65536)
		return bad(err, EINVAL, "start %ld + count %ld goes past port 65535", start, count);
	req->start = (uint16_t)start;
	req->count = (uint16_t)count;
	return 0;
}

static int parse_token(struct proto_req *req, bool required, struct proto_err *err)
{
	const char *s;
	int r = get_string(req->root, "token", &s, err);

	if (r < 0 || (r == 1 && !required))
		return r;
	if (r == 1)
		return bad(err, EINVAL, "token: missing");
	if (state_token_parse(s, &req->token))
		return bad(err, EINVAL, "token: \"%.32s\" is not 16 hex digits (and not 0)", s);
	return 0;
}

static int parse_name(struct proto_req *req, struct proto_err *err)
{
	int r = get_string(req->root, "name", &req->name, err);

	if (r)
		return r;
	if (!state_name_valid(req->name))
		return bad(err, EINVAL, "name: 1..%d of A-Z a-z 0-9 . _ -, not starting with . or -",
			   STATE_NAME_MAX);
	return 0;
}

/* Exactly one of the selectors in allowed (bit per enum proto_sel). */
static int parse_selector(struct proto_req *req, unsigned allowed, struct proto_err *err)
{
	bool has_range = json_object_get(req->root, "start") || json_object_get(req->root, "count") ||
			 json_object_get(req->root, "proto");
	int r, n = 0;

	if ((r = parse_token(req, false, err)) < 0)
		return r;
	if (r == 0) {
		req->sel = PROTO_SEL_TOKEN;
		n++;
	}
	if ((r = parse_name(req, err)) < 0)
		return r;
	if (r == 0) {
		req->sel = PROTO_SEL_NAME;
		n++;
	}
	if (has_range && (allowed & 1u << PROTO_SEL_RANGE)) {
		if (parse_range(req, true, false, err))
			return -1;
		req->sel = PROTO_SEL_RANGE;
		n++;
	}
	if (n != 1 || !(allowed & 1u << req->sel))
		return bad(err, EINVAL, "name the reservation by exactly one of %s",
			   allowed & 1u << PROTO_SEL_RANGE ? "proto+start+count, token, name" : "token, name");
	return 0;
}

static int parse_mode(struct proto_req *req, bool required, struct proto_err *err)
{
	const char *s;
	int r = get_string(req->root, "mode", &s, err);

	if (r < 0)
		return r;
	if (r == 1)
		return required ? bad(err, EINVAL, "mode: missing") : 0;
	if ((req->mode = state_mode_parse(s)) < 0)
		return bad(err, EINVAL, "mode: \"%.32s\" is not enforce, audit or advisory", s);
	return 0;
}

static int parse_grants(struct proto_req *req, struct proto_err *err)
{
	json_t *arr = json_object_get(req->root, "grants");

	if (!arr)
		return 0;
	if (!json_is_array(arr))
		return bad(err, EINVAL, "grants: must be an array");
	if (json_array_size(arr) > PROTO_MAX_GRANTS)
		return bad(err, EINVAL, "grants: at most %d", PROTO_MAX_GRANTS);
	for (size_t i = 0; i < json_array_size(arr); i++) {
		json_t *g = json_array_get(arr, i), *id, *type, *path;
		struct proto_grant *pg = &req->grants[i];
		int t;

		if (!json_is_object(g))
			return bad(err, EINVAL, "grants[%zu]: must be an object", i);
		type = json_object_get(g, "type");
		id = json_object_get(g, "id");
		path = json_object_get(g, "path");
		if (!json_is_string(type) || (t = state_grant_parse(json_string_value(type))) < 0)
			return bad(err, EINVAL, "grants[%zu].type: must be \"uid\", \"gid\" or \"cgroup\"", i);
		pg->type = (uint32_t)t;
		if (id && (!json_is_integer(id) || json_integer_value(id) < 0 ||
			   (t != PORTRES_GRANT_CGROUP && json_integer_value(id) > UINT32_MAX)))
			return bad(err, EINVAL, "grants[%zu].id: must be a %s", i,
				   t == PORTRES_GRANT_CGROUP ? "cgroup id" : "uid or gid 0..4294967295");
		if (path && (t != PORTRES_GRANT_CGROUP || !json_is_string(path) ||
			     json_string_value(path)[0] != '/' || json_string_length(path) >= PATH_MAX ||
			     strlen(json_string_value(path)) != json_string_length(path)))
			return bad(err, EINVAL, "grants[%zu].path: an absolute cgroup path, cgroup grants only", i);
		if (!id == !path)
			return bad(err, EINVAL, "grants[%zu]: give exactly one of id%s", i,
				   t == PORTRES_GRANT_CGROUP ? ", path" : "");
		pg->id = id ? (uint64_t)json_integer_value(id) : 0;
		pg->path = path ? json_string_value(path) : NULL;
		req->n_grants = i + 1;
	}
	return 0;
}

static int parse_cgroup(struct proto_req *req, struct proto_err *err)
{
	int r = need(get_string(req->root, "cgroup", &req->cgroup, err), "cgroup", err);

	if (r)
		return r;
	if (req->cgroup[0] != '/' || strlen(req->cgroup) >= PATH_MAX)
		return bad(err, EINVAL, "cgroup: must be an absolute path");
	return 0;
}

/* An optional boolean field: 0 (read, or absent: false) or -1. */
static int get_bool(json_t *root, const char *key, bool *out, struct proto_err *err)
{
	json_t *v = json_object_get(root, key);

	if (v && !json_is_boolean(v))
		return bad(err, EINVAL, "%s: must be true or false", key);
	*out = json_is_true(v);
	return 0;
}

static int parse_op(struct proto_req *req, struct proto_err *err)
{
	json_t *v;
	long port;
	int r;

	switch (req->op) {
	case PROTO_OP_ACQUIRE:
		return parse_range(req, false, true, err);
	case PROTO_OP_RELEASE:
	case PROTO_OP_ASSOCIATE:
		return parse_token(req, true, err);
	case PROTO_OP_CREATE:
		if (parse_range(req, true, false, err) || parse_name(req, err) < 0 ||
		    parse_mode(req, false, err) || parse_grants(req, err) ||
		    get_string(req->root, "request_id", &req->request_id, err) < 0)
			return -1;
		if (req->request_id && !state_request_id_valid(req->request_id))
			return bad(err, EINVAL, "request_id: %d..%d of A-Z a-z 0-9 _ -", STATE_REQUEST_ID_MIN,
				   STATE_REQUEST_ID_MAX);
		return 0;
	case PROTO_OP_LOOKUP:
		req->sel = PROTO_SEL_RANGE;
		return parse_range(req, true, false, err);
	case PROTO_OP_DELETE:
		if (get_bool(req->root, "force", &req->force, err) || get_bool(req->root, "dry_run", &req->dry_run, err))
			return -1;
		return parse_selector(req, 1u << PROTO_SEL_RANGE | 1u << PROTO_SEL_TOKEN | 1u << PROTO_SEL_NAME, err);
	case PROTO_OP_UPDATE:
		if (parse_selector(req, 1u << PROTO_SEL_TOKEN | 1u << PROTO_SEL_NAME, err))
			return -1;
		return parse_mode(req, true, err);
	case PROTO_OP_SHOW:
		return parse_selector(req, 1u << PROTO_SEL_TOKEN | 1u << PROTO_SEL_NAME, err);
	case PROTO_OP_WHO:
		if ((r = need(get_int(req->root, "port", 0, 65535, &port, err), "port", err)))
			return r;
		req->port = (uint16_t)port;
		if ((r = get_string(req->root, "proto", &req->name, err)) < 0)
			return r;
		if (r == 0) {
			if ((r = state_proto_parse(req->name)) < 0)
				return bad(err, EINVAL, "proto: \"%.32s\" is not tcp or udp", req->name);
			req->proto = (uint8_t)r;
		}
		req->name = NULL;
		return 0;
	case PROTO_OP_ATTACH:
		if (parse_cgroup(req, err) ||
		    parse_selector(req, 1u << PROTO_SEL_TOKEN | 1u << PROTO_SEL_NAME, err))
			return -1;
		v = json_object_get(req->root, "confine");
		if (json_is_string(v) && !strcmp(json_string_value(v), "all"))
			req->confine = STATE_CONFINE_ALL;
		else if (v && !json_is_boolean(v))
			return bad(err, EINVAL, "confine: must be true, false or \"all\"");
		else
			req->confine = json_is_true(v) ? STATE_CONFINE : STATE_CONFINE_NONE;
		v = json_object_get(req->root, "force");
		if (v && !json_is_boolean(v))
			return bad(err, EINVAL, "force: must be true or false");
		req->force = json_is_true(v);
		return 0;
	case PROTO_OP_DETACH:
		/* one block of the cgroup, or all of them */
		if (parse_cgroup(req, err))
			return -1;
		if (!json_object_get(req->root, "token") && !json_object_get(req->root, "name"))
			return 0;
		return parse_selector(req, 1u << PROTO_SEL_TOKEN | 1u << PROTO_SEL_NAME, err);
	case PROTO_OP_LIST:
		return get_bool(req->root, "usage", &req->usage, err);
	case PROTO_OP_STATUS:
	case PROTO_OP_METRICS:
	case PROTO_OP_EVENTS:
	case PROTO_OP__COUNT:
		return 0;
	}
	return 0;
}

int proto_parse_request(const char *buf, size_t len, struct proto_req *req, struct proto_err *err)
{
	json_error_t jerr;
	json_t *v;
	const char *op;

	memset(req, 0, sizeof(*req));
	req->mode = -1;
	err->code = 0;
	err->msg[0] = '\0';
	if (len > PROTO_MAX_MSG)
		return bad(err, EMSGSIZE, "request larger than %d bytes", PROTO_MAX_MSG);
	req->root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!req->root)
		return bad(err, EPROTO, "not JSON: %s at column %d", jerr.text, jerr.column);
	if (!json_is_object(req->root))
		return bad(err, EPROTO, "a request is a JSON object");
	v = json_object_get(req->root, "v");
	if (!json_is_integer(v) || json_integer_value(v) != PROTO_VERSION)
		return bad(err, EPROTO, "v: protocol version %d expected", PROTO_VERSION);
	if (get_string(req->root, "op", &op, err))
		return bad(err, EINVAL, "op: missing or not a string");
	for (req->op = 0; req->op < PROTO_OP__COUNT; req->op++)
		if (!strcmp(op, op_names[req->op])) {
			int r = proto_op_takes_netns(req->op) ? get_string(req->root, "netns", &req->netns, err) : 1;

			if (r < 0)
				return r;
			if (req->netns && (req->netns[0] != '/' || strlen(req->netns) >= PATH_MAX))
				return bad(err, EINVAL, "netns: must be an absolute path");
			return parse_op(req, err);
		}
	return bad(err, ENOSYS, "op: \"%.32s\" is not known", op);
}

void proto_req_free(struct proto_req *req)
{
	json_decref(req->root);
	req->root = NULL;
}

char *proto_ok_reply(json_t *fields)
{
	json_t *o = fields ? fields : json_object();
	char *s = NULL;

	if (o && !json_object_set_new(o, "v", json_integer(PROTO_VERSION)) &&
	    !json_object_set_new(o, "ok", json_true()))
		s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return s;
}

/*
 * Messages quote what the client sent, cut to a length: the cut may split a
 * UTF-8 sequence, or the input was not UTF-8 at all, and JSON strings must
 * be. Such bytes become '?' so that an error always gets its reply.
 */
static json_t *text_json(const char *msg)
{
	json_t *j = json_string(msg);
	char *copy;

	if (j)
		return j;
	copy = strdup(msg);
	if (!copy)
		return NULL;
	for (unsigned char *c = (unsigned char *)copy; *c; c++)
		if (*c >= 0x80)
			*c = '?';
	j = json_string(copy);
	free(copy);
	return j;
}

char *proto_err_reply(int code, const char *msg)
{
	const char *name = proto_errno_name(code);
	json_t *o = json_pack("{s:i, s:b, s:s, s:o}", "v", PROTO_VERSION, "ok", 0, "errno",
			      name ? name : "EIO", "error", text_json(msg ? msg : strerror(code)));
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;

	json_decref(o);
	return s;
}
