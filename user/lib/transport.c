// SPDX-License-Identifier: LGPL-2.1-or-later
/* transport.c - one conversation with portresd, for libportres and portresctl (transport.h). */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "portres.h"
#include "proto_errno.h"
#include "transport.h"

const char *portres_transport_path(const char *path)
{
	/* secure_getenv: a set-uid caller must not be pointed at another agent. */
	const char *env = secure_getenv(PORTRES_SOCKET_ENV);

	if (path && *path)
		return path;
	return env && *env ? env : PORTRES_DEFAULT_SOCKET;
}

int portres_transport_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, err;

	path = portres_transport_path(path);
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		err = errno;
		close(fd);
		/* No socket file is no agent, as is nobody listening on it. */
		return err == ENOENT || err == ENOTDIR ? -ECONNREFUSED : -err;
	}
	return fd;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for events on fd until deadline (< 0: none): 0 ready, -ETIMEDOUT, -errno. */
static int wait_for(int fd, short events, long long deadline)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	int r;

	do {
		long long left = deadline < 0 ? -1 : deadline - now_ms();

		if (deadline >= 0 && left < 0)
			left = 0;
		r = poll(&pfd, 1, (int)(left > 1 << 30 ? 1 << 30 : left));
		if (r == 0 && deadline >= 0 && now_ms() >= deadline)
			return -ETIMEDOUT;
	} while (r == 0 || (r < 0 && errno == EINTR));
	return r < 0 ? -errno : 0;
}

static long long deadline_of(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

int portres_transport_send(int fd, json_t *req, int passfd, int timeout_ms)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	long long deadline = deadline_of(timeout_ms);
	struct iovec iov;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	char *text;
	ssize_t n;
	int err = 0;

	if (!req || json_object_set_new(req, "v", json_integer(1)) || !(text = json_dumps(req, JSON_COMPACT)))
		return -ENOMEM;
	iov = (struct iovec){ .iov_base = text, .iov_len = strlen(text) };
	if (passfd >= 0) {
		struct cmsghdr *cm;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = sizeof(ctl.buf);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &passfd, sizeof(int));
	}
	/* Non-blocking per call, so the timeout holds on a blocking socket too. */
	while ((n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT)) < 0) {
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN || (err = wait_for(fd, POLLOUT, deadline)))
			break;
	}
	if (n < 0 && !err)
		err = -errno;
	free(text);
	return err;
}

int portres_transport_recv(int fd, json_t **msg, int timeout_ms)
{
	long long deadline = deadline_of(timeout_ms);
	ssize_t len, n;
	char *buf;
	int err;

	*msg = NULL;
	/*
	 * The size of the next message (a list reply can be megabytes), then the
	 * message. An agent that closed with our request unread (it refused the
	 * connection: EUSERS) makes the first recv fail with ECONNRESET, once; its
	 * reply is still there behind it.
	 */
	for (bool reset_seen = false;;) {
		if ((err = wait_for(fd, POLLIN, deadline)))
			return err;
		len = recv(fd, NULL, 0, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT);
		if (len >= 0)
			break;
		if (errno == ECONNRESET && !reset_seen) {
			reset_seen = true;
			continue;
		}
		if (errno != EINTR && errno != EAGAIN)
			return -errno;
	}
	if (len == 0)
		return -ECONNRESET;
	if (!(buf = malloc((size_t)len)))
		return -ENOMEM;
	while ((n = recv(fd, buf, (size_t)len, MSG_DONTWAIT)) < 0 && errno == EINTR)
		;
	if (n <= 0) {
		err = n < 0 ? -errno : -ECONNRESET;
		free(buf);
		return err;
	}
	*msg = json_loadb(buf, (size_t)n, 0, NULL);
	free(buf);
	if (!json_is_object(*msg)) {
		json_decref(*msg);
		*msg = NULL;
		return -EPROTO;
	}
	return 0;
}

int portres_transport_call(int fd, json_t *req, int passfd, int timeout_ms, json_t **reply)
{
	long long deadline = deadline_of(timeout_ms), left;
	int err;

	*reply = NULL;
	if ((err = portres_transport_send(fd, req, passfd, timeout_ms)))
		return portres_transport_left_reply(fd, err, reply);
	left = deadline < 0 ? -1 : deadline - now_ms();
	return portres_transport_call_reply(fd, left < 0 && deadline >= 0 ? 0 : (int)left, reply);
}

int portres_transport_call_reply(int fd, int timeout_ms, json_t **reply)
{
	json_t *v;
	int err;

	*reply = NULL;
	if ((err = portres_transport_recv(fd, reply, timeout_ms)))
		return err;
	v = json_object_get(*reply, "v");
	if (!json_is_boolean(json_object_get(*reply, "ok")) || !json_is_integer(v) || json_integer_value(v) != 1) {
		json_decref(*reply);
		*reply = NULL;
		return -EPROTO;
	}
	return 0;
}

int portres_transport_left_reply(int fd, int err, json_t **reply)
{
	if (err != -EPIPE && err != -ECONNRESET)
		return err;
	return portres_transport_call_reply(fd, 0, reply) ? err : 0;
}

int portres_transport_error(const json_t *reply)
{
	const char *name;
	int code;

	if (json_is_true(json_object_get(reply, "ok")))
		return 0;
	name = json_string_value(json_object_get(reply, "errno"));
	code = name ? proto_errno_from_name(name) : 0;
	return code ? code : EPROTO;
}
