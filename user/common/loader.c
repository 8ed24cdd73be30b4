// SPDX-License-Identifier: LGPL-2.1-or-later
/* loader.c - load, pin, attach and edit portres's BPF programs and maps. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <linux/magic.h>
#include <netinet/in.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "loader.h"
#include "portres.h"
#include "portres.skel.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

struct portres_loader {
	struct portres_bpf *skel;
	int cgroup_fd;
	char dir[PATH_MAX - 64]; /* room for "/links/<prog>" below it */
	bool adopted;
	int nlinks;
	struct bpf_link *links[16];
	bool created[16];        /* links[i] was made by this open, not adopted */
	uint64_t *slots;         /* bitmap of portres_stats slots in use */
	uint64_t *clean;         /* bitmap of slots whose counters and state are known zero */
	uint32_t nslots;
	uint64_t *pbits;         /* portres_pbits as written (this loader is its one writer) */
	struct ring_buffer *rb;
	pid_t tgid;              /* the process portres_cfg.loader_tgid names */
	enum portres_assoc_mode assoc;
	portres_event_cb cb;
	void *cb_arg;
};

static int mkdir_p(const char *path)
{
	char buf[PATH_MAX];
	char *p;

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0700) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, 0700) && errno != EEXIST)
		return -errno;
	return 0;
}

static int slots_init(struct portres_loader *l);
static int cfg_get(struct portres_loader *l, struct portres_cfg *c);
static int cfg_set(struct portres_loader *l, const struct portres_cfg *c);
static int anchor_owner(struct portres_loader *l);

static int path_in(char *buf, size_t len, const char *dir, const char *sub, const char *name)
{
	if ((size_t)snprintf(buf, len, "%s/%s/%s", dir, sub, name) >= len)
		return -ENAMETOOLONG;
	return 0;
}

int portres_netns_cookie(uint64_t *cookie)
{
	socklen_t len = sizeof(*cookie);
	int fd, err = 0;

	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, cookie, &len))
		err = -errno;
	close(fd);
	return err;
}

int portres_cgroup_id(const char *path, uint64_t *id)
{
	struct statfs sfs;
	struct stat st;

	if (statfs(path, &sfs))
		return -errno;
	if (sfs.f_type != CGROUP2_SUPER_MAGIC)
		return -EMEDIUMTYPE;
	if (stat(path, &st))
		return -errno;
	*id = st.st_ino; /* on cgroup2 the inode number is the cgroup id */
	return 0;
}

static int adopt_size(struct bpf_map *map, const char *path)
{
	struct bpf_map_info info;
	__u32 len = sizeof(info);
	int fd = bpf_obj_get(path), err = 0;

	if (fd < 0)
		return -errno;
	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		err = -errno;
	else if (info.max_entries != bpf_map__max_entries(map) && bpf_map__type(map) != BPF_MAP_TYPE_RINGBUF)
		err = bpf_map__set_max_entries(map, info.max_entries);
	close(fd);
	return err;
}

/* Each map is pinned at <dir>/maps/<name>; libbpf reuses a compatible pinned map at load. */
static int set_pin_paths(struct portres_loader *l)
{
	char path[PATH_MAX];
	struct bpf_map *map;
	int err;

	bpf_object__for_each_map(map, l->skel->obj) {
		if (bpf_map__is_internal(map))
			continue;
		err = path_in(path, sizeof(path), l->dir, "maps", bpf_map__name(map));
		if (err)
			return err;
		if (access(path, F_OK) == 0) {
			l->adopted = true;
			/* A pinned map keeps its size: a new size takes effect on a fresh start. */
			err = adopt_size(map, path);
			if (err)
				return err;
		}
		err = bpf_map__set_pin_path(map, path);
		if (err)
			return err;
	}
	return 0;
}

/*
 * A pinned link of an earlier loader is re-pointed at the new program
 * (BPF_LINK_UPDATE: no moment without a program); otherwise a new
 * multi-attach link is made and pinned.
 */
static int attach_one(struct portres_loader *l, struct bpf_program *prog, uint64_t cgid)
{
	struct bpf_link_info info;
	__u32 info_len = sizeof(info);
	char path[PATH_MAX];
	struct bpf_link *link;
	int err;

	err = path_in(path, sizeof(path), l->dir, "links", bpf_program__name(prog));
	if (err)
		return err;
	link = access(path, F_OK) == 0 ? bpf_link__open(path) : NULL;
	if (link) {
		memset(&info, 0, sizeof(info));
		err = bpf_obj_get_info_by_fd(bpf_link__fd(link), &info, &info_len);
		if (!err && info.type == BPF_LINK_TYPE_CGROUP && info.cgroup.cgroup_id == cgid) {
			err = bpf_link__update_program(link, prog);
			if (err) {
				bpf_link__destroy(link);
				return err;
			}
			l->links[l->nlinks++] = link;
			return 0;
		}
		/* Pinned for another cgroup (or broken): replace it. */
		bpf_link__unpin(link);
		bpf_link__destroy(link);
	}
	link = bpf_program__attach_cgroup(prog, l->cgroup_fd);
	if (!link)
		return -errno;
	err = bpf_link__pin(link, path);
	if (err) {
		bpf_link__destroy(link);
		return err;
	}
	l->created[l->nlinks] = true;
	l->links[l->nlinks++] = link;
	return 0;
}

/*
 * portres_create runs only below attached cgroups: it is linked at each
 * cgroup in portres_cgroups (pinned as links/create-<cgroup id>), so that
 * every other socket of the host skips the hook. Attach puts the map entry
 * first and the link second, detach the other way round: a socket made
 * meanwhile is treated as before or as after, never half.
 */
#define CREATE_PIN "create-"

static int create_pin(char *buf, size_t len, const struct portres_loader *l, uint64_t cgroup_id)
{
	char name[64];

	snprintf(name, sizeof(name), CREATE_PIN "%llu", (unsigned long long)cgroup_id);
	return path_in(buf, len, l->dir, "links", name);
}

