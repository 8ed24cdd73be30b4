// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * bench.c - `make bench`: what portres costs, side by side in one run
 * (SPEC §8), printed as one table with the targets and PASS/MISS.
 *
 * It builds its own world like tests/kernel/fixture.c: private mount and
 * network namespaces (lo up; the sysctl changed here is the netns's own), a
 * private bpffs on a temp dir, and cgroup portres-bench-<pid> with leaves:
 *
 *   none/           no program: the kernel alone
 *   portres-1/      portres loaded once (bpffs/one) with 1 reservation; later
 *                   with the 1,024-port block of section 3
 *   portres-65535/  portres loaded a second time (bpffs/full), with 65,535
 *   portres-agent/  a third time (bpffs/agent), with 65,535, as portresd
 *                   --associate=agent loads it: no setsockopt program
 *   place-1/, place-2/  portres loaded twice more (small maps, no reservation):
 *                   the same programs at other places in memory, see below
 *   scan/           tests/bench/scan.bpf.c: 128 rules scanned one by one
 *                   (systemd SocketBindAllow=), the matching rule last
 *   null-root-hooks/ "r0 = 1" programs on the hooks portres has at the attach
 *                   root (all but sock_create): what the kernel charges for a
 *                   hook with any program
 *   null-agent-hooks/ the same without setsockopt: the hooks of agent mode
 *   elsewhere/      attached to a block in both portres instances, so that
 *                   socket() walks the ancestry as on a host with attachments
 *   default/        section 4's instance at the default sizes (loaded, measured, removed)
 *
 * Section 1's floor is measured on the same sockets as the program: in
 * portres-1/, portres-65535/, place-*, scan/ and elsewhere/ an "r0 = 1"
 * program of that cgroup's own runs on every hook before portres's (or the
 * scan's) and another after it, so each batch of sockets gives the
 * program's cost and the floor's at the same moments, and the cost above the
 * floor is their difference batch by batch. Those null programs are detached
 * before section 2.
 *
 * Where the JIT puts a program matters: the same few instructions loaded
 * twice measure up to ~13 ns apart, run after run (identical "r0 = 1"
 * programs: ~5 ns), because fresh loads land at the same addresses each
 * time. A program's cost above the floor is therefore taken over four loads
 * of it (portres-1, portres-65535, place-1, place-2), each against two
 * null programs of its own: the median of those, with their range.
 *
 * Two independent portres instances let the 1 and 65,535 cases run in the
 * same interleaved rounds. A socket runs the programs of the cgroup it was
 * created in, so each case moves the process into a leaf, then makes its
 * sockets. Everything is undone on the way out: on success, on error, and on
 * SIGINT/SIGTERM/SIGHUP.
 *
 * The machine is shared and noisy: every figure is the median of rounds that
 * interleave the cases compared (ABAB..., the order rotating each round); the
 * interquartile range is printed next to it in brackets, and the CPU time
 * other processes used during the run in the header. PORTRES_BENCH_SECTIONS
 * (e.g. "12") runs some sections only.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "loader.h"
#include "portres.h"
#include "scan.skel.h"
#include "bench.h"
#include "cgroup.h"

#define MAX_ENTRIES   131072 /* max_resv and max_ports: 65,535 reservations fit twice */
#define NRESV_FULL    65535  /* TCP 1..65535, one port each */
#define PORT_RESERVED 20000  /* TCP: a 1-port reservation, bound by its holder or denied */
#define PORT_FREE     40000  /* UDP: never reserved (the full phase covers every TCP port) */
#define BLOCK_START   30000  /* TCP: the 1,024-port block of the bind(0) test */
#define BLOCK_COUNT   1024
#define EPH_START     50000  /* the kernel's ephemeral range in that test, 1,024 ports */
#define SCAN_RULES    128
#define NPLACE        2      /* section 1: more loads of portres, besides the 1 and 65,535 ones */
#define NPAIR         (4 + NPLACE) /* section 1's cgroups with null programs beside what is measured */

#define HOOK_ROUNDS   41     /* section 1: rounds x sockets per case, in batches */
#define HOOK_SOCKETS  1600
#define HOOK_BATCHES  16
#define LIFE_ROUNDS   61     /* section 2: rounds x batches per side x lives per batch */
#define LIFE_BATCHES  16
#define LIFE_BATCH    150
#define ALLOC_ROUNDS  21     /* section 3 */
#define ALLOC_BATCH   200
#define PORT_SINK     9      /* udp: where connect() and sendto() point (discard) */

#define TARGET_SCAN_FRACTION 0.20 /* bind4 above the floor / the scan above the floor */
#define TARGET_FLOOR_NS      10.0 /* create, release, sockopt: above the floor */
#define TARGET_LIFE_RATIO    1.03 /* whole socket life, portres / bare */

volatile sig_atomic_t bench_stop;

struct world {
	char root[4096];        /* cgroup2 mount */
	char home[4096];        /* the cgroup we came from */
	char cg[4200];          /* portres-bench-<pid> */
	char cg_none[4300], cg_one[4300], cg_full[4300], cg_agent[4300], cg_scan[4300], cg_else[4300];
	char cg_default[4300];  /* section 4's default-sized instance */
	char cg_nullr[4300];    /* null programs on the hooks portres has at the root (not sock_create) */
	char cg_nulla[4300];    /* the same without setsockopt (agent mode) */
	char tmp[256];
	char bpffs[300];
	bool mounted, entered;
	struct portres_loader *one;  /* 1 reservation, then the 1,024-port block */
	struct portres_loader *full; /* 65,535 reservations */
	struct portres_loader *agent; /* 65,535 reservations, --associate=agent */
	struct scan_bpf *scan;
	struct bpf_link *scan_link;
	char cg_place[NPLACE][4300];
	struct portres_loader *place[NPLACE]; /* more loads of the same programs */
	int null_prog[8];       /* "r0 = 1" per hook (enum hook), section 2's floors; -1 when none */
	int pair_prog[NPAIR][2][8]; /* section 1: per cgroup, before and after what is measured there */
	int pair_link[NPAIR * 2 * 8];
	int floor_link[16];     /* null programs of null-root-hooks/ and null-agent-hooks/ */
	uint64_t netns;
	int stats_fd;           /* bpf_enable_stats(BPF_STATS_RUN_TIME) while >= 0 */
	char eph_saved[64];     /* ip_local_port_range to put back */
};

/* A median and the interquartile range of some rounds. */
struct summary {
	double med, q1, q3;
};

static int quiet_libbpf(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_DEBUG && !getenv("PORTRES_BENCH_VERBOSE"))
		return 0;
	return vfprintf(stderr, fmt, ap);
}

static void on_signal(int sig)
{
	bench_stop = 1;
}

static int fail(const char *what, int err)
{
	fprintf(stderr, "bench: %s: %s\n", what, strerror(err < 0 ? -err : err));
	return err < 0 ? err : -err;
}

static uint64_t clock_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static uint64_t now_ns(void)
{
	return clock_ns(CLOCK_MONOTONIC);
}

/*
 * What the timed loops count: the CPU time of this thread, in user space and
 * in the kernel on its behalf. Unlike the wall clock it does not grow while
 * other processes have the CPU, which on a shared machine doubles a round now
 * and then.
 */
static uint64_t cpu_ns(void)
{
	return clock_ns(CLOCK_THREAD_CPUTIME_ID);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static struct summary summarize(double *v, int n)
{
	struct summary s;

	qsort(v, n, sizeof(*v), cmp_double);
	s.med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
	s.q1 = v[n / 4];
	s.q3 = v[(3 * n) / 4 < n ? (3 * n) / 4 : n - 1];
	return s;
}

/* PORTRES_BENCH_SECTIONS, e.g. "12": the sections to run (default all). */
static bool section(char n)
{
	const char *only = getenv("PORTRES_BENCH_SECTIONS");

	return !only || !*only || strchr(only, n);
}

/* --- the private world ------------------------------------------------------ */

static int write_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC), err = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, s, strlen(s)) != (ssize_t)strlen(s))
		err = -errno;
	close(fd);
	return err;
}

static int read_str(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return 0;
}

/* A benchmark killed by SIGKILL leaves an empty cgroup and temp dir: removed here. */
static void sweep_stale(const char *cgroot)
{
	const char *dirs[] = { cgroot, "/tmp" };
	char path[4400];
	struct dirent *de;
	unsigned i;
	int pid;

	for (i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		DIR *d = opendir(dirs[i]);

		if (!d)
			continue;
		while ((de = readdir(d))) {
			if (sscanf(de->d_name, "portres-bench-%d", &pid) != 1 || pid == getpid())
				continue;
			if (kill(pid, 0) == 0 || errno != ESRCH)
				continue;
			snprintf(path, sizeof(path), "%s/%s", dirs[i], de->d_name);
			if (i == 0) {
				cgroup2_remove(path);
				continue;
			}
			snprintf(path, sizeof(path), "%s/%s/bpffs", dirs[i], de->d_name);
			rmdir(path);
			snprintf(path, sizeof(path), "%s/%s", dirs[i], de->d_name);
			rmdir(path);
		}
		closedir(d);
	}
}

