// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * portres.bpf.c - the data plane: cgroup programs that enforce port
 * reservations and hand out their ports. The rules are in
 * include/portres_abi.h; this file only implements them.
 *
 *   portres_bind4/6    bind(): allow, deny (EACCES / EADDRINUSE) or rewrite port 0
 *   portres_conn4/6    connect() of an unbound associated socket: bind from the block
 *   portres_send4/6    sendto() of an unbound associated or confined UDP socket: refused
 *   portres_create     socket(): associate with the nearest attached cgroup's token
 *   portres_release    close(): drop the socket's claim, end runtime reservations it anchors
 *   portres_setsopt    setsockopt(SOL_PORTRES, PORTRES_ASSOCIATE)
 *   portres_getsopt    getsockopt(SOL_PORTRES, PORTRES_ASSOCIATION)
 *
 * Every program runs for every socket of the host, so each one first finds
 * out, with as few loads as it can and before any helper call it can avoid,
 * whether the socket or port concerns portres at all (see make bench).
 */
#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/socket.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "portres_abi.h"
#include "portres.h"

#define AF_INET  2
#define AF_INET6 10
#define SOCK_STREAM 1
#define SOCK_DGRAM  2
#define EPERM         1
#define ENOENT        2
#define ENOMEM       12
#define ENOSPC       28
#define EACCES       13
#define EINVAL       22
#define EPROTOTYPE   91
#define ENOPROTOOPT  92
#define EOPNOTSUPP   95
#define EADDRINUSE   98
#define EADDRNOTAVAIL 99
#define PAGE_SIZE  4096
#define TCP_CLOSE  7 /* bpf_sock.state */
#define NSEC_PER_SEC 1000000000ULL

/* The kernel needs a GPL-compatible license for the helpers used; "Dual BSD/GPL" is the SPDX line above. */
char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define READ_ONCE(x)     (*(const volatile typeof(x) *)&(x))
#define WRITE_ONCE(x, v) (*(volatile typeof(x) *)&(x) = (v))

/*
 * The kernel's socket, as far as portres reads it: the field's offset comes
 * from the running kernel's BTF (CO-RE), the pointer from the program's
 * context through bpf_cast_to_kern_ctx (a kfunc the verifier turns into a
 * register move).
 */
struct sock {
	void *sk_bpf_storage;
} __attribute__((preserve_access_index));

struct bpf_sock_addr_kern {
	struct sock *sk;
} __attribute__((preserve_access_index));

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

/* Read-only configuration, set by the loader before load. */
const volatile __u32 events_per_sec = 1000;

/* Written by user space only: no preallocation. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, PORTRES_MAX_RESV);
	__type(key, __u64);
	__type(value, struct portres_resv);
} portres_resv SEC(".maps");

/* Written by the data plane only (user space zeroes a slot it hands out). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PORTRES_MAX_RESV);
	__type(key, __u32);
	__type(value, struct portres_rstate);
} portres_rstate SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PORTRES_PORT_SLOTS);
	__type(key, __u32);
	__type(value, struct portres_port);
} portres_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PORTRES_PBITS_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} portres_pbits SEC(".maps");

/* Rarely used, so not preallocated: entries cost memory only when they exist. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, PORTRES_MAX_PORTS);
	__type(key, struct portres_port_key);
	__type(value, struct portres_port);
} portres_portx SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PORTRES_MAX_GRANTS);
	__type(key, struct portres_grant_key);
	__type(value, __u8);
} portres_grants SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PORTRES_MAX_CGROUPS);
	__type(key, __u64);
	__type(value, struct portres_cgroup);
} portres_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PORTRES_CGIDX_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} portres_cgidx SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct portres_sk);
} portres_sk SEC(".maps");

/* Indexed by portres_resv.slot: no hashing on the paths that count. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PORTRES_MAX_RESV);
	__type(key, __u32);
	__type(value, struct portres_stats);
} portres_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct portres_gstats);
} portres_gstats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct portres_cfg);
} portres_cfg SEC(".maps");

struct ratelimit {
	__u64 window_ns;
	__u64 sent;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ratelimit);
} portres_rl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, PORTRES_EVENTS_BYTES);
} portres_events SEC(".maps");

/* Releases apart: a flood of denials never crowds one out. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, PORTRES_RELEASED_BYTES);
} portres_released SEC(".maps");

/*
 * A socket's portres storage, or NULL. Almost no socket of a host has
 * storage of any BPF map: that is one load from the kernel's socket, and the
 * helper call (what the common case of every hook would cost most) is made
 * only for the others.
 */
static __always_inline struct portres_sk *sk_state(struct bpf_sock *sk)
{
	struct sock *ks = bpf_cast_to_kern_ctx(sk);

	if (!ks->sk_bpf_storage)
		return NULL;
	return bpf_sk_storage_get(&portres_sk, sk, 0, 0);
}

/* The same for the socket of a bind, connect or sendmsg (ctx->sk, not NULL). */
static __always_inline struct portres_sk *addr_sk_state(struct bpf_sock_addr *ctx)
{
	struct bpf_sock_addr_kern *k = bpf_cast_to_kern_ctx(ctx);

	if (!k->sk->sk_bpf_storage)
		return NULL;
	return bpf_sk_storage_get(&portres_sk, ctx->sk, 0, 0);
}

