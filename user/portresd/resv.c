// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * resv.c - the agent's table of reservations and the network namespaces they
 * live in: indexes, sysctl merging, wildcard block choice, holders of ports.
 *
 * The table is indexed so that no request does work in proportion to the
 * number of reservations: by token and by name (hashes), by port per netns
 * and protocol (a page table of 65,536 slots: a block's lookup and overlap
 * are O(its count)), runtime ports per uid (a hash kept as they come and go),
 * and each netns's ports (bitmaps, from which its sysctl is written once per
 * batch).
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

int resv_new_token(struct agent *a, uint64_t *token)
{
	do {
		if (getrandom(token, sizeof(*token), 0) != sizeof(*token))
			return -errno;
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

/* --- network namespaces --------------------------------------------------- */

static struct netns *netns_new(struct agent *a, uint64_t cookie, int fd)
{
	struct netns *ns = calloc(1, sizeof(*ns));

	if (!ns)
		return NULL;
	ns->cookie = cookie;
	ns->fd = fd;
	resv_hash_oom = false;
	HASH_ADD(hh, a->ns_by_cookie, cookie, sizeof(ns->cookie), ns);
	if (resv_hash_oom) {
		free(ns);
		return NULL;
	}
	a->n_ns++;
	return ns;
}

static void netns_free(struct agent *a, struct netns *ns)
{
	HASH_DELETE(hh, a->ns_by_cookie, ns);
	a->n_ns--;
	for (int k = 0; k < 2; k++)
		for (size_t pg = 0; pg < 65536 / PORTIDX_PAGE; pg++)
			free(ns->idx[k].page[pg]);
	if (ns->fd >= 0)
		close(ns->fd);
	free(ns);
}

int netns_own(struct agent *a)
{
	uint64_t cookie;
	int err, fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if ((err = portres_netns_cookie(&cookie))) {
		close(fd);
		return err;
	}
	if (!(a->own_ns = netns_new(a, cookie, fd))) {
		close(fd);
		return -ENOMEM;
	}
	a->own_ns->own = true;
	return 0;
}

struct netns *netns_find(struct agent *a, uint64_t cookie)
{
	struct netns *ns;

	HASH_FIND(hh, a->ns_by_cookie, &cookie, sizeof(cookie), ns);
	return ns;
}

/*
 * The context of a netns by cookie. sockfd (or -1) is a socket of that netns:
 * SIOCGSKNS gives an fd of the socket's own namespace, which outlives the
 * process that sent it, so its sysctl can be cleaned when the reservation ends.
 */
struct netns *netns_get(struct agent *a, uint64_t cookie, int sockfd)
{
	struct netns *ns = netns_find(a, cookie);
	int fd;

	if (ns) {
		if (ns->fd < 0 && sockfd >= 0 && (ns->fd = ioctl(sockfd, SIOCGSKNS)) >= 0)
			fcntl(ns->fd, F_SETFD, FD_CLOEXEC);
		return ns;
	}
	fd = sockfd >= 0 ? ioctl(sockfd, SIOCGSKNS) : -1;
	if (fd >= 0)
		fcntl(fd, F_SETFD, FD_CLOEXEC);
	if (!(ns = netns_new(a, cookie, fd)) && fd >= 0)
		close(fd);
	return ns;
}

void netns_gc(struct agent *a, struct netns *ns)
{
	if (ns->own || ns->n_resv || ns->sysctl_dirty || !portset_empty(&ns->owned) ||
	    !portset_empty(&ns->owned_db))
		return;
	netns_free(a, ns);
}

void netns_release_all(struct agent *a)
{
	struct netns *ns, *tmp;

	HASH_ITER(hh, a->ns_by_cookie, ns, tmp)
		netns_free(a, ns);
	a->own_ns = NULL;
}

int netns_run(struct agent *a, struct netns *ns, int (*fn)(void *arg), void *arg)
{
	int ret;

	if (ns->own)
		return fn(arg);
	if (ns->fd < 0)
		return -ENOENT;
	if (setns(ns->fd, CLONE_NEWNET))
		return -errno;
	ret = fn(arg);
	if (setns(a->own_ns->fd, CLONE_NEWNET)) {
		/* Going on in the wrong namespace would corrupt every later operation. */
		log_msg(LOG_ERR, "netns", "cannot return to own network namespace: %s", strerror(errno));
		abort();
	}
	return ret;
}

/* --- the sysctl ----------------------------------------------------------- */

#define SYSCTL_UNPRIV_START "/proc/sys/net/ipv4/ip_unprivileged_port_start"

static int read_sysctl(void *arg)
{
	struct netns *ns = arg;

	return portset_read(SYSCTL_RESERVED_PORTS, &ns->sysctl_now);
}

/* The ephemeral range and the unprivileged start, as the kernel has them in ns. */
static int read_ranges(void *arg)
{
	struct netns *ns = arg;
	unsigned long unpriv = 1024;
	FILE *f;
	int err;

	ns->port_lo = 32768;
	ns->port_hi = 60999;
	if ((err = sysctl_port_range(SYSCTL_PORT_RANGE, &ns->port_lo, &ns->port_hi)))
		return err;
	if (!(f = fopen(SYSCTL_UNPRIV_START, "re")))
		return -errno;
	err = fscanf(f, "%lu", &unpriv) == 1 ? 0 : -EIO;
	fclose(f);
	ns->unpriv_start = unpriv > 65536 ? 65536 : (uint32_t)unpriv;
	return err;
}

static int write_sysctl(void *arg)
{
	return portset_write(SYSCTL_RESERVED_PORTS, arg);
}

/* ns's port ranges (read_ranges) in this batch: read once. */
static int ranges_now(struct agent *a, struct netns *ns)
{
	int err;

	if (ns->ranges_gen != a->batch_gen && (err = netns_run(a, ns, read_ranges, ns)))
		return err;
	ns->ranges_gen = a->batch_gen;
	return 0;
}

/* The sysctl of ns in this batch: read once (pick_block and the write at the end share it). */
static const struct portset *sysctl_now(struct agent *a, struct netns *ns, int *err)
{
	*err = 0;
	if (ns->sysctl_gen != a->batch_gen && (*err = netns_run(a, ns, read_sysctl, ns)))
		return NULL;
	ns->sysctl_gen = a->batch_gen;
	return &ns->sysctl_now;
}

/*
 * The ports wanted are those of ns's reservations (TCP and UDP share the
 * entries). Added: wanted ones not there yet (then ours); removed: ours not
 * wanted any more. The database learns of the ports about to be added before
 * the write (prepare) and of those removed after it (write), so after a crash
 * at any point it never misses an entry of ours: it may only name one that
 * is already gone, which the next start drops without harm.
 */
int netns_sysctl_prepare(struct agent *a, struct netns *ns)
{
	const struct portset *cur;
	struct portset *mid = malloc(sizeof(*mid));
	int err;

	if (!mid)
		return -ENOMEM;
	if (!(cur = sysctl_now(a, ns, &err))) {
		free(mid);
		log_msg(LOG_WARN, "sysctl", "netns %llu: ip_local_reserved_ports not read: %s",
			(unsigned long long)ns->cookie, strerror(-err));
		return err;
	}
	for (size_t i = 0; i < 1024; i++)
		mid->w[i] = ns->owned.w[i] | ((ns->used[0].w[i] | ns->used[1].w[i]) & ~cur->w[i]);
	store_set_owned(a->store, netns_key(ns), &ns->owned_db, mid);
	ns->owned_db = *mid;
	free(mid);
	return 0;
}

int netns_sysctl_write(struct agent *a, struct netns *ns)
{
	struct portset *next = malloc(sizeof(*next));
	const struct portset *cur = &ns->sysctl_now;
	bool changed = false, keep;
	int err = 0;

	if (!next)
		return -ENOMEM;
	for (size_t i = 0; i < 1024; i++) {
		uint64_t wanted = ns->used[0].w[i] | ns->used[1].w[i];
		uint64_t add = wanted & ~cur->w[i], drop = ns->owned.w[i] & ~wanted;

		next->w[i] = (cur->w[i] | add) & ~drop;
		changed |= next->w[i] != cur->w[i];
	}
	if (changed && (err = netns_run(a, ns, write_sysctl, next))) {
		log_msg(LOG_WARN, "sysctl", "netns %llu: ip_local_reserved_ports not updated: %s",
			(unsigned long long)ns->cookie, strerror(-err));
		free(next);
		return err;
	}
	for (size_t i = 0; i < 1024; i++) {
		uint64_t wanted = ns->used[0].w[i] | ns->used[1].w[i];

		ns->owned.w[i] = (ns->owned.w[i] | (wanted & ~cur->w[i])) & wanted;
	}
	ns->sysctl_now = *next;
	free(next);
	/* what left the sysctl leaves the database with the next commit, whatever becomes of that batch */
	keep = store_keep(a->store, true);
	store_set_owned(a->store, netns_key(ns), &ns->owned_db, &ns->owned);
	store_keep(a->store, keep);
	ns->owned_db = ns->owned;
	return 0;
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
	portres_resv_del(a->loader, r->token);
	return err;
}

void resv_unload(struct agent *a, struct resv *r)
{
	int err;

	for (size_t i = 0; r->sr && i < r->sr->n_grants; i++)
		portres_grant_del(a->loader, r->token, r->sr->grants[i].type, r->sr->grants[i].id);
	for (size_t i = a->st.n_attach; r->n_attach && i-- > 0;) {
		if (a->st.attach[i].token != r->token)
			continue;
		portres_cgroup_detach(a->loader, a->st.attach[i].cgroup_id);
		attach_del(a, i);
	}
	err = portres_resv_del(a->loader, r->token);
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

/* --- choosing a block ----------------------------------------------------- */

/*
 * The ports unprivileged users may reserve in ns: --user-ports, else from the
 * low end of ns's ip_local_port_range to 65535; never below its
 * ip_unprivileged_port_start (read with the sysctl, once per batch).
 */
int user_ports(struct agent *a, struct netns *ns, uint32_t *lo, uint32_t *hi)
{
	int err;

	if ((err = ranges_now(a, ns)))
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
		if (port_busy(c->proto, (uint16_t)p)) {
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
	if (!(cur = sysctl_now(a, ns, &err)))
		goto cleanup;
	if ((err = ranges_now(a, ns)))
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
		struct probe_ctx c = { .proto = proto, .count = count, .busy = busy, .clean = true };

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
			      .reserved = (proto != IPPROTO_UDP && resv_overlap(ns, IPPROTO_TCP, start, count)) ||
					  (proto != IPPROTO_TCP && resv_overlap(ns, IPPROTO_UDP, start, count)) };

	return netns_run(a, ns, held_in_ns, &c);
}
