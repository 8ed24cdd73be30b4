// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * cgwatch.c - an attachment to a cgroup that is removed is dropped: from the
 * BPF map, the table and the state file.
 *
 * How removals are seen: inotify on the *parent* directory of each attached
 * cgroup (IN_DELETE carrying the cgroup's name). cgroupfs (kernfs) reports
 * neither IN_DELETE_SELF nor IN_IGNORED on a removed cgroup directory itself
 * (tried on 6.18), but an rmdir reaches the parent's watchers as on any file
 * system. (cgroup2 refuses rename, so a name stays its cgroup's.) Each event
 * is checked against the cgroup id (cgroup2_path: open_by_handle_at), so a
 * sibling of the same name made anew never keeps a stale attachment alive,
 * and a doubt never drops one. No timer and no polling; only when a watch
 * cannot be added (inotify limits) are those attachments checked every
 * FALLBACK_SEC on the loop's once-a-second turn.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

#include "cgroup.h"
#include "portresd.h"

#define FALLBACK_SEC 5

/* One attached cgroup: which watch (of its parent) sees it go, by which name. */
struct cgw {
	uint64_t id;
	int wd;                  /* -1: not watched (fallback) */
	bool check;              /* an event named it */
	char name[NAME_MAX + 1];
};

/* The agent's watches (a->cgwatch, from cgwatch_open to cgwatch_close). */
struct cgwatch {
	struct cgw *w;
	size_t n;
	int ifd;                 /* inotify */
	time_t last_fallback;
	bool warned;             /* a watch could not be added: said once */
};

static struct cgw *cgw_find(struct cgwatch *cw, uint64_t id)
{
	for (size_t i = 0; i < cw->n; i++)
		if (cw->w[i].id == id)
			return &cw->w[i];
	return NULL;
}

static long attach_index(struct agent *a, uint64_t id)
{
	for (size_t i = 0; i < a->st.n_attach; i++)
		if (a->st.attach[i].cgroup_id == id)
			return (long)i;
	return -1;
}

static void cgw_forget(struct cgwatch *cw, size_t k)
{
	int wd = cw->w[k].wd;

	cw->w[k] = cw->w[--cw->n];
	for (size_t i = 0; i < cw->n; i++)
		if (cw->w[i].wd == wd)
			return;
	if (wd >= 0)
		inotify_rm_watch(cw->ifd, wd);
}

/* Forgets the entries whose cgroup has no attachment left. */
static void forget_unattached(struct agent *a)
{
	struct cgwatch *cw = a->cgwatch;

	for (size_t k = cw->n; k-- > 0;)
		if (attach_index(a, cw->w[k].id) < 0)
			cgw_forget(cw, k);
}

/*
 * Whether attachment i still has its cgroup: -ENOENT when the cgroup is gone;
 * otherwise 0, with real (the cgroup's path; "" if it could not be found).
 * "cgroup-id:N", the path of a runtime attachment adopted at start, is
 * replaced by real. Any other failure counts as present: nothing is dropped
 * on a doubt.
 */
static int verify(struct agent *a, size_t i, char *real, size_t len)
{
	struct state_attach *at = &a->st.attach[i];
	char *copy;
	int err = cgroup2_path(at->cgroup_id, real, len);

	if (err == -ENOENT)
		return -ENOENT;
	if (err) {
		real[0] = '\0';
		return 0;
	}
	if (!strncmp(at->path, "cgroup-id:", 10) && (copy = strdup(real))) {
		free(at->path);
		at->path = copy;
	}
	return 0;
}

/* Nobody asked for it: it stays done and recorded whatever becomes of the batch. */
static void drop(struct agent *a, size_t i, bool *save)
{
	struct state_attach *at = &a->st.attach[i];
	struct resv *r = resv_find(a, at->token);
	uint64_t id = at->cgroup_id;
	char tok[17];
	bool infra;

	state_token_format(at->token, tok);
	log_msg(LOG_INFO, "cgroup", "%s was removed: its attachment to token %s is dropped", at->path, tok);
	if (r && r->r.kind == PORTRES_KIND_PERSISTENT) {
		infra = batch_infra(a, true);
		store_del_attach(a->store, at->cgroup_id, r->r.proto);
		batch_infra(a, infra);
		*save = true;
	}
	attach_del(a, i);
	cgroup_map_sync(a, id);
}

/* Watches the parent of attachment i's cgroup (found at real); drops i if the cgroup went meanwhile. */
static void watch(struct agent *a, size_t i, const char *real, bool *save)
{
	struct cgwatch *cw = a->cgwatch;
	struct cgw *w = cgw_find(cw, a->st.attach[i].cgroup_id);
	char dir[PATH_MAX], again[PATH_MAX];
	const char *slash = strrchr(real, '/');

	if (!w) {
		void *grown = realloc(cw->w, (cw->n + 1) * sizeof(*cw->w));

		if (!grown)
			return;
		cw->w = grown;
		w = &cw->w[cw->n++];
		*w = (struct cgw){ .id = a->st.attach[i].cgroup_id, .wd = -1 };
	}
	if (!slash || slash == real || (size_t)(slash - real) >= sizeof(dir))
		return; /* "/": never removed */
	snprintf(w->name, sizeof(w->name), "%s", slash + 1);
	snprintf(dir, sizeof(dir), "%.*s", (int)(slash - real), real);
	w->wd = inotify_add_watch(cw->ifd, dir, IN_DELETE | IN_ONLYDIR);
	if (w->wd < 0 && !cw->warned) {
		cw->warned = true;
		log_msg(LOG_WARN, "cgroup", "cannot watch %s (%s): removed cgroups are noticed within %d s instead",
			dir, strerror(errno), FALLBACK_SEC);
	}
	/* it may have gone between the lookup and the watch */
	if (w->wd >= 0 && verify(a, i, again, sizeof(again)) == -ENOENT)
		drop(a, i, save);
}

int cgwatch_open(struct agent *a)
{
	struct cgwatch *cw = calloc(1, sizeof(*cw));

	if (!cw)
		return -ENOMEM;
	cw->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (cw->ifd < 0) {
		int err = -errno;

		free(cw);
		return err;
	}
	a->cgwatch = cw;
	a->attach_dirty = true;
	return cw->ifd;
}

void cgwatch_sync(struct agent *a)
{
	char real[PATH_MAX];
	bool save = false;

	a->attach_dirty = false;
	if (!a->cgwatch)
		return;
	forget_unattached(a);
	for (size_t i = a->st.n_attach; i-- > 0;) {
		struct cgw *w = cgw_find(a->cgwatch, a->st.attach[i].cgroup_id);

		if (w && w->wd >= 0)
			continue;
		if (verify(a, i, real, sizeof(real)) == -ENOENT)
			drop(a, i, &save);
		else if (real[0])
			watch(a, i, real, &save);
	}
	forget_unattached(a);
	/* dropped attachments are written with the turn's batch, which the loop commits */
	(void)save;
}

/* Checks the entries marked (all with all): drops those whose cgroup is gone. */
static void check_marked(struct agent *a, bool all)
{
	struct cgwatch *cw = a->cgwatch;
	char real[PATH_MAX];
	bool save = false;

	for (size_t k = cw->n; k-- > 0;) {
		long i;

		if (!all && !cw->w[k].check)
			continue;
		cw->w[k].check = false;
		/* a cgroup may hold two blocks (TCP and UDP): both go */
		while ((i = attach_index(a, cw->w[k].id)) >= 0 && verify(a, (size_t)i, real, sizeof(real)) == -ENOENT)
			drop(a, (size_t)i, &save);
	}
	forget_unattached(a);
	/* dropped attachments are written with the turn's batch, which the loop commits */
	(void)save;
}

void cgwatch_run(struct agent *a)
{
	char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
	struct cgwatch *cw = a->cgwatch;
	bool any = false, all = false;
	ssize_t n;

	while (cw && (n = read(cw->ifd, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;

			p += sizeof(*ev) + ev->len;
			if (ev->mask & IN_Q_OVERFLOW)
				all = true;
			for (size_t k = 0; k < cw->n; k++) {
				struct cgw *w = &cw->w[k];

				if (w->wd != ev->wd)
					continue;
				if (ev->mask & IN_IGNORED) {
					/* the parent itself went (or its file system): check, and watch anew */
					w->wd = -1;
					w->check = any = true;
					a->attach_dirty = true;
				} else if (ev->len && !strcmp(w->name, ev->name)) {
					w->check = any = true;
				}
			}
		}
	}
	if (any || all)
		check_marked(a, all);
}

void cgwatch_tick(struct agent *a)
{
	struct cgwatch *cw = a->cgwatch;
	time_t now = time(NULL);
	bool any = false;

	if (!cw || now - cw->last_fallback < FALLBACK_SEC)
		return;
	cw->last_fallback = now;
	for (size_t k = 0; k < cw->n; k++)
		if (cw->w[k].wd < 0)
			cw->w[k].check = any = true;
	if (any)
		check_marked(a, false);
}

void cgwatch_close(struct agent *a)
{
	struct cgwatch *cw = a->cgwatch;

	if (!cw)
		return;
	close(cw->ifd);
	free(cw->w);
	free(cw);
	a->cgwatch = NULL;
}