/* The cgroup2 directory of an id, opened through the filesystem of the attach root. */
static int open_cgroup_id(const struct portres_loader *l, uint64_t id)
{
	struct {
		struct file_handle fh;
		uint64_t id;
	} h;
	int fd;

	memset(&h, 0, sizeof(h));
	h.fh.handle_bytes = sizeof(id);
	h.fh.handle_type = 0xfe; /* FILEID_KERNFS: the 64-bit cgroup id */
	memcpy(h.fh.f_handle, &id, sizeof(id));
	fd = open_by_handle_at(l->cgroup_fd, &h.fh, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

static int create_link_add(struct portres_loader *l, uint64_t cgroup_id)
{
	int prog = bpf_program__fd(l->skel->progs.portres_create), cgfd, lfd, err = 0;
	char path[PATH_MAX];

	if ((err = create_pin(path, sizeof(path), l, cgroup_id)))
		return err;
	if (access(path, F_OK) == 0)
		return 0;
	cgfd = open_cgroup_id(l, cgroup_id);
	if (cgfd < 0)
		return cgfd;
	lfd = bpf_link_create(prog, cgfd, BPF_CGROUP_INET_SOCK_CREATE, NULL);
	close(cgfd);
	if (lfd < 0)
		return -errno;
	if (bpf_obj_pin(lfd, path))
		err = -errno;
	close(lfd); /* pinned: stays attached; on error this detaches */
	return err;
}

/* Detaches a pinned link and removes its pin. */
static void pinned_link_del(const char *path)
{
	int fd = bpf_obj_get(path);

	if (fd >= 0) {
		bpf_link_detach(fd);
		close(fd);
	}
	unlink(path);
}

/*
 * Visits the pinned create links: adopt (re-point at the new program; a link
 * whose cgroup is gone is removed) or remove them all.
 */
static int create_links_each(struct portres_loader *l, bool remove)
{
	int prog = bpf_program__fd(l->skel->progs.portres_create), err = 0, fd;
	char dir[PATH_MAX], path[PATH_MAX];
	struct bpf_link_info info;
	struct dirent *de;
	__u32 len;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/links", l->dir);
	d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, CREATE_PIN, strlen(CREATE_PIN)))
			continue;
		if (path_in(path, sizeof(path), l->dir, "links", de->d_name))
			continue;
		if (remove) {
			pinned_link_del(path);
			continue;
		}
		fd = bpf_obj_get(path);
		if (fd < 0)
			continue;
		memset(&info, 0, sizeof(info));
		len = sizeof(info);
		if (bpf_obj_get_info_by_fd(fd, &info, &len) || !info.cgroup.cgroup_id) {
			close(fd);
			pinned_link_del(path); /* its cgroup is gone */
			continue;
		}
		if (bpf_link_update(fd, prog, NULL) && !err)
			err = -errno;
		close(fd);
	}
	closedir(d);
	return err;
}

/*
 * A failed open takes back what it put in place: the links it made, and on a
 * fresh start (nothing adopted) the maps it pinned. What was adopted stays,
 * so a failed restart never stops enforcement that was running.
 */
static void undo_open(struct portres_loader *l)
{
	struct bpf_map *map;
	int i;

	for (i = l->nlinks - 1; i >= 0; i--) {
		if (!l->created[i])
			continue;
		bpf_link__unpin(l->links[i]);
		bpf_link__detach(l->links[i]);
	}
	if (l->adopted || !l->skel)
		return;
	bpf_object__for_each_map(map, l->skel->obj) {
		if (!bpf_map__is_internal(map) && bpf_map__is_pinned(map))
			bpf_map__unpin(map, NULL);
	}
}

static int pbits_rebuild(struct portres_loader *l);

