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
 * the netns entries of the state file are found again the same way, or
 * their reservations end.
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

static struct netns *ns_new(struct agent *a, uint64_t cookie)
{
	struct netns **arr, *ns = calloc(1, sizeof(*ns));

	if (!ns)
		return NULL;
	arr = realloc(a->ns, (a->n_ns + 1) * sizeof(*arr));
	if (!arr) {
		free(ns);
		return NULL;
	}
	a->ns = arr;
	ns->cookie = cookie;
	ns->fd = -1;
	ns->nsid = -1;
	a->ns[a->n_ns++] = ns;
	return ns;
}

static void ns_free(struct netns *ns)
{
	if (ns->fd >= 0)
		close(ns->fd);
	free(ns->path);
	free(ns);
}

static void ns_forget(struct agent *a, struct netns *ns)
{
	for (size_t i = 0; i < a->n_ns; i++)
		if (a->ns[i] == ns) {
			a->ns[i] = a->ns[--a->n_ns];
			ns_free(ns);
			return;
		}
}

struct netns *netns_find(struct agent *a, uint64_t cookie)
{
	for (size_t i = 0; i < a->n_ns; i++)
		if (a->ns[i]->cookie == cookie)
			return a->ns[i];
	return NULL;
}

const char *netns_name(const struct netns *ns)
{
	static char buf[PATH_MAX + 64];

	if (ns->own)
		snprintf(buf, sizeof(buf), "net:[%llu] (the agent's)", (unsigned long long)ns->inode);
	else if (!ns->inode)
		snprintf(buf, sizeof(buf), "netns cookie %llu", (unsigned long long)ns->cookie);
	else
		snprintf(buf, sizeof(buf), "net:[%llu]%s%s%s", (unsigned long long)ns->inode, ns->path ? " (" : "",
			 ns->path ? ns->path : "", ns->path ? ")" : "");
	return buf;
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
	if (!(ns = ns_new(a, cookie))) {
		close(fd);
		return -ENOMEM;
	}
	ns->own = true;
	ns->fd = fd;
	ns->inode = sb.st_ino;
	a->nsfs_dev = sb.st_dev;
	a->own_ns = ns;
	return 0;
}

