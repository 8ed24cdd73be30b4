// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * server.c - the single-threaded epoll loop: the listening socket, clients,
 * the BPF event ring, signals, the metrics endpoint, and the inotify
 * watches of attached cgroups (cgwatch.c) and of the --apply file (autoapply.c).
 *
 * A client never blocks the others: sockets are non-blocking, at most
 * BATCH messages are read from one client per turn, a client whose replies
 * are not being read is not read from until they are (its own backpressure),
 * event subscribers lose events rather than stall the loop, a client that
 * leaves messages unread for --stall-timeout is dropped, and a silent client
 * after PORTRESD_IDLE_SEC.
 *
 * No user can lock another out: connections of unprivileged uids are capped
 * per uid (--max-clients-per-uid) and all together (--max-clients); root and
 * the admin group are never refused. A client socket's send buffer is
 * PORTRESD_SNDBUF; a bigger reply (a list of many reservations) raises it
 * for that one send, and nothing more is read from that client until it read
 * the reply. The replies an unprivileged uid leaves unread in its sockets
 * stay under PORTRESD_UNREAD_PER_UID bytes (beyond, a big reply becomes an
 * ENOBUFS error; one is always let through), so kernel memory stays bounded.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <linux/sockios.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "portresd.h"

#define BATCH 16

enum watch_kind {
	W_LISTEN, W_CLIENT, W_EVENTS, W_SIGNAL, W_METRICS, W_CGROUPS, W_APPLY, W_APPLY_TIMER, W_NETNS, W_SYNC
};

struct watch {
	enum watch_kind kind;
};

struct server;

struct client {
	struct watch w;
	struct server *srv;
	int fd;
	struct peer peer;     /* at connect (SO_PEERCRED) */
	bool admin;           /* root or admin group at connect: outside the caps */
	bool subscriber;
	struct event_sub *sub;
	bool reading;         /* EPOLLIN is armed */
	uint32_t armed;       /* the events epoll has for it */
	bool big_unread;      /* a reply bigger than PORTRESD_SNDBUF waits in the socket */
	time_t last;
	time_t stalled;       /* since when its messages wait unread; 0: none do */
	char *q[PORTRESD_OUTQ_MAX];
	size_t qlen[PORTRESD_OUTQ_MAX];
	bool qreply[PORTRESD_OUTQ_MAX]; /* a reply to a request (not an event) */
	size_t qhead, qn, replies;
	uint32_t inflight;    /* requests read whose replies are not queued yet (waiting for a sync) */
	uint64_t dropped;
	bool dead;            /* closed during this turn; freed after it */
	struct client *next;
};

/*
 * With no fd free, accept4 fails (EMFILE/ENFILE) while the connection stays
 * in the backlog and the listener readable: polling it would spin. It is
 * taken out of the epoll set until a client closes or ACCEPT_BACKOFF_MS
 * passed, and the condition is logged at most once a second.
 */
#define ACCEPT_BACKOFF_MS 200

/* The fds the loop watches, -1 when not open; server_teardown closes what is open. */
struct loop_fds {
	int lfd, sfd, efd, mfd, cgfd, afd, atfd;
};

/* One server_run's state: the loop's fds, its clients, and what it logs at most once a second. */
struct server {
	struct agent *a;
	struct loop_fds f;
	struct client *clients, *graveyard; /* graveyard: closed this turn, freed after it */
	size_t n_user_clients;              /* unprivileged */
	struct {                            /* connections refused over the caps */
		uint64_t n;
		time_t logged;
	} refused;
	struct {                            /* accept4 without a free fd */
		bool paused;
		struct timespec resume_at;
		uint64_t failures;          /* since the last log line */
		time_t logged;
	} acc;
	/* what epoll's data.ptr points at, by kind (a client is its own) */
	struct watch w_listen, w_events, w_signal, w_metrics, w_cgroups, w_apply, w_apply_timer, w_netns, w_sync;
	char rbuf[BATCH][PROTO_MAX_MSG];    /* the requests of one client read at once */
	struct {                            /* net.core.wmem_default, the send buffer a new socket gets */
		bool capped;                /* at most PORTRESD_SNDBUF: no setsockopt needed */
		time_t read_at;
	} wmem;
};

