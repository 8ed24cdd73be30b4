// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * autoapply.c - portresd --apply FILE [--apply-prune]: the declarative file
 * of user/common/apply.h, applied once the agent is up and again whenever it
 * changes, all or nothing.
 *
 *   read -> parse -> the agent's own list -> plan -> steps, rolled back if one fails
 *
 * The requests go through ops_handle as root, exactly as portresctl apply
 * sends them. A bad file, a conflict or a failed step is one error line
 * naming the file and the cause; the agent keeps what it had and serves on
 * (exiting would put a DaemonSet in CrashLoopBackOff for one bad line).
 *
 * Changes are seen by inotify on the file's directory, not on the file: an
 * editor or `sed -i` replaces the file by a rename, and a Kubernetes
 * ConfigMap volume swaps its `..data` symlink to a new directory (the file
 * itself is a symlink through `..data` and never changes). When the file is a
 * symlink elsewhere, the directory it resolves to is watched too. Events come
 * in bursts (a ConfigMap update creates, renames and deletes several
 * entries): the file is read once they settle for SETTLE_MS (a one-shot
 * timerfd), and applied only if its text differs from what was last applied
 * successfully.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "apply.h"
#include "cgroup.h"
#include "netns_path.h"
#include "portresd.h"

#define SETTLE_MS    150
#define MAX_FILE     (4 << 20)
#define WATCH_EVENTS (IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE | IN_DELETE | IN_MOVED_FROM | IN_DELETE_SELF | \
		      IN_MOVE_SELF | IN_ONLYDIR)

/* A watched directory and the name in it that matters. */
struct slot {
	int wd;
	char dir[PATH_MAX];
	char name[NAME_MAX + 1];
};

/* The watcher of --apply FILE (a->autoapply, from autoapply_start to autoapply_stop). */
struct autoapply {
	struct slot slot[2];     /* [0] the file's directory (as given), [1] the one it resolves to, if another */
	int ifd, tfd;            /* inotify, the settle timer; -1: changes are not seen */
	char *applied;           /* the text last applied without error */
};

static void split(const char *path, char *dir, size_t dlen, char *name, size_t nlen)
{
	const char *slash = strrchr(path, '/');

	if (!slash) {
		snprintf(dir, dlen, ".");
		snprintf(name, nlen, "%s", path);
	} else {
		snprintf(dir, dlen, "%.*s", slash == path ? 1 : (int)(slash - path), path);
		snprintf(name, nlen, "%s", slash + 1);
	}
}

static void watch_slot(struct autoapply *aa, int i, const char *path)
{
	struct slot *slot = aa->slot;
	char dir[PATH_MAX], name[NAME_MAX + 1];

	if (aa->ifd < 0)
		return;
	split(path, dir, sizeof(dir), name, sizeof(name));
	snprintf(slot[i].name, sizeof(slot[i].name), "%s", name);
	if (slot[i].wd >= 0 && !strcmp(slot[i].dir, dir))
		return;
	/* the same directory gives the same watch: it is removed only when the other slot does not share it */
	if (slot[i].wd >= 0 && slot[i].wd != slot[!i].wd)
		inotify_rm_watch(aa->ifd, slot[i].wd);
	snprintf(slot[i].dir, sizeof(slot[i].dir), "%s", dir);
	slot[i].wd = inotify_add_watch(aa->ifd, dir, WATCH_EVENTS);
	if (slot[i].wd < 0)
		log_msg(LOG_ERR, "apply", "%s: cannot watch directory %s (%s): changes to the file are not seen",
			path, dir, strerror(errno));
}

