// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * netns.c - the network namespaces reservations live in: who they are, how
 * the agent gets in, and how it learns that one is gone.
 *
 * Identity. The data plane knows a netns by its cookie (SO_NETNS_COOKIE,
 * never reused while the machine runs); users know it by its nsfs inode
 * (what lsns and /proc/PID/ns/net show) and the path they named it by.
 *
 * Lifetime. An open nsfs fd (or any socket) keeps a netns alive, so the
 * agent holds an fd only of its own netns and of a netns while runtime
 * reservations live there (their anchor socket holds it anyway). A netns
 * with persistent reservations instead gets an nsid in the agent's netns
 * (RTM_NEWNSID with NETNSA_FD), which holds no reference: when the netns is
 * destroyed, cleanup_net() removes the id and the kernel sends RTM_DELNSID
 * to RTNLGRP_NSID, where the agent listens; its reservations then end.
 *
 * Getting in. Work inside a netns (its ip_local_reserved_ports, sock_diag
 * of holders) setns()es there and back. A netns without a held fd is opened
 * for that moment: by the path it was named by if that still has its inode,
 * else by a scan of /proc/PID/ns/net and of nsfs fds in /proc/PID/fd; once
 * entered, its cookie must match (inode numbers are reused). After a restart
 * the netns entries of the database are found again the same way, or
 * their reservations end.
 *
 * Sysctl. Each netns's ip_local_reserved_ports is written once per batch,
 * from the ports of its reservations kept with the table (netns.used),
 * merging with the entries others made; the ports portres added (owned) are
 * rows of the database.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/net_namespace.h>
#include <linux/nsfs.h>
#include <linux/rtnetlink.h>
#include <linux/sockios.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "portresd.h"

/* --- the table ------------------------------------------------------------ */

static struct netns *netns_new(struct agent *a, uint64_t cookie, int fd)
{
	struct netns *ns = calloc(1, sizeof(*ns));

	if (!ns)
		return NULL;
	ns->cookie = cookie;
	ns->fd = fd;
	ns->nsid = -1;
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
	free(ns->path);
	free(ns);
}

struct netns *netns_find(struct agent *a, uint64_t cookie)
{
	struct netns *ns;

	HASH_FIND(hh, a->ns_by_cookie, &cookie, sizeof(cookie), ns);
	return ns;
}

struct netns_name netns_name(const struct netns *ns)
{
	struct netns_name n;

	if (ns->own)
		snprintf(n.s, sizeof(n.s), "net:[%llu] (the agent's)", (unsigned long long)ns->inode);
	else if (!ns->inode)
		snprintf(n.s, sizeof(n.s), "netns cookie %llu", (unsigned long long)ns->cookie);
	else
		snprintf(n.s, sizeof(n.s), "net:[%llu]%s%s%s", (unsigned long long)ns->inode, ns->path ? " (" : "",
			 ns->path ? ns->path : "", ns->path ? ")" : "");
	return n;
}

void netns_json(json_t *o, const struct netns *ns)
{
	if (!o || !ns)
		return;
	if (ns->inode)
		json_object_set_new(o, "netns_inode", json_integer((json_int_t)ns->inode));
	if (ns->path)
		json_object_set_new(o, "netns_path", json_string(ns->path));
}

int netns_own(struct agent *a)
{
	struct netns *ns;
	struct stat sb;
	uint64_t cookie;
	int err, fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (fstat(fd, &sb) || (err = portres_netns_cookie(&cookie))) {
		err = errno ? -errno : -EIO;
		close(fd);
		return err;
	}
	if (!(ns = netns_new(a, cookie, fd))) {
		close(fd);
		return -ENOMEM;
	}
	ns->own = true;
	ns->inode = sb.st_ino;
	a->nsfs_dev = sb.st_dev;
	a->own_ns = ns;
	return 0;
}

void netns_release_all(struct agent *a)
{
	struct netns *ns, *tmp;

	HASH_ITER(hh, a->ns_by_cookie, ns, tmp)
		netns_free(a, ns);
	a->own_ns = NULL;
	if (a->nl_req)
		mnl_socket_close(a->nl_req);
	if (a->nl_watch)
		mnl_socket_close(a->nl_watch);
	a->nl_req = a->nl_watch = NULL;
}

/* --- getting in ----------------------------------------------------------- */

