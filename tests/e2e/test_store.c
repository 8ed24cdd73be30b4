// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_store.c - the agent's database (issue 10): state.json imported once
 * (versions 1 and 2), a database that cannot be used refused unchanged, a
 * full disk (ENOSPC, nothing half-done), and kill -9 in a burst of creates
 * (every acknowledged create is there, and maps, database and sysctl agree).
 */
#include <bpf/bpf.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "cli_helpers.h"
#include "loader.h"
#include "state.h"
#include "sysctl_ports.h"

/* the agent's files (user/portresd/store.h) */
#define STORE_FILE     "portres.db"
#define STORE_IMPORTED "state.json.imported"

TestSuite(store, .init = ag_setup, .fini = ag_teardown, .timeout = 120);

static void path_of(const char *name, char *out, size_t len)
{
	snprintf(out, len, "%s/%s", ag.state, name);
}

static void put(const char *name, const char *text)
{
	char path[400];
	FILE *f;

	path_of(name, path, sizeof(path));
	f = fopen(path, "w");
	cr_assert(f, "%s: %s", path, strerror(errno));
	fputs(text, f);
	fclose(f);
}

static char *slurp(const char *name, size_t *len)
{
	char path[400], *buf;
	struct stat sb;
	FILE *f;

	path_of(name, path, sizeof(path));
	if (stat(path, &sb) || !(f = fopen(path, "r")))
		return NULL;
	buf = calloc(1, (size_t)sb.st_size + 1);
	cr_assert(buf);
	*len = fread(buf, 1, (size_t)sb.st_size, f);
	fclose(f);
	return buf;
}

static uint64_t cgroup_id_of(const char *path)
{
	uint64_t id = 0;

	cr_assert_eq(portres_cgroup_id(path, &id), 0, "%s", path);
	return id;
}

/* --- import ----------------------------------------------------------------- */

Test(store, import_state_json_v1)
{
	char cg[4200], text[8192], *before, *after, *rows;
	size_t n_before, n_after;
	portres_token_t t;
	json_t *l, *web;

	cli_cgroup("web", cg, sizeof(cg));
	snprintf(text, sizeof(text),
		 "{\"version\":1,\"reservations\":["
		 "{\"token\":\"00000000000000a1\",\"proto\":\"tcp\",\"start\":8000,\"count\":10,\"name\":\"web\","
		 "\"mode\":\"enforce\",\"grants\":[{\"type\":\"uid\",\"id\":1234}]},"
		 "{\"token\":\"00000000000000a2\",\"proto\":\"udp\",\"start\":5353,\"count\":1,\"mode\":\"audit\"}],"
		 "\"attachments\":[{\"path\":\"%s\",\"cgroup_id\":%" PRIu64 ",\"token\":\"00000000000000a1\","
		 "\"confine\":true}],\"sysctl_added\":\"8000-8009,5353\"}",
		 cg, cgroup_id_of(cg));
	put("state.json", text);
	before = slurp("state.json", &n_before);
	ag_sysctl_set("8000-8009,5353");
	ag_start(NULL);
	cr_assert(ag_log_has("made from"), "the agent does not say it imported the state file");

	/* the file is kept beside the database, renamed and unchanged */
	cr_assert_null(slurp("state.json", &n_after), "state.json is still there");
	after = slurp(STORE_IMPORTED, &n_after);
	cr_assert(after && n_after == n_before && !memcmp(after, before, n_before), "state.json.imported differs");
	free(before);
	free(after);

	/* the agent has it all */
	cr_assert_eq(portres_lookup_persistent(IPPROTO_TCP, 8000, 10, &t), 0);
	cr_assert_eq(t, 0xa1);
	cr_assert_eq(portres_lookup_persistent(IPPROTO_UDP, 5353, 1, &t), 0);
	cr_assert_eq(t, 0xa2);
	l = ag_req("{\"v\":1,\"op\":\"list\"}", -1);
	web = ag_named(l, "web");
	cr_assert(web, "%s", json_dumps(l, 0));
	cr_assert_eq(json_integer_value(json_object_get(json_array_get(json_object_get(web, "grants"), 0), "id")), 1234);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(web, "attachments"), 0),
							   "path")) ?: "", cg);
	json_decref(l);
	cr_assert_eq(ag_bind(IPPROTO_TCP, 8005, NULL), -EACCES);
	cr_assert_str_eq(ag_sysctl(), "5353,8000-8009");

	/* and so has the database, one row per object */
	rows = ag_db("SELECT printf('%016x', token), kind, proto, start, count, mode, name FROM reservations ORDER BY token;"
		     "SELECT type, id FROM grants; SELECT path, proto, confine FROM attachments;"
		     "SELECT netns, start, last FROM sysctl_owned ORDER BY start");
	snprintf(text, sizeof(text),
		 "00000000000000a1|persistent|tcp|8000|10|enforce|web\n"
		 "00000000000000a2|persistent|udp|5353|1|audit|\n"
		 "uid|1234\n%s|tcp|true\n0|5353|5353\n0|8000|8009\n", cg);
	cr_assert_str_eq(rows, text);
	free(rows);

	/* a restart reads the database, not the file */
	ag_kill9();
	ag_start(NULL);
	cr_assert_eq(portres_lookup_persistent(IPPROTO_TCP, 8000, 10, &t), 0);
	cr_assert_eq(t, 0xa1);
}

