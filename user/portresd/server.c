// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * server.c - the single-threaded epoll loop: the listening socket, clients,
 * the BPF event ring, signals, the metrics endpoint, and the inotify
 * watches of attached cgroups (cgwatch.c) and of the --apply file (autoapply.c).
 *
 * A client never blocks the others: sockets are non-blocking, at most
 * BATCH messages are read from one client per turn, a client whose replies
 * are not being read is not read from until they are (its own backpressure),
 * event subscribers lose events rather than stall the loop, and a silent
 * client is dropped after PORTRESD_IDLE_SEC.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "portresd.h"

#define BATCH 16

enum watch_kind { W_LISTEN, W_CLIENT, W_EVENTS, W_SIGNAL, W_METRICS, W_CGROUPS, W_APPLY, W_APPLY_TIMER };

struct watch {
	enum watch_kind kind;
};

struct client {
	struct watch w;
	int fd;
	struct peer peer;
	bool subscriber;
	bool reading;         /* EPOLLIN is armed */
	time_t last;
	char *q[PORTRESD_OUTQ_MAX];
	size_t qlen[PORTRESD_OUTQ_MAX];
	size_t qhead, qn;
	uint64_t dropped;
	bool dead;            /* closed during this turn; freed after it */
	struct client *next;
};

static struct agent *agent;
static struct client *clients, *graveyard;
static struct watch w_listen = { W_LISTEN }, w_events = { W_EVENTS }, w_signal = { W_SIGNAL },
		    w_metrics = { W_METRICS }, w_cgroups = { W_CGROUPS }, w_apply = { W_APPLY },
		    w_apply_timer = { W_APPLY_TIMER };

static void client_close(struct client *c)
{
	struct client **pp;

	for (pp = &clients; *pp && *pp != c; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = c->next;
	epoll_ctl(agent->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	while (c->qn) {
		free(c->q[c->qhead]);
		c->qhead = (c->qhead + 1) % PORTRESD_OUTQ_MAX;
		c->qn--;
	}
	agent->n_clients--;
	if (c->subscriber)
		agent->n_subscribers--;
	/* Other events of this turn may still point at c. */
	c->dead = true;
	c->next = graveyard;
	graveyard = c;
}

static void bury(void)
{
	while (graveyard) {
		struct client *c = graveyard;

		graveyard = c->next;
		free(c);
	}
}

static void client_arm(struct client *c)
{
	/* Not reading a request client while its replies wait is its backpressure. */
	bool want_in = c->qn == 0 || c->subscriber;
	struct epoll_event ev = { .events = (want_in ? EPOLLIN : 0) | (c->qn ? EPOLLOUT : 0), .data.ptr = c };

	c->reading = want_in;
	epoll_ctl(agent->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Sends what is queued; -1 if the client is gone (and freed). */
static int client_flush(struct client *c)
{
	while (c->qn) {
		ssize_t n = send(c->fd, c->q[c->qhead], c->qlen[c->qhead], MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n < 0) {
			client_close(c);
			return -1;
		}
		free(c->q[c->qhead]);
		c->qhead = (c->qhead + 1) % PORTRESD_OUTQ_MAX;
		c->qn--;
	}
	client_arm(c);
	return 0;
}

/* Queues msg (taken); false if the queue is full (msg freed). */
static bool client_queue(struct client *c, char *msg)
{
	if (!msg)
		return false;
	if (c->qn == PORTRESD_OUTQ_MAX) {
		free(msg);
		c->dropped++;
		return false;
	}
	c->q[(c->qhead + c->qn) % PORTRESD_OUTQ_MAX] = msg;
	c->qlen[(c->qhead + c->qn) % PORTRESD_OUTQ_MAX] = strlen(msg);
	c->qn++;
	return true;
}

/* The last RECENT events, oldest first from recent_head, for the events op. */
#define RECENT 256
static json_t *recent[RECENT];
static size_t recent_head, recent_n;

json_t *server_recent(void)
{
	json_t *arr = json_array();

	for (size_t i = 0; arr && i < recent_n; i++)
		json_array_append(arr, recent[(recent_head + i) % RECENT]);
	return arr;
}

void server_broadcast(struct agent *a, json_t *event)
{
	json_t *msg;
	char *text;

	if (!event)
		return;
	/* Every event carries its time (CLOCK_MONOTONIC, as the data plane's do). */
	if (!json_object_get(event, "ts_ns")) {
		struct timespec now;

		clock_gettime(CLOCK_MONOTONIC, &now);
		json_object_set_new(event, "ts_ns",
				    json_integer((json_int_t)now.tv_sec * 1000000000 + now.tv_nsec));
	}
	if (recent_n == RECENT) {
		json_decref(recent[recent_head]);
		recent_head = (recent_head + 1) % RECENT;
		recent_n--;
	}
	recent[(recent_head + recent_n++) % RECENT] = json_incref(event);
	if (!a->n_subscribers) {
		json_decref(event);
		return;
	}
	msg = json_pack("{s:i, s:o}", "v", PROTO_VERSION, "event", event);
	text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
	json_decref(msg);
	if (!text)
		return;
	for (struct client *c = clients, *next; c; c = next) {
		next = c->next;
		if (!c->subscriber)
			continue;
		client_queue(c, strdup(text));
		client_flush(c);
	}
	free(text);
}

static void client_accept(int lfd)
{
	for (;;) {
		socklen_t len = sizeof(struct ucred);
		struct ucred cred;
		struct client *c;
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR)
				log_msg(LOG_WARN, "accept", "%s", strerror(errno));
			return;
		}
		if (agent->n_clients >= PORTRESD_MAX_CLIENTS || !(c = calloc(1, sizeof(*c)))) {
			log_msg(LOG_WARN, "accept", "too many clients (%zu): connection refused", agent->n_clients);
			close(fd);
			continue;
		}
		c->w.kind = W_CLIENT;
		c->fd = fd;
		c->last = time(NULL);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
			c->peer.pid = cred.pid;
			c->peer.uid = cred.uid;
			c->peer.gid = cred.gid;
		}
		/* A list of many reservations is one message: let it fit (memory is used only in flight). */
		setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &(int){ 32 << 20 }, sizeof(int));
		len = sizeof(c->peer.groups);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, c->peer.groups, &len) == 0)
			c->peer.ngroups = (int)(len / sizeof(gid_t));
		if (epoll_ctl(agent->epfd, EPOLL_CTL_ADD, fd, &(struct epoll_event){ .events = EPOLLIN, .data.ptr = c })) {
			close(fd);
			free(c);
			continue;
		}
		c->reading = true;
		c->next = clients;
		clients = c;
		agent->n_clients++;
	}
}