static void return_home(struct agent *a)
{
	if (setns(a->own_ns->fd, CLONE_NEWNET)) {
		/* Going on in the wrong namespace would corrupt every later operation. */
		log_msg(LOG_ERR, "netns", "cannot return to own network namespace: %s", strerror(errno));
		abort();
	}
}

/* The cookie of the netns fd refers to (entered for a moment). */
static int cookie_of(struct agent *a, int fd, uint64_t *cookie)
{
	int err;

	if (setns(fd, CLONE_NEWNET))
		return -errno;
	err = portres_netns_cookie(cookie);
	return_home(a);
	return err;
}

/* An nsfs fd of path if it is still ns (inode, then cookie), else -1. */
static int open_if(struct agent *a, const struct netns *ns, const char *path)
{
	struct stat sb;
	uint64_t cookie;
	int fd;

	/* stat first: the agent opens nothing but the nsfs file it looks for (no FIFO, no device) */
	if (stat(path, &sb) || sb.st_ino != ns->inode || sb.st_dev != a->nsfs_dev)
		return -1;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return -1;
	if (fstat(fd, &sb) || sb.st_ino != ns->inode || sb.st_dev != a->nsfs_dev || cookie_of(a, fd, &cookie) ||
	    cookie != ns->cookie) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Scans /proc for a process in ns, or holding an fd of it. */
static int open_by_scan(struct agent *a, struct netns *ns)
{
	char want[64], path[64], link[64];
	DIR *d = opendir("/proc"), *fds;
	struct dirent *e, *f;
	int fd = -1;

	if (!d)
		return -1;
	snprintf(want, sizeof(want), "net:[%llu]", (unsigned long long)ns->inode);
	while (fd < 0 && (e = readdir(d))) {
		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%.20s/ns/net", e->d_name);
		if ((fd = open_if(a, ns, path)) >= 0) {
			snprintf(ns->hint, sizeof(ns->hint), "%s", path);
			break;
		}
		snprintf(path, sizeof(path), "/proc/%.20s/fd", e->d_name);
		if (!(fds = opendir(path)))
			continue;
		while (fd < 0 && (f = readdir(fds))) {
			ssize_t n;

			snprintf(path, sizeof(path), "/proc/%.20s/fd/%.16s", e->d_name, f->d_name);
			n = readlink(path, link, sizeof(link) - 1);
			if (n <= 0)
				continue;
			link[n] = '\0';
			if (!strcmp(link, want))
				fd = open_if(a, ns, path);
		}
		closedir(fds);
	}
	closedir(d);
	return fd;
}

/* An fd of ns for a moment (close it), or -ENOENT when it cannot be found. */
static int netns_open(struct agent *a, struct netns *ns)
{
	int fd;

	if (ns->fd >= 0)
		return (fd = fcntl(ns->fd, F_DUPFD_CLOEXEC, 0)) < 0 ? -errno : fd;
	if (!ns->inode)
		return -ENOENT;
	if ((ns->path && (fd = open_if(a, ns, ns->path)) >= 0) || (ns->hint[0] && (fd = open_if(a, ns, ns->hint)) >= 0))
		return fd;
	fd = open_by_scan(a, ns);
	return fd >= 0 ? fd : -ENOENT;
}

int netns_run(struct agent *a, struct netns *ns, int (*fn)(void *arg), void *arg)
{
	int ret, fd;

	if (ns->own)
		return fn(arg);
	if ((fd = netns_open(a, ns)) < 0)
		return fd;
	if (setns(fd, CLONE_NEWNET)) {
		ret = -errno;
		close(fd);
		return ret;
	}
	close(fd);
	ret = fn(arg);
	return_home(a);
	return ret;
}

/* --- nsids ---------------------------------------------------------------- */

static int nl_open(struct mnl_socket **out, unsigned group)
{
	struct mnl_socket *nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC | (group ? SOCK_NONBLOCK : 0));
	int err;

	if (!nl)
		return -errno;
	if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) ||
	    (group && mnl_socket_setsockopt(nl, NETLINK_ADD_MEMBERSHIP, &group, sizeof(group)))) {
		err = -errno;
		mnl_socket_close(nl);
		return err;
	}
	*out = nl;
	return 0;
}

static int nsid_attr(const struct nlattr *attr, void *data)
{
	if (mnl_attr_get_type(attr) == NETNSA_NSID && mnl_attr_validate(attr, MNL_TYPE_U32) >= 0)
		*(int32_t *)data = (int32_t)mnl_attr_get_u32(attr);
	return MNL_CB_OK;
}

