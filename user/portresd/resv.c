// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * resv.c - the agent's table of reservations: wildcard block choice, holders
 * of ports, saving, ending (the netns they live in: netns.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/random.h>
#include <unistd.h>

#include "portresd.h"
#include "sockdiag.h"

/* --- the table ------------------------------------------------------------ */

struct resv *resv_find(struct agent *a, uint64_t token)
{
	for (size_t i = 0; i < a->n_resv; i++)
		if (a->resv[i].token == token)
			return &a->resv[i];
	return NULL;
}

struct resv *resv_find_range(struct agent *a, uint64_t netns, uint8_t proto, uint16_t start, uint16_t count)
{
	for (size_t i = 0; i < a->n_resv; i++) {
		struct resv *r = &a->resv[i];

		if (r->r.netns == netns && r->r.proto == proto && r->r.start == start && r->r.count == count)
			return r;
	}
	return NULL;
}

struct resv *resv_overlap(struct agent *a, uint64_t netns, uint8_t proto, uint32_t start, uint32_t count)
{
	for (size_t i = 0; i < a->n_resv; i++) {
		struct resv *r = &a->resv[i];

		if (r->r.netns == netns && r->r.proto == proto && start < (uint32_t)r->r.start + r->r.count &&
		    r->r.start < start + count)
			return r;
	}
	return NULL;
}

int resv_insert(struct agent *a, uint64_t token, const struct portres_resv *r, uint32_t uid, struct netns *ns)
{
	struct resv *n = realloc(a->resv, (a->n_resv + 1) * sizeof(*n));

	if (!n)
		return -ENOMEM;
	a->resv = n;
	n[a->n_resv++] = (struct resv){ .token = token, .r = *r, .uid = uid, .ns = ns, .created = time(NULL) };
	return 0;
}

void resv_remove(struct agent *a, uint64_t token)
{
	struct resv *r = resv_find(a, token);

	if (!r)
		return;
	*r = a->resv[--a->n_resv];
}

int resv_new_token(struct agent *a, uint64_t *token)
{
	do {
		if (getrandom(token, sizeof(*token), 0) != sizeof(*token))
			return -errno;
	} while (*token == 0 || resv_find(a, *token));
	return 0;
}

uint64_t resv_runtime_ports(struct agent *a, uint32_t uid)
{
	uint64_t n = 0;

	for (size_t i = 0; i < a->n_resv; i++)
		if (a->resv[i].r.kind == PORTRES_KIND_RUNTIME && a->resv[i].uid == uid)
			n += a->resv[i].r.count;
	return n;
}

json_t *resv_json(struct agent *a, const struct resv *r)
{
	const struct state_resv *sr = r->r.kind == PORTRES_KIND_PERSISTENT ? state_find_token(&a->st, r->token) : NULL;
	char tok[17];
	json_t *o, *grants = json_array();

	state_token_format(r->token, tok);
	o = json_pack("{s:s, s:s, s:i, s:i, s:i, s:s, s:s, s:I, s:b}", "token", tok, "proto",
		      state_proto_name(r->r.proto), "start", r->r.start, "count", r->r.count, "end",
		      r->r.start + r->r.count - 1, "kind",
		      r->r.kind == PORTRES_KIND_RUNTIME ? "runtime" : "persistent", "mode",
		      state_mode_name(r->r.mode) ? state_mode_name(r->r.mode) : "?", "netns",
		      (json_int_t)r->r.netns, "dead", (r->r.flags & PORTRES_RESV_DEAD) != 0);
	if (!o)
		return NULL;
	netns_json(o, r->ns);
	if (r->r.kind == PORTRES_KIND_RUNTIME) {
		json_object_set_new(o, "owner_pid", json_integer(r->r.owner_tgid));
		json_object_set_new(o, "uid", json_integer(r->uid));
	}
	if (sr && sr->name)
		json_object_set_new(o, "name", json_string(sr->name));
	for (size_t g = 0; sr && g < sr->n_grants; g++) {
		json_t *go = json_pack("{s:s, s:I}", "type", state_grant_name(sr->grants[g].type), "id",
				       (json_int_t)sr->grants[g].id);

		if (go && sr->grants[g].path)
			json_object_set_new(go, "path", json_string(sr->grants[g].path));
		json_array_append_new(grants, go);
	}
	json_object_set_new(o, "grants", grants);
	return o;
}

/* --- saving --------------------------------------------------------------- */

int agent_save(struct agent *a, bool durable, char *err, size_t errlen)
{
	struct state view = a->st;
	int ret;

	/* Attachments of runtime tokens die with them: only persistent ones are saved. */
	view.attach = calloc(a->st.n_attach + 1, sizeof(*view.attach));
	/* The other netns persistent reservations live in, as the table knows them (borrowed). */
	view.netns = calloc(a->n_ns + 1, sizeof(*view.netns));
	if (!view.attach || !view.netns) {
		free(view.attach);
		free(view.netns);
		return -ENOMEM;
	}
	view.n_attach = 0;
	for (size_t i = 0; i < a->st.n_attach; i++)
		if (state_find_token(&a->st, a->st.attach[i].token))
			view.attach[view.n_attach++] = a->st.attach[i];
	view.n_netns = 0;
	for (size_t i = 0; i < a->n_ns; i++) {
		struct netns *ns = a->ns[i];
		bool used = false;

		for (size_t k = 0; !ns->own && !used && k < a->st.n_resv; k++)
			used = a->st.resv[k].netns == ns->cookie;
		if (used)
			view.netns[view.n_netns++] = (struct state_netns){ .cookie = ns->cookie, .inode = ns->inode,
									   .nsid = ns->nsid, .path = ns->path,
									   .sysctl_added = &ns->owned };
	}
	/* before netns_restore (--teardown) the loaded entries are all there is */
	if (a->st.n_netns) {
		free(view.netns);
		view.netns = a->st.netns;
		view.n_netns = a->st.n_netns;
	}
	ret = state_save(a->opts.state_dir, &view, durable, err, errlen);
	free(view.attach);
	if (view.netns != a->st.netns)
		free(view.netns);
	if (ret)
		log_msg(LOG_ERR, "state", "%s", err);
	return ret;
}

/* --- ending reservations -------------------------------------------------- */

void resv_unload(struct agent *a, uint64_t token)
{
	const struct state_resv *sr = state_find_token(&a->st, token);
	int err;

	for (size_t i = 0; sr && i < sr->n_grants; i++)
		portres_grant_del(a->loader, token, sr->grants[i].type, sr->grants[i].id);
	for (size_t i = a->st.n_attach; i-- > 0;) {
		uint64_t id = a->st.attach[i].cgroup_id;

		if (a->st.attach[i].token != token)
			continue;
		state_del_attach(&a->st, i);
		cgroup_map_sync(a, id); /* the cgroup's block of the other protocol stays */
		a->attach_dirty = true;
	}
	err = portres_resv_del(a->loader, token);
	if (err && err != -ENOENT)
		log_msg(LOG_WARN, "maps", "deleting token %016llx: %s", (unsigned long long)token, strerror(-err));
}

void runtime_end(struct agent *a, uint64_t token, const char *why)
{
	struct resv *r = resv_find(a, token);
	struct netns *ns;
	char tok[17];
	json_t *ev;

	if (!r || r->r.kind != PORTRES_KIND_RUNTIME)
		return;
	ns = r->ns;
	state_token_format(token, tok);
	log_msg(LOG_INFO, "release", "runtime %s %u-%u token %s of pid %u ended (%s)",
		state_proto_name(r->r.proto), r->r.start, r->r.start + r->r.count - 1, tok, r->r.owner_tgid, why);
	ev = json_pack("{s:s, s:s, s:s, s:i, s:i, s:s}", "type", "released", "token", tok, "proto",
		       state_proto_name(r->r.proto), "start", r->r.start, "count", r->r.count, "why", why);
	resv_unload(a, token);
	resv_remove(a, token);
	netns_sync_sysctl(a, ns);
	netns_gc(a, ns);
	events_emit(a, ev);
}

static int sweep_one(uint64_t token, void *arg)
{
	runtime_end(arg, token, "socket closed; found by the sweep");
	return 0;
}

/*
 * Backstop for RELEASED events lost to a full ring buffer: when the data
 * plane counted more anchor closes than events arrived, every reservation
 * marked dead is ended (a few system calls for the whole map). Events still
 * in flight then count twice, which can hide a later loss until the next.
 */
void runtime_sweep(struct agent *a)
{
	uint64_t n;

	if (portres_released_count(a->loader, &n) || n == a->released_seen)
		return;
	a->released_seen = n;
	if (n > a->released_events)
		portres_dead_foreach(a->loader, sweep_one, a);
	a->released_events = n;
}

/* --- choosing a block ----------------------------------------------------- */

#define SYSCTL_UNPRIV_START "/proc/sys/net/ipv4/ip_unprivileged_port_start"

struct user_ports_ctx {
	const struct agent_opts *o;
	uint32_t lo, hi;
};

/* Read in the socket's netns: /proc/sys/net shows the opener's namespace. */
static int user_ports_in_ns(void *arg)
{
	struct user_ports_ctx *c = arg;
	uint16_t lo = 32768, hi = 60999;
	unsigned long unpriv = 1024;
	FILE *f;
	int err;

	c->lo = c->o->user_lo;
	c->hi = c->o->user_hi;
	if (!c->o->user_lo) {
		if ((err = sysctl_port_range(SYSCTL_PORT_RANGE, &lo, &hi)))
			return err;
		c->lo = lo;
		c->hi = 65535;
	}
	f = fopen(SYSCTL_UNPRIV_START, "re");
	if (!f)
		return -errno;
	err = fscanf(f, "%lu", &unpriv) == 1 ? 0 : -EIO;
	fclose(f);
	if (!err && unpriv > c->lo)
		c->lo = unpriv > 65536 ? 65536 : (uint32_t)unpriv;
	return err;
}

int user_ports(struct agent *a, struct netns *ns, uint32_t *lo, uint32_t *hi)
{
	struct user_ports_ctx c = { .o = &a->opts };
	int err = netns_run(a, ns, user_ports_in_ns, &c);

	if (!err) {
		*lo = c.lo;
		*hi = c.hi;
	}
	return err;
}

struct pick_ctx {
	struct agent *a;
	struct netns *ns;
	uint8_t proto;
	uint16_t count;
	uint32_t lo, hi;  /* the block stays within */
	uint16_t start;
};

/*
 * Small blocks are checked with bind() probes rather than a sock_diag dump:
 * the dump walks the kernel's whole TCP hash tables (about 1 ms whatever the
 * netns holds), a probe costs microseconds and asks the kernel's own rule.
 * An IPv6 socket with V6ONLY off binding [::]:port conflicts with any IPv4 or
 * IPv6 socket on that port (TIME_WAIT included, which is fine to avoid).
 */
#define PROBE_MAX 64

static bool port_busy(uint8_t proto, uint16_t port)
{
	int type = (proto == IPPROTO_TCP ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC;
	struct sockaddr_in6 sa6 = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
	struct sockaddr_in sa4 = { .sin_family = AF_INET, .sin_port = htons(port) };
	int off = 0, fd = socket(AF_INET6, type, proto);
	bool busy;

	if (fd >= 0 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off)) == 0) {
		busy = bind(fd, (struct sockaddr *)&sa6, sizeof(sa6)) && errno == EADDRINUSE;
	} else {
		if (fd >= 0)
			close(fd);
		fd = socket(AF_INET, type, proto);
		busy = fd >= 0 && bind(fd, (struct sockaddr *)&sa4, sizeof(sa4)) && errno == EADDRINUSE;
	}
	if (fd >= 0)
		close(fd);
	return busy;
}

