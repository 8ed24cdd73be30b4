/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * apply.h - declarative reservations: a file of named persistent
 * reservations and cgroup attachments, and the plan that brings the agent's
 * state in line with it (portresctl apply, portresd --apply).
 *
 * The file (JSON; "version" optional, 1):
 *
 *   {
 *     "version": 1,
 *     "reservations": [
 *       { "name": "kubelet",   "proto": "tcp", "ports": 10250 },
 *       { "name": "nodeports", "proto": "tcp", "ports": "30000-32767", "mode": "enforce",
 *         "grants": [ { "type": "cgroup", "path": "/sys/fs/cgroup/kubepods.slice" } ] },
 *       { "name": "dns",       "proto": "udp", "start": 5300, "count": 4, "mode": "audit",
 *         "grants": [ { "type": "uid", "id": 101 }, { "type": "gid", "id": 101 } ] },
 *       { "name": "sidecar",   "proto": "tcp", "ports": "15000-15090", "netns": "pod1" }
 *     ],
 *     "attachments": [
 *       { "cgroup": "/sys/fs/cgroup/system.slice/kubelet.service", "reservation": "kubelet",
 *         "confine": false },
 *       { "cgroup": "system.slice/coredns.service", "reservation": "dns", "confine": "all" }
 *     ]
 *   }
 *
 * A reservation has a name (required: it is what apply recognises it by), a
 * proto, its ports as "ports" (a port or "first-last") or "start"+"count", a
 * mode (default enforce), grants (as in the protocol, proto.h) and the
 * network namespace it lives in, "netns": a netns file, a name of
 * `ip netns` or "pid:PID" (netns_path.h; default: that of whoever applies
 * the file, the agent's for portresd --apply). Names are unique across
 * namespaces; ports only within one. An
 * attachment names a cgroup (absolute, or relative to the cgroup2 mount) and
 * a reservation by name, of the file or already known to the agent; a cgroup
 * may be listed twice, with a TCP and a UDP block. "confine": true confines
 * the protocols the cgroup has blocks for, "all" every protocol (portresctl
 * help attach).
 *
 * The plan compares the file with the agent's reservations (its "list"
 * reply; each entry's "attachments" as "show" gives them):
 *
 *   absent by name                       -> create
 *   same ports and grants, other mode    -> update the mode (token kept)
 *   other proto, ports, grants or netns  -> delete + create (a new token)
 *   identical                            -> nothing
 *   named, persistent, not in the file   -> delete, with prune only; refused while
 *                                           sockets are bound in it or cgroups are
 *                                           attached to it, unless force
 *                                           (apply_check_holders says first)
 *   attachment absent or different       -> attach (replacing the cgroup's
 *                                           block of that protocol)
 *   attachment of a named reservation
 *   the file does not list               -> detach that block, with prune only;
 *                                           never the transient cgroups of
 *                                           portresctl run
 *
 * Every conflict (overlaps with reservations the plan keeps, with each other,
 * unknown reservations, missing cgroups) is found before anything is done.
 * Steps run in an order that tries what may fail (creates) before what is
 * hard to undo (deletes); when one fails, those done are undone in reverse.
 * A deleted reservation that is restored gets a new token.
 */
#ifndef PORTRES_APPLY_H
#define PORTRES_APPLY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define APPLY_ERR_LEN 4096
/* The transient cgroups of `portresctl run` (<parent>/portresctl-run-<pid>): prune leaves them alone. */
#define APPLY_RUN_CGROUP_PREFIX "portresctl-run-"

struct apply_grant {
	uint32_t type;  /* enum portres_grant_type */
	uint64_t id;    /* when path is NULL */
	char *path;     /* cgroup grants by path */
};

struct apply_resv {
	char *name;
	char *netns;    /* the netns as the file names it; absolute once resolved; NULL: the default */
	uint64_t netns_inode; /* set by apply_file_resolve_netns; 0: not resolved */
	uint8_t proto;  /* IPPROTO_TCP or IPPROTO_UDP */
	uint8_t mode;   /* enum portres_mode */
	uint16_t start, count;
	size_t n_grants;
	struct apply_grant *grants;
};

struct apply_attach {
	char *cgroup;   /* absolute once loaded */
	char *resv;     /* a reservation's name */
	uint8_t confine; /* enum state_confine: false, true or "all" in the file */
};

struct apply_file {
	size_t n_resv;
	struct apply_resv *resv;
	size_t n_attach;
	struct apply_attach *attach;
};

/*
 * Reads and checks a file (relative cgroups are taken below cgroup_root).
 * 0, or -errno with err naming the file and the entry ("FILE: reservations[2].ports: ...").
 */
int apply_file_load(const char *path, const char *cgroup_root, struct apply_file *f, char *err, size_t errlen);
int apply_file_parse(const char *text, size_t len, const char *what, const char *cgroup_root,
		     struct apply_file *f, char *err, size_t errlen);
void apply_file_free(struct apply_file *f);
/*
 * Each reservation's "netns" becomes its absolute path and nsfs inode (stat).
 * 0, or -errno with err naming the entry and the path.
 */
int apply_file_resolve_netns(struct apply_file *f, const char *what, char *err, size_t errlen);

enum apply_action { APPLY_CREATE, APPLY_UPDATE, APPLY_DELETE, APPLY_ATTACH, APPLY_DETACH };

struct apply_step {
	enum apply_action action;
	char desc[256];   /* "create web tcp 8000-8009 enforce" */
	json_t *req;      /* the protocol request doing it */
	json_t *undo;     /* array of requests undoing it */
};

struct apply_plan {
	size_t n;
	struct apply_step *steps;
	size_t unchanged; /* reservations and attachments already as the file says */
};

struct apply_opts {
	bool prune;
	bool force;       /* prune deletes reservations even while they are in use */
	uint64_t netns_inode; /* the netns of reservations without "netns" (whoever applies); 0: unknown */
	bool check_cgroups; /* attachments' cgroups must exist (stat) */
};

/*
 * Plans f against current (the list reply or its "reservations" array).
 * 0, or -EADDRINUSE (overlap), -ENOENT (unknown reservation, missing cgroup),
 * -EINVAL, -ENOMEM with every conflict named in err.
 */
int apply_plan(const struct apply_file *f, const json_t *current, const struct apply_opts *o,
	       struct apply_plan *plan, char *err, size_t errlen);
void apply_plan_free(struct apply_plan *plan);
const char *apply_action_name(enum apply_action a);

/*
 * Sends one request: 0, or -errno with the agent's message in err. A request
 * with "netns" (an absolute path) goes with that netns opened (proto.h).
 */
typedef int (*apply_call_fn)(void *arg, json_t *req, char *err, size_t errlen);

/*
 * Asks the agent (a dry-run delete) whether each reservation the plan
 * deletes without force is free: no bound sockets, no attached cgroups.
 * 0, or the first -errno (-EBUSY: in use) with every refusal and its holders in err.
 */
int apply_check_holders(const struct apply_plan *plan, apply_call_fn call, void *arg, char *err, size_t errlen);

/*
 * Runs the steps in order. On a failure undoes the steps done, newest first,
 * and returns its -errno with err "<step>: <cause>; rolled back N changes"
 * (or naming what could not be undone). *done: the steps that took effect.
 */
int apply_execute(const struct apply_plan *plan, apply_call_fn call, void *arg, size_t *done, char *err,
		  size_t errlen);

#endif /* PORTRES_APPLY_H */
