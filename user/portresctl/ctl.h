/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ctl.h - what every portresctl subcommand shares: exit codes, the options
 * every command takes (--socket, --json, --help), the conversation with
 * portresd (user/common/proto.h), error reporting and argument parsing.
 *
 * Errors go to stderr as one line "portresctl: <what>: <cause>"; a command
 * returns CTL_OK, CTL_FAIL (the operation failed) or CTL_USAGE (bad command
 * line), which main() turns into the exit status.
 */
#ifndef PORTRESCTL_CTL_H
#define PORTRESCTL_CTL_H

#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

enum { CTL_OK = 0, CTL_FAIL = 1, CTL_USAGE = 2 };

struct ctl_opts {
	const char *socket;   /* --socket, $PORTRES_SOCKET, or the default */
	const char *cmd;      /* the subcommand being run */
	bool json;            /* -o json, -o jsonpath=..., --json: print data as JSON (ctl_print_json) */
	const char *jsonpath; /* -o jsonpath=TEMPLATE (output.c) */
	bool wide;            /* -o wide: tables with more columns */
	bool no_headers;      /* --no-headers: tables without their header line */
	int netns_fd;         /* --netns: the namespace, passed with the requests that take one; -1 */
	char netns_path[4096];
};
extern struct ctl_opts ctl;

/* Options every subcommand accepts; ctl_common_opt() handles them. */
#define CTL_OPT_JSON       0x100
#define CTL_OPT_SOCKET     0x101
#define CTL_OPT_NO_HEADERS 0x102
#define CTL_OPT_NETNS      0x103
#define CTL_COMMON_OPTIONS                                      \
	{ "json", no_argument, NULL, CTL_OPT_JSON },            \
	{ "output", required_argument, NULL, 'o' },             \
	{ "no-headers", no_argument, NULL, CTL_OPT_NO_HEADERS }, \
	{ "socket", required_argument, NULL, CTL_OPT_SOCKET },  \
	{ "help", no_argument, NULL, 'h' }
/* --netns PATH|NAME|pid:PID, for the commands that act in a network namespace */
#define CTL_NETNS_OPTION { "netns", required_argument, NULL, CTL_OPT_NETNS }

/*
 * getopt_long for a command: shortopts gets -o (and -h is the command's to
 * list); errors are left to ctl_common_opt, which names the option and
 * suggests the nearest one of longopts.
 */
int ctl_getopt(int argc, char *argv[], const char *shortopts, const struct option *longopts);
/*
 * Handles an option that is not the command's own: --json, -o, --no-headers,
 * --socket, --help, --netns (opened here; a bad one is a usage error) or a
 * getopt error. Returns false to go on parsing, true
 * when the command must return *status now (CTL_OK after --help, CTL_USAGE
 * on an error).
 */
bool ctl_common_opt(int c, int *status);
/* -o FORMAT: text, wide, json, jsonpath=TEMPLATE (output.c); 0 or CTL_USAGE after a message. */
int ctl_set_output(const char *spec);
/* The candidate nearest to word by edit distance, if near enough to be a typo; else NULL. */
const char *ctl_suggest(const char *word, const char *const *cands, size_t n);
/* Prints the command's usage (stdout for help, stderr otherwise). */
void ctl_usage(const char *cmd, bool to_stderr);
/* "portresctl: <fmt>" on stderr; returns CTL_FAIL. */
int ctl_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "portresctl: <cmd>: <fmt>" and a hint on stderr; returns CTL_USAGE. */
int ctl_bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* --- the agent ------------------------------------------------------------ */

/*
 * Sends one request (borrowed) and returns the reply when ok. On an error reply
 * prints "portresctl: <what>: <error>" (the agent's message) and returns NULL;
 * *err_out (may be NULL) gets the errno of the reply or of the transport.
 */
json_t *ctl_request(const char *what, json_t *req, int *err_out);
/* A request object {"v":1,"op":op}. */
json_t *ctl_req(const char *op);
/* Connection for a long conversation (events, apply); -1 with a message printed. */
int ctl_connect(void);
/* Closes the shared connection (a later request opens a new one). */
void ctl_disconnect(void);

/* --- arguments ------------------------------------------------------------ */

/* Each prints a usage error and returns -1 when s is not valid. */
int ctl_parse_proto(const char *s, const char **out);            /* "tcp" | "udp" */
int ctl_parse_port(const char *opt, const char *s, bool zero_ok, uint16_t *out);
int ctl_parse_count(const char *s, uint16_t *out);
int ctl_parse_token(const char *s, uint64_t *out);
int ctl_parse_name(const char *s);
int ctl_parse_mode(const char *s);
/*
 * Puts "token" or "name" into req (at most one given; one needed if required).
 * 0, or CTL_USAGE after a usage message.
 */
int ctl_set_selector(json_t *req, const char *token, const char *name, bool required);
/* An id from a number or a user/group name; -1 after a usage message. */
int ctl_parse_uid(const char *s, uint64_t *out);
int ctl_parse_gid(const char *s, uint64_t *out);

/* --- cgroups -------------------------------------------------------------- */

/* An absolute cgroup path: absolute as is, "./x" from the cwd, else below the cgroup2 mount. */
int ctl_cgroup_path(const char *in, char *out, size_t len);
/*
 * The path of a cgroup id (cgroup2_path, cached; best effort): NULL when
 * unknown. For old agents: replies carry the path as "cgroup" themselves.
 */
const char *ctl_cgroup_from_id(uint64_t id);

/* --- output --------------------------------------------------------------- */

/* Sorts a list reply's "reservations" by protocol (tcp first), then first port. */
void ctl_sort_reservations(json_t *arr);
/* Prints obj as one JSON document (pretty unless compact) on stdout, or through -o jsonpath=. */
void ctl_print_json(json_t *obj, bool compact);
/* Drops "v" and "ok" of a reply: what --json prints. */
json_t *ctl_reply_data(json_t *reply);
/* json_object_get + json_*_value with defaults. */
const char *ctl_jstr(const json_t *o, const char *key, const char *dflt);
long long ctl_jint(const json_t *o, const char *key, long long dflt);

/*
 * Tables like kubectl's and ss's: columns as wide as their cells, the header
 * left out with --no-headers, "-" for an empty cell. Rows are printed in the
 * order they were added.
 */
struct ctl_table;
struct ctl_table *ctl_table_new(const char *indent, size_t ncols, const char *const *headers);
void ctl_table_row(struct ctl_table *t, const char *const *cells);
void ctl_table_print(struct ctl_table *t);
void ctl_table_free(struct ctl_table *t);

#endif /* PORTRESCTL_CTL_H */
