/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * state.h - portresd's persistent state: one JSON file in the state directory.
 *
 *   {
 *     "version": 2,
 *     "boot_id": "0d5c5f4e-4c1b-4a57-9d55-2f1f0e1c6a11",
 *     "reservations": [
 *       { "token": "5f0c2a9e1b7d4c33", "proto": "tcp", "start": 8000, "count": 10,
 *         "name": "web", "mode": "enforce",
 *         "request": { "id": "9f2c4e0b7a1d43c8b5e6f70a1c2d3e4f", "uid": 0 },
 *         "grants": [ { "type": "uid", "id": 1000 },
 *                     { "type": "cgroup", "id": 4242, "path": "/sys/fs/cgroup/web" } ] },
 *       { "token": "77aa01c3d2e4f5a6", "proto": "tcp", "start": 15000, "count": 11,
 *         "name": "oci-web.tcp", "mode": "enforce", "netns": 4711 }
 *     ],
 *     "netns": [
 *       { "cookie": 4711, "inode": 4026532178, "nsid": 3, "path": "/proc/4242/ns/net",
 *         "sysctl_added": "15000-15010" }
 *     ],
 *     "attachments": [
 *       { "path": "/sys/fs/cgroup/web", "cgroup_id": 4242, "token": "5f0c2a9e1b7d4c33",
 *         "confine": false, "made_by": { "admin": true, "uid": 0 } }
 *     ],
 *     "sysctl_added": "8000-8009"
 *   }
 *
 * reservations are the persistent ones (runtime reservations live only in the
 * pinned maps), with the request id and uid of the create that made them, if
 * it had one (a client's retry of that create gets the same token);
 * attachments tie cgroups to those tokens ("confine": false, true for the
 * protocols the cgroup has blocks for, or "all"), and made_by says who did
 * (root or the admin group: "admin"; a file without it is from before it was
 * kept, when only administrators attached persistent tokens); sysctl_added
 * lists the ports portres itself added to ip_local_reserved_ports of the
 * agent's network namespace, so a restarted agent removes only its own.
 *
 * A reservation with "netns" lives in another network namespace: the netns
 * entry of that cookie (SO_NETNS_COOKIE, unique while the machine runs)
 * says how to find it again (its nsfs inode, as lsns shows it, the path it
 * was named by, its nsid in the agent's netns) and which ports portres added
 * to its sysctl. Such a namespace does not outlive a reboot: entries saved
 * under another boot_id are gone, and so are their reservations.
 *
 * Version 1 files (no boot_id, netns or "all") are still read; saving
 * writes version 2.
 *
 * Saving is atomic (temporary file in the same directory, write, fsync,
 * rename, fsync of the directory): after any failure the old file is intact.
 * Loading a missing file gives an empty state; a torn or invalid one is an
 * error naming the file and the line/column or field, and is never modified.
 */
#ifndef PORTRES_STATE_H
#define PORTRES_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sysctl_ports.h"

#define STATE_VERSION   2
#define STATE_VERSION_MIN 1 /* oldest version state_load reads */
#define STATE_FILE      "state.json"
#define STATE_NAME_MAX  63
#define STATE_ERR_LEN   512

struct state_grant {
	uint32_t type;  /* enum portres_grant_type */
	uint64_t id;
	char *path;     /* cgroup grants: the path given at creation, or NULL */
};

struct state_resv {
	uint64_t token;
	uint8_t proto;  /* IPPROTO_TCP or IPPROTO_UDP */
	uint8_t mode;   /* enum portres_mode */
	uint16_t start;
	uint16_t count;
	char *name;     /* NULL: none */
	uint64_t netns; /* 0: the agent's netns; else the cookie of an entry of state.netns */
	char *request_id;     /* the create's request id (a retry gets this token back); NULL: none */
	uint32_t request_uid; /* who sent that create */
	size_t n_grants;
	struct state_grant *grants;
};

/* A network namespace other than the agent's that persistent reservations live in. */
struct state_netns {
	uint64_t cookie;
	uint64_t inode;       /* its nsfs inode */
	int32_t nsid;         /* its id in the agent's netns, -1 if none */
	char *path;           /* the path it was named by, NULL if none */
	struct portset *sysctl_added; /* NULL: none */
};

enum state_confine {
	STATE_CONFINE_NONE = 0,
	STATE_CONFINE      = 1, /* binds of the protocols the cgroup has blocks for stay in them */
	STATE_CONFINE_ALL  = 2, /* and binds of the other protocols are denied */
};

struct state_attach {
	char *path;
	uint64_t cgroup_id;
	uint64_t token;
	uint8_t confine;   /* enum state_confine */
	bool by_admin;     /* made by root or the admin group */
	uint32_t by_uid;   /* the uid that made it */
};

#define STATE_BOOT_ID_LEN 36

struct state {
	size_t n_resv;
	struct state_resv *resv;
	size_t n_netns;
	struct state_netns *netns;
	size_t n_attach;
	struct state_attach *attach;
	struct portset sysctl_added;
	char boot_id[STATE_BOOT_ID_LEN + 1]; /* when loaded: the boot it was saved in ("" for version 1) */
};

/* 0, or -errno with a message in err ("<file>:<line>:<col>: ..." or "<file>: <field>: ..."). */
int state_load(const char *dir, struct state *st, char *err, size_t errlen);
/* The same from a text in memory; file names it in messages. */
int state_parse(const char *text, size_t len, const char *file, struct state *st, char *err, size_t errlen);
/* durable: fsync file and directory (persistent changes); without it still atomic. */
int state_save(const char *dir, const struct state *st, bool durable, char *err, size_t errlen);
void state_free(struct state *st);

/* Sorts the indexes idx[0..n_resv) of st's reservations by netns, protocol and start. */
void state_sort_blocks(const struct state *st, size_t *idx);
/* Checks ranges, tokens, names, overlaps and references; 0 or -EINVAL with err. */
int state_validate(const struct state *st, const char *what, char *err, size_t errlen);

/* Array helpers; add copies (deep) and returns 0 or -ENOMEM; del keeps order. */
int state_add_resv(struct state *st, const struct state_resv *r);
void state_del_resv(struct state *st, size_t i);
int state_add_attach(struct state *st, const struct state_attach *a);
void state_del_attach(struct state *st, size_t i);
int state_add_netns(struct state *st, const struct state_netns *n);
struct state_resv *state_find_token(const struct state *st, uint64_t token);
struct state_netns *state_find_netns(const struct state *st, uint64_t cookie);
struct state_resv *state_find_name(const struct state *st, const char *name);
void state_resv_free(struct state_resv *r);
/* A deep copy of src (0 or -ENOMEM, dst empty then). */
int state_resv_copy(struct state_resv *dst, const struct state_resv *src);

/* Shared spellings (used by the protocol too). */
const char *state_proto_name(uint8_t proto);     /* "tcp", "udp" or NULL */
int state_proto_parse(const char *s);            /* IPPROTO_* or -1 */
const char *state_mode_name(uint8_t mode);
int state_mode_parse(const char *s);             /* PORTRES_MODE_* or -1 */
const char *state_grant_name(uint32_t type);
int state_grant_parse(const char *s);            /* PORTRES_GRANT_* or -1 */
/* Token as 16 hex digits; parse accepts exactly that (0 is invalid). */
void state_token_format(uint64_t token, char out[17]);
int state_token_parse(const char *s, uint64_t *token);
/* "false", "true" or "all" as the protocol and the state file spell it. */
const char *state_confine_name(uint8_t confine);
/* The running kernel's boot id (/proc/sys/kernel/random/boot_id); 0 or -errno. */
int state_boot_id(char out[STATE_BOOT_ID_LEN + 1]);
/* Names: 1..63 of [A-Za-z0-9._-], not starting with '-' or '.'. */
bool state_name_valid(const char *s);
/* Request ids: 16..64 of [A-Za-z0-9_-] (the library sends 32 random hex digits). */
#define STATE_REQUEST_ID_MIN 16
#define STATE_REQUEST_ID_MAX 64
bool state_request_id_valid(const char *s);

#endif /* PORTRES_STATE_H */