enum counter { C_ALLOWED, C_DENIED, C_ALLOCATED, C_EXHAUSTED, C_AUDITED };

static __always_inline void count(const struct portres_resv *r, enum counter c)
{
	__u32 slot = r->slot;
	struct portres_stats *s = bpf_map_lookup_elem(&portres_stats, &slot);

	if (!s)
		return;
	switch (c) {
	case C_ALLOWED:   s->allowed++;   break;
	case C_DENIED:    s->denied++;    break;
	case C_ALLOCATED: s->allocated++; break;
	case C_EXHAUSTED: s->exhausted++; break;
	case C_AUDITED:   s->audited++;   break;
	}
}

static __always_inline struct portres_gstats *gstats(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&portres_gstats, &zero);
}

/* Per-CPU token bucket of events_per_sec; RELEASED events are never limited. */
static __always_inline bool event_allowed(void)
{
	__u32 zero = 0;
	struct ratelimit *rl = bpf_map_lookup_elem(&portres_rl, &zero);
	__u64 now = bpf_ktime_get_coarse_ns(); /* a one-second window needs no precision */

	if (!rl)
		return false;
	if (now - rl->window_ns >= NSEC_PER_SEC) {
		rl->window_ns = now;
		rl->sent = 0;
	}
	if (rl->sent >= events_per_sec)
		return false;
	rl->sent++;
	return true;
}

/*
 * A new event with the fields every event has, or NULL (counted as dropped)
 * when the rate limit or a full ring buffer says no. RELEASED events are
 * never rate-limited.
 */
static __always_inline struct portres_event *ev_start(__u8 type, __u64 token, __u64 netns, __u8 proto,
						     __u8 family, __u16 port, int err)
{
	struct portres_gstats *g;
	struct portres_event *ev;

	if (type == PORTRES_EV_RELEASED || event_allowed()) {
		ev = bpf_ringbuf_reserve(&portres_events, sizeof(*ev), 0);
		if (ev) {
			__builtin_memset(ev, 0, sizeof(*ev));
			ev->ts_ns = bpf_ktime_get_ns();
			ev->token = token;
			ev->cgroup_id = bpf_get_current_cgroup_id();
			ev->netns = netns;
			ev->pid = bpf_get_current_pid_tgid() >> 32;
			ev->uid = (__u32)bpf_get_current_uid_gid();
			ev->err = err;
			ev->port = port;
			ev->proto = proto;
			ev->family = family;
			ev->type = type;
			bpf_get_current_comm(ev->comm, sizeof(ev->comm));
			return ev;
		}
	}
	g = gstats();
	if (g)
		g->events_dropped++;
	return NULL;
}

static __always_inline void ev_submit(struct portres_event *ev)
{
	struct portres_gstats *g = gstats();

	bpf_ringbuf_submit(ev, 0);
	if (g)
		g->events_sent++;
}

/* What one bind() or connect() is about: read once, passed to every decision. */
struct req {
	struct bpf_sock_addr *ctx;
	__u64 netns;
	__u16 port;       /* host order */
	__u8  proto;
	__u8  family;     /* AF_INET or AF_INET6: the program's, a constant once inlined */
};

/* An event about a bind or connect: with its reason and local address. */
static __always_inline void emit(const struct req *q, __u8 type, __u64 token, __u8 reason, int err)
{
	struct portres_event *ev = ev_start(type, token, q->netns, q->proto, q->family, q->port, err);

	if (!ev)
		return;
	ev->reason = reason;
	if (q->family == AF_INET) {
		ev->addr[0] = q->ctx->user_ip4;
	} else {
		ev->addr[0] = q->ctx->user_ip6[0];
		ev->addr[1] = q->ctx->user_ip6[1];
		ev->addr[2] = q->ctx->user_ip6[2];
		ev->addr[3] = q->ctx->user_ip6[3];
	}
	ev_submit(ev);
}

/* What the data plane writes about a reservation, at its slot. */
static __always_inline struct portres_rstate *rstate(const struct portres_resv *r)
{
	__u32 slot = r->slot;

	return bpf_map_lookup_elem(&portres_rstate, &slot);
}

static __always_inline struct portres_resv *live_resv(__u64 token)
{
	struct portres_rstate *st;
	struct portres_resv *r;

	if (!token)
		return NULL;
	r = bpf_map_lookup_elem(&portres_resv, &token);
	if (!r)
		return NULL;
	st = rstate(r);
	if (st && READ_ONCE(st->dead) == token)
		return NULL;
	return r;
}

static __always_inline struct portres_cfg *cfg(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&portres_cfg, &zero);
}

/* The slot of a port: its entry if the slot names netns, else NULL. */
static __always_inline struct portres_port *slot_ent(__u64 netns, __u8 proto, __u16 port)
{
	__u32 slot = portres_port_slot(proto, port);
	struct portres_port *ent = bpf_map_lookup_elem(&portres_ports, &slot);

	if (ent && READ_ONCE(ent->token) && ent->netns == netns)
		return ent;
	return NULL;
}

/* The entry of a reserved port in netns, or NULL: the slot, else the overflow. */
static __always_inline struct portres_port *port_ent(__u64 netns, __u8 proto, __u16 port)
{
	struct portres_port_key key = { .netns = netns, .port = port, .proto = proto };
	struct portres_port *ent = slot_ent(netns, proto, port);
	struct portres_cfg *c;

	if (ent)
		return ent;
	c = cfg();
	if (!c || !READ_ONCE(c->overflow))
		return NULL;
	return bpf_map_lookup_elem(&portres_portx, &key);
}

