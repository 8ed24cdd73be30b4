// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * portresd - the agent that owns portres's BPF programs, maps, database and
 * sysctl entries, and serves the management API on a Unix socket.
 *
 * Start: flags -> another agent on the socket? (then stop, touching nothing)
 * -> feature probe -> database (checked; made, from state.json the first
 * time) -> loader (load or adopt pins, attach) -> reconcile maps with the
 * database -> serve. SIGTERM/SIGINT stop the agent and leave enforcement in
 * place; --teardown removes it.
 */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <limits.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <libgen.h>
#include <limits.h>
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
#define MIN_KERNEL_MINOR 2

static const char usage[] =
	"usage: portresd [options]\n"
	"  --cgroup PATH           cgroup2 directory to attach at (default: the cgroup2 mount)\n"
	"  --bpffs DIR             pins go here (default /sys/fs/bpf/portres)\n"
	"  --socket PATH           API socket (default " PORTRES_DEFAULT_SOCKET ")\n"
	"  --state-dir DIR         persistent state: portres.db (default /var/lib/portres)\n"
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
	"  --associate sockopt|agent  who associates sockets with tokens (default sockopt: a setsockopt\n"
	"                          program: setsockopt(SOL_PORTRES, PORTRES_ASSOCIATE) works from any\n"
	"                          language); agent: no setsockopt program, so every setsockopt(2) below\n"
	"                          the cgroup is cheaper; portres_associate() asks the agent instead and\n"
	"                          a raw setsockopt(SOL_PORTRES) fails with ENOPROTOOPT\n"
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
	"  --adopt-pins            when pins hold persistent reservations and the database is missing:\n"
	"                          make it from the maps (reservations, grants, attachments; names\n"
	"                          are lost); without it or --reset the agent refuses to start then\n"
	"  --reset                 in that case, remove those reservations on purpose instead\n"
	"  -v, --verbose           debug logs, libbpf's included\n";

static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	/* libbpf's own logs are debug output unless -v. */
	/* libbpf's callback has no context: the level is the process's logger's */
	if (level == LIBBPF_DEBUG && log_verbosity() < 2)
		return 0;
	if (level != LIBBPF_WARN && !log_verbosity())
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
			 "SO_NETNS_COOKIE, sk_storage from sockopt programs, bpf_cast_to_kern_ctx)", u.release, MIN_KERNEL_MAJOR,
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

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

struct seen {
	uint64_t token;
	struct portres_resv r;
};

struct seen_list {
	struct seen *v;
	size_t n, cap;
};

static int collect_resv(uint64_t token, const struct portres_resv *r, void *arg)
{
	struct seen_list *l = arg;

	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 1024;
		struct seen *n = realloc(l->v, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		l->v = n;
		l->cap = cap;
	}
	l->v[l->n++] = (struct seen){ token, *r };
	return 0;
}

/*
 * The maps' reservations in batches (one bpf() call per 4,096 instead of two
 * per reservation: an agent with 65,535 of them starts in well under a
 * second); the loader's walk where batches are not to be had.
 */
