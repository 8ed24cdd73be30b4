// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * portresd - the agent that owns portres's BPF programs, maps, state file and
 * sysctl entries, and serves the management API on a Unix socket.
 *
 * Start: flags -> another agent on the socket? (then stop, touching nothing)
 * -> feature probe -> state file -> loader (load or adopt pins, attach) ->
 * reconcile maps with the state file -> serve. SIGTERM/SIGINT stop
 * the agent and leave enforcement in place; --teardown removes it.
 */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <limits.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <libgen.h>
#include <linux/magic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "cgroup.h"
#include "portres.h"
#include "portresd.h"

#define MIN_KERNEL_MAJOR 6
#define MIN_KERNEL_MINOR 1

static const char usage[] =
	"usage: portresd [options]\n"
	"  --cgroup PATH           cgroup2 directory to attach at (default: the cgroup2 mount)\n"
	"  --bpffs DIR             pins go here (default /sys/fs/bpf/portres)\n"
	"  --socket PATH           API socket (default " PORTRES_DEFAULT_SOCKET ")\n"
	"  --state-dir DIR         persistent state (default /var/lib/portres)\n"
	"  --admin-group NAME      group allowed to manage persistent reservations (default portres)\n"
	"  --metrics-listen A:P    serve Prometheus metrics on http://A:P/metrics\n"
	"  --apply FILE            once up, make the named persistent reservations and attachments\n"
	"                          those of FILE (portresctl apply's format), all or nothing, and again\n"
	"                          whenever FILE changes; on an error log it and keep what is there\n"
	"  --apply-prune           with --apply: also delete named persistent reservations FILE lacks\n"
	"  --quota N               runtime ports per uid (default 4096; root is exempt); an acquire\n"
	"                          beyond it fails with EDQUOT\n"
	"  --max-reservations N    reservations the maps hold, both protocols (default 16384; each\n"
	"                          costs 40 bytes of counters per CPU); pinned maps keep their size\n"
	"  --user-ports LO-HI      the ports unprivileged users may acquire, chosen or wildcard (default:\n"
	"                          the low end of ip_local_port_range to 65535), never below\n"
	"                          ip_unprivileged_port_start, both of the socket's netns; outside it:\n"
	"                          EACCES; root and the admin group are not limited\n"
	"  --max-clients N         connections of unprivileged users, all together (default 1024);\n"
	"                          root and the admin group are never refused\n"
	"  --max-clients-per-uid N connections of one unprivileged uid (default 64); past a limit a\n"
	"                          connection gets an EUSERS reply and is closed\n"
	"  --stall-timeout SEC     a client (events subscribers too) leaving the agent's messages unread\n"
	"                          this long is dropped (default 30)\n"
	"  --log-format text|json  log lines on stderr (default text)\n"
	"  --events-log-size B     events kept in STATE-DIR/events.log, rotated at B bytes (default\n"
	"                          1048576; twice that is kept; 0: none)\n"
	"  --foreground            do not detach from the terminal\n"
	"  --teardown              remove programs, pins and portres's sysctl entries, then exit\n"
	"  --adopt-pins            when pins hold persistent reservations and the state file is missing:\n"
	"                          rebuild it from the maps (reservations, grants, attachments; names\n"
	"                          are lost); without it or --reset the agent refuses to start then\n"
	"  --reset                 in that case, remove those reservations on purpose instead\n"
	"  -v, --verbose           debug logs, libbpf's included\n";

static int verbose_level;

static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	/* libbpf's own logs are debug output unless -v. */
	if (level == LIBBPF_DEBUG && verbose_level < 2)
		return 0;
	if (level != LIBBPF_WARN && !verbose_level)
		return 0;
	return vfprintf(stderr, fmt, ap);
}

static bool fs_is(const char *path, long magic)
{
	struct statfs sf;

	return statfs(path, &sf) == 0 && sf.f_type == magic;
}