void netns_release_all(struct agent *a)
{
	for (size_t i = 0; i < a->n_ns; i++)
		ns_free(a->ns[i]);
	free(a->ns);
	a->ns = NULL;
	a->n_ns = 0;
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
	if (!ns && !(ns = ns_new(a, cookie))) {
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

	if (!ns && !(ns = ns_new(a, cookie)))
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

/* Forgets a foreign netns that holds no reservation any more; lets go of its fd once no runtime one needs it. */
void netns_gc(struct agent *a, struct netns *ns)
{
	bool any = false, runtime = false;

	if (ns->own)
		return;
	for (size_t i = 0; i < a->n_resv; i++)
		if (a->resv[i].ns == ns) {
			any = true;
			runtime |= a->resv[i].r.kind == PORTRES_KIND_RUNTIME;
		}
	if (!any) {
		ns_forget(a, ns);
		return;
	}
	/* an fd would keep the netns alive: its persistent reservations must end with it */
	if (!runtime && ns->fd >= 0 && ns->nsid >= 0) {
		close(ns->fd);
		ns->fd = -1;
	}
}

/* --- sysctl --------------------------------------------------------------- */

struct sync_ctx {
	const struct portset *wanted;
	struct portset *owned;
	bool changed;
};

static int sync_in_ns(void *arg)
{
	struct sync_ctx *c = arg;

	return sysctl_ports_sync(SYSCTL_RESERVED_PORTS, c->wanted, c->owned, &c->changed);
}

int netns_sync_sysctl(struct agent *a, struct netns *ns)
{
	struct portset *wanted = calloc(1, sizeof(*wanted));
	struct sync_ctx c = { .wanted = wanted, .owned = ns->own ? &a->st.sysctl_added : &ns->owned };
	char err[STATE_ERR_LEN];
	bool persistent = false;
	int ret;

	if (!wanted)
		return -ENOMEM;
	for (size_t i = 0; i < a->n_resv; i++)
		if (a->resv[i].ns == ns && !(a->resv[i].r.flags & PORTRES_RESV_DEAD)) {
			portset_add(wanted, a->resv[i].r.start, a->resv[i].r.count);
			persistent |= a->resv[i].r.kind == PORTRES_KIND_PERSISTENT;
		}
	ret = netns_run(a, ns, sync_in_ns, &c);
	free(wanted);
	if (ret) {
		log_msg(LOG_WARN, "sysctl", "%s: ip_local_reserved_ports not updated: %s", netns_name(ns),
			strerror(-ret));
		return ret;
	}
	/* Runtime changes need not survive a reboot (the sysctl does not): no fsync. */
	if ((ns->own || persistent) && c.changed)
		agent_save(a, false, err, sizeof(err));
	return 0;
}

/* --- the end of a netns --------------------------------------------------- */

/* Every reservation in ns ends (ns is gone): maps, attachments, state, events; then ns is forgotten. */
static void netns_end(struct agent *a, struct netns *ns, const char *why)
{
	char err[STATE_ERR_LEN], name[PATH_MAX + 64];
	bool saved = false;
	size_t n = 0;

	snprintf(name, sizeof(name), "%s", netns_name(ns));
	for (size_t i = a->n_resv; i-- > 0;) {
		struct resv *r = &a->resv[i];
		struct state_resv *sr;
		uint64_t token = r->token;
		char tok[17];
		json_t *ev;

		if (r->ns != ns)
			continue;
		n++;
		if (r->r.kind == PORTRES_KIND_RUNTIME) {
			runtime_end(a, token, why);
			continue;
		}
		state_token_format(token, tok);
		sr = state_find_token(&a->st, token);
		ev = json_pack("{s:s, s:s, s:s, s:i, s:i, s:s}", "type", "ended", "token", tok, "proto",
			       state_proto_name(r->r.proto), "start", r->r.start, "count", r->r.count, "why", why);
		netns_json(ev, ns);
		if (ev && sr && sr->name)
			json_object_set_new(ev, "name", json_string(sr->name));
		log_msg(LOG_INFO, "ended", "persistent %s %u-%u token %s%s%s in %s: %s", state_proto_name(r->r.proto),
			r->r.start, r->r.start + r->r.count - 1, tok, sr && sr->name ? " named " : "",
			sr && sr->name ? sr->name : "", name, why);
		resv_unload(a, token);
		if (sr)
			state_del_resv(&a->st, (size_t)(sr - a->st.resv));
		resv_remove(a, token);
		saved = true;
		events_emit(a, ev);
	}
	log_msg(LOG_INFO, "netns", "%s: %s; %zu reservation%s ended", name, why, n, n == 1 ? "" : "s");
	/* runtime_end may have forgotten ns already */
	for (size_t i = 0; i < a->n_ns; i++)
		if (a->ns[i] == ns) {
			ns_forget(a, ns);
			break;
		}
	if (saved)
		agent_save(a, true, err, sizeof(err));
}

static int nsid_event(const struct nlmsghdr *nlh, void *data)
{
	struct agent *a = data;
	int32_t nsid = -1;

	if (nlh->nlmsg_type != RTM_DELNSID)
		return MNL_CB_OK;
	mnl_attr_parse(nlh, sizeof(struct rtgenmsg), nsid_attr, &nsid);
	for (size_t i = 0; nsid >= 0 && i < a->n_ns; i++)
		if (!a->ns[i]->own && a->ns[i]->nsid == nsid) {
			netns_end(a, a->ns[i], "its network namespace is gone");
			break;
		}
	return MNL_CB_OK;
}

/* Each foreign netns without an fd is looked for again; those not found are gone. */
static void netns_recheck(struct agent *a)
{
	for (size_t i = a->n_ns; i-- > 0;) {
		struct netns *ns = a->ns[i];
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

int netns_restore(struct agent *a)
{
	char boot[STATE_BOOT_ID_LEN + 1] = "", err_msg[STATE_ERR_LEN];
	bool rebooted, changed = false;

	state_boot_id(boot);
	rebooted = !a->st.boot_id[0] || strcmp(a->st.boot_id, boot);
	for (size_t i = 0; i < a->st.n_netns; i++) {
		const struct state_netns *sn = &a->st.netns[i];
		struct netns *ns = ns_new(a, sn->cookie);
		int32_t nsid;
		int fd = -1;

		if (!ns)
			return -ENOMEM;
		ns->inode = sn->inode;
		ns->nsid = sn->nsid;
		if (sn->path && !(ns->path = strdup(sn->path)))
			return -ENOMEM;
		if (sn->sysctl_added)
			ns->owned = *sn->sysctl_added;
		if (!rebooted && (fd = netns_open(a, ns)) >= 0) {
			/* the nsid is kept while both live; one is given if it was not */
			if (!nsid_assign(a, fd, &nsid))
				ns->nsid = nsid;
			close(fd);
			log_msg(LOG_INFO, "netns", "%s found again", netns_name(ns));
			continue;
		}
		/* gone while no agent ran: its reservations leave the state file */
		for (size_t j = a->st.n_resv; j-- > 0;) {
			struct state_resv *sr = &a->st.resv[j];
			char tok[17];

			if (sr->netns != ns->cookie)
				continue;
			state_token_format(sr->token, tok);
			log_msg(LOG_INFO, "ended", "persistent %s %u-%u token %s%s%s in %s: its network namespace is gone%s",
				state_proto_name(sr->proto), sr->start, sr->start + sr->count - 1, tok,
				sr->name ? " named " : "", sr->name ? sr->name : "", netns_name(ns),
				rebooted ? " (rebooted)" : "");
			events_emit(a, json_pack("{s:s, s:s, s:s, s:i, s:i, s:s, s:I, s:s?}", "type", "ended",
						      "token", tok, "proto", state_proto_name(sr->proto), "start", sr->start,
						      "count", sr->count, "why", "its network namespace is gone",
						      "netns_inode", (json_int_t)ns->inode, "name", sr->name));
			for (size_t k = a->st.n_attach; k-- > 0;)
				if (a->st.attach[k].token == sr->token)
					state_del_attach(&a->st, k);
			state_del_resv(&a->st, j);
		}
		ns_forget(a, ns);
		changed = true;
	}
	/* from here on the table is the truth; agent_save writes it back */
	for (size_t i = 0; i < a->st.n_netns; i++) {
		free(a->st.netns[i].path);
		free(a->st.netns[i].sysctl_added);
	}
	free(a->st.netns);
	a->st.netns = NULL;
	a->st.n_netns = 0;
	if (changed)
		agent_save(a, true, err_msg, sizeof(err_msg));
	return 0;
}

bool netns_teardown(struct agent *a)
{
	struct portset none;
	bool changed = false;

	portset_clear(&none);
	if (!a->own_ns && netns_own(a))
		return false;
	for (size_t i = 0; i < a->st.n_netns; i++) {
		struct state_netns *sn = &a->st.netns[i];
		struct netns ns = { .cookie = sn->cookie, .inode = sn->inode, .nsid = -1, .fd = -1, .path = sn->path };
		struct sync_ctx c = { .wanted = &none, .owned = sn->sysctl_added };
		int err;

		if (!sn->sysctl_added || portset_empty(sn->sysctl_added))
			continue;
		if ((err = netns_run(a, &ns, sync_in_ns, &c)))
			log_msg(LOG_WARN, "teardown", "%s: ip_local_reserved_ports left as it is: %s", netns_name(&ns),
				strerror(-err));
		changed |= c.changed;
	}
	return changed;
}
