// SPDX-License-Identifier: LGPL-2.1-or-later
/* state.c - load, validate and atomically save portresd's state file. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "portres_abi.h"
#include "state.h"

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}

/* --- spellings ------------------------------------------------------------ */

const char *state_proto_name(uint8_t proto)
{
	return proto == IPPROTO_TCP ? "tcp" : proto == IPPROTO_UDP ? "udp" : NULL;
}

int state_proto_parse(const char *s)
{
	if (!strcmp(s, "tcp"))
		return IPPROTO_TCP;
	if (!strcmp(s, "udp"))
		return IPPROTO_UDP;
	return -1;
}

static const char *const mode_names[] = {
	[PORTRES_MODE_ENFORCE] = "enforce",
	[PORTRES_MODE_AUDIT] = "audit",
	[PORTRES_MODE_ADVISORY] = "advisory",
};

const char *state_mode_name(uint8_t mode)
{
	return mode < 3 ? mode_names[mode] : NULL;
}

int state_mode_parse(const char *s)
{
	for (int i = 0; i < 3; i++)
		if (!strcmp(s, mode_names[i]))
			return i;
	return -1;
}

static const char *const grant_names[] = {
	[PORTRES_GRANT_UID] = "uid",
	[PORTRES_GRANT_GID] = "gid",
	[PORTRES_GRANT_CGROUP] = "cgroup",
};

const char *state_grant_name(uint32_t type)
{
	return type >= 1 && type <= 3 ? grant_names[type] : NULL;
}

int state_grant_parse(const char *s)
{
	for (int i = 1; i <= 3; i++)
		if (!strcmp(s, grant_names[i]))
			return i;
	return -1;
}

const char *state_confine_name(uint8_t confine)
{
	return confine == STATE_CONFINE_ALL ? "all" : confine ? "true" : "false";
}

int state_boot_id(char out[STATE_BOOT_ID_LEN + 1])
{
	char buf[64] = "";
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
	size_t n;

	if (!f)
		return -errno;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	if (strlen(buf) != STATE_BOOT_ID_LEN)
		return -EIO;
	memcpy(out, buf, STATE_BOOT_ID_LEN + 1);
	return 0;
}

void state_token_format(uint64_t token, char out[17])
{
	snprintf(out, 17, "%016" PRIx64, token);
}

int state_token_parse(const char *s, uint64_t *token)
{
	uint64_t v = 0;

	if (strlen(s) != 16)
		return -EINVAL;
	for (int i = 0; i < 16; i++) {
		char c = s[i];
		unsigned d;

		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			return -EINVAL;
		v = v << 4 | d;
	}
	if (!v)
		return -EINVAL;
	*token = v;
	return 0;
}

bool state_name_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > STATE_NAME_MAX || s[0] == '-' || s[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

bool state_request_id_valid(const char *s)
{
	size_t n = strlen(s);

	if (n < STATE_REQUEST_ID_MIN || n > STATE_REQUEST_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
		      c == '-'))
			return false;
	}
	return true;
}

/* --- arrays --------------------------------------------------------------- */

void state_resv_free(struct state_resv *r)
{
	for (size_t i = 0; i < r->n_grants; i++)
		free(r->grants[i].path);
	free(r->grants);
	free(r->name);
	free(r->request_id);
	memset(r, 0, sizeof(*r));
}

void state_free(struct state *st)
{
	if (!st)
		return;
	for (size_t i = 0; i < st->n_resv; i++)
		state_resv_free(&st->resv[i]);
	for (size_t i = 0; i < st->n_netns; i++) {
		free(st->netns[i].path);
		free(st->netns[i].sysctl_added);
	}
	for (size_t i = 0; i < st->n_attach; i++)
		free(st->attach[i].path);
	free(st->resv);
	free(st->netns);
	free(st->attach);
	memset(st, 0, sizeof(*st));
}

int state_resv_copy(struct state_resv *dst, const struct state_resv *src)
{
	*dst = *src;
	dst->name = NULL;
	dst->request_id = NULL;
	dst->grants = NULL;
	dst->n_grants = 0;
	if (src->name && !(dst->name = strdup(src->name)))
		goto nomem;
	if (src->request_id && !(dst->request_id = strdup(src->request_id)))
		goto nomem;
	if (src->n_grants) {
		dst->grants = calloc(src->n_grants, sizeof(*dst->grants));
		if (!dst->grants)
			goto nomem;
		for (size_t i = 0; i < src->n_grants; i++) {
			dst->grants[i] = src->grants[i];
			dst->grants[i].path = NULL;
			dst->n_grants = i + 1;
			if (src->grants[i].path && !(dst->grants[i].path = strdup(src->grants[i].path)))
				goto nomem;
		}
	}
	return 0;
nomem:
	state_resv_free(dst);
	return -ENOMEM;
}