/* The pin directory on a bpf filesystem; mounts bpffs at /sys/fs/bpf if nothing is there. */
static int ensure_bpffs(const char *dir, char *why, size_t len)
{
	char *copy = strdup(dir), *parent;
	int err = 0;

	if (!copy)
		return -ENOMEM;
	parent = dirname(copy);
	if (fs_is(dir, BPF_FS_MAGIC))
		goto out;
	if (!fs_is(parent, BPF_FS_MAGIC)) {
		if (strcmp(parent, "/sys/fs/bpf") || mount("bpf", parent, "bpf", 0, "mode=0700")) {
			snprintf(why, len, "bpffs: %s is not on a bpf filesystem (mount -t bpf bpf %s)", dir, parent);
			err = -ENODEV;
			goto out;
		}
		log_msg(LOG_INFO, "start", "mounted bpffs at %s", parent);
	}
	if (mkdir(dir, 0700) && errno != EEXIST) {
		snprintf(why, len, "bpffs: cannot create %s: %s", dir, strerror(errno));
		err = -errno;
	}
out:
	free(copy);
	return err;
}

/* Names the first missing feature in why. */
static int probe(struct agent_opts *o, char *why, size_t len)
{
	struct utsname u;
	int major = 0, minor = 0;

	if (geteuid() != 0) {
		snprintf(why, len, "privileges: portresd runs as root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)");
		return -EPERM;
	}
	if (uname(&u) || sscanf(u.release, "%d.%d", &major, &minor) != 2 ||
	    major < MIN_KERNEL_MAJOR || (major == MIN_KERNEL_MAJOR && minor < MIN_KERNEL_MINOR)) {
		snprintf(why, len, "kernel: %s is older than %d.%d (needs bpf_set_retval, cgroup/sock_release, "
			 "SO_NETNS_COOKIE, sk_storage from sockopt programs)", u.release, MIN_KERNEL_MAJOR,
			 MIN_KERNEL_MINOR);
		return -ENOSYS;
	}
	if (access("/sys/kernel/btf/vmlinux", R_OK)) {
		snprintf(why, len, "BTF: /sys/kernel/btf/vmlinux is missing (kernel built without CONFIG_DEBUG_INFO_BTF)");
		return -ENOENT;
	}
	if (!o->cgroup) {
		snprintf(why, len, "cgroup2: no cgroup2 mount in /proc/self/mountinfo (mount -t cgroup2 none /sys/fs/cgroup)");
		return -ENOENT;
	}
	if (!fs_is(o->cgroup, CGROUP2_SUPER_MAGIC)) {
		snprintf(why, len, "cgroup2: %s is not a cgroup2 directory", o->cgroup);
		return -ENOTDIR;
	}
	return ensure_bpffs(o->bpffs, why, len);
}

/* --- reconcile ------------------------------------------------------------ */

struct seen {
	uint64_t token;
	struct portres_resv r;
};

struct seen_list {
	struct seen *v;
	size_t n;
};

static int collect_resv(uint64_t token, const struct portres_resv *r, void *arg)
{
	struct seen_list *l = arg;
	struct seen *n = realloc(l->v, (l->n + 1) * sizeof(*n));

	if (!n)
		return -ENOMEM;
	l->v = n;
	n[l->n++] = (struct seen){ token, *r };
	return 0;
}

struct seen_cg {
	uint64_t id;
	struct portres_cgroup c;
};

struct seen_cg_list {
	struct seen_cg *v;
	size_t n;
};

static int collect_cg(uint64_t id, const struct portres_cgroup *c, void *arg)
{
	struct seen_cg_list *l = arg;
	struct seen_cg *n = realloc(l->v, (l->n + 1) * sizeof(*n));

	if (!n)
		return -ENOMEM;
	l->v = n;
	n[l->n++] = (struct seen_cg){ id, *c };
	return 0;
}

static uint32_t uid_of_pid(uint32_t pid)
{
	char path[64], line[256];
	unsigned int uid = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%u/status", pid);
	if (!(f = fopen(path, "re")))
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Uid: %u", &uid) == 1)
			break;
	fclose(f);
	return uid;
}

/*
 * The state file is the truth for persistent reservations, the maps for
 * runtime ones: dead runtime reservations (their socket closed while no agent
 * ran) are swept, persistent entries the file does not know are removed,
 * those it has and the maps lack are added, with their grants and attachments.
 */