/*
 * Is port reserved in any netns? Its bit in portres_pbits: one word of a
 * small map, without a helper call. The common case of every host (a bind
 * of a port nobody reserved) ends here.
 */
static __always_inline bool maybe_reserved(__u8 proto, __u16 port)
{
	__u32 word = portres_pbits_word(proto, port);
	__u64 *bits = bpf_map_lookup_elem(&portres_pbits, &word);

	return bits && (READ_ONCE(*bits) >> (port & 63)) & 1;
}

/* The clock of portres_port.free_at: ~microseconds, wrapping every ~73 minutes. */
static __always_inline __u32 now_us(void)
{
	return bpf_ktime_get_ns() >> 10;
}

/*
 * Slack on the longest hold: a hold written this very tick is now + hold + 1
 * (free_at is odd, never 0), and CPUs' clocks may differ by a little.
 */
#define HELD_SLACK_US 1000000

/*
 * Is free_at still ahead of now (within the longest hold and its slack; the
 * clock wraps)? A port dropped by connect's probe and offered again in the
 * same tick must still count as held, or the probe takes it again and again.
 */
static __always_inline bool held(__u32 free_at, __u32 now)
{
	return free_at && free_at - now - 1 < PORTRES_HOLD_US + HELD_SLACK_US;
}

/* Rounds of a compare-and-swap on users before giving up (each lost round is another CPU's win). */
#define CAS_TRIES 16

/*
 * Drops one claim of a port; the kernel may hold it hold_us longer. free_at
 * is written before the compare-and-swap (a full barrier) takes users down,
 * so an allocator that sees users == 0 sees free_at too; a later, shorter
 * hold never shortens a longer one still running. users never goes below 0.
 */
static __always_inline void release_port(struct portres_port *ent, __u32 hold_us)
{
	__u32 now = now_us(), want = now + hold_us, cur, old, seen;
	int i;

	old = READ_ONCE(ent->users);
	for (i = 0; i < CAS_TRIES && old; i++) {
		cur = READ_ONCE(ent->free_at);
		if (held(cur, now) && cur - now > hold_us)
			want = cur;
		WRITE_ONCE(ent->free_at, want | 1); /* never 0: that means never claimed */
		seen = __sync_val_compare_and_swap(&ent->users, old, old - 1);
		if (seen == old)
			return;
		old = seen;
	}
}

/*
 * Adds a claim: a fetching atomic, ordered on every architecture (a plain
 * atomic add, which clang emits where the result is unused, is not on arm64).
 * One claim per socket: users cannot wrap.
 */
static __always_inline void claim_port(struct portres_port *ent)
{
	__u32 was = __sync_fetch_and_add(&ent->users, 1);

	asm volatile("" : : "r"(was)); /* the result used: clang emits the fetching form */
}

/* Drops the claim a socket holds on a port, if the port still belongs to its token. */
static __always_inline void unclaim(struct portres_sk *ps, __u64 netns, __u8 proto, __u32 hold_us)
{
	struct portres_port *ent;

	if (!(ps->flags & PORTRES_SK_CLAIMED))
		return;
	ps->flags &= ~PORTRES_SK_CLAIMED;
	ent = port_ent(netns, proto, ps->claim_port);
	if (ent && READ_ONCE(ent->token) == ps->claim_token)
		release_port(ent, hold_us);
}

static __always_inline void set_claim(struct portres_sk *ps, __u64 token, __u16 port)
{
	ps->claim_token = token;
	ps->claim_port = port;
	ps->flags |= PORTRES_SK_CLAIMED;
}

/*
 * Ports probed before settling for the held free port free soonest: under
 * heavy churn every free port may be held, and a scan of the whole block per
 * bind would cost more than it saves.
 */
#define ALLOC_PATIENCE 64

/* Rounds of one allocation: another CPU may take the port we settled for. */
#define ALLOC_TRIES 4

struct alloc_ctx {
	__u64 netns;
	__u64 token;
	__u32 start;
	__u32 count;
	__u32 offset;
	__u32 now;        /* now_us() */
	__u32 port;       /* result, 0 if none */
	__u32 soonest;    /* the held free port free soonest, 0 if none */
	__u32 soonest_wait;
	__u8  proto;
};

/* Another CPU may race us to the same port: only one cmpxchg wins. */
static __always_inline bool claim_free(struct portres_port *ent)
{
	return __sync_val_compare_and_swap(&ent->users, 0, 1) == 0;
}

static long alloc_step(__u32 i, struct alloc_ctx *a)
{
	__u32 idx = a->offset + i, free_at;
	struct portres_port *ent;
	__u16 port;

	if (a->soonest && i >= ALLOC_PATIENCE)
		return 1;
	if (idx >= a->count)
		idx -= a->count;
	port = a->start + idx;
	ent = port_ent(a->netns, a->proto, port);
	if (!ent || READ_ONCE(ent->token) != a->token || READ_ONCE(ent->users))
		return 0;
	free_at = READ_ONCE(ent->free_at);
	if (held(free_at, a->now)) {
		if (!a->soonest || free_at - a->now < a->soonest_wait) {
			a->soonest = port;
			a->soonest_wait = free_at - a->now;
		}
		return 0;
	}
	if (!claim_free(ent))
		return 0;
	a->port = port;
	return 1;
}