/* First run of count free ports in [lo, hi], scanning up or down. */
static int find_run(const struct portset *busy, uint32_t lo, uint32_t hi, uint32_t count, bool down)
{
	uint32_t run = 0;

	if (lo > hi || hi - lo + 1 < count)
		return -1;
	for (uint32_t i = 0; i <= hi - lo; i++) {
		uint32_t p = down ? hi - i : lo + i;

		run = portset_test(busy, (uint16_t)p) ? 0 : run + 1;
		if (run == count)
			return (int)(down ? p : p - count + 1);
	}
	return -1;
}

/*
 * A wildcard block is chosen where it disturbs least:
 *   1. above the ephemeral range (ip_local_port_range hi+1..65535), lowest
 *      first: nothing allocates there automatically and few services listen;
 *   2. below it, from lo-1 downwards: the ports nearest the ephemeral range,
 *      as far as possible from the well-known service ports low down (never
 *      below 1024);
 *   3. inside the ephemeral range, from its top downwards. The kernel's
 *      connect() allocator spreads over the whole range from a random offset,
 *      so no part is idle; a block there is only taken when 1 and 2 are full,
 *      and merging it into ip_local_reserved_ports takes it out of that use.
 * Free means: in no reservation of this protocol and netns, not in
 * ip_local_reserved_ports already (someone keeps those for something), and
 * with no socket of this protocol bound to it (sock_diag).
 */
