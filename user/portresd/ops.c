// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * ops.c - the protocol's operations. Each handler checks, then changes the
 * maps and the table (leaving nothing behind when a step fails), records the
 * change in the store and how to undo it in the batch (batch.c), and answers
 * with a reply or an errno and a message. The reply of a change waits for the
 * batch's commit: it means "done and durable".
 *
 * Authorisation (SPEC §4): create, delete, update, attach - root or the admin
 * group; acquire - anyone within the per-uid quota; release - the acquiring
 * process only; associate - as the setsockopt program decides (associate.c);
 * lookup, list, show, who, status, metrics, events - anyone.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cgroup.h"
#include "portresd.h"
#include "apply.h"
#include "sockdiag.h"

struct reply {
	int code;        /* 0: ok */
	char msg[2048];
	json_t *fields;  /* ok: extra fields */
};

static int fail(struct reply *rp, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(struct reply *rp, int code, const char *fmt, ...)
{
	va_list ap;

	rp->code = code;
	va_start(ap, fmt);
	vsnprintf(rp->msg, sizeof(rp->msg), fmt, ap);
	va_end(ap);
	return -1;
}

bool ops_is_admin(struct agent *a, const struct peer *p)
{
	if (p->uid == 0)
		return true;
	if (a->admin_gid == (gid_t)-1)
		return false;
	if (p->gid == a->admin_gid)
		return true;
	for (int i = 0; i < p->ngroups; i++)
		if (p->groups[i] == a->admin_gid)
			return true;
	return false;
}

static int need_admin(struct agent *a, const struct peer *p, struct reply *rp, const char *what)
{
	if (ops_is_admin(a, p))
		return 0;
	return fail(rp, EACCES, "%s needs root or membership of group %s", what, a->opts.admin_group);
}

/*
 * Text for messages, returned by value: each call's text is the caller's (a
 * temporary that lives to the end of the full expression), so two in one
 * message never share a buffer. Use as fail(..., tok_str(a).s, tok_str(b).s).
 */
struct range_str {
	char s[32];             /* "tcp 65535-65535" */
};
struct tok_str {
	char s[17];
};
struct block_str {
	char s[sizeof(struct range_str) + STATE_NAME_MAX + sizeof(struct tok_str) + 16];
};
struct comm_str {
	char s[32];
};

static struct range_str range_str(uint8_t proto, uint32_t start, uint32_t count)
{
	struct range_str t;

	snprintf(t.s, sizeof(t.s), "%s %u-%u", state_proto_name(proto), start, start + count - 1);
	return t;
}

static struct tok_str tok_str(uint64_t token)
{
	struct tok_str t;

	state_token_format(token, t.s);
	return t;
}

/*
 * The network namespace a request acts in (proto.h): the one passed as a
 * descriptor, else the caller's (its connection's).
 */
struct where {
	struct netns *ns;    /* the table's entry, or &tmp when the agent has none for it */
	struct netns tmp;    /* enough to enter it (its fd) */
	uint64_t cookie;
	int fd;              /* a descriptor of it; -1 for the agent's own */
	int lent;            /* a dup of fd lent to ns for this request, or -1 */
	bool close_fd;       /* fd is ours (the caller's, from its connection) */
	bool given;          /* passed with the request */
};

static int where_resolve(struct agent *a, const struct peer *p, const struct proto_req *req, int fd, bool create,
			 struct where *w, struct reply *rp)
{
	char msg[256];
	uint64_t inode;
	int err;

	*w = (struct where){ .ns = a->own_ns, .cookie = a->own_ns->cookie, .fd = -1, .lent = -1, .given = fd >= 0 };
	if (fd < 0 && (!p->netns || p->netns == a->own_ns->cookie)) {
		if (req->netns)
			return fail(rp, EINVAL, "netns %s: the namespace itself must be passed with it (SCM_RIGHTS)",
				    req->netns);
		return 0;
	}
	if (fd < 0) {
		/* a caller in another netns means its own */
		if ((fd = ioctl(p->conn, SIOCGSKNS)) < 0)
			return fail(rp, EIO, "cannot open the caller's network namespace: %s", strerror(errno));
		w->close_fd = true;
	}
	w->fd = fd;
	if ((err = netns_identify(a, fd, &w->cookie, &inode, msg, sizeof(msg))))
		return fail(rp, -err, "%s", msg);
	w->ns = netns_find(a, w->cookie);
	if (w->ns && w->ns->own)
		return 0;
	if (create && (err = netns_register(a, fd, w->cookie, inode, req->netns, &w->ns, msg, sizeof(msg))))
		return fail(rp, -err, "%s", msg);
	if (!w->ns) {
		w->tmp = (struct netns){ .cookie = w->cookie, .inode = inode, .nsid = -1, .fd = fd,
					 .path = (char *)req->netns };
		w->ns = &w->tmp;
	} else if (w->ns->fd < 0) {
		/* while the request runs, the agent gets in through the caller's descriptor */
		w->lent = w->ns->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	}
	return 0;
}

static void where_done(struct agent *a, struct where *w)
{
	if (w->ns && w->ns != &w->tmp && !w->ns->own && netns_find(a, w->cookie) == w->ns) {
		/* a change's batch writes the sysctl at its end: the lent descriptor is kept that long */
		if (w->lent >= 0 && w->ns->fd == w->lent && batch_open(a)) {
			batch_lend(a, w->ns, w->lent);
		} else if (w->lent >= 0 && w->ns->fd == w->lent) {
			close(w->lent);
			w->ns->fd = -1;
		}
		netns_gc(a, w->ns);
	}
	if (w->close_fd)
		close(w->fd);
}

/* The reservation a request names by token or name (any kind) or by range (persistent, in w). */
static struct resv *select_resv(struct agent *a, const struct proto_req *req, const struct where *w,
				struct reply *rp)
{
	struct resv *r = NULL;

	switch (req->sel) {
	case PROTO_SEL_TOKEN:
		if (!(r = resv_find(a, req->token)) || (w && w->given && r->r.netns != w->cookie))
			fail(rp, ENOENT, "no reservation with token %s%s%s", tok_str(req->token).s, r ? " in " : "",
			     r ? netns_name(w->ns).s : "");
		return r && (!w || !w->given || r->r.netns == w->cookie) ? r : NULL;
	case PROTO_SEL_NAME:
		if (!(r = resv_find_name(a, req->name)) || (w && w->given && r->r.netns != w->cookie))
			fail(rp, ENOENT, "no reservation named %s%s%s", req->name, r ? " in " : "",
			     r ? netns_name(w->ns).s : "");
		return r && (!w || !w->given || r->r.netns == w->cookie) ? r : NULL;
	case PROTO_SEL_RANGE:
		r = resv_find_range(w ? w->ns : a->own_ns, req->proto, req->start, req->count);
		if (!r || r->r.kind != PORTRES_KIND_PERSISTENT) {
			fail(rp, ENOENT, "no persistent reservation %s%s%s", range_str(req->proto, req->start, req->count).s,
			     w && w->ns && !w->ns->own ? " in " : "", w && w->ns && !w->ns->own ? netns_name(w->ns).s : "");
			return NULL;
		}
		return r;
	case PROTO_SEL_NONE:
		break;
	}
	fail(rp, EINVAL, "no reservation named");
	return NULL;
}

static int overlap_msg(struct agent *a, struct resv *o, struct reply *rp, uint8_t proto, uint32_t start,
		       uint32_t count)
{
	const struct state_resv *sr = o->sr;
	char other[128];

	snprintf(other, sizeof(other), "%s reservation %s%s%s", o->r.kind == PORTRES_KIND_RUNTIME ? "runtime" : "persistent",
		 range_str(o->r.proto, o->r.start, o->r.count).s, sr && sr->name ? " named " : "",
		 sr && sr->name ? sr->name : "");
	return fail(rp, EADDRINUSE, "%s overlaps %s", range_str(proto, start, count).s, other);
}

/* --- acquire / release ---------------------------------------------------- */

/* ENOTSOCK / EOPNOTSUPP checks of a passed fd; fills proto and netns cookie. */
static int check_socket(int fd, uint8_t *proto, __u64 *netns, struct reply *rp)
{
	int domain, type, protocol;
	socklen_t len = sizeof(int);

	if (fd < 0)
		return fail(rp, EINVAL, "the socket must be passed with the request (SCM_RIGHTS)");
	/* what is not a socket says so here (no fstat first: every call counts) */
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len))
		return fail(rp, errno == ENOTSOCK ? ENOTSOCK : EOPNOTSUPP, errno == ENOTSOCK ?
			    "the descriptor passed is not a socket" : "cannot read the socket's family: %s", strerror(errno));
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &(socklen_t){ sizeof(int) }) ||
	    getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &(socklen_t){ sizeof(int) }))
		return fail(rp, EOPNOTSUPP, "cannot read the socket's family and protocol: %s", strerror(errno));
	if ((domain != AF_INET && domain != AF_INET6) ||
	    !((type == SOCK_STREAM && protocol == IPPROTO_TCP) || (type == SOCK_DGRAM && protocol == IPPROTO_UDP)))
		return fail(rp, EOPNOTSUPP, "the socket is not TCP or UDP over IPv4/IPv6");
	if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, netns, &(socklen_t){ sizeof(*netns) }))
		return fail(rp, EOPNOTSUPP, "cannot read the socket's network namespace: %s", strerror(errno));
	*proto = (uint8_t)protocol;
	return 0;
}