static void listener_arm(struct server *s, bool on)
{
	struct epoll_event ev = { .events = on ? EPOLLIN : 0, .data.ptr = &s->w_listen };

	if (s->f.lfd < 0 || s->acc.paused == !on)
		return;
	s->acc.paused = !on;
	epoll_ctl(s->a->epfd, EPOLL_CTL_MOD, s->f.lfd, &ev);
}

static void accept_no_fd(struct server *s, int err)
{
	time_t now = time(NULL);

	clock_gettime(CLOCK_MONOTONIC, &s->acc.resume_at);
	s->acc.resume_at.tv_nsec += ACCEPT_BACKOFF_MS * 1000000L;
	if (s->acc.resume_at.tv_nsec >= 1000000000L) {
		s->acc.resume_at.tv_sec++;
		s->acc.resume_at.tv_nsec -= 1000000000L;
	}
	listener_arm(s, false);
	s->acc.failures++;
	if (now != s->acc.logged) {
		log_msg(LOG_WARN, "accept", "no file descriptor free (%s), %llu time%s: new connections wait until a "
			"client closes (retried every %d ms)", strerror(err), (unsigned long long)s->acc.failures,
			s->acc.failures == 1 ? "" : "s", ACCEPT_BACKOFF_MS);
		s->acc.logged = now;
		s->acc.failures = 0;
	}
}

/* The back-off is over: the listener is polled again. */
static void accept_resume_due(struct server *s)
{
	struct timespec now;

	if (!s->acc.paused)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (now.tv_sec > s->acc.resume_at.tv_sec ||
	    (now.tv_sec == s->acc.resume_at.tv_sec && now.tv_nsec >= s->acc.resume_at.tv_nsec))
		listener_arm(s, true);
}