static int private_namespaces(void)
{
	struct ifreq ifr;
	int fd, err = 0;

	if (unshare(CLONE_NEWNS | CLONE_NEWNET))
		return fail("unshare(CLONE_NEWNS | CLONE_NEWNET)", errno);
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))
		return fail("make / rprivate", errno);
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fail("socket", errno);
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) == 0) {
		ifr.ifr_flags |= IFF_UP;
		if (ioctl(fd, SIOCSIFFLAGS, &ifr))
			err = fail("lo up", errno);
	} else {
		err = fail("lo flags", errno);
	}
	close(fd);
	return err;
}

struct scan_rule {              /* as in tests/bench/scan.bpf.c */
	__u32 protocol;
	__u16 nr_ports;
	__u16 port_min;
};

/* 127 rules of the same protocol that miss, then the one that matches. */
static int scan_up(struct world *w, int proto, uint16_t port)
{
	int fd, cgfd, err;
	__u32 i;

	w->scan = scan_bpf__open_and_load();
	if (!w->scan)
		return fail("load tests/bench/scan.bpf.c", errno);
	fd = bpf_map__fd(w->scan->maps.scan_rules);
	for (i = 0; i < SCAN_RULES; i++) {
		struct scan_rule r = { .protocol = proto, .nr_ports = 1,
				       .port_min = i == SCAN_RULES - 1 ? port : 1000 + i };

		if (bpf_map_update_elem(fd, &i, &r, BPF_ANY))
			return fail("scan rules", errno);
	}
	cgfd = open(w->cg_scan, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cgfd < 0)
		return fail(w->cg_scan, errno);
	w->scan_link = bpf_program__attach_cgroup(w->scan->progs.scan_bind4, cgfd);
	err = w->scan_link ? 0 : -errno;
	close(cgfd);
	return err ? fail("attach scan_bind4", err) : 0;
}

/* --- the hooks portres uses, and the floor on each ------------------------------ */

enum hook { H_CREATE, H_SETSOPT, H_GETSOPT, H_BIND4, H_CONN4, H_SEND4, H_RELEASE, NHOOK };

static const struct hook_def {
	const char *prog;            /* portres's program there */
	enum bpf_prog_type type;
	enum bpf_attach_type attach;
	bool target;                 /* within TARGET_FLOOR_NS of the floor in the common case */
} hooks[NHOOK] = {
	[H_CREATE]  = { "portres_create",  BPF_PROG_TYPE_CGROUP_SOCK, BPF_CGROUP_INET_SOCK_CREATE, true },
	[H_SETSOPT] = { "portres_setsopt", BPF_PROG_TYPE_CGROUP_SOCKOPT, BPF_CGROUP_SETSOCKOPT, true },
	[H_GETSOPT] = { "portres_getsopt", BPF_PROG_TYPE_CGROUP_SOCKOPT, BPF_CGROUP_GETSOCKOPT, true },
	[H_BIND4]   = { "portres_bind4",   BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_BIND, false },
	[H_CONN4]   = { "portres_conn4",   BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_CONNECT, false },
	[H_SEND4]   = { "portres_send4",   BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_UDP4_SENDMSG, false },
	[H_RELEASE] = { "portres_release", BPF_PROG_TYPE_CGROUP_SOCK, BPF_CGROUP_INET_SOCK_RELEASE, true },
};

/*
 * "r0 = 1; exit" on hook h: the cost of running any program there, as BPF
 * stats see it. The sockopt ones leave optlen as it is, like portres's.
 */
static int null_new(enum hook h)
{
	const struct bpf_insn insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 1 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = hooks[h].attach);
	int fd = bpf_prog_load(hooks[h].type, "bench_null", "GPL", insns, sizeof(insns) / sizeof(insns[0]), &opts);

	return fd < 0 ? fail("load a null program", fd) : fd;
}

/* Program prog (h's) at cgroup; its link fd goes to *link. */
static int null_attach(const char *cgroup, enum hook h, int prog, int *link)
{
	int cgfd = open(cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC), err = 0;

	if (cgfd < 0)
		return fail(cgroup, errno);
	*link = bpf_link_create(prog, cgfd, hooks[h].attach, NULL);
	if (*link < 0)
		err = fail("attach a null program", *link);
	close(cgfd);
	return err;
}

#define ROOT_HOOKS  (((1u << NHOOK) - 1) & ~(1u << H_CREATE))
#define AGENT_HOOKS (ROOT_HOOKS & ~(1u << H_SETSOPT))

/* Section 2's floors: the null programs on the hooks portres has at the root, with and without setsockopt. */
static int null_floors(struct world *w)
{
	int h, n = 0, err = 0;

	for (h = 0; h < NHOOK && !err; h++) {
		if (!(ROOT_HOOKS & 1u << h))
			continue;
		if ((w->null_prog[h] = null_new(h)) < 0)
			return w->null_prog[h];
		err = null_attach(w->cg_nullr, h, w->null_prog[h], &w->floor_link[n++]);
		if (!err && (AGENT_HOOKS & 1u << h))
			err = null_attach(w->cg_nulla, h, w->null_prog[h], &w->floor_link[n++]);
	}
	return err;
}

/* Section 1's cgroups, in the order of w->pair_prog. */
static const char *pair_cgroup(const struct world *w, int c)
{
	const char *cg[NPAIR] = { w->cg_one, w->cg_full, w->cg_scan, w->cg_else, w->cg_place[0], w->cg_place[1] };

	return cg[c];
}

/* Null programs of their own in each of section 1's cgroups: before (0) or after (1) what is there. */
static int null_pairs(struct world *w, int which)
{
	int c, h, err = 0;

	for (c = 0; c < NPAIR && !err; c++)
		for (h = 0; h < NHOOK && !err; h++) {
			if ((w->pair_prog[c][which][h] = null_new(h)) < 0)
				return w->pair_prog[c][which][h];
			err = null_attach(pair_cgroup(w, c), h, w->pair_prog[c][which][h],
					  &w->pair_link[(c * 2 + which) * 8 + h]);
		}
	return err;
}

/* Section 1 is over: its null programs leave the cgroups. */
static void null_pairs_off(struct world *w)
{
	int i, c, h;

	for (i = 0; i < NPAIR * 2 * 8; i++) {
		if (w->pair_link[i] >= 0)
			close(w->pair_link[i]); /* not pinned: this detaches */
		w->pair_link[i] = -1;
	}
	for (c = 0; c < NPAIR; c++)
		for (i = 0; i < 2; i++)
			for (h = 0; h < NHOOK; h++) {
				if (w->pair_prog[c][i][h] >= 0)
					close(w->pair_prog[c][i][h]);
				w->pair_prog[c][i][h] = -1;
			}
}

static int reserve(struct world *w, struct portres_loader *l, uint64_t token, uint16_t start,
		   uint16_t count);

/*
 * A TCP block attached to elsewhere/: sockets made anywhere else skip
 * portres_create (it is linked only there); UDP sockets made there run it
 * and find no block of theirs (section 1's "attached cgroup" side).
 */
static int attach_elsewhere(struct world *w, struct portres_loader *l, uint64_t token, bool add)
{
	struct portres_cgroup c = { .tcp_token = token };
	uint64_t id;
	int err = add ? reserve(w, l, token, PORT_RESERVED + 1, 1) : 0;

	if (err || (err = portres_cgroup_id(w->cg_else, &id)) || (err = portres_cgroup_attach(l, id, &c)))
		return fail("attach a block to elsewhere/", err);
	return 0;
}

