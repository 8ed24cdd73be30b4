// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * ctlbench.c - the control plane through the agent, as users call it
 * (section 5 of `make bench`, see bench.h). Every figure comes from real
 * portresd calls made with libportres (and the CLI for the lookup check): the
 * maps are never written here.
 *
 * One run, one fresh agent (--max-reservations 70000), its database on the
 * state directory's disk:
 *
 *   seq@0      400 persistent creates of 1-port TCP blocks, one client,
 *              one at a time (each a durable commit); this and every
 *              phase that times single calls starts once the disk is
 *              quiet (sync, then 0.5 s): the burst before it is flushed
 *   fill       creates by 100 client threads at once, each one call at a time
 *              as fast as it is answered, up to 10,000 reservations: the
 *              "100 concurrent clients" row
 *   seq@10k    400 sequential creates
 *   fill       the same 100 clients up to 60,000
 *   seq@60k    400 sequential creates; flat means at least 0.8 x seq@0
 *   acquire    each of 100 clients holds a TCP socket and acquires a wildcard
 *              block of 4 ports on it, then releases it, in a loop:
 *              - as fast as they are answered (pairs/s);
 *              - paced: every client starts a pair every 25 ms (4,000 pairs,
 *                8,000 calls a second in all), latency of each call (p99)
 *   lookup     100 clients look up a persistent block, the same two ways
 *              (paced: one call every 10 ms each, 10,000 calls a second)
 *   fill       up to 65,535 reservations (every TCP port)
 *   size       the agent's RSS, the database and its WAL on disk
 *   restart    the agent is killed (SIGKILL) and started again: time from
 *              exec to its first answered lookup (adoption of 65,535)
 *
 * ctlbench_run starts the real agent ($PORTRESD_BIN or build/portresd) in
 * the world bench.c built, with its own socket, state directory and pins,
 * and stops it (and tears its pins down) before returning.
 *
 * Built with -DCTLBENCH_MAIN it is a program of its own that builds that
 * world itself (private mount and network namespaces, bpffs, cgroup).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "portres.h"

#define SEQ          400     /* sequential creates per fill level */
#define CLIENTS      100
#define FILL_A       10000
#define FILL_B       60000
#define FILL_FULL    65535
#define PAIR_SECONDS 2.0     /* each closed-loop and paced phase */
#define PAIR_GAP_MS  25      /* paced acquire+release: one pair per client every 25 ms */
#define LOOKUP_GAP_MS 10     /* paced lookup: one call per client every 10 ms */
#define MAX_SAMPLES  (1 << 21)

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

struct agent {
	const struct bench_world *w;
	char sock[512], state[512], bpffs[512];
	pid_t pid;
};

static const char *agent_bin(void)
{
	const char *bin = getenv("PORTRESD_BIN");

	return bin && *bin ? bin : "build/portresd";
}

/* Starts the agent; returns when it answers a call (0) or it died (-errno). */
static int agent_start(struct agent *ag, double *start_s)
{
	const char *argv[] = { agent_bin(), "--foreground", "--cgroup", ag->w->cgroup, "--bpffs", ag->bpffs,
			       "--socket", ag->sock, "--state-dir", ag->state, "--events-log-size", "0",
			       /* 65,535 persistent ones and the runtime ones of the acquire rows */
			       "--max-reservations", "70000", NULL };
	double t0 = now_s();
	portres_token_t t;

	fflush(NULL);
	ag->pid = fork();
	if (ag->pid < 0)
		return -errno;
	if (ag->pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, STDERR_FILENO); /* its log lines would interleave with the table */
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	/* up: it answers a call (a lookup of a block that may not exist) */
	for (int i = 0; i < 20000; i++) {
		if (portres_lookup_persistent(IPPROTO_TCP, 1, 1, &t) == 0 || errno == ENOENT) {
			if (start_s)
				*start_s = now_s() - t0;
			return 0;
		}
		if (waitpid(ag->pid, NULL, WNOHANG) == ag->pid)
			return -ECONNREFUSED;
		usleep(500);
	}
	kill(ag->pid, SIGKILL);
	waitpid(ag->pid, NULL, 0);
	return -ECONNREFUSED;
}

static void agent_kill(struct agent *ag, int sig)
{
	if (ag->pid > 0) {
		kill(ag->pid, sig);
		waitpid(ag->pid, NULL, 0);
	}
	ag->pid = 0;
}

static long agent_rss_kib(const struct agent *ag)
{
	char path[64], line[256];
	long kib = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)ag->pid);
	if (!(f = fopen(path, "re")))
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

static long long file_bytes(const char *dir, const char *name)
{
	char path[700];
	struct stat sb;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return stat(path, &sb) ? 0 : (long long)sb.st_size;
}

/* --- creates ---------------------------------------------------------------- */