static void client_close(struct client *c)
{
	struct server *s = c->srv;
	struct client **pp;

	for (pp = &s->clients; *pp && *pp != c; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = c->next;
	/* closing the fd takes it out of the epoll set (the agent holds no other copy) */
	close(c->fd);
	while (c->qn) {
		free(c->q[c->qhead]);
		c->qhead = (c->qhead + 1) % PORTRESD_OUTQ_MAX;
		c->qn--;
	}
	s->a->n_clients--;
	if (!c->admin)
		s->n_user_clients--;
	if (c->subscriber)
		s->a->n_subscribers--;
	events_sub_free(c->sub);
	c->sub = NULL;
	/* Other events of this turn may still point at c. */
	c->dead = true;
	/* an fd is free again */
	listener_arm(s, true);
	c->next = s->graveyard;
	s->graveyard = c;
}

/* Frees the clients closed, but those a reply is still coming for (a sync it waits for). */
static void bury(struct server *s)
{
	struct client **pp = &s->graveyard;

	while (*pp) {
		struct client *c = *pp;

		if (c->inflight) {
			pp = &c->next;
			continue;
		}
		*pp = c->next;
		free(c);
	}
}

static void client_arm(struct client *c)
{
	/*
	 * Not reading a client while its replies wait (for a sync, queued, or
	 * a big one in its socket) is its backpressure, and keeps them in
	 * order; a subscriber's queued events do not count.
	 */
	bool want_in = c->replies == 0 && c->inflight == 0 && !c->big_unread;
	bool want_out = c->qn || c->big_unread;
	struct epoll_event ev = { .events = (want_in ? EPOLLIN : 0) | (want_out ? EPOLLOUT : 0), .data.ptr = c };

	c->reading = want_in;
	if (ev.events == c->armed)
		return;
	c->armed = ev.events;
	epoll_ctl(c->srv->a->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Bytes c's peer has not read yet. */
static size_t unread(const struct client *c)
{
	int outq = 0;

	return ioctl(c->fd, SIOCOUTQ, &outq) == 0 && outq > 0 ? (size_t)outq : 0;
}

/* The socket's unread bytes are down to what makes it writable at the capped buffer. */
static bool drained(const struct client *c)
{
	return unread(c) * 4 <= PORTRESD_SNDBUF;
}

/*
 * A reply bigger than the send buffer, for unprivileged c: its uid's unread
 * bytes would pass PORTRESD_UNREAD_PER_UID (checked when that uid has any
 * big reply unread, so one always goes).
 */
static char *unread_over_budget(const struct client *c, size_t len)
{
	size_t sum = 0;
	bool any_big = false;
	char msg[200];

	if (c->admin || len <= PORTRESD_SNDBUF / 2)
		return NULL;
	for (const struct client *o = c->srv->clients; o; o = o->next) {
		if (o->admin || o->peer.uid != c->peer.uid)
			continue;
		any_big |= o->big_unread;
		sum += unread(o);
	}
	if (!any_big || sum + len <= PORTRESD_UNREAD_PER_UID)
		return NULL;
	snprintf(msg, sizeof(msg), "uid %u leaves %zu bytes of replies unread; read them before asking for a reply "
		 "of %zu bytes", c->peer.uid, sum, len);
	return proto_err_reply(ENOBUFS, msg);
}

/*
 * Whether a new socket's send buffer (net.core.wmem_default) is within
 * PORTRESD_SNDBUF already, so accepting needs no setsockopt to cap it;
 * read again every 10 s.
 */
static bool wmem_capped(struct server *s)
{
	time_t now = time(NULL);
	unsigned long v;

	if (s->wmem.read_at && now - s->wmem.read_at < 10)
		return s->wmem.capped;
	s->wmem.read_at = now;
	/* the kernel doubles what setsockopt asks: the cap set is PORTRESD_SNDBUF + 2 */
	s->wmem.capped = !sysctl_read_ulong("/proc/sys/net/core/wmem_default", &v) && v <= PORTRESD_SNDBUF;
	return s->wmem.capped;
}

static void set_sndbuf(int fd, size_t bytes)
{
	/* The kernel doubles the value (its bookkeeping overhead). */
	int half = (int)(bytes / 2 + 1);

	setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &half, sizeof(half));
}

/* Sends what is queued; -1 if the client is gone (and freed). */
static int client_flush(struct client *c)
{
	if (c->big_unread && drained(c))
		c->big_unread = false;
	while (c->qn) {
		size_t len = c->qlen[c->qhead];
		bool big = len > PORTRESD_SNDBUF / 2;
		ssize_t n;

		/* one big reply in the socket at a time */
		if (big && c->big_unread)
			break;
		/* A message must fit the send buffer whole: raised for this one send only. */
		if (big)
			set_sndbuf(c->fd, len + PORTRESD_SNDBUF);
		n = send(c->fd, c->q[c->qhead], len, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (big)
			set_sndbuf(c->fd, PORTRESD_SNDBUF);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n < 0) {
			client_close(c);
			return -1;
		}
		c->big_unread |= big;
		c->stalled = 0;
		c->replies -= c->qreply[c->qhead];
		free(c->q[c->qhead]);
		c->qhead = (c->qhead + 1) % PORTRESD_OUTQ_MAX;
		c->qn--;
	}
	if ((c->qn || c->big_unread) && !c->stalled)
		c->stalled = time(NULL);
	client_arm(c);
	return 0;
}

/* Queues msg (taken), a reply or an event; false if the queue is full (msg freed). */
static bool client_queue(struct client *c, char *msg, bool reply)
{
	size_t i = (c->qhead + c->qn) % PORTRESD_OUTQ_MAX;

	if (!msg)
		return false;
	if (c->qn == PORTRESD_OUTQ_MAX) {
		free(msg);
		c->dropped++;
		return false;
	}
	c->q[i] = msg;
	c->qlen[i] = strlen(msg);
	c->qreply[i] = reply;
	c->replies += reply;
	c->qn++;
	return true;
}

/* events_sub_start's delivery: queues an event message (taken) for a subscriber. */
static bool deliver_event(void *ctx, char *text)
{
	struct client *c = ctx;
	bool queued = client_queue(c, text, false);

	client_flush(c);
	return queued;
}

/* Connections of c's uid (unprivileged). */
static uint32_t uid_clients(const struct server *s, uid_t uid)
{
	uint32_t n = 0;

	for (const struct client *o = s->clients; o; o = o->next)
		n += !o->admin && o->peer.uid == uid;
	return n;
}

/* Bytes waiting to be read on c: a request the agent has not seen yet. */
static int unread_in(const struct client *c)
{
	int inq = 0;

	return ioctl(c->fd, SIOCINQ, &inq) == 0 ? inq : 1;
}

/*
 * At a cap, the connection of the same uid (any uid: for the cap of all
 * users) that has been idle longest goes, if it was idle at least
 * PORTRESD_IDLE_EVICT_SEC with nothing sent or to send: libportres keeps a
 * thread's connection for a few seconds only, so no call is lost, and a
 * program's threads that called once do not lock its later calls out. True
 * if one was closed.
 */
static bool evict_idle(struct server *s, const uid_t *uid)
{
	struct client *oldest = NULL;
	time_t now = time(NULL);

	for (struct client *o = s->clients; o; o = o->next) {
		if (o->admin || o->subscriber || o->qn || o->inflight || o->big_unread || (uid && o->peer.uid != *uid) ||
		    now - o->last < PORTRESD_IDLE_EVICT_SEC)
			continue;
		if (!oldest || o->last < oldest->last)
			oldest = o;
	}
	if (!oldest || unread_in(oldest))
		return false;
	log_msg(LOG_DEBUG, "client", "pid %d uid %u idle for %llds: closed for a new connection at the cap",
		oldest->peer.pid, oldest->peer.uid, (long long)(now - oldest->last));
	client_close(oldest);
	return true;
}

/* An unprivileged peer over a cap gets one error reply and is closed; true if so. */
static bool refuse_over_caps(struct server *s, int fd, const struct peer *p)
{
	const struct agent_opts *o = &s->a->opts;
	char msg[200], *reply;
	uint32_t n;
	time_t now;

	/* the uid's own idle connection first; another uid's only for the cap of all, and only if this one can be served */
	if ((n = uid_clients(s, p->uid)) >= o->max_clients_per_uid && evict_idle(s, &p->uid))
		n--;
	if (n < o->max_clients_per_uid && s->n_user_clients >= o->max_clients && !evict_idle(s, &p->uid))
		evict_idle(s, NULL);
	if (s->n_user_clients >= o->max_clients)
		snprintf(msg, sizeof(msg), "the agent serves %zu connections of unprivileged users, its limit "
			 "(portresd --max-clients %u)", s->n_user_clients, o->max_clients);
	else if ((n = uid_clients(s, p->uid)) >= o->max_clients_per_uid)
		snprintf(msg, sizeof(msg), "uid %u has %u connections to the agent, its limit "
			 "(portresd --max-clients-per-uid %u)", p->uid, n, o->max_clients_per_uid);
	else
		return false;
	/* The request the client sent (or will send) meets this reply, then the end. */
	reply = proto_err_reply(EUSERS, msg);
	if (reply)
		send(fd, reply, strlen(reply), MSG_DONTWAIT | MSG_NOSIGNAL);
	free(reply);
	close(fd);
	s->refused.n++;
	now = time(NULL);
	if (now != s->refused.logged) {
		log_msg(LOG_WARN, "accept", "%llu connection%s refused; the last: pid %d: %s",
			(unsigned long long)s->refused.n, s->refused.n == 1 ? "" : "s", p->pid, msg);
		s->refused.logged = now;
		s->refused.n = 0;
	}
	return true;
}

static void client_accept(struct server *s)
{
	for (;;) {
		socklen_t len = sizeof(struct ucred);
		struct ucred cred;
		struct peer peer = { 0 };
		struct client *c;
		bool admin;
		int fd = accept4(s->f.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				accept_no_fd(s, errno);
			else if (errno != EAGAIN)
				log_msg(LOG_WARN, "accept", "%s", strerror(errno));
			return;
		}
		/* Who: without credentials nobody is root. */
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
			peer.pid = cred.pid;
			peer.uid = cred.uid;
			peer.gid = cred.gid;
		} else {
			peer.uid = peer.gid = (uint32_t)-1;
		}
		/* the groups matter for the admin group only, and root is an administrator anyway */
		len = sizeof(peer.groups);
		if (peer.uid != 0 && getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, peer.groups, &len) == 0)
			peer.ngroups = (int)(len / sizeof(gid_t));
		admin = ops_is_admin(s->a, &peer);
		if (!admin && refuse_over_caps(s, fd, &peer))
			continue;
		if (!(c = calloc(1, sizeof(*c)))) {
			close(fd);
			continue;
		}
		c->w.kind = W_CLIENT;
		c->srv = s;
		c->fd = fd;
		c->peer = peer;
		c->admin = admin;
		c->last = time(NULL);
		/* The connection lives in the caller's netns: what its calls mean by default. */
		len = sizeof(c->peer.netns);
		getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &c->peer.netns, &len);
		c->peer.conn = fd;
		if (!wmem_capped(s))
			set_sndbuf(fd, PORTRESD_SNDBUF);
		if (epoll_ctl(s->a->epfd, EPOLL_CTL_ADD, fd, &(struct epoll_event){ .events = EPOLLIN, .data.ptr = c })) {
			close(fd);
			free(c);
			continue;
		}
		c->reading = true;
		c->armed = EPOLLIN;
		c->next = s->clients;
		s->clients = c;
		s->a->n_clients++;
		s->n_user_clients += !admin;
	}
}