/* Reads up to BATCH requests; -1 if the client went away. */
static int client_read(struct client *c)
{
	static char buf[PROTO_MAX_MSG];

	for (int i = 0; i < BATCH && c->reading; i++) {
		union {
			char buf[CMSG_SPACE(sizeof(int) * 8) + CMSG_SPACE(sizeof(struct ucred))];
			struct cmsghdr align;
		} ctl;
		struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
				     .msg_controllen = sizeof(ctl.buf) };
		struct peer peer = c->peer;
		int fds[8], nfds = 0;
		bool subscribe = false;
		char *reply;
		ssize_t n = recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return 0;
		if (n <= 0) {
			client_close(c);
			return -1;
		}
		c->last = time(NULL);
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
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
			} else if (cm->cmsg_type == SCM_CREDENTIALS &&
				   cm->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
				struct ucred uc;

				/* Per message, checked by the kernel: the sender at send time. */
				memcpy(&uc, CMSG_DATA(cm), sizeof(uc));
				peer.pid = uc.pid;
				peer.uid = uc.uid;
				peer.gid = uc.gid;
			}
		}
		if (mh.msg_flags & MSG_TRUNC)
			reply = proto_err_reply(EMSGSIZE, "request larger than 65536 bytes");
		else if ((mh.msg_flags & MSG_CTRUNC) || nfds > 1)
			reply = proto_err_reply(EINVAL, "at most one file descriptor per request");
		else
			reply = ops_handle(agent, &peer, buf, (size_t)n, nfds ? fds[0] : -1, &subscribe);
		/* The agent never keeps a client's socket: closing it must end its reservations. */
		for (int j = 0; j < nfds; j++)
			close(fds[j]);
		if (c->dead) {
			free(reply);
			return -1;
		}
		if (subscribe && !c->subscriber) {
			c->subscriber = true;
			agent->n_subscribers++;
		}
		if (!client_queue(c, reply)) {
			client_close(c);
			return -1;
		}
		if (client_flush(c))
			return -1;
	}
	return 0;
}

static void sweep_idle(void)
{
	time_t now = time(NULL);

	for (struct client *c = clients, *next; c; c = next) {
		next = c->next;
		if (!c->subscriber && now - c->last > PORTRESD_IDLE_SEC) {
			log_msg(LOG_DEBUG, "client", "pid %d idle for %ds: closed", c->peer.pid, PORTRESD_IDLE_SEC);
			client_close(c);
		}
	}
}

static int listen_socket(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, one = 1;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* A socket file nobody answers on is a leftover of a crashed agent. */
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno == EAGAIN) {
		close(fd);
		return -EADDRINUSE;
	}
	unlink(path);
	if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || chmod(path, 0666) || listen(fd, SOMAXCONN)) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

static int handle_ring_event(const struct portres_event *ev, void *arg)
{
	struct agent *a = arg;
	char tok[17];
	json_t *json;

	a->events_seen++;
	state_token_format(ev->token, tok);
	if (ev->type == PORTRES_EV_RELEASED) {
		a->released_events++;
		runtime_end(a, ev->token, "socket closed");
		return 0;
	}
	json = event_json(ev);
	/* The data plane sends up to 1000 events a second per CPU: the log gets a few, subscribers all. */
	if (log_event_allowed())
		log_event(LOG_INFO, ev->type == PORTRES_EV_DENY ? "deny" : ev->type == PORTRES_EV_AUDIT ? "audit" : "exhausted",
			  json, "%s port %u pid %u (%.16s) uid %u token %s",
			  state_proto_name(ev->proto) ? state_proto_name(ev->proto) : "?", ev->port, ev->pid, ev->comm,
			  ev->uid, tok);
	server_broadcast(a, json);
	return 0;
}

