// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_protocol.c - the agent's protocol under bad input and load: malformed,
 * mistyped, oversized and unknown requests get an error reply and change
 * nothing; a client that hangs or floods blocks nobody; 100 clients at once.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

TestSuite(protocol, .init = ag_setup, .fini = ag_teardown, .timeout = 120);

static void expect(const char *req, int fd, const char *err)
{
	json_t *r = ag_req(req, fd);

	cr_assert_str_eq(ag_errno(r), err, "%s: got %s (%s)", req, ag_errno(r),
			 json_string_value(json_object_get(r, "error")));
	if (*err)
		cr_assert(json_string_value(json_object_get(r, "error"))[0], "no human message");
	json_decref(r);
}

static char *state_text(void)
{
	static char buf[65536];
	char path[400];
	FILE *f;
	size_t n = 0;

	snprintf(path, sizeof(path), "%s/state.json", ag.state);
	if ((f = fopen(path, "r"))) {
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
	}
	buf[n] = '\0';
	return strdup(buf);
}

Test(protocol, bad_requests_change_nothing)
{
	int p[2], s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	char *before, *after;
	portres_token_t t;

	ag_start(NULL);
	cr_assert_eq(portres_create_persistent(IPPROTO_TCP, 8000, 10, &t), 0);
	before = state_text();
	cr_assert_eq(pipe(p), 0);
	expect("{", -1, "EPROTO");
	expect("\xff\xfe garbage", -1, "EPROTO");
	expect("[]", -1, "EPROTO");
	expect("{\"op\":\"list\"}", -1, "EPROTO");
	expect("{\"v\":1,\"op\":\"nuke\"}", -1, "ENOSYS");
	expect("{\"v\":1,\"op\":[\"create\"]}", -1, "EINVAL");
	expect("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":\"9000\",\"count\":1}", -1, "EINVAL");
	expect("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":9000,\"count\":1e3}", -1, "EINVAL");
	expect("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":9000}", -1, "EINVAL");
	expect("{\"v\":1,\"op\":\"delete\",\"token\":12345}", -1, "EINVAL");
	expect("{\"v\":1,\"op\":\"delete\",\"name\":\"x\",\"token\":\"00000000000000aa\"}", -1, "EINVAL");
	/* descriptors: missing, not a socket, not wanted */
	expect("{\"v\":1,\"op\":\"acquire\",\"count\":4}", -1, "EINVAL");
	expect("{\"v\":1,\"op\":\"acquire\",\"count\":4}", p[0], "ENOTSOCK");
	expect("{\"v\":1,\"op\":\"list\"}", s, "EINVAL");
	/* oversized */
	{
		size_t len = 200 * 1024;
		char *big = malloc(len);
		int c = ag_connect();
		json_t *r;
		int sz = (int)len * 2;

		memset(big, ' ', len);
		memcpy(big, "{\"v\":1,\"op\":\"list\"", 18);
		big[len - 1] = '}';
		setsockopt(c, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
		r = ag_raw(c, big, len, -1);
		cr_assert(r, "no reply to an oversized request");
		cr_assert_str_eq(ag_errno(r), "EMSGSIZE");
		/* the same connection still works */
		json_decref(r);
		r = ag_raw(c, "{\"v\":1,\"op\":\"status\"}", 21, -1);
		cr_assert_str_eq(ag_errno(r), "");
		json_decref(r);
		close(c);
		free(big);
	}
	/* two descriptors */
	{
		int c = ag_connect(), fds[2] = { s, p[0] };
		union {
			char b[CMSG_SPACE(sizeof(fds))];
			struct cmsghdr align;
		} ctl = { 0 };
		char reply[4096];
		struct iovec iov = { .iov_base = "{\"v\":1,\"op\":\"acquire\",\"count\":4}", .iov_len = 33 };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof(ctl.b) };
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		ssize_t n;

		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(fds));
		memcpy(CMSG_DATA(cm), fds, sizeof(fds));
		cr_assert(sendmsg(c, &mh, 0) > 0);
		n = recv(c, reply, sizeof(reply) - 1, 0);
		cr_assert(n > 0);
		reply[n] = '\0';
		cr_assert(strstr(reply, "\"EINVAL\""), "%s", reply);
		close(c);
	}
	after = state_text();
	cr_assert_str_eq(after, before);
	cr_assert_str_eq(ag_sysctl(), "8000-8009");
	expect("{\"v\":1,\"op\":\"status\"}", -1, "");
	free(before);
	free(after);
}