/* The whole file (malloc'd, NUL-terminated), or NULL with errno. */
static char *read_file(const char *path, size_t *len)
{
	struct stat sb;
	char *buf = NULL;
	ssize_t n = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC), err;

	if (fd < 0)
		return NULL;
	if (fstat(fd, &sb)) {
		err = errno;
	} else if (!S_ISREG(sb.st_mode)) {
		err = S_ISDIR(sb.st_mode) ? EISDIR : EINVAL;
	} else if (sb.st_size > MAX_FILE) {
		err = EFBIG;
	} else if (!(buf = malloc((size_t)sb.st_size + 1))) {
		err = ENOMEM;
	} else {
		for (*len = 0; *len < (size_t)sb.st_size; *len += (size_t)n)
			if ((n = read(fd, buf + *len, (size_t)sb.st_size - *len)) <= 0)
				break;
		err = n < 0 ? errno : 0;
	}
	close(fd);
	if (err) {
		free(buf);
		errno = err;
		return NULL;
	}
	buf[*len] = '\0';
	return buf;
}

/* apply_call_fn: one request through the ops, as root. */
static int call_ops(void *arg, json_t *req, char *err, size_t len)
{
	struct agent *a = arg;
	struct peer root = { .pid = getpid(), .uid = 0, .gid = 0, .conn = -1 };
	const char *netns = json_string_value(json_object_get(req, "netns"));
	char *text, *out, path[PATH_MAX];
	json_t *reply;
	int code, nsfd = -1;

	/* the file names the netns: the administrator's, so the agent opens it itself */
	if (netns && (nsfd = netns_spec_open(netns, path, sizeof(path), err, len)) < 0)
		return nsfd;
	if (!(text = json_dumps(req, JSON_COMPACT))) {
		if (nsfd >= 0)
			close(nsfd);
		snprintf(err, len, "out of memory");
		return -ENOMEM;
	}
	out = ops_handle(a, &root, text, strlen(text), nsfd, NULL, NULL, NULL);
	if (nsfd >= 0)
		close(nsfd);
	free(text);
	reply = out ? json_loads(out, 0, NULL) : NULL;
	free(out);
	if (!reply) {
		snprintf(err, len, "out of memory");
		return -ENOMEM;
	}
	if (json_is_true(json_object_get(reply, "ok"))) {
		json_decref(reply);
		return 0;
	}
	code = proto_errno_from_name(json_string_value(json_object_get(reply, "errno")) ?: "");
	snprintf(err, len, "%s", json_string_value(json_object_get(reply, "error")) ?: "refused");
	json_decref(reply);
	return code ? -code : -EIO;
}

/* The agent's reservations as the planner reads them: the list op's reply. */
static json_t *current(struct agent *a)
{
	struct peer root = { .pid = getpid(), .conn = -1 };
	static const char req[] = "{\"v\":1,\"op\":\"list\"}";
	char *out = ops_handle(a, &root, req, sizeof(req) - 1, -1, NULL, NULL, NULL);
	json_t *reply = out ? json_loads(out, 0, NULL) : NULL;

	free(out);
	return reply;
}

static void apply_now(struct agent *a)
{
	struct autoapply *aa = a->autoapply;
	const char *file = a->opts.apply_file;
	struct apply_opts ao = { .prune = a->opts.apply_prune, .netns_inode = a->own_ns->inode, .check_cgroups = true };
	struct apply_file f = { 0 };
	struct apply_plan plan = { 0 };
	char err[APPLY_ERR_LEN], real[PATH_MAX], steps[APPLY_ERR_LEN] = "";
	json_t *cur = NULL;
	size_t len = 0, done = 0, n;
	char *text = read_file(file, &len);

	/* a symlink elsewhere: watch where it leads now (a swapped ..data is seen in [0]) */
	if (realpath(file, real))
		watch_slot(aa, 1, real);
	if (!text) {
		log_msg(LOG_ERR, "apply", "%s: cannot read: %s; keeping the current reservations", file, strerror(errno));
		goto out;
	}
	if (aa->applied && !strcmp(aa->applied, text)) {
		log_msg(LOG_DEBUG, "apply", "%s: unchanged", file);
		goto out;
	}
	if (apply_file_parse(text, len, file, cgroup2_mount(), &f, err, sizeof(err)) ||
	    apply_file_resolve_netns(&f, file, err, sizeof(err))) {
		log_msg(LOG_ERR, "apply", "%s; keeping the current reservations", err);
		goto out;
	}
	if (!(cur = current(a))) {
		log_msg(LOG_ERR, "apply", "%s: out of memory; keeping the current reservations", file);
		goto out;
	}
	if (apply_plan(&f, cur, &ao, &plan, err, sizeof(err))) {
		log_msg(LOG_ERR, "apply", "%s: %s; nothing changed", file, err);
		goto out;
	}
	if (apply_check_holders(&plan, call_ops, a, err, sizeof(err))) {
		log_msg(LOG_ERR, "apply", "%s: %s; nothing changed", file, err);
		goto out;
	}
	if (apply_execute(&plan, call_ops, a, &done, err, sizeof(err))) {
		log_msg(LOG_ERR, "apply", "%s: %s", file, err);
		goto out;
	}
	for (size_t i = 0; i < plan.n && (n = strlen(steps)) < sizeof(steps) - 1; i++)
		snprintf(steps + n, sizeof(steps) - n, "%s%s", i ? "; " : ": ", plan.steps[i].desc);
	log_msg(LOG_INFO, "apply", "%s: %zu change%s applied, %zu unchanged%s", file, plan.n, plan.n == 1 ? "" : "s",
		plan.unchanged, steps);
	free(aa->applied);
	aa->applied = text;
	text = NULL;
out:
	apply_plan_free(&plan);
	apply_file_free(&f);
	json_decref(cur);
	free(text);
}

