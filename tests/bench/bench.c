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
 *   scan/           tests/bench/scan.bpf.c: 128 rules scanned one by one
 *                   (systemd SocketBindAllow=), the matching rule last
 *   null/           a bind4 program that only returns 1: the floor of what
 *                   BPF run-time statistics report for any program
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
 * other processes used during the run in the header.
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

#define HOOK_ROUNDS   61     /* section 1: rounds x binds per case */
#define HOOK_BINDS    1000
#define SBC_ROUNDS    301    /* section 2: short rounds, so a pair shares its noise */
#define SBC_ITERS     800
#define ALLOC_ROUNDS  21     /* section 3 */
#define ALLOC_BATCH   200

#define TARGET_HOOK_NS   100.0
#define TARGET_SCAN_X    3.0
#define TARGET_SBC_RATIO 1.05

volatile sig_atomic_t bench_stop;

struct world {
	char root[4096];        /* cgroup2 mount */
	char home[4096];        /* the cgroup we came from */
	char cg[4200];          /* portres-bench-<pid> */
	char cg_none[4300], cg_one[4300], cg_full[4300], cg_scan[4300], cg_null[4300];
	char tmp[256];
	char bpffs[300];
	bool mounted, entered;
	struct portres_loader *one;  /* 1 reservation, then the 1,024-port block */
	struct portres_loader *full; /* 65,535 reservations */
	struct scan_bpf *scan;
	struct bpf_link *scan_link;
	int null_prog, null_link; /* fds, -1 when none */
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

/* "r0 = 1; exit": the cost of running any bind4 program, as BPF stats see it. */
static int null_up(struct world *w)
{
	const struct bpf_insn insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 1 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = BPF_CGROUP_INET4_BIND);
	int cgfd, err = 0;

	w->null_prog = bpf_prog_load(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, "bench_null", "GPL", insns,
				     sizeof(insns) / sizeof(insns[0]), &opts);
	if (w->null_prog < 0)
		return fail("load the null program", w->null_prog);
	cgfd = open(w->cg_null, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cgfd < 0)
		return fail(w->cg_null, errno);
	w->null_link = bpf_link_create(w->null_prog, cgfd, BPF_CGROUP_INET4_BIND, NULL);
	if (w->null_link < 0)
		err = fail("attach the null program", w->null_link);
	close(cgfd);
	return err;
}

static int world_up(struct world *w)
{
	struct portres_loader_opts opts = { 0 };
	char dir[400];
	struct rlimit rl;
	int err;

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
	snprintf(w->cg_scan, sizeof(w->cg_scan), "%s/scan", w->cg);
	snprintf(w->cg_null, sizeof(w->cg_null), "%s/null", w->cg);
	if (mkdir(w->cg_none, 0755) || mkdir(w->cg_one, 0755) || mkdir(w->cg_full, 0755) ||
	    mkdir(w->cg_scan, 0755) || mkdir(w->cg_null, 0755))
		return fail("mkdir leaf cgroups", errno);
	/* Leaves only: the process itself waits in the program-free one. */
	if ((err = cgroup2_enter(w->cg_none)))
		return fail("enter none/", err);

	/* Maps large enough for 65,535 reservations in both instances. */
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
	if ((err = portres_netns_cookie(&w->netns)))
		return fail("netns cookie", err);
	if ((err = scan_up(w, IPPROTO_UDP, PORT_FREE)))
		return err;
	return null_up(w);
}