int state_add_resv(struct state *st, const struct state_resv *r)
{
	struct state_resv *n = realloc(st->resv, (st->n_resv + 1) * sizeof(*n));

	if (!n)
		return -ENOMEM;
	st->resv = n;
	if (state_resv_copy(&st->resv[st->n_resv], r))
		return -ENOMEM;
	st->n_resv++;
	return 0;
}

void state_del_resv(struct state *st, size_t i)
{
	state_resv_free(&st->resv[i]);
	memmove(&st->resv[i], &st->resv[i + 1], (st->n_resv - i - 1) * sizeof(st->resv[0]));
	st->n_resv--;
}

int state_add_attach(struct state *st, const struct state_attach *a)
{
	struct state_attach *n = realloc(st->attach, (st->n_attach + 1) * sizeof(*n));

	if (!n)
		return -ENOMEM;
	st->attach = n;
	n[st->n_attach] = *a;
	if (!(n[st->n_attach].path = strdup(a->path)))
		return -ENOMEM;
	st->n_attach++;
	return 0;
}

void state_del_attach(struct state *st, size_t i)
{
	free(st->attach[i].path);
	memmove(&st->attach[i], &st->attach[i + 1], (st->n_attach - i - 1) * sizeof(st->attach[0]));
	st->n_attach--;
}

int state_add_netns(struct state *st, const struct state_netns *ns)
{
	struct state_netns *n = realloc(st->netns, (st->n_netns + 1) * sizeof(*n)), *d;

	if (!n)
		return -ENOMEM;
	st->netns = n;
	d = &n[st->n_netns];
	*d = *ns;
	d->path = NULL;
	d->sysctl_added = NULL;
	if ((ns->path && !(d->path = strdup(ns->path))) ||
	    (ns->sysctl_added && !(d->sysctl_added = malloc(sizeof(*d->sysctl_added))))) {
		free(d->path);
		return -ENOMEM;
	}
	if (ns->sysctl_added)
		*d->sysctl_added = *ns->sysctl_added;
	st->n_netns++;
	return 0;
}

struct state_netns *state_find_netns(const struct state *st, uint64_t cookie)
{
	for (size_t i = 0; i < st->n_netns; i++)
		if (st->netns[i].cookie == cookie)
			return &st->netns[i];
	return NULL;
}

struct state_resv *state_find_token(const struct state *st, uint64_t token)
{
	for (size_t i = 0; i < st->n_resv; i++)
		if (st->resv[i].token == token)
			return &st->resv[i];
	return NULL;
}

struct state_resv *state_find_name(const struct state *st, const char *name)
{
	for (size_t i = 0; i < st->n_resv; i++)
		if (st->resv[i].name && !strcmp(st->resv[i].name, name))
			return &st->resv[i];
	return NULL;
}

/* --- validation ----------------------------------------------------------- */

/* Orders of reservation indexes for state_validate's checks of neighbours. */
static const struct state *sort_st;

static int by_token(const void *x, const void *y)
{
	uint64_t a = sort_st->resv[*(const size_t *)x].token, b = sort_st->resv[*(const size_t *)y].token;

	return (a > b) - (a < b);
}

static int by_name(const void *x, const void *y)
{
	const char *a = sort_st->resv[*(const size_t *)x].name, *b = sort_st->resv[*(const size_t *)y].name;

	return !a || !b ? !!a - !!b : strcmp(a, b);
}

static int by_request(const void *x, const void *y)
{
	const char *a = sort_st->resv[*(const size_t *)x].request_id, *b = sort_st->resv[*(const size_t *)y].request_id;

	return !a || !b ? !!a - !!b : strcmp(a, b);
}

static int by_block(const void *x, const void *y);

void state_sort_blocks(const struct state *st, size_t *idx)
{
	sort_st = st;
	qsort(idx, st->n_resv, sizeof(*idx), by_block);
}

static int by_block(const void *x, const void *y)
{
	const struct state_resv *a = &sort_st->resv[*(const size_t *)x], *b = &sort_st->resv[*(const size_t *)y];

	if (a->netns != b->netns)
		return (a->netns > b->netns) - (a->netns < b->netns);
	if (a->proto != b->proto)
		return a->proto - b->proto;
	return a->start - b->start;
}