int server_run(struct agent *a)
{
	struct epoll_event evs[64];
	sigset_t mask;
	int lfd, sfd, efd, mfd = -1, cgfd, afd, atfd, err;

	agent = a;
	a->epfd = epoll_create1(EPOLL_CLOEXEC);
	lfd = listen_socket(a->opts.socket);
	if (lfd == -EADDRINUSE) {
		log_msg(LOG_ERR, "start", "another portresd answers on %s", a->opts.socket);
		return -EADDRINUSE;
	}
	if (lfd < 0) {
		log_msg(LOG_ERR, "start", "cannot listen on %s: %s", a->opts.socket, strerror(-lfd));
		return lfd;
	}
	if (!a->opts.foreground) {
		/* Detach once callers can connect; logs stay on stderr. */
		pid_t pid = fork();
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);

		if (pid < 0) {
			log_msg(LOG_ERR, "start", "fork: %s", strerror(errno));
			return -errno;
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
	sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	err = portres_events_open(a->loader, handle_ring_event, a);
	efd = err ? err : portres_events_fd(a->loader);
	epoll_ctl(a->epfd, EPOLL_CTL_ADD, lfd, &(struct epoll_event){ .events = EPOLLIN, .data.ptr = &w_listen });
	epoll_ctl(a->epfd, EPOLL_CTL_ADD, sfd, &(struct epoll_event){ .events = EPOLLIN, .data.ptr = &w_signal });
	if (efd >= 0)
		epoll_ctl(a->epfd, EPOLL_CTL_ADD, efd, &(struct epoll_event){ .events = EPOLLIN, .data.ptr = &w_events });
	else
		log_msg(LOG_WARN, "start", "no BPF event fd (%s): releases are seen at the next start", strerror(-efd));
	if (a->opts.metrics_listen) {
		if ((err = metrics_start(a, &mfd))) {
			log_msg(LOG_ERR, "start", "cannot serve metrics on %s: %s", a->opts.metrics_listen, strerror(-err));
			close(lfd);
			return err;
		}
		epoll_ctl(a->epfd, EPOLL_CTL_ADD, mfd, &(struct epoll_event){ .events = EPOLLIN, .data.ptr = &w_metrics });
	}
	if ((cgfd = cgwatch_open(a)) >= 0)
		epoll_ctl(a->epfd, EPOLL_CTL_ADD, cgfd, &(struct epoll_event){ .events = EPOLLIN, .data.ptr = &w_cgroups });
	else
		log_msg(LOG_WARN, "start", "inotify: %s: attachments of removed cgroups stay until the next start",
			strerror(-cgfd));
	/* Releases that came between adopting the maps and now. */
	portres_events_poll(a->loader, 0);
	cgwatch_sync(a);
	log_msg(LOG_INFO, "ready", "serving %s (pid %d)", a->opts.socket, (int)getpid());
	/* Before the loop's first turn: clients that connect meanwhile see its outcome. */
	autoapply_start(a, &afd, &atfd);
	if (afd >= 0) {
		epoll_ctl(a->epfd, EPOLL_CTL_ADD, afd, &(struct epoll_event){ .events = EPOLLIN, .data.ptr = &w_apply });
		epoll_ctl(a->epfd, EPOLL_CTL_ADD, atfd, &(struct epoll_event){ .events = EPOLLIN, .data.ptr = &w_apply_timer });
	}
	while (!a->stop) {
		int n = epoll_wait(a->epfd, evs, 64, 1000);

		if (n < 0 && errno != EINTR) {
			log_msg(LOG_ERR, "loop", "epoll_wait: %s", strerror(errno));
			break;
		}
		for (int i = 0; i < n; i++) {
			struct watch *w = evs[i].data.ptr;
			struct signalfd_siginfo si;

			switch (w->kind) {
			case W_LISTEN:
				client_accept(lfd);
				break;
			case W_SIGNAL:
				if (read(sfd, &si, sizeof(si)) == sizeof(si)) {
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
		sweep_idle();
		bury();
		if (mfd >= 0)
			metrics_run(a);
		if (a->attach_dirty)
			cgwatch_sync(a);
		cgwatch_tick(a);
		runtime_sweep(a);
		log_events_flush(false);
	}
	log_events_flush(true);
	while (clients)
		client_close(clients);
	bury();
	while (recent_n) {
		json_decref(recent[recent_head]);
		recent_head = (recent_head + 1) % RECENT;
		recent_n--;
	}
	metrics_stop(a);
	autoapply_stop();
	cgwatch_close();
	close(lfd);
	unlink(a->opts.socket);
	close(sfd);
	close(a->epfd);
	return 0;
}
