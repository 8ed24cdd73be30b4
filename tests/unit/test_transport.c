// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_transport.c - the client transport shared by libportres and
 * portresctl (user/lib/transport.h), over a real SOCK_SEQPACKET socketpair
 * standing in for the agent.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "transport.h"

static int sv[2] = { -1, -1 }; /* sv[0]: the client, sv[1]: the "agent" */

static void pair_up(void)
{
	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
}

static void pair_down(void)
{
	for (int i = 0; i < 2; i++)
		if (sv[i] >= 0)
			close(sv[i]);
	sv[0] = sv[1] = -1;
}

TestSuite(transport, .init = pair_up, .fini = pair_down, .timeout = 30);

static void agent_says(const char *text)
{
	cr_assert_eq(send(sv[1], text, strlen(text), 0), (ssize_t)strlen(text));
}

Test(transport, request_carries_version_and_socket)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	char buf[256];
	struct iovec iov = { buf, sizeof(buf) - 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf) };
	json_t *req = json_pack("{s:s}", "op", "release");
	struct cmsghdr *cm;
	struct stat a, b;
	ssize_t n;
	int got;

	cr_assert_eq(portres_transport_send(sv[0], req, STDIN_FILENO, 1000), 0);
	json_decref(req);
	n = recvmsg(sv[1], &mh, 0);
	cr_assert_gt(n, 0);
	buf[n] = '\0';
	cr_assert(strstr(buf, "\"v\":1") && strstr(buf, "\"op\":\"release\""), "sent %s", buf);
	cm = CMSG_FIRSTHDR(&mh);
	cr_assert(cm && cm->cmsg_type == SCM_RIGHTS, "no descriptor came along");
	memcpy(&got, CMSG_DATA(cm), sizeof(int));
	cr_assert(!fstat(got, &a) && !fstat(STDIN_FILENO, &b) && a.st_ino == b.st_ino && a.st_dev == b.st_dev);
	close(got);
}

Test(transport, reply_larger_than_any_fixed_buffer)
{
	size_t big = 3 << 20;
	char *text = malloc(big + 64);
	json_t *req = json_object(), *reply;
	size_t head;

	cr_assert(text);
	/* SO_SNDBUFFORCE: past wmem_max, as the agent does */
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUFFORCE, &(int){ 8 << 20 }, sizeof(int));

	strcpy(text, "{\"v\":1,\"ok\":true,\"pad\":\"");
	head = strlen(text);
	memset(text + head, 'x', big);
	strcpy(text + head + big, "\"}");
	agent_says(text);
	cr_assert_eq(portres_transport_call(sv[0], req, -1, 5000, &reply), 0);
	cr_assert_eq(json_string_length(json_object_get(reply, "pad")), big);
	cr_assert_eq(portres_transport_error(reply), 0);
	json_decref(reply);
	json_decref(req);
	free(text);
}

Test(transport, errno_names)
{
	json_t *reply;

	reply = json_pack("{s:i, s:b, s:s, s:s}", "v", 1, "ok", 0, "errno", "EADDRINUSE", "error", "x");
	cr_assert_eq(portres_transport_error(reply), EADDRINUSE);
	json_decref(reply);
	reply = json_pack("{s:i, s:b, s:s}", "v", 1, "ok", 0, "errno", "EWHATEVER");
	cr_assert_eq(portres_transport_error(reply), EPROTO, "an unknown name is EPROTO");
	json_decref(reply);
	reply = json_pack("{s:i, s:b}", "v", 1, "ok", 0);
	cr_assert_eq(portres_transport_error(reply), EPROTO);
	json_decref(reply);
}

Test(transport, replies_not_of_the_protocol_are_eproto)
{
	static const char *const bad[] = { "not json", "[1,2]", "{\"ok\":true}", "{\"v\":2,\"ok\":true}",
					   "{\"v\":1,\"ok\":\"yes\"}" };
	json_t *req = json_object(), *reply = (json_t *)1;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		agent_says(bad[i]);
		cr_assert_eq(portres_transport_call(sv[0], req, -1, 5000, &reply), -EPROTO, "%s", bad[i]);
		cr_assert_null(reply);
	}
	json_decref(req);
}

Test(transport, timeout_and_closed_agent)
{
	json_t *msg = (json_t *)1, *req = json_object();
	int n = 0;

	cr_assert_eq(portres_transport_recv(sv[0], &msg, 50), -ETIMEDOUT);
	cr_assert_null(msg);
	/* a send to an agent that reads nothing times out instead of blocking */
	fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
	while (send(sv[0], "{}", 2, 0) == 2)
		n++;
	cr_assert(n > 0 && errno == EAGAIN);
	fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) & ~O_NONBLOCK);
	cr_assert_eq(portres_transport_send(sv[0], req, -1, 50), -ETIMEDOUT);
	close(sv[1]);
	sv[1] = -1;
	cr_assert_eq(portres_transport_recv(sv[0], &msg, 1000), -ECONNRESET);
	json_decref(req);
}

Test(transport, connect_errors)
{
	char path[200];

	snprintf(path, sizeof(path), "/tmp/portres-transport-%d.sock", (int)getpid());
	cr_assert_eq(portres_transport_connect(path), -ECONNREFUSED, "no socket file is no agent");
	memset(path, 'a', sizeof(path) - 1);
	path[0] = '/';
	path[sizeof(path) - 1] = '\0';
	cr_assert_eq(portres_transport_connect(path), -ENAMETOOLONG);
	cr_assert_str_eq(portres_transport_path("/x.sock"), "/x.sock");
	setenv("PORTRES_SOCKET", "/y.sock", 1);
	cr_assert_str_eq(portres_transport_path(NULL), "/y.sock");
	cr_assert_str_eq(portres_transport_path(""), "/y.sock");
	unsetenv("PORTRES_SOCKET");
	cr_assert_str_eq(portres_transport_path(NULL), "/run/portres/portresd.sock");
}