static int reconcile(struct agent *a)
{
	struct seen_list seen = { 0 };
	struct seen_cg_list cgs = { 0 };
	char err_msg[STATE_ERR_LEN];
	bool changed = false;
	int err;

	if ((err = portres_resv_foreach(a->loader, collect_resv, &seen)))
		goto cleanup;
	for (size_t i = 0; i < seen.n; i++) {
		const struct seen *s = &seen.v[i];
		const struct state_resv *sr = state_find_token(&a->st, s->token);
		char tok[17];

		state_token_format(s->token, tok);
		if (s->r.flags & PORTRES_RESV_DEAD) {
			log_msg(LOG_INFO, "reconcile", "token %s: released while no agent ran; removed", tok);
			portres_resv_del(a->loader, s->token);
		} else if (s->r.kind == PORTRES_KIND_RUNTIME) {
			struct netns *ns = netns_get(a, s->r.netns, -1);

			if (!ns || (err = resv_insert(a, s->token, &s->r, uid_of_pid(s->r.owner_tgid), ns)))
				goto cleanup;
			netns_adopt(a, ns, s->r.owner_tgid);
			log_msg(LOG_INFO, "reconcile", "runtime token %s of pid %u adopted", tok, s->r.owner_tgid);
		} else if (!sr || s->r.netns != (sr->netns ? sr->netns : a->own_ns->cookie) || s->r.proto != sr->proto ||
			   s->r.start != sr->start || s->r.count != sr->count) {
			log_msg(LOG_WARN, "reconcile", "persistent token %s in the maps differs from the state file; removed", tok);
			portres_resv_del(a->loader, s->token);
		} else {
			struct portres_resv r = s->r;

			if (r.mode != sr->mode) {
				portres_resv_set_mode(a->loader, s->token, sr->mode);
				r.mode = sr->mode;
			}
			if ((err = resv_insert(a, s->token, &r, 0, sr->netns ? netns_find(a, sr->netns) : a->own_ns)))
				goto cleanup;
		}
	}
	for (size_t i = 0; i < a->st.n_resv; i++) {
		const struct state_resv *sr = &a->st.resv[i];
		struct netns *ns = sr->netns ? netns_find(a, sr->netns) : a->own_ns;
		struct portres_resv r = { .netns = ns->cookie, .start = sr->start, .count = sr->count,
					  .proto = sr->proto, .kind = PORTRES_KIND_PERSISTENT, .mode = sr->mode };
		char tok[17];

		state_token_format(sr->token, tok);
		if (!resv_find(a, sr->token)) {
			if ((err = portres_resv_add(a->loader, sr->token, &r))) {
				log_msg(LOG_ERR, "reconcile", "persistent token %s (%s %u-%u): cannot load: %s", tok,
					state_proto_name(sr->proto), sr->start, sr->start + sr->count - 1, strerror(-err));
				goto cleanup;
			}
			if ((err = resv_insert(a, sr->token, &r, 0, ns)))
				goto cleanup;
			log_msg(LOG_INFO, "reconcile", "persistent token %s loaded from the state file", tok);
		}
		for (size_t g = 0; g < sr->n_grants; g++)
			portres_grant_add(a->loader, sr->token, sr->grants[g].type, sr->grants[g].id);
	}
	/* Attachments: drop those of gone tokens, re-resolve the saved ones by path. */
	if ((err = portres_cgroup_foreach(a->loader, collect_cg, &cgs)))
		goto cleanup;
	for (size_t i = 0; i < cgs.n; i++) {
		const uint64_t tokens[] = { cgs.v[i].c.tcp_token, cgs.v[i].c.udp_token };
		uint32_t flags = cgs.v[i].c.flags;

		for (size_t k = 0; k < 2; k++) {
			struct resv *r = tokens[k] ? resv_find(a, tokens[k]) : NULL;
			char path[64];
			/* Who made it is not in the maps: its reservation's owner, an administrator if root. */
			struct state_attach at = { .path = path, .cgroup_id = cgs.v[i].id, .token = tokens[k],
						   .confine = flags & PORTRES_CG_CONFINE_ALL ? STATE_CONFINE_ALL
							      : flags & PORTRES_CG_CONFINE ? STATE_CONFINE : 0 };

			if (!r || r->r.kind != PORTRES_KIND_RUNTIME)
				continue;
			at.by_admin = r->uid == 0;
			at.by_uid = r->uid;
			/* Runtime attachments are not saved; only the id is known now (cgwatch_sync finds the path). */
			snprintf(path, sizeof(path), "cgroup-id:%llu", (unsigned long long)cgs.v[i].id);
			state_add_attach(&a->st, &at);
		}
		/* what the saved and adopted attachments make of it (none: it goes) */
		cgroup_map_sync(a, cgs.v[i].id);
	}
	for (size_t j = a->st.n_attach; j-- > 0;) {
		struct state_attach *at = &a->st.attach[j];
		uint64_t id;

		if (!state_find_token(&a->st, at->token))
			continue;
		if (portres_cgroup_id(at->path, &id)) {
			log_msg(LOG_WARN, "reconcile", "cgroup %s is gone; attachment dropped", at->path);
			state_del_attach(&a->st, j);
			changed = true;
			continue;
		}
		if (id != at->cgroup_id) {
			uint64_t was = at->cgroup_id;

			at->cgroup_id = id;
			cgroup_map_sync(a, was);
			changed = true;
		}
		cgroup_map_sync(a, at->cgroup_id);
	}
	if (changed)
		agent_save(a, true, err_msg, sizeof(err_msg));
	a->attach_dirty = true;
	for (size_t i = 0; i < a->n_ns; i++)
		netns_sync_sysctl(a, a->ns[i]);
	err = 0;
cleanup:
	free(seen.v);
	free(cgs.v);
	return err;
}