/* Undo of a change that added reservation token: out of the maps and the table. */
static void undo_add(struct agent *a, void *arg)
{
	const uint64_t *token = arg;
	struct resv *r = resv_find(a, *token);
	struct netns *ns;

	if (r) {
		ns = r->ns;
		resv_unload(a, r);
		resv_remove(a, r);
		netns_store(a, ns);
	}
}

struct undo_acquire {
	uint64_t token;
	int fd;      /* the batch's duplicate of the anchor socket */
};

static void undo_acquire(struct agent *a, void *arg)
{
	struct undo_acquire *u = arg;

	portres_anchor_del_checked(a->loader, u->fd, u->token); /* a copy of the socket check_socket passed */
	undo_add(a, &u->token);
}

static int op_acquire(struct agent *a, const struct peer *p, const struct proto_req *req, int fd,
		      struct reply *rp)
{
	struct portres_resv r = { .owner_tgid = (uint32_t)p->pid, .kind = PORTRES_KIND_RUNTIME,
				  .mode = PORTRES_MODE_ENFORCE, .count = req->count };
	uint32_t lo = 1, hi = 65535;
	struct undo_acquire *u;
	uint64_t token, used;
	char held[1536], users[64];
	struct netns *ns;
	struct resv *o;
	int err;

	if (check_socket(fd, &r.proto, &r.netns, rp))
		return -1;
	used = resv_runtime_ports(a, p->uid);
	if (p->uid != 0 && used + req->count > a->opts.quota)
		return fail(rp, EDQUOT, "uid %u holds %llu runtime ports; %u more would pass the quota of %u",
			    p->uid, (unsigned long long)used, req->count, a->opts.quota);
	if (!(ns = netns_get(a, r.netns, fd)))
		return fail(rp, ENOMEM, "out of memory");
	/* Users stay in their range (root's services below it are not theirs to take); admins do not. */
	if (!ops_is_admin(a, p) && (err = user_ports(a, ns, &lo, &hi)))
		return fail(rp, -err, "cannot read the socket's network namespace's port settings: %s", strerror(-err));
	if (lo <= hi)
		snprintf(users, sizeof(users), "%u-%u", lo, hi);
	else
		snprintf(users, sizeof(users), "none");
	if (req->start && (req->start < lo || (uint32_t)req->start + req->count - 1 > hi))
		return fail(rp, EACCES, "%s is outside the ports users may reserve here: %s (portresd --user-ports, "
			    "never below ip_unprivileged_port_start; root and group %s are not limited)",
			    range_str(r.proto, req->start, req->count).s, users, a->opts.admin_group);
	if (req->start) {
		r.start = req->start;
		if ((o = resv_overlap(ns, r.proto, r.start, r.count)))
			return overlap_msg(a, o, rp, r.proto, r.start, r.count);
		err = ports_held(a, ns, r.proto, r.start, r.count, held, sizeof(held));
		if (err == -EADDRINUSE)
			return fail(rp, EADDRINUSE, "%s: %s", range_str(r.proto, r.start, r.count).s, held);
	} else {
		err = pick_block(a, ns, r.proto, r.count, lo, hi, &r.start);
		if (err == -EADDRINUSE && lo == 1 && hi == 65535)
			return fail(rp, EADDRINUSE, "no free block of %u %s ports", r.count, state_proto_name(r.proto));
		if (err == -EADDRINUSE)
			return fail(rp, EADDRINUSE, "no free block of %u %s ports in %s, the ports users may reserve here "
				    "(portresd --user-ports)", r.count, state_proto_name(r.proto), users);
	}
	if (err)
		return fail(rp, -err, "cannot inspect the socket's network namespace: %s", strerror(-err));
	if ((err = resv_new_token(a, &token)))
		return fail(rp, -err, "no random token: %s", strerror(-err));
	/* The batch may have to take the anchor back after the client's fd is closed: its own copy. */
	if (!(u = calloc(1, sizeof(*u))) || (u->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3)) < 0) {
		free(u);
		return fail(rp, ENOMEM, "out of memory");
	}
	u->token = token;
	if ((err = portres_resv_add(a->loader, token, &r))) {
		fail(rp, -err, "cannot add %s: %s", range_str(r.proto, r.start, r.count).s, strerror(-err));
		goto err_dup;
	}
	if ((err = portres_anchor_add_checked(a->loader, fd, token))) {
		fail(rp, -err, "cannot tie the reservation to the socket: %s", strerror(-err));
		goto err_map;
	}
	if (!resv_insert(a, token, &r, p->uid, ns, NULL)) {
		fail(rp, ENOMEM, "out of memory");
		goto err_anchor;
	}
	store_put_runtime(a->store, &(struct store_runtime){ .token = token, .netns = netns_key(ns), .proto = r.proto,
							     .start = r.start, .count = r.count, .uid = p->uid,
							     .pid = (uint32_t)p->pid }, (uint64_t)time(NULL));
	batch_undo(a, undo_acquire, NULL, u, u->fd);
	log_msg(LOG_INFO, "acquire", "runtime %s token %s for pid %d uid %u", range_str(r.proto, r.start, r.count).s,
		tok_str(token).s, p->pid, p->uid);
	rp->fields = json_pack("{s:s, s:i, s:i, s:s}", "token", tok_str(token).s, "start", r.start, "count",
			       r.count, "proto", state_proto_name(r.proto));
	batch_emit(a, json_pack("{s:s, s:s, s:s, s:i, s:i, s:i}", "type", "acquired", "token", tok_str(token).s,
				"proto", state_proto_name(r.proto), "start", r.start, "count", r.count, "pid", p->pid));
	return 0;
err_anchor:
	portres_anchor_del_checked(a->loader, fd, token);
err_map:
	portres_resv_del_nogrants(a->loader, token); /* a runtime one has none */
err_dup:
	close(u->fd);
	free(u);
	return -1;
}

static int op_release(struct agent *a, const struct peer *p, const struct proto_req *req, int fd,
		      struct reply *rp)
{
	struct resv *r = resv_find(a, req->token);
	struct stat sb;

	if (fd >= 0 && (fstat(fd, &sb) || !S_ISSOCK(sb.st_mode)))
		return fail(rp, ENOTSOCK, "the descriptor passed is not a socket");
	if (!r)
		return fail(rp, EINVAL, "no reservation with token %s", tok_str(req->token).s);
	if (r->r.kind != PORTRES_KIND_RUNTIME)
		return fail(rp, EINVAL, "token %s is a persistent reservation: delete it instead", tok_str(req->token).s);
	if (r->r.owner_tgid != (uint32_t)p->pid)
		return fail(rp, EACCES, "token %s belongs to pid %u", tok_str(req->token).s, r->r.owner_tgid);
	/* The anchor may be another socket of the owner: it then just has a stale token. */
	if (fd >= 0)
		portres_anchor_del(a->loader, fd, req->token);
	runtime_end(a, req->token, "released");
	return 0;
}

/* The socket's storage written by the agent (portresd --associate=agent); nothing to undo or store. */
static int op_associate(struct agent *a, const struct peer *p, const struct proto_req *req, int fd,
			struct reply *rp)
{
	char msg[sizeof(rp->msg)];
	uint8_t proto;
	__u64 netns;
	int err;

	if (check_socket(fd, &proto, &netns, rp))
		return -1;
	if ((err = associate_socket(a, p, fd, proto, netns, req->token, msg, sizeof(msg))))
		return fail(rp, -err, "%s", msg);
	return 0;
}

/* --- persistent ----------------------------------------------------------- */

/*
 * A create whose request id the state has already: the client's retry after
 * a lost reply (the agent stopped between saving and answering). The same
 * caller asking for the same block gets the same token: 0; anyone or
 * anything else is refused: -1. 1: the id is new.
 */