static void world_down(struct world *w)
{
	if (w->stats_fd >= 0)
		close(w->stats_fd);
	w->stats_fd = -1;
	if (w->null_link >= 0)
		close(w->null_link); /* not pinned: this detaches */
	if (w->null_prog >= 0)
		close(w->null_prog);
	w->null_link = w->null_prog = -1;
	bpf_link__destroy(w->scan_link);
	w->scan_link = NULL;
	scan_bpf__destroy(w->scan);
	w->scan = NULL;
	if (w->one)
		portres_loader_teardown(w->one);
	if (w->full)
		portres_loader_teardown(w->full);
	w->one = w->full = NULL;
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

static const char *proto_name(int proto)
{
	return proto == IPPROTO_TCP ? "tcp" : "udp";
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

/* --- 1. the bind hook, from the kernel's run-time statistics ---------------- */

struct hook_case {
	const char *what;
	const char *cgroup;  /* leaf whose program is measured */
	int prog_fd;
	int proto;
	uint16_t port;
	uint64_t token;      /* associate first, unless 0 */
	int expect;          /* what bind() must return: 0 or -EACCES */
	int aux_fd[3];       /* other programs run per socket (create, release...), 0: none */
	struct summary ns;   /* the bind program, ns per bind */
	struct summary aux;  /* the aux programs together, ns per socket */
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

/* n times socket, associate, bind, close; each bind must give c->expect. */
static int bind_loop(const struct hook_case *c, int n)
{
	int i, fd, err;

	for (i = 0; i < n; i++) {
		if (bench_stop)
			return -EINTR;
		fd = sock_new(c->proto, c->token);
		if (fd < 0)
			return fail("socket", fd);
		err = bind_port(fd, c->port);
		close(fd);
		if (err != c->expect) {
			fprintf(stderr, "bench: %s: bind %s %u gave %s, expected %s\n", c->what,
				proto_name(c->proto), c->port, err ? strerror(-err) : "success",
				c->expect ? strerror(-c->expect) : "success");
			return -EPROTO;
		}
	}
	return 0;
}

/* Run time of the case's aux programs so far, summed. */
static int aux_runtime(const struct hook_case *c, uint64_t *ns)
{
	uint64_t t = 0, cnt = 0;
	int i, err;

	*ns = 0;
	for (i = 0; i < 3 && c->aux_fd[i] > 0; i++) {
		if ((err = prog_runtime(c->aux_fd[i], &t, &cnt)))
			return err;
		*ns += t;
	}
	return 0;
}

static int measure_hooks(struct hook_case *cases, int ncase)
{
	double samples[8][HOOK_ROUNDS], aux[8][HOOK_ROUNDS];
	uint64_t ns0 = 0, cnt0 = 0, ns1 = 0, cnt1 = 0, a0 = 0, a1 = 0;
	int r, k, i, err;

	for (i = 0; i < ncase; i++) {
		if ((err = cgroup2_enter(cases[i].cgroup)))
			return fail("enter cgroup", err);
		if ((err = bind_loop(&cases[i], HOOK_BINDS / 4)))
			return err;
	}
	for (r = 0; r < HOOK_ROUNDS; r++) {
		for (k = 0; k < ncase; k++) {
			struct hook_case *c = &cases[(k + r) % ncase];

			if ((err = cgroup2_enter(c->cgroup)))
				return fail("enter cgroup", err);
			if ((err = prog_runtime(c->prog_fd, &ns0, &cnt0)) ||
			    (err = aux_runtime(c, &a0)))
				return fail("bpf_obj_get_info_by_fd", err);
			if ((err = bind_loop(c, HOOK_BINDS)))
				return err;
			if ((err = prog_runtime(c->prog_fd, &ns1, &cnt1)) ||
			    (err = aux_runtime(c, &a1)))
				return fail("bpf_obj_get_info_by_fd", err);
			if (cnt1 - cnt0 != HOOK_BINDS) {
				fprintf(stderr, "bench: %s: the program ran %llu times for %d binds\n",
					c->what, (unsigned long long)(cnt1 - cnt0), HOOK_BINDS);
				return -EPROTO;
			}
			samples[(k + r) % ncase][r] = (double)(ns1 - ns0) / (cnt1 - cnt0);
			aux[(k + r) % ncase][r] = (double)(a1 - a0) / HOOK_BINDS;
		}
	}
	for (i = 0; i < ncase; i++) {
		cases[i].ns = summarize(samples[i], HOOK_ROUNDS);
		cases[i].aux = summarize(aux[i], HOOK_ROUNDS);
	}
	return 0;
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

/*
 * The three portres cases of one instance: a port nobody reserved, the
 * holder binding its port, a foreign bind.
 */
static void portres_cases(struct portres_loader *l, const char *cgroup, uint64_t holder,
			  struct hook_case *c)
{
	int fd = portres_prog_fd(l, "portres_bind4");
	int create = portres_prog_fd(l, "portres_create");
	int release = portres_prog_fd(l, "portres_release");
	int setsopt = portres_prog_fd(l, "portres_setsopt");

	c[0] = (struct hook_case){ .what = "unreserved port (udp)", .cgroup = cgroup,
				   .prog_fd = fd, .proto = IPPROTO_UDP, .port = PORT_FREE,
				   .aux_fd = { create, release } };
	c[1] = (struct hook_case){ .what = "reserved port, holder", .cgroup = cgroup,
				   .prog_fd = fd, .proto = IPPROTO_TCP, .port = PORT_RESERVED,
				   .token = holder, .aux_fd = { create, release, setsopt } };
	c[2] = (struct hook_case){ .what = "denied (EACCES)", .cgroup = cgroup,
				   .prog_fd = fd, .proto = IPPROTO_TCP, .port = PORT_RESERVED,
				   .expect = -EACCES, .aux_fd = { create, release } };
}

/* --- 2. socket()+bind()+close() with and without portres -------------------- */

struct sbc_row {
	const char *what;
	int proto;
	uint16_t port;
	struct summary none, portres;
	double ratio;
};

static int sbc_loop(int proto, uint16_t port, int n, double *ns_per)
{
	uint64_t t0 = cpu_ns();
	int i, fd, err;

	for (i = 0; i < n; i++) {
		fd = sock_new(proto, 0);
		if (fd < 0)
			return fail("socket", fd);
		err = bind_port(fd, port);
		close(fd);
		if (err)
			return fail("bind (socket+bind+close)", err);
	}
	*ns_per = (double)(cpu_ns() - t0) / n;
	return bench_stop ? -EINTR : 0;
}

/* ABBA ABBA ...: each round runs both, the first alternating, so drift cancels. */
static int measure_sbc(struct world *w, struct sbc_row *row)
{
	double none[SBC_ROUNDS], withp[SBC_ROUNDS], ratio[SBC_ROUNDS], dummy;
	int r, k, err;

	for (k = 0; k < 2; k++) {
		if ((err = cgroup2_enter(k ? w->cg_full : w->cg_none)))
			return fail("enter cgroup", err);
		if ((err = sbc_loop(row->proto, row->port, SBC_ITERS / 4, &dummy)))
			return err;
	}
	for (r = 0; r < SBC_ROUNDS; r++) {
		for (k = 0; k < 2; k++) {
			bool portres = (k + r) % 2;

			if ((err = cgroup2_enter(portres ? w->cg_full : w->cg_none)))
				return fail("enter cgroup", err);
			if ((err = sbc_loop(row->proto, row->port, SBC_ITERS,
					    portres ? &withp[r] : &none[r])))
				return err;
		}
		ratio[r] = withp[r] / none[r];
	}
	row->none = summarize(none, SBC_ROUNDS);
	row->portres = summarize(withp, SBC_ROUNDS);
	row->ratio = summarize(ratio, SBC_ROUNDS).med;
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
		"portres_bind4", "portres_bind6", "portres_conn4", "portres_conn6",
		"portres_create", "portres_release", "portres_setsopt", "portres_getsopt",
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
			maps[n].memlock = fdinfo_memlock(fd);
			n++;
		}
		close(fd);
	}
	qsort(maps, n, sizeof(*maps), cmp_mem);
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
	struct hook_case one[3], full[3], scan, null;
	struct sbc_row sbc[2];
	struct alloc_row alloc[3];
	double fill_s;
	struct map_mem maps[32];
	int nmaps;
	uint64_t mem_one;       /* the same maps with 1 reservation */
	bool stats_busy;        /* someone else had BPF stats on during section 2 */
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
	printf("setup: %s reservations (tcp, 1 port each) added through portres_resv_add in "
	       "%.2f s (%s/s); maps sized %s\n\n", num(x, NRESV_FULL), res->fill_s,
	       num(y, NRESV_FULL / res->fill_s), num(z, MAX_ENTRIES));
}

static void print_hooks(struct results *res)
{
	double worst = 0, floor = res->null.ns.med, like = res->full[0].ns.med;
	char f[96], label[80];
	int i;

	printf(ROW, "", "figure", "target", "");
	printf("1. bind hook, ns/call (kernel BPF run-time stats, %d rounds x %d binds)\n",
	       HOOK_ROUNDS, HOOK_BINDS);
	printf(ROW, "no program", "n/a (stats see programs only; see 2.)", "", "");
	for (i = 0; i < 3; i++) {
		snprintf(label, sizeof(label), "portres, 1 resv: %s", res->one[i].what);
		row_verdict(label, fig(f, sizeof(f), res->one[i].ns), NULL, false);
	}
	for (i = 0; i < 3; i++) {
		snprintf(label, sizeof(label), "portres, 65,535 resv: %s", res->full[i].what);
		row_verdict(label, fig(f, sizeof(f), res->full[i].ns), "< 100 ns",
			    res->full[i].ns.med < TARGET_HOOK_NS);
		if (res->full[i].ns.med > worst)
			worst = res->full[i].ns.med;
	}
	/* O(1) in the number of reservations (SPEC §5): the same cost with 1 and 65,535. */
	snprintf(f, sizeof(f), "%.2fx / %.2fx / %.2fx", res->full[0].ns.med / res->one[0].ns.med,
		 res->full[1].ns.med / res->one[1].ns.med, res->full[2].ns.med / res->one[2].ns.med);
	row_verdict("65,535 resv / 1 resv, the three cases", f, NULL, false);
	row_verdict("scan, 128 rules, match in the last (udp)", fig(f, sizeof(f), res->scan.ns),
		    NULL, false);
	row_verdict("null program (r0 = 1): floor of the stats", fig(f, sizeof(f), res->null.ns),
		    NULL, false);
	/* The floor is in every figure; without it the ratios show the programs' own work. */
	snprintf(f, sizeof(f), "%.2fx (%.1fx net of floor)", res->scan.ns.med / worst,
		 (res->scan.ns.med - floor) / (worst - floor));
	row_verdict("scan / portres 65,535, slowest case", f, ">= 3x",
		    res->scan.ns.med / worst >= TARGET_SCAN_X);
	snprintf(f, sizeof(f), "%.2fx (%.1fx net of floor)", res->scan.ns.med / like,
		 (res->scan.ns.med - floor) / (like - floor));
	row_verdict("scan / portres 65,535, unreserved port", f, ">= 3x",
		    res->scan.ns.med / like >= TARGET_SCAN_X);
}

static void print_sbc(struct results *res)
{
	const struct hook_case *u = &res->full[0];
	double bpf, net, floor = res->null.ns.med;
	char f[96], a[24], b[24], label[80];
	int i;

	printf("2. socket()+bind()+close(), ns/iteration, portres with 65,535 resv, socket not "
	       "associated\n   (%d rounds x %d, ABBA)%s\n", SBC_ROUNDS, SBC_ITERS,
	       res->stats_busy ? "  NOTE: kernel.bpf_stats_enabled was 1 (another user)" : "");
	for (i = 0; i < 2; i++) {
		struct sbc_row *s = &res->sbc[i];

		snprintf(label, sizeof(label), "%s: no program", s->what);
		row_verdict(label, fig(f, sizeof(f), s->none), NULL, false);
		snprintf(label, sizeof(label), "%s: portres", s->what);
		row_verdict(label, fig(f, sizeof(f), s->portres), NULL, false);
		snprintf(label, sizeof(label), "%s: ratio (median of pairs)", s->what);
		snprintf(f, sizeof(f), "%.3f", s->ratio);
		row_verdict(label, f, "<= 1.05", s->ratio <= TARGET_SBC_RATIO);
	}
	/* What the three programs themselves add (section 1's stats), free of that noise. */
	bpf = u->ns.med + u->aux.med;
	net = bpf - 3 * floor;
	snprintf(f, sizeof(f), "%s ns = %.1f %%; less 3 floors %s ns = %.1f %%", num(a, bpf),
		 100.0 * bpf / res->sbc[0].none.med, num(b, net), 100.0 * net / res->sbc[0].none.med);
	row_verdict("udp: portres programs' time (stats, sect. 1)", f, NULL, false);
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

static void print_rest(struct results *res)
{
	char f[96], a[24], label[80];
	uint64_t total = 0;
	int i;

	for (i = 0; i < res->nmaps; i++)
		total += res->maps[i].memlock;
	printf("4. BPF map memory (memlock in fdinfo)\n");
	snprintf(f, sizeof(f), "%.1f MiB", total / 1048576.0);
	row_verdict("all portres maps, 65,535 resv", f, NULL, false);
	snprintf(f, sizeof(f), "%.1f MiB", res->mem_one / 1048576.0);
	row_verdict("all portres maps, 1 resv (preallocated)", f, NULL, false);
	for (i = 0; i < res->nmaps && i < 5; i++) {
		snprintf(label, sizeof(label), "  %s (max_entries %s)", res->maps[i].name,
			 num(a, res->maps[i].max_entries));
		snprintf(f, sizeof(f), "%.2f MiB", res->maps[i].memlock / 1048576.0);
		row_verdict(label, f, NULL, false);
	}

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

static int fill_full(struct world *w, double *secs)
{
	uint64_t t0 = now_ns();
	uint32_t p;
	int err;

	for (p = 1; p <= NRESV_FULL; p++) {
		if (bench_stop)
			return -EINTR;
		err = reserve(w, w->full, token_of(p), p, 1);
		if (err) {
			fprintf(stderr, "bench: portres_resv_add tcp %u: %s\n", p, strerror(-err));
			return err;
		}
	}
	*secs = (now_ns() - t0) / 1e9;
	return 0;
}

static uint64_t mem_total(struct portres_loader *l)
{
	struct map_mem maps[32];
	uint64_t total = 0;
	int i, n = 0;

	if (map_memory(l, maps, 32, &n))
		return 0;
	for (i = 0; i < n; i++)
		total += maps[i].memlock;
	return total;
}

static int run(struct world *w, struct results *res)
{
	uint64_t one = token_of(0x10000);
	struct hook_case all[8];
	char buf[8];
	int err;

	/* Both instances filled: 1 reservation, and 65,535 through the real API. */
	fprintf(stderr, "bench: adding 1 + %d reservations\n", NRESV_FULL);
	if ((err = reserve(w, w->one, one, PORT_RESERVED, 1)))
		return fail("portres_resv_add", err);
	if ((err = fill_full(w, &res->fill_s)))
		return err;

	/* 1. Every bind4 program in the same rounds, so they share the noise. */
	fprintf(stderr, "bench: bind hook: 1 and 65,535 reservations, scan, null\n");
	portres_cases(w->one, w->cg_one, one, &all[0]);
	portres_cases(w->full, w->cg_full, token_of(PORT_RESERVED), &all[3]);
	all[6] = (struct hook_case){ .what = "scan", .cgroup = w->cg_scan,
				     .prog_fd = bpf_program__fd(w->scan->progs.scan_bind4),
				     .proto = IPPROTO_UDP, .port = PORT_FREE };
	all[7] = (struct hook_case){ .what = "null", .cgroup = w->cg_null,
				     .prog_fd = w->null_prog, .proto = IPPROTO_UDP,
				     .port = PORT_FREE };
	if ((err = stats_on(w)) || (err = measure_hooks(all, 8)) ||
	    (err = cgroup2_enter(w->cg_none)))
		return err;
	stats_off(w);
	memcpy(res->one, &all[0], sizeof(res->one));
	memcpy(res->full, &all[3], sizeof(res->full));
	res->scan = all[6];
	res->null = all[7];

	/* 2. Stats off: they would add their own cost to every program run. */
	fprintf(stderr, "bench: socket+bind+close\n");
	res->stats_busy = !read_str("/proc/sys/kernel/bpf_stats_enabled", buf, sizeof(buf)) &&
			  buf[0] == '1';
	res->sbc[0] = (struct sbc_row){ .what = "udp bind(40000)", .proto = IPPROTO_UDP,
					.port = PORT_FREE };
	res->sbc[1] = (struct sbc_row){ .what = "tcp bind(0)", .proto = IPPROTO_TCP };
	if ((err = measure_sbc(w, &res->sbc[0])) || (err = measure_sbc(w, &res->sbc[1])))
		return err;

	/* 4. Map memory, with 65,535 and with 1 reservation. */
	if ((err = map_memory(w->full, res->maps, 32, &res->nmaps)))
		return err;
	res->mem_one = mem_total(w->one);

	/* 3. The 1,024-port block replaces the single reservation. */
	fprintf(stderr, "bench: bind(0) at 0/50/99 %% occupancy\n");
	portres_resv_del(w->one, one);
	res->alloc[0].held = 0;
	res->alloc[1].held = BLOCK_COUNT / 2;
	res->alloc[2].held = (BLOCK_COUNT * 99 + 99) / 100;
	if ((err = measure_alloc(w, res->alloc, 3)))
		return err;

	/* 5. The agent gets the world without bench.c's programs and maps. */
	if (ctlbench_run) {
		struct bench_world bw = {
			.tmp = w->tmp, .bpffs = w->bpffs, .cgroup = w->cg,
			.cgroup_none = w->cg_none, .cgroup_portres = w->cg_one,
			.netns = w->netns,
		};

		portres_loader_teardown(w->one);
		portres_loader_teardown(w->full);
		w->one = w->full = NULL;
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
	w.stats_fd = w.null_prog = w.null_link = -1;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (geteuid() != 0) {
		fprintf(stderr, "bench: needs root (loads BPF programs, makes cgroups)\n");
		return 1;
	}

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
		print_hooks(&res);
		print_sbc(&res);
		print_alloc(&res);
		print_rest(&res);
	}
	if (err == -EINTR)
		fprintf(stderr, "bench: interrupted; cleaned up\n");
	return err ? 1 : 0;
}