static int world_up(struct world *w)
{
	struct portres_loader_opts opts = { 0 };
	char dir[400];
	struct rlimit rl;
	int err, n;

	err = private_namespaces();
	if (err)
		return err;
	if ((err = cgroup2_mount() ? 0 : -ENODEV) == 0)
		snprintf(w->root, sizeof(w->root), "%s", cgroup2_mount());
	if (err)
		return fail("no cgroup2 mount in /proc/self/mountinfo", err);
	sweep_stale(w->root);
	if ((err = cgroup2_self(w->home, sizeof(w->home))))
		return fail("no cgroup2 line in /proc/self/cgroup", err);
	/* Section 3 holds ~2,250 sockets open at once (root may raise the hard limit). */
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < 8192) {
		struct rlimit want = { 8192, rl.rlim_max < 8192 ? 8192 : rl.rlim_max };

		if (setrlimit(RLIMIT_NOFILE, &want)) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < 2 * BLOCK_COUNT + ALLOC_BATCH + 64) {
		fprintf(stderr, "bench: needs %d open files, the limit is %llu (ulimit -n)\n",
			2 * BLOCK_COUNT + ALLOC_BATCH + 64, (unsigned long long)rl.rlim_cur);
		return -EMFILE;
	}

	snprintf(w->tmp, sizeof(w->tmp), "/tmp/portres-bench-%d-XXXXXX", getpid());
	if (!mkdtemp(w->tmp)) {
		err = fail("mkdtemp", errno);
		w->tmp[0] = '\0';
		return err;
	}
	snprintf(w->bpffs, sizeof(w->bpffs), "%s/bpffs", w->tmp);
	if (mkdir(w->bpffs, 0700)) {
		err = fail(w->bpffs, errno);
		w->bpffs[0] = '\0';
		return err;
	}
	if (mount("bpf", w->bpffs, "bpf", 0, NULL))
		return fail("mount bpffs", errno);
	w->mounted = true;

	snprintf(w->cg, sizeof(w->cg), "%s/portres-bench-%d", w->root, getpid());
	if (mkdir(w->cg, 0755) && errno != EEXIST) {
		err = fail(w->cg, errno);
		w->cg[0] = '\0';
		return err;
	}
	if ((err = cgroup2_enter(w->cg)))
		return fail("enter the benchmark's cgroup", err);
	w->entered = true;
	snprintf(w->cg_none, sizeof(w->cg_none), "%s/none", w->cg);
	snprintf(w->cg_one, sizeof(w->cg_one), "%s/portres-1", w->cg);
	snprintf(w->cg_full, sizeof(w->cg_full), "%s/portres-65535", w->cg);
	snprintf(w->cg_agent, sizeof(w->cg_agent), "%s/portres-agent", w->cg);
	snprintf(w->cg_scan, sizeof(w->cg_scan), "%s/scan", w->cg);
	snprintf(w->cg_default, sizeof(w->cg_default), "%s/default", w->cg);
	snprintf(w->cg_else, sizeof(w->cg_else), "%s/elsewhere", w->cg);
	snprintf(w->cg_nullr, sizeof(w->cg_nullr), "%s/null-root-hooks", w->cg);
	snprintf(w->cg_nulla, sizeof(w->cg_nulla), "%s/null-agent-hooks", w->cg);
	for (n = 0; n < NPLACE; n++) {
		snprintf(w->cg_place[n], sizeof(w->cg_place[n]), "%s/place-%d", w->cg, n + 1);
		if (mkdir(w->cg_place[n], 0755))
			return fail("mkdir leaf cgroups", errno);
	}
	if (mkdir(w->cg_none, 0755) || mkdir(w->cg_one, 0755) || mkdir(w->cg_full, 0755) ||
	    mkdir(w->cg_agent, 0755) || mkdir(w->cg_scan, 0755) || mkdir(w->cg_default, 0755) ||
	    mkdir(w->cg_else, 0755) || mkdir(w->cg_nullr, 0755) || mkdir(w->cg_nulla, 0755))
		return fail("mkdir leaf cgroups", errno);
	/* Leaves only: the process itself waits in the program-free one. */
	if ((err = cgroup2_enter(w->cg_none)))
		return fail("enter none/", err);

	/* The floor's first null programs, then the instances, then the second null programs. */
	if ((err = null_pairs(w, 0)))
		return err;
	/* Maps large enough for 65,535 reservations in each instance. */
	opts.max_resv = MAX_ENTRIES;
	opts.max_ports = MAX_ENTRIES;
	snprintf(dir, sizeof(dir), "%s/one", w->bpffs);
	opts.bpffs_dir = dir;
	opts.cgroup_path = w->cg_one;
	if ((err = portres_loader_open(&opts, &w->one)))
		return fail("portres_loader_open (1 reservation)", err);
	snprintf(dir, sizeof(dir), "%s/full", w->bpffs);
	opts.cgroup_path = w->cg_full;
	if ((err = portres_loader_open(&opts, &w->full)))
		return fail("portres_loader_open (65,535 reservations)", err);
	snprintf(dir, sizeof(dir), "%s/agent", w->bpffs);
	opts.cgroup_path = w->cg_agent;
	opts.assoc = PORTRES_ASSOC_AGENT;
	if ((err = portres_loader_open(&opts, &w->agent)))
		return fail("portres_loader_open (65,535 reservations, agent mode)", err);
	if ((err = portres_netns_cookie(&w->netns)))
		return fail("netns cookie", err);
	/* The same programs loaded twice more, elsewhere in memory. */
	opts.assoc = PORTRES_ASSOC_SOCKOPT;
	opts.max_resv = opts.max_ports = 64;
	for (n = 0; n < NPLACE; n++) {
		snprintf(dir, sizeof(dir), "%s/place-%d", w->bpffs, n + 1);
		opts.cgroup_path = w->cg_place[n];
		if ((err = portres_loader_open(&opts, &w->place[n])))
			return fail("portres_loader_open (another load)", err);
	}
	if ((err = scan_up(w, IPPROTO_UDP, PORT_FREE)) || (err = null_pairs(w, 1)))
		return err;
	return null_floors(w);
}

static void world_down(struct world *w)
{
	if (w->stats_fd >= 0)
		close(w->stats_fd);
	w->stats_fd = -1;
	null_pairs_off(w);
	for (int i = 0; i < 16; i++) {
		if (w->floor_link[i] >= 0)
			close(w->floor_link[i]); /* not pinned: this detaches */
		w->floor_link[i] = -1;
	}
	for (int h = 0; h < NHOOK; h++) {
		if (w->null_prog[h] >= 0)
			close(w->null_prog[h]);
		w->null_prog[h] = -1;
	}
	for (int n = 0; n < NPLACE; n++) {
		if (w->place[n])
			portres_loader_teardown(w->place[n]);
		w->place[n] = NULL;
	}
	bpf_link__destroy(w->scan_link);
	w->scan_link = NULL;
	scan_bpf__destroy(w->scan);
	w->scan = NULL;
	if (w->one)
		portres_loader_teardown(w->one);
	if (w->full)
		portres_loader_teardown(w->full);
	if (w->agent)
		portres_loader_teardown(w->agent);
	w->one = w->full = w->agent = NULL;
	if (w->eph_saved[0])
		write_str("/proc/sys/net/ipv4/ip_local_port_range", w->eph_saved);
	if (w->entered && cgroup2_enter(w->home))
		fprintf(stderr, "bench: could not go back to %s\n", w->home);
	if (w->cg[0])
		cgroup2_remove(w->cg);
	if (w->mounted)
		umount2(w->bpffs, MNT_DETACH);
	if (w->bpffs[0])
		rmdir(w->bpffs);
	if (w->tmp[0])
		rmdir(w->tmp);
}

/* --- sockets ---------------------------------------------------------------- */

/* An IPv4 socket, associated with token unless 0; fd or -errno. */
static int sock_new(int proto, uint64_t token)
{
	int fd = socket(AF_INET, (proto == IPPROTO_TCP ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC,
			proto);
	int err;

	if (fd < 0)
		return -errno;
	if (token && setsockopt(fd, SOL_PORTRES, PORTRES_ASSOCIATE, &token, sizeof(token))) {
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

static int bind_port(int fd, uint16_t port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };

	return bind(fd, (struct sockaddr *)&sin, sizeof(sin)) ? -errno : 0;
}

static int local_port(int fd)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	if (getsockname(fd, (struct sockaddr *)&sin, &len))
		return -errno;
	return ntohs(sin.sin_port);
}

static uint64_t token_of(uint32_t tag)
{
	return 0x7072000000000000ull | ((uint64_t)(getpid() & 0xffff) << 32) | tag;
}

static int reserve(struct world *w, struct portres_loader *l, uint64_t token, uint16_t start,
		   uint16_t count)
{
	struct portres_resv r = {
		.netns = w->netns, .start = start, .count = count, .proto = IPPROTO_TCP,
		.kind = PORTRES_KIND_PERSISTENT, .mode = PORTRES_MODE_ENFORCE,
	};

	return portres_resv_add(l, token, &r);
}

/* --- 1. every program, from the kernel's run-time statistics ------------------ */

/*
 * What one socket's life does in each case (one iteration of a loop). The
 * common case of a host is an unassociated socket on a port nobody
 * reserved: socket, setsockopt, getsockopt, bind, close; and sockets that
 * connect or send without binding.
 */
enum kase { K_FREE, K_CONNECT, K_SENDTO, K_RESERVED, K_ASSOC, NKASE };

static const struct kase_def {
	const char *what;
	bool common;                 /* an unassociated socket, unreserved port */
} kases[NKASE] = {
	[K_FREE]     = { "unassoc., free port (udp)", true },
	[K_CONNECT]  = { "unassoc., connect (udp)", true },
	[K_SENDTO]   = { "unassoc., sendto (udp)", true },
	[K_RESERVED] = { "unassoc., reserved port", false },
	[K_ASSOC]    = { "associated, bind(0)", false },
};

/* Where a case runs: a leaf cgroup, and the portres token of the associated case. */
struct side {
	const char *what;
	const char *cgroup;
	struct portres_loader *l;    /* NULL: the scan program */
	uint64_t holder;             /* token of the 1-port block at PORT_RESERVED */
	bool common_only;            /* runs the common cases only */
	int prog_fd[NHOOK];          /* -1: nothing on that hook */
	int floor_fd[2][NHOOK];      /* the null programs before and after it */
	struct summary ns[NKASE][NHOOK];    /* the program, ns/run */
	struct summary floor[NKASE][NHOOK]; /* the null programs on the same sockets, ns/run */
	struct summary above[NKASE][NHOOK]; /* the program above them, batch by batch */
	bool ran[NKASE][NHOOK];
};

static int prog_runtime(int fd, uint64_t *ns, uint64_t *cnt)
{
	struct bpf_prog_info info;
	__u32 len = sizeof(info);

	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		return -errno;
	*ns = info.run_time_ns;
	*cnt = info.run_cnt;
	return 0;
}

static int sink_addr(struct sockaddr_in *sin, uint16_t port)
{
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_port = htons(port);
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return sizeof(*sin);
}

/*
 * One socket's life of case k; 0, or -EPROTO when it did not go as the case
 * says. get: read an option back too (section 1 times the getsockopt program).
 */
static int life(enum kase k, uint64_t holder, bool get)
{
	int one = 1, v, fd, err = 0, want = 0, proto = k >= K_RESERVED ? IPPROTO_TCP : IPPROTO_UDP;
	socklen_t len = sizeof(v);
	struct sockaddr_in sin;
	uint64_t tok;

	fd = sock_new(proto, 0);
	if (fd < 0)
		return fd;
	switch (k) {
	case K_FREE:
	case K_RESERVED:
		if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
		    (get && getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &v, &len)))
			err = -errno;
		want = k == K_FREE ? 0 : -EACCES;
		if (!err)
			err = bind_port(fd, k == K_FREE ? PORT_FREE : PORT_RESERVED) == want ? 0 : -EPROTO;
		break;
	case K_CONNECT:
		if (connect(fd, (struct sockaddr *)&sin, sink_addr(&sin, PORT_SINK)))
			err = -errno;
		break;
	case K_SENDTO:
		if (sendto(fd, "", 1, MSG_DONTWAIT, (struct sockaddr *)&sin, sink_addr(&sin, PORT_SINK)) < 0 &&
		    errno != ECONNREFUSED)
			err = -errno;
		break;
	case K_ASSOC:
		len = sizeof(tok);
		if (setsockopt(fd, SOL_PORTRES, PORTRES_ASSOCIATE, &holder, sizeof(holder)) ||
		    getsockopt(fd, SOL_PORTRES, PORTRES_ASSOCIATION, &tok, &len) || tok != holder ||
		    bind_port(fd, 0) || local_port(fd) != PORT_RESERVED)
			err = -EPROTO;
		break;
	default:
		break;
	}
	close(fd);
	return err;
}

