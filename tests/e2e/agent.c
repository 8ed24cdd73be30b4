// SPDX-License-Identifier: LGPL-2.1-or-later
/* agent.c - the end-to-end fixture (see agent.h). */
#include <criterion/criterion.h>
#include <bpf/bpf.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <net/if.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sched.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "cgroup.h"

struct agent_fx ag;

static void write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);

	cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
	cr_assert(write(fd, text, strlen(text)) == (ssize_t)strlen(text), "write %s: %s", path, strerror(errno));
	close(fd);
}

static const char *cgroup2_root(void)
{
	const char *root = cgroup2_mount();

	cr_assert(root, "no cgroup2 mount in /proc/self/mountinfo");
	return root;
}

/* Cgroups left by a crashed run: their pid is gone. */
static void sweep_stale_cgroups(const char *root)
{
	DIR *d = opendir(root);
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d))) {
		char path[8192];
		int pid;

		if (sscanf(e->d_name, "portres-e2e-%d", &pid) != 1 || kill(pid, 0) == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", root, e->d_name);
		cgroup2_remove(path); /* with the child cgroups a test made in it */
	}
	closedir(d);
}

struct as_user {
	const struct test_user *u;
	const gid_t *groups;
	int ngroups;
	int (*fn)(void *arg);
	void *arg;
};

static int become_then(void *arg)
{
	struct as_user *x = arg;

	return test_user_become(x->u, x->groups, x->ngroups) ? 126 : x->fn(x->arg);
}

int ag_as_user(const struct test_user *u, int (*fn)(void *arg), void *arg, const gid_t *groups, int ngroups)
{
	struct as_user x = { u, groups, ngroups, fn, arg };

	return ag_in_child(become_then, &x);
}

void ag_setup(void)
{
	struct ifreq ifr = { 0 };
	const char *root = cgroup2_root();
	int fd;

	memset(&ag, 0, sizeof(ag));
	test_users_sweep();
	/* own mount and network namespace: private bpffs, private sysctls */
	cr_assert(unshare(CLONE_NEWNS | CLONE_NEWNET) == 0, "unshare: %s", strerror(errno));
	cr_assert(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0, "make-rprivate: %s", strerror(errno));
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	ifr.ifr_flags = IFF_UP | IFF_LOOPBACK | IFF_RUNNING;
	cr_assert(ioctl(fd, SIOCSIFFLAGS, &ifr) == 0, "lo up: %s", strerror(errno));
	close(fd);

	strcpy(ag.tmp, "/tmp/portres-e2e-XXXXXX");
	cr_assert(mkdtemp(ag.tmp));
	chmod(ag.tmp, 0755); /* the setuid children reach the socket through it */
	snprintf(ag.bpffs, sizeof(ag.bpffs), "%s/bpf", ag.tmp);
	mkdir(ag.bpffs, 0700);
	cr_assert(mount("bpf", ag.bpffs, "bpf", 0, "mode=0700") == 0, "mount bpffs: %s", strerror(errno));
	strcat(ag.bpffs, "/portres");
	snprintf(ag.sock, sizeof(ag.sock), "%s/portresd.sock", ag.tmp);
	snprintf(ag.state, sizeof(ag.state), "%s/state", ag.tmp);
	snprintf(ag.log, sizeof(ag.log), "%s/agent.log", ag.tmp);
	mkdir(ag.state, 0700);
	setenv(PORTRES_SOCKET_ENV, ag.sock, 1);

	/* own cgroup, with the test in it */
	sweep_stale_cgroups(root);
	if (cgroup2_self(ag.home_cgroup, sizeof(ag.home_cgroup)))
		snprintf(ag.home_cgroup, sizeof(ag.home_cgroup), "%s", root);
	snprintf(ag.cgroup, sizeof(ag.cgroup), "%s/portres-e2e-%d", root, (int)getpid());
	cr_assert(mkdir(ag.cgroup, 0755) == 0, "mkdir %s: %s", ag.cgroup, strerror(errno));
	cr_assert(cgroup2_enter(ag.cgroup) == 0, "enter %s", ag.cgroup);
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(p);
}

/* Children a test left running (it failed before killing them): killed at teardown. */
static pid_t tracked[16];
static size_t n_tracked;

void ag_track_child(pid_t pid)
{
	if (n_tracked < sizeof(tracked) / sizeof(tracked[0]))
		tracked[n_tracked++] = pid;
}

void ag_kill_tracked(void)
{
	/* only a child not reaped yet: a reaped one's pid may be someone else's by now */
	for (size_t i = 0; i < n_tracked; i++)
		if (waitpid(tracked[i], NULL, WNOHANG) == 0 && kill(tracked[i], SIGKILL) == 0)
			waitpid(tracked[i], NULL, 0);
	n_tracked = 0;
}

