// SPDX-License-Identifier: LGPL-2.1-or-later
/* apply.c - the declarative file, the plan against the agent's state, its execution (apply.h). */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "apply.h"
#include "netns_path.h"
#include "portres_abi.h"
#include "proto.h"
#include "state.h"

/* --- messages ------------------------------------------------------------- */

static int fail(char *err, size_t len, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t len, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
	return code;
}

/* Appends "; msg" (or msg) to err: a plan names every conflict it finds. */
static void add_conflict(char *err, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void add_conflict(char *err, size_t len, const char *fmt, ...)
{
	size_t n = strlen(err);
	va_list ap;

	if (n && n + 2 < len) {
		strcpy(err + n, "; ");
		n += 2;
	}
	va_start(ap, fmt);
	vsnprintf(err + n, len - n, fmt, ap);
	va_end(ap);
}

static void range_str(uint8_t proto, uint32_t start, uint32_t count, char *buf, size_t len)
{
	if (count > 1)
		snprintf(buf, len, "%s %u-%u", state_proto_name(proto), start, start + count - 1);
	else
		snprintf(buf, len, "%s %u", state_proto_name(proto), start);
}

/* --- the file ------------------------------------------------------------- */

static bool only_keys(json_t *o, const char *const *keys, const char **bad)
{
	const char *k;
	json_t *v;

	json_object_foreach(o, k, v) {
		size_t i;

		for (i = 0; keys[i] && strcmp(keys[i], k); i++)
			;
		if (!keys[i]) {
			*bad = k;
			return false;
		}
	}
	return true;
}

/* "8000", "8000-8009" or 8000 */
static int parse_ports(json_t *v, uint16_t *start, uint16_t *count)
{
	unsigned long a, b;
	char *end;
	const char *s;

	if (json_is_integer(v)) {
		if (json_integer_value(v) < 1 || json_integer_value(v) > 65535)
			return -1;
		*start = (uint16_t)json_integer_value(v);
		*count = 1;
		return 0;
	}
	if (!json_is_string(v) || !(s = json_string_value(v))[0] || s[0] < '0' || s[0] > '9')
		return -1;
	a = strtoul(s, &end, 10);
	b = a;
	if (*end == '-') {
		if (end[1] < '0' || end[1] > '9')
			return -1;
		b = strtoul(end + 1, &end, 10);
	}
	if (*end || a < 1 || b > 65535 || b < a)
		return -1;
	*start = (uint16_t)a;
	*count = (uint16_t)(b - a + 1);
	return 0;
}

static int parse_grant(json_t *g, const char *where, struct apply_grant *out, char *err, size_t len)
{
	static const char *const keys[] = { "type", "id", "path", NULL };
	json_t *id = json_object_get(g, "id"), *path = json_object_get(g, "path");
	const char *bad;
	int t;

	if (!json_is_object(g))
		return fail(err, len, -EINVAL, "%s: must be an object", where);
	if (!only_keys(g, keys, &bad))
		return fail(err, len, -EINVAL, "%s: unknown field \"%s\"", where, bad);
	if ((t = state_grant_parse(json_string_value(json_object_get(g, "type")) ?: "")) < 0)
		return fail(err, len, -EINVAL, "%s.type: must be \"uid\", \"gid\" or \"cgroup\"", where);
	out->type = (uint32_t)t;
	if (!id == !path || (path && t != PORTRES_GRANT_CGROUP))
		return fail(err, len, -EINVAL, "%s: give %s", where,
			    t == PORTRES_GRANT_CGROUP ? "exactly one of \"id\", \"path\"" : "\"id\"");
	if (id && (!json_is_integer(id) || json_integer_value(id) < 0 ||
		   (t != PORTRES_GRANT_CGROUP && json_integer_value(id) > UINT32_MAX)))
		return fail(err, len, -EINVAL, "%s.id: must be a %s", where,
			    t == PORTRES_GRANT_CGROUP ? "cgroup id" : "uid or gid 0..4294967295");
	if (path && (!json_is_string(path) || json_string_value(path)[0] != '/'))
		return fail(err, len, -EINVAL, "%s.path: must be an absolute cgroup path", where);
	out->id = id ? (uint64_t)json_integer_value(id) : 0;
	if (path && !(out->path = strdup(json_string_value(path))))
		return fail(err, len, -ENOMEM, "out of memory");
	return 0;
}

static int parse_resv(json_t *o, const char *where, struct apply_resv *r, char *err, size_t len)
{
	static const char *const keys[] = { "name", "proto", "ports", "start", "count", "mode", "grants", "netns", NULL };
	json_t *ports = json_object_get(o, "ports"), *start = json_object_get(o, "start"),
	       *count = json_object_get(o, "count"), *grants = json_object_get(o, "grants"), *g;
	const char *s, *bad;
	char gw[96];
	size_t i;
	int v, e;

	if (!json_is_object(o))
		return fail(err, len, -EINVAL, "%s: must be an object", where);
	if (!only_keys(o, keys, &bad))
		return fail(err, len, -EINVAL, "%s: unknown field \"%s\"", where, bad);
	s = json_string_value(json_object_get(o, "name"));
	if (!s || !state_name_valid(s))
		return fail(err, len, -EINVAL, "%s.name: needed, 1..%d of A-Z a-z 0-9 . _ -, not starting with . or -",
			    where, STATE_NAME_MAX);
	if (!(r->name = strdup(s)))
		return fail(err, len, -ENOMEM, "out of memory");
	if (json_object_get(o, "netns")) {
		const char *ns = json_string_value(json_object_get(o, "netns"));
		char path[PATH_MAX], why[256];

		if (!ns || netns_spec_path(ns, path, sizeof(path), why, sizeof(why)))
			return fail(err, len, -EINVAL, "%s (%s).netns: a netns file, a name of `ip netns` or \"pid:PID\"",
				    where, s);
		if (!(r->netns = strdup(ns)))
			return fail(err, len, -ENOMEM, "out of memory");
	}
	if ((v = state_proto_parse(json_string_value(json_object_get(o, "proto")) ?: "")) < 0)
		return fail(err, len, -EINVAL, "%s (%s).proto: needed, \"tcp\" or \"udp\"", where, s);
	r->proto = (uint8_t)v;
	if (ports && (start || count))
		return fail(err, len, -EINVAL, "%s (%s): give \"ports\" or \"start\"+\"count\", not both", where, s);
	if (ports) {
		if (parse_ports(ports, &r->start, &r->count))
			return fail(err, len, -EINVAL, "%s (%s).ports: a port or \"first-last\" (1..65535)", where, s);
	} else {
		if (!json_is_integer(start) || json_integer_value(start) < 1 || json_integer_value(start) > 65535 ||
		    !json_is_integer(count) || json_integer_value(count) < 1 || json_integer_value(count) > 65535)
			return fail(err, len, -EINVAL, "%s (%s): \"ports\", or \"start\" (1..65535) and \"count\" (1..65535)",
				    where, s);
		r->start = (uint16_t)json_integer_value(start);
		r->count = (uint16_t)json_integer_value(count);
	}
	if ((uint32_t)r->start + r->count > 65536)
		return fail(err, len, -EINVAL, "%s (%s): start %u + count %u goes past port 65535", where, s, r->start,
			    r->count);
	v = json_object_get(o, "mode") ? state_mode_parse(json_string_value(json_object_get(o, "mode")) ?: "")
				       : PORTRES_MODE_ENFORCE;
	if (v < 0)
		return fail(err, len, -EINVAL, "%s (%s).mode: \"enforce\", \"audit\" or \"advisory\"", where, s);
	r->mode = (uint8_t)v;
	if (grants && (!json_is_array(grants) || json_array_size(grants) > PROTO_MAX_GRANTS))
		return fail(err, len, -EINVAL, "%s (%s).grants: an array of at most %d", where, s, PROTO_MAX_GRANTS);
	if (json_array_size(grants) && !(r->grants = calloc(json_array_size(grants), sizeof(*r->grants))))
		return fail(err, len, -ENOMEM, "out of memory");
	json_array_foreach(grants, i, g) {
		snprintf(gw, sizeof(gw), "%s (%s).grants[%zu]", where, s, i);
		if ((e = parse_grant(g, gw, &r->grants[i], err, len)))
			return e;
		r->n_grants = i + 1;
	}
	return 0;
}

static int parse_attach(json_t *o, const char *where, const char *cgroup_root, struct apply_attach *a, char *err,
			size_t len)
{
	static const char *const keys[] = { "cgroup", "reservation", "confine", NULL };
	const char *cg = json_string_value(json_object_get(o, "cgroup")), *name, *bad;
	json_t *confine = json_object_get(o, "confine");
	char path[PATH_MAX];
	size_t n;

	if (!json_is_object(o))
		return fail(err, len, -EINVAL, "%s: must be an object", where);
	if (!only_keys(o, keys, &bad))
		return fail(err, len, -EINVAL, "%s: unknown field \"%s\"", where, bad);
	if (!cg || !cg[0])
		return fail(err, len, -EINVAL, "%s.cgroup: needed, a cgroup path", where);
	if (cg[0] != '/' && !cgroup_root)
		return fail(err, len, -EINVAL, "%s.cgroup: \"%s\" is relative and no cgroup2 mount is known", where, cg);
	if ((size_t)snprintf(path, sizeof(path), "%s%s%s", cg[0] == '/' ? "" : cgroup_root, cg[0] == '/' ? "" : "/",
			     cg) >= sizeof(path))
		return fail(err, len, -EINVAL, "%s.cgroup: too long", where);
	for (n = strlen(path); n > 1 && path[n - 1] == '/'; n--)
		path[n - 1] = '\0';
	name = json_string_value(json_object_get(o, "reservation"));
	if (!name || !state_name_valid(name))
		return fail(err, len, -EINVAL, "%s.reservation: needed, the name of a reservation", where);
	if (json_is_string(confine) && !strcmp(json_string_value(confine), "all"))
		a->confine = STATE_CONFINE_ALL;
	else if (confine && !json_is_boolean(confine))
		return fail(err, len, -EINVAL, "%s.confine: true, false or \"all\"", where);
	else
		a->confine = json_is_true(confine) ? STATE_CONFINE : STATE_CONFINE_NONE;
	if (!(a->cgroup = strdup(path)) || !(a->resv = strdup(name)))
		return fail(err, len, -ENOMEM, "out of memory");
	return 0;
}

static bool overlap(uint8_t pa, uint32_t sa, uint32_t ca, uint8_t pb, uint32_t sb, uint32_t cb)
{
	return pa == pb && sa < sb + cb && sb < sa + ca;
}

/* Two reservations of the file in one netns (as the file names them). */
static bool same_file_netns(const struct apply_resv *a, const struct apply_resv *b)
{
	if (a->netns_inode && b->netns_inode)
		return a->netns_inode == b->netns_inode;
	return !a->netns == !b->netns && (!a->netns || !strcmp(a->netns, b->netns));
}

static const struct apply_resv *file_resv(const struct apply_file *f, const char *name)
{
	for (size_t i = 0; i < f->n_resv; i++)
		if (!strcmp(f->resv[i].name, name))
			return &f->resv[i];
	return NULL;
}

/* Names, ports and cgroups used twice in the file. */
static int check_file(const struct apply_file *f, const char *what, char *err, size_t len)
{
	char ra[32], rb[32];

	for (size_t i = 0; i < f->n_resv; i++)
		for (size_t j = 0; j < i; j++) {
			const struct apply_resv *a = &f->resv[i], *b = &f->resv[j];

			if (!strcmp(a->name, b->name))
				return fail(err, len, -EINVAL, "%s: reservations[%zu] and [%zu] are both named %s", what, j,
					    i, a->name);
			if (same_file_netns(a, b) && overlap(a->proto, a->start, a->count, b->proto, b->start, b->count)) {
				range_str(b->proto, b->start, b->count, rb, sizeof(rb));
				range_str(a->proto, a->start, a->count, ra, sizeof(ra));
				return fail(err, len, -EADDRINUSE, "%s: reservations %s (%s) and %s (%s) overlap", what,
					    b->name, rb, a->name, ra);
			}
		}
	for (size_t i = 0; i < f->n_attach; i++)
		for (size_t j = 0; j < i; j++) {
			const struct apply_resv *ri = file_resv(f, f->attach[i].resv), *rj = file_resv(f, f->attach[j].resv);

			if (strcmp(f->attach[i].cgroup, f->attach[j].cgroup))
				continue;
			/* a cgroup holds one block per protocol */
			if (!strcmp(f->attach[i].resv, f->attach[j].resv) || (ri && rj && ri->proto == rj->proto))
				return fail(err, len, -EINVAL, "%s: attachments[%zu] and [%zu] both give cgroup %s a%s block",
					    what, j, i, f->attach[i].cgroup,
					    ri ? (ri->proto == IPPROTO_TCP ? " TCP" : " UDP") : "");
		}
	return 0;
}

int apply_file_parse(const char *text, size_t tlen, const char *what, const char *cgroup_root,
		     struct apply_file *f, char *err, size_t len)
{
	static const char *const keys[] = { "version", "reservations", "attachments", NULL };
	json_t *root, *resv, *att, *v, *x;
	char where[64], sub[APPLY_ERR_LEN];
	json_error_t jerr;
	const char *bad;
	size_t i;
	int e = 0;

	memset(f, 0, sizeof(*f));
	if (!(root = json_loadb(text, tlen, JSON_REJECT_DUPLICATES, &jerr)))
		return fail(err, len, -EINVAL, "%s:%d:%d: %s", what, jerr.line, jerr.column, jerr.text);
	resv = json_object_get(root, "reservations");
	att = json_object_get(root, "attachments");
	v = json_object_get(root, "version");
	if (!json_is_object(root))
		e = fail(err, len, -EINVAL, "%s: must be a JSON object", what);
	else if (!only_keys(root, keys, &bad))
		e = fail(err, len, -EINVAL, "%s: unknown field \"%s\"", what, bad);
	else if (v && (!json_is_integer(v) || json_integer_value(v) != 1))
		e = fail(err, len, -EINVAL, "%s: version: only 1 is known", what);
	else if ((resv && !json_is_array(resv)) || (att && !json_is_array(att)))
		e = fail(err, len, -EINVAL, "%s: \"reservations\" and \"attachments\" must be arrays", what);
	else if ((json_array_size(resv) && !(f->resv = calloc(json_array_size(resv), sizeof(*f->resv)))) ||
		 (json_array_size(att) && !(f->attach = calloc(json_array_size(att), sizeof(*f->attach)))))
		e = fail(err, len, -ENOMEM, "out of memory");
	if (e)
		goto out;
	json_array_foreach(resv, i, x) {
		snprintf(where, sizeof(where), "reservations[%zu]", i);
		f->n_resv = i + 1;
		if ((e = parse_resv(x, where, &f->resv[i], sub, sizeof(sub))))
			goto prefix;
	}
	json_array_foreach(att, i, x) {
		snprintf(where, sizeof(where), "attachments[%zu]", i);
		f->n_attach = i + 1;
		if ((e = parse_attach(x, where, cgroup_root, &f->attach[i], sub, sizeof(sub))))
			goto prefix;
	}
	e = check_file(f, what, err, len);
	goto out;
prefix:
	snprintf(err, len, "%s: %s", what, sub);
out:
	json_decref(root);
	if (e)
		apply_file_free(f);
	return e;
}

int apply_file_load(const char *path, const char *cgroup_root, struct apply_file *f, char *err, size_t len)
{
	FILE *fp = fopen(path, "re");
	char *text = NULL;
	size_t n = 0, cap = 0;
	int e;

	memset(f, 0, sizeof(*f));
	if (!fp)
		return fail(err, len, -errno, "%s: %s", path, strerror(errno));
	for (;;) {
		if (n == cap) {
			char *t = realloc(text, cap = cap ? cap * 2 : 8192);

			if (!t) {
				free(text);
				fclose(fp);
				return fail(err, len, -ENOMEM, "out of memory");
			}
			text = t;
		}
		size_t got = fread(text + n, 1, cap - n, fp);

		if (!got)
			break;
		n += got;
	}
	e = ferror(fp) ? fail(err, len, -EIO, "%s: read error", path) : 0;
	fclose(fp);
	if (!e)
		e = apply_file_parse(text, n, path, cgroup_root, f, err, len);
	free(text);
	return e;
}

int apply_file_resolve_netns(struct apply_file *f, const char *what, char *err, size_t len)
{
	char path[PATH_MAX], why[256];
	struct stat sb;

	for (size_t i = 0; i < f->n_resv; i++) {
		struct apply_resv *r = &f->resv[i];
		char *abs;

		if (!r->netns)
			continue;
		if (netns_spec_path(r->netns, path, sizeof(path), why, sizeof(why)))
			return fail(err, len, -EINVAL, "%s: reservations[%zu] (%s).netns: %s", what, i, r->name, why);
		if (stat(path, &sb))
			return fail(err, len, -errno, "%s: reservations[%zu] (%s).netns: %s: %s", what, i, r->name, path,
				    strerror(errno));
		if (!(abs = strdup(path)))
			return fail(err, len, -ENOMEM, "out of memory");
		free(r->netns);
		r->netns = abs;
		r->netns_inode = (uint64_t)sb.st_ino;
	}
	return check_file(f, what, err, len);
}

void apply_file_free(struct apply_file *f)
{
	for (size_t i = 0; i < f->n_resv; i++) {
		for (size_t g = 0; g < f->resv[i].n_grants; g++)
			free(f->resv[i].grants[g].path);
		free(f->resv[i].grants);
		free(f->resv[i].name);
		free(f->resv[i].netns);
	}
	for (size_t i = 0; i < f->n_attach; i++) {
		free(f->attach[i].cgroup);
		free(f->attach[i].resv);
	}
	free(f->resv);
	free(f->attach);
	memset(f, 0, sizeof(*f));
}

/* --- the plan ------------------------------------------------------------- */

/* One reservation the agent has, from its list reply. */
struct cur {
	json_t *j;
	const char *token, *name; /* name: persistent and named only */
	uint8_t proto, mode;
	uint32_t start, count;
	uint64_t netns_inode;   /* 0: not known (an older agent) */
	const char *netns_path; /* the path its netns was named by, or NULL */
	bool removed;   /* deleted by the plan: replaced or pruned */
	bool replaced;
	long kept_by;   /* the file's entry it already is (same or mode change), or -1 */
};

enum want { W_SAME, W_MODE, W_NEW, W_REPLACE };

struct planner {
	const struct apply_file *f;
	const struct apply_opts *o;
	uint64_t netns_inode; /* of reservations without "netns": o's, else guessed (read_current) */
	struct apply_plan *plan;
	struct cur *cur;
	size_t n_cur;
	enum want *want;   /* per reservation of the file */
	long *cur_of;      /* per reservation of the file: the agent's of that name, or -1 */
	bool oom;
};

const char *apply_action_name(enum apply_action a)
{
	static const char *const names[] = { "create", "update", "delete", "attach", "detach" };

	return (unsigned)a < sizeof(names) / sizeof(names[0]) ? names[a] : "?";
}

/* Adds a step; req and undo (an array, or one request) are taken. */
static void step(struct planner *p, enum apply_action action, json_t *req, json_t *undo, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

static void step(struct planner *p, enum apply_action action, json_t *req, json_t *undo, const char *fmt, ...)
{
	struct apply_step *s;
	va_list ap;
	void *grown;

	if (undo && !json_is_array(undo)) {
		json_t *arr = json_array();

		if (json_array_append_new(arr, undo))
			undo = NULL;
		else
			undo = arr;
	}
	if (!req || !undo || !(grown = realloc(p->plan->steps, (p->plan->n + 1) * sizeof(*s)))) {
		json_decref(req);
		json_decref(undo);
		p->oom = true;
		return;
	}
	p->plan->steps = grown;
	s = &p->plan->steps[p->plan->n++];
	s->action = action;
	s->req = req;
	s->undo = undo;
	va_start(ap, fmt);
	vsnprintf(s->desc, sizeof(s->desc), fmt, ap);
	va_end(ap);
}

/* The file says which block a cgroup has: replacing another is what it asks (force). */
static json_t *req_attach(const char *cgroup, const char *sel_key, const char *sel, uint8_t confine)
{
	return json_pack("{s:i, s:s, s:s, s:s, s:o, s:b}", "v", PROTO_VERSION, "op", "attach", "cgroup", cgroup,
			 sel_key, sel, "confine", confine == STATE_CONFINE_ALL ? json_string("all") : json_boolean(confine),
			 "force", 1);
}

/* Detaches the block name (all of the cgroup's blocks when NULL). */
static json_t *req_detach(const char *cgroup, const char *name)
{
	json_t *r = json_pack("{s:i, s:s, s:s}", "v", PROTO_VERSION, "op", "detach", "cgroup", cgroup);

	if (r && name)
		json_object_set_new(r, "name", json_string(name));
	return r;
}

static uint8_t confine_of(const json_t *x)
{
	const json_t *c = json_object_get(x, "confine");

	if (json_is_string(c) && !strcmp(json_string_value(c), "all"))
		return STATE_CONFINE_ALL;
	return json_is_true(c) ? STATE_CONFINE : STATE_CONFINE_NONE;
}

static json_t *req_by_name(const char *op, const char *name)
{
	return json_pack("{s:i, s:s, s:s}", "v", PROTO_VERSION, "op", op, "name", name);
}

static json_t *req_mode(const char *name, uint8_t mode)
{
	return json_pack("{s:i, s:s, s:s, s:s}", "v", PROTO_VERSION, "op", "update", "name", name, "mode",
			 state_mode_name(mode));
}

/* grants (taken) as a create request carries them; netns: an absolute path or NULL */
static json_t *req_create(const char *name, uint8_t proto, uint32_t start, uint32_t count, uint8_t mode,
			  json_t *grants, const char *netns)
{
	json_t *r = json_pack("{s:i, s:s, s:s, s:i, s:i, s:s, s:s}", "v", PROTO_VERSION, "op", "create", "proto",
			      state_proto_name(proto), "start", (int)start, "count", (int)count, "name", name, "mode",
			      state_mode_name(mode));

	if (r && json_array_size(grants))
		json_object_set(r, "grants", grants);
	if (r && netns)
		json_object_set_new(r, "netns", json_string(netns));
	json_decref(grants);
	return r;
}

static json_t *file_grants(const struct apply_resv *d)
{
	json_t *arr = json_array();

	for (size_t g = 0; g < d->n_grants; g++) {
		const struct apply_grant *x = &d->grants[g];

		if (x->path)
			json_array_append_new(arr, json_pack("{s:s, s:s}", "type", state_grant_name(x->type), "path",
							     x->path));
		else
			json_array_append_new(arr, json_pack("{s:s, s:I}", "type", state_grant_name(x->type), "id",
							     (json_int_t)x->id));
	}
	return arr;
}

/* A listed reservation's grants as a create request takes them (by path when it has one). */
static json_t *cur_grants(const struct cur *c)
{
	json_t *arr = json_array(), *g;
	size_t i;

	json_array_foreach(json_object_get(c->j, "grants"), i, g) {
		json_t *path = json_object_get(g, "path");

		json_array_append_new(arr, json_pack("{s:O, s:O}", "type", json_object_get(g, "type"),
						     path ? "path" : "id", path ? path : json_object_get(g, "id")));
	}
	return arr;
}

static bool grants_equal(const struct apply_resv *d, const struct cur *c)
{
	json_t *have = json_object_get(c->j, "grants"), *g;
	size_t i;

	if (json_array_size(have) != d->n_grants)
		return false;
	for (size_t k = 0; k < d->n_grants; k++) {
		const struct apply_grant *x = &d->grants[k];
		bool found = false;

		json_array_foreach(have, i, g) {
			const char *type = json_string_value(json_object_get(g, "type"));
			const char *path = json_string_value(json_object_get(g, "path"));

			if (!type || state_grant_parse(type) != (int)x->type)
				continue;
			if (x->path ? path && !strcmp(path, x->path)
				    : (uint64_t)json_integer_value(json_object_get(g, "id")) == x->id)
				found = true;
		}
		if (!found)
			return false;
	}
	return true;
}

static int read_current(struct planner *p, const json_t *current, char *err, size_t len)
{
	const json_t *arr = json_is_array(current) ? current : json_object_get(current, "reservations");
	json_t *r;
	size_t i;

	if (!json_is_array(arr))
		return fail(err, len, -EINVAL, "the agent's list reply has no \"reservations\"");
	if (json_array_size(arr) && !(p->cur = calloc(json_array_size(arr), sizeof(*p->cur))))
		return fail(err, len, -ENOMEM, "out of memory");
	json_array_foreach(arr, i, r) {
		struct cur *c = &p->cur[p->n_cur];
		const char *kind = json_string_value(json_object_get(r, "kind"));
		int proto = state_proto_parse(json_string_value(json_object_get(r, "proto")) ?: "");
		int mode = state_mode_parse(json_string_value(json_object_get(r, "mode")) ?: "");

		c->j = r;
		c->token = json_string_value(json_object_get(r, "token"));
		c->start = (uint32_t)json_integer_value(json_object_get(r, "start"));
		c->count = (uint32_t)json_integer_value(json_object_get(r, "count"));
		if (!c->token || proto < 0 || !c->count)
			return fail(err, len, -EPROTO, "the agent's list reply: reservations[%zu] is not understood", i);
		c->proto = (uint8_t)proto;
		c->mode = mode < 0 ? PORTRES_MODE_ENFORCE : (uint8_t)mode;
		c->netns_inode = (uint64_t)json_integer_value(json_object_get(r, "netns_inode"));
		c->netns_path = json_string_value(json_object_get(r, "netns_path"));
		c->kept_by = -1;
		if (kind && !strcmp(kind, "persistent")) {
			c->name = json_string_value(json_object_get(r, "name"));
			/* not told where the file's default is: where persistent blocks without a path live */
			if (!p->netns_inode && !c->netns_path)
				p->netns_inode = c->netns_inode;
		}
		p->n_cur++;
	}
	return 0;
}

static long cur_by_name(const struct planner *p, const char *name)
{
	for (size_t i = 0; i < p->n_cur; i++)
		if (p->cur[i].name && !strcmp(p->cur[i].name, name))
			return (long)i;
	return -1;
}

/* Whether the file's d and the agent's c live in one netns. */
static bool same_netns(const struct planner *p, const struct apply_resv *d, const struct cur *c)
{
	uint64_t want = d->netns ? d->netns_inode : p->netns_inode;

	if (want && c->netns_inode)
		return want == c->netns_inode;
	/* not resolved: by the path, none meaning the default */
	if (!d->netns)
		return !c->netns_path;
	return c->netns_path && !strcmp(d->netns, c->netns_path);
}

/* The reservations of the file against the agent's: what each needs. */
static void compare_resv(struct planner *p)
{
	for (size_t i = 0; i < p->f->n_resv; i++) {
		const struct apply_resv *d = &p->f->resv[i];
		long k = cur_by_name(p, d->name);
		struct cur *c = k >= 0 ? &p->cur[k] : NULL;

		p->cur_of[i] = k;
		if (!c) {
			p->want[i] = W_NEW;
		} else if (c->proto != d->proto || c->start != d->start || c->count != d->count || !grants_equal(d, c) ||
			   !same_netns(p, d, c)) {
			p->want[i] = W_REPLACE;
			c->removed = c->replaced = true;
		} else {
			p->want[i] = c->mode == d->mode ? W_SAME : W_MODE;
			c->kept_by = (long)i;
		}
	}
	if (!p->o->prune)
		return;
	for (size_t k = 0; k < p->n_cur; k++)
		if (p->cur[k].name && p->cur[k].kept_by < 0 && !p->cur[k].replaced)
			p->cur[k].removed = true;
}

/* Names every conflict in err; 0 if the plan can go ahead, else -EADDRINUSE (an overlap) or -ENOENT. */
static int check_conflicts(struct planner *p, bool *after_deletes, char *err, size_t len)
{
	char ra[32], rb[32];
	struct stat sb;
	int code = 0;

	for (size_t i = 0; i < p->f->n_resv; i++) {
		const struct apply_resv *d = &p->f->resv[i];

		if (p->want[i] != W_NEW && p->want[i] != W_REPLACE)
			continue;
		after_deletes[i] = p->want[i] == W_REPLACE;
		for (size_t k = 0; k < p->n_cur; k++) {
			const struct cur *c = &p->cur[k];

			if (c->kept_by >= 0 || !same_netns(p, d, c) ||
			    !overlap(d->proto, d->start, d->count, c->proto, c->start, c->count))
				continue;
			if (c->removed) {
				after_deletes[i] = true;
				continue;
			}
			range_str(d->proto, d->start, d->count, ra, sizeof(ra));
			range_str(c->proto, c->start, c->count, rb, sizeof(rb));
			add_conflict(err, len, "%s (%s) overlaps %s reservation %s%s%s (token %s)", d->name, ra,
				     json_string_value(json_object_get(c->j, "kind")) ?: "a", rb, c->name ? " named " : "",
				     c->name ?: "", c->token);
			code = -EADDRINUSE;
		}
	}
	for (size_t i = 0; i < p->f->n_attach; i++) {
		const struct apply_attach *a = &p->f->attach[i];
		bool in_file = false;
		long k;

		for (size_t j = 0; j < p->f->n_resv; j++)
			in_file |= !strcmp(p->f->resv[j].name, a->resv);
		k = in_file ? -1 : cur_by_name(p, a->resv);
		if (!in_file && k < 0)
			add_conflict(err, len, "cgroup %s: no reservation named %s in the file or the agent", a->cgroup,
				     a->resv);
		else if (!in_file && p->cur[k].removed)
			add_conflict(err, len, "cgroup %s: reservation %s is not in the file and --prune deletes it",
				     a->cgroup, a->resv);
		else if (p->o->check_cgroups && (stat(a->cgroup, &sb) || !S_ISDIR(sb.st_mode)))
			add_conflict(err, len, "cgroup %s does not exist", a->cgroup);
		else
			continue;
		code = code ?: -ENOENT;
	}
	return code;
}

/* A transient cgroup of `portresctl run`: it goes when the run ends, prune leaves it alone. */
static bool is_run_cgroup(const char *path)
{
	const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;

	return !strncmp(base, APPLY_RUN_CGROUP_PREFIX, strlen(APPLY_RUN_CGROUP_PREFIX));
}

/* The protocol of the reservation name (the file's, else the agent's); 0 if unknown. */
static uint8_t proto_of(const struct planner *p, const char *name)
{
	const struct apply_resv *d = file_resv(p->f, name);
	long k;

	if (d)
		return d->proto;
	k = cur_by_name(p, name);
	return k >= 0 ? p->cur[k].proto : 0;
}

/* Whether the file ties cgroup to a block of proto (or to name). */
static bool file_attach(const struct planner *p, const char *cgroup, uint8_t proto, const char *name)
{
	for (size_t i = 0; i < p->f->n_attach; i++)
		if (!strcmp(p->f->attach[i].cgroup, cgroup) &&
		    (!strcmp(p->f->attach[i].resv, name) || proto_of(p, p->f->attach[i].resv) == proto))
			return true;
	return false;
}

/* The agent's attachment of a cgroup's block of proto: its reservation and how it confines. */
static const struct cur *cur_attach(const struct planner *p, const char *cgroup, uint8_t proto, uint8_t *confine)
{
	json_t *x;
	size_t i;

	for (size_t k = 0; k < p->n_cur; k++) {
		if (p->cur[k].proto != proto)
			continue;
		json_array_foreach(json_object_get(p->cur[k].j, "attachments"), i, x) {
			const char *path = json_string_value(json_object_get(x, "path"));

			if (path && !strcmp(path, cgroup)) {
				*confine = confine_of(x);
				return &p->cur[k];
			}
		}
	}
	return NULL;
}

static void plan_create(struct planner *p, size_t i)
{
	const struct apply_resv *d = &p->f->resv[i];
	char r[32];

	range_str(d->proto, d->start, d->count, r, sizeof(r));
	step(p, APPLY_CREATE, req_create(d->name, d->proto, d->start, d->count, d->mode, file_grants(d), d->netns),
	     req_by_name("delete", d->name), "create %s %s %s%s%s%s", d->name, r, state_mode_name(d->mode),
	     d->netns ? " in netns " : "", d->netns ? d->netns : "", p->want[i] == W_REPLACE ? " (replacing it)" : "");
}

/* Deleting c; undone by creating it again (new token) and attaching its cgroups again. */
static void plan_delete(struct planner *p, const struct cur *c)
{
	json_t *undo = json_array(), *x, *req;
	char r[32];
	size_t i;

	range_str(c->proto, c->start, c->count, r, sizeof(r));
	json_array_append_new(undo, req_create(c->name, c->proto, c->start, c->count, c->mode, cur_grants(c),
					       c->netns_path));
	json_array_foreach(json_object_get(c->j, "attachments"), i, x)
		json_array_append_new(undo, req_attach(json_string_value(json_object_get(x, "path")) ?: "", "name",
						       c->name, confine_of(x)));
	req = req_by_name("delete", c->name);
	/* a replaced block's cgroups are attached again; a pruned one is checked for holders first */
	if (req && (c->replaced || p->o->force))
		json_object_set_new(req, "force", json_true());
	step(p, APPLY_DELETE, req, undo, "delete %s %s%s", c->name, r,
	     c->replaced ? " (to replace it)" : " (not in the file)");
}

static const char *confine_desc(uint8_t confine)
{
	return confine == STATE_CONFINE_ALL ? " (confined, all protocols)" : confine ? " (confined)" : "";
}

/* Attaching cgroup to name (of proto); undone by putting back the cgroup's block of proto. */
static void plan_attach(struct planner *p, const char *cgroup, const char *name, uint8_t proto, uint8_t confine,
			const char *why)
{
	uint8_t had_confine = 0;
	const struct cur *had = cur_attach(p, cgroup, proto, &had_confine);
	json_t *undo;

	if (had && !had->removed)
		undo = req_attach(cgroup, had->name ? "name" : "token", had->name ?: had->token, had_confine);
	else
		undo = req_detach(cgroup, name); /* a deleted reservation's undo attaches its cgroups again */
	step(p, APPLY_ATTACH, req_attach(cgroup, "name", name, confine), undo, "attach %s -> %s%s%s", cgroup, name,
	     confine_desc(confine), why);
}

static void plan_attachments(struct planner *p)
{
	json_t *x;
	size_t i;

	for (size_t n = 0; n < p->f->n_attach; n++) {
		const struct apply_attach *a = &p->f->attach[n];
		uint8_t confine = 0, proto = proto_of(p, a->resv);
		const struct cur *had = cur_attach(p, a->cgroup, proto, &confine);

		if (had && !had->removed && had->name && !strcmp(had->name, a->resv) && confine == a->confine)
			p->plan->unchanged++;
		else
			plan_attach(p, a->cgroup, a->resv, proto, a->confine, "");
	}
	for (size_t k = 0; k < p->n_cur; k++) {
		const struct cur *c = &p->cur[k];

		if (!c->name)
			continue;
		json_array_foreach(json_object_get(c->j, "attachments"), i, x) {
			const char *path = json_string_value(json_object_get(x, "path"));
			uint8_t confine = confine_of(x);

			if (!path || file_attach(p, path, c->proto, c->name) || is_run_cgroup(path))
				continue;
			if (p->o->prune && !c->removed)
				step(p, APPLY_DETACH, req_detach(path, c->name), req_attach(path, "name", c->name, confine),
				     "detach %s (from %s, not in the file)", path, c->name);
			else if (!p->o->prune && c->replaced)
				/* deleting the old reservation took the cgroup's attachment along */
				plan_attach(p, path, c->name, c->proto, confine, " (again, after replacing it)");
		}
	}
}

int apply_plan(const struct apply_file *f, const json_t *current, const struct apply_opts *opts,
	       struct apply_plan *plan, char *err, size_t len)
{
	struct planner p = { .f = f, .o = opts, .netns_inode = opts->netns_inode, .plan = plan };
	bool *after = NULL;
	int e;

	memset(plan, 0, sizeof(*plan));
	err[0] = '\0';
	if ((e = read_current(&p, current, err, len)))
		goto out;
	p.want = calloc(f->n_resv + 1, sizeof(*p.want));
	p.cur_of = calloc(f->n_resv + 1, sizeof(*p.cur_of));
	after = calloc(f->n_resv + 1, sizeof(*after));
	if (!p.want || !p.cur_of || !after) {
		e = fail(err, len, -ENOMEM, "out of memory");
		goto out;
	}
	compare_resv(&p);
	if ((e = check_conflicts(&p, after, err, len)))
		goto out;
	/* what may fail and is easy to undo first, deletes late */
	for (size_t i = 0; i < f->n_resv; i++)
		if (p.want[i] == W_NEW && !after[i])
			plan_create(&p, i);
	for (size_t i = 0; i < f->n_resv; i++) {
		const struct cur *c = p.cur_of[i] >= 0 ? &p.cur[p.cur_of[i]] : NULL;

		if (p.want[i] == W_MODE)
			step(&p, APPLY_UPDATE, req_mode(f->resv[i].name, f->resv[i].mode), req_mode(c->name, c->mode),
			     "update %s mode %s -> %s", c->name, state_mode_name(c->mode),
			     state_mode_name(f->resv[i].mode));
		plan->unchanged += p.want[i] == W_SAME;
	}
	for (size_t k = 0; k < p.n_cur; k++)
		if (p.cur[k].removed)
			plan_delete(&p, &p.cur[k]);
	for (size_t i = 0; i < f->n_resv; i++)
		if (after[i])
			plan_create(&p, i);
	plan_attachments(&p);
	e = p.oom ? fail(err, len, -ENOMEM, "out of memory") : 0;
out:
	free(p.cur);
	free(p.want);
	free(p.cur_of);
	free(after);
	if (e)
		apply_plan_free(plan);
	return e;
}

void apply_plan_free(struct apply_plan *plan)
{
	for (size_t i = 0; i < plan->n; i++) {
		json_decref(plan->steps[i].req);
		json_decref(plan->steps[i].undo);
	}
	free(plan->steps);
	memset(plan, 0, sizeof(*plan));
}

/* --- execution ------------------------------------------------------------ */

int apply_check_holders(const struct apply_plan *plan, apply_call_fn call, void *arg, char *err, size_t len)
{
	char why[APPLY_ERR_LEN];
	int first = 0;

	err[0] = '\0';
	for (size_t i = 0; i < plan->n; i++) {
		const struct apply_step *s = &plan->steps[i];
		json_t *probe;
		int e;

		if (s->action != APPLY_DELETE || json_is_true(json_object_get(s->req, "force")))
			continue;
		/* the agent's own check, without deleting anything */
		if (!(probe = json_deep_copy(s->req)) || json_object_set_new(probe, "dry_run", json_true())) {
			json_decref(probe);
			return fail(err, len, -ENOMEM, "out of memory");
		}
		why[0] = '\0';
		e = call(arg, probe, why, sizeof(why));
		json_decref(probe);
		if (!e)
			continue;
		add_conflict(err, len, "%s: %s", s->desc, why[0] ? why : strerror(-e));
		first = first ?: e;
	}
	return first;
}

int apply_execute(const struct apply_plan *plan, apply_call_fn call, void *arg, size_t *done, char *err,
		  size_t len)
{
	char msg[APPLY_ERR_LEN], why[APPLY_ERR_LEN];
	size_t i, failed_undo = 0, undone = 0;
	bool recreated = false;
	int e = 0;

	*done = 0;
	err[0] = '\0';
	for (i = 0; i < plan->n; i++) {
		why[0] = '\0';
		if ((e = call(arg, plan->steps[i].req, why, sizeof(why))))
			break;
		(*done)++;
	}
	if (!e)
		return 0;
	snprintf(msg, sizeof(msg), "%s: %s", plan->steps[i].desc, why[0] ? why : strerror(-e));
	/* newest first; each step's undo requests in their order */
	while (i-- > 0) {
		json_t *u;
		size_t k;
		bool ok = true;

		json_array_foreach(plan->steps[i].undo, k, u) {
			char uerr[APPLY_ERR_LEN] = "";

			if (call(arg, u, uerr, sizeof(uerr))) {
				ok = false;
				if (!failed_undo++)
					snprintf(why, sizeof(why), "%s (%s)", plan->steps[i].desc, uerr);
			}
		}
		undone += ok;
		recreated |= ok && plan->steps[i].action == APPLY_DELETE;
	}
	*done -= undone;
	if (failed_undo)
		snprintf(err, len, "%s; rolled back %zu of %zu changes, could not undo: %s", msg, undone, undone + *done,
			 why);
	else
		snprintf(err, len, "%s; nothing changed (%zu change%s rolled back%s)", msg, undone, undone == 1 ? "" : "s",
			 recreated ? "; deleted reservations were created again, with new tokens" : "");
	return e;
}