static int create_replay(struct agent *a, const struct peer *p, const struct proto_req *req, struct reply *rp)
{
	const struct resv *r = resv_find_request(a, req->request_id);
	const struct state_resv *sr = r ? r->sr : NULL;

	if (!sr)
		return 1;
	/* Says nothing of the reservation: the id may have been copied from someone else's request. */
	if (sr->request_uid != p->uid || sr->proto != req->proto || sr->start != req->start ||
	    sr->count != req->count || !sr->name != !req->name || (sr->name && strcmp(sr->name, req->name)))
		return fail(rp, EINVAL, "request_id %s was sent with another create", req->request_id);
	log_msg(LOG_INFO, "create", "persistent %s token %s: request %s again (a retry), same token",
		range_str(sr->proto, sr->start, sr->count).s, tok_str(sr->token).s, req->request_id);
	rp->fields = json_pack("{s:s, s:b}", "token", tok_str(sr->token).s, "replayed", 1);
	return 0;
}

static int op_create(struct agent *a, const struct peer *p, const struct proto_req *req, const struct where *w,
		     struct reply *rp)
{
	struct netns *ns = w->ns;
	struct portres_resv r = { .netns = ns->cookie, .start = req->start, .count = req->count,
				  .proto = req->proto, .kind = PORTRES_KIND_PERSISTENT,
				  .mode = req->mode < 0 ? PORTRES_MODE_ENFORCE : (uint8_t)req->mode };
	struct state_grant grants[PROTO_MAX_GRANTS];
	struct state_resv tmpl = { .proto = r.proto, .start = r.start, .count = r.count, .mode = r.mode,
				   .name = (char *)req->name, .netns = ns->own ? 0 : ns->cookie,
				   .n_grants = req->n_grants, .grants = grants,
				   .request_id = (char *)req->request_id, .request_uid = p->uid };
	struct state_resv *sr;
	uint64_t *undo;
	char held[1536];
	struct resv *o, *n;
	json_t *ev;
	int err;

	if (need_admin(a, p, rp, "creating a persistent reservation"))
		return -1;
	if (req->request_id && (err = create_replay(a, p, req, rp)) <= 0)
		return err;
	if (req->name && resv_find_name(a, req->name))
		return fail(rp, EEXIST, "a reservation named %s exists", req->name);
	/* a netns the agent only looked at (not an administrator's create) holds nothing */
	if (ns == &w->tmp)
		return fail(rp, EINVAL, "network namespace %s cannot be watched", netns_name(ns).s);
	if ((o = resv_overlap(ns, r.proto, r.start, r.count)))
		return overlap_msg(a, o, rp, r.proto, r.start, r.count);
	err = ports_held(a, ns, r.proto, r.start, r.count, held, sizeof(held));
	if (err == -EADDRINUSE)
		return fail(rp, EADDRINUSE, "%s: %s", range_str(r.proto, r.start, r.count).s, held);
	if (err)
		return fail(rp, -err, "cannot list sockets in %s: %s", netns_name(ns).s, strerror(-err));
	for (size_t i = 0; i < req->n_grants; i++) {
		char why[PATH_MAX + 128];

		grants[i] = (struct state_grant){ .type = req->grants[i].type, .id = req->grants[i].id,
						  .path = (char *)req->grants[i].path };
		if (req->grants[i].path && cgroup2_dir_id(req->grants[i].path, &grants[i].id, why, sizeof(why)))
			return fail(rp, EINVAL, "grant cgroup %s: %s", req->grants[i].path, why);
	}
	if ((err = resv_new_token(a, &tmpl.token)))
		return fail(rp, -err, "no random token: %s", strerror(-err));
	/* one stage at a time, each undone by the label of the one before: memory, table, maps */
	if (!(undo = malloc(sizeof(*undo))))
		return fail(rp, ENOMEM, "out of memory");
	*undo = tmpl.token;
	if (!(sr = calloc(1, sizeof(*sr))) || state_resv_copy(sr, &tmpl)) {
		free(sr);
		goto err_undo;
	}
	/* the table: the name and the ports are taken at once (resv_insert takes sr, also on failure) */
	if (!(n = resv_insert(a, tmpl.token, &r, 0, ns, sr)))
		goto err_undo;
	/* the maps, with the grants (resv_load takes back what it put in when one fails) */
	if ((err = resv_load(a, n)))
		goto err_table;
	store_put_resv(a->store, n->sr, (uint64_t)n->created);
	netns_store(a, ns);
	batch_undo(a, undo_add, NULL, undo, -1);
	if (a->opts.test_crash_after_save)
		a->crash_after_commit = true; /* test hook: saved, never acknowledged */
	log_msg(LOG_INFO, "create", "persistent %s token %s%s%s mode %s%s%s by uid %u",
		range_str(r.proto, r.start, r.count).s, tok_str(tmpl.token).s, req->name ? " name " : "",
		req->name ? req->name : "", state_mode_name(r.mode), ns->own ? "" : " in ", ns->own ? "" : netns_name(ns).s,
		p->uid);
	rp->fields = json_pack("{s:s}", "token", tok_str(tmpl.token).s);
	netns_json(rp->fields, ns);
	ev = json_pack("{s:s, s:s, s:s, s:i, s:i}", "type", "created", "token", tok_str(tmpl.token).s, "proto",
		       state_proto_name(r.proto), "start", r.start, "count", r.count);
	netns_json(ev, ns);
	batch_emit(a, ev);
	return 0;
err_table:
	resv_remove(a, n);
	free(undo);
	if (err == -ENOMEM)
		return fail(rp, ENOMEM, "out of memory");
	return fail(rp, -err, "cannot add %s to the maps (nothing changed): %s", range_str(r.proto, r.start, r.count).s,
		    strerror(-err));
err_undo:
	free(undo);
	return fail(rp, ENOMEM, "out of memory");
}

static int op_lookup(struct agent *a, const struct proto_req *req, const struct where *w, struct reply *rp)
{
	struct resv *r = select_resv(a, req, w, rp);

	if (!r)
		return -1;
	rp->fields = json_pack("{s:s}", "token", tok_str(r->token).s);
	return 0;
}

/*
 * What holds r: sockets bound in its block and cgroups attached to it, one
 * per line after "in use by:" into msg; false when nothing does.
 */
static bool holders(struct agent *a, const struct resv *r, char *msg, size_t len)
{
	const char *run = APPLY_RUN_CGROUP_PREFIX;
	int err = ports_held(a, r->ns, r->r.proto, r->r.start, r->r.count, msg, len);
	bool held = err == -EADDRINUSE;
	size_t off;

	/* sockets that cannot be listed (the netns is gone) hold nothing */
	if (!held)
		snprintf(msg, len, "in use by:");
	off = strlen(msg);
	for (size_t i = 0; i < a->st.n_attach && off < len; i++) {
		const struct state_attach *at = &a->st.attach[i];
		const char *base = strrchr(at->path, '/') ? strrchr(at->path, '/') + 1 : at->path;
		int w;

		if (at->token != r->token)
			continue;
		w = snprintf(msg + off, len - off, "\n  cgroup %s is attached%s%s", at->path,
			     at->confine ? " (confined)" : "",
			     !strncmp(base, run, strlen(run)) ? " (a running portresctl run)" : "");
		off += w > 0 ? (size_t)w : 0;
		held = true;
	}
	return held;
}

/* What a deleted persistent reservation was, to put it back if the batch fails. */
struct undo_delete {
	uint64_t token;
	struct portres_resv r;
	uint64_t ns;     /* the cookie of its netns */
	time_t created;
	struct state_resv sr;
	size_t n_attach;
	struct state_attach *attach;
};

static void undo_delete_free(void *arg)
{
	struct undo_delete *u = arg;

	state_resv_free(&u->sr);
	for (size_t i = 0; i < u->n_attach; i++)
		free(u->attach[i].path);
	free(u->attach);
	free(u);
}

static void undo_delete(struct agent *a, void *arg)
{
	struct undo_delete *u = arg;
	struct state_resv *sr = calloc(1, sizeof(*sr));
	struct netns *ns = netns_find(a, u->ns);
	struct resv *n = NULL;
	int err = -ENOMEM;

	if (sr && state_resv_copy(sr, &u->sr)) {
		free(sr);
		sr = NULL;
	}
	/* resv_insert takes sr, also when it fails */
	if (!ns) {
		free(sr);
		sr = NULL;
		err = -ENOENT;
	}
	if (sr && (n = resv_insert(a, u->token, &u->r, 0, ns, sr)))
		err = resv_load(a, n);
	if (err) {
		/* The database still has it: the next start loads it. */
		log_msg(LOG_ERR, "batch", "cannot put token %016llx back in the maps: %s", (unsigned long long)u->token,
			strerror(-err));
		if (n)
			resv_remove(a, n);
		return;
	}
	n->created = u->created;
	netns_store(a, ns);
	for (size_t i = 0; i < u->n_attach; i++)
		if (!attach_add(a, &u->attach[i]))
			cgroup_map_sync(a, u->attach[i].cgroup_id);
}

