// SPDX-License-Identifier: LGPL-2.1-or-later
/* sockdiag.c - sockets holding a port range, via libmnl and /proc. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/inet_diag.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sockdiag.h"
#include "state.h"

struct dump {
	uint8_t proto;
	uint8_t family;
	uint32_t start, count;
	struct sockdiag_sock *socks;
	size_t n, cap;
	int err;
};

static int attr_cb(const struct nlattr *attr, void *data)
{
	const struct nlattr **tb = data;

	if (mnl_attr_type_valid(attr, INET_DIAG_MAX) > 0)
		tb[mnl_attr_get_type(attr)] = attr;
	return MNL_CB_OK;
}

static int msg_cb(const struct nlmsghdr *nlh, void *data)
{
	struct dump *d = data;
	const struct nlattr *tb[INET_DIAG_MAX + 1] = { 0 };
	const struct inet_diag_msg *m;
	struct sockdiag_sock *s;
	uint16_t port;

	if (mnl_nlmsg_get_payload_len(nlh) < sizeof(*m))
		return MNL_CB_OK;
	m = mnl_nlmsg_get_payload(nlh);
	port = ntohs(m->id.idiag_sport);
	if (port < d->start || port >= d->start + d->count || m->idiag_state == TCP_TIME_WAIT)
		return MNL_CB_OK;
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 16;
		struct sockdiag_sock *ns = realloc(d->socks, cap * sizeof(*ns));

		if (!ns) {
			d->err = -ENOMEM;
			return MNL_CB_ERROR;
		}
		d->socks = ns;
		d->cap = cap;
	}
	s = &d->socks[d->n++];
	memset(s, 0, sizeof(*s));
	s->proto = d->proto;
	s->family = m->idiag_family;
	s->state = m->idiag_state;
	s->port = port;
	s->uid = m->idiag_uid;
	s->inode = m->idiag_inode;
	memcpy(s->addr, m->id.idiag_src, m->idiag_family == AF_INET6 ? 16 : 4);
	mnl_attr_parse(nlh, sizeof(*m), attr_cb, tb);
	if (tb[INET_DIAG_CGROUP_ID] && mnl_attr_get_payload_len(tb[INET_DIAG_CGROUP_ID]) >= 8)
		s->cgroup_id = mnl_attr_get_u64(tb[INET_DIAG_CGROUP_ID]);
	return MNL_CB_OK;
}

static int dump_one(struct mnl_socket *nl, struct dump *d, char *buf, size_t buflen)
{
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	struct inet_diag_req_v2 *req;
	unsigned int seq = (unsigned int)time(NULL), portid = mnl_socket_get_portid(nl);
	ssize_t n;
	int ret;

	nlh->nlmsg_type = SOCK_DIAG_BY_FAMILY;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	nlh->nlmsg_seq = seq;
	req = mnl_nlmsg_put_extra_header(nlh, sizeof(*req));
	req->sdiag_family = d->family;
	req->sdiag_protocol = d->proto;
	req->idiag_states = ~0U;
	if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0)
		return -errno;
	for (;;) {
		n = mnl_socket_recvfrom(nl, buf, buflen);
		if (n < 0)
			return -errno;
		ret = mnl_cb_run(buf, (size_t)n, seq, portid, msg_cb, d);
		if (ret == MNL_CB_STOP)
			return 0;
		if (ret < 0)
			return d->err ? d->err : -errno;
	}
}

/* By protocol, port, family, address: as ss sorts them. */
static int sock_cmp(const void *pa, const void *pb)
{
	const struct sockdiag_sock *a = pa, *b = pb;

	if (a->proto != b->proto)
		return a->proto == IPPROTO_TCP ? -1 : 1;
	if (a->port != b->port)
		return a->port < b->port ? -1 : 1;
	if (a->family != b->family)
		return a->family == AF_INET ? -1 : 1;
	return memcmp(a->addr, b->addr, sizeof(a->addr));
}

int sockdiag_list(uint8_t proto, uint32_t start, uint32_t count, struct sockdiag_sock **out, size_t *n)
{
	static const uint8_t protos[] = { IPPROTO_TCP, IPPROTO_UDP };
	static const uint8_t families[] = { AF_INET, AF_INET6 };
	struct dump d = { .start = start, .count = count };
	struct mnl_socket *nl;
	size_t buflen = MNL_SOCKET_BUFFER_SIZE * 4;
	char *buf = malloc(buflen);
	int err = 0;

	*out = NULL;
	*n = 0;
	nl = mnl_socket_open2(NETLINK_SOCK_DIAG, SOCK_CLOEXEC);
	if (!buf || !nl || mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		err = buf ? -errno : -ENOMEM;
		goto cleanup;
	}
	for (size_t p = 0; p < 2 && !err; p++) {
		if (proto && proto != protos[p])
			continue;
		for (size_t f = 0; f < 2 && !err; f++) {
			d.proto = protos[p];
			d.family = families[f];
			err = dump_one(nl, &d, buf, buflen);
			/* UDP diag is a module; without it there are no UDP sockets to show. */
			if (err == -ENOENT && protos[p] == IPPROTO_UDP)
				err = 0;
		}
	}
cleanup:
	if (nl)
		mnl_socket_close(nl);
	free(buf);
	if (err) {
		free(d.socks);
		return err;
	}
	if (d.n > 1)
		qsort(d.socks, d.n, sizeof(*d.socks), sock_cmp);
	*out = d.socks;
	*n = d.n;
	return 0;
}