static int pick_in_ns(void *arg)
{
	struct pick_ctx *c = arg;
	struct portset *busy = calloc(1, sizeof(*busy));
	struct sockdiag_sock *socks = NULL;
	uint16_t lo = 32768, hi = 60999;
	size_t n = 0;
	int s, err;

	if (!busy)
		return -ENOMEM;
	err = portset_read(SYSCTL_RESERVED_PORTS, busy);
	if (err)
		goto cleanup;
	sysctl_port_range(SYSCTL_PORT_RANGE, &lo, &hi);
	if (lo < 1024)
		lo = 1024;
	portset_add(busy, 0, 1024);
	/* Outside the caller's range counts as taken: the order within it stays. */
	portset_add(busy, 0, c->lo);
	if (c->hi < 65535)
		portset_add(busy, c->hi + 1, 65535 - c->hi);
	for (size_t i = 0; i < c->a->n_resv; i++) {
		const struct resv *r = &c->a->resv[i];

		if (r->ns == c->ns && r->r.proto == c->proto)
			portset_add(busy, r->r.start, r->r.count);
	}
	if (c->count > PROBE_MAX) {
		err = sockdiag_list(c->proto, 0, 65536, &socks, &n);
		if (err)
			goto cleanup;
		for (size_t i = 0; i < n; i++)
			portset_add(busy, socks[i].port, 1);
	}
	/* A candidate with a busy port marks it and searches again. */
	for (;;) {
		bool clean = true;

		err = -EADDRINUSE;
		if ((s = find_run(busy, (uint32_t)hi + 1, 65535, c->count, false)) < 0 &&
		    (s = find_run(busy, 1024, lo - 1u, c->count, true)) < 0 &&
		    (s = find_run(busy, lo, hi, c->count, true)) < 0)
			break;
		for (uint32_t p = (uint32_t)s; c->count <= PROBE_MAX && p < (uint32_t)s + c->count; p++)
			if (port_busy(c->proto, (uint16_t)p)) {
				portset_add(busy, p, 1);
				clean = false;
			}
		if (clean) {
			c->start = (uint16_t)s;
			err = 0;
			break;
		}
	}
cleanup:
	free(socks);
	free(busy);
	return err;
}

