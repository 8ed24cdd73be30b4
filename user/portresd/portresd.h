/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * portresd.h - the agent's internals, shared by its files:
 *
 *   main.c     flags, feature probe, start-up (load, adopt, reconcile), teardown
 *   server.c   the epoll loop: listening socket, clients, BPF events, signals
 *   ops.c      one handler per protocol op (proto.h), authorisation
 *   associate.c  the associate op: setsockopt(SOL_PORTRES)'s checks, then the socket's storage
 *   resv.c     the reservation table and its indexes, wildcard blocks, holders of ports
 *   netns.c    network namespaces: identity, getting in, sysctl merging, their end (nsids)
 *   batch.c    the turn's batch: undo list, waiting replies, deferred events; one commit
 *   store.c    the database (store.h): SQLite, one row per object
 *   events.c   the event sink: time and name stamped, the on-disk log, subscribers
 *   metrics.c  Prometheus text, served by the metrics op and --metrics-listen
 *   cgwatch.c  attachments of removed cgroups are dropped (inotify)
 *   autoapply.c  --apply FILE: applied at start and again whenever it changes
 *   log.c      one line per event on stderr, text or JSON; data-plane events rate-limited
 */
#ifndef PORTRESD_H
#define PORTRESD_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>

/* uthash reports allocation failures to its caller (resv.c) instead of exiting. */
#define HASH_NONFATAL_OOM 1
#define uthash_nonfatal_oom(elt) (resv_hash_oom = true)
extern bool resv_hash_oom;
#include <uthash.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "loader.h"
#include "proto.h"
#include "state.h"
#include "store.h"
#include "sysctl_ports.h"

#define PORTRESD_VERSION     "0.1.0"
#define PORTRESD_MAX_CLIENTS 1024    /* connections of unprivileged users, all together (--max-clients) */
#define PORTRESD_MAX_PER_UID 64      /* connections of one unprivileged uid (--max-clients-per-uid) */
#define PORTRESD_STALL_SEC   30      /* a client leaving messages unread this long is dropped (--stall-timeout) */
#define PORTRESD_IDLE_SEC    60      /* a silent client (not subscribed to events) is dropped */
#define PORTRESD_IDLE_EVICT_SEC 11   /* at a cap, a connection this idle may go (libportres reuses one for 5 s) */
#define PORTRESD_OUTQ_MAX    256     /* queued replies/events per client */
#define PORTRESD_SNDBUF      (256 * 1024) /* a client socket's send buffer; raised only to send one bigger reply */
#define PORTRESD_UNREAD_PER_UID (64 << 20) /* bytes of replies one unprivileged uid may leave unread */
#define PORTRESD_QUOTA       4096    /* runtime ports per uid (root is exempt) */
#define PORTRESD_EVENTS_LOG  (1 << 20) /* bytes of the events log before it is rotated (twice that kept) */

struct agent_opts {
	const char *cgroup;
	const char *bpffs;
	const char *socket;
	const char *state_dir;
	const char *admin_group;
	const char *metrics_listen;
	const char *apply_file;
	bool apply_prune;
	bool foreground;
	bool teardown;
	bool adopt_pins;      /* no state file but pins: rebuild the state from the maps */
	bool reset;           /* no state file but pins: remove their persistent reservations */
	bool json_log;
	int verbose;
	uint32_t quota;
	uint32_t max_clients;         /* unprivileged connections, all uids together */
	uint32_t max_clients_per_uid;
	uint32_t stall_timeout;       /* seconds */
	uint16_t user_lo, user_hi;    /* --user-ports; 0: from each netns's ip_local_port_range to 65535 */
	bool test_crash_after_save;   /* test hook, env PORTRESD_TEST_CRASH_AFTER_SAVE=create */
	uint64_t events_log_size; /* bytes per events log file; 0: no log */
};

struct resv;