Test(store, import_state_json_v2)
{
	char cg[4200], text[8192], boot[STATE_BOOT_ID_LEN + 1], *rows;
	portres_token_t t;
	json_t *r;

	cr_assert_eq(state_boot_id(boot), 0);
	cli_cgroup("pod", cg, sizeof(cg));
	snprintf(text, sizeof(text),
		 "{\"version\":2,\"boot_id\":\"%s\",\"reservations\":["
		 "{\"token\":\"00000000000000b1\",\"proto\":\"tcp\",\"start\":9000,\"count\":4,\"name\":\"api\","
		 "\"mode\":\"enforce\",\"request\":{\"id\":\"0123456789abcdef0123456789abcdef\",\"uid\":0}},"
		 "{\"token\":\"00000000000000b2\",\"proto\":\"tcp\",\"start\":15000,\"count\":11,\"name\":\"oci-web.tcp\","
		 "\"mode\":\"enforce\",\"netns\":4711}],"
		 "\"netns\":[{\"cookie\":4711,\"inode\":4026532178,\"nsid\":3,\"path\":\"/run/netns/gone\","
		 "\"sysctl_added\":\"15000-15010\"}],"
		 "\"attachments\":[{\"path\":\"%s\",\"cgroup_id\":%" PRIu64 ",\"token\":\"00000000000000b1\","
		 "\"confine\":\"all\",\"made_by\":{\"admin\":false,\"uid\":4321}}],\"sysctl_added\":\"9000-9003\"}",
		 boot, cg, cgroup_id_of(cg));
	put("state.json", text);
	ag_sysctl_set("9000-9003");
	ag_start(NULL);
	cr_assert_eq(portres_lookup_persistent(IPPROTO_TCP, 9000, 4, &t), 0);
	cr_assert_eq(t, 0xb1);
	/* the create's request id came along: its retry gets the same token */
	r = ag_req("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":9000,\"count\":4,\"name\":\"api\","
		   "\"request_id\":\"0123456789abcdef0123456789abcdef\"}", -1);
	cr_assert_str_eq(ag_errno(r), "", "%s", json_dumps(r, 0));
	cr_assert_str_eq(json_string_value(json_object_get(r, "token")), "00000000000000b1");
	json_decref(r);
	/* the netns entry came along, and its namespace is gone: its reservation ended at start */
	cr_assert(ag_log_has("its network namespace is gone"));
	rows = ag_db("SELECT printf('%016x', token), netns, request_id, request_uid FROM reservations ORDER BY token;"
		     "SELECT count(*) FROM netns;"
		     "SELECT path, confine, made_by_admin, made_by_uid FROM attachments;"
		     "SELECT netns, start, last FROM sysctl_owned ORDER BY netns;"
		     "SELECT value FROM meta WHERE key = 'boot_id'");
	snprintf(text, sizeof(text),
		 "00000000000000b1|0|0123456789abcdef0123456789abcdef|0\n"
		 "0\n"
		 "%s|all|0|4321\n"
		 "0|9000|9003\n%s\n", cg, boot);
	cr_assert_str_eq(rows, text);
	free(rows);
	{
		size_t n;
		char *kept = slurp(STORE_IMPORTED, &n);

		cr_assert(kept && strstr(kept, "/run/netns/gone"), "state.json.imported lost the netns entry");
		free(kept);
	}
	cr_assert_str_eq(ag_sysctl(), "9000-9003");
}

/* A state.json that cannot be imported stops the agent; nothing is made. */
Test(store, bad_state_json_refused)
{
	char path[400];

	put("state.json", "{\"version\":1,\"reservations\":[{\"token\":\"00000000000000aa\",\"proto\":\"tcp\",");
	cr_assert_neq(ag_run(NULL), 0);
	path_of("state.json", path, sizeof(path));
	cr_assert(ag_log_has(path) && ag_log_has("refusing to start"));
	path_of(STORE_FILE, path, sizeof(path));
	cr_assert_neq(access(path, F_OK), 0, "a database was made from a torn state file");
}

/* --- a database that cannot be used ---------------------------------------- */

static void sql(const char *path, const char *text)
{
	sqlite3 *db;
	char *err = NULL;

	cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(db, text, NULL, NULL, &err), SQLITE_OK, "%s: %s", text, err);
	sqlite3_close(db);
}