int portres_loader_open(const struct portres_loader_opts *opts, struct portres_loader **out)
{
	struct portres_loader *l;
	struct bpf_program *prog;
	char sub[PATH_MAX];
	struct statfs sfs;
	uint32_t max_resv;
	uint64_t cgid;
	bool pbits_new;
	int err;

	if (!opts || !opts->bpffs_dir || !opts->cgroup_path ||
	    (opts->assoc != PORTRES_ASSOC_SOCKOPT && opts->assoc != PORTRES_ASSOC_AGENT))
		return -EINVAL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->cgroup_fd = -1;
	l->assoc = opts->assoc;
	if (snprintf(l->dir, sizeof(l->dir), "%s", opts->bpffs_dir) >= (int)sizeof(l->dir)) {
		err = -ENAMETOOLONG;
		goto cleanup;
	}

	/* Where: a bpffs directory for pins, a cgroup2 directory to attach to. */
	err = mkdir_p(l->dir);
	if (err)
		goto cleanup;
	if (statfs(l->dir, &sfs) || sfs.f_type != BPF_FS_MAGIC) {
		err = -EMEDIUMTYPE;
		goto cleanup;
	}
	snprintf(sub, sizeof(sub), "%s/maps", l->dir);
	if ((err = mkdir_p(sub)))
		goto cleanup;
	snprintf(sub, sizeof(sub), "%s/links", l->dir);
	if ((err = mkdir_p(sub)))
		goto cleanup;
	err = portres_cgroup_id(opts->cgroup_path, &cgid);
	if (err)
		goto cleanup;
	l->cgroup_fd = open(opts->cgroup_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (l->cgroup_fd < 0) {
		err = -errno;
		goto cleanup;
	}

	/* Open, then size the maps and set read-only configuration. */
	l->skel = portres_bpf__open();
	if (!l->skel) {
		err = -errno;
		goto cleanup;
	}
	max_resv = opts->max_resv ? opts->max_resv : PORTRES_DEFAULT_RESV;
	bpf_map__set_max_entries(l->skel->maps.portres_resv, max_resv);
	bpf_map__set_max_entries(l->skel->maps.portres_rstate, max_resv);
	bpf_map__set_max_entries(l->skel->maps.portres_stats, max_resv);
	if (opts->max_ports)
		bpf_map__set_max_entries(l->skel->maps.portres_portx, opts->max_ports);
	if (opts->events_per_sec)
		l->skel->rodata->events_per_sec = opts->events_per_sec;
	/* No setsockopt program at all when the agent associates. */
	if (l->assoc == PORTRES_ASSOC_AGENT && (err = bpf_program__set_autoload(l->skel->progs.portres_setsopt, false)))
		goto cleanup;
	err = set_pin_paths(l);
	if (err)
		goto cleanup;
	pbits_new = l->adopted && access(bpf_map__pin_path(l->skel->maps.portres_pbits), F_OK) != 0;

	/* Load: pinned maps of an earlier loader are reused, new ones pinned. */
	err = portres_bpf__load(l->skel);
	if (err)
		goto cleanup;
	/* Pins of a loader without portres_pbits: its bits before any program of ours runs. */
	if (pbits_new && (err = pbits_rebuild(l)))
		goto cleanup;

	err = slots_init(l);
	if (err)
		goto cleanup;
	if ((err = anchor_owner(l)))
		goto cleanup;

	/*
	 * Attach every program with a pinned multi-attach link (portres_create
	 * per attached cgroup); one an earlier loader linked that this one did
	 * not load (portres_setsopt, now that the agent associates) is unlinked.
	 */
	bpf_object__for_each_program(prog, l->skel->obj) {
		if (prog == l->skel->progs.portres_create)
			continue;
		if (!bpf_program__autoload(prog)) {
			if (!path_in(sub, sizeof(sub), l->dir, "links", bpf_program__name(prog)))
				pinned_link_del(sub);
			continue;
		}
		if (l->nlinks >= (int)(sizeof(l->links) / sizeof(l->links[0]))) {
			err = -E2BIG;
			goto cleanup;
		}
		err = attach_one(l, prog, cgid);
		if (err)
			goto cleanup;
	}
	if ((err = create_links_each(l, false)))
		goto cleanup;
	*out = l;
	return 0;

cleanup:
	undo_open(l);
	portres_loader_close(l);
	return err;
}

void portres_loader_close(struct portres_loader *l)
{
	int i;

	if (!l)
		return;
	ring_buffer__free(l->rb);
	for (i = l->nlinks - 1; i >= 0; i--)
		bpf_link__destroy(l->links[i]); /* pinned: stays attached */
	portres_bpf__destroy(l->skel);
	free(l->slots);
	free(l->clean);
	free(l->pbits);
	if (l->cgroup_fd >= 0)
		close(l->cgroup_fd);
	free(l);
}

int portres_loader_teardown(struct portres_loader *l)
{
	struct bpf_map *map;
	char sub[PATH_MAX];
	int i, err = 0;

	if (!l)
		return -EINVAL;
	create_links_each(l, true);
	for (i = l->nlinks - 1; i >= 0; i--) {
		if (bpf_link__unpin(l->links[i]) && !err)
			err = -errno;
		bpf_link__detach(l->links[i]);
	}
	bpf_object__for_each_map(map, l->skel->obj) {
		if (!bpf_map__is_internal(map) && bpf_map__is_pinned(map))
			bpf_map__unpin(map, NULL);
	}
	snprintf(sub, sizeof(sub), "%s/links", l->dir);
	rmdir(sub);
	snprintf(sub, sizeof(sub), "%s/maps", l->dir);
	rmdir(sub);
	rmdir(l->dir);
	portres_loader_close(l);
	return err;
}

bool portres_loader_adopted(const struct portres_loader *l)
{
	return l && l->adopted;
}

enum portres_assoc_mode portres_loader_assoc(const struct portres_loader *l)
{
	return l->assoc;
}

static int fd_of(struct bpf_map *map)
{
	return bpf_map__fd(map);
}

static int ret_errno(int r)
{
	return r < 0 ? -errno : 0;
}

static struct portres_port_key port_key(uint64_t netns, uint8_t proto, uint16_t port)
{
	struct portres_port_key k;

	memset(&k, 0, sizeof(k));
	k.netns = netns;
	k.proto = proto;
	k.port = port;
	return k;
}

/*
 * The port table: slot portres_port_slot(proto, port) of portres_ports holds
 * the first netns to reserve a port; a second one goes to the overflow hash
 * portres_portx, which the data plane consults only while cfg.overflow > 0.
 */
static int slot_get(struct portres_loader *l, uint8_t proto, uint16_t port, struct portres_port *v)
{
	uint32_t slot = portres_port_slot(proto, port);

	return ret_errno(bpf_map_lookup_elem(fd_of(l->skel->maps.portres_ports), &slot, v));
}

/*
 * Ports are handled a word of portres_pbits at a time (a "chunk": the ports
 * of [p, end) in p's 64-port word), each with one batched read or write of
 * its slots and at most one read and one write of its word: a syscall costs
 * microseconds where page-table isolation or a paravirtual guest traps it,
 * and one port at a time a reservation of 4 ports took about 30 of them.
 */
#define CHUNK 64

static uint32_t chunk_end(uint32_t p, uint32_t end)
{
	uint32_t stop = (p | 63) + 1;

	return stop < end ? stop : end;
}

/* The slots of the ports [p, stop) of one chunk, in one call. */
static int slots_read(struct portres_loader *l, uint8_t proto, uint32_t p, uint32_t stop, struct portres_port *v)
{
	LIBBPF_OPTS(bpf_map_batch_opts, o);
	/* an array's batch starts after in_batch: ports start at 1, so slot - 1 is a key */
	uint32_t keys[CHUNK], in = portres_port_slot(proto, (uint16_t)p) - 1, out, got = 0;

	while (got < stop - p) {
		uint32_t count = stop - p - got;

		if (bpf_map_lookup_batch(fd_of(l->skel->maps.portres_ports), &in, &out, keys + got, v + got, &count,
					 &o) && errno != ENOENT)
			return -errno;
		if (!count)
			return -EIO;
		got += count;
		in = out;
	}
	return 0;
}

/* Writes the slots of the ports of [p, stop) whose bit (port & 63) is in mask, in one call. */
static int slots_write(struct portres_loader *l, uint8_t proto, uint32_t p, uint32_t stop, uint64_t mask,
		       const struct portres_port *v)
{
	LIBBPF_OPTS(bpf_map_batch_opts, o, .elem_flags = BPF_ANY);
	struct portres_port vals[CHUNK];
	uint32_t keys[CHUNK], n = 0, done = 0;

	for (uint32_t q = p; q < stop; q++)
		if (mask >> (q & 63) & 1) {
			keys[n] = portres_port_slot(proto, (uint16_t)q);
			vals[n++] = v[q - p];
		}
	while (done < n) {
		uint32_t count = n - done;

		if (bpf_map_update_batch(fd_of(l->skel->maps.portres_ports), keys + done, vals + done, &count, &o))
			return -errno;
		done += count;
	}
	return 0;
}

/* Word w of portres_pbits written, and its copy kept (no read before a change). */
static int pbits_write(struct portres_loader *l, uint32_t w, uint64_t v)
{
	int err = ret_errno(bpf_map_update_elem(fd_of(l->skel->maps.portres_pbits), &w, &v, BPF_ANY));

	if (!err)
		l->pbits[w] = v;
	return err;
}

/* The bits of mask in the portres_pbits word of (proto, p), set or cleared (the loader is the one writer). */
static int pbits_change(struct portres_loader *l, uint8_t proto, uint32_t p, uint64_t mask, bool on)
{
	uint32_t word = portres_pbits_word(proto, (uint16_t)p);
	uint64_t v = l->pbits[word], nv = on ? v | mask : v & ~mask;

	return nv == v ? 0 : pbits_write(l, word, nv);
}

/*
 * Pins of a loader without portres_pbits: the bits made from the slots and
 * the overflow, before any program of ours runs with them.
 */
static int pbits_rebuild(struct portres_loader *l)
{
	int pfd = fd_of(l->skel->maps.portres_ports), bfd = fd_of(l->skel->maps.portres_pbits);
	int xfd = fd_of(l->skel->maps.portres_portx);
	uint64_t *bits = calloc(PORTRES_PBITS_WORDS, sizeof(*bits));
	struct portres_port_key k, *kp;
	struct portres_port v;
	uint32_t slot, w;
	int err = 0;

	if (!bits)
		return -ENOMEM;
	for (slot = 0; slot < PORTRES_PORT_SLOTS && !err; slot++) {
		err = ret_errno(bpf_map_lookup_elem(pfd, &slot, &v));
		if (!err && v.token)
			bits[portres_pbits_word(slot >> 16 ? IPPROTO_UDP : IPPROTO_TCP, slot & 0xffff)] |=
				1ULL << (slot & 63);
	}
	/* Every port with an overflow entry too. */
	for (kp = NULL; !err && !bpf_map_get_next_key(xfd, kp, &k); kp = &k)
		bits[portres_pbits_word(k.proto, k.port)] |= 1ULL << (k.port & 63);
	for (w = 0; w < PORTRES_PBITS_WORDS && !err; w++)
		err = ret_errno(bpf_map_update_elem(bfd, &w, &bits[w], BPF_ANY));
	free(bits);
	return err;
}

static int cfg_get(struct portres_loader *l, struct portres_cfg *c)
{
	uint32_t zero = 0;

	return ret_errno(bpf_map_lookup_elem(fd_of(l->skel->maps.portres_cfg), &zero, c));
}

static int cfg_set(struct portres_loader *l, const struct portres_cfg *c)
{
	uint32_t zero = 0;

	return ret_errno(bpf_map_update_elem(fd_of(l->skel->maps.portres_cfg), &zero, c, BPF_ANY));
}

/*
 * The overflow emptied: bits kept for ports whose slot emptied meanwhile
 * (see del_ports) are cleared, so those ports take the short path
 * again. Rare (a port reserved in two netns at once), so a walk of the set bits.
 */
static int pbits_sweep(struct portres_loader *l)
{
	int err = 0, b;
	struct portres_port v;
	uint64_t bits, keep;
	uint32_t w;

	for (w = 0; w < PORTRES_PBITS_WORDS && !err; w++) {
		if (!(bits = l->pbits[w]))
			continue;
		for (keep = bits, b = 0; b < 64 && !err; b++) {
			uint8_t proto = w >= 1024 ? IPPROTO_UDP : IPPROTO_TCP;
			uint16_t port = (uint16_t)((w & 1023) << 6 | b);

			if ((bits >> b & 1) && !(err = slot_get(l, proto, port, &v)) && !v.token)
				keep &= ~(1ULL << b);
		}
		if (!err && keep != bits)
			err = pbits_write(l, w, keep);
	}
	return err;
}

static int overflow_add(struct portres_loader *l, int delta)
{
	struct portres_cfg c;
	int err = cfg_get(l, &c);

	if (err)
		return err;
	c.overflow = (int)c.overflow + delta < 0 ? 0 : c.overflow + delta;
	if ((err = cfg_set(l, &c)) || c.overflow || delta >= 0)
		return err;
	return pbits_sweep(l);
}

/* The entry of a port of netns: 0 and *in_slot set, or -ENOENT. */
static int port_find(struct portres_loader *l, uint64_t netns, uint8_t proto, uint16_t port,
		     struct portres_port *v, bool *in_slot)
{
	struct portres_port_key k = port_key(netns, proto, port);
	int err = slot_get(l, proto, port, v);

	if (err)
		return err;
	*in_slot = v->token && v->netns == netns;
	if (*in_slot)
		return 0;
	return ret_errno(bpf_map_lookup_elem(fd_of(l->skel->maps.portres_portx), &k, v));
}

/*
 * Deletes the port entries of [start, last) that belong to token: slots a
 * chunk at a time, then overflow entries; the bits of the emptied slots are
 * cleared last, and only while portres_portx is empty (any of its entries
 * may be of one of these ports: see pbits_sweep).
 */
static void del_ports(struct portres_loader *l, uint64_t token, const struct portres_resv *r, uint32_t last)
{
	static const struct portres_port zero[CHUNK];
	int xfd = fd_of(l->skel->maps.portres_portx);
	uint64_t emptied[(65536 / 64) + 1] = { 0 };
	struct portres_port v[CHUNK], x;
	struct portres_port_key k;
	struct portres_cfg c;
	/* unread, take it as not empty: every port's overflow entry is looked for, no bit cleared */
	bool overflow = cfg_get(l, &c) || c.overflow;
	uint32_t p, stop, w;

	for (p = r->start, w = 0; p < last; p = stop, w++) {
		uint64_t mine = 0;

		stop = chunk_end(p, last);
		if (slots_read(l, r->proto, p, stop, v))
			continue;
		for (uint32_t q = p; q < stop; q++) {
			if (v[q - p].token == token && v[q - p].netns == r->netns) {
				mine |= 1ULL << (q & 63);
				continue;
			}
			k = port_key(r->netns, r->proto, (uint16_t)q);
			if (overflow && !bpf_map_lookup_elem(xfd, &k, &x) && x.token == token &&
			    !bpf_map_delete_elem(xfd, &k))
				overflow_add(l, -1);
		}
		if (mine && !slots_write(l, r->proto, p, stop, mine, zero))
			emptied[w] = mine;
	}
	/* only this loader adds overflow entries: empty before, empty now */
	if (overflow && (cfg_get(l, &c) || c.overflow))
		return;
	for (p = r->start, w = 0; p < last; p = chunk_end(p, last), w++)
		pbits_change(l, r->proto, p, emptied[w], false);
}

/*
 * Inserts the port entries of [start, end): a free slot is filled (its bit
 * set first), a slot of another netns makes an overflow entry (counted
 * before it appears, so the data plane never misses it). -EADDRINUSE if a
 * port of the netns is taken meanwhile; the caller deletes what was made.
 */
static int add_ports(struct portres_loader *l, uint64_t token, const struct portres_resv *r, uint32_t end,
		     const struct portres_port *first)
{
	struct portres_port v[CHUNK], mine[CHUNK];
	struct portres_port_key k;
	uint32_t p, stop;
	int err;

	memset(mine, 0, sizeof(mine));
	for (uint32_t i = 0; i < CHUNK; i++) {
		mine[i].token = token;
		mine[i].netns = r->netns;
	}
	for (p = r->start; p < end; p = stop) {
		uint64_t fill = 0;

		stop = chunk_end(p, end);
		if (p == r->start && first)
			memcpy(v, first, (stop - p) * sizeof(*v));
		else if ((err = slots_read(l, r->proto, p, stop, v)))
			return err;
		for (uint32_t q = p; q < stop; q++) {
			if (!v[q - p].token) {
				fill |= 1ULL << (q & 63);
				continue;
			}
			if (v[q - p].netns == r->netns)
				return -EADDRINUSE;
			if ((err = overflow_add(l, 1)))
				return err;
			k = port_key(r->netns, r->proto, (uint16_t)q);
			if (bpf_map_update_elem(fd_of(l->skel->maps.portres_portx), &k, &mine[0], BPF_NOEXIST)) {
				err = errno == EEXIST ? -EADDRINUSE : -errno;
				overflow_add(l, -1);
				return err;
			}
		}
		if ((err = pbits_change(l, r->proto, p, fill, true)) ||
		    (err = slots_write(l, r->proto, p, stop, fill, mine)))
			return err;
	}
	return 0;
}

/* portres_pbits as it is into the loader's copy (this loader writes it from now on). */
static int pbits_load(struct portres_loader *l)
{
	uint32_t *keys = calloc(PORTRES_PBITS_WORDS, sizeof(*keys)), n = PORTRES_PBITS_WORDS, out = 0;
	int err = 0;

	if (!keys)
		return -ENOMEM;
	if (bpf_map_lookup_batch(fd_of(l->skel->maps.portres_pbits), NULL, &out, keys, l->pbits, &n, NULL) &&
	    errno != ENOENT)
		err = -errno;
	/* an array's batch gives its keys in order: word i at i */
	for (uint32_t i = 0; !err && i < n; i++)
		if (keys[i] != i)
			err = -EIO;
	free(keys);
	return err;
}

/*
 * Counter slots: each reservation owns one index of the per-CPU array
 * portres_stats (portres_resv.slot). The bitmap is rebuilt from the
 * reservations at open, so an adopting loader knows which are taken.
 */
static int slots_init(struct portres_loader *l)
{
	enum { BATCH = 4096 };
	int fd = fd_of(l->skel->maps.portres_resv), err = 0;
	uint64_t *keys = calloc(BATCH, sizeof(*keys)), in = 0, out = 0;
	struct portres_resv *vals = calloc(BATCH, sizeof(*vals));
	uint32_t i, n;
	bool first = true, done = false;

	l->nslots = bpf_map__max_entries(l->skel->maps.portres_stats);
	l->slots = calloc((l->nslots + 63) / 64, sizeof(uint64_t));
	l->clean = calloc((l->nslots + 63) / 64, sizeof(uint64_t));
	l->pbits = calloc(PORTRES_PBITS_WORDS, sizeof(uint64_t));
	if (!l->slots || !l->clean || !l->pbits || !keys || !vals) {
		err = -ENOMEM;
		goto out;
	}
	/* the reservations a batch at a time (65,535 of them: 16 calls, not 131,070) */
	while (!done) {
		n = BATCH;
		if (bpf_map_lookup_batch(fd, first ? NULL : &in, &out, keys, vals, &n, NULL)) {
			if (errno != ENOENT) {
				err = -errno;
				goto out;
			}
			done = true; /* the last batch, n entries in it */
		}
		for (i = 0; i < n; i++)
			if (vals[i].slot < l->nslots)
				l->slots[vals[i].slot / 64] |= 1ull << (vals[i].slot % 64);
		in = out;
		first = false;
	}
	/* maps this open made are all zero: a slot's first use needs no reset */
	if (!l->adopted)
		memset(l->clean, 0xff, (l->nslots + 63) / 64 * sizeof(uint64_t));
	err = pbits_load(l);
out:
	free(keys);
	free(vals);
	return err;
}

/* Takes a free slot and zeroes its counters on every CPU. */
static int slot_take(struct portres_loader *l, uint32_t *slot)
{
	int ncpu = libbpf_num_possible_cpus();
	struct portres_stats *vals;
	uint32_t i, n = (l->nslots + 63) / 64;
	int err;

	for (i = 0; i < n && l->slots[i] == ~0ull; i++)
		;
	if (i == n)
		return -ENOSPC;
	*slot = i * 64 + __builtin_ctzll(~l->slots[i]);
	if (*slot >= l->nslots)
		return -ENOSPC;
	if (l->clean[*slot / 64] & (1ull << (*slot % 64))) {
		/* never used since the maps were made: counters and state are zero */
		l->clean[*slot / 64] &= ~(1ull << (*slot % 64));
		l->slots[*slot / 64] |= 1ull << (*slot % 64);
		return 0;
	}
	if (ncpu < 0)
		return ncpu;
	vals = calloc(ncpu, sizeof(*vals));
	if (!vals)
		return -ENOMEM;
	err = ret_errno(bpf_map_update_elem(fd_of(l->skel->maps.portres_stats), slot, vals, BPF_ANY));
	free(vals);
	if (!err) {
		struct portres_rstate st;

		memset(&st, 0, sizeof(st));
		err = ret_errno(bpf_map_update_elem(fd_of(l->skel->maps.portres_rstate), slot, &st, BPF_ANY));
	}
	if (!err)
		l->slots[*slot / 64] |= 1ull << (*slot % 64);
	return err;
}

static void slot_put(struct portres_loader *l, uint32_t slot)
{
	if (slot < l->nslots)
		l->slots[slot / 64] &= ~(1ull << (slot % 64));
}

/*
 * 0 if no port of [start, end) is reserved in r's netns, -EADDRINUSE if one
 * is. first[] gets the slots of the first chunk (the loader is their one
 * writer: add_ports need not read them again).
 */
static int ports_free(struct portres_loader *l, const struct portres_resv *r, uint32_t end,
		      struct portres_port first[CHUNK])
{
	int xfd = fd_of(l->skel->maps.portres_portx), err;
	struct portres_port v[CHUNK], x;
	struct portres_port_key k;
	struct portres_cfg c;
	uint32_t p, stop;

	if ((err = cfg_get(l, &c)))
		return err;
	for (p = r->start; p < end; p = stop) {
		stop = chunk_end(p, end);
		if ((err = slots_read(l, r->proto, p, stop, v)))
			return err;
		if (p == r->start)
			memcpy(first, v, (stop - p) * sizeof(*v));
		for (uint32_t q = p; q < stop; q++) {
			if (v[q - p].token && v[q - p].netns == r->netns)
				return -EADDRINUSE;
			if (!c.overflow)
				continue;
			k = port_key(r->netns, r->proto, (uint16_t)q);
			if (!bpf_map_lookup_elem(xfd, &k, &x))
				return -EADDRINUSE;
			if (errno != ENOENT)
				return -errno;
		}
	}
	return 0;
}

int portres_resv_add(struct portres_loader *l, uint64_t token, const struct portres_resv *r)
{
	int rfd = fd_of(l->skel->maps.portres_resv);
	struct portres_port first[CHUNK];
	struct portres_resv cur;
	uint32_t end;
	int err;

	if (!token || !r || !r->count || !r->start || (uint32_t)r->start + r->count > 65536 ||
	    (r->proto != IPPROTO_TCP && r->proto != IPPROTO_UDP) ||
	    (r->kind != PORTRES_KIND_PERSISTENT && r->kind != PORTRES_KIND_RUNTIME) ||
	    r->mode > PORTRES_MODE_ADVISORY)
		return -EINVAL;
	/*
	 * A token in use: the reservation's BPF_NOEXIST below says so (and its
	 * ports go again), or, where its ports were in the way, a look here.
	 */
	end = (uint32_t)r->start + r->count;
	if ((err = ports_free(l, r, end, first)))
		return err == -EADDRINUSE && !bpf_map_lookup_elem(rfd, &token, &cur) ? -EEXIST : err;
	cur = *r;
	cur.flags = 0;
	cur.next = 0;
	cur.pad = 0;
	err = slot_take(l, &cur.slot);
	if (err)
		return err;
	/* Ports first, the reservation last: enforcement starts when it appears. */
	if ((err = add_ports(l, token, r, end, first))) {
		del_ports(l, token, r, end);
		goto fail;
	}
	if (bpf_map_update_elem(rfd, &token, &cur, BPF_NOEXIST)) {
		err = -errno;
		del_ports(l, token, r, end);
		goto fail;
	}
	return 0;
fail:
	slot_put(l, cur.slot);
	return err;
}

static void del_grants_of(struct portres_loader *l, uint64_t token)
{
	int fd = fd_of(l->skel->maps.portres_grants);
	struct portres_grant_key k, next;
	void *prev = NULL;

	while (!bpf_map_get_next_key(fd, prev, &next)) {
		k = next;
		if (next.token == token) {
			bpf_map_delete_elem(fd, &k);
			prev = NULL; /* restart: deleting invalidates the cursor */
			continue;
		}
		prev = &k;
	}
}

static int resv_del(struct portres_loader *l, uint64_t token, bool grants);

int portres_resv_del(struct portres_loader *l, uint64_t token)
{
	return resv_del(l, token, true);
}

int portres_resv_del_nogrants(struct portres_loader *l, uint64_t token)
{
	return resv_del(l, token, false);
}

static int resv_del(struct portres_loader *l, uint64_t token, bool grants)
{
	struct portres_resv r;

	if (bpf_map_lookup_elem(fd_of(l->skel->maps.portres_resv), &token, &r))
		return -errno;
	/* The reservation first: from here on its ports are ordinary ports. */
	if (bpf_map_delete_elem(fd_of(l->skel->maps.portres_resv), &token))
		return -errno;
	del_ports(l, token, &r, (uint32_t)r.start + r.count);
	slot_put(l, r.slot);
	if (grants)
		del_grants_of(l, token);
	return 0;
}

/* A reservation as user space wrote it, with what the data plane wrote about it. */
static int resv_read(struct portres_loader *l, uint64_t token, struct portres_resv *r)
{
	struct portres_rstate st;

	if (bpf_map_lookup_elem(fd_of(l->skel->maps.portres_resv), &token, r))
		return -errno;
	r->flags = 0;
	r->next = 0;
	if (!bpf_map_lookup_elem(fd_of(l->skel->maps.portres_rstate), &r->slot, &st)) {
		r->flags = st.dead == token ? PORTRES_RESV_DEAD : 0;
		r->next = st.next;
	}
	return 0;
}

int portres_resv_get(struct portres_loader *l, uint64_t token, struct portres_resv *r)
{
	return resv_read(l, token, r);
}

/*
 * The map value is user space's alone (the data plane writes portres_rstate),
 * so rewriting it whole loses nothing the data plane wrote.
 */
int portres_resv_set_mode(struct portres_loader *l, uint64_t token, uint8_t mode)
{
	int fd = fd_of(l->skel->maps.portres_resv);
	struct portres_resv r;

	if (mode > PORTRES_MODE_ADVISORY)
		return -EINVAL;
	if (bpf_map_lookup_elem(fd, &token, &r))
		return -errno;
	r.mode = mode;
	return ret_errno(bpf_map_update_elem(fd, &token, &r, BPF_EXIST));
}

int portres_resv_foreach(struct portres_loader *l,
			 int (*cb)(uint64_t token, const struct portres_resv *r, void *arg), void *arg)
{
	int fd = fd_of(l->skel->maps.portres_resv);
	uint64_t key, next, *prev = NULL;
	struct portres_resv r;
	int ret;

	while (!bpf_map_get_next_key(fd, prev, &next)) {
		key = next;
		prev = &key;
		if (resv_read(l, key, &r))
			continue; /* deleted meanwhile */
		ret = cb(key, &r, arg);
		if (ret)
			return ret;
	}
	return 0;
}

int portres_released_count(struct portres_loader *l, uint64_t *n)
{
	struct portres_gstats g;
	int err = portres_global_stats(l, &g);

	*n = err ? 0 : g.released;
	return err;
}

/*
 * Reads portres_rstate in batches (a few system calls for the whole array)
 * and reports every slot in use whose reservation's anchor closed.
 */
int portres_dead_foreach(struct portres_loader *l, int (*cb)(uint64_t token, void *arg), void *arg)
{
	int fd = fd_of(l->skel->maps.portres_rstate), err = 0, ret;
	uint32_t batch = 4096, in = 0, out, n, i, k;
	struct portres_rstate *vals;
	uint32_t *keys;
	bool first = true;
	LIBBPF_OPTS(bpf_map_batch_opts, opts);

	keys = calloc(batch, sizeof(*keys));
	vals = calloc(batch, sizeof(*vals));
	if (!keys || !vals) {
		err = -ENOMEM;
		goto cleanup;
	}
	for (;;) {
		bool done;

		n = batch;
		done = bpf_map_lookup_batch(fd, first ? NULL : &in, &out, keys, vals, &n, &opts) != 0;
		if (done && errno != ENOENT) {
			err = -errno;
			break;
		}
		for (i = 0; i < n; i++) {
			k = keys[i];
			if (!vals[i].dead || k >= l->nslots || !(l->slots[k / 64] & (1ull << (k % 64))))
				continue;
			if ((ret = cb(vals[i].dead, arg))) {
				err = ret;
				goto cleanup;
			}
		}
		if (done)
			break;
		in = out;
		first = false;
	}
cleanup:
	free(keys);
	free(vals);
	return err;
}

int portres_port_owner(struct portres_loader *l, uint64_t netns, uint8_t proto, uint16_t port,
		       struct portres_port *out)
{
	bool in_slot;
	int err = port_find(l, netns, proto, port, out, &in_slot);

	if (err == -ENOENT) {
		memset(out, 0, sizeof(*out));
		return 0;
	}
	return err;
}

/*
 * Sums a per-CPU value made only of __u64 counters (portres_stats,
 * portres_gstats) over the CPUs into out, of size bytes.
 */
static int percpu_sum(int fd, const void *key, void *out, size_t size)
{
	int ncpu = libbpf_num_possible_cpus();
	size_t n = size / sizeof(__u64), i;
	__u64 *vals, *sum = out;
	int cpu, err = 0;

	if (ncpu < 0)
		return ncpu;
	vals = calloc(ncpu, size);
	if (!vals)
		return -ENOMEM;
	memset(out, 0, size);
	if (bpf_map_lookup_elem(fd, key, vals)) {
		err = -errno;
		goto cleanup;
	}
	for (cpu = 0; cpu < ncpu; cpu++)
		for (i = 0; i < n; i++)
			sum[i] += vals[cpu * n + i];
cleanup:
	free(vals);
	return err;
}

int portres_resv_stats(struct portres_loader *l, uint64_t token, struct portres_stats *out)
{
	struct portres_resv r;
	int err = portres_resv_get(l, token, &r);

	if (err)
		return err;
	return percpu_sum(fd_of(l->skel->maps.portres_stats), &r.slot, out, sizeof(*out));
}

int portres_global_stats(struct portres_loader *l, struct portres_gstats *out)
{
	uint32_t zero = 0;

	return percpu_sum(fd_of(l->skel->maps.portres_gstats), &zero, out, sizeof(*out));
}

static struct portres_grant_key grant_key(uint64_t token, uint32_t type, uint64_t id)
{
	struct portres_grant_key k;

	memset(&k, 0, sizeof(k));
	k.token = token;
	k.type = type;
	k.id = id;
	return k;
}

int portres_grant_add(struct portres_loader *l, uint64_t token, uint32_t type, uint64_t id)
{
	struct portres_grant_key k = grant_key(token, type, id);
	uint8_t one = 1;

	if (type < PORTRES_GRANT_UID || type > PORTRES_GRANT_CGROUP)
		return -EINVAL;
	return ret_errno(bpf_map_update_elem(fd_of(l->skel->maps.portres_grants), &k, &one, BPF_ANY));
}

int portres_grant_del(struct portres_loader *l, uint64_t token, uint32_t type, uint64_t id)
{
	struct portres_grant_key k = grant_key(token, type, id);

	return ret_errno(bpf_map_delete_elem(fd_of(l->skel->maps.portres_grants), &k));
}

int portres_grant_has(struct portres_loader *l, uint64_t token, uint32_t type, uint64_t id)
{
	struct portres_grant_key k = grant_key(token, type, id);
	uint8_t v;

	if (!bpf_map_lookup_elem(fd_of(l->skel->maps.portres_grants), &k, &v))
		return 1;
	return errno == ENOENT ? 0 : -errno;
}

/*
 * Socket creation walks the cgroup ancestry only while something is
 * attached, and hashes only ids that portres_cgidx marks (an id, or MANY
 * when several attached ids share the slot). Both are rebuilt from
 * portres_cgroups after every change: an attach lands in the map before
 * the index shows it, a detach leaves the index last.
 */
static int update_index(struct portres_loader *l)
{
	int fd = fd_of(l->skel->maps.portres_cgroups), ifd = fd_of(l->skel->maps.portres_cgidx);
	uint64_t key, next, *prev = NULL, *idx;
	struct portres_cfg c;
	uint32_t n = 0, i;
	int err = 0;

	idx = calloc(PORTRES_CGIDX_SLOTS, sizeof(*idx));
	if (!idx)
		return -ENOMEM;
	while (!bpf_map_get_next_key(fd, prev, &next)) {
		uint64_t *v = &idx[next & (PORTRES_CGIDX_SLOTS - 1)];

		key = next;
		prev = &key;
		*v = !*v || *v == key ? key : PORTRES_CGIDX_MANY;
		n++;
	}
	for (i = 0; i < PORTRES_CGIDX_SLOTS && !err; i++) {
		uint64_t cur;

		if (bpf_map_lookup_elem(ifd, &i, &cur))
			err = -errno;
		else if (cur != idx[i])
			err = ret_errno(bpf_map_update_elem(ifd, &i, &idx[i], BPF_ANY));
	}
	free(idx);
	if (err || (err = cfg_get(l, &c)))
		return err;
	c.cgroups = n;
	return cfg_set(l, &c);
}

/* A slot's token, if set, must not name a reservation of the other protocol. */
static int check_slot(struct portres_loader *l, uint64_t token, uint8_t proto)
{
	struct portres_resv r;

	if (!token || portres_resv_get(l, token, &r))
		return 0;
	return r.proto == proto ? 0 : -EPROTOTYPE;
}

int portres_cgroup_attach(struct portres_loader *l, uint64_t cgroup_id, const struct portres_cgroup *c)
{
	struct portres_cgroup v;
	int err;

	if (!c || (c->flags & ~(PORTRES_CG_CONFINE | PORTRES_CG_CONFINE_ALL)))
		return -EINVAL;
	if ((err = check_slot(l, c->tcp_token, IPPROTO_TCP)) || (err = check_slot(l, c->udp_token, IPPROTO_UDP)))
		return err;
	memset(&v, 0, sizeof(v));
	v.tcp_token = c->tcp_token;
	v.udp_token = c->udp_token;
	v.flags = c->flags;
	err = ret_errno(bpf_map_update_elem(fd_of(l->skel->maps.portres_cgroups), &cgroup_id, &v, BPF_ANY));
	if (err || (err = update_index(l)))
		return err;
	err = create_link_add(l, cgroup_id);
	if (err) {
		bpf_map_delete_elem(fd_of(l->skel->maps.portres_cgroups), &cgroup_id);
		update_index(l);
	}
	return err;
}

int portres_cgroup_detach(struct portres_loader *l, uint64_t cgroup_id)
{
	char path[PATH_MAX];
	int err;

	if (bpf_map_lookup_elem(fd_of(l->skel->maps.portres_cgroups), &cgroup_id, &(struct portres_cgroup){ 0 }))
		return -errno;
	if (!create_pin(path, sizeof(path), l, cgroup_id))
		pinned_link_del(path);
	err = ret_errno(bpf_map_delete_elem(fd_of(l->skel->maps.portres_cgroups), &cgroup_id));
	return err ? err : update_index(l);
}

int portres_cgroup_foreach(struct portres_loader *l,
			   int (*cb)(uint64_t cgroup_id, const struct portres_cgroup *c, void *arg), void *arg)
{
	int fd = fd_of(l->skel->maps.portres_cgroups);
	uint64_t key, next, *prev = NULL;
	struct portres_cgroup c;
	int ret;

	while (!bpf_map_get_next_key(fd, prev, &next)) {
		key = next;
		prev = &key;
		if (bpf_map_lookup_elem(fd, &key, &c))
			continue;
		ret = cb(key, &c, arg);
		if (ret)
			return ret;
	}
	return 0;
}

/*
 * Only TCP and UDP sockets over IPv4/IPv6 pass through cgroup/sock_release:
 * any other socket would keep its runtime reservations alive for ever.
 */
static int check_anchor(int sockfd)
{
	int domain, protocol;
	socklen_t len = sizeof(int);

	if (getsockopt(sockfd, SOL_SOCKET, SO_DOMAIN, &domain, &len))
		return -errno;
	len = sizeof(int);
	if (getsockopt(sockfd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len))
		return -errno;
	if ((domain != AF_INET && domain != AF_INET6) ||
	    (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP))
		return -EOPNOTSUPP;
	return 0;
}

static pid_t self_pid;

static void self_pid_forget(void)
{
	self_pid = 0;
}

static void self_pid_register(void)
{
	pthread_atfork(NULL, NULL, self_pid_forget);
}

/* getpid() is a system call each time: asked once, and again in a child after fork. */
static pid_t self(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, self_pid_register);
	if (!self_pid)
		self_pid = getpid();
	return self_pid;
}

