// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * batch.c - group commit. Every change of one turn of the loop is applied at
 * once to the maps and the table, recorded in the store, and remembered
 * here: how to undo it, the events it makes, the replies waiting for it.
 * batch_commit then
 *
 *   1. reads the sysctl of each netns whose ports changed and records the
 *      ports about to be added as owned (netns_sysctl_prepare),
 *   2. writes the store's records in one transaction,
 *   3. writes each changed sysctl once (netns_sysctl_write),
 *   4. hands the events to the sink and the replies to their clients, once
 *      the commit is on disk: a durable commit is synced by the store's
 *      thread while the loop goes on with the next turn, so they wait for
 *      that sync (batch_synced), and so do those of any batch after it.
 *
 * If 2 fails, the undo list runs backwards, so maps and table are what the
 * database still says; replies of requests that changed something become
 * the error, and their events are dropped. Changes nobody asked for (a
 * runtime reservation whose socket closed, a removed cgroup) have happened
 * all the same: their records stay for the next commit (store_keep) and
 * their events go out.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "portresd.h"

struct undo {
	void (*fn)(struct agent *a, void *arg);
	void (*drop)(void *arg);
	void *arg;
	int fd;           /* closed after commit or undo; -1: none */
};

struct pending {
	batch_done_fn done;
	void *ctx;
	char *reply;
	bool changed;
};

struct deferred {
	json_t *event;
	bool infra;
};

struct lent {
	uint64_t cookie;
	int fd;
};

/*
 * The replies and events of a committed batch, waiting for the sync that
 * makes it durable (gen, see store_sync_request). Groups go out in order:
 * one that needs no sync of its own waits for the one before it.
 */
struct group {
	struct group *next;
	uint64_t gen;
	struct pending *pend;
	size_t n_pend, cap_pend;
	json_t **ev;
	size_t n_ev;
};

struct batch {
	struct lent *lent;
	size_t n_lent, cap_lent;
	struct undo *undo;
	size_t n_undo, cap_undo;
	struct pending *pend;
	size_t n_pend, cap_pend;
	struct deferred *ev;
	size_t n_ev, cap_ev;
	bool infra;       /* changes recorded now are nobody's request */
	bool sysctl;      /* some netns is sysctl_dirty */
	struct group *wait_head, *wait_tail; /* committed, not yet synced */
};

/* Grows *v (of *cap elements of size) to hold n + 1; false on ENOMEM. */
static bool grow(void **v, size_t *cap, size_t n, size_t size)
{
	size_t c = *cap ? *cap * 2 : 64;
	void *p;

	if (n < *cap)
		return true;
	if (!(p = realloc(*v, c * size)))
		return false;
	*v = p;
	*cap = c;
	return true;
}

int batch_init(struct agent *a)
{
	if (!(a->batch = calloc(1, sizeof(*a->batch))))
		return -ENOMEM;
	a->batch_gen = 1;
	return 0;
}

static void give_back(struct agent *a);

void batch_free(struct agent *a)
{
	struct batch *b = a->batch;

	if (!b)
		return;
	for (size_t i = 0; i < b->n_undo; i++) {
		b->undo[i].drop(b->undo[i].arg);
		if (b->undo[i].fd >= 0)
			close(b->undo[i].fd);
	}
	for (size_t i = 0; i < b->n_pend; i++)
		free(b->pend[i].reply);
	for (size_t i = 0; i < b->n_ev; i++)
		json_decref(b->ev[i].event);
	while (b->wait_head) {
		struct group *g = b->wait_head;

		b->wait_head = g->next;
		for (size_t i = 0; i < g->n_pend; i++)
			free(g->pend[i].reply);
		for (size_t i = 0; i < g->n_ev; i++)
			json_decref(g->ev[i]);
		free(g->pend);
		free(g->ev);
		free(g);
	}
	give_back(a);
	free(b->lent);
	free(b->undo);
	free(b->pend);
	free(b->ev);
	free(b);
	a->batch = NULL;
}

void batch_undo(struct agent *a, void (*fn)(struct agent *a, void *arg), void (*drop)(void *arg), void *arg,
		int fd)
{
	struct batch *b = a->batch;

	if (!grow((void **)&b->undo, &b->cap_undo, b->n_undo, sizeof(*b->undo))) {
		/* Without its undo the change cannot wait for the commit: taken back now, and the batch fails. */
		log_msg(LOG_ERR, "batch", "out of memory: this batch fails");
		fn(a, arg);
		(drop ? drop : free)(arg);
		if (fd >= 0)
			close(fd);
		store_poison(a->store);
		return;
	}
	b->undo[b->n_undo++] = (struct undo){ fn, drop ? drop : free, arg, fd };
}

