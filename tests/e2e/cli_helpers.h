/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * cli_helpers.h - end-to-end tests of portresctl: the agent fixture of
 * agent.h (private namespaces, bpffs, cgroup, state, socket; the test process
 * in the agent's attach cgroup), plus running the real portresctl binary and
 * reading what it printed.
 *
 * cli_setup (.init) = ag_setup + ag_start. cli_teardown (.fini) kills what
 * cli_spawn started, empties and removes every cgroup below the test's
 * (children first), then ag_teardown.
 *
 * The binary: $PORTRESCTL_BIN, else build/portresctl (the agent: see agent.h).
 */
#ifndef PORTRES_E2E_CLI_HELPERS_H
#define PORTRES_E2E_CLI_HELPERS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "agent.h"

struct cli_result {
	int status;  /* exit status; 128+N if killed by signal N */
	char *out;   /* stdout, NUL-terminated */
	char *err;   /* stderr */
};

void cli_setup(void);
void cli_teardown(void);

/* Runs portresctl ARG... (NULL-terminated) with PORTRES_SOCKET of the fixture; 30 s at most. */
struct cli_result cli_ctl(const char *arg, ...) __attribute__((sentinel));
struct cli_result cli_ctlv(const char *const *argv);
void cli_result_free(struct cli_result *r);
/* stdout parsed as JSON (asserts it parses). */
json_t *cli_json(const struct cli_result *r);

/* Starts portresctl ARG... in the background, stdout+stderr into out_path; killed at teardown. */
pid_t cli_spawn(const char *out_path, const char *arg, ...) __attribute__((sentinel));
/* Waits for a cli_spawn'ed process (up to timeout_ms): its status as cli_ctl gives it, -1 on timeout. */
int cli_wait(pid_t pid, int timeout_ms);

/* A cli_result's exit status, with its output in the message when it is not want. */
#define CLI_ASSERT_STATUS(r, want) \
	cr_assert_eq((r).status, (want), "exit %d (want %d); stdout: %s; stderr: %s", (r).status, (want), (r).out, (r).err)

/* `portresctl list --json`, parsed. */
json_t *cli_list(void);
/* The "reservation" of `portresctl show SEL --json` (a new reference). */
json_t *cli_show(const char *sel);
/* Creates a persistent reservation through the CLI; returns its token (static buffer). */
const char *cli_create(const char *proto, unsigned start, unsigned count, const char *name);
/* A cgroup below the test's (created); path gets its absolute path. */
void cli_cgroup(const char *name, char *path, size_t len);
/* Runs fn(arg) in a child process moved into cgroup first; its exit status. */
int cli_in_cgroup(const char *cgroup, int (*fn)(void *arg), void *arg);

/* What `portresd --help` prints (malloc'd); asserts it exits 0. */
char *cli_agent_help(void);
/* Reads a whole file (malloc'd, "" if missing). */
char *cli_read(const char *path);
/* Polls (every 20 ms, up to timeout_ms) until path contains text. */
bool cli_wait_file(const char *path, const char *text, int timeout_ms);
/* The first TCP port listening on 127.0.0.1 (/proc/net/tcp), polling up to timeout_ms; 0 if none. */
uint16_t cli_wait_listener(int timeout_ms);
/* GET path from 127.0.0.1:port; returns the HTTP status (0 on failure), body into *body (malloc'd). */
int cli_http_get(uint16_t port, const char *path, char **body);
/* Writes text to a file in the fixture's temp directory; returns its path (static buffer). */
const char *cli_write_tmp(const char *name, const char *text);
/* The runtime reservation of the agent's list with this count, or NULL (borrowed from list). */
json_t *cli_find_runtime(json_t *list, unsigned count);

#endif /* PORTRES_E2E_CLI_HELPERS_H */