static int op_delete(struct agent *a, const struct peer *p, const struct proto_req *req, const struct where *w,
		     struct reply *rp)
{
	const struct state_resv *sr;
	struct undo_delete *u;
	char held[1536];
	struct netns *ns;
	struct resv *r;
	uint64_t token;
	json_t *ev;

	if (need_admin(a, p, rp, "deleting a reservation"))
		return -1;
	if (!(r = select_resv(a, req, w, rp)))
		return -1;
	token = r->token;
	sr = r->sr;
	ns = r->ns;
	/* Live sockets or attachments: only a forced delete takes the block from under them. */
	if (!req->force && holders(a, r, held, sizeof(held)))
		return fail(rp, EBUSY, "%s%s%s: %s", range_str(r->r.proto, r->r.start, r->r.count).s,
			    sr && sr->name ? " named " : "", sr && sr->name ? sr->name : "", held);
	if (req->dry_run) {
		rp->fields = json_pack("{s:b, s:o}", "dry_run", 1, "reservation", resv_json(a, r));
		return 0;
	}
	if (r->r.kind == PORTRES_KIND_RUNTIME) {
		runtime_end(a, token, "deleted by an administrator");
		return 0;
	}
	/* kept aside for the undo: the reservation, its grants and its attachments */
	if (!(u = calloc(1, sizeof(*u))) || state_resv_copy(&u->sr, sr) ||
	    (r->n_attach && !(u->attach = calloc(r->n_attach, sizeof(*u->attach)))))
		goto nomem;
	u->token = token;
	u->r = r->r;
	u->ns = ns->cookie;
	u->created = r->created;
	for (size_t i = 0; i < a->st.n_attach && u->n_attach < r->n_attach; i++) {
		if (a->st.attach[i].token != token)
			continue;
		u->attach[u->n_attach] = a->st.attach[i];
		if (!(u->attach[u->n_attach].path = strdup(a->st.attach[i].path)))
			goto nomem;
		u->n_attach++;
	}
	log_msg(LOG_INFO, "delete", "persistent %s token %s%s%s by uid %u",
		range_str(r->r.proto, r->r.start, r->r.count).s, tok_str(token).s, ns->own ? "" : " in ",
		ns->own ? "" : netns_name(ns).s, p->uid);
	ev = json_pack("{s:s, s:s, s:s, s:i, s:i, s:s*}", "type", "deleted", "token", tok_str(token).s, "proto",
		       state_proto_name(r->r.proto), "start", r->r.start, "count", r->r.count, "name",
		       sr ? sr->name : NULL);
	netns_json(ev, ns);
	batch_emit(a, ev);
	/* its grants and attachments go with its row */
	store_del_resv(a->store, token, true);
	batch_undo(a, undo_delete, undo_delete_free, u, -1);
	resv_unload(a, r);
	resv_remove(a, r);
	netns_store(a, ns);
	return 0;
nomem:
	if (u)
		undo_delete_free(u);
	return fail(rp, ENOMEM, "out of memory");
}

struct undo_mode {
	uint64_t token;
	uint8_t mode;
};

static void undo_mode(struct agent *a, void *arg)
{
	struct undo_mode *u = arg;
	struct resv *r = resv_find(a, u->token);

	if (!r)
		return;
	portres_resv_set_mode(a->loader, r->token, u->mode);
	r->r.mode = u->mode;
	if (r->sr)
		r->sr->mode = u->mode;
}

static int op_update(struct agent *a, const struct peer *p, const struct proto_req *req, struct reply *rp)
{
	struct undo_mode *u;
	struct resv *r;
	int err;

	if (need_admin(a, p, rp, "changing a reservation"))
		return -1;
	if (!(r = select_resv(a, req, NULL, rp)))
		return -1;
	if (!(u = malloc(sizeof(*u))))
		return fail(rp, ENOMEM, "out of memory");
	*u = (struct undo_mode){ r->token, r->r.mode };
	if ((err = portres_resv_set_mode(a->loader, r->token, (uint8_t)req->mode))) {
		free(u);
		return fail(rp, -err, "cannot change mode: %s", strerror(-err));
	}
	r->r.mode = (uint8_t)req->mode;
	if (r->sr) {
		r->sr->mode = (uint8_t)req->mode;
		store_set_mode(a->store, r->token, (uint8_t)req->mode);
	}
	batch_undo(a, undo_mode, NULL, u, -1);
	log_msg(LOG_INFO, "update", "token %s mode %s by uid %u", tok_str(r->token).s, state_mode_name(r->r.mode), p->uid);
	batch_emit(a, json_pack("{s:s, s:s, s:s, s:i, s:i, s:s}", "type", "updated", "token", tok_str(r->token).s, "proto",
				state_proto_name(r->r.proto), "start", r->r.start, "count", r->r.count, "mode",
				state_mode_name(r->r.mode)));
	return 0;
}

/* --- cgroups -------------------------------------------------------------- */

/* The cgroup must be the attach root or below it; real gets its resolved path. */
static int cgroup_resolve(struct agent *a, const char *path, char real[PATH_MAX], uint64_t *id, uid_t *owner,
			  struct reply *rp)
{
	char root[PATH_MAX], why[PATH_MAX + 128];
	struct stat sb;
	size_t n;
	int err;

	if (!realpath(path, real) || stat(real, &sb) || !S_ISDIR(sb.st_mode))
		return fail(rp, ENOENT, "cgroup %s: %s", path, strerror(errno ? errno : ENOTDIR));
	if (!realpath(a->opts.cgroup, root))
		return fail(rp, EIO, "cgroup root %s: %s", a->opts.cgroup, strerror(errno));
	n = strlen(root);
	if (strncmp(real, root, n) || (real[n] != '/' && real[n] != '\0'))
		return fail(rp, EINVAL, "cgroup %s is not below the attach root %s", path, root);
	if ((err = cgroup2_dir_id(real, id, why, sizeof(why))))
		return fail(rp, -err, "cgroup %s: %s", path, why);
	*owner = sb.st_uid;
	return 0;
}

/* Admin, or the process owning a runtime reservation acting on a cgroup its uid owns. */
static int may_attach(struct agent *a, const struct peer *p, const struct resv *r, uid_t cg_owner,
		      struct reply *rp)
{
	if (ops_is_admin(a, p))
		return 0;
	if (r && r->r.kind == PORTRES_KIND_RUNTIME && r->r.owner_tgid == (uint32_t)p->pid && cg_owner == p->uid)
		return 0;
	return fail(rp, EACCES, "attaching needs root, group %s, or (runtime reservations) the owning process on its own cgroup",
		    a->opts.admin_group);
}

/* Whether p may replace or detach at, or attach below it: admins any, others their own only. */
static bool owns_attachment(struct agent *a, const struct peer *p, const struct state_attach *at)
{
	return ops_is_admin(a, p) || (!at->by_admin && at->by_uid == p->uid);
}

/* "reservation web (token …)" or "token …", for messages. */
static void resv_label(struct agent *a, uint64_t token, char *buf, size_t len)
{
	const struct resv *r = resv_find(a, token);
	const struct state_resv *sr = r ? r->sr : NULL;

	if (sr && sr->name)
		snprintf(buf, len, "reservation %s (token %s)", sr->name, tok_str(token).s);
	else
		snprintf(buf, len, "token %s", tok_str(token).s);
}

static int refuse_attachment(struct agent *a, const struct state_attach *at, const char *below, struct reply *rp)
{
	char label[128], by[32];

	resv_label(a, at->token, label, sizeof(label));
	if (at->by_admin)
		snprintf(by, sizeof(by), "an administrator");
	else
		snprintf(by, sizeof(by), "uid %u", at->by_uid);
	if (below)
		return fail(rp, EACCES, "cgroup %s is below %s, which %s attached to %s%s: only root or group %s may "
			    "attach below it", below, at->path, by, label, at->confine ? " confined" : "",
			    a->opts.admin_group);
	return fail(rp, EACCES, "cgroup %s is attached to %s%s by %s: only root or group %s may replace or detach "
		    "that attachment", at->path, label, at->confine ? " confined" : "", by, a->opts.admin_group);
}

