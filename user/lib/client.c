// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * client.c - the management calls of libportres: one request to portresd per
 * call on a connection of its own (transport.h; protocol: user/common/proto.h),
 * the socket passed by SCM_RIGHTS where the call takes one. The agent decides;
 * its errno name becomes the caller's errno. Nothing here prints.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <linux/nsfs.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "portres.h"
#include "transport.h"

/* One round trip on a connection of its own; passfd >= 0 travels with the request. 0 and *out, or -errno. */
static int agent_call(json_t *req, int passfd, json_t **out)
{
	json_t *reply = NULL;
	int fd, err;

	*out = NULL;
	if ((fd = portres_transport_connect(NULL)) < 0) {
		err = fd;
		goto cleanup;
	}
	if ((err = portres_transport_call(fd, req, passfd, PORTRES_TRANSPORT_TIMEOUT_MS, &reply)))
		goto cleanup;
	if ((err = -portres_transport_error(reply)))
		goto cleanup;
	*out = reply;
	reply = NULL;
cleanup:
	if (fd >= 0)
		close(fd);
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
