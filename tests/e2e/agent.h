/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * agent.h - end-to-end fixture: the real portresd as a child process, in a
 * world of the test's own.
 *
 * ag_setup (Criterion .init) unshares a mount and network namespace (lo up),
 * so the test never touches the host's sysctls and a crash leaves no mount;
 * makes a mkdtemp directory with a private bpffs mount, the state directory
 * and the socket; creates a cgroup under the cgroup2 mount and moves the test
 * into it (programs are attached there); points PORTRES_SOCKET at the agent.
 * ag_teardown (.fini) kills the agent, unmounts, removes the cgroup and files
 * and the users test_user_new made. Stale cgroups and users of crashed earlier
 * runs are removed at setup.
 *
 * The agent binary: $PORTRESD_BIN, else build/portresd.
 */
#ifndef PORTRES_E2E_AGENT_H
#define PORTRES_E2E_AGENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "portres.h"
#include "users.h"

struct agent_fx {
	char tmp[256];
	char bpffs[300];
	char sock[300];
	char state[300];
	char log[300];
	char cgroup[4096];
	char home_cgroup[4096];
	pid_t pid;           /* the running agent, 0 if none */
	unsigned nofile;     /* non-zero: the agent starts with RLIMIT_NOFILE soft = hard = nofile */
	bool detach;         /* started without --foreground: it detaches once it serves */
};

extern struct agent_fx ag;

void ag_setup(void);
void ag_teardown(void);

/* Starts portresd with the fixture's flags plus extra (NULL-terminated); waits until it serves. */
void ag_start(const char *const *extra);
/* Runs portresd with the flags and extra to completion; its exit status, -1 if it still ran after 20 s (killed). */
int ag_run(const char *const *extra);
void ag_kill9(void);
void ag_stop(void);
/*
 * True if the agent's log contains text, within 2 s: the agent writes a
 * turn's log lines at the end of the turn, after what the test saw of it (a
 * reply, a closed connection) may have happened.
 */
bool ag_log_has(const char *text);
/* The same, waiting up to ms. */
bool ag_log_wait(const char *text, int ms);

/* Raw protocol: one connected client. */
int ag_connect(void);
/* Sends buf (len bytes) with fd (or -1) by SCM_RIGHTS, reading nothing: 0 or -errno. */
int ag_send(int c, const void *buf, size_t len, int fd);
/* Sends buf (len bytes) with fd (or -1); returns the reply parsed, or NULL. */
json_t *ag_raw(int c, const void *buf, size_t len, int fd);
/* Builds a request from a JSON text, sends it on a new connection, returns the reply. */
json_t *ag_req(const char *json_text, int fd);
/* The reservation named name in a list reply (borrowed from l), or NULL. */
json_t *ag_named(json_t *l, const char *name);
/* The errno name of a reply ("" for ok). */
const char *ag_errno(json_t *reply);

/* ip_local_reserved_ports of the test's netns. */
const char *ag_sysctl(void);
void ag_sysctl_set(const char *text);

/* The rows of a query on the agent's database (read-only), as "col|col\n" lines; malloc'd. */
char *ag_db(const char *sql);

/* Binds a fresh socket of proto (IPv4, 127.0.0.1) to port: 0 or -errno; *keep gets the fd if non-NULL. */
int ag_bind(int proto, uint16_t port, int *keep);

/*
 * Unprivileged cases run as real users (users.h): test_user_new makes one,
 * ag_teardown removes it (userdel), even when the test failed, and ag_setup
 * removes those of crashed runs.
 */
/* Runs fn in a child process as u (uid, gid, and the supplementary groups); its exit status. */
int ag_as_user(const struct test_user *u, int (*fn)(void *arg), void *arg, const gid_t *groups, int ngroups);
/* A child the test started and may leave running if it fails: ag_teardown kills it. */
void ag_track_child(pid_t pid);
void ag_kill_tracked(void);
/* Runs fn in a child process (same credentials); returns its exit status. */
int ag_in_child(int (*fn)(void *arg), void *arg);

/* Whether the pinned map (portres_resv, portres_cgroups, ...) has key; values up to 256 bytes. */
bool ag_map_has(const char *map, const void *key);
/* Whether the pinned portres_resv map has token (16 hex digits). */
bool ag_in_resv_map(const char *token);
/* Whether the agent's recent events hold one of this type about token (16 hex digits). */
bool ag_has_event(const char *type, const char *token);

/* Polls (up to 5 s) until the agent lists no reservation with this token. */
bool ag_wait_gone(portres_token_t token);
bool ag_has_token(portres_token_t token);

#endif
