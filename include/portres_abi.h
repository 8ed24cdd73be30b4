/* SPDX-License-Identifier: (LGPL-2.1-or-later OR BSD-2-Clause) */
/*
 * portres_abi.h - the maps shared by bpf/portres.bpf.c and user space.
 *
 * This header defines what a reservation means to the kernel.
 *
 * A reservation is a token (random, non-zero, 64-bit) naming a block of ports
 * [start, start+count) of one protocol (TCP or UDP) in one network namespace
 * (identified by its netns cookie, SO_NETNS_COOKIE). IPv4 and IPv6 share it.
 *
 *   portres_resv     token -> struct portres_resv         what the block is; written
 *                    by user space only
 *   portres_rstate   array, slot portres_resv.slot -> struct portres_rstate:
 *                    what the data plane writes about a reservation (next
 *                    bind(0) offset, anchor closed); user space only zeroes
 *                    a slot when it hands it out, so neither side ever
 *                    overwrites the other's writes
 *   portres_ports    array, slot portres_port_slot(proto, port) -> struct portres_port
 *                    one entry per reserved port: its token and netns, and how
 *                    many sockets associated with that token claimed it. Every
 *                    bind decision is one array lookup here: O(1) in the
 *                    number of reservations, and no hashing.
 *   portres_pbits    array of PORTRES_PBITS_WORDS __u64: bit port of word
 *                    portres_pbits_word(proto, port) is set while the port is
 *                    reserved in some netns (its slot in portres_ports or an
 *                    entry of portres_portx; a bit may stay set longer, never
 *                    shorter: a slot emptied while portres_portx has entries
 *                    keeps its bit until the overflow empties). 16 KiB, in
 *                    memory the kernel maps with large pages: a bind of a
 *                    port nobody reserved (what almost every bind is) reads
 *                    this word, not the 4 MiB portres_ports, whose page costs
 *                    a page walk whenever the TLB was flushed (page-table
 *                    isolation flushes it at every system call). Written by
 *                    user space only, with the slot.
 *   portres_portx    {netns, proto, port} -> struct portres_port: the overflow
 *                    for a port reserved in several network namespaces at
 *                    once (the slot holds the first); looked up only while
 *                    portres_cfg.overflow is non-zero.
 *   portres_grants   {token, type, id} -> 1   who may associate a persistent token
 *   portres_cgroups  cgroup id -> struct portres_cgroup {tcp_token, udp_token,
 *                    flags}: sockets created in that cgroup (or below it; the
 *                    nearest attached ancestor decides, both of its slots) are
 *                    associated with the token of their protocol's slot.
 *                    The loader links portres_create (cgroup/sock_create) at
 *                    each cgroup in this map, not at the attach root: a
 *                    socket made anywhere else runs no program at socket().
 *   portres_sk       sk_storage: a socket's association, claimed port, and the
 *                    runtime reservations acquired on it (its anchors: closing
 *                    it ends them). Written by the data plane; the agent sets
 *                    anchors through setsockopt(SOL_PORTRES,
 *                    PORTRES_ANCHOR_ADD / _DEL), which only the loader's own
 *                    process (portres_cfg.loader_tgid, as root) may use. With
 *                    no setsockopt program (portresd --associate=agent) the
 *                    agent writes associations and anchors itself, by the
 *                    socket's fd (bpf_map_update_elem), as that program would,
 *                    keeping the fields it does not set.
 *   portres_cgidx    array, cgroup id % PORTRES_CGIDX_SLOTS -> that id when it
 *                    is in portres_cgroups (PORTRES_CGIDX_MANY: several are),
 *                    so that socket() looks up only attached ancestors
 *   portres_cfg      counts the data plane checks before optional work
 *   portres_stats    per-CPU counters per reservation, at portres_resv.slot
 *                    (sized by the loader: max_resv entries)
 *   portres_gstats   per-CPU global counters
 *   portres_events   ring buffer of struct portres_event: DENY, AUDIT,
 *                    EXHAUSTED, rate-limited (events_per_sec per CPU)
 *   portres_released ring buffer of RELEASED events only, never rate-limited;
 *                    gstats.released counts them, so a reader that finds the
 *                    count ahead of what it received sweeps portres_rstate
 *                    for anchors it missed (the ring was full)
 *
 * Rules of bind(2) on a socket S to port P (host order) in S's netns:
 *
 *   S associated with live token T:
 *     P == 0                    -> a port of T with no claim is chosen and
 *                                  written into the bind; none free: EADDRINUSE
 *                                  (ports are chosen in turn; a port the
 *                                  kernel may still hold is offered only when
 *                                  no other is free, see "Held ports" below)
 *     P inside T                -> allowed (P claimed by S)
 *     P inside another token U  -> U enforce: EACCES; audit: allowed + event;
 *                                  advisory: allowed
 *     P outside every token     -> allowed, or EACCES if S is confined
 *   S not associated:
 *     P inside token U          -> as for "another token U" above
 *     anything else             -> allowed (the kernel decides)
 *   S confined (created in a cgroup whose nearest attachment confines its
 *   protocol) and not associated with a live token of its netns:
 *     any P                     -> EACCES (nothing is inside its block)
 *
 *   Example: token A = tcp 8000-8009 enforce. An associated socket binding
 *   0 gets e.g. 8003; binding 8005 works; an unassociated socket binding 8005
 *   gets EACCES and the event {DENY, tcp, 8005, A, reason FOREIGN_BLOCK}.
 *
 * Cgroup attachments (portres_cgroups). A cgroup holds at most one TCP and
 * one UDP block: tcp_token and udp_token (0: none). A socket created below
 * the cgroup takes the token of its protocol's slot, if that reservation is
 * live, of that protocol, and in the socket's netns. Flags:
 *   PORTRES_CG_CONFINE      sockets of a protocol whose slot is set are
 *                           confined: binds outside that block get EACCES,
 *                           also when the block is gone or lives in another
 *                           netns than the socket;
 *   PORTRES_CG_CONFINE_ALL  sockets of a protocol whose slot is 0 are
 *                           confined too, to nothing: every bind gets EACCES
 *                           (implies PORTRES_CG_CONFINE).
 *
 *   Example: cgroup web = {tcp_token A, udp_token 0, CONFINE}: TCP sockets
 *   there bind inside A only; UDP sockets are unassociated and free. With
 *   CONFINE | CONFINE_ALL every UDP bind there gets EACCES.
 *
 * Every DENY and AUDIT event says why (enum portres_reason) and carries the
 * local address of the bind (portres_event.addr):
 *   FOREIGN_BLOCK  the port lies in another reservation (the event's token)
 *   CONFINED       a confined socket, port outside its block (or it has none)
 *   WRONG_NETNS    confined, and its cgroup's block lives in another netns
 *   GONE           confined, and its reservation no longer exists
 *
 * connect(2) of an unbound socket associated with T binds it first to a
 * free port of T (bpf_bind); a port the kernel still holds (a closed TCP
 * connection in TIME_WAIT) is skipped; none usable: EADDRNOTAVAIL, as the
 * kernel says when its ephemeral range is exhausted. connect(2) of an unbound
 * confined socket without a usable reservation: EACCES (reason as for bind).
 *
 * Implicit binds. The kernel gives an unbound socket a port of its own on
 * connect(2) (handled above), on sendto(2)/sendmsg(2) with a destination
 * (UDP) and on listen(2) (TCP). BPF can bind only from the connect hooks, so:
 *   sendto with a destination on an unbound UDP socket: the kernel binds it
 *     to a port of its own before any cgroup hook runs; the sendto is then
 *     refused: EINVAL for an associated socket (bind first: bind(0) picks a
 *     port of the block), EACCES (with its reason) for a confined one without
 *     a usable block. The socket keeps the kernel's port: make a new one.
 *   listen of an unbound associated TCP socket: no cgroup hook runs there,
 *     so the kernel's own port, outside the block, is not seen; bind(0)
 *     before listen(), as Windows requires (it refuses listen on an unbound
 *     socket). BPF LSM (lsm_cgroup/socket_listen) could refuse it, but
 *     kernels in lockdown (integrity) refuse to load LSM programs (EPERM).
 *
 * Held ports. When a socket that claimed port P of T closes, P is free in
 * our books at once but the kernel may hold it a while longer: a TCP socket
 * closed in any state but CLOSE may linger (FIN_WAIT, TIME_WAIT: up to
 * PORTRES_HOLD_US), a closed listener leaves its accepted connections on P,
 * and any socket is unhashed only after cgroup/sock_release ran (~1 ms,
 * PORTRES_QUARANTINE_US). portres_port.free_at records until when; bind(0)
 * offers such a port only when no other port of T is free (the one free
 * soonest first), and connect(2) probes it with bpf_bind. A listener's
 * accepted connections may outlive PORTRES_HOLD_US: after it the port is
 * offered like any other, and bind(0) onto it fails (EADDRINUSE) while they
 * live; connect(2) still skips it. Likewise when every free port of T was
 * released within PORTRES_QUARANTINE_US and the socket that held the one
 * released longest ago has not left the kernel's tables yet (its thread
 * stalled between cgroup/sock_release and the unhash): bind(0) fails with
 * EADDRINUSE, and a retry gets another port.
 *
 * A token of kind RUNTIME is usable only by owner_tgid; when its anchor
 * socket is released the data plane marks it dead at once (portres_rstate.dead
 * = token: it stops counting as a reservation), counts it in
 * gstats.released and sends PORTRES_EV_RELEASED on portres_released; the
 * agent then removes its maps entries (and sweeps for dead ones whenever
 * that count is ahead of the events it received).
 *
 * Nested instances. Two portres instances may be attached at an ancestor and
 * a descendant cgroup (a host agent and one in a container); the kernel runs
 * the descendant's programs first. Each instance passes on SOL_PORTRES
 * options whose token it does not know:
 *   setsockopt(PORTRES_ASSOCIATE, T): the instance that knows T answers (0
 *     and the association, or its EACCES / EPROTOTYPE); if none does: EINVAL.
 *     An instance that sees another one accept T drops its own explicit
 *     association of the socket.
 *   getsockopt(PORTRES_ASSOCIATION): the last explicit association made;
 *     else the deepest instance's association by cgroup; ENOENT only when no
 *     instance holds one.
 * Binds are checked by every instance against its own maps. The deepest
 * instance cannot know whether one above it took a token it did not know:
 * a socket associated with a token of the deeper instance and then with one
 * of the outer instance still gets bind(0) from the deeper block (getsockopt
 * reports the outer association). Associate once, before bind.
 * An instance whose agent associates (no setsockopt program) takes no part
 * in the setsockopt rules above: libportres asks that agent when the
 * programs answer EINVAL (or ENOPROTOOPT when no instance has the program).
 *
 * All fields are host byte order. Structures are padded explicitly: user space
 * must zero the whole key before filling it.
 */