static atomic_uint next_port; /* the next TCP port to reserve (1-port blocks, in order) */

static int create_one(uint16_t port)
{
	portres_token_t t;

	return portres_create_persistent(IPPROTO_TCP, port, 1, &t) ? -errno : 0;
}

/*
 * Before a phase that times single calls: the previous burst's writes
 * flushed (its checkpoint and the kernel's writeback), so the phase measures
 * a call at this fill, not the disk still busy with the burst before it.
 */
static void settle(void)
{
	sync();
	usleep(500000);
}

static int seq_creates(double *rate)
{
	double t0;

	settle();
	t0 = now_s();

	for (int i = 0; i < SEQ && !bench_stop; i++) {
		int err = create_one((uint16_t)atomic_fetch_add(&next_port, 1));

		if (err)
			return err;
	}
	*rate = SEQ / (now_s() - t0);
	return bench_stop ? -EINTR : 0;
}

struct filler {
	unsigned upto;
	int err;
};

static void *fill_run(void *arg)
{
	struct filler *f = arg;

	while (!bench_stop && !f->err) {
		unsigned port = atomic_fetch_add(&next_port, 1);
		int err;

		if (port > f->upto)
			break;
		if ((err = create_one((uint16_t)port)))
			f->err = err;
	}
	return NULL;
}

/* 100 clients create until port upto is reserved; *rate: creates/s. */
static int fill(unsigned upto, double *rate)
{
	static struct filler f[CLIENTS];
	pthread_t th[CLIENTS];
	unsigned first = atomic_load(&next_port);
	double t0 = now_s();
	int err = 0;

	for (int i = 0; i < CLIENTS; i++) {
		f[i] = (struct filler){ .upto = upto };
		pthread_create(&th[i], NULL, fill_run, &f[i]);
	}
	for (int i = 0; i < CLIENTS; i++) {
		pthread_join(th[i], NULL);
		if (f[i].err)
			err = f[i].err;
	}
	if (rate)
		*rate = (upto + 1 - first) / (now_s() - t0);
	atomic_store(&next_port, upto + 1);
	return err ? err : bench_stop ? -EINTR : 0;
}

/* --- many clients, closed loop or paced ----------------------------------------- */

enum work { W_PAIR, W_LOOKUP };

struct worker {
	enum work work;
	double until, gap;     /* gap 0: closed loop */
	double *lat;           /* latency of each call */
	size_t n, cap;
	long long done;        /* pairs or lookups */
	int err;
};

static void sample(struct worker *w, double t)
{
	if (w->n < w->cap)
		w->lat[w->n++] = t;
}

static void *work_run(void *arg)
{
	struct worker *w = arg;
	int s = w->work == W_PAIR ? socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0) : -1;
	/* paced clients start spread over one gap, not all at once */
	double next = now_s() + w->gap * (double)(rand() % 1000) / 1000.0;

	while (!bench_stop && !w->err) {
		struct portres_instance in;
		portres_token_t t;
		double t0, t1;

		if (w->gap) {
			double wait = next - now_s();

			if (wait > 0)
				usleep((useconds_t)(wait * 1e6));
			next += w->gap;
		}
		if ((t0 = now_s()) >= w->until)
			break;
		if (w->work == W_LOOKUP) {
			if (portres_lookup_persistent(IPPROTO_TCP, 1, 1, &t))
				w->err = -errno;
			sample(w, now_s() - t0);
		} else {
			if (portres_acquire(s, &(struct portres_range){ 0, 4 }, &in)) {
				w->err = -errno;
				break;
			}
			t1 = now_s();
			sample(w, t1 - t0);
			if (portres_release(s, in.token))
				w->err = -errno;
			sample(w, now_s() - t1);
		}
		w->done++;
	}
	if (s >= 0)
		close(s);
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Runs 100 workers for PAIR_SECONDS; *rate: pairs or lookups a second; *p99 of the calls. */
static int run_clients(enum work work, double gap, double *rate, double *p99)
{
	static struct worker wk[CLIENTS];
	static double *all;
	pthread_t th[CLIENTS];
	size_t n = 0, per = MAX_SAMPLES / CLIENTS;
	long long done = 0;
	double t0 = now_s();
	int err = 0;

	if (!all && !(all = malloc(MAX_SAMPLES * sizeof(*all))))
		return -ENOMEM;
	for (int i = 0; i < CLIENTS; i++) {
		wk[i] = (struct worker){ .work = work, .until = t0 + PAIR_SECONDS, .gap = gap,
					 .lat = all + (size_t)i * per, .cap = per };
		pthread_create(&th[i], NULL, work_run, &wk[i]);
	}
	for (int i = 0; i < CLIENTS; i++) {
		pthread_join(th[i], NULL);
		if (wk[i].err)
			err = wk[i].err;
		done += wk[i].done;
	}
	*rate = done / (now_s() - t0);
	/* the samples, packed */
	for (int i = 0; i < CLIENTS; i++) {
		memmove(all + n, wk[i].lat, wk[i].n * sizeof(*all));
		n += wk[i].n;
	}
	qsort(all, n, sizeof(*all), cmp_double);
	*p99 = n ? all[n * 99 / 100] : 0;
	return err ? err : bench_stop ? -EINTR : 0;
}