static void read_comm(int pid, char comm[16])
{
	char path[64];
	FILE *f;

	comm[0] = '\0';
	snprintf(path, sizeof(path), "/proc/%d/comm", pid);
	if ((f = fopen(path, "re"))) {
		if (fgets(comm, 16, f))
			comm[strcspn(comm, "\n")] = '\0';
		fclose(f);
	}
}

static void add_proc(struct sockdiag_sock *s, int pid)
{
	struct sockdiag_proc *grown;

	for (size_t i = 0; i < s->n_procs; i++)
		if (s->procs[i].pid == pid)
			return;
	if (!(grown = realloc(s->procs, (s->n_procs + 1) * sizeof(*grown))))
		return;
	s->procs = grown;
	grown[s->n_procs].pid = pid;
	read_comm(pid, grown[s->n_procs].comm);
	if (!s->n_procs++ || pid < s->pid) {
		s->pid = pid;
		memcpy(s->comm, grown[s->n_procs - 1].comm, sizeof(s->comm));
	}
}

static int proc_cmp(const void *pa, const void *pb)
{
	const struct sockdiag_proc *a = pa, *b = pb;

	return (a->pid > b->pid) - (a->pid < b->pid);
}

/* The whole of /proc is read: a socket may be shared by several processes (fork, SCM_RIGHTS). */
void sockdiag_find_pids(struct sockdiag_sock *socks, size_t n)
{
	DIR *proc, *fds;
	struct dirent *pe, *fe;

	if (!n || !(proc = opendir("/proc")))
		return;
	while ((pe = readdir(proc))) {
		char path[300], link[64];
		int pid = atoi(pe->d_name);

		if (pid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/fd", pid);
		if (!(fds = opendir(path)))
			continue;
		while ((fe = readdir(fds))) {
			unsigned long ino;
			ssize_t len;

			if (fe->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "/proc/%d/fd/%s", pid, fe->d_name);
			len = readlink(path, link, sizeof(link) - 1);
			if (len <= 0)
				continue;
			link[len] = '\0';
			if (sscanf(link, "socket:[%lu]", &ino) != 1)
				continue;
			for (size_t i = 0; i < n; i++)
				if (socks[i].inode && socks[i].inode == ino)
					add_proc(&socks[i], pid);
		}
		closedir(fds);
	}
	closedir(proc);
	for (size_t i = 0; i < n; i++)
		if (socks[i].n_procs > 1)
			qsort(socks[i].procs, socks[i].n_procs, sizeof(*socks[i].procs), proc_cmp);
}

void sockdiag_free(struct sockdiag_sock *socks, size_t n)
{
	for (size_t i = 0; socks && i < n; i++)
		free(socks[i].procs);
	free(socks);
}

void sockdiag_endpoint(const struct sockdiag_sock *s, char *buf, size_t len)
{
	char a[INET6_ADDRSTRLEN] = "?";

	inet_ntop(s->family == AF_INET6 ? AF_INET6 : AF_INET, s->addr, a, sizeof(a));
	snprintf(buf, len, s->family == AF_INET6 ? "[%s]:%u" : "%s:%u", a, s->port);
}

/* One line: who (a process or a uid) and each of its sockets once. */
struct holder {
	int32_t pid;        /* 0: only the uid is known */
	uint32_t uid;
	const char *comm;
	char socks[256];
};

static void holder_add(struct holder *h, const struct sockdiag_sock *s)
{
	char ep[80], item[96];
	size_t n = strlen(h->socks);

	sockdiag_endpoint(s, ep, sizeof(ep));
	snprintf(item, sizeof(item), "%s %s", state_proto_name(s->proto), ep);
	/* the same endpoint twice (a listener and its accepted sockets) is said once */
	for (const char *p = h->socks; (p = strstr(p, item)); p += strlen(item))
		if ((p == h->socks || p[-1] == ' ') && (p[strlen(item)] == ',' || !p[strlen(item)]))
			return;
	snprintf(h->socks + n, sizeof(h->socks) - n, "%s%s", n ? ", " : "", item);
}

void sockdiag_describe(const struct sockdiag_sock *socks, size_t n, const char *indent, char *buf, size_t len)
{
	const size_t max = 8;
	struct holder *hs;
	size_t nh = 0, cap = 1, off;

	buf[0] = '\0';
	for (size_t i = 0; i < n; i++)
		cap += socks[i].n_procs ? socks[i].n_procs : 1;
	if (!(hs = calloc(cap, sizeof(*hs))))
		return;
	for (size_t i = 0; i < n; i++) {
		const struct sockdiag_sock *s = &socks[i];

		for (size_t p = 0; p < (s->n_procs ? s->n_procs : 1); p++) {
			int32_t pid = s->n_procs ? s->procs[p].pid : s->pid;
			size_t h;

			for (h = 0; h < nh; h++)
				if (pid ? hs[h].pid == pid : !hs[h].pid && hs[h].uid == s->uid)
					break;
			if (h == nh) {
				hs[nh].pid = pid;
				hs[nh].uid = s->uid;
				hs[nh++].comm = s->n_procs ? s->procs[p].comm : s->comm;
			}
			holder_add(&hs[h], s);
		}
	}
	off = (size_t)snprintf(buf, len, "in use by:");
	for (size_t h = 0; h < nh && h < max && off < len; h++) {
		int w = hs[h].pid ? snprintf(buf + off, len - off, "\n%spid %d (%s): %s", indent, hs[h].pid, hs[h].comm,
					     hs[h].socks)
				  : snprintf(buf + off, len - off, "\n%suid %u: %s", indent, hs[h].uid, hs[h].socks);

		off += w > 0 ? (size_t)w : 0;
	}
	if (nh > max && off < len)
		snprintf(buf + off, len - off, "\n%sand %zu more", indent, nh - max);
	free(hs);
}