/* Port -> reservation of one protocol in one netns, in pages made on first use. */
#define PORTIDX_PAGE 256
struct port_index {
	struct resv **page[65536 / PORTIDX_PAGE];
};

/* A network namespace portres has reservations in (netns.c). */
struct netns {
	uint64_t cookie;      /* what the data plane knows it by */
	uint64_t inode;       /* its nsfs inode, as lsns shows it; 0 when unknown (adopted runtime) */
	int32_t nsid;         /* its id in the agent's netns, whose RTM_DELNSID ends it; -1 none */
	int fd;               /* held for the agent's own and while runtime reservations live there; else -1 */
	char *path;           /* the path a client named it by, or NULL */
	char hint[64];        /* where a scan last found it (/proc/PID/ns/net) */
	bool own;             /* the agent's namespace: 0 in the database */
	bool in_store;        /* its row is in the database (persistent reservations live there) */
	bool lent;            /* fd is a request's descriptor, kept until the batch's end (batch_lend) */
	struct port_index idx[2];  /* [0] TCP, [1] UDP */
	struct portset used[2];    /* their ports, kept with idx */
	size_t n_resv, n_runtime;
	struct portset owned;      /* ports portres added to its sysctl */
	struct portset owned_db;   /* owned as the database has it */
	bool sysctl_dirty;         /* used changed: the sysctl is written at the batch's end */
	struct portset sysctl_now; /* the sysctl as read in batch sysctl_gen */
	uint16_t port_lo, port_hi; /* ip_local_port_range */
	uint32_t unpriv_start;     /* ip_unprivileged_port_start */
	bool v6only;               /* net.ipv6.bindv6only: new IPv6 sockets are V6ONLY */
	uint64_t sysctl_gen;       /* agent.batch_gen when read; 0: never */
	uint64_t ranges_gen;       /* the same for port_lo, port_hi, unpriv_start */
	struct portset owned_before; /* owned_db before this batch's commit (restored if it fails) */
	bool sysctl_ok;            /* read for this commit: it can be written */
	UT_hash_handle hh;         /* agent.ns_by_cookie */
};

/* One reservation, persistent or runtime, as the agent knows it. */
struct resv {
	uint64_t token;
	struct portres_resv r;
	uint32_t uid;         /* runtime: the acquirer's uid, for the quota */
	struct netns *ns;
	time_t created;
	struct state_resv *sr; /* persistent: name, grants (NULL for runtime) */
	uint32_t n_attach;    /* attachments to it (a->st.attach) */
	UT_hash_handle hh;    /* agent.by_token */
	UT_hash_handle hh_name; /* agent.by_name (named ones) */
	UT_hash_handle hh_req;  /* agent.by_request (created with a request id) */
};

/* Runtime ports held per uid, for the quota. */
struct uid_ports {
	uint32_t uid;
	uint64_t ports;
	UT_hash_handle hh;
};

/* Who sent a request. */
struct peer {
	pid_t pid;
	uid_t uid;
	gid_t gid;
	int ngroups;
	gid_t groups[64];
	uint64_t netns;       /* cookie of the caller's netns (its connection's); 0: the agent's */
	int conn;             /* the connection (SIOCGSKNS gives the caller's netns), or -1 */
};

struct batch;
struct mnl_socket;
struct cgwatch;
struct autoapply;
struct event_sub;

/* log.c: the rate limit of data-plane event lines (zero: no window yet). */
struct log_limit {
	struct timespec window;   /* start of the current second */
	unsigned in_window;       /* lines logged in it */
	unsigned long suppressed; /* events not logged since the last report */
};

/* events.c: the event sink (zero: no log open, no subscriber). */
struct events_stats {
	uint64_t emitted;
	uint64_t dropped_subscriber; /* a subscriber's queue was full */
	uint64_t dropped_log;        /* not written to the events log */
};
struct events {
	struct event_sub *subs;
	struct events_stats stats;
	bool log_open;            /* log_fd is <state-dir>/events.log */
	bool log_failed;          /* warned once; retried at the next event */
	int log_fd;
	off_t log_size;
};

