// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * store.c - portresd's state in SQLite (store.h): opening (checks, creation,
 * the one-time import of state.json, migrations), loading, and batches of
 * changes written in one transaction each.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "portres_abi.h"
#include "store.h"

/* reservation_list since schema 2: both tables (made again by a migration that rebuilds one) */
#define VIEW_2                                                                                                      \
	"CREATE VIEW reservation_list AS\n"                                                                        \
	"  SELECT printf('%016x', token) AS token, kind, netns, proto, start, start + count - 1 AS last, mode,\n"    \
	"         name, uid, pid, datetime(created, 'unixepoch') AS created,\n"                                     \
	"         (SELECT group_concat(type || ':' || id, ',') FROM grants g WHERE g.token = r.token) AS grants\n"  \
	"  FROM reservations r\n"                                                                                   \
	"  UNION ALL\n"                                                                                             \
	"  SELECT printf('%016x', token), 'runtime', netns, proto, start, start + count - 1, 'enforce', NULL, uid, "  \
	"pid,\n"                                                                                                    \
	"         datetime(created, 'unixepoch'), NULL\n"                                                          \
	"  FROM runtime\n"                                                                                          \
	"  ORDER BY netns, proto, start;\n"

/*
 * Schema versions: migrations[v] takes a database from user_version v to
 * v + 1. A new version appends one; nothing is ever edited in place.
 */
static const char *const migrations[] = {
	/* 0 -> 1 */
	"CREATE TABLE meta (\n"
	"  key TEXT PRIMARY KEY,\n"
	"  value TEXT NOT NULL\n"
	") WITHOUT ROWID;\n"
	"CREATE TABLE netns (\n"
	"  cookie INTEGER PRIMARY KEY,            -- SO_NETNS_COOKIE, in the boot meta.boot_id names\n"
	"  inode INTEGER NOT NULL,                -- its nsfs inode, as lsns shows it\n"
	"  nsid INTEGER NOT NULL DEFAULT -1,      -- its id in the agent's netns\n"
	"  path TEXT                              -- the path it was named by\n"
	");\n"
	"CREATE TABLE reservations (\n"
	"  token INTEGER PRIMARY KEY,             -- 64 bits, shown as hex by reservation_list\n"
	"  kind TEXT NOT NULL CHECK (kind IN ('persistent', 'runtime')),\n"
	"  netns INTEGER NOT NULL DEFAULT 0,      -- 0: the agent's own, else a netns cookie\n"
	"  proto TEXT NOT NULL CHECK (proto IN ('tcp', 'udp')),\n"
	"  start INTEGER NOT NULL CHECK (start BETWEEN 0 AND 65535),\n"
	"  count INTEGER NOT NULL CHECK (count >= 1 AND start + count <= 65536),\n"
	"  mode TEXT NOT NULL CHECK (mode IN ('enforce', 'audit', 'advisory')),\n"
	"  name TEXT UNIQUE,\n"
	"  request_id TEXT UNIQUE,                -- the create's request id (its retries get this token)\n"
	"  request_uid INTEGER,\n"
	"  uid INTEGER,                           -- runtime: the acquirer\n"
	"  pid INTEGER,\n"
	"  created INTEGER NOT NULL               -- Unix time\n"
	");\n"
	"CREATE TABLE grants (\n"
	"  token INTEGER NOT NULL REFERENCES reservations (token) ON DELETE CASCADE,\n"
	"  type TEXT NOT NULL CHECK (type IN ('uid', 'gid', 'cgroup')),\n"
	"  id INTEGER NOT NULL,\n"
	"  path TEXT,\n"
	"  PRIMARY KEY (token, type, id)\n"
	") WITHOUT ROWID;\n"
	"CREATE TABLE attachments (\n"
	"  cgroup_id INTEGER NOT NULL,\n"
	"  proto TEXT NOT NULL CHECK (proto IN ('tcp', 'udp')),\n"
	"  token INTEGER NOT NULL REFERENCES reservations (token) ON DELETE CASCADE,\n"
	"  path TEXT NOT NULL,\n"
	"  confine TEXT NOT NULL CHECK (confine IN ('false', 'true', 'all')),\n"
	"  made_by_admin INTEGER NOT NULL DEFAULT 1,\n"
	"  made_by_uid INTEGER NOT NULL DEFAULT 0,\n"
	"  PRIMARY KEY (cgroup_id, proto)\n"
	") WITHOUT ROWID;\n"
	"CREATE INDEX attachments_token ON attachments (token);\n"
	"CREATE TABLE sysctl_owned (\n"
	"  netns INTEGER NOT NULL,                -- 0: the agent's own, else a netns cookie\n"
	"  start INTEGER NOT NULL,\n"
	"  last INTEGER NOT NULL,\n"
	"  PRIMARY KEY (netns, start)\n"
	") WITHOUT ROWID;\n"
	"CREATE VIEW reservation_list AS\n"
	"  SELECT printf('%016x', token) AS token, kind, netns, proto, start, start + count - 1 AS last, mode,\n"
	"         name, uid, pid, datetime(created, 'unixepoch') AS created,\n"
	"         (SELECT group_concat(type || ':' || id, ',') FROM grants g WHERE g.token = r.token) AS grants\n"
	"  FROM reservations r ORDER BY netns, proto, start;\n",
	/*
	 * 1 -> 2: runtime reservations in a table of their own. They come and
	 * go with their anchor sockets, a few hundred at a time; among tens of
	 * thousands of persistent rows keyed by random tokens each acquire and
	 * release wrote a page of the big table's B-tree of its own, in their
	 * own table they share a few. Attachments lose their foreign key (a
	 * runtime token is not in reservations): deleting a reservation deletes
	 * its attachments itself (S_DEL_RESV, S_DEL_RUNTIME).
	 */
	"CREATE TABLE runtime (\n"
	"  token INTEGER PRIMARY KEY,             -- lives while its anchor socket does\n"
	"  netns INTEGER NOT NULL DEFAULT 0,      -- 0: the agent's own, else a netns cookie\n"
	"  proto TEXT NOT NULL CHECK (proto IN ('tcp', 'udp')),\n"
	"  start INTEGER NOT NULL CHECK (start BETWEEN 0 AND 65535),\n"
	"  count INTEGER NOT NULL CHECK (count >= 1 AND start + count <= 65536),\n"
	"  uid INTEGER,                           -- the acquirer\n"
	"  pid INTEGER,\n"
	"  created INTEGER NOT NULL               -- Unix time\n"
	");\n"
	"INSERT INTO runtime (token, netns, proto, start, count, uid, pid, created)\n"
	"  SELECT token, netns, proto, start, count, uid, pid, created FROM reservations WHERE kind = 'runtime';\n"
	"DROP VIEW reservation_list;\n"
	"CREATE TABLE attachments_2 (\n"
	"  cgroup_id INTEGER NOT NULL,\n"
	"  proto TEXT NOT NULL CHECK (proto IN ('tcp', 'udp')),\n"
	"  token INTEGER NOT NULL,                -- in reservations or runtime\n"
	"  path TEXT NOT NULL,\n"
	"  confine TEXT NOT NULL CHECK (confine IN ('false', 'true', 'all')),\n"
	"  made_by_admin INTEGER NOT NULL DEFAULT 1,\n"
	"  made_by_uid INTEGER NOT NULL DEFAULT 0,\n"
	"  PRIMARY KEY (cgroup_id, proto)\n"
	") WITHOUT ROWID;\n"
	"INSERT INTO attachments_2 SELECT cgroup_id, proto, token, path, confine, made_by_admin, made_by_uid\n"
	"  FROM attachments;\n"
	"DROP TABLE attachments;\n"
	"ALTER TABLE attachments_2 RENAME TO attachments;\n"
	"CREATE INDEX attachments_token ON attachments (token);\n"
	"DELETE FROM reservations WHERE kind = 'runtime';\n"
	VIEW_2,
	/*
	 * 2 -> 3: persistent rows in the order they were made. Keyed by their
	 * random token, each create wrote a page of the table's B-tree of its
	 * own, and one of the name index (unnamed rows sort by that key) and
	 * one of the request_id index: three random pages. Keyed by id, a
	 * create appends to the last pages; the token index (a few bytes an
	 * entry) takes the random one. request_id keeps no index: the agent
	 * looks request ids up in memory and checks them unique at load.
	 */
	"CREATE TABLE reservations_3 (\n"
	"  id INTEGER PRIMARY KEY,                -- in the order they were made\n"
	"  token INTEGER NOT NULL UNIQUE,         -- 64 bits, shown as hex by reservation_list\n"
	"  kind TEXT NOT NULL CHECK (kind IN ('persistent', 'runtime')),\n"
	"  netns INTEGER NOT NULL DEFAULT 0,      -- 0: the agent's own, else a netns cookie\n"
	"  proto TEXT NOT NULL CHECK (proto IN ('tcp', 'udp')),\n"
	"  start INTEGER NOT NULL CHECK (start BETWEEN 0 AND 65535),\n"
	"  count INTEGER NOT NULL CHECK (count >= 1 AND start + count <= 65536),\n"
	"  mode TEXT NOT NULL CHECK (mode IN ('enforce', 'audit', 'advisory')),\n"
	"  name TEXT UNIQUE,\n"
	"  request_id TEXT,                       -- the create's request id (its retries get this token)\n"
	"  request_uid INTEGER,\n"
	"  uid INTEGER,\n"
	"  pid INTEGER,\n"
	"  created INTEGER NOT NULL               -- Unix time\n"
	");\n"
	"INSERT INTO reservations_3 (token, kind, netns, proto, start, count, mode, name, request_id, request_uid,\n"
	"                            uid, pid, created)\n"
	"  SELECT token, kind, netns, proto, start, count, mode, name, request_id, request_uid, uid, pid, created\n"
	"  FROM reservations ORDER BY created, token;\n"
	"DROP VIEW reservation_list;\n"
	"DROP TABLE reservations;\n"
	"ALTER TABLE reservations_3 RENAME TO reservations;\n"
	VIEW_2,
};
#define N_MIGRATIONS (sizeof(migrations) / sizeof(migrations[0]))
_Static_assert(N_MIGRATIONS == STORE_SCHEMA_VERSION, "one migration per schema version");