/*
 * Claims a free port of a block (start << 16 | count: global functions take
 * five arguments), probing linearly from offset `next` (where the last
 * allocation stopped: next fit), ports the kernel no longer holds first.
 * Concurrent allocators that start at the same port are sorted out by the
 * cmpxchg in claim_free. Returns the port, 0 when none is free.
 *
 * A global function: the verifier checks it once, not at each of the call
 * sites (connect() calls it in a loop).
 */
__attribute__((noinline)) int portres_alloc(__u64 token, __u64 netns, __u32 block, __u32 proto,
					    __u32 next)
{
	struct alloc_ctx a = {
		.netns = netns, .token = token, .proto = proto,
		.start = block >> 16, .count = block & 0xffff,
	};
	struct portres_port *ent;
	int i;

	if (!a.count)
		return 0;
	a.offset = next % a.count;
	a.now = now_us();
	for (i = 0; i < ALLOC_TRIES; i++) {
		a.soonest = 0;
		a.soonest_wait = 0;
		bpf_loop(a.count, alloc_step, &a, 0);
		if (a.port || !a.soonest)
			break;
		/* Only held ports were found free: the one free soonest. */
		ent = port_ent(netns, a.proto, a.soonest);
		if (ent && READ_ONCE(ent->token) == token && claim_free(ent)) {
			a.port = a.soonest;
			break;
		}
		/* Another CPU took that one: look again. */
	}
	return a.port;
}

static __always_inline __u16 alloc_port(__u64 token, struct portres_resv *r, __u64 netns)
{
	struct portres_rstate *st = rstate(r);
	__u32 next = st ? READ_ONCE(st->next) : 0, port, after;

	port = portres_alloc(token, netns, (__u32)r->start << 16 | r->count, r->proto, next);
	if (!port)
		return 0;
	after = port - r->start + 1;
	if (st)
		WRITE_ONCE(st->next, after < r->count ? after : 0); /* racing writers: either is a fine start */
	return port;
}

static __always_inline bool inet_proto(__u32 family, __u32 type, __u32 protocol)
{
	if (family != AF_INET && family != AF_INET6)
		return false;
	return (type == SOCK_STREAM && protocol == IPPROTO_TCP) ||
	       (type == SOCK_DGRAM && protocol == IPPROTO_UDP);
}

static __always_inline int deny(int err)
{
	bpf_set_retval(-err);
	return 0;
}

static __always_inline void count_decision(void)
{
	struct portres_gstats *g = gstats();

	if (g)
		g->decisions++;
}

/*
 * A bind of a port that lies in reservation `owner` (not the socket's own).
 * Returns 1 to allow, 0 to deny with EACCES.
 */
static __always_inline int foreign_port(const struct req *q, __u64 owner)
{
	struct portres_resv *r = live_resv(owner);

	if (!r)
		return 1;
	if (r->mode == PORTRES_MODE_ENFORCE) {
		count(r, C_DENIED);
		emit(q, PORTRES_EV_DENY, owner, PORTRES_REASON_FOREIGN_BLOCK, EACCES);
		return deny(EACCES);
	}
	if (r->mode == PORTRES_MODE_AUDIT) {
		count(r, C_AUDITED);
		emit(q, PORTRES_EV_AUDIT, owner, PORTRES_REASON_FOREIGN_BLOCK, 0);
	}
	return 1;
}

/* The socket's reservation, if it is live, of its protocol and in its netns. */
static __always_inline struct portres_resv *own_resv(const struct portres_sk *ps, __u64 netns, __u8 proto)
{
	struct portres_resv *r;

	if (!ps || !ps->token)
		return NULL;
	r = live_resv(ps->token);
	if (!r || r->netns != netns || r->proto != proto)
		return NULL;
	return r;
}

/* Why a confined socket without a usable reservation is refused. */
static __always_inline __u8 confined_reason(__u64 token, __u64 netns)
{
	struct portres_resv *r;

	if (!token)
		return PORTRES_REASON_CONFINED;
	r = live_resv(token);
	if (!r)
		return PORTRES_REASON_GONE;
	if (r->netns != netns)
		return PORTRES_REASON_WRONG_NETNS;
	return PORTRES_REASON_CONFINED;
}

/* A confined socket without a usable reservation: refused, and the event says why. */
static __always_inline int confined_deny(const struct req *q, const struct portres_sk *ps)
{
	emit(q, PORTRES_EV_DENY, ps->token, confined_reason(ps->token, q->netns), EACCES);
	return deny(EACCES);
}