/* A reply from ops (now, or after the batch's commit): queued and sent. */
static void client_done(void *ctx, char *reply)
{
	struct client *c = ctx;
	char *over;

	if (c->inflight)
		c->inflight--;
	if (c->dead || !reply) {
		free(reply);
		return;
	}
	if ((over = unread_over_budget(c, strlen(reply)))) {
		free(reply);
		reply = over;
	}
	if (!client_queue(c, reply, true)) {
		client_close(c);
		return;
	}
	client_flush(c);
}

/*
 * The file descriptors a message carried (at most 8 kept, the rest closed)
 * and its sender (per message, checked by the kernel: the sender at send
 * time). peer comes in as the connector: its supplementary groups
 * (SO_PEERGROUPS, at connect) hold only while the sender is still that uid
 * and gid; a process that changed its credentials on a kept connection has none.
 */
static int message_fds(struct msghdr *mh, struct peer *peer, int fds[8])
{
	int nfds = 0;

	for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET)
			continue;
		if (cm->cmsg_type == SCM_RIGHTS) {
			size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);

			for (size_t j = 0; j < k; j++) {
				int fd;

				memcpy(&fd, CMSG_DATA(cm) + j * sizeof(int), sizeof(int));
				if (nfds < 8)
					fds[nfds++] = fd;
				else
					close(fd);
			}
		} else if (cm->cmsg_type == SCM_CREDENTIALS && cm->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
			struct ucred uc;

			memcpy(&uc, CMSG_DATA(cm), sizeof(uc));
			if (uc.uid != peer->uid || uc.gid != peer->gid)
				peer->ngroups = 0;
			peer->pid = uc.pid;
			peer->uid = uc.uid;
			peer->gid = uc.gid;
		}
	}
	return nfds;
}