static int lives(enum kase k, uint64_t holder, int n, bool get)
{
	int i, err;

	for (i = 0; i < n; i++) {
		if (bench_stop)
			return -EINTR;
		if ((err = life(k, holder, get))) {
			fprintf(stderr, "bench: %s: %s\n", kases[k].what, strerror(-err));
			return err;
		}
	}
	return 0;
}

/* portres sides run every case (or the common ones); the scan K_FREE. */
static bool side_runs(const struct side *sd, enum kase k)
{
	if (sd->l)
		return !sd->common_only || kases[k].common;
	return k == K_FREE;
}

/* Which programs a case runs. */
static bool runs(const struct side *sd, enum kase k, enum hook h)
{
	if (sd->prog_fd[h] < 0 || !side_runs(sd, k))
		return false;
	switch (h) {
	case H_SETSOPT:
	case H_GETSOPT:
		return k == K_FREE || k == K_RESERVED || k == K_ASSOC;
	case H_BIND4:
		return k == K_FREE || k == K_RESERVED || k == K_ASSOC;
	case H_CONN4:
		return k == K_CONNECT;
	case H_SEND4:
		return k == K_SENDTO;
	default:
		return true;
	}
}

/* Section 1's sides: portres with 1 and 65,535 reservations, the scan, the attached cgroup. */
enum { S_ONE, S_FULL, S_SCAN, S_ATT, S_PLACE, NSIDES = S_PLACE + NPLACE };

/* ns/run of the runs of fd since *ns, *cnt (updated); -1 when it did not run. */
static double ns_per_run(int fd, uint64_t *ns, uint64_t *cnt, int *err)
{
	uint64_t ns1 = 0, cnt1 = 0;
	double x = -1;

	if ((*err = prog_runtime(fd, &ns1, &cnt1)))
		return -1;
	if (cnt1 > *cnt)
		x = (double)(ns1 - *ns) / (cnt1 - *cnt);
	*ns = ns1;
	*cnt = cnt1;
	return x;
}

static double median_of(double *v, int n)
{
	return summarize(v, n).med;
}

/*
 * Every (side, case) in the same rounds, the order rotating each round, so
 * that they share the noise. A round runs HOOK_BATCHES batches of a case.
 * Per program and batch: its ns/run and the floor's, the mean of the two
 * null programs that ran before and after it on the same sockets; the
 * round keeps the fastest batch of each (an interrupt or another process
 * only ever adds to a batch) and the median of the batches' differences.
 * The figures are the medians of the rounds.
 */
static int measure_programs(struct world *w, struct side *sides, int nside)
{
	static double v[NSIDES][NKASE][NHOOK][HOOK_ROUNDS], fv[NSIDES][NKASE][NHOOK][HOOK_ROUNDS];
	static double dv[NSIDES][NKASE][NHOOK][HOOK_ROUNDS];
	double d[NHOOK][HOOK_BATCHES], x, f0, f1;
	uint64_t ns[3][NHOOK], cnt[3][NHOOK];
	int ncombo = nside * NKASE, nd[NHOOK], r, c, h, b, j, err = 0;

	for (r = 0; r < HOOK_ROUNDS; r++) {
		for (c = 0; c < ncombo; c++) {
			int i = (c + r) % ncombo, si = i / NKASE;
			struct side *sd = &sides[si];
			enum kase k = i % NKASE;

			if (!side_runs(sd, k))
				continue;
			if ((err = cgroup2_enter(sd->cgroup)))
				return fail("enter cgroup", err);
			if (r == 0 && (err = lives(k, sd->holder, HOOK_SOCKETS, true)))
				return err;
			for (h = 0; h < NHOOK; h++) {
				v[si][k][h][r] = fv[si][k][h][r] = 1e18;
				nd[h] = 0;
			}
			for (b = 0; b < HOOK_BATCHES; b++) {
				for (h = 0; h < NHOOK; h++) {
					if (!runs(sd, k, h))
						continue;
					ns_per_run(sd->prog_fd[h], &ns[0][h], &cnt[0][h], &err);
					for (j = 0; j < 2 && !err; j++)
						ns_per_run(sd->floor_fd[j][h], &ns[1 + j][h], &cnt[1 + j][h], &err);
					if (err)
						return fail("bpf_obj_get_info_by_fd", err);
				}
				if ((err = lives(k, sd->holder, HOOK_SOCKETS / HOOK_BATCHES, true)))
					return err;
				for (h = 0; h < NHOOK; h++) {
					if (!runs(sd, k, h))
						continue;
					x = ns_per_run(sd->prog_fd[h], &ns[0][h], &cnt[0][h], &err);
					f0 = err ? -1 : ns_per_run(sd->floor_fd[0][h], &ns[1][h], &cnt[1][h], &err);
					f1 = err ? -1 : ns_per_run(sd->floor_fd[1][h], &ns[2][h], &cnt[2][h], &err);
					if (err)
						return fail("bpf_obj_get_info_by_fd", err);
					if (x < 0 || f0 < 0 || f1 < 0)
						continue;
					sd->ran[k][h] = true;
					v[si][k][h][r] = x < v[si][k][h][r] ? x : v[si][k][h][r];
					fv[si][k][h][r] = (f0 + f1) / 2 < fv[si][k][h][r] ? (f0 + f1) / 2 : fv[si][k][h][r];
					d[h][nd[h]++] = x - (f0 + f1) / 2;
				}
			}
			for (h = 0; h < NHOOK; h++)
				if (nd[h])
					dv[si][k][h][r] = median_of(d[h], nd[h]);
		}
	}
	for (c = 0; c < ncombo; c++) {
		struct side *sd = &sides[c / NKASE];
		enum kase k = c % NKASE;

		for (h = 0; h < NHOOK; h++) {
			if (!sd->ran[k][h])
				continue;
			sd->ns[k][h] = summarize(v[c / NKASE][k][h], HOOK_ROUNDS);
			sd->floor[k][h] = summarize(fv[c / NKASE][k][h], HOOK_ROUNDS);
			sd->above[k][h] = summarize(dv[c / NKASE][k][h], HOOK_ROUNDS);
		}
	}
	return cgroup2_enter(w->cg_none);
}

static int stats_on(struct world *w)
{
	w->stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
	return w->stats_fd < 0 ? fail("bpf_enable_stats(BPF_STATS_RUN_TIME)", errno) : 0;
}

static void stats_off(struct world *w)
{
	if (w->stats_fd >= 0)
		close(w->stats_fd);
	w->stats_fd = -1;
}