/* bind() of a socket that has portres state: associated and/or confined. */
static __always_inline int bind_tracked(struct req *q, struct portres_sk *ps)
{
	struct bpf_sock_addr *ctx = q->ctx;
	struct portres_resv *own;
	struct portres_port *ent;

	q->netns = bpf_get_netns_cookie(ctx);
	count_decision();
	own = own_resv(ps, q->netns, q->proto);
	if (!own) {
		if (ps->flags & PORTRES_SK_CONFINE)
			return confined_deny(q, ps);
		if (q->port == 0)
			return 1;
		ent = port_ent(q->netns, q->proto, q->port);
		return ent ? foreign_port(q, READ_ONCE(ent->token)) : 1;
	}
	/* A second bind attempt: the earlier claim no longer holds. */
	unclaim(ps, q->netns, q->proto, PORTRES_QUARANTINE_US);
	if (q->port == 0) {
		__u16 port = alloc_port(ps->token, own, q->netns);

		if (!port) {
			count(own, C_EXHAUSTED);
			emit(q, PORTRES_EV_EXHAUSTED, ps->token, PORTRES_REASON_NONE, EADDRINUSE);
			return deny(EADDRINUSE);
		}
		ctx->user_port = bpf_htons(port);
		set_claim(ps, ps->token, port);
		count(own, C_ALLOCATED);
		return 1;
	}
	ent = port_ent(q->netns, q->proto, q->port);
	if (ent && READ_ONCE(ent->token) == ps->token) {
		claim_port(ent);
		set_claim(ps, ps->token, q->port);
		count(own, C_ALLOWED);
		return 1;
	}
	if (ent)
		return foreign_port(q, READ_ONCE(ent->token));
	if (ps->flags & PORTRES_SK_CONFINE) {
		count(own, C_DENIED);
		emit(q, PORTRES_EV_DENY, ps->token, PORTRES_REASON_CONFINED, EACCES);
		return deny(EACCES);
	}
	return 1;
}

static __always_inline int do_bind(struct bpf_sock_addr *ctx, __u8 family)
{
	struct bpf_sock *sk = ctx->sk;
	struct req q = { .ctx = ctx, .family = family };
	struct portres_sk *ps;

	/*
	 * The socket's family, not the address's: inet_bind takes an AF_UNSPEC
	 * address with INADDR_ANY as AF_INET, and must not get past us with it.
	 */
	if (!sk || !inet_proto(ctx->family, ctx->type, ctx->protocol))
		return 1;
	q.proto = ctx->protocol;
	q.port = bpf_ntohs(ctx->user_port);
	/* A socket without storage has none of ours: a pointer test in the kernel. */
	ps = addr_sk_state(ctx);
	if (!ps) {
		/* Not associated, not confined: only a reserved port concerns us. */
		if (q.port == 0 || !maybe_reserved(q.proto, q.port))
			return 1;
		/* Already bound: the kernel refuses the bind (EINVAL). */
		if (sk->src_port)
			return 1;
		q.netns = bpf_get_netns_cookie(ctx);
		struct portres_port *ent = port_ent(q.netns, q.proto, q.port);

		if (!ent)
			return 1;
		count_decision();
		return foreign_port(&q, READ_ONCE(ent->token));
	}
	/* Already bound: the kernel refuses the bind (EINVAL); keep claims as they are. */
	if (sk->src_port)
		return 1;
	if (!bind_tracked(&q, ps))
		return 0;
	ps->flags |= PORTRES_SK_BOUND;
	return 1;
}

SEC("cgroup/bind4")
int portres_bind4(struct bpf_sock_addr *ctx)
{
	return do_bind(ctx, AF_INET);
}

SEC("cgroup/bind6")
int portres_bind6(struct bpf_sock_addr *ctx)
{
	return do_bind(ctx, AF_INET6);
}

/* Ports tried by one connect() before it gives up with EADDRNOTAVAIL. */
#define CONNECT_TRIES 8

static __always_inline long bind_port(struct bpf_sock_addr *ctx, __u8 family, __u16 port)
{
	if (family == AF_INET) {
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = bpf_htons(port) };

		return bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa));
	}
	struct sockaddr_in6 sa6 = { .sin6_family = AF_INET6, .sin6_port = bpf_htons(port) };

	return bpf_bind(ctx, (struct sockaddr *)&sa6, sizeof(sa6));
}

/* Gives back a port claimed by alloc_port that the kernel still holds. */
static __always_inline void drop_port(__u64 netns, __u8 proto, __u16 port, __u32 hold_us)
{
	struct portres_port *ent = port_ent(netns, proto, port);

	if (ent)
		release_port(ent, hold_us);
}

/* connect() of an unbound associated socket: bind it to a port of its block first. */
static __always_inline int do_connect(struct bpf_sock_addr *ctx, __u8 family)
{
	struct bpf_sock *sk = ctx->sk;
	struct req q = { .ctx = ctx, .family = family };
	struct portres_resv *own;
	struct portres_sk *ps;
	int i;
	__u16 port;
	long err;

	if (!sk)
		return 1;
	ps = addr_sk_state(ctx);
	if (!ps || sk->src_port || !inet_proto(ctx->family, ctx->type, ctx->protocol))
		return 1;
	q.proto = ctx->protocol;
	q.netns = bpf_get_netns_cookie(ctx);
	own = own_resv(ps, q.netns, q.proto);
	if (!own) {
		/* The kernel would bind it outside every block: a bind like any other. */
		if (ps->flags & PORTRES_SK_CONFINE)
			return confined_deny(&q, ps);
		return 1;
	}
	/*
	 * A port free in our books may still be held in the kernel by a TCP
	 * connection closed earlier (FIN_WAIT2, TIME_WAIT): bpf_bind then says
	 * EADDRINUSE, the port is given back marked as held for PORTRES_HOLD_US
	 * (so this and later allocations offer it last) and the next one is
	 * tried. Giving it back at once, rather than keeping the ports tried
	 * claimed to the end, also keeps the verifier's work small.
	 */
	port = 0;
	err = 0;
	for (i = 0; i < CONNECT_TRIES; i++) {
		port = alloc_port(ps->token, own, q.netns);
		if (!port)
			break;
		err = bind_port(ctx, family, port);
		if (!err)
			break;
		drop_port(q.netns, q.proto, port, err == -EADDRINUSE ? PORTRES_HOLD_US : PORTRES_QUARANTINE_US);
		port = 0;
		if (err != -EADDRINUSE)
			break;
	}
	if (err && err != -EADDRINUSE)
		return deny(-err);
	if (!port) {
		/* No free port, or only ports the kernel still holds. */
		count(own, C_EXHAUSTED);
		emit(&q, PORTRES_EV_EXHAUSTED, ps->token, PORTRES_REASON_NONE, EADDRNOTAVAIL);
		return deny(EADDRNOTAVAIL);
	}
	unclaim(ps, q.netns, q.proto, PORTRES_QUARANTINE_US);
	set_claim(ps, ps->token, port);
	count(own, C_ALLOCATED);
	return 1;
}