/* The fds of messages read but not handled (the client went away first). */
static void drop_messages(struct mmsghdr *mm, int from, int to)
{
	for (int i = from; i < to; i++) {
		struct peer unused;
		int fds[8], nfds = message_fds(&mm[i].msg_hdr, &unused, fds);

		for (int j = 0; j < nfds; j++)
			close(fds[j]);
	}
}

/*
 * Reads up to BATCH requests with one recvmmsg (a one-shot client's request
 * costs one call, not a second that finds nothing); -1 if the client went away.
 */
static int client_read(struct client *c)
{
	struct server *s = c->srv;
	struct agent *a = s->a;
	union {
		char buf[CMSG_SPACE(sizeof(int) * 8) + CMSG_SPACE(sizeof(struct ucred))];
		struct cmsghdr align;
	} ctl[BATCH];
	struct iovec iov[BATCH];
	struct mmsghdr mm[BATCH];
	int got;

	if (!c->reading)
		return 0;
	/* it sent more while replies wait for a sync: not read until they went (in order) */
	if (c->inflight) {
		client_arm(c);
		return 0;
	}
	for (int i = 0; i < BATCH; i++) {
		iov[i] = (struct iovec){ .iov_base = s->rbuf[i], .iov_len = sizeof(s->rbuf[i]) };
		mm[i] = (struct mmsghdr){ .msg_hdr = { .msg_iov = &iov[i], .msg_iovlen = 1, .msg_control = ctl[i].buf,
						       .msg_controllen = sizeof(ctl[i].buf) } };
	}
	do
		got = recvmmsg(c->fd, mm, BATCH, MSG_DONTWAIT | MSG_CMSG_CLOEXEC, NULL);
	while (got < 0 && errno == EINTR);
	if (got < 0 && errno == EAGAIN)
		return 0;
	if (got <= 0) {
		client_close(c);
		return -1;
	}
	c->last = time(NULL);
	for (int i = 0; i < got; i++) {
		struct msghdr *mh = &mm[i].msg_hdr;
		struct peer peer = c->peer;
		struct event_sub *sub = NULL;
		int fds[8], nfds = message_fds(mh, &peer, fds);

		if (mm[i].msg_len == 0) {
			/* the end of the stream (every later entry says the same) */
			for (int j = 0; j < nfds; j++)
				close(fds[j]);
			client_close(c);
			return -1;
		}
		c->inflight++; /* until client_done: now, or after the commit's sync */
		if (mh->msg_flags & MSG_TRUNC)
			client_done(c, proto_err_reply(EMSGSIZE, "request larger than 65536 bytes"));
		else if ((mh->msg_flags & MSG_CTRUNC) || nfds > 1)
			client_done(c, proto_err_reply(EINVAL, "at most one file descriptor per request"));
		else
			ops_handle(a, &peer, s->rbuf[i], mm[i].msg_len, nfds ? fds[0] : -1, &sub, client_done, c);
		/* The agent never keeps a client's socket: closing it must end its reservations. */
		for (int j = 0; j < nfds; j++)
			close(fds[j]);
		if (c->dead) {
			events_sub_free(sub);
			drop_messages(mm, i + 1, got);
			return -1;
		}
		/* after the reply: it carries the history, the subscription what comes next */
		if (sub && c->sub) {
			events_sub_free(sub);
		} else if (sub) {
			c->subscriber = true;
			c->sub = sub;
			a->n_subscribers++;
			events_sub_start(sub, deliver_event, c);
		}
	}
	return 0;
}