#ifndef PORTRES_ABI_H
#define PORTRES_ABI_H

#ifdef __bpf__
#include <linux/types.h>
#else
#include <linux/types.h>
#include <stdint.h>
#endif

#define PORTRES_ABI_VERSION 2

/* Sizes of the maps; the loader may lower them (tests) but the BPF side never relies on them. */
#define PORTRES_MAX_RESV       131072 /* 65,535 per protocol plus room */
#define PORTRES_DEFAULT_RESV   16384  /* what the loader and portresd use unless told */
#define PORTRES_PORT_SLOTS     (2 * 65536) /* portres_ports: one slot per protocol and port */
#define PORTRES_MAX_PORTS      65536  /* portres_portx: ports reserved in a second netns */
#define PORTRES_MAX_GRANTS     4096
#define PORTRES_MAX_CGROUPS    4096
#define PORTRES_EVENTS_BYTES   (256 * 1024)
#define PORTRES_MAX_ANCHORS    4      /* runtime reservations held by one socket */
#define PORTRES_MAX_CG_DEPTH   32     /* ancestors searched for an attached cgroup */
#define PORTRES_RELEASED_BYTES (64 * 1024)
#define PORTRES_CGIDX_SLOTS    4096   /* portres_cgidx: a power of two */
#define PORTRES_CGIDX_MANY     (~0ULL)