void ag_teardown(void)
{
	char path[8192];

	ag_kill_tracked();
	ag_kill9();
	if (ag.home_cgroup[0] && cgroup2_enter(ag.home_cgroup))
		fprintf(stderr, "e2e: leaving cgroup %s failed\n", ag.cgroup);
	if (ag.tmp[0]) {
		snprintf(path, sizeof(path), "%s/bpf", ag.tmp);
		umount2(path, MNT_DETACH);
		snprintf(path, sizeof(path), "%s/state", ag.tmp);
		umount2(path, MNT_DETACH); /* the disk-full test mounts a tmpfs here */
		nftw(ag.tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	}
	/* after the agent and the test's children: userdel refuses a user with processes */
	test_users_remove();
	/* Children of the test (setuid helpers) are gone by now; the cgroup is empty. */
	/* with the child cgroups the test made (cli_teardown empties them of processes first) */
	for (int i = 0; ag.cgroup[0] && i < 50 && (cgroup2_remove(ag.cgroup), access(ag.cgroup, F_OK) == 0); i++)
		usleep(20000);
}

static void agent_argv(const char **argv, size_t max, const char *const *extra)
{
	const char *bin = getenv("PORTRESD_BIN");
	size_t n = 0;

	argv[n++] = bin && *bin ? bin : "build/portresd";
	if (!ag.detach)
		argv[n++] = "--foreground";
	argv[n++] = "--cgroup";
	argv[n++] = ag.cgroup;
	argv[n++] = "--bpffs";
	argv[n++] = ag.bpffs;
	argv[n++] = "--socket";
	argv[n++] = ag.sock;
	argv[n++] = "--state-dir";
	argv[n++] = ag.state;
	argv[n++] = "-v";
	for (size_t i = 0; extra && extra[i] && n < max - 1; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
}

static pid_t spawn(const char *const *extra)
{
	const char *argv[64];
	pid_t pid;

	agent_argv(argv, 64, extra);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		int fd = open(ag.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

		/* a test killed on its timeout runs no .fini: its agent must not outlive it */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (ag.nofile)
			setrlimit(RLIMIT_NOFILE, &(struct rlimit){ ag.nofile, ag.nofile });

		if (fd >= 0) {
			dup2(fd, STDERR_FILENO);
			dup2(fd, STDOUT_FILENO);
		}
		execv(argv[0], (char *const *)argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	return pid;
}

void ag_start(const char *const *extra)
{
	struct timespec t0, t;

	ag.pid = spawn(extra);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		int c, status;

		if (waitpid(ag.pid, &status, WNOHANG) == ag.pid) {
			ag.pid = 0;
			cr_assert_fail("portresd exited at start (status %d); log %s", status, ag.log);
		}
		c = ag_connect();
		if (c >= 0) {
			close(c);
			return;
		}
		clock_gettime(CLOCK_MONOTONIC, &t);
		cr_assert(t.tv_sec - t0.tv_sec < 10, "portresd did not start serving in 10 s");
		usleep(10000);
	}
}

int ag_run(const char *const *extra)
{
	pid_t pid = spawn(extra);
	int status;

	/* an agent that was to stop at once but serves: killed, and -1 */
	for (int i = 0; i < 2000; i++) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		cr_assert(r >= 0, "waitpid: %s", strerror(errno));
		if (r == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		usleep(10000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return -1;
}

void ag_kill9(void)
{
	if (ag.pid > 0) {
		kill(ag.pid, SIGKILL);
		waitpid(ag.pid, NULL, 0);
	}
	ag.pid = 0;
}

void ag_stop(void)
{
	int status;

	if (ag.pid <= 0)
		return;
	kill(ag.pid, SIGTERM);
	cr_assert(waitpid(ag.pid, &status, 0) == ag.pid);
	ag.pid = 0;
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "portresd exit status %d", status);
}

static bool log_has_now(const char *text)
{
	static char buf[1 << 20];
	FILE *f = fopen(ag.log, "r");
	size_t n;

	if (!f)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strstr(buf, text) != NULL;
}

bool ag_log_wait(const char *text, int ms)
{
	for (int waited = 0;; waited += 20) {
		if (log_has_now(text))
			return true;
		if (waited >= ms)
			return false;
		usleep(20000);
	}
}

bool ag_log_has(const char *text)
{
	return ag_log_wait(text, 2000);
}

int ag_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int c = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	if (strlen(ag.sock) >= sizeof(sa.sun_path))
		return -1;
	memcpy(sa.sun_path, ag.sock, strlen(ag.sock) + 1);
	if (connect(c, (struct sockaddr *)&sa, sizeof(sa))) {
		close(c);
		return -1;
	}
	return c;
}

int ag_send(int c, const void *buf, size_t len, int fd)
{
	union {
		char b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (fd >= 0) {
		struct cmsghdr *cm;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.b;
		mh.msg_controllen = sizeof(ctl.b);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	return sendmsg(c, &mh, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

json_t *ag_raw(int c, const void *buf, size_t len, int fd)
{
	static char reply[70000];
	struct timeval tv = { .tv_sec = 10 };
	ssize_t n;

	setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	/*
	 * An agent refusing the connection (EUSERS) answers and closes at once:
	 * the send may find it gone (EPIPE) and the first recv say ECONNRESET
	 * (our request was unread), with the reply still to read behind either.
	 */
	if (ag_send(c, buf, len, fd))
		n = recv(c, reply, sizeof(reply), MSG_DONTWAIT);
	else
		n = recv(c, reply, sizeof(reply), 0);
	if (n < 0 && errno == ECONNRESET)
		n = recv(c, reply, sizeof(reply), MSG_DONTWAIT);
	if (n <= 0)
		return NULL;
	return json_loadb(reply, (size_t)n, 0, NULL);
}

json_t *ag_req(const char *json_text, int fd)
{
	int c = ag_connect();
	json_t *r;

	cr_assert(c >= 0, "cannot connect to %s", ag.sock);
	r = ag_raw(c, json_text, strlen(json_text), fd);
	close(c);
	cr_assert(r, "no reply to %s", json_text);
	return r;
}

const char *ag_errno(json_t *reply)
{
	const char *e = json_string_value(json_object_get(reply, "errno"));

	return json_is_true(json_object_get(reply, "ok")) ? "" : e ? e : "?";
}

const char *ag_sysctl(void)
{
	static char buf[4096];
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_reserved_ports", "r");
	size_t n;

	cr_assert(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return buf;
}

/* sqlite3's callback: each row's columns joined with '|', one line per row. */
static int db_row(void *arg, int n, char **cols, char **names)
{
	char **out = arg;
	size_t len = *out ? strlen(*out) : 0, add = 1;
	char *grown;

	(void)names;
	for (int i = 0; i < n; i++)
		add += (cols[i] ? strlen(cols[i]) : 0) + 1;
	if (!(grown = realloc(*out, len + add + 1)))
		return 1;
	*out = grown;
	for (int i = 0; i < n; i++)
		len += (size_t)sprintf(grown + len, "%s%s", i ? "|" : "", cols[i] ? cols[i] : "");
	sprintf(grown + len, "\n");
	return 0;
}

char *ag_db(const char *sql)
{
	char path[400], *out = NULL, *err = NULL;
	sqlite3 *db;
	int rc;

	snprintf(path, sizeof(path), "%s/portres.db", ag.state);
	rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
	cr_assert_eq(rc, SQLITE_OK, "%s: %s", path, sqlite3_errstr(rc));
	rc = sqlite3_exec(db, sql, db_row, &out, &err);
	cr_assert_eq(rc, SQLITE_OK, "%s: %s: %s", path, sql, err ? err : sqlite3_errstr(rc));
	sqlite3_close(db);
	return out ? out : strdup("");
}

void ag_sysctl_set(const char *text)
{
	write_file("/proc/sys/net/ipv4/ip_local_reserved_ports", text);
}

int ag_bind(int proto, uint16_t port, int *keep)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, (proto == IPPROTO_TCP ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, proto);
	int one = 1, ret = 0;

	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)))
		ret = -errno;
	if (!ret && proto == IPPROTO_TCP)
		listen(fd, 1);
	if (keep && !ret)
		*keep = fd;
	else
		close(fd);
	return ret;
}

int ag_in_child(int (*fn)(void *arg), void *arg)
{
	pid_t pid = fork();
	int status;

	cr_assert(pid >= 0);
	if (pid == 0)
		_exit(fn(arg));
	cr_assert(waitpid(pid, &status, 0) == pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool ag_has_token(portres_token_t token)
{
	json_t *r = ag_req("{\"v\":1,\"op\":\"list\"}", -1), *v;
	char tok[17];
	size_t i;
	bool found = false;

	snprintf(tok, sizeof(tok), "%016" PRIx64, token);
	json_array_foreach(json_object_get(r, "reservations"), i, v)
		found |= !strcmp(json_string_value(json_object_get(v, "token")), tok);
	json_decref(r);
	return found;
}

bool ag_wait_gone(portres_token_t token)
{
	for (int i = 0; i < 500; i++) {
		if (!ag_has_token(token))
			return true;
		usleep(10000);
	}
	return false;
}

json_t *ag_named(json_t *l, const char *name)
{
	json_t *r;
	size_t i;

	json_array_foreach(json_object_get(l, "reservations"), i, r)
		if (!strcmp(json_string_value(json_object_get(r, "name")) ?: "", name))
			return r;
	return NULL;
}

bool ag_map_has(const char *map, const void *key)
{
	char pin[400];
	unsigned char value[256];
	bool found;
	int fd;

	snprintf(pin, sizeof(pin), "%s/maps/%s", ag.bpffs, map);
	fd = bpf_obj_get(pin);
	cr_assert(fd >= 0, "%s: %s", pin, strerror(errno));
	found = bpf_map_lookup_elem(fd, key, value) == 0;
	close(fd);
	return found;
}

bool ag_in_resv_map(const char *token)
{
	uint64_t key = strtoull(token, NULL, 16);

	return ag_map_has("portres_resv", &key);
}

bool ag_has_event(const char *type, const char *token)
{
	json_t *r = ag_req("{\"v\":1,\"op\":\"events\"}", -1), *e;
	bool found = false;
	size_t i;

	json_array_foreach(json_object_get(r, "recent"), i, e)
		found |= !strcmp(json_string_value(json_object_get(e, "type")) ?: "", type) &&
			 !strcmp(json_string_value(json_object_get(e, "token")) ?: "", token);
	json_decref(r);
	return found;
}