static int nsid_reply(const struct nlmsghdr *nlh, void *data)
{
	mnl_attr_parse(nlh, sizeof(struct rtgenmsg), nsid_attr, data);
	return MNL_CB_OK;
}

/* One RTM_{NEW,GET}NSID request about the netns of fd; *nsid gets the reply's id (GET). */
static int nsid_call(struct agent *a, uint16_t type, int fd, int32_t *nsid)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh;
	struct rtgenmsg *g;
	unsigned seq = ++a->nl_seq;
	ssize_t n;
	int ret, err;

	if (!a->nl_req && (err = nl_open(&a->nl_req, 0)))
		return err;
	nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = type;
	nlh->nlmsg_flags = NLM_F_REQUEST | (type == RTM_NEWNSID ? NLM_F_ACK : 0);
	nlh->nlmsg_seq = seq;
	g = mnl_nlmsg_put_extra_header(nlh, sizeof(*g));
	g->rtgen_family = AF_UNSPEC;
	mnl_attr_put_u32(nlh, NETNSA_FD, (uint32_t)fd);
	if (type == RTM_NEWNSID)
		mnl_attr_put_u32(nlh, NETNSA_NSID, (uint32_t)-1); /* the kernel picks one */
	if (mnl_socket_sendto(a->nl_req, nlh, nlh->nlmsg_len) < 0)
		return -errno;
	do {
		n = mnl_socket_recvfrom(a->nl_req, buf, sizeof(buf));
		if (n < 0)
			return -errno;
		ret = mnl_cb_run(buf, (size_t)n, seq, mnl_socket_get_portid(a->nl_req), nsid_reply, nsid);
	} while (ret == MNL_CB_OK && type == RTM_NEWNSID);
	return ret < 0 ? -errno : 0;
}

/* The nsid of fd's netns in the agent's, assigning one if it has none. */
static int nsid_assign(struct agent *a, int fd, int32_t *nsid)
{
	int err = nsid_call(a, RTM_NEWNSID, fd, nsid);

	if (err && err != -EEXIST)
		return err;
	*nsid = -1;
	if ((err = nsid_call(a, RTM_GETNSID, fd, nsid)))
		return err;
	return *nsid >= 0 ? 0 : -ENOENT;
}

/* --- netns of clients ----------------------------------------------------- */

int netns_identify(struct agent *a, int fd, uint64_t *cookie, uint64_t *inode, char *msg, size_t len)
{
	struct stat sb;
	int type, err;

	if (fstat(fd, &sb)) {
		snprintf(msg, len, "the netns descriptor: %s", strerror(errno));
		return -EINVAL;
	}
	type = ioctl(fd, NS_GET_NSTYPE);
	if (type != CLONE_NEWNET) {
		snprintf(msg, len, "the descriptor passed is not a network namespace (open /proc/PID/ns/net or /run/netns/NAME)");
		return -EINVAL;
	}
	if ((err = cookie_of(a, fd, cookie))) {
		snprintf(msg, len, "cannot enter network namespace net:[%llu]: %s", (unsigned long long)sb.st_ino,
			 strerror(-err));
		return err;
	}
	*inode = sb.st_ino;
	return 0;
}

int netns_register(struct agent *a, int fd, uint64_t cookie, uint64_t inode, const char *path, struct netns **out,
		   char *msg, size_t len)
{
	struct netns *ns = netns_find(a, cookie);
	int32_t nsid = -1;
	int err;

	if (ns && (ns->own || ns->nsid >= 0)) {
		if (!ns->path && path && path[0] == '/')
			ns->path = strdup(path);
		*out = ns;
		return 0;
	}
	/* its death must reach the agent: an nsid, which holds no reference */
	if ((err = nsid_assign(a, fd, &nsid))) {
		snprintf(msg, len, "network namespace net:[%llu]: cannot give it an nsid to watch: %s",
			 (unsigned long long)inode, strerror(-err));
		return err;
	}
	if (!ns && !(ns = netns_new(a, cookie, -1))) {
		snprintf(msg, len, "out of memory");
		return -ENOMEM;
	}
	ns->inode = inode;
	ns->nsid = nsid;
	if (!ns->path && path && path[0] == '/')
		ns->path = strdup(path);
	*out = ns;
	return 0;
}