/* The agent refuses to start, naming the file and the cause, and leaves it as it was. */
static void refused(const char *cause)
{
	char path[400], *before, *after;
	size_t n_before, n_after;
	struct stat st0, st1;

	path_of(STORE_FILE, path, sizeof(path));
	before = slurp(STORE_FILE, &n_before);
	cr_assert(before);
	cr_assert_eq(stat(path, &st0), 0);
	cr_assert_neq(ag_run(NULL), 0, "the agent started with a database that is %s", cause);
	cr_assert(ag_log_has(path), "the message does not name %s", path);
	cr_assert(ag_log_has(cause), "the message does not say \"%s\"", cause);
	cr_assert(ag_log_has("refusing to start"));
	after = slurp(STORE_FILE, &n_after);
	cr_assert(after && n_after == n_before && !memcmp(after, before, n_before), "%s was changed", path);
	cr_assert_eq(stat(path, &st1), 0);
	cr_assert_eq(st0.st_ino, st1.st_ino, "%s was replaced", path);
	free(before);
	free(after);
}

Test(store, unusable_database_refused_unchanged)
{
	char path[400], wal[420], shm[420];
	portres_token_t t;
	int fd;

	path_of(STORE_FILE, path, sizeof(path));
	snprintf(wal, sizeof(wal), "%s-wal", path);
	snprintf(shm, sizeof(shm), "%s-shm", path);

	put(STORE_FILE, "this is not a database, and it is longer than a header of one: 0123456789abcdef\n");
	refused("not a database");
	put(STORE_FILE, "");
	refused("empty file");
	unlink(path);
	sql(path, "CREATE TABLE t (a); INSERT INTO t VALUES (1)");
	refused("not a portres database");
	unlink(path);

	/* a real one, then a schema from the future */
	ag_start(NULL);
	for (int i = 0; i < 50; i++)
		cr_assert_eq(portres_create_persistent(IPPROTO_TCP, (uint16_t)(20000 + i * 2), 1, &t), 0);
	ag_stop();
	{
		char *v = ag_db("PRAGMA user_version"), back[64];

		cr_assert(v && atoi(v) > 0);
		snprintf(back, sizeof(back), "PRAGMA user_version = %d", atoi(v));
		free(v);
		sql(path, "PRAGMA user_version = 99");
		refused("schema version 99");
		sql(path, back);
	}

	/* a page of the reservations table overwritten: quick_check finds it */
	unlink(wal);
	unlink(shm);
	fd = open(path, O_WRONLY);
	cr_assert(fd >= 0);
	{
		char junk[2048];

		memset(junk, 0x5a, sizeof(junk));
		/* page 2 on (4096-byte pages): the first of the tables, past the header page */
		cr_assert_eq(pwrite(fd, junk, sizeof(junk), 4096 + 8), (ssize_t)sizeof(junk));
	}
	close(fd);
	refused("corrupt");
}

/* --- older schemas upgraded in place ---------------------------------------------- */

/*
 * Schema 1 as the agents before schema 2 left it, made from what this agent
 * wrote: every reservation in one table keyed by its token (runtime rows
 * too), request ids unique, attachments with a foreign key.
 */
static const char schema_1_from_now[] =
	"CREATE TABLE reservations_1 (token INTEGER PRIMARY KEY,\n"
	"  kind TEXT NOT NULL CHECK (kind IN ('persistent', 'runtime')), netns INTEGER NOT NULL DEFAULT 0,\n"
	"  proto TEXT NOT NULL, start INTEGER NOT NULL, count INTEGER NOT NULL, mode TEXT NOT NULL,\n"
	"  name TEXT UNIQUE, request_id TEXT UNIQUE, request_uid INTEGER, uid INTEGER, pid INTEGER,\n"
	"  created INTEGER NOT NULL);\n"
	"INSERT INTO reservations_1 SELECT token, kind, netns, proto, start, count, mode, name, request_id,\n"
	"  request_uid, uid, pid, created FROM reservations;\n"
	"INSERT INTO reservations_1 (token, kind, netns, proto, start, count, mode, uid, pid, created)\n"
	"  SELECT token, 'runtime', netns, proto, start, count, 'enforce', uid, pid, created FROM runtime;\n"
	"DROP VIEW reservation_list;\n"
	"DROP TABLE runtime;\n"
	"DROP TABLE reservations;\n"
	"ALTER TABLE reservations_1 RENAME TO reservations;\n"
	"CREATE VIEW reservation_list AS SELECT printf('%016x', token) AS token, kind FROM reservations;\n"
	"CREATE TABLE attachments_1 (cgroup_id INTEGER NOT NULL, proto TEXT NOT NULL,\n"
	"  token INTEGER NOT NULL REFERENCES reservations (token) ON DELETE CASCADE, path TEXT NOT NULL,\n"
	"  confine TEXT NOT NULL, made_by_admin INTEGER NOT NULL DEFAULT 1, made_by_uid INTEGER NOT NULL DEFAULT 0,\n"
	"  PRIMARY KEY (cgroup_id, proto)) WITHOUT ROWID;\n"
	"INSERT INTO attachments_1 SELECT * FROM attachments;\n"
	"DROP TABLE attachments;\n"
	"ALTER TABLE attachments_1 RENAME TO attachments;\n"
	"CREATE INDEX attachments_token ON attachments (token);\n"
	"PRAGMA user_version = 1;\n";

