// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * ctlbench.c - control-plane throughput of portresd through libportres
 * (section 5 of `make bench`, see bench.h):
 *
 *   create+delete of a persistent block, pairs/s (each create and delete is
 *                   a durable state-file write: fsync of file and directory)
 *   acquire+release of a wildcard runtime block, pairs/s
 *   lookup by 100 concurrent clients: calls/s and the p99 latency of one call
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "portres.h"

#define PAIRS_PERSISTENT 300
#define PAIRS_RUNTIME    2000
#define CLIENTS          100
#define CALLS_PER_CLIENT 50

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static pid_t agent_start(const struct bench_world *w, const char *sock, const char *state,
			 const char *bpffs, const char *extra)
{
	const char *bin = getenv("PORTRESD_BIN");
	const char *argv[] = { bin && *bin ? bin : "build/portresd", "--foreground", "--cgroup", w->cgroup,
			       "--bpffs", bpffs, "--socket", sock, "--state-dir", state, extra, NULL };
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	pid_t pid;

	if (strlen(sock) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, STDERR_FILENO); /* its log lines would interleave with the table */
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	memcpy(sa.sun_path, sock, strlen(sock) + 1);
	for (int i = 0; i < 1000; i++) {
		int c = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

		if (connect(c, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(c);
			return pid;
		}
		close(c);
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return -ECONNREFUSED;
		usleep(10000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return -ECONNREFUSED;
}

static int bench_persistent(double *rate)
{
	double t0 = now_s();
	portres_token_t t;

	for (int i = 0; i < PAIRS_PERSISTENT && !bench_stop; i++) {
		uint16_t start = (uint16_t)(20000 + (i % 100) * 10);

		if (portres_create_persistent(IPPROTO_TCP, start, 10, &t) ||
		    portres_delete_persistent(IPPROTO_TCP, start, 10))
			return -errno;
	}
	*rate = PAIRS_PERSISTENT / (now_s() - t0);
	return bench_stop ? -EINTR : 0;
}

static int bench_runtime(double *rate)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct portres_instance in;
	double t0 = now_s();
	int err = 0;

	for (int i = 0; i < PAIRS_RUNTIME && !bench_stop && !err; i++)
		if (portres_acquire(s, &(struct portres_range){ 0, 4 }, &in) || portres_release(s, in.token))
			err = -errno;
	*rate = PAIRS_RUNTIME / (now_s() - t0);
	close(s);
	return err ? err : bench_stop ? -EINTR : 0;
}

struct client {
	double lat[CALLS_PER_CLIENT];
	int err;
};

static void *client_run(void *arg)
{
	struct client *c = arg;
	portres_token_t t;

	for (int i = 0; i < CALLS_PER_CLIENT; i++) {
		double t0 = now_s();

		if (portres_lookup_persistent(IPPROTO_TCP, 30000, 10, &t)) {
			c->err = -errno;
			return NULL;
		}
		c->lat[i] = now_s() - t0;
	}
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static int bench_concurrent(double *rate, double *p50, double *p99)
{
	static struct client cl[CLIENTS];
	static double all[CLIENTS * CALLS_PER_CLIENT];
	pthread_t th[CLIENTS];
	portres_token_t t;
	double t0;
	int err = 0;

	if (portres_create_persistent(IPPROTO_TCP, 30000, 10, &t))
		return -errno;
	t0 = now_s();
	for (int i = 0; i < CLIENTS; i++)
		pthread_create(&th[i], NULL, client_run, &cl[i]);
	for (int i = 0; i < CLIENTS; i++) {
		pthread_join(th[i], NULL);
		if (cl[i].err)
			err = cl[i].err;
		memcpy(&all[i * CALLS_PER_CLIENT], cl[i].lat, sizeof(cl[i].lat));
	}
	*rate = CLIENTS * CALLS_PER_CLIENT / (now_s() - t0);
	qsort(all, CLIENTS * CALLS_PER_CLIENT, sizeof(double), cmp_double);
	*p50 = all[CLIENTS * CALLS_PER_CLIENT / 2];
	*p99 = all[CLIENTS * CALLS_PER_CLIENT * 99 / 100];
	portres_delete_persistent(IPPROTO_TCP, 30000, 10);
	return err;
}

int ctlbench_run(const struct bench_world *w, bench_row_cb row, void *arg)
{
	char sock[512], state[512], bpffs[512], what[128], path[600];
	double persistent = 0, runtime = 0, conc = 0, p50 = 0, p99 = 0;
	const char *old = getenv(PORTRES_SOCKET_ENV);
	char *saved = old ? strdup(old) : NULL;
	pid_t pid;
	int err;

	snprintf(sock, sizeof(sock), "%s/ctlbench.sock", w->tmp);
	snprintf(state, sizeof(state), "%s/ctlbench-state", w->tmp);
	snprintf(bpffs, sizeof(bpffs), "%s/ctlbench", w->bpffs);
	fprintf(stderr, "bench: control plane through portresd\n");
	pid = agent_start(w, sock, state, bpffs, NULL);
	if (pid < 0) {
		free(saved);
		return (int)pid;
	}
	setenv(PORTRES_SOCKET_ENV, sock, 1);
	err = bench_persistent(&persistent);
	if (!err)
		err = bench_runtime(&runtime);
	if (!err)
		err = bench_concurrent(&conc, &p50, &p99);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	/* the agent leaves its programs in place on SIGTERM; remove them */
	pid = fork();
	if (pid == 0) {
		const char *bin = getenv("PORTRESD_BIN");
		int null = open("/dev/null", O_WRONLY);

		dup2(null, STDERR_FILENO);
		execl(bin && *bin ? bin : "build/portresd", "portresd", "--teardown", "--cgroup", w->cgroup, "--bpffs",
		      bpffs, "--socket", sock, "--state-dir", state, (char *)NULL);
		_exit(127);
	}
	if (pid > 0)
		waitpid(pid, NULL, 0);
	/* teardown keeps the state file (the agent's contract); the benchmark does not */
	snprintf(path, sizeof(path), "%s/state.json", state);
	unlink(path);
	rmdir(state);
	if (saved)
		setenv(PORTRES_SOCKET_ENV, saved, 1);
	else
		unsetenv(PORTRES_SOCKET_ENV);
	free(saved);
	if (err)
		return err;
	row(arg, "create+delete persistent (pairs, fsync'd)", persistent, "> 100/s", persistent > 100);
	row(arg, "acquire+release runtime (pairs)", runtime, "> 1,000/s", runtime > 1000);
	snprintf(what, sizeof(what), "lookup, %d clients (p50 %.2f ms, p99 %.2f ms)", CLIENTS, p50 * 1e3, p99 * 1e3);
	row(arg, what, conc, "p99 < 10 ms", p99 < 0.010);
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

static void print_row(void *arg, const char *what, double ops, const char *target, bool pass)
{
	printf("   %-52s %12.0f/s   %-12s %s\n", what, ops, target ? target : "", target ? (pass ? "PASS" : "MISS") : "");
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
	char tmp[] = "/tmp/portres-ctlbench-XXXXXX", bpf[300], cg[512], procs[600], root[256] = "", line[1024];
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
	printf("5. control-plane operations/s (tests/bench/ctlbench.c)\n");
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
