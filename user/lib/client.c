// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * client.c - the management calls of libportres: one request to portresd per
 * call (transport.h; protocol: user/common/proto.h), the socket passed by
 * SCM_RIGHTS where the call takes one. The agent decides; its errno name
 * becomes the caller's errno. Nothing here prints.
 *
 * Connections: each thread keeps its connection to the agent for
 * PORTRES_REUSE_MS after a call and makes its next call on it, when that
 * call is from the same process (not a child after fork), in the same
 * network namespace (the agent takes a call's default netns from its
 * connection) and to the same socket path. Connecting costs the agent five
 * system calls more than the request itself. A connection the agent closed
 * meanwhile (it restarted) fails at the send, when nothing was delivered:
 * the call is sent again on a new one. The agent never closes a connection
 * idle for less than twice PORTRES_REUSE_MS (see portresd's server.c), and
 * a thread's connection is closed when the thread exits.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <linux/nsfs.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "portres.h"
#include "transport.h"

/* --- the thread's connection --------------------------------------------------- */

#define PORTRES_REUSE_MS 5000

struct conn {
	int fd;                  /* -1: none */
	uint64_t fork_gen;       /* fork_gen when it was made */
	dev_t ns_dev;            /* the thread's netns then */
	ino_t ns_ino;
	struct timespec used;    /* the end of its last call */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

static __thread struct conn conn = { .fd = -1 };
static uint64_t fork_gen;      /* counts forks: a child's copy of a connection is not its own */
static pthread_key_t conn_key; /* its destructor closes an exiting thread's connection */
static pthread_once_t conn_once = PTHREAD_ONCE_INIT;

static void conn_forked(void)
{
	__atomic_add_fetch(&fork_gen, 1, __ATOMIC_RELAXED);
}

static void conn_thread_exit(void *arg)
{
	(void)arg;
	if (conn.fd >= 0)
		close(conn.fd);
	conn.fd = -1;
}

static void conn_init(void)
{
	pthread_atfork(NULL, NULL, conn_forked);
	pthread_key_create(&conn_key, conn_thread_exit);
}

static void conn_drop(void)
{
	if (conn.fd >= 0)
		close(conn.fd);
	conn.fd = -1;
}

static long long ms_since(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (long long)(now.tv_sec - t->tv_sec) * 1000 + (now.tv_nsec - t->tv_nsec) / 1000000;
}

/*
 * The thread's connection if it may carry this call (1), a new one (0), or
 * -errno. *ns: the thread's netns now, to remember with a new connection.
 */
static int conn_get(const char *path, struct stat *ns)
{
	int fd;

	pthread_once(&conn_once, conn_init);
	if (stat("/proc/thread-self/ns/net", ns))
		memset(ns, 0, sizeof(*ns));
	if (conn.fd >= 0 && conn.fork_gen == __atomic_load_n(&fork_gen, __ATOMIC_RELAXED) &&
	    conn.ns_dev == ns->st_dev && conn.ns_ino == ns->st_ino && !strcmp(conn.path, path) &&
	    ms_since(&conn.used) < PORTRES_REUSE_MS)
		return 1;
	/* after a fork this is the child's copy: closing it leaves the parent's alone */
	conn_drop();
	if ((fd = portres_transport_connect(path)) < 0)
		return fd;
	conn.fd = fd;
	conn.fork_gen = __atomic_load_n(&fork_gen, __ATOMIC_RELAXED);
	conn.ns_dev = ns->st_dev;
	conn.ns_ino = ns->st_ino;
	snprintf(conn.path, sizeof(conn.path), "%s", path);
	pthread_setspecific(conn_key, &conn);
	return 0;
}

/* One round trip; passfd >= 0 travels with the request. 0 and *out, or -errno. */
static int agent_call(json_t *req, int passfd, json_t **out)
{
	const char *path = portres_transport_path(NULL);
	json_t *reply = NULL;
	struct stat ns;
	int reused, err;

	*out = NULL;
	if (strlen(path) >= sizeof(conn.path)) {
		err = -ENAMETOOLONG;
		goto cleanup;
	}
	if ((reused = conn_get(path, &ns)) < 0) {
		err = reused;
		goto cleanup;
	}
	err = portres_transport_send(conn.fd, req, passfd, PORTRES_TRANSPORT_TIMEOUT_MS);
	if (reused && (err == -EPIPE || err == -ECONNRESET || err == -ENOTCONN)) {
		/* the agent closed it (a restart): nothing was delivered, so once more on a new one */
		conn_drop();
		if ((err = conn_get(path, &ns)) < 0)
			goto cleanup;
		err = portres_transport_send(conn.fd, req, passfd, PORTRES_TRANSPORT_TIMEOUT_MS);
	}
	if (!err)
		err = portres_transport_call_reply(conn.fd, PORTRES_TRANSPORT_TIMEOUT_MS, &reply);
	else
		err = portres_transport_left_reply(conn.fd, err, &reply);
	if (err) {
		/* what is left of a broken conversation is not reused */
		conn_drop();
		goto cleanup;
	}
	clock_gettime(CLOCK_MONOTONIC, &conn.used);
	if ((err = -portres_transport_error(reply)))
		goto cleanup;
	*out = reply;
	reply = NULL;
cleanup:
	json_decref(reply);
	json_decref(req);
	return err;
}

static int set_errno(int err)
{
	if (!err)
		return 0;
	errno = -err;
	return -1;
}

static const char *proto_name(int proto)
{
	return proto == IPPROTO_TCP ? "tcp" : proto == IPPROTO_UDP ? "udp" : NULL;
}

static void token_format(portres_token_t token, char out[17])
{
	snprintf(out, 17, "%016" PRIx64, token);
}

/* Reads reply[key] as a 16-hex-digit token; -EPROTO when it is not one. */
static int token_get(json_t *reply, const char *key, portres_token_t *token)
{
	const char *s = json_string_value(json_object_get(reply, key));
	portres_token_t v = 0;

	if (!s || strlen(s) != 16)
		return -EPROTO;
	for (int i = 0; i < 16; i++) {
		char c = s[i];

		if (c >= '0' && c <= '9')
			v = v << 4 | (portres_token_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v = v << 4 | (portres_token_t)(c - 'a' + 10);
		else
			return -EPROTO;
	}
	if (!v)
		return -EPROTO;
	*token = v;
	return 0;
}

static int port_get(json_t *reply, const char *key, uint16_t *port)
{
	json_t *v = json_object_get(reply, key);

	if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 65535)
		return -EPROTO;
	*port = (uint16_t)json_integer_value(v);
	return 0;
}

int portres_acquire(int sockfd, const struct portres_range *want, struct portres_instance *out)
{
	struct portres_instance got;
	json_t *reply;
	int err;

	if (!want || !out)
		return set_errno(-EINVAL);
	err = agent_call(json_pack("{s:s, s:i, s:i}", "op", "acquire", "start", want->start, "count", want->count),
			 sockfd, &reply);
	if (err)
		return set_errno(err);
	if (!(err = token_get(reply, "token", &got.token)) && !(err = port_get(reply, "start", &got.range.start)))
		err = port_get(reply, "count", &got.range.count);
	json_decref(reply);
	if (!err)
		*out = got;
	return set_errno(err);
}

int portres_associate_agent(int sockfd, portres_token_t token)
{
	char tok[17];
	json_t *reply;
	int err;

	token_format(token, tok);
	err = agent_call(json_pack("{s:s, s:s}", "op", "associate", "token", tok), sockfd, &reply);
	json_decref(reply);
	return err;
}

int portres_release(int sockfd, portres_token_t token)
{
	char tok[17];
	json_t *reply;
	int err;

	if (!token)
		return set_errno(-EINVAL);
	token_format(token, tok);
	err = agent_call(json_pack("{s:s, s:s}", "op", "release", "token", tok), sockfd, &reply);
	json_decref(reply);
	return set_errno(err);
}

/*
 * lookup and delete of one block in the netns of netns_fd (-1: the
 * caller's, which the agent reads from the connection); token_out receives
 * the token if non-NULL.
 */
static int persistent_call(const char *op, int netns_fd, int proto, uint16_t start, uint16_t count,
			   portres_token_t *token_out)
{
	const char *name = proto_name(proto);
	portres_token_t token;
	json_t *reply, *req;
	int err;

	if (!name)
		return set_errno(-EINVAL);
	req = json_pack("{s:s, s:s, s:i, s:i}", "op", op, "proto", name, "start", start, "count", count);
	/*
	 * Like Windows' DeletePersistent*PortReservation, delete deletes the block
	 * even while sockets are bound in it or cgroups are attached to it
	 * ("force"); `portresctl delete` refuses those unless --force.
	 */
	if (req && !strcmp(op, "delete"))
		json_object_set_new(req, "force", json_true());
	err = agent_call(req, netns_fd, &reply);
	if (!err && token_out && !(err = token_get(reply, "token", &token)))
		*token_out = token;
	json_decref(reply);
	return set_errno(err);
}

static double now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * A create carries a random request id. When the connection is lost after
 * the request went out (the agent stopped, maybe after saving, before
 * answering), the same request is sent again until the transport's timeout
 * (30 s) passed: an agent that saved it answers with the saved token, so the caller
 * sees the outcome once. No agent at the first try is ECONNREFUSED at once.
 * netns_fd: the netns (passed with each try), -1 for the caller's.
 */
static int create_call(int netns_fd, int proto, uint16_t start, uint16_t count, portres_token_t *token)
{
	const char *name = proto_name(proto);
	unsigned char raw[16];
	char id[33];
	double deadline = now_sec() + PORTRES_TRANSPORT_TIMEOUT_MS / 1000.0;
	useconds_t pause = 50000;
	json_t *reply = NULL;
	int err;

	if (!token || !name)
		return set_errno(-EINVAL);
	if (getrandom(raw, sizeof(raw), 0) != sizeof(raw))
		return set_errno(-errno);
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(id + 2 * i, 3, "%02x", raw[i]);
	for (int attempt = 0;; attempt++) {
		err = agent_call(json_pack("{s:s, s:s, s:i, s:i, s:s}", "op", "create", "proto", name, "start", start,
					   "count", count, "request_id", id), netns_fd, &reply);
		/* lost after sending, or (retrying) the agent is not back yet */
		if (!(err == -ECONNRESET || err == -EPIPE ||
		      (attempt > 0 && (err == -ECONNREFUSED || err == -ENOENT || err == -EAGAIN))))
			break;
		if (now_sec() + pause / 1e6 > deadline) {
			err = -ETIMEDOUT;
			break;
		}
		usleep(pause);
		pause = pause < 500000 ? pause * 2 : 1000000;
	}
	if (!err)
		err = token_get(reply, "token", token);
	json_decref(reply);
	return set_errno(err);
}

int portres_create_persistent(int proto, uint16_t start, uint16_t count, portres_token_t *token)
{
	return create_call(-1, proto, start, count, token);
}

int portres_lookup_persistent(int proto, uint16_t start, uint16_t count, portres_token_t *token)
{
	if (!token)
		return set_errno(-EINVAL);
	return persistent_call("lookup", -1, proto, start, count, token);
}

int portres_delete_persistent(int proto, uint16_t start, uint16_t count)
{
	return persistent_call("delete", -1, proto, start, count, NULL);
}

/* EBADF for no descriptor, EINVAL for one of something else than a network namespace. */
static int check_netns_fd(int netns_fd)
{
	int type;

	if (netns_fd < 0)
		return -EBADF;
	type = ioctl(netns_fd, NS_GET_NSTYPE);
	if (type < 0)
		return errno == EBADF ? -EBADF : -EINVAL;
	return type == CLONE_NEWNET ? 0 : -EINVAL;
}

int portres_create_persistent_ns(int netns_fd, int proto, uint16_t start, uint16_t count, portres_token_t *token)
{
	int err = check_netns_fd(netns_fd);

	return err ? set_errno(err) : create_call(netns_fd, proto, start, count, token);
}

int portres_lookup_persistent_ns(int netns_fd, int proto, uint16_t start, uint16_t count, portres_token_t *token)
{
	int err = check_netns_fd(netns_fd);

	if (err || !token)
		return set_errno(err ? err : -EINVAL);
	return persistent_call("lookup", netns_fd, proto, start, count, token);
}

int portres_delete_persistent_ns(int netns_fd, int proto, uint16_t start, uint16_t count)
{
	int err = check_netns_fd(netns_fd);

	return err ? set_errno(err) : persistent_call("delete", netns_fd, proto, start, count, NULL);
}