enum stmt_id {
	S_BEGIN, S_COMMIT, S_ROLLBACK,
	S_PUT_RESV, S_PUT_RUNTIME, S_PUT_GRANT, S_DEL_RESV, S_DEL_RUNTIME, S_DEL_ATTACHED, S_SET_MODE,
	S_PUT_ATTACH, S_DEL_ATTACH, S_PUT_NETNS, S_DEL_NETNS, S_PUT_META,
	S_PUT_OWNED, S_DEL_OWNED, S_CLEAR_OWNED, S_CLEAR_RUNTIME,
	S__COUNT
};

static const char *const stmt_sql[S__COUNT] = {
	[S_BEGIN] = "BEGIN IMMEDIATE",
	[S_COMMIT] = "COMMIT",
	[S_ROLLBACK] = "ROLLBACK",
	[S_PUT_RESV] = "INSERT INTO reservations (token, kind, netns, proto, start, count, mode, name, request_id, "
		       "request_uid, uid, pid, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
	[S_PUT_RUNTIME] = "INSERT INTO runtime (token, netns, proto, start, count, uid, pid, created) "
			  "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
	[S_PUT_GRANT] = "INSERT OR REPLACE INTO grants (token, type, id, path) VALUES (?1, ?2, ?3, ?4)",
	[S_DEL_RESV] = "DELETE FROM reservations WHERE token = ?1", /* its grants by the foreign key */
	[S_DEL_RUNTIME] = "DELETE FROM runtime WHERE token = ?1",
	[S_DEL_ATTACHED] = "DELETE FROM attachments WHERE token = ?1",
	[S_SET_MODE] = "UPDATE reservations SET mode = ?2 WHERE token = ?1",
	[S_PUT_ATTACH] = "INSERT OR REPLACE INTO attachments (cgroup_id, proto, token, path, confine, made_by_admin, "
			 "made_by_uid) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
	[S_DEL_ATTACH] = "DELETE FROM attachments WHERE cgroup_id = ?1 AND proto = ?2",
	[S_PUT_NETNS] = "INSERT OR REPLACE INTO netns (cookie, inode, nsid, path) VALUES (?1, ?2, ?3, ?4)",
	[S_DEL_NETNS] = "DELETE FROM netns WHERE cookie = ?1",
	[S_PUT_META] = "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
	[S_PUT_OWNED] = "INSERT OR REPLACE INTO sysctl_owned (netns, start, last) VALUES (?1, ?2, ?3)",
	[S_DEL_OWNED] = "DELETE FROM sysctl_owned WHERE netns = ?1 AND start = ?2",
	[S_CLEAR_OWNED] = "DELETE FROM sysctl_owned",
	[S_CLEAR_RUNTIME] = "DELETE FROM runtime",
};

/* One recorded change. */
enum rec_kind {
	R_RESV, R_RUNTIME, R_DEL_RESV, R_MODE, R_ATTACH, R_DEL_ATTACH, R_NETNS, R_DEL_NETNS, R_META,
	R_PUT_OWNED, R_DEL_OWNED, R_CLEAR_BOOT,
};

struct rec {
	struct rec *next;
	uint8_t kind;
	bool durable;   /* must survive a reboot: the commit is synced (store_sync_request) */
	bool keep;      /* survives a failed commit */
	bool nomem;     /* the copy failed: the commit fails */
	uint64_t key;   /* token, cgroup id, netns cookie */
	uint64_t a, b;  /* created, mode, proto, start/last of owned runs */
	struct state_resv r;
	struct store_runtime rt;
	struct state_attach at;
	struct state_netns ns;
	char *k, *v;    /* meta */
};

/* A thread of the store's, woken through its condition variable (lock held to change what it waits for). */
struct bg {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool running, stop;
};

struct store {
	sqlite3 *db;
	sqlite3_stmt *stmt[S__COUNT];
	char path[PATH_MAX + 16];
	struct rec *head, **tail;
	size_t n;
	bool keep;
	bool oom;         /* a change could not be recorded: the next commit fails */
	struct {
		pthread_t thread;
		bool running;
		int ret;
		char err[PATH_MAX + 256];
	} check;          /* quick_check, running while the agent starts (checker) */
	/* the checkpointer: its own connection and thread, woken when the WAL has grown */
	struct {
		sqlite3 *db;
		struct bg bg;
		bool due;
	} ckpt;
	/*
	 * The syncer: the fdatasync of the WAL that makes durable commits
	 * durable, in a thread of its own, so the loop goes on with the next
	 * turn meanwhile (see store_sync_request).
	 */
	struct {
		struct bg bg;
		pthread_cond_t synced;
		uint64_t want, done;     /* generations asked for, and synced */
		uint64_t bad_from, bad_to; /* generations whose sync failed (0: none), with bad_err */
		int bad_err;
		bool dirty;              /* a durable commit since the last request */
		int efd;                 /* eventfd: a sync finished */
		int walfd;
	} sync;
};

static int fail(char *err, size_t errlen, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}

/* The errno of an SQLite result code. */
static int sql_errno(sqlite3 *db, int rc)
{
	int sys = db ? sqlite3_system_errno(db) : 0;

	switch (rc & 0xff) {
	case SQLITE_FULL: return -ENOSPC;
	case SQLITE_NOMEM: return -ENOMEM;
	case SQLITE_READONLY: return -EROFS;
	case SQLITE_BUSY:
	case SQLITE_LOCKED: return -EBUSY;
	case SQLITE_PERM:
	case SQLITE_AUTH: return -EACCES;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB: return -EBADMSG;
	case SQLITE_CANTOPEN: return sys ? -sys : -ENOENT;
	case SQLITE_IOERR: return sys == ENOSPC ? -ENOSPC : -EIO;
	default: return -EIO;
	}
}

/* -errno with "<file>: <what>: <sqlite's message>[ (<errno>)]" in err. */
static int sql_fail(struct store *s, int rc, const char *what, char *err, size_t errlen)
{
	int code = sql_errno(s->db, rc), sys = s->db ? sqlite3_system_errno(s->db) : 0;
	const char *msg = s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);

	if (sys && (rc & 0xff) != SQLITE_CONSTRAINT)
		return fail(err, errlen, code, "%s: %s: %s (%s)", s->path, what, msg, strerror(sys));
	return fail(err, errlen, code, "%s: %s: %s", s->path, what, msg);
}

/* Runs SQL without results; 0 or an SQLite code. */
static int exec(struct store *s, const char *sql)
{
	return sqlite3_exec(s->db, sql, NULL, NULL, NULL);
}

/* One integer from a single-row query; 0 or an SQLite code. */
static int query_int(struct store *s, const char *sql, int64_t *out)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);

	if (rc)
		return rc;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int64(st, 0);
		rc = 0;
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? SQLITE_CORRUPT : rc;
}