static int read_resv(struct agent *a, struct seen_list *l)
{
	enum { N = 4096 };
	uint64_t *keys = NULL, in = 0, out = 0;
	struct portres_resv *vals = NULL;
	char path[PATH_MAX];
	void *inp = NULL;
	int fd, err = 0;

	snprintf(path, sizeof(path), "%s/maps/portres_resv", a->opts.bpffs);
	/* on the heap: 200 KB is much for a stack */
	if ((fd = bpf_obj_get(path)) < 0 || !(keys = malloc(N * sizeof(*keys))) || !(vals = malloc(N * sizeof(*vals)))) {
		if (fd >= 0)
			close(fd);
		free(keys);
		return portres_resv_foreach(a->loader, collect_resv, l);
	}
	for (;;) {
		__u32 n = N;
		int ret = bpf_map_lookup_batch(fd, inp, &out, keys, vals, &n, NULL);

		if (ret && errno != ENOENT) {
			err = -errno;
			break;
		}
		for (__u32 i = 0; i < n && !err; i++)
			err = collect_resv(keys[i], &vals[i], l);
		if (ret || err)
			break;
		in = out;
		inp = &in;
	}
	close(fd);
	free(keys);
	free(vals);
	if (err == -EINVAL || err == -ENOTSUP || err == -524 /* ENOTSUPP */) {
		l->n = 0;
		return portres_resv_foreach(a->loader, collect_resv, l);
	}
	return err;
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

/* store_load gives reservations and runtime rows in SQLite's token order (signed). */
static int cmp_token(uint64_t a, uint64_t b)
{
	return ((int64_t)a > (int64_t)b) - ((int64_t)a < (int64_t)b);
}

static struct state_resv *find_saved(struct store_contents *c, uint64_t token)
{
	size_t lo = 0, hi = c->st.n_resv;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int d = cmp_token(c->st.resv[mid].token, token);

		if (!d)
			return &c->st.resv[mid];
		if (d < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static const struct store_runtime *find_runtime(const struct store_contents *c, uint64_t token)
{
	size_t lo = 0, hi = c->n_rt;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int d = cmp_token(c->rt[mid].token, token);

		if (!d)
			return &c->rt[mid];
		if (d < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* A persistent reservation of the database into the table (the maps are not touched). */
/* The netns of a saved reservation: the agent's, or one netns_restore found again (else NULL). */
static struct netns *saved_netns(struct agent *a, const struct state_resv *sr)
{
	return sr->netns ? netns_find(a, sr->netns) : a->own_ns;
}

/* A reservation of the database into the table (the maps are not touched); its strings move there. */
static struct resv *insert_saved(struct agent *a, struct state_resv *sr, const struct portres_resv *r,
				 struct netns *ns)
{
	struct state_resv *moved = malloc(sizeof(*moved));

	if (!moved)
		return NULL;
	*moved = *sr;
	/* sr keeps the token and block (state_find_token still works), not what moved */
	sr->name = sr->request_id = NULL;
	sr->grants = NULL;
	sr->n_grants = 0;
	return resv_insert(a, moved->token, r, 0, ns, moved);
}

/*
 * The maps' reservations: dead runtime ones (their socket closed while no
 * agent ran) are swept, live runtime ones adopted (the database knows their
 * owner's uid), persistent ones kept when the database has them alike.
 */
static int adopt_maps(struct agent *a, struct store_contents *c, const struct seen_list *seen, size_t *counts)
{
	for (size_t i = 0; i < seen->n; i++) {
		const struct seen *s = &seen->v[i];
		struct state_resv *sr = find_saved(c, s->token);
		const struct store_runtime *rt = find_runtime(c, s->token);
		struct netns *ns_of = NULL;
		struct resv *n;
		char tok[17];

		/* formatted for the log lines only: 65,535 of them at start */
		if (!sr || s->r.kind != PORTRES_KIND_PERSISTENT || (s->r.flags & PORTRES_RESV_DEAD))
			state_token_format(s->token, tok);
		if (s->r.flags & PORTRES_RESV_DEAD) {
			log_msg(LOG_DEBUG, "reconcile", "token %s: released while no agent ran; removed", tok);
			portres_resv_del(a->loader, s->token);
			counts[0]++;
		} else if (s->r.kind == PORTRES_KIND_RUNTIME) {
			struct netns *ns = netns_get(a, s->r.netns, -1);
			uint32_t uid = rt ? rt->uid : uid_of_pid(s->r.owner_tgid);

			if (!ns || !resv_insert(a, s->token, &s->r, uid, ns, NULL))
				return -ENOMEM;
			netns_adopt(a, ns, s->r.owner_tgid);
			if (!rt)
				store_put_runtime(a->store, &(struct store_runtime){
					.token = s->token, .netns = netns_key(ns), .proto = s->r.proto, .start = s->r.start,
					.count = s->r.count, .uid = uid, .pid = s->r.owner_tgid }, (uint64_t)time(NULL));
			log_msg(LOG_DEBUG, "reconcile", "runtime token %s of pid %u adopted", tok, s->r.owner_tgid);
			counts[1]++;
		} else if (!sr || !(ns_of = saved_netns(a, sr)) || s->r.netns != ns_of->cookie || s->r.proto != sr->proto ||
			   s->r.start != sr->start || s->r.count != sr->count) {
			state_token_format(s->token, tok);
			log_msg(LOG_WARN, "reconcile", "persistent token %s in the maps differs from the database; removed", tok);
			portres_resv_del(a->loader, s->token);
		} else {
			struct portres_resv r = s->r;

			if (r.mode != sr->mode) {
				portres_resv_set_mode(a->loader, s->token, sr->mode);
				r.mode = sr->mode;
			}
			if (!(n = insert_saved(a, sr, &r, ns_of)))
				return -ENOMEM;
			for (size_t g = 0; g < n->sr->n_grants; g++) {
				const struct state_grant *gr = &n->sr->grants[g];
				int err = portres_grant_add(a->loader, n->token, gr->type, gr->id);

				if (err)
					log_msg(LOG_WARN, "reconcile", "token %016llx: grant %s %llu not in the maps: %s",
						(unsigned long long)n->token, state_grant_name(gr->type),
						(unsigned long long)gr->id, strerror(-err));
			}
			counts[2]++;
		}
	}
	/* runtime rows whose reservation is gone */
	for (size_t i = 0; i < c->n_rt; i++)
		if (!resv_find(a, c->rt[i].token))
			store_del_resv(a->store, c->rt[i].token, false);
	return 0;
}

/* The database's persistent reservations the maps lack are loaded. */
static int load_saved(struct agent *a, struct store_contents *c, size_t *loaded)
{
	for (size_t i = 0; i < c->st.n_resv; i++) {
		struct state_resv *sr = &c->st.resv[i];
		struct netns *ns = saved_netns(a, sr);
		struct portres_resv r = { .netns = ns ? ns->cookie : 0, .start = sr->start, .count = sr->count,
					  .proto = sr->proto, .kind = PORTRES_KIND_PERSISTENT, .mode = sr->mode };
		struct resv *n;
		char tok[17];
		int err;

		if (resv_find(a, sr->token))
			continue;
		state_token_format(sr->token, tok);
		if (!ns) {
			log_msg(LOG_WARN, "reconcile", "persistent token %s: its network namespace %llu is unknown; not loaded",
				tok, (unsigned long long)sr->netns);
			continue;
		}
		if (!(n = insert_saved(a, sr, &r, ns)))
			return -ENOMEM;
		if ((err = resv_load(a, n))) {
			log_msg(LOG_ERR, "reconcile", "persistent token %s (%s %u-%u): cannot load: %s", tok,
				state_proto_name(sr->proto), sr->start, sr->start + sr->count - 1, strerror(-err));
			return err;
		}
		log_msg(LOG_DEBUG, "reconcile", "persistent token %s loaded from the database", tok);
		(*loaded)++;
	}
	return 0;
}

/* Attachments: the database's (re-resolved by path) and the runtime ones of the cgroup map. */
static int reconcile_attach(struct agent *a, struct store_contents *c)
{
	struct seen_cg_list cgs = { 0 };
	int err;

	for (size_t i = 0; i < c->st.n_attach; i++)
		if (resv_find(a, c->st.attach[i].token) && (err = attach_add(a, &c->st.attach[i])))
			return err;
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
			if ((err = attach_add(a, &at)))
				goto cleanup;
		}
		/* what the saved and adopted attachments make of it (none: it goes) */
		cgroup_map_sync(a, cgs.v[i].id);
	}
	for (size_t j = a->st.n_attach; j-- > 0;) {
		struct state_attach *at = &a->st.attach[j];
		struct resv *r = resv_find(a, at->token);
		uint64_t id;

		if (!r || r->r.kind != PORTRES_KIND_PERSISTENT)
			continue;
		if (portres_cgroup_id(at->path, &id)) {
			log_msg(LOG_WARN, "reconcile", "cgroup %s is gone; attachment dropped", at->path);
			store_del_attach(a->store, at->cgroup_id, r->r.proto);
			attach_del(a, j);
			continue;
		}
		if (id != at->cgroup_id) {
			uint64_t was = at->cgroup_id;

			store_del_attach(a->store, at->cgroup_id, r->r.proto);
			at->cgroup_id = id;
			store_put_attach(a->store, at, r->r.proto);
			cgroup_map_sync(a, was);
		}
		if ((err = cgroup_map_sync(a, at->cgroup_id)))
			log_msg(LOG_WARN, "reconcile", "cgroup %s: not in the cgroup map: %s", at->path, strerror(-err));
	}
	err = 0;
cleanup:
	free(cgs.v);
	return err;
}

/* The sysctl entries portres added, per netns; all gone after a reboot (so are the maps). */
static void restore_owned(struct agent *a, struct store_contents *c, bool new_boot)
{
	struct netns *ns;

	if (new_boot) {
		store_clear_boot(a->store);
		return;
	}
	a->own_ns->owned = a->own_ns->owned_db = c->st.sysctl_added;
	for (size_t i = 0; i < c->n_owned; i++)
		if ((ns = netns_get(a, c->owned[i].netns, -1))) {
			ns->owned = ns->owned_db = c->owned[i].ports;
			batch_sysctl(a, ns);
		}
}

/*
 * The database is the truth for persistent reservations, the maps for
 * runtime ones (the database keeps their owner's uid). Everything changed
 * here is committed, and the sysctl of each netns brought in line, before
 * the agent serves.
 */
static int reconcile(struct agent *a)
{
	struct store_contents c;
	struct seen_list seen = { 0 };
	char err_msg[STATE_ERR_LEN + 128], boot[STATE_BOOT_ID_LEN + 1] = "";
	size_t counts[3] = { 0 }, loaded = 0;
	bool new_boot;
	int err;

	if ((err = store_load(a->store, &c, err_msg, sizeof(err_msg)))) {
		log_msg(LOG_ERR, "store", "%s", err_msg);
		return err;
	}
	state_boot_id(boot);
	new_boot = c.st.boot_id[0] && boot[0] && strcmp(c.st.boot_id, boot);
	/* the netns of persistent reservations found again first (or theirs dropped) */
	if ((err = netns_restore(a, &c.st, new_boot))) {
		log_msg(LOG_ERR, "start", "finding the network namespaces of the database: %s", strerror(-err));
		goto cleanup;
	}
	if ((err = read_resv(a, &seen)) || (err = adopt_maps(a, &c, &seen, counts)) ||
	    (err = load_saved(a, &c, &loaded)) || (err = reconcile_attach(a, &c)))
		goto cleanup;
	restore_owned(a, &c, new_boot);
	if (boot[0])
		store_set_meta(a->store, "boot_id", boot);
	/* every sysctl brought in line */
	{
		struct netns *ns, *tmp;

		HASH_ITER(hh, a->ns_by_cookie, ns, tmp)
			batch_sysctl(a, ns);
	}
	log_msg(LOG_INFO, "reconcile", "%zu persistent reservations (%zu loaded into the maps), %zu runtime adopted, "
		"%zu released while no agent ran", a->n_persistent, loaded, counts[1], counts[0]);
	if ((err = batch_commit(a, err_msg, sizeof(err_msg), true)))
		log_msg(LOG_ERR, "store", "%s", err_msg);
cleanup:
	free(seen.v);
	store_contents_free(&c);
	return err;
}

/* --- a missing database --------------------------------------------------- */

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
 * Pins that hold persistent reservations with no database and no state file
 * to make it from (deleted, or a wrong --state-dir): reconciling would remove
 * them from the maps and their enforcement would end silently. The operator
 * says which way: --adopt-pins (*adopt: rebuild the database from the maps)
 * or --reset. Either way the pinned blocks' entries of ip_local_reserved_ports
 * are taken as portres's (owned). -1: refuse, nothing touched.
 */
static int missing_state(struct agent *a, bool *adopt, struct portset *owned)
{
	struct portset pinned, current;
	char path[PATH_MAX], json[PATH_MAX];
	size_t n;

	portset_clear(&pinned);
	snprintf(path, sizeof(path), "%s/%s", a->opts.state_dir, STORE_FILE);
	snprintf(json, sizeof(json), "%s/%s", a->opts.state_dir, STATE_FILE);
	if (access(path, F_OK) == 0 || errno != ENOENT || access(json, F_OK) == 0 ||
	    !(n = pinned_persistent(a, &pinned)))
		return 0;
	/*
	 * Which ip_local_reserved_ports entries portres added went with the
	 * file: those of the pinned blocks are taken for its own (adopt: removed
	 * with their reservation later; reset: now).
	 */
	if ((a->opts.adopt_pins || a->opts.reset) && portset_read(SYSCTL_RESERVED_PORTS, &current) == 0)
		for (size_t i = 0; i < sizeof(pinned.w) / sizeof(pinned.w[0]); i++)
			owned->w[i] = pinned.w[i] & current.w[i];
	if (a->opts.adopt_pins) {
		log_msg(LOG_WARN, "start", "--adopt-pins: %s does not exist; it is made from the %zu persistent "
			"reservation%s pinned in %s", path, n, n == 1 ? "" : "s", a->opts.bpffs);
		*adopt = true;
		return 0;
	}
	if (a->opts.reset) {
		log_msg(LOG_WARN, "start", "--reset: %s does not exist; the %zu persistent reservation%s pinned in %s "
			"%s removed", path, n, n == 1 ? "" : "s", a->opts.bpffs, n == 1 ? "is" : "are");
		return 0;
	}
	log_msg(LOG_ERR, "start", "the pins in %s hold %zu persistent reservation%s but the database %s does not "
		"exist (deleted, or a wrong --state-dir?): refusing to start, nothing was changed; --adopt-pins "
		"makes the database from the pins, --reset removes them", a->opts.bpffs, n, n == 1 ? "" : "s",
		path);
	return -1;
}

/* Adds the grants pinned for st's reservations to them. */
static int adopt_grants(struct agent *a, struct state *st)
{
	char path[PATH_MAX], cg[PATH_MAX];
	struct portres_grant_key key, next, *prev = NULL;
	int fd, err = 0;

	snprintf(path, sizeof(path), "%s/maps/portres_grants", a->opts.bpffs);
	if ((fd = bpf_obj_get(path)) < 0)
		return -errno;
	while (!err && bpf_map_get_next_key(fd, prev, &next) == 0) {
		struct state_resv *sr = state_find_token(st, next.token);
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

/*
 * --adopt-pins: the persistent reservations, grants and attachments of the
 * maps, and the sysctl entries taken as owned, become the database.
 */
static int adopt_pins(struct agent *a, const struct portset *owned)
{
	struct seen_list seen = { 0 };
	struct seen_cg_list cgs = { 0 };
	char err_msg[STATE_ERR_LEN + 128], path[PATH_MAX];
	struct state st = { 0 };
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
		    (err = state_add_resv(&st, &sr)))
			goto cleanup;
	}
	if ((err = adopt_grants(a, &st)))
		goto cleanup;
	for (size_t i = 0; i < 2 * cgs.n; i++) {
		/* each slot (TCP, UDP) of a cgroup is an attachment */
		const struct portres_cgroup *c = &cgs.v[i / 2].c;
		struct state_attach at = { .path = path, .cgroup_id = cgs.v[i / 2].id,
					   .token = i % 2 ? c->udp_token : c->tcp_token,
					   .confine = c->flags & PORTRES_CG_CONFINE_ALL ? STATE_CONFINE_ALL
						      : c->flags & PORTRES_CG_CONFINE ? STATE_CONFINE : 0,
					   .by_admin = true };

		if (!at.token || !state_find_token(&st, at.token))
			continue;
		if (cgroup2_path(at.cgroup_id, path, sizeof(path))) {
			log_msg(LOG_WARN, "start", "--adopt-pins: cgroup %llu (attached to token %016llx) not found; "
				"attachment dropped", (unsigned long long)at.cgroup_id, (unsigned long long)at.token);
			continue;
		}
		if ((err = state_add_attach(&st, &at)))
			goto cleanup;
		n_at++;
	}
	if (state_validate(&st, "pins", err_msg, sizeof(err_msg))) {
		log_msg(LOG_ERR, "start", "--adopt-pins: %s", err_msg);
		err = -EINVAL;
		goto cleanup;
	}
	st.sysctl_added = *owned;
	store_import(a->store, &st);
	if ((err = store_commit(a->store, err_msg, sizeof(err_msg)))) {
		log_msg(LOG_ERR, "start", "--adopt-pins: %s", err_msg);
		goto cleanup;
	}
	log_msg(LOG_INFO, "start", "--adopt-pins: database made: %zu persistent reservation%s, %zu attachment%s "
		"(names are not kept in the maps: none)", st.n_resv, st.n_resv == 1 ? "" : "s", n_at,
		n_at == 1 ? "" : "s");
cleanup:
	state_free(&st);
	free(seen.v);
	free(cgs.v);
	return err;
}

/* --- teardown ------------------------------------------------------------- */

/* portres's own entries leave the agent's sysctl; the database is kept (and says so). */
static int teardown(struct agent *a)
{
	char err_msg[STATE_ERR_LEN + 128];
	struct store_contents c;
	bool created;
	int err;

	if (store_open(a->opts.state_dir, &a->store, &created, err_msg, sizeof(err_msg)) ||
	    store_load(a->store, &c, err_msg, sizeof(err_msg))) {
		log_msg(LOG_WARN, "teardown", "%s; ip_local_reserved_ports left as it is", err_msg);
	} else {
		struct portset none, owned = c.st.sysctl_added;

		netns_teardown(a, &c);
		portset_clear(&none);
		if (!portset_empty(&owned) && (err = sysctl_ports_sync(SYSCTL_RESERVED_PORTS, &none, &owned, NULL)))
			log_msg(LOG_WARN, "teardown", "ip_local_reserved_ports: %s", strerror(-err));
		store_set_owned(a->store, 0, &c.st.sysctl_added, &owned);
		if (store_commit(a->store, err_msg, sizeof(err_msg)))
			log_msg(LOG_WARN, "teardown", "%s", err_msg);
		store_contents_free(&c);
	}
	err = portres_loader_teardown(a->loader);
	a->loader = NULL;
	if (err) {
		log_msg(LOG_ERR, "teardown", "removing programs and pins: %s", strerror(-err));
		return 1;
	}
	log_msg(LOG_INFO, "teardown", "programs, links and pins under %s removed; the database is kept", a->opts.bpffs);
	return 0;
}

/* --- main ----------------------------------------------------------------- */


/*
 * <state-dir>/portres.db, made from state.json the first time. A database
 * that cannot be used stops the agent, named with the cause; nothing is
 * overwritten.
 */
static int open_store(struct agent *a)
{
	char err_msg[STATE_ERR_LEN + 128], json[PATH_MAX], imported[PATH_MAX];
	bool created;
	int err;

	if ((err = store_open(a->opts.state_dir, &a->store, &created, err_msg, sizeof(err_msg)))) {
		log_msg(LOG_ERR, "store", "%s", err_msg);
		log_msg(LOG_ERR, "start", "refusing to start with this state; fix or move it away");
		return err;
	}
	snprintf(json, sizeof(json), "%s/%s", a->opts.state_dir, STATE_FILE);
	snprintf(imported, sizeof(imported), "%s/%s", a->opts.state_dir, STORE_IMPORTED);
	if (created && !access(imported, F_OK))
		log_msg(LOG_INFO, "store", "%s made from %s, which is kept as %s", store_path(a->store), json, imported);
	else if (created)
		log_msg(LOG_INFO, "store", "%s made", store_path(a->store));
	else if (!access(json, F_OK))
		log_msg(LOG_WARN, "store", "%s is not read: the state is in %s", json, store_path(a->store));
	return 0;
}

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
	       O_EVENTS_LOG, O_MAXRESV, O_ASSOCIATE };
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
		{ "associate", required_argument, NULL, O_ASSOCIATE },
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
	char why[512], *end, *dir;
	struct portset owned;
	double t[3] = { 0 };
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
		case O_ASSOCIATE:
			if (strcmp(optarg, "sockopt") && strcmp(optarg, "agent")) {
				fprintf(stderr, "portresd: --associate: sockopt or agent\n");
				return 2;
			}
			lo.assoc = strcmp(optarg, "agent") ? PORTRES_ASSOC_SOCKOPT : PORTRES_ASSOC_AGENT;
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
	portset_clear(&owned);
	t[0] = now_s();
	if (!a.opts.teardown && (missing_state(&a, &adopt, &owned) || (err = open_store(&a))))
		goto cleanup;
	/* --reset: the pinned blocks go (reconcile), their entries of ip_local_reserved_ports with them */
	if (!portset_empty(&owned) && !adopt) {
		struct portset none;

		portset_clear(&none);
		store_set_owned(a.store, 0, &none, &owned);
		if ((err = store_commit(a.store, why, sizeof(why)))) {
			log_msg(LOG_ERR, "start", "--reset: %s", why);
			goto cleanup;
		}
	}
	lo.bpffs_dir = a.opts.bpffs;
	lo.cgroup_path = a.opts.cgroup;
	t[1] = now_s();
	if ((err = portres_loader_open(&lo, &a.loader))) {
		log_msg(LOG_ERR, "start", "loading the BPF programs: %s", strerror(-err));
		goto cleanup;
	}
	if (a.opts.teardown) {
		ret = teardown(&a);
		goto cleanup;
	}
	/* the database's quick_check ran meanwhile */
	if ((err = store_check_wait(a.store, why, sizeof(why)))) {
		log_msg(LOG_ERR, "store", "%s", why);
		log_msg(LOG_ERR, "start", "refusing to start with this state; fix or move it away");
		goto cleanup;
	}
	log_msg(LOG_INFO, "start", "%s programs at %s, pins in %s; sockets associated by %s", portres_loader_adopted(a.loader) ?
		"adopted" : "loaded", a.opts.cgroup, a.opts.bpffs,
		lo.assoc == PORTRES_ASSOC_AGENT ? "the agent (no setsockopt program)" : "setsockopt");
	if ((err = netns_own(&a))) {
		log_msg(LOG_ERR, "start", "own network namespace: %s", strerror(-err));
		goto cleanup;
	}
	/* listening before the netns of the database are looked for: none dies unseen */
	if ((a.nswatch_fd = netns_watch_open(&a)) < 0)
		log_msg(LOG_WARN, "start", "RTNLGRP_NSID: %s: reservations in network namespaces that die are seen only at the next start",
			strerror(-a.nswatch_fd));
	if (adopt && (err = adopt_pins(&a, &owned))) {
		log_msg(LOG_ERR, "start", "making the database from the pins: %s", strerror(-err));
		goto cleanup;
	}
	t[2] = now_s();
	if ((err = batch_init(&a)) || (err = reconcile(&a))) {
		log_msg(LOG_ERR, "start", "reconciling the maps with the database: %s", strerror(-err));
		goto cleanup;
	}
	log_msg(LOG_INFO, "start", "%zu reservations in %.3f s: database %.3f s, programs and pins %.3f s, reconcile %.3f s",
		a.n_resv, now_s() - t[0], t[1] - t[0], t[2] - t[1], now_s() - t[2]);
	dir = strdup(a.opts.socket);
	if (dir) {
		mkdir(dirname(dir), 0755);
		free(dir);
	}
	ret = server_run(&a) ? 1 : 0;
cleanup:
	portres_loader_close(a.loader);
	batch_free(&a);
	resv_free_all(&a);
	netns_release_all(&a);
	store_close(a.store);
	state_free(&a.st);
	return ret;
}