/*
 * A schema-1 database with a persistent reservation (a grant, an
 * attachment) and a runtime one whose anchor lives on: the agent upgrades
 * it at start (1 -> 2: the runtime row moves to its own table and is
 * adopted with its owner; 2 -> 3: persistent rows keyed by the order they
 * were made, the token unique), nothing else changes; the runtime row goes
 * when its anchor closes, a deleted reservation takes its grant and its
 * attachment.
 */
Test(store, schema_1_upgraded)
{
	char path[400], want[300], req[4400], cg[4200], *rows;
	struct portres_instance in;
	portres_token_t t;
	json_t *r;
	int anchor = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	path_of(STORE_FILE, path, sizeof(path));
	ag_start(NULL);
	r = ag_req("{\"v\":1,\"op\":\"create\",\"proto\":\"udp\",\"start\":9100,\"count\":2,\"grants\":"
		   "[{\"type\":\"uid\",\"id\":4321}]}", -1);
	cr_assert_str_eq(ag_errno(r), "", "create: %s", json_string_value(json_object_get(r, "error")));
	json_decref(r);
	cr_assert_eq(portres_lookup_persistent(IPPROTO_UDP, 9100, 2, &t), 0);
	cli_cgroup("upgraded", cg, sizeof(cg));
	snprintf(req, sizeof(req), "{\"v\":1,\"op\":\"attach\",\"cgroup\":\"%s\",\"token\":\"%016" PRIx64 "\"}", cg,
		 (uint64_t)t);
	r = ag_req(req, -1);
	cr_assert_str_eq(ag_errno(r), "", "attach: %s", json_string_value(json_object_get(r, "error")));
	json_decref(r);
	cr_assert_eq(portres_acquire(anchor, &(struct portres_range){ 0, 4 }, &in), 0, "%s", strerror(errno));
	ag_stop();
	sql(path, schema_1_from_now);
	rows = ag_db("SELECT kind, count(*) FROM reservations GROUP BY kind");
	cr_assert_str_eq(rows, "persistent|1\nruntime|1\n", "the schema-1 database made: %s", rows);
	free(rows);

	ag_start(NULL);
	rows = ag_db("PRAGMA user_version; SELECT kind, count(*) FROM reservations GROUP BY kind;"
		     "SELECT printf('%016x', token), start, count, uid = 0 FROM runtime;"
		     "SELECT type, id FROM grants; SELECT printf('%016x', token) FROM attachments;"
		     "SELECT kind FROM reservation_list ORDER BY kind;"
		     "SELECT name FROM pragma_table_info('reservations') WHERE pk = 1;"
		     "SELECT count(*) FROM pragma_index_list('reservations') i, pragma_index_info(i.name) c "
		     "WHERE c.name = 'request_id'");
	snprintf(want, sizeof(want), "%d\npersistent|1\n%016" PRIx64 "|%u|4|1\nuid|4321\n%016" PRIx64
		 "\npersistent\nruntime\nid\n0\n", 3, (uint64_t)in.token, in.range.start, (uint64_t)t);
	cr_assert_str_eq(rows, want, "after the upgrade: %s", rows);
	free(rows);
	/* adopted: the block is the anchor's, and its owner's */
	cr_assert(ag_has_token(in.token), "the runtime reservation was not adopted");
	close(anchor);
	cr_assert(ag_wait_gone(in.token), "the runtime reservation outlived its anchor");
	rows = ag_db("SELECT count(*) FROM runtime; SELECT count(*) FROM attachments");
	cr_assert_str_eq(rows, "0\n1\n", "after the anchor closed: %s", rows);
	free(rows);
	/* a persistent reservation's delete takes its attachment (no foreign key does it now) */
	cr_assert_eq(portres_delete_persistent(IPPROTO_UDP, 9100, 2), 0);
	rows = ag_db("SELECT count(*) FROM reservations; SELECT count(*) FROM grants; SELECT count(*) FROM attachments");
	cr_assert_str_eq(rows, "0\n0\n0\n", "after the delete: %s", rows);
	free(rows);
}

/* --- a full disk ---------------------------------------------------------------- */

