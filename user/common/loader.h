/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * loader.h - puts portres's BPF programs and maps in place and edits them.
 *
 * Stages: open -> size maps -> load (reusing pinned maps) -> pin -> attach
 * (multi-attach cgroup links, pinned; a pinned link from an earlier agent is
 * re-pointed at the new program, so enforcement never stops). Every program
 * is linked at the attach root except portres_create, which
 * portres_cgroup_attach links at each attached cgroup (links/create-<id>),
 * and portres_setsopt, which is neither loaded nor linked in association
 * mode PORTRES_ASSOC_AGENT (its pinned link, if an earlier loader made one,
 * is removed).
 *
 * Every function returns 0 or a negative errno; nothing here prints except
 * through the libbpf print callback the caller installs.
 */
#ifndef PORTRES_LOADER_H
#define PORTRES_LOADER_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include "portres_abi.h"

struct portres_loader;

/*
 * Who associates sockets with tokens. Any cgroup setsockopt program costs
 * every setsockopt(2) of the sockets below it more than the program itself
 * (the kernel copies the option in and takes the socket lock around it);
 * without one, setsockopt(SOL_PORTRES, PORTRES_ASSOCIATE) fails with
 * ENOPROTOOPT and the agent associates (portres_sk_associate).
 */
enum portres_assoc_mode {
	PORTRES_ASSOC_SOCKOPT = 0, /* portres_setsopt, at the attach root (SPEC §3) */
	PORTRES_ASSOC_AGENT   = 1, /* no setsockopt program: user space writes portres_sk */
};

struct portres_loader_opts {
	const char *bpffs_dir;   /* pins go here: <dir>/maps/<map>, <dir>/links/<prog> */
	const char *cgroup_path; /* cgroup2 directory to attach to */
	uint32_t max_resv;       /* reservations, and counter slots (per CPU); 0: PORTRES_DEFAULT_RESV.
				    Pinned maps keep their size: it applies on a fresh start. */
	uint32_t max_ports;      /* 0: PORTRES_MAX_PORTS */
	uint32_t events_per_sec; /* per CPU; 0: 1000 */
	enum portres_assoc_mode assoc;
};

/* Loads, pins and attaches; adopts what an earlier loader pinned in bpffs_dir. */
int portres_loader_open(const struct portres_loader_opts *opts, struct portres_loader **out);
/* Closes fds; pins and links stay, so enforcement goes on. NULL is fine. */
void portres_loader_close(struct portres_loader *l);
/* Detaches the links and removes every pin and the directories; then closes. */
int portres_loader_teardown(struct portres_loader *l);
/* True when pins from an earlier loader were adopted by open. */
bool portres_loader_adopted(const struct portres_loader *l);
enum portres_assoc_mode portres_loader_assoc(const struct portres_loader *l);

/* The netns cookie of the calling thread's network namespace. */
int portres_netns_cookie(uint64_t *cookie);
/* cgroup id (inode of the cgroup2 directory). */
int portres_cgroup_id(const char *path, uint64_t *id);

/*
 * Reservations. add checks that no port of [start, start+count) is in another
 * reservation of the same netns and protocol (-EADDRINUSE), then inserts the
 * ports and the reservation; on any failure nothing is left behind.
 */
int portres_resv_add(struct portres_loader *l, uint64_t token, const struct portres_resv *r);
int portres_resv_del(struct portres_loader *l, uint64_t token);
/*
 * As portres_resv_del, for a caller that deleted the reservation's grants
 * itself or knows it has none: portres_resv_del walks the whole grants map
 * for them (a call per grant of every reservation), this does not.
 */
int portres_resv_del_nogrants(struct portres_loader *l, uint64_t token);
int portres_resv_get(struct portres_loader *l, uint64_t token, struct portres_resv *r);
/* Changes mode (counters, claims and what the data plane wrote untouched). */
int portres_resv_set_mode(struct portres_loader *l, uint64_t token, uint8_t mode);
/* Iterates all reservations; cb returns non-zero to stop (that value is returned). */
int portres_resv_foreach(struct portres_loader *l,
			 int (*cb)(uint64_t token, const struct portres_resv *r, void *arg), void *arg);