struct agent {
	struct agent_opts opts;
	struct portres_loader *loader;
	struct store *store;
	struct state st;      /* attachments (st.attach); the reservations are in the table */
	gid_t admin_gid;      /* (gid_t)-1: no admin group on this system */
	struct resv *by_token;     /* the table (uthash heads) */
	struct resv *by_name;
	struct resv *by_request;
	struct uid_ports *by_uid;
	size_t n_resv, n_persistent;
	struct netns *ns_by_cookie;
	size_t n_ns;
	struct netns *own_ns;
	struct batch *batch;
	uint64_t batch_gen;   /* counts commits: what was read in another batch is read again */
	uint64_t tok_pool[32]; /* random tokens not handed out yet (resv_new_token) */
	unsigned tok_left;
	uint64_t nsfs_dev;    /* st_dev of nsfs files */
	struct mnl_socket *nl_req, *nl_watch; /* nsid requests; RTNLGRP_NSID */
	int nswatch_fd;       /* nl_watch's fd, or -1 */
	unsigned nl_seq;
	time_t started;
	int epfd;
	bool stop;
	uint64_t requests, errors, events_seen;
	uint64_t commits, commit_failures;
	uint64_t released_seen, released_events; /* data plane's count of anchor closes; RELEASED events received */
	long long sweep_looked_ms;                 /* when runtime_sweep last read that count (CLOCK_MONOTONIC_COARSE) */
	size_t n_clients, n_subscribers;
	void *mhd;            /* struct MHD_Daemon * */
	bool attach_dirty;    /* st.attach changed: cgwatch_sync at the end of the loop's turn */
	bool crash_after_commit; /* test hook (test_crash_after_save): killed once the batch is committed */
	struct events events;
	struct log_limit log_limit;
	struct {              /* failed commits, logged at most once a second (ops_commit) */
		uint64_t n;
		time_t logged;
	} commit_log;
	struct cgwatch *cgwatch;     /* NULL until cgwatch_open */
	struct autoapply *autoapply; /* NULL without --apply */
};

/* log.c */
enum log_level { LOG_ERR, LOG_WARN, LOG_INFO, LOG_DEBUG };
void log_setup(bool json, int verbose);
/* log_setup's verbose: -v 1, -vv 2. */
int log_verbosity(void);
/*
 * While held, lines are kept in memory and written together by log_flush
 * (the loop holds them for one turn: one write instead of one per line);
 * log_hold(false) flushes and writes each line at once again.
 */