/* --- a missing state file ------------------------------------------------- */

/* Persistent reservations in the pins of an earlier agent, read before anything is loaded; their ports into ports. */
static size_t pinned_persistent(const struct agent *a, struct portset *ports)
{
	char path[PATH_MAX];
	__u64 key, next, *prev = NULL;
	struct portres_resv r;
	size_t n = 0;
	int fd;

	snprintf(path, sizeof(path), "%s/maps/portres_resv", a->opts.bpffs);
	if ((fd = bpf_obj_get(path)) < 0)
		return 0;
	while (bpf_map_get_next_key(fd, prev, &next) == 0) {
		if (bpf_map_lookup_elem(fd, &next, &r) == 0 && r.kind == PORTRES_KIND_PERSISTENT) {
			portset_add(ports, r.start, r.count);
			n++;
		}
		key = next;
		prev = &key;
	}
	close(fd);
	return n;
}

/*
 * Pins that hold persistent reservations with no state file (deleted, or a
 * wrong --state-dir): reconciling would remove them from the maps and their
 * enforcement would end silently. The operator says which way: --adopt-pins
 * (*adopt: rebuild the state from the maps) or --reset. -1: refuse, nothing
 * touched.
 */
static int missing_state(struct agent *a, bool *adopt)
{
	struct portset pinned, current;
	char path[PATH_MAX];
	size_t n;

	portset_clear(&pinned);
	snprintf(path, sizeof(path), "%s/%s", a->opts.state_dir, STATE_FILE);
	if (access(path, F_OK) == 0 || errno != ENOENT || !(n = pinned_persistent(a, &pinned)))
		return 0;
	/*
	 * Which ip_local_reserved_ports entries portres added went with the
	 * file: those of the pinned blocks are taken for its own (adopt: removed
	 * with their reservation later; reset: now).
	 */
	if ((a->opts.adopt_pins || a->opts.reset) && portset_read(SYSCTL_RESERVED_PORTS, &current) == 0)
		for (size_t i = 0; i < sizeof(pinned.w) / sizeof(pinned.w[0]); i++)
			a->st.sysctl_added.w[i] = pinned.w[i] & current.w[i];
	if (a->opts.adopt_pins) {
		log_msg(LOG_WARN, "start", "--adopt-pins: %s does not exist; it is rebuilt from the %zu persistent "
			"reservation%s pinned in %s", path, n, n == 1 ? "" : "s", a->opts.bpffs);
		*adopt = true;
		return 0;
	}
	if (a->opts.reset) {
		log_msg(LOG_WARN, "start", "--reset: %s does not exist; the %zu persistent reservation%s pinned in %s "
			"%s removed", path, n, n == 1 ? "" : "s", a->opts.bpffs, n == 1 ? "is" : "are");
		return 0;
	}
	log_msg(LOG_ERR, "start", "the pins in %s hold %zu persistent reservation%s but the state file %s does not "
		"exist (deleted, or a wrong --state-dir?): refusing to start, nothing was changed; --adopt-pins "
		"rebuilds the state file from the pins, --reset removes them", a->opts.bpffs, n, n == 1 ? "" : "s",
		path);
	return -1;
}