/*
 * The nearest attachment of a cgroup or an ancestor is the one that counts
 * for its sockets, so attaching at or below another's attachment would undo
 * it (a --confine most of all): a non-admin may do that only to attachments
 * it made itself. The walk goes up by "..", from an fd of the cgroup (real,
 * whose id is id), to the attach root: renames meanwhile cannot hide an
 * ancestor, and a step that fails refuses.
 */
static int attach_guard(struct agent *a, const struct peer *p, const char *real, uint64_t id, struct reply *rp)
{
	struct stat sb, root;
	int fd, up, ret = 0;

	if (ops_is_admin(a, p))
		return 0;
	if (stat(a->opts.cgroup, &root))
		return fail(rp, EIO, "cgroup root %s: %s", a->opts.cgroup, strerror(errno));
	fd = open(real, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &sb) || sb.st_ino != id) {
		ret = fail(rp, EAGAIN, "cgroup %s changed while it was checked; try again", real);
		goto out;
	}
	for (int depth = 0; depth < 4096; depth++) {
		for (size_t i = 0; i < a->st.n_attach; i++)
			if (a->st.attach[i].cgroup_id == sb.st_ino && !owns_attachment(a, p, &a->st.attach[i])) {
				ret = refuse_attachment(a, &a->st.attach[i], sb.st_ino == id ? NULL : real, rp);
				goto out;
			}
		if (sb.st_ino == root.st_ino && sb.st_dev == root.st_dev)
			goto out;
		up = openat(fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		close(fd);
		fd = up;
		if (fd < 0 || fstat(fd, &sb) || sb.st_dev != root.st_dev)
			break;
	}
	ret = fail(rp, EAGAIN, "cgroup %s: its ancestors up to %s could not be read; try again", real, a->opts.cgroup);
out:
	if (fd >= 0)
		close(fd);
	return ret;
}

/*
 * The cgroup map entry of cgroup_id from its attachments (at most one block
 * per protocol): each block in its protocol's slot, confined as the
 * strongest of them asks; with none left the entry goes.
 */
int cgroup_map_sync(struct agent *a, uint64_t cgroup_id)
{
	struct portres_cgroup c = { 0 };
	uint8_t confine = STATE_CONFINE_NONE;
	bool any = false;
	int err;

	for (size_t i = 0; i < a->st.n_attach; i++) {
		const struct state_attach *at = &a->st.attach[i];
		struct resv *r;

		if (at->cgroup_id != cgroup_id || !(r = resv_find(a, at->token)))
			continue;
		any = true;
		*(r->r.proto == IPPROTO_TCP ? &c.tcp_token : &c.udp_token) = at->token;
		if (at->confine > confine)
			confine = at->confine;
	}
	if (!any) {
		err = portres_cgroup_detach(a->loader, cgroup_id);
		return err == -ENOENT ? 0 : err;
	}
	c.flags = confine == STATE_CONFINE_ALL ? PORTRES_CG_CONFINE | PORTRES_CG_CONFINE_ALL
		  : confine ? PORTRES_CG_CONFINE : 0;
	return portres_cgroup_attach(a->loader, cgroup_id, &c);
}

/* A process in cgroup path or below whose netns is not inode: its pid (*other: its netns), or 0. */
static pid_t other_netns_in(const char *path, uint64_t inode, uint64_t *other, int depth)
{
	char file[PATH_MAX + 16], ns[64];
	struct dirent *e;
	struct stat sb;
	pid_t found = 0;
	long pid;
	FILE *f;
	DIR *d;

	snprintf(file, sizeof(file), "%s/cgroup.procs", path);
	if ((f = fopen(file, "re"))) {
		while (!found && fscanf(f, "%ld", &pid) == 1) {
			snprintf(ns, sizeof(ns), "/proc/%ld/ns/net", pid);
			if (!stat(ns, &sb) && (uint64_t)sb.st_ino != inode) {
				*other = (uint64_t)sb.st_ino;
				found = (pid_t)pid;
			}
		}
		fclose(f);
	}
	if (found || depth >= PORTRES_MAX_CG_DEPTH || !(d = opendir(path)))
		return found;
	while (!found && (e = readdir(d))) {
		if (e->d_type != DT_DIR || e->d_name[0] == '.')
			continue;
		snprintf(file, sizeof(file), "%s/%s", path, e->d_name);
		found = other_netns_in(file, inode, other, depth + 1);
	}
	closedir(d);
	return found;
}

/* The command of pid, "?" when it cannot be read. */
static struct comm_str comm_of(pid_t pid)
{
	struct comm_str c = { "" };
	char path[64];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	if ((f = fopen(path, "re"))) {
		if (!fgets(c.s, sizeof(c.s), f))
			c.s[0] = '\0';
		fclose(f);
	}
	c.s[strcspn(c.s, "\n")] = '\0';
	if (!c.s[0])
		strcpy(c.s, "?");
	return c;
}

/* "tcp 8000-8009 (web, token …)" */
static struct block_str block_str(struct agent *a, const struct resv *r)
{
	const struct state_resv *sr = r->sr;
	struct block_str b;

	snprintf(b.s, sizeof(b.s), "%s (%s%stoken %s)", range_str(r->r.proto, r->r.start, r->r.count).s,
		 sr && sr->name ? sr->name : "", sr && sr->name ? ", " : "", tok_str(r->token).s);
	return b;
}

static json_t *attach_json(const struct state_attach *at)
{
	return json_pack("{s:s, s:I, s:o}", "path", at->path, "cgroup_id", (json_int_t)at->cgroup_id, "confine",
			 at->confine == STATE_CONFINE_ALL ? json_string("all") : json_boolean(at->confine));
}

/*
 * An attachment change, to be undone: the attachment it made (if any) and
 * those it replaced or removed, with the cgroups whose map entries follow.
 */
struct undo_attach {
	bool has_at;
	struct state_attach at;
	size_t n;
	struct state_attach *gone;
};

static void undo_attach_free(void *arg)
{
	struct undo_attach *u = arg;

	free(u->at.path);
	for (size_t i = 0; i < u->n; i++)
		free(u->gone[i].path);
	free(u->gone);
	free(u);
}

static void undo_attach(struct agent *a, void *arg)
{
	struct undo_attach *u = arg;

	for (size_t i = a->st.n_attach; u->has_at && i-- > 0;)
		if (a->st.attach[i].cgroup_id == u->at.cgroup_id && a->st.attach[i].token == u->at.token) {
			attach_del(a, i);
			break;
		}
	for (size_t i = 0; i < u->n; i++)
		attach_add(a, &u->gone[i]);
	if (u->has_at)
		cgroup_map_sync(a, u->at.cgroup_id);
	for (size_t i = 0; i < u->n; i++)
		cgroup_map_sync(a, u->gone[i].cgroup_id);
}

/* Attachment i leaves the table (kept in u for the undo); 0 or -ENOMEM (nothing changed). */
static int attach_remove(struct agent *a, size_t i, struct undo_attach *u)
{
	struct state_attach *at = &a->st.attach[i], *g = realloc(u->gone, (u->n + 1) * sizeof(*g));

	if (!g)
		return -ENOMEM;
	u->gone = g;
	g[u->n] = *at;
	if (!(g[u->n].path = strdup(at->path)))
		return -ENOMEM;
	u->n++;
	attach_del(a, i);
	return 0;
}

/* The store forgets what u removed (attachments of persistent tokens are kept there). */
static void store_forget(struct agent *a, const struct undo_attach *u)
{
	for (size_t i = 0; i < u->n; i++) {
		struct resv *r = resv_find(a, u->gone[i].token);

		if (r && r->r.kind == PORTRES_KIND_PERSISTENT)
			store_del_attach(a->store, u->gone[i].cgroup_id, r->r.proto);
	}
}

/*
 * A cgroup holds one block per protocol: attaching a TCP block to a cgroup
 * with a UDP block adds it; replacing its TCP block by another needs force.
 * The block must live in the netns of the cgroup's processes.
 */
