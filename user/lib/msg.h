/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * msg.h - one JSON message over portresd's SOCK_SEQPACKET socket (proto.h):
 * sent with at most one descriptor (SCM_RIGHTS), received whole whatever its
 * size (MSG_PEEK | MSG_TRUNC first). Internal to libportres (not exported
 * from the shared library); portresctl and the OCI hook link it statically.
 */
#ifndef PORTRES_MSG_H
#define PORTRES_MSG_H

#include <jansson.h>

/* Connects to the agent's socket at path: an fd, or -errno (no agent: -ECONNREFUSED). */
int msg_connect(const char *path);
/* Sends msg (borrowed) with passfd (>= 0) as its descriptor; 0 or -errno. */
int msg_send(int fd, const json_t *msg, int passfd);
/* Reads one message (blocking up to timeout_ms, -1 forever) into a new object; 0, -ETIMEDOUT, -errno. */
int msg_recv(int fd, json_t **msg, int timeout_ms);

#endif /* PORTRES_MSG_H */