/* --- opening -------------------------------------------------------------- */

static void rec_free(struct rec *r)
{
	state_resv_free(&r->r);
	free(r->at.path);
	free(r->ns.path);
	free(r->k);
	free(r->v);
	free(r);
}

static void drop_recs(struct store *s, bool all)
{
	struct rec **pp = &s->head;

	s->n = 0;
	while (*pp) {
		struct rec *r = *pp;

		if (!all && r->keep) {
			pp = &r->next;
			s->n++;
			continue;
		}
		*pp = r->next;
		rec_free(r);
	}
	s->tail = pp;
}

static void checkpointer_stop(struct store *s);
static void syncer_stop(struct store *s);

void store_close(struct store *s)
{
	if (!s)
		return;
	if (s->check.running)
		pthread_join(s->check.thread, NULL);
	syncer_stop(s);
	checkpointer_stop(s);
	drop_recs(s, true);
	for (int i = 0; i < S__COUNT; i++)
		sqlite3_finalize(s->stmt[i]);
	sqlite3_close(s->db);
	free(s);
}

const char *store_path(const struct store *s)
{
	return s->path;
}

static struct store *store_new(const char *path)
{
	struct store *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	snprintf(s->path, sizeof(s->path), "%s", path);
	s->tail = &s->head;
	s->sync.efd = s->sync.walfd = -1;
	return s;
}

/* Brings the schema from user_version to STORE_SCHEMA_VERSION in one transaction. */
static int migrate(struct store *s, int64_t version, char *err, size_t errlen)
{
	int64_t fk = 0, bad = 0;
	char sql[128];
	int rc;

	if (version == STORE_SCHEMA_VERSION)
		return 0;
	/*
	 * Foreign keys off while tables are rebuilt (dropping a parent would
	 * delete its children), checked before the commit, on again after.
	 * The pragma is a no-op inside a transaction: set outside.
	 */
	if ((rc = query_int(s, "PRAGMA foreign_keys", &fk)) || (rc = exec(s, "PRAGMA foreign_keys = OFF")) ||
	    (rc = exec(s, "BEGIN IMMEDIATE")))
		return sql_fail(s, rc, "upgrading the schema", err, errlen);
	for (int64_t v = version; v < STORE_SCHEMA_VERSION && !rc; v++)
		rc = exec(s, migrations[v]);
	if (!rc && !(rc = query_int(s, "SELECT count(*) FROM pragma_foreign_key_check", &bad)) && bad)
		rc = SQLITE_CONSTRAINT_FOREIGNKEY;
	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d; PRAGMA application_id = %d", STORE_SCHEMA_VERSION,
		 STORE_APPLICATION_ID);
	if (!rc && !(rc = exec(s, sql)) && !(rc = exec(s, "COMMIT"))) {
		if (fk && (rc = exec(s, "PRAGMA foreign_keys = ON")))
			return sql_fail(s, rc, "upgrading the schema", err, errlen);
		return 0;
	}
	rc = sql_fail(s, rc, "upgrading the schema", err, errlen);
	exec(s, "ROLLBACK");
	if (fk)
		exec(s, "PRAGMA foreign_keys = ON");
	return rc;
}

static int prepare(struct store *s, char *err, size_t errlen)
{
	for (int i = 0; i < S__COUNT; i++) {
		int rc = sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->stmt[i], NULL);

		if (rc)
			return sql_fail(s, rc, "preparing statements", err, errlen);
	}
	return 0;
}

/*
 * The checks before anything is written: a database file SQLite can read,
 * portres's (application_id), a schema this agent knows, and quick_check.
 * The connection never checkpoints on close, so a refused file stays as it was.
 */
static int check(struct store *s, char *err, size_t errlen)
{
	int64_t app = 0, version = 0;
	int rc;

	sqlite3_db_config(s->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
	if ((rc = query_int(s, "PRAGMA application_id", &app)) || (rc = query_int(s, "PRAGMA user_version", &version)))
		return sql_fail(s, rc, "cannot read it (not modified)", err, errlen);
	if (app != STORE_APPLICATION_ID)
		return fail(err, errlen, -EBADMSG, "%s: not a portres database (application_id %#" PRIx64 "; not modified)",
			    s->path, (uint64_t)app);
	if (version > STORE_SCHEMA_VERSION || version < 1)
		return fail(err, errlen, -EPROTO, "%s: schema version %" PRId64 ": this portresd knows versions 1 to %d "
			    "(not modified)", s->path, version, STORE_SCHEMA_VERSION);
	return 0;
}

/* PRAGMA quick_check on db: 0, or -EBADMSG with the first problem it names. */
static int quick_check(sqlite3 *db, const char *path, char *err, size_t errlen)
{
	sqlite3_stmt *st;
	int rc;

	if ((rc = sqlite3_prepare_v2(db, "PRAGMA quick_check(1)", -1, &st, NULL)))
		return fail(err, errlen, -EBADMSG, "%s: corrupt: cannot check it: %s (not modified)", path,
			    sqlite3_errmsg(db));
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(st, 0), "ok"))
		rc = fail(err, errlen, -EBADMSG, "%s: corrupt: %s (not modified)", path,
			  (const char *)sqlite3_column_text(st, 0));
	else if (rc != SQLITE_ROW)
		rc = fail(err, errlen, -EBADMSG, "%s: corrupt: %s (not modified)", path, sqlite3_errmsg(db));
	else
		rc = 0;
	sqlite3_finalize(st);
	return rc;
}

/*
 * quick_check reads every page (a tenth of a second or two for 65,535
 * reservations): it runs in a thread of its own, on a read-only connection,
 * while the agent loads its programs; store_check_wait (and store_load,
 * store_commit) take its outcome before anything depends on the contents.
 */
static void *checker(void *arg)
{
	struct store *s = arg;
	sqlite3 *db;
	int rc = sqlite3_open_v2(s->path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW, NULL);

	if (rc)
		s->check.ret = fail(s->check.err, sizeof(s->check.err), -EBADMSG, "%s: cannot check it: %s (not modified)",
				    s->path, sqlite3_errstr(rc));
	else
		s->check.ret = quick_check(db, s->path, s->check.err, sizeof(s->check.err));
	sqlite3_close(db);
	return NULL;
}

int store_check_wait(struct store *s, char *err, size_t errlen)
{
	if (s->check.running) {
		pthread_join(s->check.thread, NULL);
		s->check.running = false;
	}
	if (s->check.ret)
		return fail(err, errlen, s->check.ret, "%s", s->check.err);
	/* checked: closing may checkpoint into the file now */
	sqlite3_db_config(s->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 0, NULL);
	return 0;
}

/* After the checks: WAL, durability, foreign keys, the schema, the statements. */
static int setup(struct store *s, char *err, size_t errlen)
{
	int64_t version = 0;
	int rc;

	/*
	 * A page cache that holds the tables of 65,535 reservations: no reads
	 * from the file per change. Under a burst of changes the checkpointer
	 * falls behind and the WAL grows; once it catches up, the next commit
	 * cuts the file back to 4 MiB (journal_size_limit) instead of keeping
	 * the burst's size on disk for good.
	 */
	if ((rc = exec(s, "PRAGMA journal_mode = WAL")) || (rc = exec(s, "PRAGMA synchronous = FULL")) ||
	    (rc = exec(s, "PRAGMA foreign_keys = ON")) || (rc = exec(s, "PRAGMA cache_size = -16384")) ||
	    (rc = exec(s, "PRAGMA journal_size_limit = 4194304")) ||
	    (rc = query_int(s, "PRAGMA user_version", &version)))
		return sql_fail(s, rc, "setting it up", err, errlen);
	if ((rc = migrate(s, version, err, errlen)))
		return rc;
	return prepare(s, err, errlen);
}

static int open_db(struct store *s, int flags, char *err, size_t errlen)
{
	/* each connection is used by one thread at a time (the main one, the checkpointer): no mutexes */
	int rc = sqlite3_open_v2(s->path, &s->db, flags | SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_NOMUTEX, NULL);

	if (rc)
		return sql_fail(s, rc, "cannot open it", err, errlen);
	sqlite3_extended_result_codes(s->db, 1);
	return 0;
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), err = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd))
		err = -errno;
	close(fd);
	return err;
}

/*
 * A new database, whole before it has its name: made as portres.db.new with
 * a rollback journal (no WAL files to carry along), filled from state.json
 * if there is one, committed durably, renamed, and the directory synced.
 */