/* --- the run ---------------------------------------------------------------------- */

struct figures {
	double seq[3], conc, pairs, pair_p99, paced_pairs, lookups, lookup_p99, paced_lookups, start_s;
	long rss_kib;
	long long db_bytes;
};

static int measure(struct agent *ag, struct figures *f)
{
	int err;

	atomic_store(&next_port, 1);
	fprintf(stderr, "bench: control plane: sequential creates at 0\n");
	if ((err = seq_creates(&f->seq[0])))
		return err;
	fprintf(stderr, "bench: control plane: 100 clients fill to %d\n", FILL_A);
	if ((err = fill(FILL_A, &f->conc)))
		return err;
	if ((err = seq_creates(&f->seq[1])))
		return err;
	fprintf(stderr, "bench: control plane: 100 clients fill to %d\n", FILL_B);
	if ((err = fill(FILL_B, NULL)))
		return err;
	if ((err = seq_creates(&f->seq[2])))
		return err;
	fprintf(stderr, "bench: control plane: acquire+release and lookups, 100 clients\n");
	if ((err = run_clients(W_PAIR, 0, &f->pairs, &f->pair_p99)))
		return err;
	settle();
	if ((err = run_clients(W_PAIR, PAIR_GAP_MS / 1e3, &f->paced_pairs, &f->pair_p99)) ||
	    (err = run_clients(W_LOOKUP, 0, &f->lookups, &f->lookup_p99)))
		return err;
	settle();
	if ((err = run_clients(W_LOOKUP, LOOKUP_GAP_MS / 1e3, &f->paced_lookups, &f->lookup_p99)))
		return err;
	fprintf(stderr, "bench: control plane: fill to %d, restart\n", FILL_FULL);
	if ((err = fill(FILL_FULL, NULL)))
		return err;
	f->rss_kib = agent_rss_kib(ag);
	f->db_bytes = file_bytes(ag->state, "portres.db") + file_bytes(ag->state, "portres.db-wal");
	agent_kill(ag, SIGKILL);
	return agent_start(ag, &f->start_s);
}

static void report(const struct figures *f, bench_row_cb row, void *arg)
{
	char what[96], fig[64], target[32];

	snprintf(fig, sizeof(fig), "%.0f/s", f->seq[0]);
	row(arg, "sequential creates at 0", fig, NULL, false);
	snprintf(fig, sizeof(fig), "%.0f/s (%.2fx)", f->seq[1], f->seq[1] / f->seq[0]);
	row(arg, "sequential creates at 10,000", fig, NULL, false);
	snprintf(fig, sizeof(fig), "%.0f/s (%.2fx)", f->seq[2], f->seq[2] / f->seq[0]);
	row(arg, "sequential creates at 60,000", fig, ">= 0.8x at 0", f->seq[2] >= 0.8 * f->seq[0]);
	snprintf(fig, sizeof(fig), "%.0f/s", f->conc);
	row(arg, "creates, 100 clients at once", fig, ">= 20,000/s", f->conc >= 20000);
	snprintf(fig, sizeof(fig), "%.0f pairs/s", f->pairs);
	row(arg, "acquire+release, 100 clients at once", fig, NULL, false);
	snprintf(what, sizeof(what), "  p99 per call, 100 clients at %.0f pairs/s", f->paced_pairs);
	snprintf(fig, sizeof(fig), "%.3f ms", f->pair_p99 * 1e3);
	snprintf(target, sizeof(target), "< 1 ms");
	row(arg, what, fig, target, f->pair_p99 < 0.001);
	snprintf(fig, sizeof(fig), "%.0f/s", f->lookups);
	row(arg, "lookups, 100 clients at once", fig, NULL, false);
	snprintf(what, sizeof(what), "  p99, 100 clients at %.0f lookups/s", f->paced_lookups);
	snprintf(fig, sizeof(fig), "%.3f ms", f->lookup_p99 * 1e3);
	row(arg, what, fig, target, f->lookup_p99 < 0.001);
	snprintf(fig, sizeof(fig), "%.1f MiB", f->rss_kib / 1024.0);
	row(arg, "agent RSS at 65,535", fig, NULL, false);
	snprintf(fig, sizeof(fig), "%.1f MiB", f->db_bytes / 1048576.0);
	row(arg, "database and WAL at 65,535", fig, NULL, false);
	snprintf(fig, sizeof(fig), "%.3f s", f->start_s);
	row(arg, "agent start after kill -9 at 65,535", fig, "< 1 s", f->start_s < 1.0);
}