SEC("cgroup/connect4")
int portres_conn4(struct bpf_sock_addr *ctx)
{
	return do_connect(ctx, AF_INET);
}

SEC("cgroup/connect6")
int portres_conn6(struct bpf_sock_addr *ctx)
{
	return do_connect(ctx, AF_INET6);
}

/*
 * sendto() with a destination on a UDP socket the kernel bound itself: it
 * binds an unbound socket to a port of its own before this hook runs (and BPF
 * cannot bind here). A socket bound by bind() or connect() passes; one that
 * is associated gets EINVAL (bind first: bind(0) picks a port of the block),
 * a confined one without a usable block is refused as its bind would be.
 */
static __always_inline int do_send(struct bpf_sock_addr *ctx, __u8 family)
{
	struct bpf_sock *sk = ctx->sk;
	struct req q = { .ctx = ctx, .family = family };
	struct portres_sk *ps;

	if (!sk)
		return 1;
	ps = addr_sk_state(ctx);
	if (!ps || (ps->flags & (PORTRES_SK_CLAIMED | PORTRES_SK_BOUND)) || ctx->protocol != IPPROTO_UDP)
		return 1;
	q.proto = IPPROTO_UDP;
	q.netns = bpf_get_netns_cookie(ctx);
	if (own_resv(ps, q.netns, q.proto))
		return deny(EINVAL);
	if (ps->flags & PORTRES_SK_CONFINE)
		return confined_deny(&q, ps);
	return 1;
}

SEC("cgroup/sendmsg4")
int portres_send4(struct bpf_sock_addr *ctx)
{
	return do_send(ctx, AF_INET);
}

SEC("cgroup/sendmsg6")
int portres_send6(struct bpf_sock_addr *ctx)
{
	return do_send(ctx, AF_INET6);
}

/* The attachment of cgroup id, if it is one (portres_cgidx first: no hashing for the others). */
static __always_inline struct portres_cgroup *attached(__u64 id)
{
	__u32 idx = id & (PORTRES_CGIDX_SLOTS - 1);
	__u64 *v = bpf_map_lookup_elem(&portres_cgidx, &idx);

	if (!v || (READ_ONCE(*v) != id && READ_ONCE(*v) != PORTRES_CGIDX_MANY))
		return NULL;
	return bpf_map_lookup_elem(&portres_cgroups, &id);
}

/*
 * socket() below an attached cgroup (the loader links this program at each
 * one, not at the root): the nearest attached ancestor (deepest level)
 * decides; its slot for the socket's protocol names the token.
 */
SEC("cgroup/sock_create")
int portres_create(struct bpf_sock *sk)
{
	struct portres_cgroup *found = NULL, *c;
	struct portres_cfg *conf = cfg();
	struct portres_resv *r;
	struct portres_sk *ps;
	bool usable, confine;
	__u64 id, token;
	int level;

	if (!conf || !READ_ONCE(conf->cgroups) || !inet_proto(sk->family, sk->type, sk->protocol))
		return 1;
	/* Linked at each attached cgroup: below two of them it runs twice, the first decides. */
	if (bpf_sk_storage_get(&portres_sk, sk, 0, 0))
		return 1;
	for (level = 0; level < PORTRES_MAX_CG_DEPTH; level++) {
		id = bpf_get_current_ancestor_cgroup_id(level);
		if (!id)
			break;
		c = attached(id);
		if (c)
			found = c;
	}
	if (!found)
		return 1;
	token = sk->protocol == IPPROTO_TCP ? found->tcp_token : found->udp_token;
	confine = (found->flags & PORTRES_CG_CONFINE_ALL) ||
		  ((found->flags & PORTRES_CG_CONFINE) && token);
	r = live_resv(token);
	usable = r && r->proto == sk->protocol && r->netns == bpf_get_netns_cookie(sk);
	if (!usable && !confine)
		return 1;
	ps = bpf_sk_storage_get(&portres_sk, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!ps)
		return 1;
	/* A confined socket keeps an unusable token: its denials say why (gone, other netns). */
	ps->token = token;
	ps->flags = PORTRES_SK_CGROUP;
	if (confine)
		ps->flags |= PORTRES_SK_CONFINE;
	return 1;
}