/* Adds the grants pinned for the state's reservations to them. */
static int adopt_grants(struct agent *a)
{
	char path[PATH_MAX], cg[PATH_MAX];
	struct portres_grant_key key, next, *prev = NULL;
	int fd, err = 0;

	snprintf(path, sizeof(path), "%s/maps/portres_grants", a->opts.bpffs);
	if ((fd = bpf_obj_get(path)) < 0)
		return -errno;
	while (!err && bpf_map_get_next_key(fd, prev, &next) == 0) {
		struct state_resv *sr = state_find_token(&a->st, next.token);
		struct state_grant *g;

		key = next;
		prev = &key;
		if (!sr || !(g = realloc(sr->grants, (sr->n_grants + 1) * sizeof(*g)))) {
			err = sr ? -ENOMEM : 0;
			continue;
		}
		sr->grants = g;
		g[sr->n_grants] = (struct state_grant){ .type = next.type, .id = next.id };
		if (next.type == PORTRES_GRANT_CGROUP && !cgroup2_path(next.id, cg, sizeof(cg)))
			g[sr->n_grants].path = strdup(cg);
		sr->n_grants++;
	}
	close(fd);
	return err;
}

/* --adopt-pins: the persistent reservations, grants and attachments of the maps become the state file. */
static int adopt_pins(struct agent *a)
{
	struct seen_list seen = { 0 };
	struct seen_cg_list cgs = { 0 };
	char err_msg[STATE_ERR_LEN], path[PATH_MAX];
	size_t n_at = 0;
	int err;

	if ((err = portres_resv_foreach(a->loader, collect_resv, &seen)) ||
	    (err = portres_cgroup_foreach(a->loader, collect_cg, &cgs)))
		goto cleanup;
	for (size_t i = 0; i < seen.n; i++) {
		const struct portres_resv *r = &seen.v[i].r;
		struct state_resv sr = { .token = seen.v[i].token, .proto = r->proto, .mode = r->mode,
					 .start = r->start, .count = r->count };

		if (r->kind == PORTRES_KIND_PERSISTENT && r->netns == a->own_ns->cookie &&
		    (err = state_add_resv(&a->st, &sr)))
			goto cleanup;
	}
	if ((err = adopt_grants(a)))
		goto cleanup;
	for (size_t i = 0; i < 2 * cgs.n; i++) {
		/* each slot (TCP, UDP) of a cgroup is an attachment */
		const struct portres_cgroup *c = &cgs.v[i / 2].c;
		struct state_attach at = { .path = path, .cgroup_id = cgs.v[i / 2].id,
					   .token = i % 2 ? c->udp_token : c->tcp_token,
					   .confine = c->flags & PORTRES_CG_CONFINE_ALL ? STATE_CONFINE_ALL
						      : c->flags & PORTRES_CG_CONFINE ? STATE_CONFINE : 0,
					   .by_admin = true };

		if (!at.token || !state_find_token(&a->st, at.token))
			continue;
		if (cgroup2_path(at.cgroup_id, path, sizeof(path))) {
			log_msg(LOG_WARN, "start", "--adopt-pins: cgroup %llu (attached to token %016llx) not found; "
				"attachment dropped", (unsigned long long)at.cgroup_id, (unsigned long long)at.token);
			continue;
		}
		if ((err = state_add_attach(&a->st, &at)))
			goto cleanup;
		n_at++;
	}
	if (state_validate(&a->st, "pins", err_msg, sizeof(err_msg))) {
		log_msg(LOG_ERR, "start", "--adopt-pins: %s", err_msg);
		err = -EINVAL;
		goto cleanup;
	}
	if ((err = agent_save(a, true, err_msg, sizeof(err_msg))))
		goto cleanup;
	log_msg(LOG_INFO, "start", "--adopt-pins: state file rebuilt: %zu persistent reservation%s, %zu attachment%s "
		"(names are not kept in the maps: none)", a->st.n_resv, a->st.n_resv == 1 ? "" : "s", n_at,
		n_at == 1 ? "" : "s");
cleanup:
	free(seen.v);
	free(cgs.v);
	return err;
}

/* --- teardown ------------------------------------------------------------- */