/* How long the kernel may hold a port after its socket closed (portres_port.free_at). */
#define PORTRES_QUARANTINE_US  1000   /* unhashed after cgroup/sock_release: ~1 ms */
#define PORTRES_HOLD_US        (130 * 1000000) /* FIN_WAIT2 (60 s) then TIME_WAIT (60 s) */

enum portres_kind {
	PORTRES_KIND_PERSISTENT = 1,
	PORTRES_KIND_RUNTIME    = 2,
};

enum portres_mode {
	PORTRES_MODE_ENFORCE  = 0, /* foreign binds: EACCES */
	PORTRES_MODE_AUDIT    = 1, /* foreign binds: allowed, counted, event */
	PORTRES_MODE_ADVISORY = 2, /* foreign binds: allowed silently */
};

#define PORTRES_RESV_DEAD 0x01 /* runtime reservation whose anchor socket is gone */

/*
 * portres_resv is written by user space only. Its fields flags and next are
 * what the loader reports from portres_rstate when it reads a reservation
 * (portres_resv_get, _foreach); the map itself always holds 0 there.
 */
struct portres_resv {
	__u64 netns;      /* netns cookie the reservation lives in */
	__u32 owner_tgid; /* RUNTIME: the acquiring process; 0 for PERSISTENT */
	__u16 start;
	__u16 count;
	__u8  proto;      /* IPPROTO_TCP or IPPROTO_UDP */
	__u8  kind;       /* enum portres_kind */
	__u8  mode;       /* enum portres_mode */
	__u8  flags;      /* PORTRES_RESV_* (as read through the loader) */
	__u32 next;       /* (as read through the loader) portres_rstate.next */
	__u32 slot;       /* index into portres_stats and portres_rstate, chosen by the loader */
	__u32 pad;
};