void batch_emit(struct agent *a, json_t *event)
{
	struct batch *b = a->batch;

	if (!event)
		return;
	if (!grow((void **)&b->ev, &b->cap_ev, b->n_ev, sizeof(*b->ev))) {
		/* delivered now rather than lost */
		events_emit(a, event);
		return;
	}
	b->ev[b->n_ev++] = (struct deferred){ event, b->infra };
}

void batch_sysctl(struct agent *a, struct netns *ns)
{
	ns->sysctl_dirty = true;
	if (a->batch)
		a->batch->sysctl = true;
}

void batch_lend(struct agent *a, struct netns *ns, int fd)
{
	struct batch *b = a->batch;

	if (!grow((void **)&b->lent, &b->cap_lent, b->n_lent, sizeof(*b->lent))) {
		/* without room to remember it, it is given back now (the sysctl then reopens the netns) */
		close(fd);
		ns->fd = -1;
		return;
	}
	b->lent[b->n_lent++] = (struct lent){ ns->cookie, fd };
	ns->lent = true;
}

/* Lent descriptors go back (their netns may then be forgotten). */
static void give_back(struct agent *a)
{
	struct batch *b = a->batch;

	for (size_t i = 0; i < b->n_lent; i++) {
		struct netns *ns = netns_find(a, b->lent[i].cookie);

		if (ns && ns->lent && ns->fd == b->lent[i].fd) {
			ns->fd = -1;
			ns->lent = false;
		}
		close(b->lent[i].fd);
	}
	b->n_lent = 0;
}

bool batch_infra(struct agent *a, bool on)
{
	bool old = a->batch->infra;

	a->batch->infra = on;
	store_keep(a->store, on);
	return old;
}

void batch_reply(struct agent *a, batch_done_fn done, void *ctx, char *reply, bool changed)
{
	struct batch *b = a->batch;

	if (!grow((void **)&b->pend, &b->cap_pend, b->n_pend, sizeof(*b->pend))) {
		free(reply);
		done(ctx, NULL);
		return;
	}
	b->pend[b->n_pend++] = (struct pending){ done, ctx, reply, changed };
}

size_t batch_mark(const struct agent *a)
{
	return a->batch->n_undo;
}

bool batch_open(const struct agent *a)
{
	const struct batch *b = a->batch;

	return b->n_undo || b->n_pend || b->n_ev || b->sysctl || b->n_lent;
}

/* The replies of requests that changed something become the error code with msg. */
static void fail_changed(struct pending *pend, size_t n, int code, const char *msg)
{
	for (size_t i = 0; i < n; i++) {
		if (pend[i].changed) {
			free(pend[i].reply);
			pend[i].reply = proto_err_reply(code, msg);
		}
	}
}

bool batch_waiting(const struct agent *a)
{
	return a->batch->wait_head != NULL;
}

/* Replies and events of groups whose sync finished go out, in order; with wait, all of them. */
void batch_synced(struct agent *a, bool wait)
{
	struct batch *b = a->batch;
	char err[PATH_MAX + 256];
	uint64_t done;

	/* always read: the sync fd stays readable until it is */
	done = store_synced(a->store, wait && b->wait_tail, b->wait_tail ? b->wait_tail->gen : 0);
	while (b->wait_head && b->wait_head->gen <= done) {
		struct group *g = b->wait_head;

		if (store_sync_result(a->store, g->gen, err, sizeof(err))) {
			log_msg(LOG_ERR, "store", "%s", err);
			fail_changed(g->pend, g->n_pend, EIO, err);
		}
		for (size_t i = 0; i < g->n_ev; i++)
			events_emit(a, g->ev[i]);
		for (size_t i = 0; i < g->n_pend; i++)
			g->pend[i].done(g->pend[i].ctx, g->pend[i].reply);
		b->wait_head = g->next;
		if (!b->wait_head)
			b->wait_tail = NULL;
		/* its array serves the next batch (no malloc a batch) */
		if (!b->pend) {
			b->pend = g->pend;
			b->cap_pend = g->cap_pend;
		} else {
			free(g->pend);
		}
		free(g->ev);
		free(g);
	}
}

/*
 * The batch's replies and events wait for gen's sync (they are final:
 * errors already in place). false: no memory for the group (the caller
 * then waits for the sync and delivers them itself).
 */