static int teardown(struct agent *a)
{
	char err_msg[STATE_ERR_LEN];
	bool have_state;
	int err;

	have_state = state_load(a->opts.state_dir, &a->st, err_msg, sizeof(err_msg)) == 0;
	if (!have_state)
		log_msg(LOG_WARN, "teardown", "%s; ip_local_reserved_ports left as it is", err_msg);
	if (have_state && netns_teardown(a))
		agent_save(a, true, err_msg, sizeof(err_msg));
	if (have_state && !portset_empty(&a->st.sysctl_added)) {
		struct portset none;

		portset_clear(&none);
		if ((err = sysctl_ports_sync(SYSCTL_RESERVED_PORTS, &none, &a->st.sysctl_added, NULL)))
			log_msg(LOG_WARN, "teardown", "ip_local_reserved_ports: %s", strerror(-err));
		else
			agent_save(a, true, err_msg, sizeof(err_msg));
	}
	err = portres_loader_teardown(a->loader);
	a->loader = NULL;
	if (err) {
		log_msg(LOG_ERR, "teardown", "removing programs and pins: %s", strerror(-err));
		return 1;
	}
	log_msg(LOG_INFO, "teardown", "programs, links and pins under %s removed; the state file is kept", a->opts.bpffs);
	return 0;
}

/* --- main ----------------------------------------------------------------- */

/* A decimal number in [min, max]; 0 or -1. */
static int parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
	unsigned long v;
	char *end;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || !*s || *s == '-' || v < min || v > max)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

/* "LO-HI", 1 <= LO <= HI <= 65535; 0 or -1. */
static int parse_range(const char *s, uint16_t *lo, uint16_t *hi)
{
	const char *dash = strchr(s, '-');
	char first[8];
	uint32_t l, h;

	if (!dash || dash - s >= (long)sizeof(first))
		return -1;
	memcpy(first, s, (size_t)(dash - s));
	first[dash - s] = '\0';
	if (parse_u32(first, 1, 65535, &l) || parse_u32(dash + 1, 1, 65535, &h) || l > h)
		return -1;
	*lo = (uint16_t)l;
	*hi = (uint16_t)h;
	return 0;
}