Test(store, full_disk_enospc_nothing_half_done)
{
	char fill[400], *rows, want[64];
	uint16_t port = 30000, failed = 0;
	portres_token_t t;
	int fd, err = 0;

	/* a small filesystem of the test's own (its mount namespace) for the state directory */
	cr_assert_eq(mount("tmpfs", ag.state, "tmpfs", 0, "size=1m,mode=0700"), 0, "%s", strerror(errno));
	ag_start(NULL);
	cr_assert_eq(portres_create_persistent(IPPROTO_TCP, 8000, 10, &t), 0);
	path_of("fill", fill, sizeof(fill));
	fd = open(fill, O_WRONLY | O_CREAT, 0600);
	cr_assert(fd >= 0);
	{
		char block[4096] = { 0 };

		while (write(fd, block, sizeof(block)) > 0)
			;
	}
	close(fd);
	/* creates until the database needs a page it cannot have */
	for (int i = 0; i < 4000 && !err; i++, port++)
		if (portres_create_persistent(IPPROTO_TCP, port, 1, &t))
			err = errno;
	cr_assert_eq(err, ENOSPC, "errno %s after %u creates", strerror(err), port - 30000);
	failed = (uint16_t)(port - 1);
	/* nothing of it: not in the table, the maps, the sysctl, the database */
	cr_assert_eq(portres_lookup_persistent(IPPROTO_TCP, failed, 1, &t), -1);
	cr_assert_eq(errno, ENOENT);
	cr_assert_eq(ag_bind(IPPROTO_TCP, failed, NULL), 0, "port %u is enforced", failed);
	snprintf(want, sizeof(want), "%u", failed);
	{
		struct portset s;

		cr_assert_eq(portset_parse(ag_sysctl(), &s), 0);
		cr_assert(!portset_test(&s, failed), "port %u is in ip_local_reserved_ports: %s", failed, ag_sysctl());
		cr_assert(portset_test(&s, 8000) && (failed == 30000 || portset_test(&s, failed - 1)),
			  "ip_local_reserved_ports lost acknowledged blocks: %s (failed %u)", ag_sysctl(), failed);
	}
	snprintf(want, sizeof(want), "SELECT count(*) FROM reservations WHERE start = %u", failed);
	rows = ag_db(want);
	cr_assert_str_eq(rows, "0\n", "the database has the failed create");
	free(rows);
	/* the ones before it were acknowledged and are there */
	rows = ag_db("SELECT count(*) FROM reservations");
	snprintf(want, sizeof(want), "%u\n", failed - 30000 + 1);
	cr_assert_str_eq(rows, want);
	free(rows);
	/* room again: the same create works */
	unlink(fill);
	cr_assert_eq(portres_create_persistent(IPPROTO_TCP, failed, 1, &t), 0, "%s", strerror(errno));
	cr_assert_eq(ag_bind(IPPROTO_TCP, failed, NULL), -EACCES);
}

/* --- kill -9 in a burst of creates ----------------------------------------------- */

#define BURST_CLIENTS 10
#define BURST_EACH    100
#define BURST_PORT    20000

struct burst {
	portres_token_t token[BURST_CLIENTS * BURST_EACH]; /* acknowledged, or 0 */
	int acked;
};

static int burst_client(struct burst *b, int k)
{
	for (int i = 0; i < BURST_EACH; i++) {
		int n = k * BURST_EACH + i;
		portres_token_t t;

		/* the library retries a create whose reply it lost (the same request id) */
		if (portres_create_persistent(IPPROTO_TCP, (uint16_t)(BURST_PORT + n), 1, &t))
			continue;
		b->token[n] = t;
		__atomic_add_fetch(&b->acked, 1, __ATOMIC_SEQ_CST);
	}
	return 0;
}

/* The persistent reservations of the pinned maps, as "start=token" bits by port. */
static void pinned(portres_token_t *by_port, size_t n)
{
	char path[400];
	uint64_t key, next, *prev = NULL;
	struct portres_resv r;
	int fd;

	snprintf(path, sizeof(path), "%s/maps/portres_resv", ag.bpffs);
	fd = bpf_obj_get(path);
	cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
	while (bpf_map_get_next_key(fd, prev, &next) == 0) {
		if (bpf_map_lookup_elem(fd, &next, &r) == 0 && r.kind == PORTRES_KIND_PERSISTENT &&
		    r.start >= BURST_PORT && r.start < BURST_PORT + n) {
			cr_assert_eq(r.count, 1);
			by_port[r.start - BURST_PORT] = next;
		}
		key = next;
		prev = &key;
	}
	close(fd);
}

