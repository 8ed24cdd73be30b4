/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * proto.h - the portresd protocol, spoken over a SOCK_SEQPACKET Unix socket.
 *
 * One JSON object per message, at most PROTO_MAX_MSG bytes. Requests:
 *
 *   {"v":1,"op":"acquire","start":0,"count":10}          + the socket (SCM_RIGHTS)
 *   {"v":1,"op":"release","token":"5f0c2a9e1b7d4c33"}     + the socket (SCM_RIGHTS)
 *   {"v":1,"op":"associate","token":"5f0c2a9e1b7d4c33"}   + the socket (SCM_RIGHTS): what
 *        setsockopt(SOL_PORTRES, PORTRES_ASSOCIATE) does, for agents without a
 *        setsockopt program (portresd --associate=agent; libportres falls back to it)
 *   {"v":1,"op":"create","proto":"tcp","start":8000,"count":10,
 *        "name":"web","mode":"enforce","request_id":"9f2c4e0b7a1d43c8b5e6f70a1c2d3e4f",
 *        "grants":[{"type":"uid","id":1000},{"type":"cgroup","path":"/sys/fs/cgroup/web"}]}
 *   {"v":1,"op":"lookup","proto":"tcp","start":8000,"count":10}
 *   {"v":1,"op":"delete", one of: "proto"+"start"+"count" | "token" | "name"
 *        [,"force":true] [,"dry_run":true]}   without force: EBUSY while sockets are
 *                                              bound in it or cgroups attached to it
 *   {"v":1,"op":"update", "token"|"name", "mode":"audit"}
 *   {"v":1,"op":"list"[,"usage":true]}         usage: each with in_use and stats
 *   {"v":1,"op":"show", "token"|"name"}
 *   {"v":1,"op":"who","port":8005[,"proto":"tcp"]}
 *   {"v":1,"op":"attach","cgroup":"/sys/fs/cgroup/web", "token"|"name",
 *        "confine":false|true|"all", "force":false}
 *   {"v":1,"op":"detach","cgroup":"/sys/fs/cgroup/web"[, "token"|"name"]}  (all its blocks, or that one)
 *   {"v":1,"op":"status"}
 *   {"v":1,"op":"metrics"}                                 -> {"text": Prometheus text}
 *   {"v":1,"op":"events"[,"since":"2025-01-31T12:00:00.000Z"][,"tail":N][,"name":"web"]
 *        [,"types":["deny",...]][,"replay":bool][,"follow":bool]}
 *        -> {"recent":[kept events that pass]}; unless follow is false the connection
 *        then receives {"v":1,"event":{...}} messages (user/portresd/events.c)
 *
 * Network namespaces: create, lookup, delete, list, show and who act in the
 * caller's netns (the one its connection was made in; list: all of them),
 * or in the netns passed as a descriptor (SCM_RIGHTS: an open
 * /proc/PID/ns/net, /run/netns/NAME, ...) with, optionally, "netns":"PATH",
 * the path the client named it by (shown to users, and where the agent looks
 * for it again; the descriptor is what counts).
 *
 * Replies: {"v":1,"ok":true, ...op's fields} or
 *          {"v":1,"ok":false,"errno":"EADDRINUSE","error":"human message"}.
 * Tokens are 16 hex digits in strings (JSON numbers cannot hold 64 bits).
 * Unknown fields are ignored; a wrong type, range or missing field is EINVAL,
 * an unknown op ENOSYS, a wrong version or non-JSON EPROTO, an oversized
 * message EMSGSIZE.
 */
#ifndef PORTRES_PROTO_H
#define PORTRES_PROTO_H

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proto_errno.h"

#define PROTO_VERSION    1
#define PROTO_MAX_MSG    (64 * 1024)
#define PROTO_MAX_GRANTS 64

enum proto_op {
	PROTO_OP_ACQUIRE,
	PROTO_OP_RELEASE,
	PROTO_OP_CREATE,
	PROTO_OP_LOOKUP,
	PROTO_OP_DELETE,
	PROTO_OP_UPDATE,
	PROTO_OP_LIST,
	PROTO_OP_SHOW,
	PROTO_OP_WHO,
	PROTO_OP_ATTACH,
	PROTO_OP_DETACH,
	PROTO_OP_STATUS,
	PROTO_OP_METRICS,
	PROTO_OP_EVENTS,
	PROTO_OP_ASSOCIATE,
	PROTO_OP__COUNT,
};

/* Which selector a request names a reservation by. */
enum proto_sel {
	PROTO_SEL_NONE,
	PROTO_SEL_RANGE,  /* proto + start + count */
	PROTO_SEL_TOKEN,
	PROTO_SEL_NAME,
};

struct proto_grant {
	uint32_t type;     /* enum portres_grant_type */
	uint64_t id;       /* uid, gid or cgroup id; 0 with path set for cgroups given by path */
	const char *path;  /* cgroup grants by path (borrowed from the request) */
};

/* A parsed request; strings are borrowed from root, freed by proto_req_free. */
struct proto_req {
	enum proto_op op;
	enum proto_sel sel;
	uint8_t proto;       /* 0 if not given */
	uint16_t start;
	uint16_t count;
	uint16_t port;       /* who */
	int mode;            /* -1 if not given */
	uint64_t token;
	const char *name;
	const char *request_id; /* create: the client's id of this request (a retry sends it again), or NULL */
	const char *cgroup;  /* attach/detach */
	uint8_t confine;     /* attach: enum state_confine */
	bool force;          /* attach: replace another block of the cgroup; delete: even with holders */
	bool dry_run;        /* delete: check only */
	bool usage;          /* list: ports in use and counters of each */
	const char *netns;   /* "netns": the path the client named the passed netns by, or NULL */
	size_t n_grants;
	struct proto_grant grants[PROTO_MAX_GRANTS];
	json_t *root;
};

struct proto_err {
	int code;            /* positive errno */
	char msg[256];
};

/*
 * Parses and validates one request message (need not be NUL-terminated).
 * 0, or -1 with err filled; req needs proto_req_free either way.
 */
int proto_parse_request(const char *buf, size_t len, struct proto_req *req, struct proto_err *err);
void proto_req_free(struct proto_req *req);
const char *proto_op_name(enum proto_op op);
/* True for the ops that take a network namespace (passed as a descriptor). */
bool proto_op_takes_netns(enum proto_op op);

/* Replies (malloc'd compact JSON, NULL on ENOMEM). ok_reply steals fields (may be NULL). */
char *proto_ok_reply(json_t *fields);
char *proto_err_reply(int code, const char *msg);

#endif /* PORTRES_PROTO_H */