static int create(const char *dir, const char *path, char *err, size_t errlen)
{
	char tmp[PATH_MAX + 8], journal[PATH_MAX + 16], json[PATH_MAX], imported[PATH_MAX];
	struct state st = { 0 };
	struct store *s;
	bool have_json;
	int ret;

	snprintf(tmp, sizeof(tmp), "%s.new", path);
	snprintf(journal, sizeof(journal), "%s-journal", tmp);
	snprintf(json, sizeof(json), "%s/%s", dir, STATE_FILE);
	snprintf(imported, sizeof(imported), "%s/%s", dir, STORE_IMPORTED);
	/* What a creation that died left. */
	unlink(tmp);
	unlink(journal);
	have_json = access(json, F_OK) == 0;
	if (have_json && (ret = state_load(dir, &st, err, errlen)))
		return ret;
	if (!(s = store_new(tmp))) {
		state_free(&st);
		return fail(err, errlen, -ENOMEM, "%s: out of memory", path);
	}
	ret = open_db(s, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_EXCLUSIVE, err, errlen);
	if (!ret && (ret = exec(s, "PRAGMA synchronous = FULL")))
		ret = sql_fail(s, ret, "creating it", err, errlen);
	if (!ret)
		ret = migrate(s, 0, err, errlen);
	if (!ret)
		ret = prepare(s, err, errlen);
	if (!ret && have_json) {
		store_import(s, &st);
		store_set_meta(s, "imported", json);
	}
	if (!ret && have_json)
		ret = store_commit(s, err, errlen);
	store_close(s);
	state_free(&st);
	if (!ret && rename(tmp, path))
		ret = fail(err, errlen, -errno, "%s: cannot rename %s to it: %s", path, tmp, strerror(errno));
	if (!ret && (ret = fsync_dir(dir)))
		fail(err, errlen, ret, "%s: cannot sync the directory: %s", dir, strerror(-ret));
	if (ret) {
		unlink(tmp);
		unlink(journal);
		return ret;
	}
	/* The database has it all now; the file stays beside it, renamed. */
	if (have_json && (rename(json, imported) || fsync_dir(dir)))
		return fail(err, errlen, -errno, "%s: imported into %s, but cannot rename it to %s: %s", json, path,
			    imported, strerror(errno));
	return 0;
}