Test(store, kill9_in_a_burst_every_ack_kept)
{
	static portres_token_t maps[BURST_CLIENTS * BURST_EACH], db[BURST_CLIENTS * BURST_EACH];
	struct burst *b = mmap(NULL, sizeof(*b), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t kids[BURST_CLIENTS];
	struct portset sys, owned, want;
	char *rows, *line;
	int status, killed_at;

	cr_assert(b != MAP_FAILED);
	memset(b, 0, sizeof(*b));
	ag_start(NULL);
	fflush(NULL);
	for (int k = 0; k < BURST_CLIENTS; k++) {
		kids[k] = fork();
		cr_assert(kids[k] >= 0);
		if (kids[k] == 0)
			_exit(burst_client(b, k));
	}
	/* kill -9 while the burst goes on, then a new agent (the clients retry meanwhile) */
	while (__atomic_load_n(&b->acked, __ATOMIC_SEQ_CST) < BURST_CLIENTS * BURST_EACH / 3)
		usleep(1000);
	ag_kill9();
	killed_at = __atomic_load_n(&b->acked, __ATOMIC_SEQ_CST);
	ag_start(NULL);
	for (int k = 0; k < BURST_CLIENTS; k++) {
		cr_assert_eq(waitpid(kids[k], &status, 0), kids[k]);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	cr_assert_lt(killed_at, BURST_CLIENTS * BURST_EACH, "the burst was over before the kill");

	/* after yet another restart: maps, database and sysctl agree, and hold every acknowledged create */
	ag_kill9();
	ag_start(NULL);
	pinned(maps, BURST_CLIENTS * BURST_EACH);
	rows = ag_db("SELECT start, token FROM reservations WHERE kind = 'persistent'");
	for (line = strtok(rows, "\n"); line; line = strtok(NULL, "\n")) {
		unsigned start;
		long long token;

		cr_assert_eq(sscanf(line, "%u|%lld", &start, &token), 2, "%s", line);
		if (start >= BURST_PORT && start < BURST_PORT + BURST_CLIENTS * BURST_EACH)
			db[start - BURST_PORT] = (portres_token_t)token;
	}
	free(rows);
	portset_clear(&want);
	for (int n = 0; n < BURST_CLIENTS * BURST_EACH; n++) {
		cr_assert_eq(maps[n], db[n], "port %d: maps %016" PRIx64 ", database %016" PRIx64, BURST_PORT + n,
			     maps[n], db[n]);
		if (b->token[n])
			cr_assert_eq(db[n], b->token[n], "port %d: acknowledged token %016" PRIx64 " is not there",
				     BURST_PORT + n, b->token[n]);
		if (db[n])
			portset_add(&want, (uint32_t)(BURST_PORT + n), 1);
	}
	cr_assert_eq(portset_parse(ag_sysctl(), &sys), 0);
	cr_assert_eq(memcmp(&sys, &want, sizeof(sys)), 0, "ip_local_reserved_ports: %s", ag_sysctl());
	/* the entries the database says portres added are exactly those */
	portset_clear(&owned);
	rows = ag_db("SELECT start, last FROM sysctl_owned WHERE netns = 0");
	for (line = strtok(rows, "\n"); line; line = strtok(NULL, "\n")) {
		unsigned lo, hi;

		cr_assert_eq(sscanf(line, "%u|%u", &lo, &hi), 2);
		portset_add(&owned, lo, hi - lo + 1);
	}
	free(rows);
	cr_assert_eq(memcmp(&owned, &want, sizeof(owned)), 0, "sysctl_owned differs from the reservations");
	munmap(b, sizeof(*b));
}

/* --- a create whose grant fails (issue 11 item 5) ----------------------------- */

/*
 * The grants map filled up: a create with grants fails with the map's errno
 * and a message, and leaves nothing (table, maps, grants, sysctl, database);
 * its name stays free. The old rollback counted a size_t down past 0 and
 * answered EIO "cannot save state" with an empty message.
 */
Test(store, create_rollback_when_a_grant_fails)
{
	struct portres_grant_key k = { .token = 0x5a5a, .type = PORTRES_GRANT_UID };
	char path[400], *rows, *sys_before;
	uint8_t one = 1;
	portres_token_t t;
	json_t *r;
	int fd, n = 0;

	ag_start(NULL);
	cr_assert_eq(portres_create_persistent(IPPROTO_TCP, 7000, 5, &t), 0);
	sys_before = strdup(ag_sysctl());
	snprintf(path, sizeof(path), "%s/maps/portres_grants", ag.bpffs);
	fd = bpf_obj_get(path);
	cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
	for (k.id = 1; bpf_map_update_elem(fd, &k, &one, BPF_NOEXIST) == 0; k.id++)
		n++;
	cr_assert_eq(errno, E2BIG, "filling the grants map: %s", strerror(errno));
	r = ag_req("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":8000,\"count\":10,\"name\":\"web\","
		   "\"grants\":[{\"type\":\"uid\",\"id\":1000},{\"type\":\"gid\",\"id\":1000}]}", -1);
	cr_assert_str_eq(ag_errno(r), "E2BIG", "%s", json_dumps(r, 0));
	cr_assert(strstr(json_string_value(json_object_get(r, "error")), "tcp 8000-8009"), "%s", json_dumps(r, 0));
	json_decref(r);
	/* nothing of it anywhere */
	cr_assert_eq(portres_lookup_persistent(IPPROTO_TCP, 8000, 10, &t), -1);
	cr_assert_eq(errno, ENOENT);
	cr_assert_eq(ag_bind(IPPROTO_TCP, 8005, NULL), 0);
	cr_assert_str_eq(ag_sysctl(), sys_before);
	rows = ag_db("SELECT count(*) FROM reservations WHERE start = 8000; SELECT count(*) FROM grants");
	cr_assert_str_eq(rows, "0\n0\n");
	free(rows);
	/* room again: the same create, name included, works */
	for (k.id = 1; k.id <= (uint64_t)n; k.id++)
		bpf_map_delete_elem(fd, &k);
	close(fd);
	r = ag_req("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":8000,\"count\":10,\"name\":\"web\","
		   "\"grants\":[{\"type\":\"uid\",\"id\":1000},{\"type\":\"gid\",\"id\":1000}]}", -1);
	cr_assert_str_eq(ag_errno(r), "", "%s", json_dumps(r, 0));
	json_decref(r);
	rows = ag_db("SELECT type, id FROM grants ORDER BY type");
	cr_assert_str_eq(rows, "gid|1000\nuid|1000\n");
	free(rows);
	free(sys_before);
}

/* --- an acknowledgement means durable: the WAL synced before the reply ------- */

struct traced {
	double t0, t1;   /* entry and exit, seconds */
	int tid, fd;     /* fd: of a request read or a reply sent */
	char what[16];   /* "wal-write", "wal-sync", "create" (a create read), "request" (another), "reply" */
};

/* The fd a call's first argument names ("sendto(58<UNIX:...>, ..."), or -1. */
static int first_fd(const char *call)
{
	const char *p = strchr(call, '(');

	return p && p[1] >= '0' && p[1] <= '9' ? atoi(p + 1) : -1;
}

static bool is(const struct traced *e, const char *what)
{
	return !strcmp(e->what, what);
}

/*
 * Reads strace -f -ttt -T -yy -s 256 output: the agent's writes and syncs of
 * its WAL, the creates it read and the replies carrying a token it sent, each
 * with when it began and ended (a call another thread interrupted is split
 * in two lines).
 */
static size_t read_trace(const char *path, struct traced *out, size_t cap)
{
	struct traced open_calls[16] = { 0 };
	char line[2048];
	size_t n = 0;
	FILE *f = fopen(path, "r");

	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f) && n < cap) {
		int tid, off = 0;
		double t, dur = 0;
		char *call, *T = strrchr(line, '<');
		const char *what = NULL;

		/* "PID TIME call", or "TIME call" while strace traces a single thread */
		if (strchr(line, ' ') < strchr(line, '.') && sscanf(line, "%d %lf %n", &tid, &t, &off) == 2)
			call = line + off;
		else if (sscanf(line, "%lf %n", &t, &off) == 1 && (tid = 0, 1))
			call = line + off;
		else
			continue;
		if (T)
			sscanf(T, "<%lf>", &dur);
		if (!strncmp(call, "<... ", 5)) {
			/* the end of a call begun on an earlier line */
			for (size_t i = 0; i < 16; i++)
				if (open_calls[i].tid == tid && open_calls[i].what[0]) {
					out[n] = open_calls[i];
					out[n].t1 = t;
					/* a read's data comes with its end */
					if (is(&out[n], "request") && strstr(call, "\\\"op\\\":\\\"create\\\""))
						snprintf(out[n].what, sizeof(out[n].what), "create");
					n++;
					open_calls[i].what[0] = '\0';
					break;
				}
			continue;
		}
		if ((!strncmp(call, "pwrite64(", 9) || !strncmp(call, "write(", 6)) && strstr(call, "-wal>"))
			what = "wal-write";
		else if ((!strncmp(call, "fdatasync(", 10) || !strncmp(call, "fsync(", 6)) && strstr(call, "-wal>"))
			what = "wal-sync";
		else if (!strncmp(call, "recvmmsg(", 9))
			what = strstr(call, "\\\"op\\\":\\\"create\\\"") ? "create" : "request";
		else if ((!strncmp(call, "sendto(", 7) || !strncmp(call, "sendmsg(", 8)) && strstr(call, "token"))
			what = "reply";
		if (!what)
			continue;
		if (strstr(call, "<unfinished ...>")) {
			for (size_t i = 0; i < 16; i++)
				if (!open_calls[i].what[0]) {
					open_calls[i] = (struct traced){ .t0 = t, .tid = tid, .fd = first_fd(call) };
					snprintf(open_calls[i].what, sizeof(open_calls[i].what), "%s", what);
					break;
				}
			continue;
		}
		out[n] = (struct traced){ .t0 = t, .t1 = t + dur, .tid = tid, .fd = first_fd(call) };
		snprintf(out[n++].what, sizeof(out[0].what), "%s", what);
	}
	fclose(f);
	return n;
}