static int op_attach(struct agent *a, const struct peer *p, const struct proto_req *req, struct reply *rp)
{
	struct state_attach at = { .path = (char *)req->cgroup, .confine = req->confine,
				   .by_admin = ops_is_admin(a, p), .by_uid = p->uid };
	char theirs[64], real[PATH_MAX];
	struct resv *r, *pr = NULL;
	struct undo_attach *u;
	uid_t owner = (uid_t)-1;
	uint64_t other = 0, replaced = 0;
	pid_t pid;
	int err;

	if (!(r = select_resv(a, req, NULL, rp)) || cgroup_resolve(a, req->cgroup, real, &at.cgroup_id, &owner, rp) ||
	    may_attach(a, p, r, owner, rp) || attach_guard(a, p, real, at.cgroup_id, rp))
		return -1;
	at.token = r->token;
	if (r->ns->inode && (pid = other_netns_in(req->cgroup, r->ns->inode, &other, 0))) {
		snprintf(theirs, sizeof(theirs), "net:[%llu]", (unsigned long long)other);
		return fail(rp, EINVAL, "cgroup %s: pid %d (%s) lives in network namespace %s, the block %s in %s",
			    req->cgroup, (int)pid, comm_of(pid).s, theirs, block_str(a, r).s, netns_name(r->ns).s);
	}
	/* checked before anything changes: a block of this protocol there is replaced only by force */
	for (size_t i = 0; i < a->st.n_attach; i++) {
		const struct state_attach *x = &a->st.attach[i];
		struct resv *xr;

		if (x->cgroup_id != at.cgroup_id || !(xr = resv_find(a, x->token)) || xr->r.proto != r->r.proto)
			continue;
		if (x->token != at.token && !req->force)
			return fail(rp, EEXIST, "cgroup %s has the %s block %s; --force replaces it", req->cgroup,
				    state_proto_name(r->r.proto), block_str(a, xr).s);
		pr = xr;
		replaced = x->token;
	}
	if (!(u = calloc(1, sizeof(*u))) || !(u->at.path = strdup(at.path))) {
		free(u);
		return fail(rp, ENOMEM, "out of memory");
	}
	for (size_t i = a->st.n_attach; i-- > 0;) {
		struct state_attach *x = &a->st.attach[i];
		struct resv *xr = resv_find(a, x->token);
		bool same_proto = x->cgroup_id == at.cgroup_id && xr && xr->r.proto == r->r.proto;

		/* the path names another cgroup now (made anew): its old attachments go; so does the replaced block */
		if ((x->cgroup_id != at.cgroup_id && !strcmp(x->path, at.path)) || same_proto) {
			uint64_t id = x->cgroup_id;

			if (attach_remove(a, i, u)) {
				fail(rp, ENOMEM, "out of memory");
				goto err_undo;
			}
			if (id != at.cgroup_id)
				cgroup_map_sync(a, id);
		}
	}
	if ((err = attach_add(a, &at))) {
		fail(rp, ENOMEM, "out of memory");
		goto err_undo;
	}
	u->has_at = true;
	u->at.cgroup_id = at.cgroup_id;
	u->at.token = at.token;
	if ((err = cgroup_map_sync(a, at.cgroup_id))) {
		fail(rp, -err, "cannot attach %s: %s", req->cgroup, strerror(-err));
		goto err_undo;
	}
	store_forget(a, u);
	if (r->r.kind == PORTRES_KIND_PERSISTENT)
		store_put_attach(a->store, &at, r->r.proto);
	batch_undo(a, undo_attach, undo_attach_free, u, -1);
	if (pr && replaced != at.token) {
		log_msg(LOG_INFO, "attach", "cgroup %s -> token %s%s (replacing %s) by uid %u", req->cgroup,
			tok_str(r->token).s, at.confine ? " confined" : "", block_str(a, pr).s, p->uid);
		rp->fields = json_pack("{s:o}", "replaced", resv_json(a, pr));
	} else {
		log_msg(LOG_INFO, "attach", "cgroup %s -> token %s%s by uid %u", req->cgroup, tok_str(r->token).s,
			at.confine == STATE_CONFINE_ALL ? " confined (all protocols)" : at.confine ? " confined" : "",
			p->uid);
	}
	batch_emit(a, json_pack("{s:s, s:s, s:s, s:i, s:i, s:s, s:o}", "type", "attached", "token", tok_str(r->token).s,
				"proto", state_proto_name(r->r.proto), "start", r->r.start, "count", r->r.count, "cgroup",
				req->cgroup, "confine", at.confine == STATE_CONFINE_ALL ? json_string("all")
							: json_boolean(at.confine)));
	return 0;
err_undo:
	undo_attach(a, u);
	undo_attach_free(u);
	return -1;
}

/* Detaches a cgroup: every block of it, or the one req names. */
static int op_detach(struct agent *a, const struct peer *p, const struct proto_req *req, struct reply *rp)
{
	char real[PATH_MAX];
	bool have_real = realpath(req->cgroup, real) != NULL;
	struct resv *sel = NULL;
	struct undo_attach *u;
	struct stat sb;
	uint64_t id;

	if (portres_cgroup_id(req->cgroup, &id))
		id = 0;
	if (req->sel != PROTO_SEL_NONE && !(sel = select_resv(a, req, NULL, rp)))
		return -1;
	/* checked for each before anything changes */
	for (size_t i = 0; i < a->st.n_attach; i++) {
		struct state_attach *at = &a->st.attach[i];

		if ((strcmp(at->path, req->cgroup) && (!id || at->cgroup_id != id) && (!have_real || strcmp(at->path, real))) ||
		    (sel && at->token != sel->token))
			continue;
		if (may_attach(a, p, resv_find(a, at->token), stat(at->path, &sb) ? (uid_t)-1 : sb.st_uid, rp))
			return -1;
		if (!owns_attachment(a, p, at))
			return refuse_attachment(a, at, NULL, rp);
	}
	if (!(u = calloc(1, sizeof(*u))))
		return fail(rp, ENOMEM, "out of memory");
	for (size_t i = a->st.n_attach; i-- > 0;) {
		struct state_attach *at = &a->st.attach[i];

		if ((strcmp(at->path, req->cgroup) && (!id || at->cgroup_id != id) && (!have_real || strcmp(at->path, real))) ||
		    (sel && at->token != sel->token))
			continue;
		log_msg(LOG_INFO, "detach", "cgroup %s from token %s by uid %u", at->path, tok_str(at->token).s, p->uid);
		batch_emit(a, json_pack("{s:s, s:s, s:s}", "type", "detached", "token", tok_str(at->token).s, "cgroup",
					at->path));
		if (attach_remove(a, i, u)) {
			undo_attach(a, u);
			undo_attach_free(u);
			return fail(rp, ENOMEM, "out of memory");
		}
		cgroup_map_sync(a, u->gone[u->n - 1].cgroup_id);
	}
	if (!u->n) {
		free(u);
		return fail(rp, ENOENT, "cgroup %s is not attached%s%s", req->cgroup, sel ? " to " : "",
			    sel ? block_str(a, sel).s : "");
	}
	store_forget(a, u);
	batch_undo(a, undo_attach, undo_attach_free, u, -1);
	return 0;
}

/* --- reading -------------------------------------------------------------- */

static json_t *stats_json(struct agent *a, uint64_t token)
{
	struct portres_stats s = { 0 };

	portres_resv_stats(a->loader, token, &s);
	return json_pack("{s:I, s:I, s:I, s:I, s:I}", "allowed", (json_int_t)s.allowed, "denied",
			 (json_int_t)s.denied, "allocated", (json_int_t)s.allocated, "exhausted",
			 (json_int_t)s.exhausted, "audited", (json_int_t)s.audited);
}

struct socks_ctx {
	uint8_t proto;
	uint32_t start, count;
	json_t *arr;
};

/* ss's names of socket states; an unconnected UDP socket is "unconn". */
static const char *sock_state(const struct sockdiag_sock *s)
{
	static const char *const names[] = { "?", "estab", "syn-sent", "syn-recv", "fin-wait-1", "fin-wait-2",
					     "time-wait", "close", "close-wait", "last-ack", "listen", "closing" };

	if (s->proto == IPPROTO_UDP && s->state == 7)
		return "unconn";
	return s->state < sizeof(names) / sizeof(names[0]) ? names[s->state] : "?";
}

