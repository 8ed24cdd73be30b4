/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * store.h - portresd's state in SQLite: <state-dir>/portres.db, one row per
 * object, WAL journal.
 *
 *   meta          key -> value: boot_id (the boot the agent last ran in),
 *                 imported (the state.json it was made from, if any)
 *   netns         cookie -> inode, nsid, path: network namespaces other than
 *                 the agent's that persistent reservations live in
 *   reservations  id (the order they were made; schema 3) -> token (unique),
 *                 kind ('persistent'), netns (0: the agent's own), proto,
 *                 start, count, mode, name, request_id/request_uid (a
 *                 create's id for its retries), created
 *   runtime       token -> netns, proto, start, count, uid/pid (the
 *                 acquirer), created: runtime reservations (schema 2; in
 *                 reservations before, with kind 'runtime')
 *   grants        (token, type, id) -> path: who may associate a persistent token
 *   attachments   (cgroup_id, proto) -> token (of either table), path, confine,
 *                 made_by_admin, made_by_uid: a cgroup's TCP and UDP block;
 *                 deleted with their reservation
 *   sysctl_owned  (netns, start) -> last: runs of ports portres itself added
 *                 to ip_local_reserved_ports of that netns (0: the agent's)
 *
 * Schema version: PRAGMA user_version (STORE_SCHEMA_VERSION), upgraded in
 * place by store_open; application_id says it is portres's.
 *
 * Changes are recorded (store_put_*, store_del_*, ...) and written by
 * store_commit in one transaction: synced to disk (an fdatasync of the
 * WAL, by the syncer thread: see store_sync_request) when any of them is
 * one that must survive a reboot (persistent
 * reservations, grants, attachments, netns), else not (runtime rows and
 * sysctl_owned survive a crash of the agent, not always one of the machine,
 * as the maps and the sysctl do not either). A failed commit writes nothing;
 * the changes recorded while store_keep was on are kept for the next commit,
 * the others dropped.
 *
 * Nothing here logs: errors come back as -errno with a message naming the
 * file and the cause.
 */
#ifndef PORTRESD_STORE_H
#define PORTRESD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "state.h"
#include "sysctl_ports.h"

#define STORE_FILE           "portres.db"
#define STORE_SCHEMA_VERSION 3
#define STORE_APPLICATION_ID 0x706f7274 /* "port" */
#define STORE_IMPORTED       STATE_FILE ".imported"

struct store;

/* A runtime reservation as the database keeps it (adoption after a crash: the uid is not in the maps). */
struct store_runtime {
	uint64_t token;
	uint64_t netns;  /* cookie; 0: the agent's own */
	uint8_t proto;
	uint16_t start, count;
	uint32_t uid, pid;
};

/* Owned sysctl entries of one netns. */
struct store_owned {
	uint64_t netns;  /* cookie; 0: the agent's own */
	struct portset ports;
};

/* What store_load reads. */
struct store_contents {
	struct state st;          /* persistent reservations (netns 0: the agent's), netns, attachments;
				     st.sysctl_added: the agent's own netns; st.boot_id: the last boot */
	struct store_runtime *rt;
	size_t n_rt;
	struct store_owned *owned; /* other netns than the agent's */
	size_t n_owned;
	char imported[64];        /* meta imported, "" when none */
};

/*
 * Opens <dir>/portres.db. When it is missing it is made whole under another
 * name and renamed into place: from <dir>/state.json (versions 1 and 2; then
 * renamed to state.json.imported) when there is one, else empty; *created
 * says so. A database that cannot be read, is corrupt (quick_check), is not
 * portres's, or has a newer schema is refused: -errno with err naming the
 * file and the cause, and nothing on disk is changed.
 */
int store_open(const char *dir, struct store **out, bool *created, char *err, size_t errlen);
/*
 * PRAGMA quick_check of an opened database runs meanwhile in a thread: its
 * outcome, 0 or -EBADMSG naming the file and the problem. store_load and
 * store_commit wait for it first and fail the same way.
 */
int store_check_wait(struct store *s, char *err, size_t errlen);
/* The same on an in-memory database (tests, fuzzing): no file, no import. */
int store_open_memory(struct store **out, char *err, size_t errlen);
/* Drops what was recorded and not committed; NULL is fine. */
void store_close(struct store *s);
const char *store_path(const struct store *s);

/* Reads everything; 0 or -errno with err. */
int store_load(struct store *s, struct store_contents *c, char *err, size_t errlen);
void store_contents_free(struct store_contents *c);
/* Writes a whole state (state.json's import) into the recorded changes. */
void store_import(struct store *s, const struct state *st);

/* Recorded changes. */
void store_put_resv(struct store *s, const struct state_resv *r, uint64_t created);
void store_put_runtime(struct store *s, const struct store_runtime *r, uint64_t created);
void store_del_resv(struct store *s, uint64_t token, bool persistent);
void store_set_mode(struct store *s, uint64_t token, uint8_t mode);
void store_put_attach(struct store *s, const struct state_attach *a, uint8_t proto);
void store_del_attach(struct store *s, uint64_t cgroup_id, uint8_t proto);
void store_put_netns(struct store *s, const struct state_netns *n);
void store_del_netns(struct store *s, uint64_t cookie);
void store_set_meta(struct store *s, const char *key, const char *value);
/* The rows of sysctl_owned of netns that turn from into to (only the runs that changed). */
void store_set_owned(struct store *s, uint64_t netns, const struct portset *from, const struct portset *to);
/* Forgets every sysctl_owned row and runtime reservation (a new boot reset the sysctl and the maps). */
void store_clear_boot(struct store *s);

/* Changes recorded from now on survive a failed commit (retried with the next); returns the old setting. */
bool store_keep(struct store *s, bool keep);
/* The next commit fails with ENOMEM (a change could not be recorded by its caller). */
void store_poison(struct store *s);
/* Changes recorded and not yet committed. */
size_t store_pending(const struct store *s);
/*
 * Writes the recorded changes in one transaction. 0, or -errno with err
 * (-ENOSPC: the disk is full; -EIO: an I/O error or a corrupt database),
 * and then nothing of them was written.
 */
int store_commit(struct store *s, char *err, size_t errlen);
/*
 * Durable commits are synced by a thread of the store (a file database):
 * store_commit writes the WAL, and store_sync_request asks for one
 * fdatasync covering every commit so far (with here, makes it in the
 * calling thread before it returns). It returns that sync's generation,
 * or 0 when no durable commit waits for one (an in-memory database:
 * always 0). When a sync finished, store_sync_fd (an eventfd)
 * is readable; store_synced reads it and returns the newest generation
 * synced (with wait_for, once gen is). store_sync_result: 0 if gen's sync
 * succeeded, else -EIO or -ENOSPC with err (the change is in the database
 * and in effect, but not known to be on disk); asked in order of gen.
 */
uint64_t store_sync_request(struct store *s, bool here);
int store_sync_fd(const struct store *s);
uint64_t store_synced(struct store *s, bool wait_for, uint64_t gen);
int store_sync_result(struct store *s, uint64_t gen, char *err, size_t errlen);

/* Bytes of the database and its WAL on disk. */
uint64_t store_size(const struct store *s);

#endif /* PORTRESD_STORE_H */