/* An agent that died between the database's rename and state.json's: finished now. */
static int finish_import(struct store *s, const char *dir, char *err, size_t errlen)
{
	char json[PATH_MAX], imported[PATH_MAX], value[PATH_MAX] = "";
	sqlite3_stmt *st;

	snprintf(json, sizeof(json), "%s/%s", dir, STATE_FILE);
	snprintf(imported, sizeof(imported), "%s/%s", dir, STORE_IMPORTED);
	if (access(json, F_OK) || sqlite3_prepare_v2(s->db, "SELECT value FROM meta WHERE key = 'imported'", -1, &st,
						     NULL))
		return 0;
	if (sqlite3_step(st) == SQLITE_ROW)
		snprintf(value, sizeof(value), "%s", (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	if (strcmp(value, json) || access(imported, F_OK) == 0)
		return 0;
	if (rename(json, imported) || fsync_dir(dir))
		return fail(err, errlen, -errno, "%s: imported into %s, but cannot rename it to %s: %s", json, s->path,
			    imported, strerror(errno));
	return 0;
}

/* A thread running fn(arg); 0 or an errno. Signals stay the main thread's (its signalfd): all blocked in it. */
static int thread_start(pthread_t *th, void *(*fn)(void *), void *arg)
{
	sigset_t all, old;
	int rc;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(th, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

static int bg_start(struct bg *t, void *(*fn)(void *), void *arg)
{
	int rc;

	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->wake, NULL);
	rc = thread_start(&t->thread, fn, arg);
	t->running = rc == 0;
	return rc;
}

/* Tells t to stop and waits for it; false if it did not run. */
static bool bg_stop(struct bg *t)
{
	if (!t->running)
		return false;
	pthread_mutex_lock(&t->lock);
	t->stop = true;
	pthread_cond_signal(&t->wake);
	pthread_mutex_unlock(&t->lock);
	pthread_join(t->thread, NULL);
	t->running = false;
	return true;
}

/*
 * Checkpoints (the WAL's pages copied into the database, which is synced)
 * run in a thread of their own on a second connection, so that a commit
 * never waits for one: the writer's connection does none itself
 * (wal_autocheckpoint 0); after a commit that leaves more than
 * STORE_CKPT_PAGES in the WAL, the hook wakes the thread, whose PASSIVE
 * checkpoint takes no lock a commit needs.
 */
#define STORE_CKPT_PAGES 1000

static void *checkpointer(void *arg)
{
	struct store *s = arg;

	pthread_mutex_lock(&s->ckpt.bg.lock);
	for (;;) {
		while (!s->ckpt.due && !s->ckpt.bg.stop)
			pthread_cond_wait(&s->ckpt.bg.wake, &s->ckpt.bg.lock);
		if (s->ckpt.bg.stop)
			break;
		s->ckpt.due = false;
		pthread_mutex_unlock(&s->ckpt.bg.lock);
		/* a failure (a full disk) is tried again when the WAL grows on */
		sqlite3_wal_checkpoint_v2(s->ckpt.db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
		pthread_mutex_lock(&s->ckpt.bg.lock);
	}
	pthread_mutex_unlock(&s->ckpt.bg.lock);
	return NULL;
}

static int wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
	struct store *s = arg;

	(void)db;
	(void)name;
	if (pages >= STORE_CKPT_PAGES && s->ckpt.bg.running) {
		pthread_mutex_lock(&s->ckpt.bg.lock);
		s->ckpt.due = true;
		pthread_cond_signal(&s->ckpt.bg.wake);
		pthread_mutex_unlock(&s->ckpt.bg.lock);
	}
	return SQLITE_OK;
}

static int checkpointer_start(struct store *s, char *err, size_t errlen)
{
	int rc = sqlite3_open_v2(s->path, &s->ckpt.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_NOMUTEX,
				 NULL);

	if (rc || (rc = sqlite3_exec(s->ckpt.db, "PRAGMA synchronous = FULL", NULL, NULL, NULL))) {
		sqlite3_close(s->ckpt.db);
		s->ckpt.db = NULL;
		return fail(err, errlen, sql_errno(NULL, rc), "%s: cannot open a second connection: %s", s->path,
			    sqlite3_errstr(rc));
	}
	if ((rc = bg_start(&s->ckpt.bg, checkpointer, s))) {
		sqlite3_close(s->ckpt.db);
		s->ckpt.db = NULL;
		return fail(err, errlen, -rc, "%s: cannot start the checkpointer: %s", s->path, strerror(rc));
	}
	exec(s, "PRAGMA wal_autocheckpoint = 0");
	sqlite3_wal_hook(s->db, wal_hook, s);
	return 0;
}

static void checkpointer_stop(struct store *s)
{
	if (bg_stop(&s->ckpt.bg))
		sqlite3_close(s->ckpt.db);
}

/*
 * The WAL, opened once for its syncs (the connections keep it while they
 * are open), and its name made durable once: the directory synced, as
 * SQLite itself does at a new WAL's first sync.
 */
static int wal_open(struct store *s, char *err, size_t errlen)
{
	char wal[PATH_MAX + 32], dir[PATH_MAX + 16], *slash;
	int fd, rc = 0;

	snprintf(wal, sizeof(wal), "%s-wal", s->path);
	if ((s->sync.walfd = open(wal, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
		return fail(err, errlen, -errno, "%s: %s", wal, strerror(errno));
	snprintf(dir, sizeof(dir), "%s", s->path);
	slash = strrchr(dir, '/');
	if (slash)
		*slash = '\0';
	if ((fd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 || fsync(fd))
		rc = fail(err, errlen, -errno, "%s: cannot sync its directory: %s", wal, strerror(errno));
	if (fd >= 0)
		close(fd);
	return rc;
}

/* With the lock held: the sync up to target returned rc. */
static void sync_done(struct store *s, uint64_t target, int rc)
{
	if (rc) {
		/* failures one after another are one range (a success between them counts as failed too) */
		if (!s->sync.bad_err)
			s->sync.bad_from = s->sync.done + 1;
		if (target > s->sync.bad_to)
			s->sync.bad_to = target;
		s->sync.bad_err = rc;
	}
	/* the loop's own syncs (store_sync_request here) may finish before an earlier one of the thread */
	if (target > s->sync.done)
		s->sync.done = target;
	pthread_cond_broadcast(&s->sync.synced);
}

/*
 * Group commit, pipelined: the writer's connection commits with
 * synchronous=NORMAL (the WAL written, not synced), and a durable commit
 * becomes durable by this thread's fdatasync of the WAL, which covers every
 * commit before it began. Meanwhile the loop applies and commits the next
 * turn's changes; their replies wait for the sync that covers them
 * (store_sync_request, store_synced).
 */
static void *syncer(void *arg)
{
	struct store *s = arg;
	uint64_t target, one = 1;
	int rc;

	pthread_mutex_lock(&s->sync.bg.lock);
	for (;;) {
		while (s->sync.want == s->sync.done && !s->sync.bg.stop)
			pthread_cond_wait(&s->sync.bg.wake, &s->sync.bg.lock);
		if (s->sync.want == s->sync.done)
			break; /* stopping, nothing left to sync */
		target = s->sync.want;
		pthread_mutex_unlock(&s->sync.bg.lock);
		rc = fdatasync(s->sync.walfd) ? -errno : 0;
		pthread_mutex_lock(&s->sync.bg.lock);
		sync_done(s, target, rc);
		if (write(s->sync.efd, &one, sizeof(one)) < 0) {
			/* the counter cannot overflow with 1 a sync; the loop reads it every turn */
		}
	}
	pthread_mutex_unlock(&s->sync.bg.lock);
	return NULL;
}

static int syncer_start(struct store *s, char *err, size_t errlen)
{
	int rc;

	/* from here on the syncer makes commits durable: the connection's own commits stop syncing */
	if ((rc = wal_open(s, err, errlen)))
		return rc;
	if ((rc = exec(s, "PRAGMA synchronous = NORMAL")))
		return sql_fail(s, rc, "setting it up", err, errlen);
	if ((s->sync.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
		return fail(err, errlen, -errno, "%s: eventfd: %s", s->path, strerror(errno));
	pthread_cond_init(&s->sync.synced, NULL);
	if ((rc = bg_start(&s->sync.bg, syncer, s))) {
		close(s->sync.efd);
		s->sync.efd = -1;
		return fail(err, errlen, -rc, "%s: cannot start the syncer: %s", s->path, strerror(rc));
	}
	return 0;
}

/* Stops the syncer once everything asked for is synced. */
static void syncer_stop(struct store *s)
{
	bg_stop(&s->sync.bg);
	if (s->sync.efd >= 0)
		close(s->sync.efd);
	s->sync.efd = -1;
	if (s->sync.walfd >= 0)
		close(s->sync.walfd);
	s->sync.walfd = -1;
}

int store_sync_fd(const struct store *s)
{
	return s->sync.efd;
}

uint64_t store_sync_request(struct store *s, bool here)
{
	uint64_t gen = 0;
	int rc;

	if (!s->sync.bg.running || !s->sync.dirty)
		return 0;
	s->sync.dirty = false;
	pthread_mutex_lock(&s->sync.bg.lock);
	gen = ++s->sync.want;
	if (!here)
		pthread_cond_signal(&s->sync.bg.wake);
	pthread_mutex_unlock(&s->sync.bg.lock);
	if (here) {
		/* no hand-off to the thread and back: two wake-ups saved where nothing else waits */
		rc = fdatasync(s->sync.walfd) ? -errno : 0;
		pthread_mutex_lock(&s->sync.bg.lock);
		sync_done(s, gen, rc);
		pthread_mutex_unlock(&s->sync.bg.lock);
	}
	return gen;
}

uint64_t store_synced(struct store *s, bool wait_for, uint64_t gen)
{
	uint64_t done, n;

	if (!s->sync.bg.running)
		return UINT64_MAX;
	if (read(s->sync.efd, &n, sizeof(n)) < 0) {
		/* EAGAIN: no sync finished since the last read */
	}
	pthread_mutex_lock(&s->sync.bg.lock);
	while (wait_for && s->sync.done < gen)
		pthread_cond_wait(&s->sync.synced, &s->sync.bg.lock);
	done = s->sync.done;
	pthread_mutex_unlock(&s->sync.bg.lock);
	return done;
}

int store_sync_result(struct store *s, uint64_t gen, char *err, size_t errlen)
{
	int rc = 0;

	if (!s->sync.bg.running)
		return 0;
	pthread_mutex_lock(&s->sync.bg.lock);
	if (s->sync.bad_err && gen >= s->sync.bad_from && gen <= s->sync.bad_to)
		rc = s->sync.bad_err;
	/* reported once: the caller asks in order */
	if (s->sync.bad_err && gen >= s->sync.bad_to)
		s->sync.bad_err = 0;
	pthread_mutex_unlock(&s->sync.bg.lock);
	if (rc)
		return fail(err, errlen, rc == -ENOSPC ? -ENOSPC : -EIO,
			    "%s-wal: written but cannot be synced to disk (%s): the change is in effect, but a crash of "
			    "the machine may lose it", s->path, strerror(-rc));
	return 0;
}

static int checker_start(struct store *s, char *err, size_t errlen)
{
	int rc = thread_start(&s->check.thread, checker, s);

	if (rc)
		return fail(err, errlen, -rc, "%s: cannot start the check: %s", s->path, strerror(rc));
	s->check.running = true;
	return 0;
}

int store_open(const char *dir, struct store **out, bool *created, char *err, size_t errlen)
{
	char path[PATH_MAX];
	struct store *s;
	struct stat sb;
	int ret;

	*out = NULL;
	*created = false;
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, STORE_FILE) >= sizeof(path))
		return fail(err, errlen, -ENAMETOOLONG, "%s: state directory path too long", dir);
	if (lstat(path, &sb)) {
		if (errno != ENOENT)
			return fail(err, errlen, -errno, "%s: %s", path, strerror(errno));
		if ((ret = create(dir, path, err, errlen)))
			return ret;
		*created = true;
	} else if (!S_ISREG(sb.st_mode)) {
		return fail(err, errlen, -EINVAL, "%s: not a regular file (not modified)", path);
	} else if (sb.st_size == 0) {
		/* portres makes its database whole before it has this name: empty is a damaged one. */
		return fail(err, errlen, -EBADMSG, "%s: empty file, not a portres database (truncated?; not modified)",
			    path);
	}
	if (!(s = store_new(path)))
		return fail(err, errlen, -ENOMEM, "%s: out of memory", path);
	if ((ret = open_db(s, SQLITE_OPEN_READWRITE, err, errlen)) || (ret = check(s, err, errlen)) ||
	    (ret = setup(s, err, errlen)) || (ret = finish_import(s, dir, err, errlen)) ||
	    (ret = checkpointer_start(s, err, errlen)) || (ret = syncer_start(s, err, errlen)) ||
	    (ret = checker_start(s, err, errlen))) {
		store_close(s);
		return ret;
	}
	*out = s;
	return 0;
}

int store_open_memory(struct store **out, char *err, size_t errlen)
{
	struct store *s = store_new(":memory:");
	int ret;

	*out = NULL;
	if (!s)
		return fail(err, errlen, -ENOMEM, "out of memory");
	ret = open_db(s, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_MEMORY, err, errlen);
	if (!ret && (ret = exec(s, "PRAGMA foreign_keys = ON")))
		ret = sql_fail(s, ret, "setting it up", err, errlen);
	if (ret || (ret = migrate(s, 0, err, errlen)) || (ret = prepare(s, err, errlen))) {
		store_close(s);
		return ret;
	}
	*out = s;
	return 0;
}

/* --- loading -------------------------------------------------------------- */

static const char *col_text(sqlite3_stmt *st, int i)
{
	return (const char *)sqlite3_column_text(st, i);
}

static int mode_of(const char *s)
{
	return s ? state_mode_parse(s) : -1;
}

static int load_resv_rows(struct store *s, struct store_contents *c, size_t cap);
static int load_runtime_rows(struct store *s, struct store_contents *c);

static int load_resv(struct store *s, struct store_contents *c)
{
	int64_t n = 0;
	int rc;

	/* room for all at once: no copy of a growing array per row */
	if ((rc = query_int(s, "SELECT count(*) FROM reservations WHERE kind = 'persistent'", &n)))
		return rc;
	if (n && !(c->st.resv = calloc((size_t)n, sizeof(*c->st.resv))))
		return SQLITE_NOMEM;
	c->st.n_resv = 0;
	if ((rc = load_resv_rows(s, c, (size_t)n)))
		return rc;
	return load_runtime_rows(s, c);
}

/* The runtime table (schema 2): appended to what the reservations table held of them. */
static int load_runtime_rows(struct store *s, struct store_contents *c)
{
	static const char sql[] = "SELECT token, netns, proto, start, count, uid, pid FROM runtime ORDER BY token";
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);

	while (!rc && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		int proto = col_text(st, 2) ? state_proto_parse(col_text(st, 2)) : -1;
		struct store_runtime *n;

		if (proto < 0) {
			rc = SQLITE_CORRUPT;
			break;
		}
		if (!(n = realloc(c->rt, (c->n_rt + 1) * sizeof(*n)))) {
			rc = SQLITE_NOMEM;
			break;
		}
		c->rt = n;
		n[c->n_rt++] = (struct store_runtime){
			.token = (uint64_t)sqlite3_column_int64(st, 0), .netns = (uint64_t)sqlite3_column_int64(st, 1),
			.proto = (uint8_t)proto, .start = (uint16_t)sqlite3_column_int(st, 3),
			.count = (uint16_t)sqlite3_column_int(st, 4), .uid = (uint32_t)sqlite3_column_int64(st, 5),
			.pid = (uint32_t)sqlite3_column_int64(st, 6) };
		rc = 0;
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : rc;
}

static int load_resv_rows(struct store *s, struct store_contents *c, size_t cap)
{
	static const char sql[] = "SELECT token, kind, netns, proto, start, count, mode, name, request_id, request_uid, "
				  "uid, pid FROM reservations ORDER BY token";
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);

	while (!rc && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		int proto = col_text(st, 3) ? state_proto_parse(col_text(st, 3)) : -1, mode = mode_of(col_text(st, 6));
		uint64_t token = (uint64_t)sqlite3_column_int64(st, 0);

		if (proto < 0 || mode < 0) {
			rc = SQLITE_CORRUPT;
			break;
		}
		rc = 0;
		if (!strcmp(col_text(st, 1), "runtime")) {
			struct store_runtime *n = realloc(c->rt, (c->n_rt + 1) * sizeof(*n));

			if (!n) {
				rc = SQLITE_NOMEM;
				break;
			}
			c->rt = n;
			n[c->n_rt++] = (struct store_runtime){
				.token = token, .netns = (uint64_t)sqlite3_column_int64(st, 2), .proto = (uint8_t)proto,
				.start = (uint16_t)sqlite3_column_int(st, 4), .count = (uint16_t)sqlite3_column_int(st, 5),
				.uid = (uint32_t)sqlite3_column_int64(st, 10), .pid = (uint32_t)sqlite3_column_int64(st, 11) };
		} else {
			struct state_resv *r;

			if (c->st.n_resv == cap) {
				rc = SQLITE_CORRUPT; /* more rows than counted */
				break;
			}
			r = &c->st.resv[c->st.n_resv++];
			*r = (struct state_resv){ .token = token, .netns = (uint64_t)sqlite3_column_int64(st, 2),
						  .proto = (uint8_t)proto, .start = (uint16_t)sqlite3_column_int(st, 4),
						  .count = (uint16_t)sqlite3_column_int(st, 5), .mode = (uint8_t)mode,
						  .request_uid = (uint32_t)sqlite3_column_int64(st, 9) };
			if ((col_text(st, 7) && !(r->name = strdup(col_text(st, 7)))) ||
			    (col_text(st, 8) && !(r->request_id = strdup(col_text(st, 8)))))
				rc = SQLITE_NOMEM;
		}
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : rc;
}

static int load_grants(struct store *s, struct store_contents *c)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(s->db, "SELECT token, type, id, path FROM grants ORDER BY token", -1, &st, NULL);
	size_t i = 0;

	/* both in token order (load_resv): one pass */
	while (!rc && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		uint64_t token = (uint64_t)sqlite3_column_int64(st, 0);
		int type = col_text(st, 1) ? state_grant_parse(col_text(st, 1)) : -1;
		struct state_grant *g;
		struct state_resv *r;

		rc = 0;
		/* SQLite orders tokens as signed 64-bit integers */
		while (i < c->st.n_resv && (int64_t)c->st.resv[i].token < (int64_t)token)
			i++;
		if (i == c->st.n_resv || c->st.resv[i].token != token || type < 0) {
			rc = SQLITE_CORRUPT;
			break;
		}
		r = &c->st.resv[i];
		if (!(g = realloc(r->grants, (r->n_grants + 1) * sizeof(*g)))) {
			rc = SQLITE_NOMEM;
			break;
		}
		r->grants = g;
		g[r->n_grants] = (struct state_grant){ .type = (uint32_t)type, .id = (uint64_t)sqlite3_column_int64(st, 2) };
		if (col_text(st, 3) && !(g[r->n_grants].path = strdup(col_text(st, 3)))) {
			rc = SQLITE_NOMEM;
			break;
		}
		r->n_grants++;
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : rc;
}

static int load_attach(struct store *s, struct store_contents *c)
{
	static const char sql[] = "SELECT cgroup_id, token, path, confine, made_by_admin, made_by_uid FROM attachments "
				  "ORDER BY cgroup_id, proto";
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);

	while (!rc && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *cf = col_text(st, 3);
		struct state_attach a = { .cgroup_id = (uint64_t)sqlite3_column_int64(st, 0),
					  .token = (uint64_t)sqlite3_column_int64(st, 1), .path = (char *)col_text(st, 2),
					  .confine = cf && !strcmp(cf, "all") ? STATE_CONFINE_ALL :
						     cf && !strcmp(cf, "true") ? STATE_CONFINE : STATE_CONFINE_NONE,
					  .by_admin = sqlite3_column_int(st, 4) != 0,
					  .by_uid = (uint32_t)sqlite3_column_int64(st, 5) };

		rc = a.path ? (state_add_attach(&c->st, &a) ? SQLITE_NOMEM : 0) : SQLITE_CORRUPT;
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : rc;
}

static int load_netns(struct store *s, struct store_contents *c)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(s->db, "SELECT cookie, inode, nsid, path FROM netns", -1, &st, NULL);

	while (!rc && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct state_netns n = { .cookie = (uint64_t)sqlite3_column_int64(st, 0),
					 .inode = (uint64_t)sqlite3_column_int64(st, 1),
					 .nsid = (int32_t)sqlite3_column_int(st, 2), .path = (char *)col_text(st, 3) };

		rc = state_add_netns(&c->st, &n) ? SQLITE_NOMEM : 0;
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : rc;
}

static struct portset *owned_of(struct store_contents *c, uint64_t netns)
{
	struct store_owned *n;
	struct state_netns *sn;

	if (!netns)
		return &c->st.sysctl_added;
	if ((sn = state_find_netns(&c->st, netns))) {
		if (!sn->sysctl_added)
			sn->sysctl_added = calloc(1, sizeof(*sn->sysctl_added));
		return sn->sysctl_added;
	}
	for (size_t i = 0; i < c->n_owned; i++)
		if (c->owned[i].netns == netns)
			return &c->owned[i].ports;
	if (!(n = realloc(c->owned, (c->n_owned + 1) * sizeof(*n))))
		return NULL;
	c->owned = n;
	memset(&n[c->n_owned], 0, sizeof(*n));
	n[c->n_owned].netns = netns;
	return &n[c->n_owned++].ports;
}

static int load_owned(struct store *s, struct store_contents *c)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(s->db, "SELECT netns, start, last FROM sysctl_owned", -1, &st, NULL);

	while (!rc && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		int64_t lo = sqlite3_column_int64(st, 1), hi = sqlite3_column_int64(st, 2);
		struct portset *p;

		if (lo < 0 || hi < lo || hi > 65535) {
			rc = SQLITE_CORRUPT;
			break;
		}
		if (!(p = owned_of(c, (uint64_t)sqlite3_column_int64(st, 0)))) {
			rc = SQLITE_NOMEM;
			break;
		}
		portset_add(p, (uint32_t)lo, (uint32_t)(hi - lo + 1));
		rc = 0;
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : rc;
}

static int load_meta(struct store *s, struct store_contents *c)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(s->db, "SELECT key, value FROM meta", -1, &st, NULL);

	while (!rc && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *k = col_text(st, 0), *v = col_text(st, 1);

		rc = 0;
		if (k && v && !strcmp(k, "boot_id") && strlen(v) == STATE_BOOT_ID_LEN)
			memcpy(c->st.boot_id, v, STATE_BOOT_ID_LEN + 1);
		else if (k && v && !strcmp(k, "imported"))
			snprintf(c->imported, sizeof(c->imported), "%s", v);
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : rc;
}

/*
 * The rules state.json had, less what the schema enforces itself (unique
 * tokens, names and request ids; ranges, kinds and modes): names and request
 * ids well formed, known netns, no overlap per netns and protocol, attachments
 * of known reservations. The reservations come in token order.
 */
static int validate(const struct state *st, const char *what, char *err, size_t errlen)
{
	size_t *idx = calloc(st->n_resv + 1, sizeof(*idx));
	int ret = 0;

	if (!idx)
		return fail(err, errlen, -ENOMEM, "%s: out of memory", what);
	for (size_t i = 0; i < st->n_resv && !ret; i++) {
		const struct state_resv *r = &st->resv[i];

		idx[i] = i;
		if (!r->token || !r->start || (r->name && !state_name_valid(r->name)) ||
		    (r->request_id && !state_request_id_valid(r->request_id)) ||
		    (r->netns && !state_find_netns(st, r->netns)))
			ret = fail(err, errlen, -EBADMSG, "%s: corrupt: reservation %016" PRIx64 " is not valid", what,
				   r->token);
	}
	if (!ret)
		state_sort_blocks(st, idx);
	for (size_t k = 1; k < st->n_resv && !ret; k++) {
		const struct state_resv *o = &st->resv[idx[k - 1]], *r = &st->resv[idx[k]];

		if (o->netns == r->netns && o->proto == r->proto && r->start < o->start + o->count)
			ret = fail(err, errlen, -EBADMSG, "%s: corrupt: reservations %016" PRIx64 " and %016" PRIx64
				   " overlap", what, o->token, r->token);
	}
	for (size_t i = 0; i < st->n_attach && !ret; i++) {
		/* token order is SQLite's (signed) */
		size_t lo = 0, hi = st->n_resv;
		int64_t t = (int64_t)st->attach[i].token;

		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;

			if ((int64_t)st->resv[mid].token < t)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo == st->n_resv || st->resv[lo].token != st->attach[i].token)
			ret = fail(err, errlen, -EBADMSG, "%s: corrupt: an attachment of %s has no reservation", what,
				   st->attach[i].path);
	}
	free(idx);
	return ret;
}

int store_load(struct store *s, struct store_contents *c, char *err, size_t errlen)
{
	char what[PATH_MAX + 16];
	int rc;

	memset(c, 0, sizeof(*c));
	if ((rc = store_check_wait(s, err, errlen)))
		return rc;
	if ((rc = load_meta(s, c)) || (rc = load_netns(s, c)) || (rc = load_resv(s, c)) || (rc = load_grants(s, c)) ||
	    (rc = load_attach(s, c)) || (rc = load_owned(s, c))) {
		rc = sql_fail(s, rc, "reading it", err, errlen);
		store_contents_free(c);
		return rc;
	}
	snprintf(what, sizeof(what), "%s", s->path);
	if ((rc = validate(&c->st, what, err, errlen)))
		store_contents_free(c);
	return rc;
}

void store_contents_free(struct store_contents *c)
{
	state_free(&c->st);
	free(c->rt);
	free(c->owned);
	memset(c, 0, sizeof(*c));
}

/* --- recording ------------------------------------------------------------ */

static struct rec *record(struct store *s, uint8_t kind, bool durable, uint64_t key)
{
	struct rec *r = calloc(1, sizeof(*r));

	if (!r) {
		/* The commit must fail: a change that is not recorded would be lost unseen. */
		s->oom = true;
		return NULL;
	}
	r->kind = kind;
	r->durable = durable;
	r->keep = s->keep;
	r->key = key;
	*s->tail = r;
	s->tail = &r->next;
	s->n++;
	return r;
}

void store_put_resv(struct store *s, const struct state_resv *r, uint64_t created)
{
	struct rec *n = record(s, R_RESV, true, r->token);

	if (n) {
		n->a = created;
		n->nomem = state_resv_copy(&n->r, r) != 0;
	}
}

void store_put_runtime(struct store *s, const struct store_runtime *rt, uint64_t created)
{
	struct rec *n = record(s, R_RUNTIME, false, rt->token);

	if (n) {
		n->rt = *rt;
		n->a = created;
	}
}

void store_del_resv(struct store *s, uint64_t token, bool persistent)
{
	record(s, R_DEL_RESV, persistent, token);
}

void store_set_mode(struct store *s, uint64_t token, uint8_t mode)
{
	struct rec *n = record(s, R_MODE, true, token);

	if (n)
		n->a = mode;
}

void store_put_attach(struct store *s, const struct state_attach *a, uint8_t proto)
{
	struct rec *n = record(s, R_ATTACH, true, a->cgroup_id);

	if (n) {
		n->at = *a;
		n->a = proto;
		n->nomem = !(n->at.path = strdup(a->path));
	}
}

void store_del_attach(struct store *s, uint64_t cgroup_id, uint8_t proto)
{
	struct rec *n = record(s, R_DEL_ATTACH, true, cgroup_id);

	if (n)
		n->a = proto;
}

void store_put_netns(struct store *s, const struct state_netns *ns)
{
	struct rec *n = record(s, R_NETNS, true, ns->cookie);

	if (n) {
		n->ns = *ns;
		n->ns.sysctl_added = NULL;
		n->nomem = ns->path && !(n->ns.path = strdup(ns->path));
	}
}

void store_del_netns(struct store *s, uint64_t cookie)
{
	record(s, R_DEL_NETNS, true, cookie);
}

void store_set_meta(struct store *s, const char *key, const char *value)
{
	struct rec *n = record(s, R_META, true, 0);

	if (n) {
		n->k = strdup(key);
		n->v = strdup(value);
		n->nomem = !n->k || !n->v;
	}
}

void store_clear_boot(struct store *s)
{
	record(s, R_CLEAR_BOOT, false, 0);
}

/* The first port of the run of set that holds port p (set has p). */
static uint32_t run_start(const struct portset *set, uint32_t p)
{
	while (p > 0 && portset_test(set, (uint16_t)(p - 1))) {
		/* whole words at a time where they are full */
		if (p % 64 == 0 && set->w[p / 64 - 1] == ~0ULL)
			p -= 64;
		else
			p--;
	}
	return p;
}

/*
 * The runs of from that changed are deleted, those of to that changed
 * inserted: a run changed when it has a changed port or one next to it. The
 * changed ports (from ^ to) are walked in order, so each run is seen once.
 */
void store_set_owned(struct store *s, uint64_t netns, const struct portset *from, const struct portset *to)
{
	const struct portset *sets[2] = { from, to };
	uint32_t cursor[2] = { 0, 0 }; /* runs before these are done */
	struct portset *d = malloc(sizeof(*d));
	uint32_t lo, hi, from_port = 0;

	if (!d) {
		s->oom = true;
		return;
	}
	for (size_t i = 0; i < 1024; i++)
		d->w[i] = from->w[i] ^ to->w[i];
	while (portset_next_run(d, from_port, &lo, &hi)) {
		/* runs of either set touching [lo - 1, hi + 1] */
		uint32_t a = lo ? lo - 1 : 0, b = hi < 65535 ? hi + 1 : 65535;

		for (int k = 0; k < 2; k++) {
			uint32_t rlo, rhi, p = a;

			if (portset_test(sets[k], (uint16_t)a))
				p = run_start(sets[k], a);
			if (p < cursor[k])
				p = cursor[k];
			while (p <= b && portset_next_run(sets[k], p, &rlo, &rhi) && rlo <= b) {
				struct rec *n = record(s, k ? R_PUT_OWNED : R_DEL_OWNED, false, netns);

				if (n) {
					n->a = rlo;
					n->b = rhi;
				}
				cursor[k] = rhi + 1;
				if (rhi == 65535)
					break;
				p = rhi + 1;
			}
		}
		if (hi == 65535)
			break;
		from_port = hi + 1;
	}
	free(d);
}

void store_import(struct store *s, const struct state *st)
{
	char boot[STATE_BOOT_ID_LEN + 1];

	for (size_t i = 0; i < st->n_netns; i++) {
		store_put_netns(s, &st->netns[i]);
		if (st->netns[i].sysctl_added) {
			struct portset none;

			portset_clear(&none);
			store_set_owned(s, st->netns[i].cookie, &none, st->netns[i].sysctl_added);
		}
	}
	for (size_t i = 0; i < st->n_resv; i++)
		store_put_resv(s, &st->resv[i], (uint64_t)time(NULL));
	for (size_t i = 0; i < st->n_attach; i++) {
		const struct state_resv *r = state_find_token(st, st->attach[i].token);

		if (r)
			store_put_attach(s, &st->attach[i], r->proto);
	}
	if (!portset_empty(&st->sysctl_added)) {
		struct portset none;

		portset_clear(&none);
		store_set_owned(s, 0, &none, &st->sysctl_added);
	}
	/* a version 1 file has no boot id: the one it was saved in is unknown, so the sysctl's is taken */
	if (st->boot_id[0])
		store_set_meta(s, "boot_id", st->boot_id);
	else if (!state_boot_id(boot))
		store_set_meta(s, "boot_id", boot);
}

bool store_keep(struct store *s, bool keep)
{
	bool old = s->keep;

	s->keep = keep;
	return old;
}

void store_poison(struct store *s)
{
	s->oom = true;
}

size_t store_pending(const struct store *s)
{
	return s->n;
}

/* --- committing ----------------------------------------------------------- */

static int step(struct store *s, enum stmt_id id)
{
	sqlite3_stmt *st = s->stmt[id];
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : rc;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
	if (v)
		sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, i);
}

static int exec_runtime(struct store *s, const struct rec *n)
{
	sqlite3_stmt *st = s->stmt[S_PUT_RUNTIME];

	sqlite3_bind_int64(st, 1, (sqlite3_int64)n->key);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)n->rt.netns);
	bind_text(st, 3, state_proto_name(n->rt.proto));
	sqlite3_bind_int(st, 4, n->rt.start);
	sqlite3_bind_int(st, 5, n->rt.count);
	sqlite3_bind_int64(st, 6, n->rt.uid);
	sqlite3_bind_int64(st, 7, n->rt.pid);
	sqlite3_bind_int64(st, 8, (sqlite3_int64)n->a);
	return step(s, S_PUT_RUNTIME);
}

static int exec_resv(struct store *s, const struct rec *n)
{
	sqlite3_stmt *st = s->stmt[S_PUT_RESV];
	int rc;

	if (n->kind == R_RUNTIME)
		return exec_runtime(s, n);
	sqlite3_bind_int64(st, 1, (sqlite3_int64)n->key);
	bind_text(st, 2, "persistent");
	sqlite3_bind_int64(st, 3, (sqlite3_int64)n->r.netns);
	bind_text(st, 4, state_proto_name(n->r.proto));
	sqlite3_bind_int(st, 5, n->r.start);
	sqlite3_bind_int(st, 6, n->r.count);
	bind_text(st, 7, state_mode_name(n->r.mode));
	bind_text(st, 8, n->r.name);
	if (n->r.request_id) {
		bind_text(st, 9, n->r.request_id);
		sqlite3_bind_int64(st, 10, n->r.request_uid);
	}
	sqlite3_bind_int64(st, 13, (sqlite3_int64)n->a);
	if ((rc = step(s, S_PUT_RESV)))
		return rc;
	for (size_t g = 0; g < n->r.n_grants; g++) {
		st = s->stmt[S_PUT_GRANT];
		sqlite3_bind_int64(st, 1, (sqlite3_int64)n->key);
		bind_text(st, 2, state_grant_name(n->r.grants[g].type));
		sqlite3_bind_int64(st, 3, (sqlite3_int64)n->r.grants[g].id);
		bind_text(st, 4, n->r.grants[g].path);
		if ((rc = step(s, S_PUT_GRANT)))
			return rc;
	}
	return 0;
}

static int exec_rec(struct store *s, const struct rec *n)
{
	sqlite3_stmt *st;

	if (n->nomem)
		return SQLITE_NOMEM;
	switch (n->kind) {
	case R_RESV:
	case R_RUNTIME:
		return exec_resv(s, n);
	case R_DEL_RESV: {
		/* durable: a persistent one (runtime ones are in their own table) */
		int which = n->durable ? S_DEL_RESV : S_DEL_RUNTIME, rc;

		sqlite3_bind_int64(s->stmt[S_DEL_ATTACHED], 1, (sqlite3_int64)n->key);
		if ((rc = step(s, S_DEL_ATTACHED)))
			return rc;
		sqlite3_bind_int64(s->stmt[which], 1, (sqlite3_int64)n->key);
		return step(s, which);
	}
	case R_MODE:
		st = s->stmt[S_SET_MODE];
		sqlite3_bind_int64(st, 1, (sqlite3_int64)n->key);
		bind_text(st, 2, state_mode_name((uint8_t)n->a));
		return step(s, S_SET_MODE);
	case R_ATTACH:
		st = s->stmt[S_PUT_ATTACH];
		sqlite3_bind_int64(st, 1, (sqlite3_int64)n->key);
		bind_text(st, 2, state_proto_name((uint8_t)n->a));
		sqlite3_bind_int64(st, 3, (sqlite3_int64)n->at.token);
		bind_text(st, 4, n->at.path);
		bind_text(st, 5, state_confine_name(n->at.confine));
		sqlite3_bind_int(st, 6, n->at.by_admin);
		sqlite3_bind_int64(st, 7, n->at.by_uid);
		return step(s, S_PUT_ATTACH);
	case R_DEL_ATTACH:
		st = s->stmt[S_DEL_ATTACH];
		sqlite3_bind_int64(st, 1, (sqlite3_int64)n->key);
		bind_text(st, 2, state_proto_name((uint8_t)n->a));
		return step(s, S_DEL_ATTACH);
	case R_NETNS:
		st = s->stmt[S_PUT_NETNS];
		sqlite3_bind_int64(st, 1, (sqlite3_int64)n->key);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)n->ns.inode);
		sqlite3_bind_int(st, 3, n->ns.nsid);
		bind_text(st, 4, n->ns.path);
		return step(s, S_PUT_NETNS);
	case R_DEL_NETNS:
		sqlite3_bind_int64(s->stmt[S_DEL_NETNS], 1, (sqlite3_int64)n->key);
		return step(s, S_DEL_NETNS);
	case R_META:
		if (!n->k)
			return SQLITE_NOMEM;
		bind_text(s->stmt[S_PUT_META], 1, n->k);
		bind_text(s->stmt[S_PUT_META], 2, n->v);
		return step(s, S_PUT_META);
	case R_PUT_OWNED:
		st = s->stmt[S_PUT_OWNED];
		sqlite3_bind_int64(st, 1, (sqlite3_int64)n->key);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)n->a);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)n->b);
		return step(s, S_PUT_OWNED);
	case R_DEL_OWNED:
		st = s->stmt[S_DEL_OWNED];
		sqlite3_bind_int64(st, 1, (sqlite3_int64)n->key);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)n->a);
		return step(s, S_DEL_OWNED);
	case R_CLEAR_BOOT: {
		int rc = step(s, S_CLEAR_OWNED);

		return rc ? rc : step(s, S_CLEAR_RUNTIME);
	}
	}
	return SQLITE_MISUSE;
}