static int socks_in_ns(void *arg)
{
	struct socks_ctx *c = arg;
	struct sockdiag_sock *s;
	char path[PATH_MAX], addr[64];
	size_t n;
	int err = sockdiag_list(c->proto, c->start, c->count, &s, &n);

	if (err)
		return err;
	sockdiag_find_pids(s, n);
	for (size_t i = 0; i < n; i++) {
		json_t *o, *procs = json_array();

		inet_ntop(s[i].family == AF_INET6 ? AF_INET6 : AF_INET, s[i].addr, addr, sizeof(addr));
		o = json_pack("{s:i, s:s, s:s, s:s, s:s, s:i, s:I, s:I}", "port", s[i].port, "proto",
			      state_proto_name(s[i].proto), "family", s[i].family == AF_INET6 ? "ipv6" : "ipv4", "addr",
			      addr, "state", sock_state(&s[i]), "uid", s[i].uid, "inode", (json_int_t)s[i].inode,
			      "cgroup_id", (json_int_t)s[i].cgroup_id);
		if (o && s[i].pid) {
			json_object_set_new(o, "pid", json_integer(s[i].pid));
			json_object_set_new(o, "comm", json_string(s[i].comm));
		}
		/* every process holding it: a shared listener has them all (nginx's workers) */
		for (size_t k = 0; k < s[i].n_procs; k++)
			json_array_append_new(procs, json_pack("{s:i, s:s}", "pid", s[i].procs[k].pid, "comm",
							       s[i].procs[k].comm));
		json_object_set_new(o, "processes", procs);
		if (o && !cgroup2_path(s[i].cgroup_id, path, sizeof(path)))
			json_object_set_new(o, "cgroup", json_string(path));
		json_array_append_new(c->arr, o);
	}
	sockdiag_free(s, n);
	return 0;
}

static json_t *sockets_json(struct agent *a, struct netns *ns, uint8_t proto, uint32_t start, uint32_t count)
{
	struct socks_ctx c = { .proto = proto, .start = start, .count = count, .arr = json_array() };

	if (netns_run(a, ns, socks_in_ns, &c)) {
		json_decref(c.arr);
		return json_null();
	}
	return c.arr;
}

static json_t *attachments_json(struct agent *a, const struct resv *r)
{
	uint64_t token = r->token;
	json_t *att = json_array();

	for (size_t i = 0; r->n_attach && i < a->st.n_attach; i++)
		if (a->st.attach[i].token == token)
			json_array_append_new(att, attach_json(&a->st.attach[i]));
	return att;
}

static int op_show(struct agent *a, const struct proto_req *req, const struct where *w, struct reply *rp)
{
	struct resv *r = select_resv(a, req, w, rp);
	json_t *o;

	if (!r)
		return -1;
	o = resv_json(a, r);
	json_object_set_new(o, "attachments", attachments_json(a, r));
	json_object_set_new(o, "stats", stats_json(a, r->token));
	json_object_set_new(o, "sockets", sockets_json(a, r->ns, r->r.proto, r->r.start, r->r.count));
	rp->fields = json_pack("{s:o}", "reservation", o);
	return 0;
}

/* The sockets of one netns, for the usage of its reservations. */
struct usage_ctx {
	struct sockdiag_sock *socks;
	size_t n;
};

static int usage_in_ns(void *arg)
{
	struct usage_ctx *c = arg;

	return sockdiag_list(0, 0, 65536, &c->socks, &c->n);
}

/* Ports of [start, start+count) of proto with a socket: socks sorted by protocol and port. */
static long ports_in_use(const struct usage_ctx *c, uint8_t proto, uint32_t start, uint32_t count)
{
	size_t lo = 0, hi = c->n;
	long used = 0;
	int last = -1;

	/* the first socket at (proto, start) or after it */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct sockdiag_sock *s = &c->socks[mid];
		bool before = s->proto != proto ? (s->proto == IPPROTO_TCP) : s->port < start;

		if (before)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < c->n && c->socks[lo].proto == proto && c->socks[lo].port < start + count; lo++)
		if (c->socks[lo].port != last) {
			used++;
			last = c->socks[lo].port;
		}
	return used;
}

/*
 * list with "usage": each reservation's ports in use ("in_use", from one
 * sock_diag dump per network namespace, -1 when that fails), counters
 * ("stats") and its netns's nsfs inode (as lsns shows it) when known.
 */
static void add_usage(struct agent *a, json_t *arr, uint64_t filter)
{
	struct netns *ns, *tmp;

	HASH_ITER(hh, a->ns_by_cookie, ns, tmp) {
		struct usage_ctx c = { 0 };
		struct resv *r, *rtmp;
		bool ok = false;
		struct stat sb;
		size_t i = 0;

		if (ns->n_resv)
			ok = !netns_run(a, ns, usage_in_ns, &c);
		/* arr is in the table's order, less what the filter left out */
		resv_foreach(a, r, rtmp) {
			json_t *o;

			if (filter && r->r.netns != filter)
				continue;
			o = json_array_get(arr, i++);
			if (r->ns != ns || !o)
				continue;
			json_object_set_new(o, "in_use", json_integer(ok ? ports_in_use(&c, r->r.proto, r->r.start,
											 r->r.count) : -1));
			json_object_set_new(o, "stats", stats_json(a, r->token));
			if (!json_object_get(o, "netns_inode") &&
			    (ns->fd >= 0 ? !fstat(ns->fd, &sb) : ns->own && !stat("/proc/self/ns/net", &sb)))
				json_object_set_new(o, "netns_inode", json_integer((json_int_t)sb.st_ino));
		}
		sockdiag_free(c.socks, c.n);
	}
}

static int op_list(struct agent *a, const struct proto_req *req, const struct where *w, struct reply *rp)
{
	json_t *arr = json_array();
	struct resv *r, *tmp;

	resv_foreach(a, r, tmp) {
		json_t *o;

		/* a netns passed: its reservations only */
		if (w->given && r->r.netns != w->cookie)
			continue;
		o = resv_json(a, r);

		json_object_set_new(o, "attachments", attachments_json(a, r));
		json_array_append_new(arr, o);
	}
	if (req->usage)
		add_usage(a, arr, w->given ? w->cookie : 0);
	rp->fields = json_pack("{s:o}", "reservations", arr);
	return 0;
}

static int op_who(struct agent *a, const struct proto_req *req, const struct where *w, struct reply *rp)
{
	static const uint8_t protos[] = { IPPROTO_TCP, IPPROTO_UDP };
	json_t *owners = json_array();

	for (size_t i = 0; i < 2; i++) {
		struct resv *r;

		if (req->proto && req->proto != protos[i])
			continue;
		r = resv_at(w->ns, protos[i], req->port);
		if (r)
			json_array_append_new(owners, resv_json(a, r));
	}
	rp->fields = json_pack("{s:i, s:o, s:o}", "port", req->port, "reservations", owners, "sockets",
			       sockets_json(a, w->ns, req->proto, req->port, 1));
	netns_json(rp->fields, w->ns);
	return 0;
}

static int op_status(struct agent *a, struct reply *rp)
{
	struct portres_gstats g = { 0 };
	size_t persistent = a->n_persistent;
	uint32_t lo, hi;
	char users[32] = "none";

	portres_global_stats(a->loader, &g);
	if (user_ports(a, a->own_ns, &lo, &hi) == 0 && lo <= hi)
		snprintf(users, sizeof(users), "%u-%u", lo, hi);
	rp->fields = json_pack("{s:s, s:i, s:I, s:I, s:b, s:s, s:s, s:s, s:s, s:i, s:{s:I, s:I}, s:I, s:I,"
			       " s:{s:I, s:I, s:I}}",
			       "version", PORTRESD_VERSION, "pid", (int)getpid(), "netns",
			       (json_int_t)a->own_ns->cookie, "uptime_s",
			       (json_int_t)(time(NULL) - a->started), "adopted", portres_loader_adopted(a->loader),
			       "cgroup", a->opts.cgroup, "bpffs", a->opts.bpffs, "state_dir", a->opts.state_dir,
			       "socket", a->opts.socket, "quota", a->opts.quota, "reservations", "persistent",
			       (json_int_t)persistent, "runtime", (json_int_t)(a->n_resv - persistent), "clients",
			       (json_int_t)a->n_clients, "requests", (json_int_t)a->requests, "kernel", "decisions",
			       (json_int_t)g.decisions, "events_sent", (json_int_t)g.events_sent, "events_dropped",
			       (json_int_t)g.events_dropped);
	if (rp->fields)
		json_object_set_new(rp->fields, "user_ports", json_string(users));
	return 0;
}

static int op_metrics(struct agent *a, struct reply *rp)
{
	char *text = metrics_text(a);

	if (!text)
		return fail(rp, ENOMEM, "out of memory");
	rp->fields = json_pack("{s:s}", "text", text);
	free(text);
	return 0;
}

static int op_events(struct agent *a, const struct proto_req *req, struct event_sub **sub, struct reply *rp)
{
	char msg[256] = "out of memory";
	json_t *recent;
	int err;

	if (sub)
		*sub = NULL;
	if ((err = events_request(a, req->root, &recent, sub, msg, sizeof(msg))))
		return fail(rp, -err, "events: %s", msg);
	rp->fields = json_pack("{s:o}", "recent", recent);
	return 0;
}

