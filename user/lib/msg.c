// SPDX-License-Identifier: LGPL-2.1-or-later
/* msg.c - one JSON message to or from portresd (msg.h). */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "msg.h"

int msg_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, err;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		err = errno;
		close(fd);
		/* no socket file is no agent, as is nobody listening on it */
		return err == ENOENT || err == ENOTDIR ? -ECONNREFUSED : -err;
	}
	return fd;
}

int msg_send(int fd, const json_t *msg, int passfd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} cbuf;
	char *text = json_dumps(msg, JSON_COMPACT);
	struct iovec iov;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	if (!text)
		return -ENOMEM;
	iov = (struct iovec){ .iov_base = text, .iov_len = strlen(text) };
	if (passfd >= 0) {
		struct cmsghdr *cm;

		memset(&cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf.buf;
		mh.msg_controllen = sizeof(cbuf.buf);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &passfd, sizeof(int));
	}
	while ((n = sendmsg(fd, &mh, MSG_NOSIGNAL)) < 0 && errno == EINTR)
		;
	free(text);
	return n < 0 ? -errno : 0;
}

int msg_recv(int fd, json_t **msg, int timeout_ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	json_error_t jerr;
	ssize_t len, n;
	char *buf;
	int r;

	*msg = NULL;
	while ((r = poll(&pfd, 1, timeout_ms)) < 0 && errno == EINTR)
		;
	if (r < 0)
		return -errno;
	if (r == 0)
		return -ETIMEDOUT;
	/* The size of the next message, then the message. */
	while ((len = recv(fd, NULL, 0, MSG_PEEK | MSG_TRUNC)) < 0 && errno == EINTR)
		;
	if (len < 0)
		return -errno;
	if (len == 0)
		return -ECONNRESET;
	if (!(buf = malloc((size_t)len)))
		return -ENOMEM;
	while ((n = recv(fd, buf, (size_t)len, 0)) < 0 && errno == EINTR)
		;
	if (n <= 0) {
		free(buf);
		return n < 0 ? -errno : -ECONNRESET;
	}
	*msg = json_loadb(buf, (size_t)n, 0, &jerr);
	free(buf);
	if (!*msg || !json_is_object(*msg)) {
		json_decref(*msg);
		*msg = NULL;
		return -EPROTO;
	}
	return 0;
}