void autoapply_start(struct agent *a, int *ifd, int *tfd)
{
	struct autoapply *aa;

	*ifd = *tfd = -1;
	if (!a->opts.apply_file)
		return;
	if (!(aa = calloc(1, sizeof(*aa)))) {
		log_msg(LOG_ERR, "apply", "%s: out of memory: not applied", a->opts.apply_file);
		return;
	}
	aa->slot[0].wd = aa->slot[1].wd = -1;
	aa->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	aa->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (aa->ifd < 0 || aa->tfd < 0) {
		log_msg(LOG_ERR, "apply", "%s: cannot watch it (%s): applied once, changes are not seen",
			a->opts.apply_file, strerror(errno));
		if (aa->ifd >= 0)
			close(aa->ifd);
		if (aa->tfd >= 0)
			close(aa->tfd);
		aa->ifd = aa->tfd = -1;
	}
	a->autoapply = aa;
	watch_slot(aa, 0, a->opts.apply_file);
	apply_now(a);
	*ifd = aa->ifd;
	*tfd = aa->tfd;
}

void autoapply_changed(struct agent *a)
{
	char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
	struct itimerspec settle = { .it_value = { .tv_nsec = SETTLE_MS * 1000000L } };
	struct autoapply *aa = a->autoapply;
	bool relevant = false;
	ssize_t n;

	while (aa && (n = read(aa->ifd, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;

			p += sizeof(*ev) + ev->len;
			for (int i = 0; i < 2; i++) {
				struct slot *slot = &aa->slot[i];

				if (slot->wd < 0 || ev->wd != slot->wd)
					continue;
				if (ev->mask & IN_IGNORED) {
					slot->wd = -1;
					if (i == 0)
						log_msg(LOG_WARN, "apply", "%s: its directory %s was removed; "
							"changes are no longer seen", a->opts.apply_file, slot->dir);
					relevant = true;
				} else if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
					relevant = true;
				} else if (ev->len && (!strcmp(ev->name, slot->name) || !strcmp(ev->name, "..data"))) {
					relevant = true;
				}
			}
		}
	}
	if (relevant)
		timerfd_settime(aa->tfd, 0, &settle, NULL);
}

void autoapply_timer(struct agent *a)
{
	uint64_t expired;

	if (!a->autoapply || read(a->autoapply->tfd, &expired, sizeof(expired)) != sizeof(expired))
		return;
	apply_now(a);
}

void autoapply_stop(struct agent *a)
{
	struct autoapply *aa = a->autoapply;

	if (!aa)
		return;
	if (aa->ifd >= 0)
		close(aa->ifd);
	if (aa->tfd >= 0)
		close(aa->tfd);
	free(aa->applied);
	free(aa);
	a->autoapply = NULL;
}