static bool defer(struct agent *a, uint64_t gen, int ret)
{
	struct batch *b = a->batch;
	struct group *g = calloc(1, sizeof(*g));
	size_t n = 0;

	if (!g || (b->n_ev && !(g->ev = calloc(b->n_ev, sizeof(*g->ev))))) {
		free(g);
		return false;
	}
	for (size_t i = 0; i < b->n_ev; i++) {
		if (!ret || b->ev[i].infra)
			g->ev[n++] = b->ev[i].event;
		else
			json_decref(b->ev[i].event);
	}
	g->n_ev = n;
	g->gen = gen;
	g->pend = b->pend;
	g->n_pend = b->n_pend;
	g->cap_pend = b->cap_pend;
	b->pend = NULL;
	b->cap_pend = 0;
	if (b->wait_tail)
		b->wait_tail->next = g;
	else
		b->wait_head = g;
	b->wait_tail = g;
	return true;
}

/* Undoes everything the batch did, newest first. */
static void rollback(struct agent *a)
{
	struct batch *b = a->batch;

	for (size_t i = b->n_undo; i > 0; i--)
		b->undo[i - 1].fn(a, b->undo[i - 1].arg);
}

int batch_commit(struct agent *a, char *err, size_t errlen, bool wait)
{
	struct batch *b = a->batch;
	struct netns *ns, *tmp;
	uint64_t gen;
	bool here;
	int ret;

	/* records a failed commit kept are retried even when nothing else happened */
	if (!batch_open(a) && !store_pending(a->store)) {
		if (wait)
			batch_synced(a, true);
		return 0;
	}
	/* 1: ports about to be added become owned in the database first */
	HASH_ITER(hh, a->ns_by_cookie, ns, tmp) {
		ns->owned_before = ns->owned_db;
		ns->sysctl_ok = ns->sysctl_dirty && netns_sysctl_prepare(a, ns) == 0;
	}
	/* 2 */
	ret = store_commit(a->store, err, errlen);
	a->commits++;
	if (!ret && a->crash_after_commit)
		raise(SIGKILL); /* test hook: saved, never acknowledged */
	if (ret) {
		a->commit_failures++;
		rollback(a);
		HASH_ITER(hh, a->ns_by_cookie, ns, tmp)
			ns->owned_db = ns->owned_before;
	}
	/*
	 * 3: each changed sysctl once. After a failed commit it waits (the
	 * table may still differ from before by changes nobody asked for);
	 * a netns that could not be read is given up, as its sysctl cannot be
	 * written either (logged).
	 */
	b->sysctl = false;
	HASH_ITER(hh, a->ns_by_cookie, ns, tmp) {
		if (ns->sysctl_dirty && (!ns->sysctl_ok || (!ret && netns_sysctl_write(a, ns) == 0)))
			ns->sysctl_dirty = false;
		b->sysctl |= ns->sysctl_dirty;
	}
	give_back(a);
	HASH_ITER(hh, a->ns_by_cookie, ns, tmp)
		netns_gc(a, ns);
	/* 4: the replies final, then out now, or once the commit is synced (and every one before it) */
	if (ret)
		fail_changed(b->pend, b->n_pend, ret == -EBADMSG ? EIO : -ret, err);
	/*
	 * A lone request with nothing waiting before it (one client at a time):
	 * its sync made here, without the hand-off to the syncer and back.
	 */
	here = wait || (!b->wait_tail && b->n_pend <= 1);
	gen = ret ? 0 : store_sync_request(a->store, here);
	if (gen && here) {
		if (store_sync_result(a->store, gen, err, errlen)) {
			log_msg(LOG_ERR, "store", "%s", err);
			fail_changed(b->pend, b->n_pend, EIO, err);
		}
		gen = 0;
	}
	if (!gen && b->wait_tail)
		gen = b->wait_tail->gen;
	if (gen && (b->n_pend || b->n_ev)) {
		if (defer(a, gen, ret)) {
			b->n_ev = b->n_pend = 0;
		} else {
			/* no memory to wait: the earlier groups out first, these once synced, after them */
			batch_synced(a, true);
			store_synced(a->store, true, gen);
		}
	}
	if (wait)
		batch_synced(a, true);
	for (size_t i = 0; i < b->n_ev; i++) {
		if (!ret || b->ev[i].infra)
			events_emit(a, b->ev[i].event);
		else
			json_decref(b->ev[i].event);
	}
	for (size_t i = 0; i < b->n_pend; i++)
		b->pend[i].done(b->pend[i].ctx, b->pend[i].reply);
	for (size_t i = 0; i < b->n_undo; i++) {
		b->undo[i].drop(b->undo[i].arg);
		if (b->undo[i].fd >= 0)
			close(b->undo[i].fd);
	}
	b->n_undo = b->n_pend = b->n_ev = 0;
	a->batch_gen++;
	return ret;
}