/*
 * The data plane writes anchors into the socket's storage when this process
 * asks through setsockopt (portres_cfg.loader_tgid); after a fork (an agent
 * going to the background) the new process takes that over.
 */
static int anchor_owner(struct portres_loader *l)
{
	struct portres_cfg c;
	int err;

	if (l->tgid == self())
		return 0;
	if ((err = cfg_get(l, &c)))
		return err;
	c.loader_tgid = self();
	if ((err = cfg_set(l, &c)))
		return err;
	l->tgid = self();
	return 0;
}

/*
 * A socket's portres_sk read, changed by edit (0, or -errno: nothing is
 * written) and written back whole. The data plane writes a socket's storage
 * only in that socket's own calls (bind, connect, setsockopt, close; close
 * cannot come while the caller holds sockfd), so only a caller racing its
 * own socket can lose a write.
 */
static int sk_edit(struct portres_loader *l, int sockfd, int (*edit)(struct portres_sk *ps, const void *arg),
		   const void *arg)
{
	int fd = fd_of(l->skel->maps.portres_sk), err;
	struct portres_sk ps;

	if (bpf_map_lookup_elem(fd, &sockfd, &ps)) {
		if (errno != ENOENT)
			return -errno;
		memset(&ps, 0, sizeof(ps));
	}
	if ((err = edit(&ps, arg)))
		return err;
	return ret_errno(bpf_map_update_elem(fd, &sockfd, &ps, BPF_ANY));
}