/*
 * Runtime reservations ended by their anchor's close, as the data plane
 * counted them (gstats.released): a reader that handled fewer RELEASED
 * events than this lost some (a full ring buffer) and sweeps with
 * portres_dead_foreach, which calls cb with the token of every reservation
 * whose anchor closed (a few system calls for the whole map).
 */
int portres_released_count(struct portres_loader *l, uint64_t *n);
int portres_dead_foreach(struct portres_loader *l, int (*cb)(uint64_t token, void *arg), void *arg);
/* Which token owns a port (0 if none). */
int portres_port_owner(struct portres_loader *l, uint64_t netns, uint8_t proto, uint16_t port,
		       struct portres_port *out);
/* Summed per-CPU counters of a token. */
int portres_resv_stats(struct portres_loader *l, uint64_t token, struct portres_stats *out);
int portres_global_stats(struct portres_loader *l, struct portres_gstats *out);

int portres_grant_add(struct portres_loader *l, uint64_t token, uint32_t type, uint64_t id);
int portres_grant_del(struct portres_loader *l, uint64_t token, uint32_t type, uint64_t id);
/* 1 when the grant is in the map, 0 when not, or -errno. */
int portres_grant_has(struct portres_loader *l, uint64_t token, uint32_t type, uint64_t id);

/*
 * Cgroup association: sockets created in cgroup_id or below take the token of
 * their protocol's slot (rules in portres_abi.h). Replaces the cgroup's entry.
 * -EINVAL for unknown flags, -EPROTOTYPE when a slot names a reservation of
 * the other protocol.
 */
int portres_cgroup_attach(struct portres_loader *l, uint64_t cgroup_id, const struct portres_cgroup *c);
int portres_cgroup_detach(struct portres_loader *l, uint64_t cgroup_id);
int portres_cgroup_foreach(struct portres_loader *l,
			   int (*cb)(uint64_t cgroup_id, const struct portres_cgroup *c, void *arg), void *arg);

/*
 * Makes sockfd the anchor of runtime reservation token: closing the socket
 * ends the reservation (-ENOSPC when it anchors PORTRES_MAX_ANCHORS already).
 * The data plane stores it through setsockopt(SOL_PORTRES, PORTRES_ANCHOR_ADD),
 * which it takes from the loader's process only (the last to call these);
 * in PORTRES_ASSOC_AGENT mode the loader writes portres_sk itself.
 */
int portres_anchor_add(struct portres_loader *l, int sockfd, uint64_t token);
int portres_anchor_del(struct portres_loader *l, int sockfd, uint64_t token);
/*
 * The same for a socket the caller checked is TCP or UDP over IPv4/IPv6
 * (the loader asks the kernel again otherwise: two getsockopt calls).
 */
int portres_anchor_add_checked(struct portres_loader *l, int sockfd, uint64_t token);
int portres_anchor_del_checked(struct portres_loader *l, int sockfd, uint64_t token);

/*
 * Associates sockfd with token, as portres_setsopt does for setsockopt
 * (SOL_PORTRES, PORTRES_ASSOCIATE): the socket's portres_sk gets the token
 * and PORTRES_SK_ASSOC; what the data plane wrote there (claim, anchors,
 * confinement) is kept. It checks nothing: the caller decides who may
 * (the agent's associate op). A bind or connect of the same socket racing
 * this call may lose what it wrote: associate before binding, as SPEC §3 says.
 */
int portres_sk_associate(struct portres_loader *l, int sockfd, uint64_t token);

/* Events: cb is called for each one during portres_events_poll. */
typedef int (*portres_event_cb)(const struct portres_event *ev, void *arg);
int portres_events_open(struct portres_loader *l, portres_event_cb cb, void *arg);
/* Waits up to timeout_ms; returns the number of events handled or -errno. */
int portres_events_poll(struct portres_loader *l, int timeout_ms);
/* An fd for poll()/epoll that becomes readable when events are waiting. */
int portres_events_fd(struct portres_loader *l);

/* Program fds, for the run-time statistics of the benchmark. */
int portres_prog_fd(struct portres_loader *l, const char *prog_name);

#endif /* PORTRES_LOADER_H */