static void sweep_idle(struct server *s)
{
	uint32_t stall = s->a->opts.stall_timeout;
	time_t now = time(NULL);

	for (struct client *c = s->clients, *next; c; c = next) {
		next = c->next;
		if (c->stalled && now - c->stalled >= (time_t)stall) {
			log_msg(LOG_INFO, "client", "pid %d uid %u left %zu message%s unread for %us%s: closed", c->peer.pid,
				c->peer.uid, c->qn + c->big_unread, c->qn + c->big_unread == 1 ? "" : "s",
				stall, c->subscriber ? " (events subscriber)" : "");
			client_close(c);
		} else if (!c->subscriber && !c->inflight && now - c->last > PORTRESD_IDLE_SEC && !unread_in(c)) {
			log_msg(LOG_DEBUG, "client", "pid %d idle for %ds: closed", c->peer.pid, PORTRESD_IDLE_SEC);
			client_close(c);
		}
	}
}

bool server_socket_answers(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	bool answers;
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return false;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	/* EAGAIN: its backlog is full, yet it listens. */
	answers = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno == EAGAIN;
	close(fd);
	return answers;
}

static int listen_socket(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, one = 1;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	/* main checked this before touching anything; checked again for an agent that started meanwhile */
	if (server_socket_answers(path))
		return -EADDRINUSE;
	/* A socket file nobody answers on is a leftover of a crashed agent. */
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	unlink(path);
	if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || chmod(path, 0666) || listen(fd, SOMAXCONN)) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

static int watch_fd(struct agent *a, int fd, struct watch *w)
{
	if (epoll_ctl(a->epfd, EPOLL_CTL_ADD, fd, &(struct epoll_event){ .events = EPOLLIN, .data.ptr = w })) {
		int err = -errno;

		log_msg(LOG_ERR, "start", "epoll_ctl: %s", strerror(errno));
		return err;
	}
	return 0;
}