int pick_block(struct agent *a, struct netns *ns, uint8_t proto, uint16_t count, uint32_t lo, uint32_t hi,
	       uint16_t *start)
{
	struct pick_ctx c = { .a = a, .ns = ns, .proto = proto, .count = count, .lo = lo, .hi = hi };
	int err = netns_run(a, ns, pick_in_ns, &c);

	if (!err)
		*start = c.start;
	return err;
}

struct held_ctx {
	uint8_t proto;
	uint16_t start, count;
	bool reserved;   /* inside a reservation the agent's own probe is refused: dump */
	char *msg;
	size_t len;
};

static int held_in_ns(void *arg)
{
	struct held_ctx *c = arg;
	struct sockdiag_sock *socks;
	bool any = c->count > PROBE_MAX || c->reserved;
	size_t n;
	int err;

	for (uint32_t p = c->start; !any && p < (uint32_t)c->start + c->count; p++)
		any = (!c->proto || c->proto == IPPROTO_TCP ? port_busy(IPPROTO_TCP, (uint16_t)p) : false) ||
		      (!c->proto || c->proto == IPPROTO_UDP ? port_busy(IPPROTO_UDP, (uint16_t)p) : false);
	if (!any)
		return 0;
	/* Someone holds a port: the dump names who. */
	err = sockdiag_list(c->proto, c->start, c->count, &socks, &n);
	if (err)
		return err;
	if (n) {
		sockdiag_find_pids(socks, n);
		sockdiag_describe(socks, n, "  ", c->msg, c->len);
		err = -EADDRINUSE;
	}
	sockdiag_free(socks, n);
	return err;
}

int ports_held(struct agent *a, struct netns *ns, uint8_t proto, uint16_t start, uint16_t count,
	       char *msg, size_t len)
{
	struct held_ctx c = { .proto = proto, .start = start, .count = count, .msg = msg, .len = len,
			      .reserved = resv_overlap(a, ns->cookie, proto, start, count) != NULL };

	return netns_run(a, ns, held_in_ns, &c);
}