/*
 * Whether reply r (of a create) left after a sync of the WAL that began once
 * its commit had written: the commit is the run of WAL writes the thread that
 * read the create made after reading it.
 */
static const struct traced *request_of(const struct traced *ev, size_t n, const struct traced *r)
{
	const struct traced *req = NULL;

	for (size_t i = 0; i < n; i++)
		if ((is(&ev[i], "create") || is(&ev[i], "request")) && ev[i].fd == r->fd && ev[i].t1 <= r->t0 &&
		    (!req || ev[i].t1 > req->t1))
			req = &ev[i];
	return req;
}

static bool reply_after_its_sync(const struct traced *ev, size_t n, const struct traced *req, const struct traced *r,
				 int *thread_syncs)
{
	double written = -1;
	size_t i;

	/* the first WAL write of that thread after the read, and the writes right after it */
	for (i = 0; i < n && written < 0; i++)
		if (is(&ev[i], "wal-write") && ev[i].tid == req->tid && ev[i].t0 >= req->t1)
			written = ev[i].t1;
	for (; i < n && written >= 0; i++) {
		if (ev[i].tid != req->tid || is(&ev[i], "wal-sync"))
			continue;
		if (!is(&ev[i], "wal-write"))
			break;
		written = ev[i].t1;
	}
	if (written < 0 || written > r->t0)
		return false;
	for (i = 0; i < n; i++)
		if (is(&ev[i], "wal-sync") && ev[i].t0 >= written && ev[i].t1 <= r->t0) {
			*thread_syncs += ev[i].tid != req->tid;
			return true;
		}
	return false;
}