/* Every client is an fd: the soft limit (often 1024) goes up to the hard one. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int main(int argc, char **argv)
{
	enum { O_CGROUP = 256, O_BPFFS, O_SOCKET, O_STATE, O_ADMIN, O_METRICS, O_FG, O_TEARDOWN, O_LOGFMT, O_QUOTA,
	       O_APPLY, O_APPLY_PRUNE, O_MAX_CLIENTS, O_MAX_PER_UID, O_STALL, O_USER_PORTS, O_ADOPT_PINS, O_RESET,
	       O_EVENTS_LOG, O_MAXRESV };
	static const struct option longopts[] = {
		{ "cgroup", required_argument, NULL, O_CGROUP },
		{ "bpffs", required_argument, NULL, O_BPFFS },
		{ "socket", required_argument, NULL, O_SOCKET },
		{ "state-dir", required_argument, NULL, O_STATE },
		{ "admin-group", required_argument, NULL, O_ADMIN },
		{ "metrics-listen", required_argument, NULL, O_METRICS },
		{ "foreground", no_argument, NULL, O_FG },
		{ "teardown", no_argument, NULL, O_TEARDOWN },
		{ "adopt-pins", no_argument, NULL, O_ADOPT_PINS },
		{ "reset", no_argument, NULL, O_RESET },
		{ "log-format", required_argument, NULL, O_LOGFMT },
		{ "quota", required_argument, NULL, O_QUOTA },
		{ "user-ports", required_argument, NULL, O_USER_PORTS },
		{ "max-clients", required_argument, NULL, O_MAX_CLIENTS },
		{ "max-clients-per-uid", required_argument, NULL, O_MAX_PER_UID },
		{ "stall-timeout", required_argument, NULL, O_STALL },
		{ "apply", required_argument, NULL, O_APPLY },
		{ "apply-prune", no_argument, NULL, O_APPLY_PRUNE },
		{ "events-log-size", required_argument, NULL, O_EVENTS_LOG },
		{ "max-reservations", required_argument, NULL, O_MAXRESV },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 }
	};
	struct agent a = { .opts = { .bpffs = "/sys/fs/bpf/portres", .socket = PORTRES_DEFAULT_SOCKET,
				     .state_dir = "/var/lib/portres", .admin_group = "portres",
				     .quota = PORTRESD_QUOTA, .max_clients = PORTRESD_MAX_CLIENTS,
				     .max_clients_per_uid = PORTRESD_MAX_PER_UID, .stall_timeout = PORTRESD_STALL_SEC,
				     .events_log_size = PORTRESD_EVENTS_LOG },
			   .nswatch_fd = -1 };
	struct portres_loader_opts lo = { .max_resv = PORTRES_DEFAULT_RESV };
	char why[512], err_msg[STATE_ERR_LEN], *end, *dir;
	bool adopt = false;
	struct group *gr;
	int c, err, ret = 1;

	while ((c = getopt_long(argc, argv, "vhV", longopts, NULL)) != -1) {
		switch (c) {
		case O_CGROUP: a.opts.cgroup = optarg; break;
		case O_BPFFS: a.opts.bpffs = optarg; break;
		case O_SOCKET: a.opts.socket = optarg; break;
		case O_STATE: a.opts.state_dir = optarg; break;
		case O_ADMIN: a.opts.admin_group = optarg; break;
		case O_METRICS: a.opts.metrics_listen = optarg; break;
		case O_FG: a.opts.foreground = true; break;
		case O_APPLY: a.opts.apply_file = optarg; break;
		case O_APPLY_PRUNE: a.opts.apply_prune = true; break;
		case O_TEARDOWN: a.opts.teardown = true; break;
		case O_ADOPT_PINS: a.opts.adopt_pins = true; break;
		case O_RESET: a.opts.reset = true; break;
		case O_LOGFMT:
			if (strcmp(optarg, "json") && strcmp(optarg, "text")) {
				fprintf(stderr, "portresd: --log-format: text or json\n%s", usage);
				return 2;
			}
			a.opts.json_log = !strcmp(optarg, "json");
			break;
		case O_QUOTA:
			if (parse_u32(optarg, 0, 65536, &a.opts.quota)) {
				fprintf(stderr, "portresd: --quota: a number of ports 0..65536\n");
				return 2;
			}
			break;
		case O_MAXRESV:
			if (parse_u32(optarg, 1, PORTRES_MAX_RESV, &lo.max_resv)) {
				fprintf(stderr, "portresd: --max-reservations: a number 1..%u\n", PORTRES_MAX_RESV);
				return 2;
			}
			break;
		case O_USER_PORTS:
			if (parse_range(optarg, &a.opts.user_lo, &a.opts.user_hi)) {
				fprintf(stderr, "portresd: --user-ports: LO-HI with 1 <= LO <= HI <= 65535\n");
				return 2;
			}
			break;
		case O_MAX_CLIENTS:
			if (parse_u32(optarg, 1, 1000000, &a.opts.max_clients)) {
				fprintf(stderr, "portresd: --max-clients: a number 1..1000000\n");
				return 2;
			}
			break;
		case O_MAX_PER_UID:
			if (parse_u32(optarg, 1, 1000000, &a.opts.max_clients_per_uid)) {
				fprintf(stderr, "portresd: --max-clients-per-uid: a number 1..1000000\n");
				return 2;
			}
			break;
		case O_STALL:
			if (parse_u32(optarg, 1, 86400, &a.opts.stall_timeout)) {
				fprintf(stderr, "portresd: --stall-timeout: seconds 1..86400\n");
				return 2;
			}
			break;
		case O_EVENTS_LOG:
			errno = 0;
			a.opts.events_log_size = strtoull(optarg, &end, 10);
			if (errno || *end || !*optarg || *optarg == '-') {
				fprintf(stderr, "portresd: --events-log-size: a number of bytes\n");
				return 2;
			}
			break;
		case 'v': a.opts.verbose++; break;
		case 'h': fputs(usage, stdout); return 0;
		case 'V': puts("portresd " PORTRESD_VERSION); return 0;
		default: fputs(usage, stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "portresd: unexpected argument %s\n%s", argv[optind], usage);
		return 2;
	}
	if (a.opts.adopt_pins && a.opts.reset) {
		fprintf(stderr, "portresd: --adopt-pins and --reset exclude each other\n%s", usage);
		return 2;
	}
	if (a.opts.apply_prune && !a.opts.apply_file) {
		fprintf(stderr, "portresd: --apply-prune needs --apply FILE\n%s", usage);
		return 2;
	}
	log_setup(a.opts.json_log, a.opts.verbose);
	verbose_level = a.opts.verbose;
	libbpf_set_print(libbpf_log);
	if (!a.opts.cgroup)
		a.opts.cgroup = cgroup2_mount();
	raise_nofile();
	/* Test hook (tests/e2e): kill -9 of the agent between saving a create and replying to it. */
	a.opts.test_crash_after_save = !strcmp(getenv("PORTRESD_TEST_CRASH_AFTER_SAVE") ?: "", "create");
	if (a.opts.test_crash_after_save)
		log_msg(LOG_WARN, "start", "test hook PORTRESD_TEST_CRASH_AFTER_SAVE=create: the agent kills itself "
			"after saving a create, before replying");
	a.started = time(NULL);

	/* another agent? -> probe -> state -> loader -> reconcile -> serve */
	if (!a.opts.teardown && server_socket_answers(a.opts.socket)) {
		log_msg(LOG_ERR, "start", "another portresd answers on %s; nothing was changed", a.opts.socket);
		goto cleanup;
	}
	if ((err = probe(&a.opts, why, sizeof(why)))) {
		log_msg(LOG_ERR, "probe", "missing feature: %s", why);
		goto cleanup;
	}
	gr = getgrnam(a.opts.admin_group);
	a.admin_gid = gr ? gr->gr_gid : (gid_t)-1;
	if (!gr && !a.opts.teardown)
		log_msg(LOG_INFO, "start", "group %s does not exist: only root manages persistent reservations",
			a.opts.admin_group);
	if (mkdir(a.opts.state_dir, 0700) && errno != EEXIST) {
		log_msg(LOG_ERR, "start", "state directory %s: %s", a.opts.state_dir, strerror(errno));
		goto cleanup;
	}
	if (!a.opts.teardown && state_load(a.opts.state_dir, &a.st, err_msg, sizeof(err_msg))) {
		log_msg(LOG_ERR, "state", "%s", err_msg);
		log_msg(LOG_ERR, "start", "refusing to start with this state file; fix or move it away");
		goto cleanup;
	}
	if (!a.opts.teardown && missing_state(&a, &adopt))
		goto cleanup;
	lo.bpffs_dir = a.opts.bpffs;
	lo.cgroup_path = a.opts.cgroup;
	if ((err = portres_loader_open(&lo, &a.loader))) {
		log_msg(LOG_ERR, "start", "loading the BPF programs: %s", strerror(-err));
		goto cleanup;
	}
	if (a.opts.teardown) {
		ret = teardown(&a);
		goto cleanup;
	}
	log_msg(LOG_INFO, "start", "%s programs at %s, pins in %s", portres_loader_adopted(a.loader) ?
		"adopted" : "loaded", a.opts.cgroup, a.opts.bpffs);
	if ((err = netns_own(&a))) {
		log_msg(LOG_ERR, "start", "own network namespace: %s", strerror(-err));
		goto cleanup;
	}
	/* listening before the netns of the state file are looked for: none dies unseen */
	if ((a.nswatch_fd = netns_watch_open(&a)) < 0)
		log_msg(LOG_WARN, "start", "RTNLGRP_NSID: %s: reservations in network namespaces that die are seen only at the next start",
			strerror(-a.nswatch_fd));
	if ((err = netns_restore(&a))) {
		log_msg(LOG_ERR, "start", "finding the network namespaces of the state file: %s", strerror(-err));
		goto cleanup;
	}
	if (adopt && (err = adopt_pins(&a))) {
		log_msg(LOG_ERR, "start", "rebuilding the state from the pins: %s", strerror(-err));
		goto cleanup;
	}
	if ((err = reconcile(&a))) {
		log_msg(LOG_ERR, "start", "reconciling the maps with the state file: %s", strerror(-err));
		goto cleanup;
	}
	dir = strdup(a.opts.socket);
	if (dir) {
		mkdir(dirname(dir), 0755);
		free(dir);
	}
	ret = server_run(&a) ? 1 : 0;
cleanup:
	portres_loader_close(a.loader);
	netns_release_all(&a);
	state_free(&a.st);
	free(a.resv);
	return ret;
}
