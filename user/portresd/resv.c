// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * resv.c - the agent's table of reservations: indexes, wildcard block choice,
 * holders of ports, ending (the netns they live in: netns.c).
 *
 * The table is indexed so that no request does work in proportion to the
 * number of reservations: by token, name and request id (hashes), by port
 * per netns and protocol (a page table of 65,536 slots: a block's lookup and
 * overlap are O(its count)), runtime ports per uid (a hash kept as they come
 * and go), and each netns's ports (bitmaps, from which its sysctl is written
 * once per batch).
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
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "portresd.h"
#include "sockdiag.h"

/* --- the port index ------------------------------------------------------- */

static int proto_slot(uint8_t proto)
{
	return proto == IPPROTO_UDP;
}

struct resv *resv_at(struct netns *ns, uint8_t proto, uint16_t port)
{
	struct resv **page = ns->idx[proto_slot(proto)].page[port / PORTIDX_PAGE];

	return page ? page[port % PORTIDX_PAGE] : NULL;
}

/* Sets [start, start+count) of r's protocol to r (or NULL); -ENOMEM before changing anything. */
static int index_set(struct netns *ns, uint8_t proto, uint32_t start, uint32_t count, struct resv *r)
{
	struct port_index *ix = &ns->idx[proto_slot(proto)];

	for (uint32_t pg = start / PORTIDX_PAGE; r && pg <= (start + count - 1) / PORTIDX_PAGE; pg++)
		if (!ix->page[pg] && !(ix->page[pg] = calloc(PORTIDX_PAGE, sizeof(struct resv *))))
			return -ENOMEM;
	for (uint32_t p = start; p < start + count; p++)
		ix->page[p / PORTIDX_PAGE][p % PORTIDX_PAGE] = r;
	return 0;
}

struct resv *resv_find_range(struct netns *ns, uint8_t proto, uint16_t start, uint16_t count)
{
	struct resv *r = resv_at(ns, proto, start);

	return r && r->r.start == start && r->r.count == count ? r : NULL;
}

struct resv *resv_overlap(struct netns *ns, uint8_t proto, uint32_t start, uint32_t count)
{
	const struct port_index *ix = &ns->idx[proto_slot(proto)];
	uint32_t end = start + count > 65536 ? 65536 : start + count;

	for (uint32_t p = start; p < end;) {
		struct resv **page = ix->page[p / PORTIDX_PAGE];

		if (!page) {
			p = (p / PORTIDX_PAGE + 1) * PORTIDX_PAGE;
			continue;
		}
		if (page[p % PORTIDX_PAGE])
			return page[p % PORTIDX_PAGE];
		p++;
	}
	return NULL;
}

/* --- the table ------------------------------------------------------------ */

struct resv *resv_find(struct agent *a, uint64_t token)
{
	struct resv *r;

	HASH_FIND(hh, a->by_token, &token, sizeof(token), r);
	return r;
}

struct resv *resv_find_name(struct agent *a, const char *name)
{
	struct resv *r;

	HASH_FIND(hh_name, a->by_name, name, strlen(name), r);
	return r;
}

struct resv *resv_find_request(struct agent *a, const char *id)
{
	struct resv *r;

	HASH_FIND(hh_req, a->by_request, id, strlen(id), r);
	return r;
}

static int uid_add(struct agent *a, uint32_t uid, int64_t ports)
{
	struct uid_ports *u;

	HASH_FIND(hh, a->by_uid, &uid, sizeof(uid), u);
	if (!u) {
		if (ports <= 0 || !(u = calloc(1, sizeof(*u))))
			return ports <= 0 ? 0 : -ENOMEM;
		u->uid = uid;
		HASH_ADD(hh, a->by_uid, uid, sizeof(u->uid), u);
	}
	u->ports = (uint64_t)((int64_t)u->ports + ports);
	if (!u->ports) {
		HASH_DELETE(hh, a->by_uid, u);
		free(u);
	}
	return 0;
}

uint64_t resv_runtime_ports(struct agent *a, uint32_t uid)
{
	struct uid_ports *u;

	HASH_FIND(hh, a->by_uid, &uid, sizeof(uid), u);
	return u ? u->ports : 0;
}