Test(protocol, hanging_and_flooding_clients_block_nobody)
{
	struct timespec t0, t1;
	int hang = ag_connect(), flood = ag_connect(), sent = 0;
	json_t *r;

	ag_start(NULL);
	hang = ag_connect();
	flood = ag_connect();
	/* hang: half a request never comes; flood: requests without reading replies */
	cr_assert(hang >= 0 && flood >= 0);
	for (int i = 0; i < 5000; i++) {
		if (send(flood, "{\"v\":1,\"op\":\"status\"}", 21, MSG_DONTWAIT) < 0)
			break;
		sent++;
	}
	cr_assert(sent > 10);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < 20; i++) {
		r = ag_req("{\"v\":1,\"op\":\"list\"}", -1);
		cr_assert_str_eq(ag_errno(r), "");
		json_decref(r);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	cr_assert_lt((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000, 2000,
		     "other clients were slowed down");
	close(hang);
	close(flood);
}

struct worker {
	int id;
	int failures;
	char why[128];
};

static void *work(void *arg)
{
	struct worker *w = arg;

	for (int i = 0; i < 10; i++) {
		uint16_t start = (uint16_t)(10000 + w->id * 20);
		struct portres_instance in;
		portres_token_t t, t2;
		int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (portres_create_persistent(IPPROTO_TCP, start, 10, &t) ||
		    portres_lookup_persistent(IPPROTO_TCP, start, 10, &t2) || t2 != t ||
		    portres_delete_persistent(IPPROTO_TCP, start, 10) ||
		    portres_acquire(s, &(struct portres_range){ 0, 2 }, &in) || portres_release(s, in.token)) {
			snprintf(w->why, sizeof(w->why), "worker %d round %d: %s", w->id, i, strerror(errno));
			w->failures++;
		}
		close(s);
	}
	return NULL;
}

Test(protocol, hundred_concurrent_clients)
{
	pthread_t th[100];
	struct worker w[100];
	int hold[100];
	json_t *r;

	ag_start(NULL);
	/* 100 connections open at once, and 100 callers working at once */
	for (int i = 0; i < 100; i++) {
		hold[i] = ag_connect();
		cr_assert(hold[i] >= 0, "connection %d refused", i);
	}
	for (int i = 0; i < 100; i++) {
		w[i] = (struct worker){ .id = i };
		pthread_create(&th[i], NULL, work, &w[i]);
	}
	for (int i = 0; i < 100; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(w[i].failures, 0, "%s", w[i].why);
	}
	for (int i = 0; i < 100; i++) {
		r = ag_raw(hold[i], "{\"v\":1,\"op\":\"status\"}", 21, -1);
		cr_assert_str_eq(ag_errno(r), "");
		json_decref(r);
		close(hold[i]);
	}
	r = ag_req("{\"v\":1,\"op\":\"list\"}", -1);
	cr_assert_eq(json_array_size(json_object_get(r, "reservations")), 0);
	json_decref(r);
	cr_assert_str_eq(ag_sysctl(), "");
}

Test(protocol, events_and_reads)
{
	int c, s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	char buf[4096];
	ssize_t n;
	json_t *r;
	portres_token_t t;

	ag_start(NULL);
	c = ag_connect();
	r = ag_raw(c, "{\"v\":1,\"op\":\"events\"}", 21, -1);
	cr_assert_str_eq(ag_errno(r), "");
	json_decref(r);
	cr_assert_eq(portres_create_persistent(IPPROTO_TCP, 8000, 10, &t), 0);
	n = recv(c, buf, sizeof(buf) - 1, 0);
	cr_assert(n > 0);
	buf[n] = '\0';
	cr_assert(strstr(buf, "\"created\""), "%s", buf);
	/* a denied bind is an event too */
	cr_assert_eq(ag_bind(IPPROTO_TCP, 8001, NULL), -EACCES);
	n = recv(c, buf, sizeof(buf) - 1, 0);
	cr_assert(n > 0);
	buf[n] = '\0';
	cr_assert(strstr(buf, "\"deny\"") && strstr(buf, "\"port\":8001"), "%s", buf);
	close(c);
	r = ag_req("{\"v\":1,\"op\":\"who\",\"port\":8001}", -1);
	cr_assert_eq(json_array_size(json_object_get(r, "reservations")), 1);
	json_decref(r);
	r = ag_req("{\"v\":1,\"op\":\"metrics\"}", -1);
	cr_assert(strstr(json_string_value(json_object_get(r, "text")), "portres_denied_total{token="));
	json_decref(r);
	r = ag_req("{\"v\":1,\"op\":\"update\",\"proto\":\"tcp\",\"start\":8000,\"count\":10,\"mode\":\"audit\"}", -1);
	cr_assert_str_eq(ag_errno(r), "EINVAL"); /* update names by token or name */
	json_decref(r);
	close(s);
}

/* One message on c, with fd (SCM_RIGHTS) when fd >= 0; the reply is not read. */
static void send_only(int c, const char *text, int fd)
{
	int err = ag_send(c, text, strlen(text), fd);

	cr_assert_eq(err, 0, "send: %s", strerror(-err));
}

/*
 * A client that sends many requests before reading (the agent reads up to 16
 * of one client in one call): each is answered, in order, and each request's
 * file descriptor goes with that request only. Then the client sends one more
 * request and closes at once: the request is still carried out.
 */
Test(protocol, pipelined_requests_answered_in_order_with_their_fds)
{
	enum { N = 40 };
	int c, socks[N], acquired = 0;
	char buf[4096];
	struct timeval tv = { .tv_sec = 10 };
	json_t *r;

	ag_start(NULL);
	c = ag_connect();
	cr_assert(c >= 0);
	setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	for (int i = 0; i < N; i++) {
		socks[i] = -1;
		if (i % 2) {
			socks[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
			send_only(c, "{\"v\":1,\"op\":\"acquire\",\"count\":2}", socks[i]);
		} else {
			/* no block there: an error, and no fd to take */
			send_only(c, "{\"v\":1,\"op\":\"lookup\",\"proto\":\"tcp\",\"start\":9001,\"count\":3}", -1);
		}
	}
	for (int i = 0; i < N; i++) {
		ssize_t n = recv(c, buf, sizeof(buf), 0);

		cr_assert_gt(n, 0, "reply %d of %d: %s", i + 1, N, n < 0 ? strerror(errno) : "end of stream");
		r = json_loadb(buf, (size_t)n, 0, NULL);
		cr_assert(r, "reply %d is not JSON", i + 1);
		if (i % 2) {
			cr_assert_str_eq(ag_errno(r), "", "reply %d (acquire): %s", i + 1,
					 json_string_value(json_object_get(r, "error")));
			cr_assert_eq(json_integer_value(json_object_get(r, "count")), 2);
			acquired++;
		} else {
			cr_assert_str_eq(ag_errno(r), "ENOENT", "reply %d (lookup): %s", i + 1, ag_errno(r));
		}
		json_decref(r);
	}
	close(c);
	cr_assert_eq(acquired, N / 2);
	/* each acquire is tied to its own socket: closing them ends every one */
	r = ag_req("{\"v\":1,\"op\":\"list\"}", -1);
	cr_assert_eq(json_array_size(json_object_get(r, "reservations")), N / 2, "%s",
		     json_dumps(r, JSON_COMPACT));
	json_decref(r);
	for (int i = 0; i < N; i++)
		if (socks[i] >= 0)
			close(socks[i]);
	for (int tries = 0;; tries++) {
		size_t left;

		r = ag_req("{\"v\":1,\"op\":\"list\"}", -1);
		left = json_array_size(json_object_get(r, "reservations"));
		json_decref(r);
		if (!left)
			break;
		cr_assert_lt(tries, 200, "%zu runtime reservations outlived their sockets", left);
		usleep(10000);
	}
	/* sent, then closed before any reply: the create is done all the same */
	c = ag_connect();
	send_only(c, "{\"v\":1,\"op\":\"create\",\"proto\":\"udp\",\"start\":9100,\"count\":5}", -1);
	close(c);
	for (int tries = 0;; tries++) {
		portres_token_t t;

		if (!portres_lookup_persistent(IPPROTO_UDP, 9100, 5, &t))
			break;
		cr_assert_lt(tries, 200, "the create of a client that closed at once was lost: %s", strerror(errno));
		usleep(10000);
	}
}