/* Value of portres_rstate at portres_resv.slot: written by the data plane only. */
struct portres_rstate {
	__u64 dead;       /* the token whose anchor closed (0: none); a stale write
			     after the slot was handed out again names another
			     token, so it never kills the new reservation */
	__u32 next;       /* where the next bind(0) starts probing, an offset into the block */
	__u32 pad;
};

struct portres_port_key {
	__u64 netns;
	__u16 port;
	__u8  proto;
	__u8  pad[5];
};

/* portres_pbits: one bit per (protocol, port), TCP words first, then UDP. */
#define PORTRES_PBITS_WORDS 2048

static inline __u32 portres_pbits_word(__u8 proto, __u16 port)
{
	return (proto == 17 /* IPPROTO_UDP */ ? 1024u : 0u) + (port >> 6);
}

/* The slot of a port in portres_ports: TCP ports first, then UDP. */
static inline __u32 portres_port_slot(__u8 proto, __u16 port)
{
	return (proto == 17 /* IPPROTO_UDP */ ? 65536u : 0u) | port;
}

struct portres_port {
	__u64 token;      /* 0: the slot is free */
	__u64 netns;
	__u32 users;      /* sockets associated with token that claimed this port */
	__u32 free_at;    /* data plane only (user space writes 0): until when the
			     kernel may still hold the port after its last claim
			     was dropped, in bpf_ktime_get_ns() >> 10 (~us,
			     wrapping; 0: never claimed). See "Held ports". */
};

enum portres_grant_type {
	PORTRES_GRANT_UID    = 1,
	PORTRES_GRANT_GID    = 2, /* the caller's primary gid */
	PORTRES_GRANT_CGROUP = 3, /* the caller's cgroup or any ancestor (cgroup id) */
};

struct portres_grant_key {
	__u64 token;
	__u64 id;
	__u32 type;       /* enum portres_grant_type */
	__u32 pad;
};

struct portres_cfg {
	__u32 cgroups;    /* entries of portres_cgroups: 0 skips the ancestor walk */
	__u32 overflow;   /* entries of portres_portx: 0 skips its lookup */
	__u32 loader_tgid; /* the process that may set anchors */
	__u32 pad;
};