/* The reservation of token among those sorted by token, or NULL. */
static const struct state_resv *find_sorted(const struct state *st, const size_t *idx, uint64_t token)
{
	size_t lo = 0, hi = st->n_resv;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		uint64_t t = st->resv[idx[mid]].token;

		if (t == token)
			return &st->resv[idx[mid]];
		if (t < token)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* Reported as "reservations[i] ... reservations[j]" with j < i, as a scan in file order finds them. */
static void order_pair(size_t *i, size_t *j)
{
	if (*j > *i) {
		size_t t = *i;

		*i = *j;
		*j = t;
	}
}

/* Neighbours in sorted orders: O(n log n) for the tens of thousands of reservations the agent keeps. */
static int validate_pairs(const struct state *st, size_t *idx, const char *what, char *err, size_t errlen)
{
	size_t n = st->n_resv, i, j;

	sort_st = st;
	qsort(idx, n, sizeof(*idx), by_name);
	for (size_t k = 1; k < n; k++) {
		i = idx[k];
		j = idx[k - 1];
		if (st->resv[i].name && st->resv[j].name && !strcmp(st->resv[i].name, st->resv[j].name)) {
			order_pair(&i, &j);
			return fail(err, errlen, -EINVAL, "%s: reservations[%zu].name: \"%s\" used twice", what, i,
				    st->resv[i].name);
		}
	}
	qsort(idx, n, sizeof(*idx), by_request);
	for (size_t k = 1; k < n; k++) {
		i = idx[k];
		j = idx[k - 1];
		if (st->resv[i].request_id && st->resv[j].request_id &&
		    !strcmp(st->resv[i].request_id, st->resv[j].request_id)) {
			order_pair(&i, &j);
			return fail(err, errlen, -EINVAL, "%s: reservations[%zu].request.id: same as reservations[%zu]",
				    what, i, j);
		}
	}
	qsort(idx, n, sizeof(*idx), by_block);
	for (size_t k = 1; k < n; k++) {
		const struct state_resv *o = &st->resv[idx[k - 1]], *r = &st->resv[idx[k]];

		if (o->netns == r->netns && o->proto == r->proto && r->start < o->start + o->count) {
			i = idx[k];
			j = idx[k - 1];
			order_pair(&i, &j);
			r = &st->resv[i];
			o = &st->resv[j];
			return fail(err, errlen, -EINVAL,
				    "%s: reservations[%zu] (%s %u-%u) overlaps reservations[%zu] (%u-%u)", what, i,
				    state_proto_name(r->proto), r->start, r->start + r->count - 1, j, o->start,
				    o->start + o->count - 1);
		}
	}
	/* last: attachments look tokens up in this order */
	qsort(idx, n, sizeof(*idx), by_token);
	for (size_t k = 1; k < n; k++) {
		i = idx[k];
		j = idx[k - 1];
		if (st->resv[i].token == st->resv[j].token) {
			order_pair(&i, &j);
			return fail(err, errlen, -EINVAL, "%s: reservations[%zu].token: same as reservations[%zu]", what, i,
				    j);
		}
	}
	return 0;
}

int state_validate(const struct state *st, const char *what, char *err, size_t errlen)
{
	size_t *idx = calloc(st->n_resv + 1, sizeof(*idx));
	const struct state_attach **att = NULL;
	uint8_t *proto = NULL;
	int ret = 0;

	if (!idx)
		return fail(err, errlen, -ENOMEM, "%s: out of memory", what);
	for (size_t i = 0; i < st->n_resv; i++) {
		const struct state_resv *r = &st->resv[i];

		idx[i] = i;
		if (!r->token)
			ret = fail(err, errlen, -EINVAL, "%s: reservations[%zu].token: must not be 0", what, i);
		else if (!state_proto_name(r->proto))
			ret = fail(err, errlen, -EINVAL, "%s: reservations[%zu].proto: not tcp or udp", what, i);
		else if (r->start == 0 || r->count == 0 || (uint32_t)r->start + r->count > 65536)
			ret = fail(err, errlen, -EINVAL, "%s: reservations[%zu]: bad range start %u count %u", what, i,
				   r->start, r->count);
		else if (!state_mode_name(r->mode))
			ret = fail(err, errlen, -EINVAL, "%s: reservations[%zu].mode: unknown", what, i);
		else if (r->name && !state_name_valid(r->name))
			ret = fail(err, errlen, -EINVAL, "%s: reservations[%zu].name: invalid name", what, i);
		else if (r->request_id && !state_request_id_valid(r->request_id))
			ret = fail(err, errlen, -EINVAL, "%s: reservations[%zu].request.id: %d..%d of A-Z a-z 0-9 _ -",
				   what, i, STATE_REQUEST_ID_MIN, STATE_REQUEST_ID_MAX);
		else if (r->netns && !state_find_netns(st, r->netns))
			ret = fail(err, errlen, -EINVAL, "%s: reservations[%zu].netns: no netns entry with cookie %" PRIu64,
				   what, i, r->netns);
		for (size_t g = 0; !ret && g < r->n_grants; g++) {
			const struct state_grant *gr = &r->grants[g];

			if (!state_grant_name(gr->type))
				ret = fail(err, errlen, -EINVAL, "%s: reservations[%zu].grants[%zu].type: unknown", what,
					   i, g);
			else if (gr->type != PORTRES_GRANT_CGROUP && gr->id > UINT32_MAX)
				ret = fail(err, errlen, -EINVAL, "%s: reservations[%zu].grants[%zu].id: out of range",
					   what, i, g);
		}
		if (ret)
			goto out;
	}
	if ((ret = validate_pairs(st, idx, what, err, errlen)))
		goto out;
	for (size_t i = 0; i < st->n_netns; i++) {
		const struct state_netns *n = &st->netns[i];

		if (!n->cookie || !n->inode)
			ret = fail(err, errlen, -EINVAL, "%s: netns[%zu]: cookie and inode must not be 0", what, i);
		else if (n->path && n->path[0] != '/')
			ret = fail(err, errlen, -EINVAL, "%s: netns[%zu].path: not an absolute path", what, i);
		for (size_t j = 0; !ret && j < i; j++)
			if (st->netns[j].cookie == n->cookie)
				ret = fail(err, errlen, -EINVAL, "%s: netns[%zu].cookie: same as netns[%zu]", what, i, j);
		if (ret)
			goto out;
	}
	/* attachments (bounded by the cgroup map's size), each with the protocol of its token */
	att = calloc(st->n_attach + 1, sizeof(*att));
	proto = calloc(st->n_attach + 1, 1);
	if (!att || !proto) {
		ret = fail(err, errlen, -ENOMEM, "%s: out of memory", what);
		goto out;
	}
	for (size_t i = 0; i < st->n_attach; i++) {
		const struct state_attach *a = &st->attach[i];
		const struct state_resv *r = find_sorted(st, idx, a->token);

		if (a->confine > STATE_CONFINE_ALL)
			ret = fail(err, errlen, -EINVAL, "%s: attachments[%zu].confine: unknown", what, i);
		else if (!a->path || a->path[0] != '/')
			ret = fail(err, errlen, -EINVAL, "%s: attachments[%zu].path: not an absolute path", what, i);
		else if (!r)
			ret = fail(err, errlen, -EINVAL, "%s: attachments[%zu].token: no such reservation", what, i);
		if (ret)
			goto out;
		att[i] = a;
		proto[i] = r->proto;
	}
	/* a cgroup holds one block per protocol: same path and protocol twice is refused */
	for (size_t i = 0; i < st->n_attach; i++)
		for (size_t j = 0; j < i; j++)
			if (proto[i] == proto[j] && !strcmp(att[i]->path, att[j]->path)) {
				ret = fail(err, errlen, -EINVAL, "%s: attachments[%zu].path: attached twice to %s blocks",
					   what, i, state_proto_name(proto[i]));
				goto out;
			}
out:
	free(idx);
	free(att);
	free(proto);
	return ret;
}

/* --- JSON ----------------------------------------------------------------- */

static json_t *resv_to_json(const struct state_resv *r)
{
	char tok[17];
	json_t *o, *grants = json_array();

	state_token_format(r->token, tok);
	for (size_t g = 0; grants && g < r->n_grants; g++) {
		json_t *go = json_pack("{s:s, s:I}", "type", state_grant_name(r->grants[g].type),
				       "id", (json_int_t)r->grants[g].id);

		if (go && r->grants[g].path)
			json_object_set_new(go, "path", json_string(r->grants[g].path));
		json_array_append_new(grants, go);
	}
	o = json_pack("{s:s, s:s, s:i, s:i, s:s, s:o}", "token", tok, "proto", state_proto_name(r->proto),
		      "start", r->start, "count", r->count, "mode", state_mode_name(r->mode),
		      "grants", grants);
	if (o && r->name)
		json_object_set_new(o, "name", json_string(r->name));
	if (o && r->netns)
		json_object_set_new(o, "netns", json_integer((json_int_t)r->netns));
	if (o && r->request_id)
		json_object_set_new(o, "request", json_pack("{s:s, s:I}", "id", r->request_id, "uid",
							    (json_int_t)r->request_uid));
	return o;
}

static json_t *netns_to_json(const struct state_netns *n)
{
	char *added = n->sysctl_added ? portset_format(n->sysctl_added) : NULL;
	json_t *o = json_pack("{s:I, s:I, s:s?, s:s?}", "cookie", (json_int_t)n->cookie, "inode",
			      (json_int_t)n->inode, "path", n->path, "sysctl_added", added);

	if (o && n->nsid >= 0)
		json_object_set_new(o, "nsid", json_integer(n->nsid));
	free(added);
	return o;
}

static json_t *confine_json(uint8_t confine)
{
	return confine == STATE_CONFINE_ALL ? json_string("all") : json_boolean(confine);
}

static json_t *state_to_json(const struct state *st)
{
	json_t *root, *resv = json_array(), *att = json_array(), *netns = json_array();
	char *added = portset_format(&st->sysctl_added), boot[STATE_BOOT_ID_LEN + 1];

	for (size_t i = 0; resv && i < st->n_resv; i++)
		json_array_append_new(resv, resv_to_json(&st->resv[i]));
	for (size_t i = 0; netns && i < st->n_netns; i++)
		json_array_append_new(netns, netns_to_json(&st->netns[i]));
	for (size_t i = 0; att && i < st->n_attach; i++) {
		char tok[17];

		state_token_format(st->attach[i].token, tok);
		json_array_append_new(att, json_pack("{s:s, s:I, s:s, s:o, s:{s:b, s:I}}", "path", st->attach[i].path,
						     "cgroup_id", (json_int_t)st->attach[i].cgroup_id,
						     "token", tok, "confine", confine_json(st->attach[i].confine), "made_by",
						     "admin", st->attach[i].by_admin, "uid",
						     (json_int_t)st->attach[i].by_uid));
	}
	/* the boot this is saved in: another network namespace dies with it */
	if (state_boot_id(boot))
		snprintf(boot, sizeof(boot), "%s", st->boot_id);
	root = json_pack("{s:i, s:s?, s:o, s:o, s:o, s:s?}", "version", STATE_VERSION, "boot_id",
			 boot[0] ? boot : NULL, "reservations", resv, "netns", netns, "attachments", att,
			 "sysctl_added", added);
	free(added);
	return root;
}

struct jctx {
	const char *file;
	char *err;
	size_t errlen;
	int version;
};

static int get_uint(struct jctx *c, json_t *o, const char *key, const char *where, uint64_t min,
		    uint64_t max, bool required, uint64_t *out)
{
	json_t *v = json_object_get(o, key);

	if (!v) {
		if (!required)
			return 1;
		return fail(c->err, c->errlen, -EINVAL, "%s: %s.%s: missing", c->file, where, key);
	}
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (uint64_t)json_integer_value(v) < min || (uint64_t)json_integer_value(v) > max)
		return fail(c->err, c->errlen, -EINVAL, "%s: %s.%s: must be an integer %" PRIu64 "..%" PRIu64,
			    c->file, where, key, min, max);
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static int get_str(struct jctx *c, json_t *o, const char *key, const char *where, bool required,
		   const char **out)
{
	json_t *v = json_object_get(o, key);

	if (!v) {
		if (!required)
			return 1;
		return fail(c->err, c->errlen, -EINVAL, "%s: %s.%s: missing", c->file, where, key);
	}
	if (!json_is_string(v))
		return fail(c->err, c->errlen, -EINVAL, "%s: %s.%s: must be a string", c->file, where, key);
	*out = json_string_value(v);
	return 0;
}

static int get_token(struct jctx *c, json_t *o, const char *where, uint64_t *tok)
{
	const char *s = NULL;
	int err = get_str(c, o, "token", where, true, &s);

	if (err)
		return err;
	if (state_token_parse(s, tok))
		return fail(c->err, c->errlen, -EINVAL, "%s: %s.token: must be 16 hex digits, not 0",
			    c->file, where);
	return 0;
}

/* A reservation's optional "request": {"id", "uid"} (formats checked by state_validate). */
static int request_from_json(struct jctx *c, json_t *req, const char *where, struct state_resv *r)
{
	const char *id = NULL;
	char rw[96];
	uint64_t uid;
	int err;

	if (!req)
		return 0;
	snprintf(rw, sizeof(rw), "%s.request", where);
	if (!json_is_object(req))
		return fail(c->err, c->errlen, -EINVAL, "%s: %s: must be an object", c->file, rw);
	if ((err = get_str(c, req, "id", rw, true, &id)) || (err = get_uint(c, req, "uid", rw, 0, UINT32_MAX, true, &uid)))
		return err;
	if (!(r->request_id = strdup(id)))
		return -ENOMEM;
	r->request_uid = (uint32_t)uid;
	return 0;
}

static int resv_from_json(struct jctx *c, json_t *o, const char *where, struct state_resv *r)
{
	const char *s = NULL;
	uint64_t v;
	json_t *grants;
	char gw[96];
	int err, n;

	if (!json_is_object(o))
		return fail(c->err, c->errlen, -EINVAL, "%s: %s: must be an object", c->file, where);
	if ((err = get_token(c, o, where, &r->token)))
		return err;
	if ((err = get_str(c, o, "proto", where, true, &s)))
		return err;
	if ((n = state_proto_parse(s)) < 0)
		return fail(c->err, c->errlen, -EINVAL, "%s: %s.proto: \"%s\" is not tcp or udp", c->file, where, s);
	r->proto = (uint8_t)n;
	if ((err = get_uint(c, o, "start", where, 1, 65535, true, &v)))
		return err;
	r->start = (uint16_t)v;
	if ((err = get_uint(c, o, "count", where, 1, 65535, true, &v)))
		return err;
	r->count = (uint16_t)v;
	r->mode = PORTRES_MODE_ENFORCE;
	err = get_str(c, o, "mode", where, false, &s);
	if (err < 0)
		return err;
	if (!err) {
		if ((n = state_mode_parse(s)) < 0)
			return fail(c->err, c->errlen, -EINVAL, "%s: %s.mode: \"%s\" is not enforce, audit or advisory",
				    c->file, where, s);
		r->mode = (uint8_t)n;
	}
	err = get_str(c, o, "name", where, false, &s);
	if (err < 0)
		return err;
	if (!err && !(r->name = strdup(s)))
		return -ENOMEM;
	if (c->version >= 2 && (err = get_uint(c, o, "netns", where, 1, INT64_MAX, false, &r->netns)) < 0)
		return err;
	if ((err = request_from_json(c, json_object_get(o, "request"), where, r)))
		return err;
	grants = json_object_get(o, "grants");
	if (!grants)
		return 0;
	if (!json_is_array(grants))
		return fail(c->err, c->errlen, -EINVAL, "%s: %s.grants: must be an array", c->file, where);
	r->grants = calloc(json_array_size(grants) + 1, sizeof(*r->grants));
	if (!r->grants)
		return -ENOMEM;
	for (size_t g = 0; g < json_array_size(grants); g++) {
		json_t *go = json_array_get(grants, g);
		struct state_grant *gr = &r->grants[g];

		snprintf(gw, sizeof(gw), "%s.grants[%zu]", where, g);
		if (!json_is_object(go))
			return fail(c->err, c->errlen, -EINVAL, "%s: %s: must be an object", c->file, gw);
		if ((err = get_str(c, go, "type", gw, true, &s)))
			return err;
		if ((n = state_grant_parse(s)) < 0)
			return fail(c->err, c->errlen, -EINVAL, "%s: %s.type: \"%s\" is not uid, gid or cgroup",
				    c->file, gw, s);
		gr->type = (uint32_t)n;
		if ((err = get_uint(c, go, "id", gw, 0, n == PORTRES_GRANT_CGROUP ? INT64_MAX : UINT32_MAX,
				    true, &gr->id)))
			return err;
		r->n_grants = g + 1;
		err = get_str(c, go, "path", gw, false, &s);
		if (err < 0)
			return err;
		if (!err && !(gr->path = strdup(s)))
			return -ENOMEM;
	}
	return 0;
}

static int netns_from_json(struct jctx *c, json_t *o, const char *where, struct state_netns *n)
{
	const char *s = NULL;
	uint64_t v;
	int err;

	if (!json_is_object(o))
		return fail(c->err, c->errlen, -EINVAL, "%s: %s: must be an object", c->file, where);
	if ((err = get_uint(c, o, "cookie", where, 1, INT64_MAX, true, &n->cookie)) ||
	    (err = get_uint(c, o, "inode", where, 1, INT64_MAX, true, &n->inode)))
		return err;
	n->nsid = -1;
	if ((err = get_uint(c, o, "nsid", where, 0, INT32_MAX, false, &v)) < 0)
		return err;
	if (!err)
		n->nsid = (int32_t)v;
	if ((err = get_str(c, o, "path", where, false, &s)) < 0)
		return err;
	if (!err && !(n->path = strdup(s)))
		return -ENOMEM;
	if ((err = get_str(c, o, "sysctl_added", where, false, &s)) < 0)
		return err;
	if (!err) {
		if (!(n->sysctl_added = calloc(1, sizeof(*n->sysctl_added))))
			return -ENOMEM;
		if (portset_parse(s, n->sysctl_added))
			return fail(c->err, c->errlen, -EINVAL, "%s: %s.sysctl_added: \"%.64s\" is not a port list like \"1,2-5\"",
				    c->file, where, s);
	}
	return 0;
}

/* An attachment's "made_by"; absent: an administrator (then the only ones who attached persistent tokens). */
static int made_by_from_json(struct jctx *c, json_t *by, const char *where, struct state_attach *a)
{
	json_t *admin;
	char bw[96];
	uint64_t uid;
	int err;

	a->by_admin = true;
	a->by_uid = 0;
	if (!by)
		return 0;
	snprintf(bw, sizeof(bw), "%s.made_by", where);
	if (!json_is_object(by))
		return fail(c->err, c->errlen, -EINVAL, "%s: %s: must be an object", c->file, bw);
	admin = json_object_get(by, "admin");
	if (!json_is_boolean(admin))
		return fail(c->err, c->errlen, -EINVAL, "%s: %s.admin: must be true or false", c->file, bw);
	if ((err = get_uint(c, by, "uid", bw, 0, UINT32_MAX, true, &uid)))
		return err;
	a->by_admin = json_is_true(admin);
	a->by_uid = (uint32_t)uid;
	return 0;
}

static int state_from_json(struct jctx *c, json_t *root, struct state *st)
{
	json_t *arr, *o;
	const char *s = NULL;
	uint64_t v;
	char where[64];
	int err;

	if (!json_is_object(root))
		return fail(c->err, c->errlen, -EINVAL, "%s: top level: must be an object", c->file);
	if ((err = get_uint(c, root, "version", "top level", 0, INT64_MAX, true, &v)))
		return err;
	if (v < STATE_VERSION_MIN || v > STATE_VERSION)
		return fail(c->err, c->errlen, -EINVAL, "%s: version: %" PRIu64 " is not supported (this reads %d to %d)",
			    c->file, v, STATE_VERSION_MIN, STATE_VERSION);
	c->version = (int)v;
	if (v >= 2) {
		if ((err = get_str(c, root, "boot_id", "top level", false, &s)) < 0)
			return err;
		if (!err && strlen(s) != STATE_BOOT_ID_LEN)
			return fail(c->err, c->errlen, -EINVAL, "%s: boot_id: not a boot id like the kernel's", c->file);
		if (!err)
			memcpy(st->boot_id, s, STATE_BOOT_ID_LEN + 1);
		arr = json_object_get(root, "netns");
		if (arr && !json_is_array(arr))
			return fail(c->err, c->errlen, -EINVAL, "%s: netns: must be an array", c->file);
		for (size_t i = 0; arr && i < json_array_size(arr); i++) {
			struct state_netns n = { 0 };

			snprintf(where, sizeof(where), "netns[%zu]", i);
			err = netns_from_json(c, json_array_get(arr, i), where, &n);
			if (!err)
				err = state_add_netns(st, &n);
			free(n.path);
			free(n.sysctl_added);
			if (err)
				return err;
		}
	}
	arr = json_object_get(root, "reservations");
	if (arr && !json_is_array(arr))
		return fail(c->err, c->errlen, -EINVAL, "%s: reservations: must be an array", c->file);
	for (size_t i = 0; arr && i < json_array_size(arr); i++) {
		struct state_resv r = { 0 };

		snprintf(where, sizeof(where), "reservations[%zu]", i);
		err = resv_from_json(c, json_array_get(arr, i), where, &r);
		if (!err)
			err = state_add_resv(st, &r);
		state_resv_free(&r);
		if (err)
			return err;
	}
	arr = json_object_get(root, "attachments");
	if (arr && !json_is_array(arr))
		return fail(c->err, c->errlen, -EINVAL, "%s: attachments: must be an array", c->file);
	for (size_t i = 0; arr && i < json_array_size(arr); i++) {
		struct state_attach a = { 0 };
		json_t *cf;

		o = json_array_get(arr, i);
		snprintf(where, sizeof(where), "attachments[%zu]", i);
		if (!json_is_object(o))
			return fail(c->err, c->errlen, -EINVAL, "%s: %s: must be an object", c->file, where);
		if ((err = get_str(c, o, "path", where, true, &s)))
			return err;
		a.path = (char *)s;
		if ((err = get_uint(c, o, "cgroup_id", where, 0, INT64_MAX, true, &a.cgroup_id)))
			return err;
		if ((err = get_token(c, o, where, &a.token)))
			return err;
		cf = json_object_get(o, "confine");
		if (c->version >= 2 && json_is_string(cf) && !strcmp(json_string_value(cf), "all"))
			a.confine = STATE_CONFINE_ALL;
		else if (cf && !json_is_boolean(cf))
			return fail(c->err, c->errlen, -EINVAL, "%s: %s.confine: must be true, false%s", c->file, where,
				    c->version >= 2 ? " or \"all\"" : "");
		else
			a.confine = cf && json_is_true(cf) ? STATE_CONFINE : STATE_CONFINE_NONE;
		if ((err = made_by_from_json(c, json_object_get(o, "made_by"), where, &a)))
			return err;
		if ((err = state_add_attach(st, &a)))
			return err;
	}
	err = get_str(c, root, "sysctl_added", "top level", false, &s);
	if (err < 0)
		return err;
	if (!err && portset_parse(s, &st->sysctl_added))
		return fail(c->err, c->errlen, -EINVAL, "%s: sysctl_added: \"%.64s\" is not a port list like \"1,2-5\"",
			    c->file, s);
	return state_validate(st, c->file, c->err, c->errlen);
}

static int state_path(const char *dir, char *buf, size_t len)
{
	if ((size_t)snprintf(buf, len, "%s/%s", dir, STATE_FILE) >= len)
		return -ENAMETOOLONG;
	return 0;
}

/* The state in root (taken); st is freed on an error. */
static int state_from_root(struct jctx *c, json_t *root, struct state *st)
{
	int ret = state_from_json(c, root, st);

	json_decref(root);
	if (ret) {
		if (ret == -ENOMEM)
			fail(c->err, c->errlen, ret, "%s: out of memory", c->file);
		state_free(st);
	}
	return ret;
}

int state_load(const char *dir, struct state *st, char *err, size_t errlen)
{
	char path[PATH_MAX];
	struct jctx c = { .file = path, .err = err, .errlen = errlen };
	json_error_t jerr;
	json_t *root;
	int ret;

	memset(st, 0, sizeof(*st));
	if ((ret = state_path(dir, path, sizeof(path))))
		return fail(err, errlen, ret, "%s: state directory path too long", dir);
	if (access(path, F_OK) && errno == ENOENT)
		return 0;
	root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		if (json_error_code(&jerr) == json_error_cannot_open_file)
			return fail(err, errlen, -EIO, "%s: %s", path, jerr.text);
		return fail(err, errlen, -EINVAL, "%s:%d:%d: %s (torn or corrupt state file; not modified)",
			    path, jerr.line, jerr.column, jerr.text);
	}
	return state_from_root(&c, root, st);
}

