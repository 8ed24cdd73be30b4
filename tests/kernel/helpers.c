// SPDX-License-Identifier: LGPL-2.1-or-later
/* helpers.c - shared helpers of the kernel tests (see helpers.h). */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

#include "helpers.h"

const struct fp fp_all[4] = {
	{ AF_INET, IPPROTO_TCP },
	{ AF_INET, IPPROTO_UDP },
	{ AF_INET6, IPPROTO_TCP },
	{ AF_INET6, IPPROTO_UDP },
};

const char *fp_name(int family, int proto)
{
	if (family == AF_INET)
		return proto == IPPROTO_TCP ? "tcp4" : "udp4";
	return proto == IPPROTO_TCP ? "tcp6" : "udp6";
}

const char *proto_name(int proto)
{
	return proto == IPPROTO_TCP ? "tcp" : "udp";
}

int other_proto(int proto)
{
	return proto == IPPROTO_TCP ? IPPROTO_UDP : IPPROTO_TCP;
}

int h_setassoc(int fd, uint64_t token)
{
	return setsockopt(fd, SOL_PORTRES, PORTRES_ASSOCIATE, &token, sizeof(token)) ? -errno : 0;
}

int h_getassoc(int fd, uint64_t *token)
{
	socklen_t len = sizeof(*token);

	*token = 0;
	return getsockopt(fd, SOL_PORTRES, PORTRES_ASSOCIATION, token, &len) ? -errno : 0;
}

int h_associate(int fd, uint64_t token)
{
	return portres_associate(fd, token) ? -errno : 0;
}

int h_socket(int family, int proto)
{
	int fd = socket(family, fx_sotype(proto) | SOCK_CLOEXEC, proto);

	return fd < 0 ? -errno : fd;
}

static socklen_t fill_addr(struct sockaddr_storage *ss, int family, const char *addr, uint16_t port)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		if (addr)
			inet_pton(AF_INET, addr, &sin->sin_addr);
		return sizeof(*sin);
	}
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(port);
	if (addr)
		inet_pton(AF_INET6, addr, &sin6->sin6_addr);
	return sizeof(*sin6);
}

int h_bind_addr(int fd, int family, const char *addr, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len = fill_addr(&ss, family, addr, port);

	return bind(fd, (struct sockaddr *)&ss, len) ? -errno : 0;
}

int h_connect_lo(int fd, int family, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len = fill_addr(&ss, family, family == AF_INET ? "127.0.0.1" : "::1", port);

	return connect(fd, (struct sockaddr *)&ss, len) ? -errno : 0;
}

int h_listener(int family, uint16_t *port)
{
	int fd = fx_socket(family, IPPROTO_TCP);

	cr_assert_eq(h_bind_addr(fd, family, family == AF_INET ? "127.0.0.1" : "::1", 0), 0,
		     "listener bind: %s", strerror(errno));
	cr_assert_eq(listen(fd, 64), 0, "listen: %s", strerror(errno));
	*port = fx_local_port(fd);
	return fd;
}

uint16_t h_local_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len))
		return 0;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

uint32_t h_users(uint8_t proto, uint16_t port)
{
	struct portres_port p;
	int err = portres_port_owner(fx.l, fx.netns, proto, port, &p);

	cr_assert_eq(err, 0, "portres_port_owner %s %u: %s", proto_name(proto), port, strerror(-err));
	return p.users;
}

uint32_t h_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint32_t)(((uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec) >> 10);
}

const char *h_port_state(uint8_t proto, uint16_t port, char *buf, size_t len)
{
	struct portres_port p;
	uint32_t now = h_now_us();

	if (portres_port_owner(fx.l, fx.netns, proto, port, &p))
		snprintf(buf, len, "%u: unknown", port);
	else
		snprintf(buf, len, "%u: users %u, free_at %d us from now", port, p.users,
			 p.free_at ? (int)(p.free_at - now) : 0);
	return buf;
}