static void resv_free(struct resv *r)
{
	if (r->sr) {
		state_resv_free(r->sr);
		free(r->sr);
	}
	free(r);
}

bool resv_hash_oom;

struct resv *resv_insert(struct agent *a, uint64_t token, const struct portres_resv *r, uint32_t uid,
			 struct netns *ns, struct state_resv *sr)
{
	struct resv *n = calloc(1, sizeof(*n));
	int slot = proto_slot(r->proto);

	if (!n) {
		if (sr) {
			state_resv_free(sr);
			free(sr);
		}
		return NULL;
	}
	*n = (struct resv){ .token = token, .r = *r, .uid = uid, .ns = ns, .created = time(NULL), .sr = sr };
	if (index_set(ns, r->proto, r->start, r->count, n))
		goto nomem;
	if (r->kind == PORTRES_KIND_RUNTIME && uid_add(a, uid, r->count))
		goto unindex;
	resv_hash_oom = false;
	HASH_ADD(hh, a->by_token, token, sizeof(n->token), n);
	if (resv_hash_oom)
		goto uid;
	if (sr && sr->name) {
		HASH_ADD_KEYPTR(hh_name, a->by_name, sr->name, strlen(sr->name), n);
		if (resv_hash_oom) {
			HASH_DELETE(hh, a->by_token, n);
			goto uid;
		}
	}
	if (sr && sr->request_id) {
		HASH_ADD_KEYPTR(hh_req, a->by_request, sr->request_id, strlen(sr->request_id), n);
		if (resv_hash_oom) {
			if (sr->name)
				HASH_DELETE(hh_name, a->by_name, n);
			HASH_DELETE(hh, a->by_token, n);
			goto uid;
		}
	}
	portset_add(&ns->used[slot], r->start, r->count);
	ns->n_resv++;
	ns->n_runtime += r->kind == PORTRES_KIND_RUNTIME;
	a->n_resv++;
	a->n_persistent += r->kind == PORTRES_KIND_PERSISTENT;
	batch_sysctl(a, ns);
	return n;
uid:
	if (r->kind == PORTRES_KIND_RUNTIME)
		uid_add(a, uid, -(int64_t)r->count);
unindex:
	index_set(ns, r->proto, r->start, r->count, NULL);
nomem:
	resv_free(n);
	return NULL;
}

void resv_remove(struct agent *a, struct resv *r)
{
	struct netns *ns = r->ns;

	HASH_DELETE(hh, a->by_token, r);
	if (r->sr && r->sr->name)
		HASH_DELETE(hh_name, a->by_name, r);
	if (r->sr && r->sr->request_id)
		HASH_DELETE(hh_req, a->by_request, r);
	if (r->r.kind == PORTRES_KIND_RUNTIME)
		uid_add(a, r->uid, -(int64_t)r->r.count);
	index_set(ns, r->r.proto, r->r.start, r->r.count, NULL);
	portset_del(&ns->used[proto_slot(r->r.proto)], r->r.start, r->r.count);
	ns->n_resv--;
	ns->n_runtime -= r->r.kind == PORTRES_KIND_RUNTIME;
	a->n_resv--;
	a->n_persistent -= r->r.kind == PORTRES_KIND_PERSISTENT;
	batch_sysctl(a, ns);
	resv_free(r);
}

void resv_free_all(struct agent *a)
{
	struct resv *r, *tmp;
	struct uid_ports *u, *utmp;

	HASH_ITER(hh, a->by_token, r, tmp)
		resv_remove(a, r);
	HASH_ITER(hh, a->by_uid, u, utmp) {
		HASH_DELETE(hh, a->by_uid, u);
		free(u);
	}
}

/* Tokens come from a pool filled by one getrandom() for many. */
int resv_new_token(struct agent *a, uint64_t *token)
{
	do {
		if (!a->tok_left) {
			if (getrandom(a->tok_pool, sizeof(a->tok_pool), 0) != sizeof(a->tok_pool))
				return errno ? -errno : -EIO;
			a->tok_left = sizeof(a->tok_pool) / sizeof(a->tok_pool[0]);
		}
		*token = a->tok_pool[--a->tok_left];
		a->tok_pool[a->tok_left] = 0;
	} while (*token == 0 || resv_find(a, *token));
	return 0;
}