/* PORTRES_ANCHOR_ADD / _DEL as portres_setsopt does them (anchor_op in bpf/portres.bpf.c). */
struct anchor_edit {
	int op;
	uint64_t token;
};

static int anchor_edit(struct portres_sk *ps, const void *arg)
{
	const struct anchor_edit *e = arg;
	int i, free = -1;

	for (i = 0; i < PORTRES_MAX_ANCHORS; i++) {
		if (ps->anchors[i] == e->token)
			break;
		if (!ps->anchors[i] && free < 0)
			free = i;
	}
	if (i == PORTRES_MAX_ANCHORS) {
		if (e->op == PORTRES_ANCHOR_DEL)
			return -ENOENT;
		if (free < 0)
			return -ENOSPC;
		i = free;
	}
	ps->anchors[i] = e->op == PORTRES_ANCHOR_ADD ? e->token : 0;
	return 0;
}

static int anchor_op(struct portres_loader *l, int sockfd, int op, uint64_t token, bool check)
{
	struct portres_anchor_op a = { .token = token };
	int err;

	if (!token)
		return -EINVAL;
	if (check && (err = check_anchor(sockfd)))
		return err;
	/* No setsockopt program to ask: the storage is written from here. */
	if (l->assoc == PORTRES_ASSOC_AGENT)
		return sk_edit(l, sockfd, anchor_edit, &(struct anchor_edit){ .op = op, .token = token });
	if ((err = anchor_owner(l)))
		return err;
	return setsockopt(sockfd, SOL_PORTRES, op, &a, sizeof(a)) ? -errno : 0;
}