/* The write end of the pipe a child reports its failure message through. */
static int child_msg_fd = -1;

int h_fail(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 1)
		n = sizeof(buf) - 1;
	if (child_msg_fd >= 0 && n > 0 && write(child_msg_fd, buf, n) < 0)
		n = 0;
	return 1;
}

int h_child(int (*fn)(void *arg), void *arg, char *msg, size_t msglen)
{
	int pipefd[2], status, rc;
	ssize_t n, got = 0;
	pid_t pid;

	cr_assert_eq(pipe2(pipefd, O_CLOEXEC), 0, "pipe: %s", strerror(errno));
	pid = fork();
	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		close(pipefd[0]);
		child_msg_fd = pipefd[1];
		rc = fn(arg);
		_exit(rc < 0 || rc > 255 ? 255 : rc);
	}
	close(pipefd[1]);
	if (msg && msglen)
		msg[0] = '\0';
	/* Read to EOF so a child's message is complete before it is shown. */
	while (msg && (size_t)got < msglen - 1 &&
	       (n = read(pipefd[0], msg + got, msglen - 1 - got)) > 0)
		got += n;
	if (msg && msglen)
		msg[got] = '\0';
	close(pipefd[0]);
	while (waitpid(pid, &status, 0) < 0)
		cr_assert_eq(errno, EINTR, "waitpid: %s", strerror(errno));
	if (WIFSIGNALED(status))
		return 256 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

int h_enter_cgroup(const char *path)
{
	char procs[4200], pid[32];
	int fd, n, err = 0;

	snprintf(procs, sizeof(procs), "%s/cgroup.procs", path);
	n = snprintf(pid, sizeof(pid), "%d\n", getpid());
	fd = open(procs, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, pid, n) != n)
		err = -errno;
	close(fd);
	return err;
}

static int on_event(const struct portres_event *ev, void *arg)
{
	struct h_events *log = arg;

	if (log->n < (int)(sizeof(log->ev) / sizeof(log->ev[0])))
		log->ev[log->n++] = *ev;
	return 0;
}

void h_events_open(struct h_events *log)
{
	int err;

	memset(log, 0, sizeof(*log));
	err = portres_events_open(fx.l, on_event, log);
	cr_assert_eq(err, 0, "portres_events_open: %s", strerror(-err));
}

static const struct portres_event *find_event(const struct h_events *log, uint8_t type)
{
	int i;

	for (i = 0; i < log->n; i++)
		if (log->ev[i].type == type)
			return &log->ev[i];
	return NULL;
}

const struct portres_event *h_events_wait(struct h_events *log, uint8_t type, int timeout_ms)
{
	const struct portres_event *ev;
	int waited;

	for (waited = 0; waited <= timeout_ms; waited += 20) {
		int err = portres_events_poll(fx.l, 20);

		cr_assert(err >= 0 || err == -EINTR, "portres_events_poll: %s", strerror(-err));
		ev = find_event(log, type);
		if (ev)
			return ev;
	}
	return NULL;
}

int h_events_count(const struct h_events *log, uint8_t type)
{
	int i, n = 0;

	for (i = 0; i < log->n; i++)
		if (!type || log->ev[i].type == type)
			n++;
	return n;
}

struct portres_stats h_stats(uint64_t token)
{
	struct portres_stats s;
	int err = portres_resv_stats(fx.l, token, &s);

	cr_assert_eq(err, 0, "portres_resv_stats %#llx: %s", (unsigned long long)token, strerror(-err));
	return s;
}

int h_attach(const char *path, int proto, uint64_t token, uint32_t flags)
{
	struct portres_cgroup c = { .flags = flags };
	uint64_t id;
	int err = portres_cgroup_id(path, &id);

	if (err)
		return err;
	if (proto == IPPROTO_TCP)
		c.tcp_token = token;
	else
		c.udp_token = token;
	return portres_cgroup_attach(fx.l, id, &c);
}