/* Section 1's side of pair cgroup c: l's programs (NULL: the scan), with that cgroup's null programs. */
static void side_of(struct world *w, struct side *sd, const char *what, int c, struct portres_loader *l,
		    uint64_t holder)
{
	int h;

	*sd = (struct side){ .what = what, .cgroup = pair_cgroup(w, c), .l = l, .holder = holder };
	for (h = 0; h < NHOOK; h++) {
		sd->prog_fd[h] = l ? portres_prog_fd(l, hooks[h].prog) :
			     h == H_BIND4 ? bpf_program__fd(w->scan->progs.scan_bind4) : -1;
		sd->floor_fd[0][h] = w->pair_prog[c][0][h];
		sd->floor_fd[1][h] = w->pair_prog[c][1][h];
	}
}

/* --- 2. the whole socket life with and without portres (stats off) ------------ */

/* Ratios of a round's fastest batches: portres / none, its empty programs / none, portres / empty. */
struct life_side {
	struct summary portres, floor, own;
};

struct life_row {
	const char *what;
	enum kase k;
	double none;                    /* ns per life, median of the rounds' best batches */
	struct life_side sides[2];      /* the default mode, --associate=agent */
};

static int life_batch(const char *cgroup, enum kase k, double *ns_per)
{
	uint64_t t0;
	int err;

	if ((err = cgroup2_enter(cgroup)))
		return fail("enter cgroup", err);
	t0 = cpu_ns();
	err = lives(k, 0, LIFE_BATCH, false);
	*ns_per = (double)(cpu_ns() - t0) / LIFE_BATCH;
	return err;
}

/*
 * Each round runs LIFE_BATCHES short batches of each side in turn (the
 * order rotating) and keeps each side's fastest: what other processes add
 * to a batch only ever makes it slower, so the fastest of a round is the
 * least disturbed. The ratios of a round are taken from those. The sides:
 * no program, portres, its empty programs, portres in agent mode, its empty
 * programs.
 */
static int measure_life(struct world *w, struct life_row *row)
{
	enum { NONE, PORTRES, FLOOR, AGENT, AFLOOR, N };
	const char *cg[N] = { w->cg_none, w->cg_full, w->cg_nullr, w->cg_agent, w->cg_nulla };
	static double none[LIFE_ROUNDS], ratio[2][3][LIFE_ROUNDS];
	double best[N], x;
	int r, j, k, m, err;

	for (k = 0; k < N; k++)
		if ((err = life_batch(cg[k], row->k, &x)))
			return err;
	for (r = 0; r < LIFE_ROUNDS; r++) {
		for (k = 0; k < N; k++)
			best[k] = 1e18;
		for (j = 0; j < LIFE_BATCHES; j++)
			for (k = 0; k < N; k++) {
				int side = (k + j + r) % N;

				if ((err = life_batch(cg[side], row->k, &x)))
					return err;
				if (x < best[side])
					best[side] = x;
			}
		none[r] = best[NONE];
		for (m = 0; m < 2; m++) {
			double p = best[m ? AGENT : PORTRES], f = best[m ? AFLOOR : FLOOR];

			ratio[m][0][r] = p / best[NONE];
			ratio[m][1][r] = f / best[NONE];
			ratio[m][2][r] = p / f;
		}
	}
	row->none = summarize(none, LIFE_ROUNDS).med;
	for (m = 0; m < 2; m++) {
		row->sides[m].portres = summarize(ratio[m][0], LIFE_ROUNDS);
		row->sides[m].floor = summarize(ratio[m][1], LIFE_ROUNDS);
		row->sides[m].own = summarize(ratio[m][2], LIFE_ROUNDS);
	}
	return cgroup2_enter(w->cg_none);
}

/* --- 3. bind(0) from a 1,024-port block against the kernel's ephemeral range -- */

/* One allocator: sockets of cgroup (associated with token unless 0) binding 0. */
struct alloc_side {
	const char *cgroup;
	uint64_t token;
	uint16_t start;         /* the block or the ephemeral range */
	int held[BLOCK_COUNT];  /* sockets holding ports of it */
	int nheld;
};

static void alloc_release(struct alloc_side *s)
{
	while (s->nheld > 0)
		close(s->held[--s->nheld]);
}

/* Holds the first `occ` ports of the shuffled offsets, by binding them explicitly. */
static int alloc_fill(struct alloc_side *s, const uint16_t *order, int occ)
{
	int fd, err;

	if ((err = cgroup2_enter(s->cgroup)))
		return fail("enter cgroup", err);
	while (s->nheld < occ) {
		fd = sock_new(IPPROTO_TCP, s->token);
		if (fd < 0)
			return fail("socket (fill)", fd);
		err = bind_port(fd, s->start + order[s->nheld]);
		if (err) {
			close(fd);
			return fail("bind (fill)", err);
		}
		s->held[s->nheld++] = fd;
	}
	return 0;
}

/* Times bind(0)+close() of ALLOC_BATCH fresh sockets; checks where one more lands. */
static int alloc_batch(struct alloc_side *s, double *ns_per)
{
	int fds[ALLOC_BATCH], i, fd, err = 0, port;
	uint64_t t0;

	if ((err = cgroup2_enter(s->cgroup)))
		return fail("enter cgroup", err);
	for (i = 0; i < ALLOC_BATCH; i++) {
		fds[i] = sock_new(IPPROTO_TCP, s->token);
		if (fds[i] < 0) {
			err = fail("socket (alloc)", fds[i]);
			while (i-- > 0)
				close(fds[i]);
			return err;
		}
	}
	t0 = cpu_ns();
	for (i = 0; i < ALLOC_BATCH; i++) {
		if (!err)
			err = bind_port(fds[i], 0);
		close(fds[i]);
	}
	*ns_per = (double)(cpu_ns() - t0) / ALLOC_BATCH;
	if (err)
		return fail("bind(0)", err);

	fd = sock_new(IPPROTO_TCP, s->token);
	if (fd < 0)
		return fail("socket (alloc)", fd);
	err = bind_port(fd, 0);
	port = err ? err : local_port(fd);
	close(fd);
	if (port < s->start || port >= s->start + BLOCK_COUNT) {
		fprintf(stderr, "bench: bind(0) gave port %d, outside %u-%u\n", port, s->start,
			s->start + BLOCK_COUNT - 1);
		return -EPROTO;
	}
	return bench_stop ? -EINTR : 0;
}

struct alloc_row {
	int held;
	struct summary portres, kernel;
	struct summary hook;    /* portres_bind4 alone (BPF stats), ns per bind(0) */
};

/*
 * One more batch with BPF stats on (they cost time, so not in the timed
 * batches): the bind hook's share of a bind(0).
 */
static int alloc_hook(struct world *w, struct alloc_side *s, double *ns_per)
{
	int fd = portres_prog_fd(w->one, "portres_bind4");
	uint64_t ns0 = 0, cnt0 = 0, ns1 = 0, cnt1 = 0;
	double dummy;
	int err;

	if ((err = stats_on(w)))
		return err;
	if (!(err = prog_runtime(fd, &ns0, &cnt0)) && !(err = alloc_batch(s, &dummy)) &&
	    !(err = prog_runtime(fd, &ns1, &cnt1)))
		*ns_per = cnt1 > cnt0 ? (double)(ns1 - ns0) / (cnt1 - cnt0) : 0;
	stats_off(w);
	return err;
}

static int measure_alloc(struct world *w, struct alloc_row *rows, int nrow)
{
	static struct alloc_side ps, ks;
	const char *range = "/proc/sys/net/ipv4/ip_local_port_range";
	double pv[ALLOC_ROUNDS], kv[ALLOC_ROUNDS], hv[ALLOC_ROUNDS], dummy;
	uint16_t order[BLOCK_COUNT], t;
	char buf[64];
	int i, j, r, err;

	/* The same scattered set of offsets is held on both sides (fixed seed). */
	for (i = 0; i < BLOCK_COUNT; i++)
		order[i] = i;
	srand(7);
	for (i = BLOCK_COUNT - 1; i > 0; i--) {
		j = rand() % (i + 1);
		t = order[i], order[i] = order[j], order[j] = t;
	}
	ps = (struct alloc_side){ .cgroup = w->cg_one, .token = token_of(0x20000),
				  .start = BLOCK_START };
	ks = (struct alloc_side){ .cgroup = w->cg_none, .start = EPH_START };
	if ((err = reserve(w, w->one, ps.token, BLOCK_START, BLOCK_COUNT)))
		return fail("portres_resv_add 1,024-port block", err);
	/* Per network namespace: the host's range is untouched. */
	if ((err = read_str(range, w->eph_saved, sizeof(w->eph_saved)))) {
		err = fail(range, err);
		goto cleanup;
	}
	snprintf(buf, sizeof(buf), "%d %d\n", EPH_START, EPH_START + BLOCK_COUNT - 1);
	if ((err = write_str(range, buf))) {
		err = fail(range, err);
		goto cleanup;
	}

	for (i = 0; i < nrow; i++) {
		if ((err = alloc_fill(&ps, order, rows[i].held)) ||
		    (err = alloc_fill(&ks, order, rows[i].held)))
			goto cleanup;
		if ((err = alloc_batch(&ps, &dummy)) || (err = alloc_batch(&ks, &dummy)))
			goto cleanup;
		/* portres, kernel, portres with stats; the first two swap every round. */
		for (r = 0; r < ALLOC_ROUNDS; r++) {
			if (r % 2) {
				err = alloc_batch(&ks, &kv[r]);
				err = err ? err : alloc_batch(&ps, &pv[r]);
			} else {
				err = alloc_batch(&ps, &pv[r]);
				err = err ? err : alloc_batch(&ks, &kv[r]);
			}
			if (err || (err = alloc_hook(w, &ps, &hv[r])))
				goto cleanup;
		}
		rows[i].portres = summarize(pv, ALLOC_ROUNDS);
		rows[i].kernel = summarize(kv, ALLOC_ROUNDS);
		rows[i].hook = summarize(hv, ALLOC_ROUNDS);
	}
cleanup:
	alloc_release(&ps);
	alloc_release(&ks);
	if (w->eph_saved[0] && !write_str(range, w->eph_saved))
		w->eph_saved[0] = '\0';
	portres_resv_del(w->one, ps.token);
	cgroup2_enter(w->cg_none);
	return err;
}