/* What portres_setsopt writes for PORTRES_ASSOCIATE. */
static int assoc_edit(struct portres_sk *ps, const void *arg)
{
	ps->token = *(const uint64_t *)arg;
	ps->flags = (ps->flags | PORTRES_SK_ASSOC) & ~PORTRES_SK_STALE;
	return 0;
}

int portres_sk_associate(struct portres_loader *l, int sockfd, uint64_t token)
{
	if (!token)
		return -EINVAL;
	return sk_edit(l, sockfd, assoc_edit, &token);
}

int portres_anchor_add(struct portres_loader *l, int sockfd, uint64_t token)
{
	return anchor_op(l, sockfd, PORTRES_ANCHOR_ADD, token, true);
}

int portres_anchor_del(struct portres_loader *l, int sockfd, uint64_t token)
{
	return anchor_op(l, sockfd, PORTRES_ANCHOR_DEL, token, true);
}

int portres_anchor_add_checked(struct portres_loader *l, int sockfd, uint64_t token)
{
	return anchor_op(l, sockfd, PORTRES_ANCHOR_ADD, token, false);
}

int portres_anchor_del_checked(struct portres_loader *l, int sockfd, uint64_t token)
{
	return anchor_op(l, sockfd, PORTRES_ANCHOR_DEL, token, false);
}