int ctlbench_run(const struct bench_world *w, bench_row_cb row, void *arg)
{
	static struct agent ag;
	struct figures f = { 0 };
	const char *old = getenv(PORTRES_SOCKET_ENV);
	char *saved = old ? strdup(old) : NULL, cmd[700];
	pid_t pid;
	int err;

	ag.w = w;
	snprintf(ag.sock, sizeof(ag.sock), "%s/ctlbench.sock", w->tmp);
	snprintf(ag.state, sizeof(ag.state), "%s/ctlbench-state", w->tmp);
	snprintf(ag.bpffs, sizeof(ag.bpffs), "%s/ctlbench", w->bpffs);
	setenv(PORTRES_SOCKET_ENV, ag.sock, 1);
	fprintf(stderr, "bench: control plane through portresd\n");
	if (!(err = agent_start(&ag, NULL)))
		err = measure(&ag, &f);
	agent_kill(&ag, SIGTERM);
	/* the agent leaves its programs in place on SIGTERM; remove them */
	pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, STDERR_FILENO);
		execl(agent_bin(), "portresd", "--teardown", "--cgroup", w->cgroup, "--bpffs", ag.bpffs, "--socket",
		      ag.sock, "--state-dir", ag.state, (char *)NULL);
		_exit(127);
	}
	if (pid > 0)
		waitpid(pid, NULL, 0);
	/* teardown keeps the database (the agent's contract); the benchmark does not */
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", ag.state);
	if (system(cmd))
		fprintf(stderr, "ctlbench: could not remove %s\n", ag.state);
	if (saved)
		setenv(PORTRES_SOCKET_ENV, saved, 1);
	else
		unsetenv(PORTRES_SOCKET_ENV);
	free(saved);
	if (err)
		return err;
	report(&f, row, arg);
	return 0;
}

#ifdef CTLBENCH_MAIN
/* A program of its own: build the world bench.c would, run, print, undo. */
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>

volatile sig_atomic_t bench_stop;

static void print_row(void *arg, const char *what, const char *figure, const char *target, bool pass)
{
	printf("   %-46s %-24s %-12s %s\n", what, figure, target ? target : "", target ? (pass ? "PASS" : "MISS") : "");
}

static int write_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC), ok;

	if (fd < 0)
		return -errno;
	ok = write(fd, s, strlen(s)) == (ssize_t)strlen(s);
	close(fd);
	return ok ? 0 : -EIO;
}

int main(void)
{
	char tmp[] = "/var/tmp/portres-ctlbench-XXXXXX", bpf[300], cg[512], procs[600], root[256] = "", line[1024];
	struct ifreq ifr = { .ifr_flags = IFF_UP | IFF_LOOPBACK | IFF_RUNNING };
	struct bench_world w = { 0 };
	FILE *f;
	int fd, err;

	f = fopen("/proc/self/mountinfo", "r");
	while (f && fgets(line, sizeof(line), f)) {
		char *dash = strstr(line, " - ");

		if (dash && !strncmp(dash + 3, "cgroup2 ", 8) && sscanf(line, "%*s %*s %*s %*s %255s", root) == 1)
			break;
	}
	if (f)
		fclose(f);
	if (!root[0] || unshare(CLONE_NEWNS | CLONE_NEWNET) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) {
		fprintf(stderr, "ctlbench: needs root, cgroup2 and namespaces: %s\n", strerror(errno));
		return 1;
	}
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	ioctl(fd, SIOCSIFFLAGS, &ifr);
	close(fd);
	if (!mkdtemp(tmp))
		return 1;
	snprintf(bpf, sizeof(bpf), "%s/bpf", tmp);
	mkdir(bpf, 0700);
	snprintf(cg, sizeof(cg), "%s/portres-ctlbench-%d", root, (int)getpid());
	if (mount("bpf", bpf, "bpf", 0, "mode=0700") || mkdir(cg, 0755)) {
		fprintf(stderr, "ctlbench: %s\n", strerror(errno));
		return 1;
	}
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", cg);
	write_str(procs, "0");
	w.tmp = tmp;
	w.bpffs = bpf;
	w.cgroup = w.cgroup_none = w.cgroup_portres = cg;
	printf("5. the control plane through portresd (tests/bench/ctlbench.c)\n");
	err = ctlbench_run(&w, print_row, NULL);
	if (err)
		fprintf(stderr, "ctlbench: %s\n", strerror(-err));
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", root);
	write_str(procs, "0");
	rmdir(cg);
	umount2(bpf, MNT_DETACH);
	snprintf(line, sizeof(line), "rm -rf %s", tmp);
	if (system(line))
		fprintf(stderr, "ctlbench: could not remove %s\n", tmp);
	return err ? 1 : 0;
}
#endif