/* --- dispatch ------------------------------------------------------------- */

static bool op_writes(enum proto_op op)
{
	switch (op) {
	case PROTO_OP_ACQUIRE:
	case PROTO_OP_RELEASE:
	case PROTO_OP_CREATE:
	case PROTO_OP_DELETE:
	case PROTO_OP_UPDATE:
	case PROTO_OP_ATTACH:
	case PROTO_OP_DETACH:
		return true;
	default:
		return false;
	}
}

/* An in-process caller's reply, kept until the commit delivers it. */
static void capture(void *ctx, char *reply)
{
	*(char **)ctx = reply;
}

static void commit(struct agent *a, bool wait)
{
	char err[STATE_ERR_LEN + 128];
	time_t now;

	if (!batch_commit(a, err, sizeof(err), wait))
		return;
	/* the disk stays full for a while: one line a second with a count */
	a->commit_log.n++;
	now = time(NULL);
	if (now != a->commit_log.logged) {
		log_msg(LOG_ERR, "store", "%s; the changes of %llu batch%s were undone", err,
			(unsigned long long)a->commit_log.n, a->commit_log.n == 1 ? "" : "es");
		a->commit_log.logged = now;
		a->commit_log.n = 0;
	}
}

void ops_commit(struct agent *a)
{
	commit(a, true);
}

void ops_commit_async(struct agent *a)
{
	commit(a, false);
}

void ops_synced(struct agent *a)
{
	batch_synced(a, false);
}

char *ops_handle(struct agent *a, const struct peer *p, const char *buf, size_t len, int fd, struct event_sub **sub,
		 batch_done_fn done, void *ctx)
{
	struct reply rp = { 0 };
	struct proto_req req;
	struct proto_err perr;
	struct where w = { .fd = -1, .lent = -1 };
	char *out, *res = NULL;
	size_t mark;
	bool changed;

	a->requests++;
	mark = batch_mark(a);
	/* A netns that died is forgotten before anyone names it (its inode may be
	 * reused): the server reads the notifications first in each turn; an
	 * in-process caller's request reads them here. */
	if (!done)
		netns_watch_run(a);
	if (proto_parse_request(buf, len, &req, &perr)) {
		rp.code = perr.code;
		snprintf(rp.msg, sizeof(rp.msg), "%s", perr.msg);
		goto reply;
	}
	log_msg(LOG_DEBUG, "request", "%s from pid %d uid %u", proto_op_name(req.op), p->pid, p->uid);
	if (fd >= 0 && req.op != PROTO_OP_ACQUIRE && req.op != PROTO_OP_RELEASE && req.op != PROTO_OP_ASSOCIATE &&
	    !proto_op_takes_netns(req.op)) {
		fail(&rp, EINVAL, "%s takes no file descriptor", proto_op_name(req.op));
		goto reply;
	}
	/*
	 * Reads see only what is committed: what the batch holds is committed
	 * first (its replies, and this one after them, go once it is durable).
	 */
	if (!op_writes(req.op) && batch_open(a)) {
		commit(a, !done);
		mark = batch_mark(a);
	}
	/* only an administrator's create makes the agent watch a netns */
	if (proto_op_takes_netns(req.op) &&
	    where_resolve(a, p, &req, fd, req.op == PROTO_OP_CREATE && ops_is_admin(a, p), &w, &rp))
		goto reply;
	switch (req.op) {
	case PROTO_OP_ACQUIRE: op_acquire(a, p, &req, fd, &rp); break;
	case PROTO_OP_RELEASE: op_release(a, p, &req, fd, &rp); break;
	case PROTO_OP_CREATE:  op_create(a, p, &req, &w, &rp); break;
	case PROTO_OP_LOOKUP:  op_lookup(a, &req, &w, &rp); break;
	case PROTO_OP_DELETE:  op_delete(a, p, &req, &w, &rp); break;
	case PROTO_OP_UPDATE:  op_update(a, p, &req, &rp); break;
	case PROTO_OP_LIST:    op_list(a, &req, &w, &rp); break;
	case PROTO_OP_SHOW:    op_show(a, &req, &w, &rp); break;
	case PROTO_OP_WHO:     op_who(a, &req, &w, &rp); break;
	case PROTO_OP_ATTACH:  op_attach(a, p, &req, &rp); break;
	case PROTO_OP_DETACH:  op_detach(a, p, &req, &rp); break;
	case PROTO_OP_STATUS:  op_status(a, &rp); break;
	case PROTO_OP_METRICS: op_metrics(a, &rp); break;
	case PROTO_OP_EVENTS:  op_events(a, &req, sub, &rp); break;
	case PROTO_OP_ASSOCIATE: op_associate(a, p, &req, fd, &rp); break;
	case PROTO_OP__COUNT:  break;
	}
reply:
	where_done(a, &w);
	if (rp.code) {
		a->errors++;
		json_decref(rp.fields);
		log_msg(rp.code == EACCES ? LOG_WARN : LOG_DEBUG, "refused", "%s from pid %d uid %u: %s: %s",
			req.root ? proto_op_name(req.op) : "request", p->pid, p->uid, proto_errno_name(rp.code) ? proto_errno_name(rp.code) : strerrorname_np(rp.code) ? strerrorname_np(rp.code) : "EIO", rp.msg);
		out = proto_err_reply(rp.code, rp.msg);
	} else {
		out = proto_ok_reply(rp.fields);
	}
	proto_req_free(&req);
	changed = batch_mark(a) != mark;
	/* Replies wait for the batch's commit (in their order), or go now when none is open. */
	if (!done) {
		batch_reply(a, capture, &res, out, changed);
		ops_commit(a);
		return res;
	}
	/* behind replies that wait for a sync: nothing is told before what it saw is durable */
	if (batch_open(a) || batch_waiting(a))
		batch_reply(a, done, ctx, out, changed);
	else
		done(ctx, out);
	return NULL;
}

static const char *const event_names[] = {
	[PORTRES_EV_DENY] = "deny", [PORTRES_EV_AUDIT] = "audit",
	[PORTRES_EV_EXHAUSTED] = "exhausted", [PORTRES_EV_RELEASED] = "anchor_closed",
};

json_t *event_json(const struct portres_event *ev)
{
	static const char *const reasons[] = {
		[PORTRES_REASON_FOREIGN_BLOCK] = "foreign-block", [PORTRES_REASON_CONFINED] = "confined",
		[PORTRES_REASON_WRONG_NETNS] = "wrong-netns", [PORTRES_REASON_GONE] = "gone",
	};
	char comm[17], path[PATH_MAX], addr[INET6_ADDRSTRLEN];
	int e = ev->err < 0 ? -ev->err : ev->err;
	json_t *o;

	memcpy(comm, ev->comm, 16);
	comm[16] = '\0';
	for (char *c = comm; *c; c++)
		if (*c < 0x20 || *c > 0x7e)
			*c = '?';
	/* the bind's local address: all zeros is the wildcard, 0.0.0.0 or :: */
	if (!inet_ntop(ev->family == AF_INET6 ? AF_INET6 : AF_INET, ev->addr, addr, sizeof(addr)))
		addr[0] = '\0';
	o = json_pack("{s:s, s:s, s:s?, s:i, s:s, s:s, s:I, s:i, s:s, s:i, s:s, s:I, s:I, s:I}", "type",
		      ev->type < 5 && event_names[ev->type] ? event_names[ev->type] : "unknown", "token",
		      tok_str(ev->token).s, "proto", state_proto_name(ev->proto), "port", ev->port, "family",
		      ev->family == AF_INET6 ? "ipv6" : "ipv4", "addr", addr, "pid", (json_int_t)ev->pid, "uid", (int)ev->uid,
		      "comm", comm, "err", ev->err, "errno", e ? (proto_errno_name(e) ? proto_errno_name(e) : "?") : "",
		      "cgroup_id", (json_int_t)ev->cgroup_id, "netns", (json_int_t)ev->netns, "ts_ns",
		      (json_int_t)ev->ts_ns);
	if (o && ev->reason < sizeof(reasons) / sizeof(reasons[0]) && reasons[ev->reason])
		json_object_set_new(o, "reason", json_string(reasons[ev->reason]));
	/* resolved now: the cgroup of a short-lived process may be gone by the time someone reads it */
	if (o && ev->cgroup_id && !cgroup2_path(ev->cgroup_id, path, sizeof(path)))
		json_object_set_new(o, "cgroup", json_string(path));
	return o;
}