#define ACK_CLIENTS 12
#define ACK_EACH    4

/*
 * "Done and durable": the reply to a persistent create leaves only after an
 * fdatasync of the WAL that began after the commit wrote its frames has
 * returned. Watched from outside, with strace on the agent's threads, for
 * creates from many clients at once (the agent syncs in a thread of its own
 * and goes on with the next batch meanwhile) and one alone (synced by the
 * loop itself): the order of the calls is the contract, not which thread
 * makes them.
 */
Test(store, create_acknowledged_only_after_its_wal_is_synced)
{
	char out[400], cmd[800], pid[16];
	static struct traced ev[16384];
	int status, go[2], checked = 0, late = 0, thread_syncs = 0;
	pid_t st, kids[ACK_CLIENTS];
	portres_token_t t;
	size_t n;

	cr_assert_eq(access("/usr/bin/strace", X_OK), 0, "strace (scripts/install-deps.sh test installs it)");
	ag_start(NULL);
	snprintf(out, sizeof(out), "%s/strace.out", ag.tmp);
	snprintf(pid, sizeof(pid), "%d", (int)ag.pid);
	/* a create first, so the WAL exists and the ones timed are like any later */
	cr_assert_eq(portres_create_persistent(IPPROTO_TCP, 41000, 2, &t), 0, "%s", strerror(errno));
	fflush(NULL);
	st = fork();
	cr_assert(st >= 0);
	if (st == 0) {
		execl("/usr/bin/strace", "strace", "-f", "-q", "-ttt", "-T", "-yy", "-s", "256", "-e",
		      "trace=pwrite64,write,fdatasync,fsync,sendto,sendmsg,recvmmsg", "-o", out, "-p", pid, (char *)NULL);
		_exit(127);
	}
	/* attached once strace wrote its first line: poke the agent until it does */
	for (int i = 0; i < 500; i++) {
		struct stat sb;

		portres_lookup_persistent(IPPROTO_TCP, 41000, 2, &t);
		if (stat(out, &sb) == 0 && sb.st_size > 0)
			break;
		usleep(10000);
	}
	/* one alone, then many at once */
	cr_assert_eq(portres_create_persistent(IPPROTO_TCP, 42000, 4, &t), 0, "%s", strerror(errno));
	cr_assert_eq(pipe(go), 0);
	for (int k = 0; k < ACK_CLIENTS; k++) {
		kids[k] = fork();
		cr_assert(kids[k] >= 0);
		if (kids[k] == 0) {
			char c;

			close(go[1]);
			if (read(go[0], &c, 1) < 0)
				_exit(2);
			for (int i = 0; i < ACK_EACH; i++)
				if (portres_create_persistent(IPPROTO_TCP, (uint16_t)(43000 + k * 10 + i), 1, &t))
					_exit(1);
			_exit(0);
		}
	}
	close(go[0]);
	close(go[1]); /* all go */
	for (int k = 0; k < ACK_CLIENTS; k++) {
		cr_assert_eq(waitpid(kids[k], &status, 0), kids[k]);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "client %d: status %d", k, status);
	}
	usleep(200000);
	kill(st, SIGINT);
	cr_assert_eq(waitpid(st, &status, 0), st);
	n = read_trace(out, ev, sizeof(ev) / sizeof(ev[0]));
	for (size_t i = 0; i < n; i++) {
		const struct traced *req = is(&ev[i], "reply") ? request_of(ev, n, &ev[i]) : NULL;

		/* replies to lookups carry a token too: only those that answer a create read on their fd count */
		if (!req || !is(req, "create"))
			continue;
		checked++;
		late += !reply_after_its_sync(ev, n, req, &ev[i], &thread_syncs);
	}
	snprintf(cmd, sizeof(cmd), "cat '%s' >&2", out);
	if ((late || checked < 1 + ACK_CLIENTS * ACK_EACH) && system(cmd)) {
		/* the trace is on stderr for the failures below */
	}
	cr_assert_geq(checked, 1 + ACK_CLIENTS * ACK_EACH, "%d replies traced (%zu calls; the trace is on stderr)",
		      checked, n);
	cr_expect_eq(late, 0, "%d of %d replies went before a sync of their commit's WAL writes", late, checked);
	cr_log_info("%d replies checked, %d after a sync of the syncer thread", checked, thread_syncs);
}