/*
 * How long the kernel may hold the port of a socket being closed: a TCP
 * socket in any state but CLOSE goes through FIN_WAIT / TIME_WAIT or (a
 * listener) leaves accepted connections on it; any other is unhashed soon.
 */
static __always_inline __u32 hold_of(const struct bpf_sock *sk)
{
	if (sk->protocol == IPPROTO_TCP && sk->state != TCP_CLOSE)
		return PORTRES_HOLD_US;
	return PORTRES_QUARANTINE_US;
}

/* Ends the runtime reservations a closing socket anchors. */
static __always_inline void end_anchored(struct bpf_sock *sk, struct portres_sk *ps)
{
	struct portres_gstats *g;
	int i;

	for (i = 0; i < PORTRES_MAX_ANCHORS; i++) {
		__u64 token = ps->anchors[i];
		struct portres_event *ev;
		struct portres_rstate *st;
		struct portres_resv *r;

		if (!token)
			continue;
		r = bpf_map_lookup_elem(&portres_resv, &token);
		if (!r || r->kind != PORTRES_KIND_RUNTIME)
			continue;
		st = rstate(r);
		if (!st)
			continue;
		WRITE_ONCE(st->dead, token);
		g = gstats();
		if (g)
			__sync_fetch_and_add(&g->released, 1);
		ev = bpf_ringbuf_reserve(&portres_released, sizeof(*ev), 0);
		if (!ev)
			continue; /* counted: the reader's sweep finds it */
		__builtin_memset(ev, 0, sizeof(*ev));
		ev->ts_ns = bpf_ktime_get_ns();
		ev->token = token;
		ev->cgroup_id = bpf_get_current_cgroup_id();
		ev->netns = r->netns;
		ev->pid = bpf_get_current_pid_tgid() >> 32;
		ev->uid = (__u32)bpf_get_current_uid_gid();
		ev->port = r->start;
		ev->proto = r->proto;
		ev->family = sk->family;
		ev->type = PORTRES_EV_RELEASED;
		bpf_get_current_comm(ev->comm, sizeof(ev->comm));
		bpf_ringbuf_submit(ev, 0);
	}
}

/*
 * Every socket of the host is released through here: sk_state first (one
 * load for a socket without storage), no family or protocol check: only TCP
 * and UDP sockets ever get ours.
 */
SEC("cgroup/sock_release")
int portres_release(struct bpf_sock *sk)
{
	struct portres_sk *ps = sk_state(sk);

	if (!ps)
		return 1;
	if (ps->flags & PORTRES_SK_CLAIMED)
		unclaim(ps, bpf_get_netns_cookie(sk), sk->protocol, hold_of(sk));
	if (ps->anchors[0] | ps->anchors[1] | ps->anchors[2] | ps->anchors[3])
		end_anchored(sk, ps);
	return 1;
}

static __always_inline bool granted(__u64 token, __u32 type, __u64 id)
{
	struct portres_grant_key key = { .token = token, .id = id, .type = type };

	return bpf_map_lookup_elem(&portres_grants, &key) != NULL;
}

/* May the current task associate a socket with reservation r? */
static __always_inline bool may_associate(__u64 token, const struct portres_resv *r)
{
	__u64 uid_gid = bpf_get_current_uid_gid();
	__u32 uid = (__u32)uid_gid, gid = uid_gid >> 32;
	__u64 id;
	int level;

	if (r->kind == PORTRES_KIND_RUNTIME)
		return (bpf_get_current_pid_tgid() >> 32) == r->owner_tgid;
	if (uid == 0 || granted(token, PORTRES_GRANT_UID, uid) ||
	    granted(token, PORTRES_GRANT_GID, gid))
		return true;
	for (level = 0; level < PORTRES_MAX_CG_DEPTH; level++) {
		id = bpf_get_current_ancestor_cgroup_id(level);
		if (!id)
			break;
		if (granted(token, PORTRES_GRANT_CGROUP, id))
			return true;
	}
	return false;
}

/*
 * Any other option: pass it on untouched. Options larger than a page are
 * not copied for us: optlen 0 lets the kernel use the original.
 */
static __always_inline int sockopt_pass(struct bpf_sockopt *ctx)
{
	if (ctx->optlen > PAGE_SIZE)
		ctx->optlen = 0;
	return 1;
}

/*
 * A token this instance does not know (another instance attached above or
 * below may): EINVAL unless an instance that ran before us took it (taken:
 * then our explicit association of the socket is over) or answered. When
 * no instance ran before us (retval still 0), one that runs after us may
 * take it: our explicit association is marked stale, and getsockopt lets a
 * later instance's explicit one answer over it. An instance that runs after
 * another keeps its own: a later taker answers after it anyway.
 */
static __always_inline int not_mine(struct bpf_sock *sk, bool taken)
{
	struct portres_sk *ps = bpf_sk_storage_get(&portres_sk, sk, 0, 0);
	bool first = !taken && bpf_get_retval() == 0;

	if (ps && (ps->flags & PORTRES_SK_ASSOC)) {
		if (taken) {
			ps->token = 0;
			ps->flags &= ~(PORTRES_SK_ASSOC | PORTRES_SK_STALE);
		} else if (first) {
			ps->flags |= PORTRES_SK_STALE;
		}
	}
	if (first)
		bpf_set_retval(-EINVAL);
	return 1;
}