/* Everything the loop needs, or -errno with what was opened left in s->f for server_teardown. */
static int server_setup(struct server *s)
{
	struct agent *a = s->a;
	struct loop_fds *f = &s->f;
	sigset_t mask;
	int err;

	if ((a->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) {
		log_msg(LOG_ERR, "start", "epoll_create1: %s", strerror(errno));
		return -errno;
	}
	f->lfd = listen_socket(a->opts.socket);
	if (f->lfd == -EADDRINUSE) {
		log_msg(LOG_ERR, "start", "another portresd answers on %s", a->opts.socket);
		return -EADDRINUSE;
	}
	if (f->lfd < 0) {
		log_msg(LOG_ERR, "start", "cannot listen on %s: %s", a->opts.socket, strerror(-f->lfd));
		return f->lfd;
	}
	if (!a->opts.foreground) {
		/* Detach once callers can connect; logs stay on stderr. */
		pid_t pid = fork();
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);

		if (pid < 0) {
			err = -errno;
			log_msg(LOG_ERR, "start", "fork: %s", strerror(errno));
			if (null >= 0)
				close(null);
			return err;
		}
		if (pid > 0)
			_exit(0);
		setsid();
		if (null >= 0) {
			dup2(null, STDIN_FILENO);
			dup2(null, STDOUT_FILENO);
			close(null);
		}
	}
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	if ((f->sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK)) < 0) {
		err = -errno;
		log_msg(LOG_ERR, "start", "signalfd: %s", strerror(errno));
		return err;
	}
	if ((err = watch_fd(a, f->lfd, &s->w_listen)) || (err = watch_fd(a, f->sfd, &s->w_signal)))
		return err;
	err = portres_events_open(a->loader, events_from_ring, a);
	f->efd = err ? err : portres_events_fd(a->loader);
	if (f->efd < 0)
		log_msg(LOG_WARN, "start", "no BPF event fd (%s): releases are seen at the next start", strerror(-f->efd));
	else if ((err = watch_fd(a, f->efd, &s->w_events)))
		return err;
	/* the loader owns the ring's fd */
	f->efd = -1;
	if (a->opts.metrics_listen) {
		if ((err = metrics_start(a, &f->mfd))) {
			log_msg(LOG_ERR, "start", "cannot serve metrics on %s: %s", a->opts.metrics_listen, strerror(-err));
			return err;
		}
		if ((err = watch_fd(a, f->mfd, &s->w_metrics)))
			return err;
	}
	if ((f->cgfd = cgwatch_open(a)) >= 0) {
		if ((err = watch_fd(a, f->cgfd, &s->w_cgroups)))
			return err;
	} else {
		log_msg(LOG_WARN, "start", "inotify: %s: attachments of removed cgroups stay until the next start",
			strerror(-f->cgfd));
	}
	if (a->nswatch_fd >= 0 && (err = watch_fd(a, a->nswatch_fd, &s->w_netns)))
		return err;
	/* the store's syncer says when a durable commit is on disk (none for a database in memory) */
	if (store_sync_fd(a->store) >= 0 && (err = watch_fd(a, store_sync_fd(a->store), &s->w_sync)))
		return err;
	/* Releases that came between adopting the maps and now. */
	portres_events_poll(a->loader, 0);
	cgwatch_sync(a);
	ops_commit(a);
	log_msg(LOG_INFO, "ready", "serving %s (pid %d)", a->opts.socket, (int)getpid());
	/* Before the loop's first turn: clients that connect meanwhile see its outcome. */
	autoapply_start(a, &f->afd, &f->atfd);
	if (f->afd >= 0 && ((err = watch_fd(a, f->afd, &s->w_apply)) || (err = watch_fd(a, f->atfd, &s->w_apply_timer))))
		return err;
	return 0;
}