/* --- 4. map memory ---------------------------------------------------------- */

struct map_mem {
	char name[BPF_OBJ_NAME_LEN];
	uint64_t memlock;
	uint32_t max_entries;
	bool percpu;
};

static int cmp_mem(const void *a, const void *b)
{
	const struct map_mem *x = a, *y = b;

	return x->memlock < y->memlock ? 1 : x->memlock > y->memlock ? -1 : 0;
}

static uint64_t fdinfo_memlock(int fd)
{
	char path[64], line[256];
	unsigned long long v = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "memlock: %llu", &v) == 1)
			break;
	fclose(f);
	return v;
}

/* Every map any portres program uses (found through the programs' map ids). */
static int map_memory(struct portres_loader *l, struct map_mem *maps, int max, int *nmaps)
{
	static const char *const progs[] = {
		"portres_bind4", "portres_bind6", "portres_conn4", "portres_conn6", "portres_send4",
		"portres_send6", "portres_create", "portres_release", "portres_setsopt", "portres_getsopt",
	};
	__u32 ids[64], seen[64];
	int nseen = 0, n = 0;
	unsigned p, i, k;

	for (p = 0; p < sizeof(progs) / sizeof(progs[0]); p++) {
		struct bpf_prog_info info;
		__u32 len = sizeof(info);
		int fd = portres_prog_fd(l, progs[p]);

		if (fd < 0)
			continue;
		memset(&info, 0, sizeof(info));
		info.nr_map_ids = 64;
		info.map_ids = (__u64)(unsigned long)ids;
		if (bpf_obj_get_info_by_fd(fd, &info, &len))
			return fail("prog info", errno);
		for (i = 0; i < info.nr_map_ids && i < 64; i++) {
			for (k = 0; k < (unsigned)nseen && seen[k] != ids[i]; k++)
				;
			if (k == (unsigned)nseen && nseen < 64)
				seen[nseen++] = ids[i];
		}
	}
	for (k = 0; k < (unsigned)nseen && n < max; k++) {
		struct bpf_map_info mi;
		__u32 len = sizeof(mi);
		int fd = bpf_map_get_fd_by_id(seen[k]);

		if (fd < 0)
			return fail("bpf_map_get_fd_by_id", errno);
		memset(&mi, 0, sizeof(mi));
		if (!bpf_obj_get_info_by_fd(fd, &mi, &len)) {
			snprintf(maps[n].name, sizeof(maps[n].name), "%s", mi.name);
			maps[n].max_entries = mi.max_entries;
			maps[n].percpu = mi.type == BPF_MAP_TYPE_PERCPU_ARRAY || mi.type == BPF_MAP_TYPE_PERCPU_HASH;
			maps[n].memlock = fdinfo_memlock(fd);
			n++;
		}
		close(fd);
	}
	qsort(maps, n, sizeof(*maps), cmp_mem);
	/* fdinfo's memlock of a per-CPU map covers every possible CPU: shown per CPU. */
	for (k = 0; k < (unsigned)n; k++)
		if (maps[k].percpu && libbpf_num_possible_cpus() > 0)
			maps[k].memlock /= libbpf_num_possible_cpus();
	*nmaps = n;
	return 0;
}

/* --- the table ---------------------------------------------------------------- */

/* 1234567.8 -> "1,234,568"; below 100 one decimal. */
static const char *num(char *buf, double v)
{
	char digits[16];
	int len, i, o = 0;

	if (v < 100) {
		snprintf(buf, 24, "%.1f", v);
		return buf;
	}
	len = snprintf(digits, sizeof(digits), "%.0f", v);
	for (i = 0; i < len; i++) {
		if (i && (len - i) % 3 == 0)
			buf[o++] = ',';
		buf[o++] = digits[i];
	}
	buf[o] = '\0';
	return buf;
}

static const char *fig(char *buf, size_t len, struct summary s)
{
	char a[24], b[24], c[24];

	snprintf(buf, len, "%s [%s-%s]", num(a, s.med), num(b, s.q1), num(c, s.q3));
	return buf;
}

#define ROW "   %-46s %-24s %-12s %s\n"

static void row_verdict(const char *label, const char *figure, const char *target, bool pass)
{
	printf(ROW, label, figure, target ? target : "", target ? (pass ? "PASS" : "MISS") : "");
}

struct ctl_result {
	char what[64];
	char figure[32];
	char target[32];
	bool has_target, pass;
};

/* CPU time (clock ticks) of the machine, of its idle, and of this process. */
struct cpu_sample {
	unsigned long long total, idle, self;
};

struct results {
	struct side sides[NSIDES];
	struct life_row life[2];
	struct alloc_row alloc[3];
	double fill_s;
	struct map_mem maps[32], maps_default[32];
	int nmaps, nmaps_default;
	bool stats_busy;        /* someone else had BPF stats on during section 2 */
	int cpu;                /* sections 1 and 2 ran on this CPU (-1: not pinned) */
	struct cpu_sample cpu0, cpu1;
	struct ctl_result ctl[16];
	int nctl, ctl_err;
};

static void cpu_sample(struct cpu_sample *c)
{
	unsigned long long v[8] = { 0 }, ut = 0, st = 0;
	char buf[1024], *p;
	FILE *f = fopen("/proc/stat", "r");

	memset(c, 0, sizeof(*c));
	if (f) {
		if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
			   &v[3], &v[4], &v[5], &v[6], &v[7]) == 8) {
			c->total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
			c->idle = v[3] + v[4];
		}
		fclose(f);
	}
	/* utime and stime are fields 14 and 15; comm (field 2) may hold spaces. */
	if (!read_str("/proc/self/stat", buf, sizeof(buf)) && (p = strrchr(buf, ')')) &&
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) == 2)
		c->self = ut + st;
}

/* Section 5's rows, as ctlbench_run reports them. */
static void ctl_row(void *arg, const char *what, const char *figure, const char *target, bool pass)
{
	struct results *res = arg;
	struct ctl_result *c;

	if (res->nctl >= (int)(sizeof(res->ctl) / sizeof(res->ctl[0])))
		return;
	c = &res->ctl[res->nctl++];
	snprintf(c->what, sizeof(c->what), "%s", what ? what : "");
	snprintf(c->target, sizeof(c->target), "%s", target ? target : "");
	snprintf(c->figure, sizeof(c->figure), "%s", figure ? figure : "");
	c->has_target = target != NULL;
	c->pass = pass;
}

static void print_header(struct results *res)
{
	struct cpu_sample *a = &res->cpu0, *b = &res->cpu1;
	unsigned long long total = b->total - a->total, busy = total - (b->idle - a->idle);
	unsigned long long self = b->self - a->self;
	double others = total ? 100.0 * (busy > self ? busy - self : 0) / total : 0;
	char x[24], y[24], z[24];
	struct utsname u;

	uname(&u);
	printf("\nportres bench: Linux %s, %ld CPUs; other processes used %.0f %% of the CPUs "
	       "meanwhile\n", u.release, sysconf(_SC_NPROCESSORS_ONLN), others);
	printf("figures: median [interquartile range] of rounds interleaving the cases compared; "
	       "timed loops count\nthe benchmark thread's CPU time (not time other processes had "
	       "the CPU)\n");
	if (res->cpu >= 0)
		printf("sections 1 and 2 ran on CPU %d only\n", res->cpu);
	printf("setup: %s reservations (tcp, 1 port each) added through portres_resv_add in "
	       "%.2f s (%s/s); maps sized %s\n\n", num(x, NRESV_FULL), res->fill_s,
	       num(y, NRESV_FULL / res->fill_s), num(z, MAX_ENTRIES));
}