void log_hold(bool on);
void log_flush(void);
void log_msg(enum log_level lvl, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* log_msg whose JSON line also carries fields (borrowed; may be NULL). */
void log_event(enum log_level lvl, const char *event, const json_t *fields, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/*
 * Data-plane events (deny, audit, exhausted) are logged at most
 * LOG_EVENTS_PER_SEC a second: false when this one is over that (it is
 * counted); log_events_flush, each turn of the loop, reports the count in one
 * line once its second is over (force: now, at exit).
 */
#define LOG_EVENTS_PER_SEC 10
bool log_event_allowed(struct log_limit *l);
void log_events_flush(struct log_limit *l, bool force);

/* resv.c: the table. Lookups are O(1) (token, name, one port), overlaps O(count of the block). */
struct resv *resv_find(struct agent *a, uint64_t token);
struct resv *resv_find_name(struct agent *a, const char *name);
/* The persistent reservation a create with this request id made, or NULL. */
struct resv *resv_find_request(struct agent *a, const char *id);
/* The reservation of proto holding port in ns, or NULL. */
struct resv *resv_at(struct netns *ns, uint8_t proto, uint16_t port);
struct resv *resv_find_range(struct netns *ns, uint8_t proto, uint16_t start, uint16_t count);
struct resv *resv_overlap(struct netns *ns, uint8_t proto, uint32_t start, uint32_t count);
/* Adds to the table (not the maps); sr (persistent, NULL for runtime) is taken. NULL on ENOMEM (sr freed). */
struct resv *resv_insert(struct agent *a, uint64_t token, const struct portres_resv *r, uint32_t uid,
			 struct netns *ns, struct state_resv *sr);
/* Takes r out of the table and frees it (not the maps). */
void resv_remove(struct agent *a, struct resv *r);
/* Empties the table (at exit). */
void resv_free_all(struct agent *a);
int resv_new_token(struct agent *a, uint64_t *token);
uint64_t resv_runtime_ports(struct agent *a, uint32_t uid);
json_t *resv_json(struct agent *a, const struct resv *r);
/* Iterates the table in insertion order. */
#define resv_foreach(a, r, tmp) HASH_ITER(hh, (a)->by_token, r, tmp)

/* netns.c */
int netns_own(struct agent *a);
void netns_release_all(struct agent *a);
struct netns *netns_find(struct agent *a, uint64_t cookie);
/* The netns of a runtime reservation's socket (or -1): its fd is held while runtime reservations live there. */
struct netns *netns_get(struct agent *a, uint64_t cookie, int sockfd);
/* An adopted runtime reservation's netns found again through its owner's /proc/PID/ns/net. */
void netns_adopt(struct agent *a, struct netns *ns, uint32_t pid);
/* Checks that fd is a netns (-EINVAL with msg otherwise) and reads its cookie and inode. */
int netns_identify(struct agent *a, int fd, uint64_t *cookie, uint64_t *inode, char *msg, size_t len);
/* The table's entry for a netns that persistent reservations go in: watched by an nsid. */
int netns_register(struct agent *a, int fd, uint64_t cookie, uint64_t inode, const char *path,
		   struct netns **out, char *msg, size_t len);
/* Forgets a netns without reservations; lets go of an fd no runtime reservation needs. */
void netns_gc(struct agent *a, struct netns *ns);
/*
 * "net:[4026532178] (/run/netns/x)", returned by value: the text is the
 * caller's (a temporary to the end of the full expression), netns_name(ns).s.
 */
struct netns_name {
	char s[PATH_MAX + 64];
};
struct netns_name netns_name(const struct netns *ns);
/* Adds netns_inode and netns_path (when known) to o. */
void netns_json(json_t *o, const struct netns *ns);
/* Runs fn inside ns (setns and back); -ENOENT when ns cannot be found. */
int netns_run(struct agent *a, struct netns *ns, int (*fn)(void *arg), void *arg);
/* The RTNLGRP_NSID socket (an fd for the loop, or -errno); ends the reservations of netns that died. */
int netns_watch_open(struct agent *a);
void netns_watch_run(struct agent *a);
/*
 * At start: the database's netns (st, as store_load read it) found again, or
 * their reservations dropped from st and the database (logged, evented).
 */
int netns_restore(struct agent *a, struct state *st, bool rebooted);
/* --teardown: portres's entries leave the sysctl of the database's other netns that can be found. */
void netns_teardown(struct agent *a, struct store_contents *c);
/* A netns's descriptor lent for a request is kept until the batch's end (its sysctl is written then). */
void batch_lend(struct agent *a, struct netns *ns, int fd);
/* The database's key of ns: 0 for the agent's own. */
static inline uint64_t netns_key(const struct netns *ns)
{
	return ns->own ? 0 : ns->cookie;
}
/* The database row of ns follows its persistent reservations (a row while it has some). */
void netns_store(struct agent *a, struct netns *ns);
/*
 * The sysctl of ns at a batch's end, in two steps around the commit:
 * sysctl_prepare reads it and records the ports about to be added as owned
 * (so a crash after the write never leaves entries of ours unknown);
 * sysctl_write writes it and records the ports that left. 0 or -errno.
 */
int netns_sysctl_prepare(struct agent *a, struct netns *ns);
int netns_sysctl_write(struct agent *a, struct netns *ns);
/* ns's ip_local_reserved_ports, read once per batch; NULL with *err. */
const struct portset *netns_sysctl_now(struct agent *a, struct netns *ns, int *err);
/* ns's ip_local_port_range and ip_unprivileged_port_start (port_lo, port_hi, unpriv_start), once per batch. */
int netns_ranges(struct agent *a, struct netns *ns);

/* Attachments (a->st.attach) keep their reservation's count (resv.n_attach); not the maps. */
int attach_add(struct agent *a, const struct state_attach *at);
void attach_del(struct agent *a, size_t i);
/* Ends a runtime reservation: maps, attachments, table, sysctl at the batch's end (idempotent). */
void runtime_end(struct agent *a, uint64_t token, const char *why);
/* Removes a reservation's grants and attachments and the reservation itself from the maps. */
void resv_unload(struct agent *a, struct resv *r);
/* Puts a table entry and its grants into the maps. */
int resv_load(struct agent *a, struct resv *r);
/* Ends runtime reservations whose RELEASED event was lost (once per loop turn). */
void runtime_sweep(struct agent *a);

/*
 * The ports unprivileged users may reserve in ns: --user-ports (default: the
 * low end of ns's ip_local_port_range to 65535), never below ns's
 * ip_unprivileged_port_start. Empty when *lo > *hi. 0 or -errno.
 */
int user_ports(struct agent *a, struct netns *ns, uint32_t *lo, uint32_t *hi);
/* Picks a free block within [lo, hi] for a wildcard acquire, in ns; 0 or -EADDRINUSE. */
int pick_block(struct agent *a, struct netns *ns, uint8_t proto, uint16_t count, uint32_t lo, uint32_t hi,
	       uint16_t *start);
/* sock_diag holders of [start, start+count) in ns: 0 none, -EADDRINUSE with msg, -errno. */
int ports_held(struct agent *a, struct netns *ns, uint8_t proto, uint16_t start, uint16_t count,
	       char *msg, size_t len);

/*
 * associate.c: associates the passed socket fd (TCP or UDP of proto, in
 * netns) with token if the caller may, as the setsockopt program would;
 * 0, or -errno with msg.
 */
int associate_socket(struct agent *a, const struct peer *p, int fd, uint8_t proto, uint64_t netns, uint64_t token,
		     char *msg, size_t len);

/* ops.c: root, or a member of the admin group (primary or supplementary). */
bool ops_is_admin(struct agent *a, const struct peer *p);
/*
 * batch.c: changes of one turn of the loop are applied at once (maps, table)
 * and recorded (store); batch_commit writes them in one transaction, then the
 * sysctl of each netns that changed, then delivers their events and replies.
 * A failed commit runs the undo list backwards: maps and table are as before.
 */
int batch_init(struct agent *a);
void batch_free(struct agent *a);
/*
 * fn(a, arg) undoes a change if the batch fails. After the commit or the
 * undo, drop(arg) (NULL: free) lets go of arg and fd (or -1) is closed.
 */
void batch_undo(struct agent *a, void (*fn)(struct agent *a, void *arg), void (*drop)(void *arg), void *arg,
		int fd);
/* An event of this batch (taken), delivered after the commit; dropped if the batch fails, unless infra. */
void batch_emit(struct agent *a, json_t *event);
/* The sysctl of ns is written at the end of the batch. */
void batch_sysctl(struct agent *a, struct netns *ns);
/* Changes that nobody asked for (a socket closed, a cgroup removed): kept across a failed commit. */
bool batch_infra(struct agent *a, bool on);
/* A reply waiting for the commit (reply taken); changed: it depends on the commit. */
typedef void (*batch_done_fn)(void *ctx, char *reply);
void batch_reply(struct agent *a, batch_done_fn done, void *ctx, char *reply, bool changed);
/* Undo entries so far (a request changed something when it grew). */
size_t batch_mark(const struct agent *a);
/* True when something waits for a commit. */
bool batch_open(const struct agent *a);
/*
 * Commits; 0 or -errno with err (then everything the batch did is undone
 * and its replies are errors). Its replies and events go out once the
 * commit is durable: with wait, before batch_commit returns; else when
 * batch_synced finds its sync finished (the store's sync fd is readable).
 */
int batch_commit(struct agent *a, char *err, size_t errlen, bool wait);
/* Replies and events of synced commits go out, in order; with wait, of every commit so far. */
void batch_synced(struct agent *a, bool wait);
/* True while replies wait for a sync (a reply given now would overtake them). */
bool batch_waiting(const struct agent *a);

/*
 * ops.c: handles one request; fd is the passed socket or -1. An events
 * request that follows sets *sub (NULL: the caller cannot take
 * subscriptions) to a subscription for events_sub_start.
 *
 * With done, the reply (malloc'd) goes to done(ctx, reply): at once when no
 * batch is open, else when ops_commit ends it (replies keep their order).
 * Reads are answered from what is committed: one that comes while a batch is
 * open commits it first. Without done (in-process callers) the request is
 * committed before ops_handle returns its reply.
 */
char *ops_handle(struct agent *a, const struct peer *p, const char *buf, size_t len, int fd,
		 struct event_sub **sub, batch_done_fn done, void *ctx);
/*
 * Ends the turn's batch (batch_commit), logging a failure: ops_commit
 * returns once its replies went out; ops_commit_async leaves them waiting
 * for the sync, and ops_synced, when the store's sync fd is readable,
 * sends those whose sync finished.
 */
void ops_commit(struct agent *a);
void ops_commit_async(struct agent *a);
void ops_synced(struct agent *a);
json_t *event_json(const struct portres_event *ev);
/* Writes the cgroup map entry of cgroup_id from its attachments (deletes it when none is left). */
int cgroup_map_sync(struct agent *a, uint64_t cgroup_id);

/* events.c: the event sink (operations emit; the server registers subscribers) */
/* Stamps event (taken) with its time and reservation name, logs it to disk, delivers it. */
void events_emit(struct agent *a, json_t *event);
/* The data plane's ring callback: releases end runtime reservations, the rest is emitted. */
int events_from_ring(const struct portres_event *ev, void *arg);
/*
 * The events op: *recent gets the kept events that req's filter lets through
 * (since, tail, name, types; none with "replay":false); unless "follow" is
 * false, *sub a subscription with the same filter. 0, or -errno with err.
 */
int events_request(struct agent *a, const json_t *req, json_t **recent, struct event_sub **sub, char *err,
		   size_t len);
/* deliver(ctx, text) takes text, a whole message; false when it was dropped. */
void events_sub_start(struct event_sub *s, bool (*deliver)(void *ctx, char *text), void *ctx);
void events_sub_free(struct event_sub *s);
void events_close(struct agent *a);

/* server.c */
int server_run(struct agent *a);
/* True when an agent answers on the socket at path. */
bool server_socket_answers(const char *path);

/* cgwatch.c: the inotify fd (or -errno); sync after attachments changed; events; fallback tick */
int cgwatch_open(struct agent *a);
void cgwatch_sync(struct agent *a);
void cgwatch_run(struct agent *a);
void cgwatch_tick(struct agent *a);
void cgwatch_close(struct agent *a);

/* autoapply.c: applies --apply FILE now and watches it (*ifd, *tfd for the loop; -1 if none) */
void autoapply_start(struct agent *a, int *ifd, int *tfd);
void autoapply_changed(struct agent *a);  /* inotify events: re-apply after a short settle */
void autoapply_timer(struct agent *a);    /* the settle time passed */
void autoapply_stop(struct agent *a);

/* metrics.c */
char *metrics_text(struct agent *a);
int metrics_start(struct agent *a, int *fd);
void metrics_run(struct agent *a);
void metrics_stop(struct agent *a);

#endif /* PORTRESD_H */