/* setsockopt(SOL_PORTRES, ...) of the loader's process: struct portres_anchor_op in. */
#define PORTRES_ANCHOR_ADD 100 /* anchors token on the socket (ENOSPC: it holds PORTRES_MAX_ANCHORS) */
#define PORTRES_ANCHOR_DEL 101 /* ENOENT: not anchored there */

struct portres_anchor_op {
	__u64 token;
};

#define PORTRES_CG_CONFINE     0x01 /* binds of a protocol that has a block here are denied outside it */
#define PORTRES_CG_CONFINE_ALL 0x02 /* and binds of protocols without a block here are denied too */

/* Value of portres_cgroups, key: cgroup id. */
struct portres_cgroup {
	__u64 tcp_token;  /* 0: no TCP block */
	__u64 udp_token;  /* 0: no UDP block */
	__u32 flags;      /* PORTRES_CG_* */
	__u32 pad;
};

/* portres_sk flags */
#define PORTRES_SK_ASSOC    0x01 /* associated by setsockopt */
#define PORTRES_SK_CGROUP   0x02 /* associated by its cgroup */
#define PORTRES_SK_CONFINE  0x04 /* binds outside the block are denied */
#define PORTRES_SK_CLAIMED  0x08 /* claim_port of token is counted in portres_port.users */
#define PORTRES_SK_STALE    0x10 /* ASSOC, then a token unknown here was set: another
				    instance may have taken the association */
#define PORTRES_SK_BOUND    0x20 /* bound by a bind() this instance allowed */

struct portres_sk {
	__u64 token;      /* associated token, 0 none; a confined socket keeps
			     its cgroup's token even when it is not usable */
	__u64 claim_token;
	__u16 claim_port;
	__u8  flags;
	__u8  pad[5];
	__u64 anchors[PORTRES_MAX_ANCHORS]; /* runtime tokens this socket ends when it closes */
};

struct portres_stats {
	__u64 allowed;    /* binds into the block by its holders */
	__u64 denied;     /* binds refused because of this block */
	__u64 allocated;  /* ports chosen from the block (bind 0, connect) */
	__u64 exhausted;  /* no free port when one was asked for */
	__u64 audited;    /* foreign binds let through by mode audit */
};

struct portres_gstats {
	__u64 events_sent;
	__u64 events_dropped; /* rate limit or full ring buffer */
	__u64 decisions;      /* binds that concerned a reservation (an associated
				 socket, or a reserved port) */
	__u64 released;       /* runtime reservations ended by their anchor's close */
};

/* Why a DENY or AUDIT event happened. */
enum portres_reason {
	PORTRES_REASON_NONE          = 0,
	PORTRES_REASON_FOREIGN_BLOCK = 1, /* the port is in another reservation */
	PORTRES_REASON_CONFINED      = 2, /* confined socket, port outside its blocks */
	PORTRES_REASON_WRONG_NETNS   = 3, /* its cgroup's block lives in another netns */
	PORTRES_REASON_GONE          = 4, /* its reservation no longer exists */
};

enum portres_event_type {
	PORTRES_EV_DENY      = 1,
	PORTRES_EV_AUDIT     = 2,
	PORTRES_EV_EXHAUSTED = 3,
	PORTRES_EV_RELEASED  = 4, /* a runtime reservation's anchor closed */
};

struct portres_event {
	__u64 ts_ns;      /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u64 token;      /* the reservation concerned, 0 if none */
	__u64 cgroup_id;  /* current task's cgroup */
	__u64 netns;
	__u32 pid;        /* tgid */
	__u32 uid;
	__s32 err;        /* errno returned, 0 when allowed */
	__u16 port;
	__u8  proto;
	__u8  family;
	__u8  type;       /* enum portres_event_type */
	__u8  reason;     /* enum portres_reason (DENY, AUDIT) */
	__u8  pad[6];
	__u32 addr[4];    /* local address of the bind, network order: IPv4 in
			     addr[0], IPv6 all four; 0 when there is none */
	char  comm[16];
};

#endif /* PORTRES_ABI_H */