/*
 * The context of a netns by cookie. sockfd (or -1) is a socket of that netns:
 * SIOCGSKNS gives an fd of the socket's own namespace, held while runtime
 * reservations live there, so its sysctl can be cleaned when they end.
 */
struct netns *netns_get(struct agent *a, uint64_t cookie, int sockfd)
{
	struct netns *ns = netns_find(a, cookie);
	struct stat sb;

	if (!ns && !(ns = netns_new(a, cookie, -1)))
		return NULL;
	if (ns->fd < 0 && sockfd >= 0 && (ns->fd = ioctl(sockfd, SIOCGSKNS)) >= 0) {
		fcntl(ns->fd, F_SETFD, FD_CLOEXEC);
		if (!fstat(ns->fd, &sb))
			ns->inode = sb.st_ino;
	}
	return ns;
}

void netns_adopt(struct agent *a, struct netns *ns, uint32_t pid)
{
	char path[64];
	struct stat sb;
	uint64_t cookie;
	int fd;

	if (ns->own || ns->fd >= 0)
		return;
	/* the acquiring process most likely still lives in the netns of its socket */
	snprintf(path, sizeof(path), "/proc/%u/ns/net", pid);
	if (stat(path, &sb) || sb.st_dev != a->nsfs_dev || (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return;
	if (cookie_of(a, fd, &cookie) || cookie != ns->cookie || fstat(fd, &sb)) {
		close(fd);
		return;
	}
	ns->fd = fd;
	ns->inode = sb.st_ino;
}

/*
 * Forgets a foreign netns that holds no reservation and no sysctl entry of
 * portres's any more (its database row went with its last persistent one);
 * lets go of its fd once no runtime one needs it, unless a request lent it.
 */
void netns_gc(struct agent *a, struct netns *ns)
{
	if (ns->own)
		return;
	if (!ns->n_resv && !ns->sysctl_dirty && !ns->lent && portset_empty(&ns->owned) &&
	    portset_empty(&ns->owned_db) && !ns->in_store) {
		netns_free(a, ns);
		return;
	}
	/* an fd would keep the netns alive: its persistent reservations must end with it */
	if (!ns->n_runtime && !ns->lent && ns->fd >= 0 && ns->nsid >= 0) {
		close(ns->fd);
		ns->fd = -1;
	}
}

void netns_store(struct agent *a, struct netns *ns)
{
	bool want = !ns->own && ns->n_resv > ns->n_runtime;

	if (want && !ns->in_store)
		store_put_netns(a->store, &(struct state_netns){ .cookie = ns->cookie, .inode = ns->inode,
								  .nsid = ns->nsid, .path = ns->path });
	else if (!want && ns->in_store)
		store_del_netns(a->store, ns->cookie);
	ns->in_store = want;
}

/* --teardown: portres's entries leave the sysctl of the netns entered (arg: its owned ports). */
static int teardown_in_ns(void *arg)
{
	struct portset none;

	portset_clear(&none);
	return sysctl_ports_sync(SYSCTL_RESERVED_PORTS, &none, arg, NULL);
}

/* --- sysctl --------------------------------------------------------------- */

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
	unsigned long unpriv = 1024, v6only;
	int err;

	ns->port_lo = 32768;
	ns->port_hi = 60999;
	if ((err = sysctl_port_range(SYSCTL_PORT_RANGE, &ns->port_lo, &ns->port_hi)))
		return err;
	if ((err = sysctl_read_ulong(SYSCTL_UNPRIV_START, &unpriv)))
		return err == -EINVAL ? -EIO : err;
	ns->unpriv_start = unpriv > 65536 ? 65536 : (uint32_t)unpriv;
	/* without IPv6 there is no such file, and the probes use IPv4 */
	ns->v6only = sysctl_read_ulong("/proc/sys/net/ipv6/bindv6only", &v6only) || v6only != 0;
	return 0;
}

static int write_sysctl(void *arg)
{
	return portset_write(SYSCTL_RESERVED_PORTS, arg);
}

int netns_ranges(struct agent *a, struct netns *ns)
{
	int err;

	if (ns->ranges_gen != a->batch_gen && (err = netns_run(a, ns, read_ranges, ns)))
		return err;
	ns->ranges_gen = a->batch_gen;
	return 0;
}

const struct portset *netns_sysctl_now(struct agent *a, struct netns *ns, int *err)
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
	if (!(cur = netns_sysctl_now(a, ns, &err))) {
		free(mid);
		log_msg(LOG_WARN, "sysctl", "%s: ip_local_reserved_ports not read: %s", netns_name(ns).s, strerror(-err));
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
		log_msg(LOG_WARN, "sysctl", "%s: ip_local_reserved_ports not updated: %s", netns_name(ns).s,
			strerror(-err));
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

/* --- the end of a netns --------------------------------------------------- */

/*
 * Every reservation in ns ends (ns is gone): maps, attachments, table,
 * database, events; then ns is forgotten, with the sysctl entries it took
 * along. Nobody asked for it: it stays done whatever becomes of the batch.
 */
static void netns_end(struct agent *a, struct netns *ns, const char *why)
{
	char name[PATH_MAX + 64];
	struct resv *r, *tmp;
	struct portset none;
	size_t n = 0;
	bool infra;

	snprintf(name, sizeof(name), "%s", netns_name(ns).s);
	infra = batch_infra(a, true);
	resv_foreach(a, r, tmp) {
		const struct state_resv *sr = r->sr;
		char tok[17];
		json_t *ev;

		if (r->ns != ns)
			continue;
		n++;
		if (r->r.kind == PORTRES_KIND_RUNTIME) {
			runtime_end(a, r->token, why);
			continue;
		}
		state_token_format(r->token, tok);
		ev = json_pack("{s:s, s:s, s:s, s:i, s:i, s:s}", "type", "ended", "token", tok, "proto",
			       state_proto_name(r->r.proto), "start", r->r.start, "count", r->r.count, "why", why);
		netns_json(ev, ns);
		if (ev && sr && sr->name)
			json_object_set_new(ev, "name", json_string(sr->name));
		log_msg(LOG_INFO, "ended", "persistent %s %u-%u token %s%s%s in %s: %s", state_proto_name(r->r.proto),
			r->r.start, r->r.start + r->r.count - 1, tok, sr && sr->name ? " named " : "",
			sr && sr->name ? sr->name : "", name, why);
		store_del_resv(a->store, r->token, true);
		resv_unload(a, r);
		resv_remove(a, r);
		batch_emit(a, ev);
	}
	log_msg(LOG_INFO, "netns", "%s: %s; %zu reservation%s ended", name, why, n, n == 1 ? "" : "s");
	/* its sysctl went with it */
	portset_clear(&none);
	store_set_owned(a->store, netns_key(ns), &ns->owned_db, &none);
	netns_store(a, ns);
	batch_infra(a, infra);
	portset_clear(&ns->owned);
	portset_clear(&ns->owned_db);
	ns->sysctl_dirty = false;
	netns_gc(a, ns);
}

static int nsid_event(const struct nlmsghdr *nlh, void *data)
{
	struct agent *a = data;
	struct netns *ns, *tmp;
	int32_t nsid = -1;

	if (nlh->nlmsg_type != RTM_DELNSID)
		return MNL_CB_OK;
	mnl_attr_parse(nlh, sizeof(struct rtgenmsg), nsid_attr, &nsid);
	HASH_ITER(hh, a->ns_by_cookie, ns, tmp)
		if (nsid >= 0 && !ns->own && ns->nsid == nsid) {
			netns_end(a, ns, "its network namespace is gone");
			break;
		}
	return MNL_CB_OK;
}

/* Each foreign netns without an fd is looked for again; those not found are gone. */
static void netns_recheck(struct agent *a)
{
	struct netns *ns, *tmp;

	HASH_ITER(hh, a->ns_by_cookie, ns, tmp) {
		int fd;

		if (ns->own || ns->fd >= 0 || ns->nsid < 0)
			continue;
		if ((fd = netns_open(a, ns)) >= 0)
			close(fd);
		else
			netns_end(a, ns, "its network namespace is gone");
	}
}

int netns_watch_open(struct agent *a)
{
	int err = nl_open(&a->nl_watch, RTNLGRP_NSID);

	return err ? err : mnl_socket_get_fd(a->nl_watch);
}

void netns_watch_run(struct agent *a)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	ssize_t n;

	if (!a->nl_watch)
		return;
	for (;;) {
		n = recv(mnl_socket_get_fd(a->nl_watch), buf, sizeof(buf), MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == ENOBUFS) {
			/* notifications were lost: look for every netns again */
			log_msg(LOG_WARN, "netns", "nsid notifications lost; checking every network namespace");
			netns_recheck(a);
			continue;
		}
		if (n <= 0)
			return;
		mnl_cb_run(buf, (size_t)n, 0, 0, nsid_event, a);
	}
}

/* --- after a restart ------------------------------------------------------ */

int netns_restore(struct agent *a, struct state *st, bool rebooted)
{
	struct portset none;

	portset_clear(&none);
	for (size_t i = 0; i < st->n_netns; i++) {
		const struct state_netns *sn = &st->netns[i];
		struct netns *ns = netns_new(a, sn->cookie, -1);
		int32_t nsid;
		int fd = -1;

		if (!ns)
			return -ENOMEM;
		ns->inode = sn->inode;
		ns->nsid = sn->nsid;
		ns->in_store = true;
		if (sn->path && !(ns->path = strdup(sn->path)))
			return -ENOMEM;
		if (sn->sysctl_added && !rebooted)
			ns->owned = ns->owned_db = *sn->sysctl_added;
		if (!rebooted && (fd = netns_open(a, ns)) >= 0) {
			/* the nsid is kept while both live; one is given if it was not */
			if (!nsid_assign(a, fd, &nsid) && nsid != ns->nsid) {
				ns->nsid = nsid;
				store_put_netns(a->store, &(struct state_netns){ .cookie = ns->cookie, .inode = ns->inode,
										  .nsid = ns->nsid, .path = ns->path });
			}
			close(fd);
			log_msg(LOG_INFO, "netns", "%s found again", netns_name(ns).s);
			continue;
		}
		/* gone while no agent ran: its reservations leave the database (their grants and attachments with them) */
		for (size_t j = st->n_resv; j-- > 0;) {
			struct state_resv *sr = &st->resv[j];
			char tok[17];

			if (sr->netns != ns->cookie)
				continue;
			state_token_format(sr->token, tok);
			log_msg(LOG_INFO, "ended", "persistent %s %u-%u token %s%s%s in %s: its network namespace is gone%s",
				state_proto_name(sr->proto), sr->start, sr->start + sr->count - 1, tok,
				sr->name ? " named " : "", sr->name ? sr->name : "", netns_name(ns).s,
				rebooted ? " (rebooted)" : "");
			batch_emit(a, json_pack("{s:s, s:s, s:s, s:i, s:i, s:s, s:I, s:s?}", "type", "ended", "token", tok,
						"proto", state_proto_name(sr->proto), "start", sr->start, "count", sr->count,
						"why", "its network namespace is gone", "netns_inode",
						(json_int_t)ns->inode, "name", sr->name));
			store_del_resv(a->store, sr->token, true);
			for (size_t k = st->n_attach; k-- > 0;)
				if (st->attach[k].token == sr->token)
					state_del_attach(st, k);
			state_del_resv(st, j);
		}
		store_set_owned(a->store, ns->cookie, &ns->owned_db, &none);
		store_del_netns(a->store, ns->cookie);
		netns_free(a, ns);
	}
	return 0;
}

void netns_teardown(struct agent *a, struct store_contents *c)
{
	struct netns *ns;

	if (!a->own_ns && netns_own(a))
		return;
	for (size_t i = 0; i < c->st.n_netns; i++) {
		struct state_netns *sn = &c->st.netns[i];
		struct portset owned;
		int err;

		if (!sn->sysctl_added || portset_empty(sn->sysctl_added))
			continue;
		/* large (its port sets): not on the stack */
		if (!(ns = calloc(1, sizeof(*ns)))) {
			log_msg(LOG_WARN, "teardown", "out of memory: ip_local_reserved_ports of net:[%llu] left as it is",
				(unsigned long long)sn->inode);
			continue;
		}
		ns->cookie = sn->cookie;
		ns->inode = sn->inode;
		ns->nsid = -1;
		ns->fd = -1;
		ns->path = sn->path;
		owned = *sn->sysctl_added;
		if ((err = netns_run(a, ns, teardown_in_ns, &owned)))
			log_msg(LOG_WARN, "teardown", "%s: ip_local_reserved_ports left as it is: %s", netns_name(ns).s,
				strerror(-err));
		store_set_owned(a->store, ns->cookie, sn->sysctl_added, &owned);
		free(ns);
	}
}