int store_commit(struct store *s, char *err, size_t errlen)
{
	bool durable = false;
	int rc = 0, ret;

	if ((ret = store_check_wait(s, err, errlen))) {
		drop_recs(s, true);
		return ret;
	}
	if (s->oom) {
		s->oom = false;
		drop_recs(s, false);
		return fail(err, errlen, -ENOMEM, "%s: out of memory (nothing of this change was written)", s->path);
	}
	if (!s->head)
		return 0;
	for (struct rec *n = s->head; n; n = n->next)
		durable |= n->durable;
	if ((rc = step(s, S_BEGIN)))
		goto fail;
	for (struct rec *n = s->head; n && !rc; n = n->next)
		rc = exec_rec(s, n);
	if (!rc && !(rc = step(s, S_COMMIT))) {
		drop_recs(s, true);
		/* the syncer's fdatasync makes it durable (without one, synchronous=FULL did) */
		s->sync.dirty |= durable && s->sync.bg.running;
		return 0;
	}
fail:
	ret = sql_fail(s, rc, "cannot save (nothing of this change was written)", err, errlen);
	if (!sqlite3_get_autocommit(s->db))
		step(s, S_ROLLBACK);
	drop_recs(s, false);
	return ret;
}

uint64_t store_size(const struct store *s)
{
	char wal[PATH_MAX + 32];
	struct stat sb;
	uint64_t n = 0;

	if (stat(s->path, &sb) == 0)
		n += (uint64_t)sb.st_size;
	snprintf(wal, sizeof(wal), "%s-wal", s->path);
	if (stat(wal, &sb) == 0)
		n += (uint64_t)sb.st_size;
	return n;
}