/*
 * Anchors, set by the loader's process only (an instance nested above or
 * below passes on what another instance's loader sets).
 */
static __always_inline int anchor_op(struct bpf_sockopt *ctx, struct bpf_sock *sk)
{
	void *optval = ctx->optval, *end = ctx->optval_end;
	struct portres_cfg *conf = cfg();
	struct portres_sk *ps;
	__u64 token, want;
	int i, free = -1;

	if (ctx->optlen == -1)
		return 1; /* another instance's loader: handled there */
	if (!conf || (bpf_get_current_pid_tgid() >> 32) != conf->loader_tgid ||
	    (__u32)bpf_get_current_uid_gid() != 0) {
		if (bpf_get_retval() == 0)
			bpf_set_retval(-EACCES);
		return 1;
	}
	if (ctx->optlen != sizeof(token) || optval + sizeof(token) > end || !*(__u64 *)optval)
		return deny(EINVAL);
	token = *(__u64 *)optval;
	ps = bpf_sk_storage_get(&portres_sk, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!ps)
		return deny(ENOMEM);
	want = ctx->optname == PORTRES_ANCHOR_ADD ? token : 0;
	for (i = 0; i < PORTRES_MAX_ANCHORS; i++) {
		if (ps->anchors[i] == token)
			break;
		if (!ps->anchors[i] && free < 0)
			free = i;
	}
	if (i == PORTRES_MAX_ANCHORS) {
		if (!want)
			return deny(ENOENT);
		if (free < 0)
			return deny(ENOSPC);
		i = free;
	}
	if (i >= 0 && i < PORTRES_MAX_ANCHORS)
		ps->anchors[i] = want;
	ctx->optlen = -1;
	bpf_set_retval(0);
	return 1;
}

SEC("cgroup/setsockopt")
int portres_setsopt(struct bpf_sockopt *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	void *optval = ctx->optval, *end = ctx->optval_end;
	struct portres_resv *r;
	struct portres_sk *ps;
	__u64 token;

	if (ctx->level != SOL_PORTRES)
		return sockopt_pass(ctx);
	if (!sk || !inet_proto(sk->family, sk->type, sk->protocol))
		return deny(EOPNOTSUPP);
	if (ctx->optname == PORTRES_ANCHOR_ADD || ctx->optname == PORTRES_ANCHOR_DEL)
		return anchor_op(ctx, sk);
	if (ctx->optname != PORTRES_ASSOCIATE)
		return deny(ENOPROTOOPT);
	/* An instance that ran before us took it (optlen -1: its token, not ours). */
	if (ctx->optlen == -1)
		return not_mine(sk, !bpf_get_retval());
	if (ctx->optlen != sizeof(token) || optval + sizeof(token) > end)
		return deny(EINVAL);
	token = *(__u64 *)optval;
	if (sk->src_port)
		return deny(EINVAL); /* already bound: the association is fixed */
	r = live_resv(token);
	if (!r || r->netns != bpf_get_netns_cookie(ctx))
		return not_mine(sk, false);
	if (r->proto != sk->protocol)
		return deny(EPROTOTYPE);
	if (!may_associate(token, r))
		return deny(EACCES);
	ps = bpf_sk_storage_get(&portres_sk, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!ps)
		return deny(ENOMEM);
	ps->token = token;
	ps->flags = (ps->flags | PORTRES_SK_ASSOC) & ~PORTRES_SK_STALE;
	ctx->optlen = -1; /* handled here: the kernel's setsockopt is skipped */
	bpf_set_retval(0); /* over an EINVAL of an instance that ran before us */
	return 1;
}

/*
 * The kernel ran its getsockopt first (an error for this level); then
 * each instance, deepest first: an explicit association answers over one by
 * cgroup, the first answer stands otherwise, ENOENT when nobody has one.
 */
SEC("cgroup/getsockopt")
int portres_getsopt(struct bpf_sockopt *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	void *optval = ctx->optval, *end = ctx->optval_end;
	struct portres_sk *ps;
	int prev;

	if (ctx->level != SOL_PORTRES)
		return sockopt_pass(ctx);
	if (!sk || !inet_proto(sk->family, sk->type, sk->protocol))
		return deny(EOPNOTSUPP);
	if (ctx->optname != PORTRES_ASSOCIATION) {
		bpf_set_retval(-ENOPROTOOPT);
		return 1;
	}
	prev = bpf_get_retval();
	ps = bpf_sk_storage_get(&portres_sk, sk, 0, 0);
	if (!ps || !own_resv(ps, bpf_get_netns_cookie(ctx), sk->protocol)) {
		/* Not over another instance's answer (0) or its "buffer too small". */
		if (prev != 0 && prev != -EINVAL)
			bpf_set_retval(-ENOENT);
		return 1;
	}
	/* Another instance answered; ours counts more only if it is explicit and current. */
	if (prev == 0 && (ps->flags & (PORTRES_SK_ASSOC | PORTRES_SK_STALE)) != PORTRES_SK_ASSOC)
		return 1;
	if (ctx->optlen < (int)sizeof(__u64) || optval + sizeof(__u64) > end) {
		bpf_set_retval(-EINVAL);
		return 1;
	}
	*(__u64 *)optval = ps->token;
	ctx->optlen = sizeof(__u64);
	bpf_set_retval(0);
	return 1;
}