static int on_ringbuf(void *ctx, void *data, size_t size)
{
	struct portres_loader *l = ctx;

	if (size < sizeof(struct portres_event))
		return 0;
	return l->cb(data, l->cb_arg);
}

/* Both ring buffers behind one epoll fd: releases have their own, never rate-limited. */
int portres_events_open(struct portres_loader *l, portres_event_cb cb, void *arg)
{
	int err;

	if (l->rb)
		return -EBUSY;
	l->cb = cb;
	l->cb_arg = arg;
	l->rb = ring_buffer__new(fd_of(l->skel->maps.portres_released), on_ringbuf, l, NULL);
	if (!l->rb)
		return -errno;
	err = ring_buffer__add(l->rb, fd_of(l->skel->maps.portres_events), on_ringbuf, l);
	if (err) {
		ring_buffer__free(l->rb);
		l->rb = NULL;
	}
	return err;
}

int portres_events_poll(struct portres_loader *l, int timeout_ms)
{
	if (!l->rb)
		return -EINVAL;
	return ring_buffer__poll(l->rb, timeout_ms);
}

int portres_events_fd(struct portres_loader *l)
{
	if (!l->rb)
		return -EINVAL;
	return ring_buffer__epoll_fd(l->rb);
}

int portres_prog_fd(struct portres_loader *l, const char *prog_name)
{
	struct bpf_program *prog = bpf_object__find_program_by_name(l->skel->obj, prog_name);

	return prog ? bpf_program__fd(prog) : -ENOENT;
}