static void print_programs(struct results *res)
{
	const struct side *one = &res->sides[S_ONE], *full = &res->sides[S_FULL], *scan = &res->sides[S_SCAN];
	const struct side *att = &res->sides[S_ATT];
	double scan_above = scan->above[K_FREE][H_BIND4].med;
	char f[96], g[96], label[96], a[24];
	int h, k, i;

	printf("1. every portres program, ns/run (kernel BPF run-time stats), median of %d rounds; a round is\n"
	       "   %d batches of %d sockets per case: the fastest batch's ns/run, and the median of the batches'\n"
	       "   cost above the floor. floor: \"r0 = 1\" on the same hook run by the same sockets, once before\n"
	       "   the program and once after it (their mean). Both portres instances have a block attached to\n"
	       "   another cgroup, elsewhere/, as a host with attachments would\n",
	       HOOK_ROUNDS, HOOK_BATCHES, HOOK_SOCKETS / HOOK_BATCHES);
	printf("   %-16s %-27s %-20s %-20s %-20s %s\n", "program", "case", "floor (1 resv)", "portres, 1 resv",
	       "portres, 65,535", "above floor: 1 / 65,535 (2 more loads)");
	for (h = 0; h < NHOOK; h++) {
		for (k = 0; k < NKASE; k++) {
			int n;

			if (!full->ran[k][h] || !one->ran[k][h])
				continue;
			n = snprintf(label, sizeof(label), "%+.1f / %+.1f", one->above[k][h].med, full->above[k][h].med);
			for (i = S_PLACE; i < NSIDES && n < (int)sizeof(label); i++)
				if (res->sides[i].ran[k][h])
					n += snprintf(label + n, sizeof(label) - n, "%s%+.1f%s", i == S_PLACE ? " (" : ", ",
						      res->sides[i].above[k][h].med, i == NSIDES - 1 ? ")" : "");
			printf("   %-16s %-27s %-20s %-20s %-20s %s\n", hooks[h].prog + 8, kases[k].what,
			       fig(f, sizeof(f), one->floor[k][h]), fig(g, sizeof(g), one->ns[k][h]),
			       fig(a, sizeof(a), full->ns[k][h]), label);
		}
	}
	printf("   %-16s %-27s %-20s %-20s %-20s %+.1f\n", "scan_bind4", "128 rules, match last (udp)",
	       fig(f, sizeof(f), scan->floor[K_FREE][H_BIND4]), "", fig(g, sizeof(g), scan->ns[K_FREE][H_BIND4]),
	       scan_above);
	printf("   portres_create is linked only at attached cgroups: in the rows above it did not run.\n"
	       "   A udp socket in elsewhere/ (attached to a tcp block) runs it:\n");
	for (k = 0; k < NKASE; k++)
		if (att->ran[k][H_CREATE])
			printf("   %-16s %-27s %-20s %-20s %-20s %+.1f\n", "create", kases[k].what,
			       fig(f, sizeof(f), att->floor[k][H_CREATE]), "", fig(g, sizeof(g), att->ns[k][H_CREATE]),
			       att->above[k][H_CREATE].med);
	printf("   targets (common case: unassociated socket, unreserved port)\n");
	for (i = S_ONE; i <= S_FULL; i++) {
		const struct side *sd = &res->sides[i];
		double frac = sd->above[K_FREE][H_BIND4].med / scan_above;

		snprintf(label, sizeof(label), "bind4 above floor / scan above floor, %s", sd->what);
		snprintf(f, sizeof(f), "%.1f / %.1f = %.3f", sd->above[K_FREE][H_BIND4].med, scan_above, frac);
		row_verdict(label, f, "<= 0.20", frac <= TARGET_SCAN_FRACTION);
	}
	/*
	 * The same code runs in every common case and in the four loads of it
	 * (portres-1, portres-65535, place-1, place-2): the median of those
	 * measurements (range beside it) is the estimate; the worst of them
	 * would mostly measure where the JIT put one load.
	 */
	for (h = 0; h < NHOOK; h++) {
		double d[NSIDES * NKASE], lo = 1e9, hi = -1e9, med;
		int nd = 0;

		if (!hooks[h].target)
			continue;
		for (i = 0; i < NSIDES; i++)
			for (k = 0; k < NKASE; k++)
				if ((i <= S_FULL || i >= S_PLACE) && kases[k].common && res->sides[i].ran[k][h]) {
					d[nd] = res->sides[i].above[k][h].med;
					lo = d[nd] < lo ? d[nd] : lo;
					hi = d[nd] > hi ? d[nd] : hi;
					nd++;
				}
		med = nd ? summarize(d, nd).med : 0;
		snprintf(label, sizeof(label), "%s above floor, common cases", hooks[h].prog);
		if (!nd)
			snprintf(f, sizeof(f), "not run (0 ns)");
		else
			snprintf(f, sizeof(f), "%+.1f ns (%+.1f..%+.1f)", med, lo, hi);
		row_verdict(label, f, "<= +10 ns", med <= TARGET_FLOOR_NS);
	}
	/* O(1) in the number of reservations (SPEC §5). */
	snprintf(f, sizeof(f), "%.2fx / %.2fx / %.2fx", full->ns[K_FREE][H_BIND4].med / one->ns[K_FREE][H_BIND4].med,
		 full->ns[K_RESERVED][H_BIND4].med / one->ns[K_RESERVED][H_BIND4].med,
		 full->ns[K_ASSOC][H_BIND4].med / one->ns[K_ASSOC][H_BIND4].med);
	row_verdict("bind4, 65,535 / 1 resv: free, reserved, bind(0)", f, NULL, false);
}

static void print_life_side(const char *what, const struct life_side *s, bool target)
{
	char f[96];

	snprintf(f, sizeof(f), "%.3f [%.3f-%.3f]", s->portres.med, s->portres.q1, s->portres.q3);
	row_verdict(what, f, target ? "<= 1.03" : NULL, s->portres.med <= TARGET_LIFE_RATIO);
	snprintf(f, sizeof(f), "%.3f [%.3f-%.3f]", s->floor.med, s->floor.q1, s->floor.q3);
	row_verdict("    empty programs on the same hooks / bare", f, NULL, false);
	snprintf(f, sizeof(f), "%.3f [%.3f-%.3f]", s->own.med, s->own.q1, s->own.q3);
	row_verdict("    portres's own work: portres / empty programs", f, NULL, false);
}

static void print_life(struct results *res)
{
	char label[96], a[24];
	int i;

	printf("2. the whole socket life, portres (65,535 resv) / no program, socket not associated (stats off;\n"
	       "   %d rounds, each the fastest of %d batches of %d lives per side, the 5 sides interleaved;\n"
	       "   median [IQR] of the rounds). The default mode has a setsockopt program at the attach root\n"
	       "   (setsockopt(SOL_PORTRES) from any language); portresd --associate=agent has none\n",
	       LIFE_ROUNDS, LIFE_BATCHES, LIFE_BATCH);
	if (res->stats_busy)
		printf("   NOTE: kernel.bpf_stats_enabled was 1 (another user)\n");
	for (i = 0; i < 2; i++) {
		struct life_row *l = &res->life[i];

		snprintf(label, sizeof(label), "%s (%s ns bare)", l->what, num(a, l->none));
		printf("   %s\n", label);
		print_life_side("  default (setsockopt program)", &l->sides[0], true);
		print_life_side("  --associate=agent (no setsockopt program)", &l->sides[1], true);
	}
}

static void print_alloc(struct results *res)
{
	char f[96], g[96], h[96], label[80];
	int i;

	printf("3. bind(0)+close(), ns/call, tcp, 1,024 ports    portres block            "
	       "kernel ephemeral     of which portres bind hook\n");
	for (i = 0; i < 3; i++) {
		snprintf(label, sizeof(label), "occupancy %2.0f %% (%d held)",
			 100.0 * res->alloc[i].held / BLOCK_COUNT, res->alloc[i].held);
		printf("   %-46s %-24s %-20s %s\n", label, fig(f, sizeof(f), res->alloc[i].portres),
		       fig(g, sizeof(g), res->alloc[i].kernel), fig(h, sizeof(h), res->alloc[i].hook));
	}
}