int state_parse(const char *text, size_t len, const char *file, struct state *st, char *err, size_t errlen)
{
	struct jctx c = { .file = file, .err = err, .errlen = errlen };
	json_error_t jerr;
	json_t *root;

	memset(st, 0, sizeof(*st));
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return fail(err, errlen, -EINVAL, "%s:%d:%d: %s", file, jerr.line, jerr.column, jerr.text);
	return state_from_root(&c, root, st);
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int state_save(const char *dir, const struct state *st, bool durable, char *err, size_t errlen)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	json_t *root = NULL;
	char *text = NULL;
	int fd = -1, dfd = -1, ret;

	if ((ret = state_path(dir, path, sizeof(path))))
		return fail(err, errlen, ret, "%s: state directory path too long", dir);
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmpXXXXXX", path) >= sizeof(tmp))
		return fail(err, errlen, -ENAMETOOLONG, "%s: state directory path too long", dir);
	root = state_to_json(st);
	text = root ? json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	if (!text) {
		ret = fail(err, errlen, -ENOMEM, "%s: out of memory", path);
		goto cleanup;
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		ret = fail(err, errlen, -errno, "%s: cannot create temporary file: %s", tmp, strerror(errno));
		goto cleanup;
	}
	if (fchmod(fd, 0600) || (ret = write_all(fd, text, strlen(text))) ||
	    (ret = write_all(fd, "\n", 1)) || (durable && fsync(fd))) {
		ret = ret ? ret : -errno;
		fail(err, errlen, ret, "%s: cannot write: %s (old state kept)", tmp, strerror(-ret));
		goto cleanup;
	}
	if (close(fd)) {
		fd = -1;
		ret = fail(err, errlen, -errno, "%s: cannot write: %s (old state kept)", tmp, strerror(errno));
		goto cleanup;
	}
	fd = -1;
	if (rename(tmp, path)) {
		ret = fail(err, errlen, -errno, "%s: cannot rename into place: %s", path, strerror(errno));
		goto cleanup;
	}
	tmp[0] = '\0';
	if (durable) {
		dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0 || fsync(dfd)) {
			ret = fail(err, errlen, -errno, "%s: cannot fsync directory: %s", dir, strerror(errno));
			goto cleanup;
		}
	}
	ret = 0;
cleanup:
	if (dfd >= 0)
		close(dfd);
	if (fd >= 0)
		close(fd);
	if (tmp[0] && ret)
		unlink(tmp);
	free(text);
	json_decref(root);
	return ret;
}
