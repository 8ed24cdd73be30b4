/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * transport.h - the client side of portresd's protocol (user/common/proto.h),
 * the one request path of libportres (client.c) and portresctl:
 *
 *   portres_transport_connect   the agent's SOCK_SEQPACKET socket; no agent
 *                               (nobody listening, no socket file) is ECONNREFUSED
 *   portres_transport_send      one request, "v" added; a socket by SCM_RIGHTS
 *   portres_transport_recv      one message of any size (MSG_PEEK|MSG_TRUNC sizes it)
 *   portres_transport_call      both, and the reply checked to be {"v":1,"ok":bool};
 *                               a send refused (EPIPE) still reads the agent's
 *                               answer if it left one (portres_transport_left_reply)
 *   portres_transport_error     an error reply's errno name as an errno
 *
 * Credentials travel without being sent: the agent sets SO_PASSCRED, so the
 * kernel attaches the sender's SCM_CREDENTIALS to every message.
 *
 * Internal to portres: libportres is built with hidden visibility, so none of
 * this is exported from libportres.so; portresctl links the static library.
 * Every function returns 0 (or an fd) or -errno, and never prints.
 */
#ifndef PORTRES_TRANSPORT_H
#define PORTRES_TRANSPORT_H

#include <jansson.h>
#include <stdint.h>

/* How long the library waits for the agent. */
#define PORTRES_TRANSPORT_TIMEOUT_MS 30000

/* path if non-NULL and non-empty, else $PORTRES_SOCKET (secure_getenv), else PORTRES_DEFAULT_SOCKET. */
const char *portres_transport_path(const char *path);
/* A connected socket (close-on-exec), or -ECONNREFUSED, -ENAMETOOLONG, -errno. */
int portres_transport_connect(const char *path);
/*
 * Sends req (borrowed; "v" is set in it) with passfd (>= 0) by SCM_RIGHTS,
 * waiting at most timeout_ms (< 0: forever) while the agent's queue is full.
 * 0, -ETIMEDOUT, -ENOMEM, -errno.
 */
int portres_transport_send(int fd, json_t *req, int passfd, int timeout_ms);
/*
 * Receives one message as a JSON object into *msg (new reference), waiting
 * at most timeout_ms (< 0: forever). 0, -ETIMEDOUT, -ECONNRESET (the agent
 * closed the connection), -EPROTO (not a JSON object), -ENOMEM, -errno.
 */
int portres_transport_recv(int fd, json_t **msg, int timeout_ms);
/*
 * One round trip. *reply is the agent's reply, ok or not (see
 * portres_transport_error); -EPROTO when it is not {"v":1,"ok":true|false,...}.
 */
int portres_transport_call(int fd, json_t *req, int passfd, int timeout_ms, json_t **reply);
/* The second half of portres_transport_call: the reply to a request sent. */
int portres_transport_call_reply(int fd, int timeout_ms, json_t **reply);
/*
 * After a send failed with err: an agent that refused the connection (EUSERS)
 * answered and closed before the request got there, so send says EPIPE while
 * the answer waits to be read. 0 and *reply if it is there, else err.
 */
int portres_transport_left_reply(int fd, int err, json_t **reply);
/* 0 for an ok reply; else the errno of its "errno" name, EPROTO when the name is unknown. */
int portres_transport_error(const json_t *reply);

/* client.c: the agent's associate op for sockfd (portres_associate's fallback); 0 or -errno. */
int portres_associate_agent(int sockfd, uint64_t token);

#endif /* PORTRES_TRANSPORT_H */