/* Turns until a signal stops the agent: each reads what is ready, then commits the turn's changes once. */
static void server_loop(struct server *s)
{
	struct agent *a = s->a;
	const struct loop_fds *f = &s->f;
	struct epoll_event evs[64];

	log_hold(true);
	while (!a->stop) {
		int n = epoll_wait(a->epfd, evs, 64, s->acc.paused ? ACCEPT_BACKOFF_MS : 1000);

		if (n < 0 && errno != EINTR) {
			log_msg(LOG_ERR, "loop", "epoll_wait: %s", strerror(errno));
			break;
		}
		/* netns notifications first: no request of this turn names a netns that died before it */
		for (int i = 0; i < n; i++)
			if (((struct watch *)evs[i].data.ptr)->kind == W_NETNS)
				netns_watch_run(a);
		for (int i = 0; i < n; i++) {
			struct watch *w = evs[i].data.ptr;
			struct signalfd_siginfo si;

			switch (w->kind) {
			case W_LISTEN:
				client_accept(s);
				break;
			case W_SIGNAL:
				if (read(f->sfd, &si, sizeof(si)) == sizeof(si)) {
					log_msg(LOG_INFO, "stop", "signal %u: stopping, enforcement stays in place", si.ssi_signo);
					a->stop = true;
				}
				break;
			case W_EVENTS:
				portres_events_poll(a->loader, 0);
				break;
			case W_METRICS:
				metrics_run(a);
				break;
			case W_CGROUPS:
				cgwatch_run(a);
				break;
			case W_NETNS:
				break;
			case W_SYNC:
				ops_synced(a);
				break;
			case W_APPLY:
				autoapply_changed(a);
				break;
			case W_APPLY_TIMER:
				autoapply_timer(a);
				break;
			case W_CLIENT: {
				struct client *c = (struct client *)w;

				if (c->dead)
					break;
				if ((evs[i].events & (EPOLLERR | EPOLLHUP)) && !(evs[i].events & EPOLLIN)) {
					client_close(c);
					break;
				}
				if ((evs[i].events & EPOLLOUT) && client_flush(c))
					break;
				if (evs[i].events & EPOLLIN)
					client_read(c);
				break;
			}
			}
		}
		sweep_idle(s);
		accept_resume_due(s);
		if (f->mfd >= 0)
			metrics_run(a);
		if (a->attach_dirty)
			cgwatch_sync(a);
		cgwatch_tick(a);
		runtime_sweep(a);
		/*
		 * the turn's changes: one commit; their replies go out once it is
		 * durable (W_SYNC), while the next turns go on
		 */
		ops_commit_async(a);
		bury(s);
		log_events_flush(&a->log_limit, false);
		/* the turn's log lines in one write */
		log_flush();
	}
	log_hold(false);
}

/* Closes what server_setup opened (also after it failed half-way). */
static void server_teardown(struct server *s)
{
	struct agent *a = s->a;
	struct loop_fds *f = &s->f;

	ops_commit(a);
	log_events_flush(&a->log_limit, true);
	while (s->clients)
		client_close(s->clients);
	bury(s);
	events_close(a);
	metrics_stop(a);
	autoapply_stop(a);
	cgwatch_close(a);
	if (f->lfd >= 0) {
		close(f->lfd);
		unlink(a->opts.socket);
	}
	if (f->sfd >= 0)
		close(f->sfd);
	if (a->epfd >= 0)
		close(a->epfd);
	a->epfd = -1;
}

int server_run(struct agent *a)
{
	/* calloc: its read buffer is too big for the stack */
	struct server *s = calloc(1, sizeof(*s));
	int err;

	if (!s) {
		log_msg(LOG_ERR, "start", "out of memory");
		return -ENOMEM;
	}
	s->a = a;
	s->f = (struct loop_fds){ .lfd = -1, .sfd = -1, .efd = -1, .mfd = -1, .cgfd = -1, .afd = -1, .atfd = -1 };
	s->w_listen.kind = W_LISTEN;
	s->w_events.kind = W_EVENTS;
	s->w_signal.kind = W_SIGNAL;
	s->w_metrics.kind = W_METRICS;
	s->w_cgroups.kind = W_CGROUPS;
	s->w_apply.kind = W_APPLY;
	s->w_apply_timer.kind = W_APPLY_TIMER;
	s->w_netns.kind = W_NETNS;
	s->w_sync.kind = W_SYNC;
	if (!(err = server_setup(s)))
		server_loop(s);
	server_teardown(s);
	free(s);
	return err;
}