static void print_memory(struct results *res)
{
	char f[96], a[24], label[80];
	uint64_t total = 0;
	int i;

	uint64_t total_default = 0;
	int j;

	printf("4. BPF map memory (fdinfo memlock; per CPU for per-CPU maps), default sizes (max_resv %s)\n"
	       "   and sized for 65,535 reservations (max_resv %s), holding 65,535\n",
	       num(a, PORTRES_DEFAULT_RESV), num(f, MAX_ENTRIES));
	printf("   %-28s %-12s %-22s %s\n", "map", "", "default sizes, empty", "65,535 reservations");
	for (i = 0; i < res->nmaps; i++) {
		const struct map_mem *m = &res->maps[i], *d = NULL;
		char x[64], y[64], b[24];

		for (j = 0; j < res->nmaps_default; j++)
			if (!strcmp(res->maps_default[j].name, m->name))
				d = &res->maps_default[j];
		total += m->memlock * (m->percpu ? libbpf_num_possible_cpus() : 1);
		if (d)
			total_default += d->memlock * (d->percpu ? libbpf_num_possible_cpus() : 1);
		snprintf(x, sizeof(x), "%.1f KiB (%s)", d ? d->memlock / 1024.0 : 0, d ? num(a, d->max_entries) : "-");
		snprintf(y, sizeof(y), "%.1f KiB (%s)", m->memlock / 1024.0, num(b, m->max_entries));
		printf("   %-28s %-12s %-22s %s\n", m->name, m->percpu ? "per CPU" : "", x, y);
	}
	snprintf(f, sizeof(f), "%.2f / %.2f MiB", total_default / 1048576.0, total / 1048576.0);
	snprintf(label, sizeof(label), "all maps, %d CPUs: default / 65,535", libbpf_num_possible_cpus());
	row_verdict(label, f, NULL, false);
}

static void print_ctl(struct results *res)
{
	int i;

	printf("5. the control plane through portresd (tests/bench/ctlbench.c)\n");
	for (i = 0; i < res->nctl; i++)
		row_verdict(res->ctl[i].what, res->ctl[i].figure, res->ctl[i].has_target ? res->ctl[i].target : NULL,
			    res->ctl[i].pass);
	if (res->ctl_err && res->ctl_err != -ECONNREFUSED)
		printf(ROW, "ctlbench failed", strerror(-res->ctl_err), "", "");
	else if (!res->nctl)
		printf(ROW, "control-plane operations", "n/a (agent not running)", "", "");
	printf("\n");
}

/* --- main ----------------------------------------------------------------------- */

/* 65,535 reservations in l, tcp 1..65535, one port each. */
static int fill_full(struct world *w, struct portres_loader *l, double *secs)
{
	uint64_t t0 = now_ns();
	uint32_t p;
	int err;

	for (p = 1; p <= NRESV_FULL; p++) {
		if (bench_stop)
			return -EINTR;
		err = reserve(w, l, token_of(p), p, 1);
		if (err) {
			fprintf(stderr, "bench: portres_resv_add tcp %u: %s\n", p, strerror(-err));
			return err;
		}
	}
	*secs = (now_ns() - t0) / 1e9;
	return 0;
}

/* Map memory of a portres instance at the default sizes (no reservation), attached to dir's leaf. */
static int default_memory(struct world *w, struct results *res)
{
	struct portres_loader_opts opts = { 0 };
	struct portres_loader *l;
	char dir[400];
	int err;

	snprintf(dir, sizeof(dir), "%s/default", w->bpffs);
	opts.bpffs_dir = dir;
	opts.cgroup_path = w->cg_default;
	if ((err = portres_loader_open(&opts, &l)))
		return fail("portres_loader_open (default sizes)", err);
	err = map_memory(l, res->maps_default, 32, &res->nmaps_default);
	portres_loader_teardown(l);
	return err;
}

static int run(struct world *w, struct results *res)
{
	uint64_t one = token_of(0x10000);
	struct side *sd = res->sides;
	cpu_set_t all, one_cpu;
	double secs;
	char buf[8];
	int err, h;

	/* The instances filled: 1 reservation, and 65,535 twice through the real API. */
	fprintf(stderr, "bench: adding 1 + 2 x %d reservations\n", NRESV_FULL);
	if ((err = reserve(w, w->one, one, PORT_RESERVED, 1)))
		return fail("portres_resv_add", err);
	if ((err = fill_full(w, w->full, &res->fill_s)) || (err = fill_full(w, w->agent, &secs)))
		return err;
	if ((err = attach_elsewhere(w, w->one, token_of(0x30000), true)) ||
	    (err = attach_elsewhere(w, w->full, token_of(PORT_RESERVED + 1), false)))
		return err;

	/*
	 * Sections 1 and 2 on one CPU, the one we are on: the two CPUs of a
	 * shared VM may run at different speeds, and a batch that moves between
	 * them measures neither.
	 */
	if (!sched_getaffinity(0, sizeof(all), &all) && (res->cpu = sched_getcpu()) >= 0) {
		CPU_ZERO(&one_cpu);
		CPU_SET(res->cpu, &one_cpu);
		if (sched_setaffinity(0, sizeof(one_cpu), &one_cpu))
			res->cpu = -1;
	}

	/* 1. Every program of every side in the same rounds, so they share the noise. */
	fprintf(stderr, "bench: programs: 1 and 65,535 reservations, scan, each with its floor\n");
	side_of(w, &sd[S_ONE], "1 resv", 0, w->one, one);
	side_of(w, &sd[S_FULL], "65,535 resv", 1, w->full, token_of(PORT_RESERVED));
	side_of(w, &sd[S_SCAN], "scan", 2, NULL, 0);
	side_of(w, &sd[S_ATT], "65,535 resv, attached cgroup", 3, w->full, 0);
	sd[S_ATT].common_only = true;
	for (h = 0; h < NPLACE; h++) {
		side_of(w, &sd[S_PLACE + h], "another load", 4 + h, w->place[h], 0);
		sd[S_PLACE + h].common_only = true;
	}
	if (section('1') && ((err = stats_on(w)) || (err = measure_programs(w, sd, NSIDES)) ||
			     (err = cgroup2_enter(w->cg_none))))
		return err;
	stats_off(w);
	null_pairs_off(w);

	/* 2. Stats off: they would add their own cost to every program run. */
	fprintf(stderr, "bench: whole socket life\n");
	res->stats_busy = !read_str("/proc/sys/kernel/bpf_stats_enabled", buf, sizeof(buf)) &&
			  buf[0] == '1';
	res->life[0] = (struct life_row){ .what = "udp socket, setsockopt, bind, close", .k = K_FREE };
	res->life[1] = (struct life_row){ .what = "udp socket, connect, close", .k = K_CONNECT };
	if (section('2') && ((err = measure_life(w, &res->life[0])) || (err = measure_life(w, &res->life[1]))))
		return err;
	if (res->cpu >= 0)
		sched_setaffinity(0, sizeof(all), &all);

	/* 4. Map memory: sized for and holding 65,535, and at the default sizes. */
	if (section('4') &&
	    ((err = map_memory(w->full, res->maps, 32, &res->nmaps)) || (err = default_memory(w, res))))
		return err;

	/* 3. The 1,024-port block replaces the single reservation. */
	fprintf(stderr, "bench: bind(0) at 0/50/99 %% occupancy\n");
	portres_resv_del(w->one, one);
	res->alloc[0].held = 0;
	res->alloc[1].held = BLOCK_COUNT / 2;
	res->alloc[2].held = (BLOCK_COUNT * 99 + 99) / 100;
	if (section('3') && (err = measure_alloc(w, res->alloc, 3)))
		return err;

	/* 5. The agent gets the world without bench.c's programs and maps. */
	if (ctlbench_run && section('5')) {
		struct bench_world bw = {
			.tmp = w->tmp, .bpffs = w->bpffs, .cgroup = w->cg,
			.cgroup_none = w->cg_none, .cgroup_portres = w->cg_one,
			.netns = w->netns,
		};

		portres_loader_teardown(w->one);
		portres_loader_teardown(w->full);
		portres_loader_teardown(w->agent);
		w->one = w->full = w->agent = NULL;
		res->ctl_err = ctlbench_run(&bw, ctl_row, res);
		cgroup2_enter(w->cg_none);
	}
	return bench_stop ? -EINTR : 0;
}

int main(void)
{
	struct sigaction sa = { .sa_handler = on_signal };
	static struct results res;
	static struct world w;
	int err;

	setvbuf(stdout, NULL, _IOLBF, 0);
	libbpf_set_print(quiet_libbpf);
	w.stats_fd = -1;
	for (int h = 0; h < NHOOK; h++) {
		w.null_prog[h] = -1;
		for (int c = 0; c < NPAIR; c++)
			w.pair_prog[c][0][h] = w.pair_prog[c][1][h] = -1;
	}
	for (int i = 0; i < NPAIR * 2 * 8; i++)
		w.pair_link[i] = -1;
	for (int i = 0; i < 16; i++)
		w.floor_link[i] = -1;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (geteuid() != 0) {
		fprintf(stderr, "bench: needs root (loads BPF programs, makes cgroups)\n");
		return 1;
	}

	res.cpu = -1;
	cpu_sample(&res.cpu0);
	err = world_up(&w);
	if (!err && !bench_stop)
		err = run(&w, &res);
	if (!err && bench_stop)
		err = -EINTR;
	cpu_sample(&res.cpu1);
	world_down(&w);
	if (!err) {
		print_header(&res);
		if (section('1'))
			print_programs(&res);
		if (section('2'))
			print_life(&res);
		if (section('3'))
			print_alloc(&res);
		if (section('4'))
			print_memory(&res);
		if (section('5'))
			print_ctl(&res);
	}
	if (err == -EINTR)
		fprintf(stderr, "bench: interrupted; cleaned up\n");
	return err ? 1 : 0;
}