json_t *resv_json(struct agent *a, const struct resv *r)
{
	const struct state_resv *sr = r->sr;
	char tok[17];
	json_t *o, *grants = json_array();

	state_token_format(r->token, tok);
	o = json_pack("{s:s, s:s, s:i, s:i, s:i, s:s, s:s, s:I, s:b}", "token", tok, "proto",
		      state_proto_name(r->r.proto), "start", r->r.start, "count", r->r.count, "end",
		      r->r.start + r->r.count - 1, "kind",
		      r->r.kind == PORTRES_KIND_RUNTIME ? "runtime" : "persistent", "mode",
		      state_mode_name(r->r.mode) ? state_mode_name(r->r.mode) : "?", "netns",
		      (json_int_t)r->r.netns, "dead", (r->r.flags & PORTRES_RESV_DEAD) != 0);
	if (!o) {
		json_decref(grants);
		return NULL;
	}
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

/* --- attachments ----------------------------------------------------------- */

int attach_add(struct agent *a, const struct state_attach *at)
{
	struct resv *r = resv_find(a, at->token);
	int err = state_add_attach(&a->st, at);

	if (err)
		return err;
	if (r)
		r->n_attach++;
	a->attach_dirty = true;
	return 0;
}

void attach_del(struct agent *a, size_t i)
{
	struct resv *r = resv_find(a, a->st.attach[i].token);

	if (r && r->n_attach)
		r->n_attach--;
	state_del_attach(&a->st, i);
	a->attach_dirty = true;
}

/* --- ending reservations -------------------------------------------------- */

int resv_load(struct agent *a, struct resv *r)
{
	size_t g, n = r->sr ? r->sr->n_grants : 0;
	int err;

	if ((err = portres_resv_add(a->loader, r->token, &r->r)))
		return err;
	for (g = 0; g < n; g++)
		if ((err = portres_grant_add(a->loader, r->token, r->sr->grants[g].type, r->sr->grants[g].id)))
			goto err_grants;
	return 0;
err_grants:
	/* grants 0..g-1 went in */
	while (g > 0) {
		g--;
		portres_grant_del(a->loader, r->token, r->sr->grants[g].type, r->sr->grants[g].id);
	}
	portres_resv_del_nogrants(a->loader, r->token);
	return err;
}

void resv_unload(struct agent *a, struct resv *r)
{
	uint64_t id;
	int err;

	for (size_t i = 0; r->sr && i < r->sr->n_grants; i++)
		portres_grant_del(a->loader, r->token, r->sr->grants[i].type, r->sr->grants[i].id);
	for (size_t i = a->st.n_attach; r->n_attach && i-- > 0;) {
		if (a->st.attach[i].token != r->token)
			continue;
		id = a->st.attach[i].cgroup_id;
		attach_del(a, i);
		cgroup_map_sync(a, id); /* the cgroup's block of the other protocol stays */
	}
	/* its grants went just above: no walk of every grant of every reservation */
	err = portres_resv_del_nogrants(a->loader, r->token);
	if (err && err != -ENOENT)
		log_msg(LOG_WARN, "maps", "deleting token %016llx: %s", (unsigned long long)r->token, strerror(-err));
}

void runtime_end(struct agent *a, uint64_t token, const char *why)
{
	struct resv *r = resv_find(a, token);
	char tok[17];
	bool infra;

	if (!r || r->r.kind != PORTRES_KIND_RUNTIME)
		return;
	state_token_format(token, tok);
	log_msg(LOG_INFO, "release", "runtime %s %u-%u token %s of pid %u ended (%s)",
		state_proto_name(r->r.proto), r->r.start, r->r.start + r->r.count - 1, tok, r->r.owner_tgid, why);
	/* The block is gone from the maps at once, whatever becomes of the batch. */
	infra = batch_infra(a, true);
	batch_emit(a, json_pack("{s:s, s:s, s:s, s:i, s:i, s:s}", "type", "released", "token", tok, "proto",
				state_proto_name(r->r.proto), "start", r->r.start, "count", r->r.count, "why", why));
	store_del_resv(a->store, token, false);
	batch_infra(a, infra);
	resv_unload(a, r);
	resv_remove(a, r);
}

static int sweep_one(uint64_t token, void *arg)
{
	runtime_end(arg, token, "socket closed; found by the sweep");
	return 0;
}

/*
 * Backstop for RELEASED events lost to a full ring buffer: when the data
 * plane counted more anchor closes than events arrived, every reservation
 * marked dead is ended (a few system calls for the whole map). Looked at
 * every RUNTIME_SWEEP_MS, not every turn (reading the count is a system
 * call); events still in the ring are read first, so that a close whose
 * event is merely on its way costs no sweep. Events still in flight after
 * that count twice, which can hide a later loss until the next.
 */
#define RUNTIME_SWEEP_MS 100

void runtime_sweep(struct agent *a)
{
	struct timespec now;
	long long ms;
	uint64_t n;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
	ms = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
	if (ms - a->sweep_looked_ms < RUNTIME_SWEEP_MS)
		return;
	a->sweep_looked_ms = ms;
	if (portres_released_count(a->loader, &n) || n == a->released_seen)
		return;
	if (n > a->released_events)
		portres_events_poll(a->loader, 0);
	a->released_seen = n;
	if (n > a->released_events)
		portres_dead_foreach(a->loader, sweep_one, a);
	a->released_events = n;
}

/* --- choosing a block ----------------------------------------------------- */

/*
 * The ports unprivileged users may reserve in ns: --user-ports, else from the
 * low end of ns's ip_local_port_range to 65535; never below its
 * ip_unprivileged_port_start (read with the sysctl, once per batch).
 */
int user_ports(struct agent *a, struct netns *ns, uint32_t *lo, uint32_t *hi)
{
	int err;

	if ((err = netns_ranges(a, ns)))
		return err;
	*lo = a->opts.user_lo ? a->opts.user_lo : ns->port_lo;
	*hi = a->opts.user_lo ? a->opts.user_hi : 65535;
	if (ns->unpriv_start > *lo)
		*lo = ns->unpriv_start;
	return 0;
}

/*
 * Small blocks are checked with bind() probes rather than a sock_diag dump:
 * the dump walks the kernel's whole TCP hash tables (about 1 ms whatever the
 * netns holds), a probe costs microseconds and asks the kernel's own rule.
 * An IPv6 socket with V6ONLY off binding [::]:port conflicts with any IPv4 or
 * IPv6 socket on that port (TIME_WAIT included, which is fine to avoid).
 */
#define PROBE_MAX 64

static bool port_busy(uint8_t proto, uint16_t port, bool v6only)
{
	int type = (proto == IPPROTO_TCP ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC;
	struct sockaddr_in6 sa6 = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
	struct sockaddr_in sa4 = { .sin_family = AF_INET, .sin_port = htons(port) };
	int off = 0, fd = socket(AF_INET6, type, proto);
	bool busy;

	/* V6ONLY is off by default unless the netns's bindv6only says otherwise: no call to turn it off */
	if (fd >= 0 && (!v6only || setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off)) == 0)) {
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

/* First run of count free ports in [lo, hi], scanning up or down; whole words at a time where they are full or empty. */
static int find_run(const struct portset *busy, uint32_t lo, uint32_t hi, uint32_t count, bool down)
{
	uint32_t run = 0, p;

	if (lo > hi || hi - lo + 1 < count)
		return -1;
	p = down ? hi : lo;
	for (;;) {
		uint64_t w = busy->w[p / 64];
		bool aligned = down ? p % 64 == 63 && p - 63 >= lo : p % 64 == 0 && p + 63 <= hi;

		if (aligned && w == ~0ULL) {
			run = 0;
		} else if (aligned && w == 0) {
			if (run + 64 >= count)
				/* the run completes inside this word */
				return (int)(down ? p - (count - run) + 1 : p + (count - run) - count);
			run += 64;
		} else {
			run = portset_test(busy, (uint16_t)p) ? 0 : run + 1;
			if (run == count)
				return (int)(down ? p : p - count + 1);
			aligned = false;
		}
		if (aligned) {
			if (down ? p - 63 == lo || p < 64 : p + 63 == hi)
				return -1;
			p = down ? p - 64 : p + 64;
		} else {
			if (p == (down ? lo : hi))
				return -1;
			p = down ? p - 1 : p + 1;
		}
	}
}

struct probe_ctx {
	bool v6only;
	uint8_t proto;
	uint16_t start, count;
	struct portset *busy;
	bool clean;
};

static int probe_in_ns(void *arg)
{
	struct probe_ctx *c = arg;

	c->clean = true;
	for (uint32_t p = c->start; p < (uint32_t)c->start + c->count; p++)
		if (port_busy(c->proto, (uint16_t)p, c->v6only)) {
			portset_add(c->busy, p, 1);
			c->clean = false;
		}
	return 0;
}

struct dump_ctx {
	uint8_t proto;
	struct portset *busy;
};

static int dump_in_ns(void *arg)
{
	struct dump_ctx *c = arg;
	struct sockdiag_sock *socks = NULL;
	size_t n = 0;
	int err = sockdiag_list(c->proto, 0, 65536, &socks, &n);

	for (size_t i = 0; !err && i < n; i++)
		portset_add(c->busy, socks[i].port, 1);
	free(socks);
	return err;
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
 * Free means: in no reservation of this netns (either protocol: they share
 * the sysctl's entries), not in ip_local_reserved_ports already (someone
 * keeps those for something), and with no socket of this protocol bound to
 * it (probes for small blocks, else sock_diag).
 */
int pick_block(struct agent *a, struct netns *ns, uint8_t proto, uint16_t count, uint32_t ulo, uint32_t uhi,
	       uint16_t *start)
{
	struct portset *busy = malloc(sizeof(*busy));
	const struct portset *cur;
	uint16_t lo, hi;
	int s, err;

	if (!busy)
		return -ENOMEM;
	if (!(cur = netns_sysctl_now(a, ns, &err)))
		goto cleanup;
	if ((err = netns_ranges(a, ns)))
		goto cleanup;
	for (size_t i = 0; i < 1024; i++)
		busy->w[i] = cur->w[i] | ns->used[0].w[i] | ns->used[1].w[i];
	lo = ns->port_lo;
	hi = ns->port_hi;
	if (lo < 1024)
		lo = 1024;
	portset_add(busy, 0, 1024);
	/* Outside the caller's range counts as taken: the order within it stays. */
	portset_add(busy, 0, ulo);
	if (uhi < 65535)
		portset_add(busy, uhi + 1, 65535 - uhi);
	if (count > PROBE_MAX) {
		struct dump_ctx d = { .proto = proto, .busy = busy };

		if ((err = netns_run(a, ns, dump_in_ns, &d)))
			goto cleanup;
	}
	/* A candidate with a busy port marks it and searches again. */
	for (;;) {
		struct probe_ctx c = { .v6only = ns->v6only, .proto = proto, .count = count, .busy = busy, .clean = true };

		err = -EADDRINUSE;
		if ((s = find_run(busy, (uint32_t)hi + 1, 65535, count, false)) < 0 &&
		    (s = find_run(busy, 1024, lo - 1u, count, true)) < 0 &&
		    (s = find_run(busy, lo, hi, count, true)) < 0)
			break;
		c.start = (uint16_t)s;
		if (count <= PROBE_MAX && (err = netns_run(a, ns, probe_in_ns, &c)))
			break;
		if (c.clean) {
			*start = (uint16_t)s;
			err = 0;
			break;
		}
	}
cleanup:
	free(busy);
	return err;
}

struct held_ctx {
	bool v6only;
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
		any = (!c->proto || c->proto == IPPROTO_TCP ? port_busy(IPPROTO_TCP, (uint16_t)p, c->v6only) : false) ||
		      (!c->proto || c->proto == IPPROTO_UDP ? port_busy(IPPROTO_UDP, (uint16_t)p, c->v6only) : false);
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
			      .reserved = (proto != IPPROTO_UDP && resv_overlap(ns, IPPROTO_TCP, start, count)) ||
					  (proto != IPPROTO_TCP && resv_overlap(ns, IPPROTO_UDP, start, count)) };
	int err = netns_ranges(a, ns);

	if (err)
		return err;
	c.v6only = ns->v6only;
	return netns_run(a, ns, held_in_ns, &c);
}
