// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_security.c - what an unprivileged user can and cannot make the agent
 * do (issue 8), each case run as a real user the test creates (test_user_new)
 * and removes; and a second agent on the same socket touches nothing
 * (issue 11, item 12).
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_helpers.h"

TestSuite(security, .init = ag_setup, .fini = cli_teardown, .timeout = 120);

/* --- a second agent (issue 11, item 12) ------------------------------------ */

/* The program id behind each pinned link, in directory order, joined by spaces. */
static void link_progs(char *buf, size_t len)
{
	char dir[400], path[700];
	struct dirent *e;
	size_t n = 0;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/links", ag.bpffs);
	d = opendir(dir);
	cr_assert(d, "%s: %s", dir, strerror(errno));
	buf[0] = '\0';
	while ((e = readdir(d))) {
		struct bpf_link_info info = { 0 };
		__u32 info_len = sizeof(info);
		int fd;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		fd = bpf_obj_get(path);
		cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
		cr_assert_eq(bpf_obj_get_info_by_fd(fd, &info, &info_len), 0);
		close(fd);
		n += (size_t)snprintf(buf + n, len - n, "%s=%u ", e->d_name, info.prog_id);
	}
	closedir(d);
}

/* The agent's database and its WAL, byte for byte, with their times. */
static char *db_files(void)
{
	static const char *const names[] = { "portres.db", "portres.db-wal" };
	char path[400], *out = NULL, *text;
	size_t len = 0;
	struct stat sb;

	for (size_t i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/%s", ag.state, names[i]);
		if (stat(path, &sb))
			continue;
		text = cli_read(path);
		out = realloc(out, len + 64 + (text ? strlen(text) : 0) + 1);
		len += (size_t)sprintf(out + len, "%s %lld.%09ld %lld:", names[i], (long long)sb.st_mtim.tv_sec,
				       sb.st_mtim.tv_nsec, (long long)sb.st_size);
		/* the text up to its first NUL, enough to see a change of the header or the tables */
		len += (size_t)sprintf(out + len, "%s", text ? text : "");
		free(text);
	}
	return out ? out : strdup("");
}

Test(security, second_agent_touches_nothing)
{
	char before[2048], after[2048], *files_before, *files_after;
	portres_token_t t;
	json_t *r;

	ag_start(NULL);
	cr_assert_eq(portres_create_persistent(IPPROTO_TCP, 8000, 10, &t), 0, "%s", strerror(errno));
	link_progs(before, sizeof(before));
	files_before = db_files();
	cr_assert(strstr(files_before, "portres.db "), "no database: %s", files_before);

	cr_assert_neq(ag_run(NULL), 0, "a second agent on the same socket started");
	cr_assert(ag_log_has("another portresd answers"));
	/* it found the other agent before loading anything */
	cr_assert(!ag_log_has("adopted programs"), "the second agent adopted the pins before it checked the socket");
	link_progs(after, sizeof(after));
	cr_assert_str_eq(after, before, "the pinned links were re-pointed");
	files_after = db_files();
	cr_assert_str_eq(files_after, files_before, "the database was touched");
	/* the first agent serves on, enforcement as it was */
	r = ag_req("{\"v\":1,\"op\":\"status\"}", -1);
	cr_assert_str_eq(ag_errno(r), "");
	cr_assert_eq(json_integer_value(json_object_get(r, "pid")), ag.pid);
	json_decref(r);
	cr_assert_eq(ag_bind(IPPROTO_TCP, 8005, NULL), -EACCES);
	free(files_before);
	free(files_after);
}

/* --- fd exhaustion (issue 8, item 4) --------------------------------------- */

/* CPU time (user + system) the agent has used, in clock ticks. */
static long agent_ticks(void)
{
	char path[64], buf[1024], *p;
	long utime = 0, stime = 0;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)ag.pid);
	f = fopen(path, "re");
	cr_assert(f, "%s: %s", path, strerror(errno));
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* after the command name in parentheses: state is field 3, utime 14, stime 15 */
	p = strrchr(buf, ')');
	cr_assert(p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld", &utime, &stime) == 2);
	return utime + stime;
}

static long file_size(const char *path)
{
	struct stat sb;

	return stat(path, &sb) ? 0 : (long)sb.st_size;
}

#define FLOOD 300

Test(security, fd_exhaustion_backs_off)
{
	long ticks0, ticks, hz = sysconf(_SC_CLK_TCK), log0, grown = 0;
	int flood[FLOOD], n = 0;
	json_t *r;

	/* far fewer fds than the flood needs: the agent reaches EMFILE */
	ag.nofile = 128;
	ag_start(NULL);
	log0 = file_size(ag.log);
	for (; n < FLOOD; n++) {
		flood[n] = ag_connect();
		cr_assert(flood[n] >= 0, "connection %d: %s", n, strerror(errno));
	}
	/* 2 s with the listener readable and no fd free; a spinning loop uses them all */
	ticks0 = agent_ticks();
	for (int i = 0; i < 20; i++) {
		usleep(100000);
		grown = file_size(ag.log) - log0;
		if (grown > 16384)
			break;
	}
	ticks = agent_ticks() - ticks0;
	cr_log_info("with no fd free for 2 s: log +%ld bytes, agent CPU %ld ms\n", grown, ticks * 1000 / hz);
	cr_assert(grown <= 16384, "the log grew by %ld bytes while the agent had no fd free", grown);
	cr_assert(ticks * 5 < hz * 2, "the agent used %ld ms of CPU in 2 s with no fd free", ticks * 1000 / hz);
	cr_assert(ag_log_has("no file descriptor free"), "the condition was not logged");
	/* the flood goes: root is served again */
	while (n > 0)
		close(flood[--n]);
	r = ag_req("{\"v\":1,\"op\":\"status\"}", -1);
	cr_assert_str_eq(ag_errno(r), "");
	json_decref(r);
}

/* --- lock-out (issue 8, item 3) -------------------------------------------- */

/* Sends a status request on c: 1 when it is answered ok, 0 otherwise (refused, closed). */
static int status_ok(int c)
{
	static const char req[] = "{\"v\":1,\"op\":\"status\"}";
	json_t *r = ag_raw(c, req, sizeof(req) - 1, -1);
	int ok = r && json_is_true(json_object_get(r, "ok"));

	json_decref(r);
	return ok;
}

#define HOARD 1100

struct hoard {
	int ready[2]; /* the hoarder writes how many of its connections were served */
	int done[2];  /* closed by the test: the hoarder exits */
};

/* Opens HOARD connections, asks for status on each, reports, and holds them. */
static int hoard(void *arg)
{
	struct hoard *h = arg;
	static int conns[HOARD];
	int served = 0;
	char c;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	for (int i = 0; i < HOARD; i++)
		conns[i] = ag_connect();
	for (int i = 0; i < HOARD; i++)
		served += conns[i] >= 0 && status_ok(conns[i]);
	if (write(h->ready[1], &served, sizeof(served)) != sizeof(served))
		return 1;
	return read(h->done[0], &c, 1) < 0 ? 2 : 0;
}

static int status_as_user(void *arg)
{
	int c = ag_connect();

	return c >= 0 && status_ok(c) ? 0 : 1;
}

static int events_as_user(void *arg)
{
	static const char req[] = "{\"v\":1,\"op\":\"events\"}";
	int c = ag_connect();
	json_t *r = c >= 0 ? ag_raw(c, req, sizeof(req) - 1, -1) : NULL;

	return r && json_is_true(json_object_get(r, "ok")) ? 0 : 1;
}

Test(security, lockout_per_uid_cap)
{
	struct test_user mallory, alice;
	struct rlimit rl = { 4096, 4096 };
	struct hoard h;
	int served = -1, status;
	pid_t pid;
	char byte;
	json_t *r;

	/* the hoarder needs more fds than the common default of 1024 */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max < 4096)
		rl.rlim_max = 4096;
	rl.rlim_cur = rl.rlim_max;
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0, "%s", strerror(errno));
	test_user_new(&mallory);
	test_user_new(&alice);
	ag_start(NULL);
	cr_assert(pipe(h.ready) == 0 && pipe(h.done) == 0);
	fflush(NULL);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		/* only the hoarder keeps the pipes' ends it uses: the test's close ends it */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(h.ready[0]);
		close(h.done[1]);
		_exit(ag_as_user(&mallory, hoard, &h, NULL, 0));
	}
	close(h.ready[1]);
	close(h.done[0]);
	cr_assert_eq(read(h.ready[0], &served, sizeof(served)), (ssize_t)sizeof(served), "the hoarder failed");
	/* while one user holds 1,100 connections, root and another user are served */
	r = ag_req("{\"v\":1,\"op\":\"status\"}", -1);
	cr_assert_str_eq(ag_errno(r), "", "root was refused while uid %u holds %d connections", mallory.uid, HOARD);
	json_decref(r);
	cr_assert_eq(ag_as_user(&alice, status_as_user, NULL, NULL, 0), 0, "another user was refused");
	cr_assert_eq(ag_as_user(&alice, events_as_user, NULL, NULL, 0), 0, "another user could not subscribe");
	/* the hoarder got its own share only */
	cr_assert(served >= 1 && served <= 64, "uid %u was served on %d connections (cap 64)", mallory.uid, served);
	cr_assert(ag_log_has("connections to the agent, its limit"));
	cr_assert_eq(write(h.done[1], &byte, 0), 0);
	close(h.done[1]);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "hoarder status %d", status);
}

struct subscriber {
	const char *sock;
};

/* Subscribes to events, never reads, and waits (20 s at most) for the agent to hang up. */
static int stalled_subscriber(void *arg)
{
	static const char req[] = "{\"v\":1,\"op\":\"events\"}";
	int c = ag_connect();
	struct pollfd pfd = { .fd = c };

	if (c < 0 || send(c, req, sizeof(req) - 1, MSG_NOSIGNAL) < 0)
		return 1;
	/* events = 0: poll reports POLLHUP without reading anything */
	for (int i = 0; i < 200; i++) {
		if (poll(&pfd, 1, 100) == 1 && (pfd.revents & POLLHUP))
			return 0;
	}
	return 2;
}

Test(security, stalled_subscriber_dropped)
{
	static const char *const extra[] = { "--stall-timeout", "1", NULL };
	struct test_user u;
	int status, s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	pid_t pid;

	test_user_new(&u);
	ag_start(extra);
	fflush(NULL);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0)
		_exit(ag_as_user(&u, stalled_subscriber, NULL, NULL, 0));
	/* events (acquired, released) until the subscriber's messages back up and it is dropped */
	for (int i = 0; i < 20000; i++) {
		struct portres_instance in;

		if (waitpid(pid, &status, WNOHANG) == pid)
			break;
		cr_assert_eq(portres_acquire(s, &(struct portres_range){ 0, 1 }, &in), 0, "%s", strerror(errno));
		cr_assert_eq(portres_release(s, in.token), 0, "%s", strerror(errno));
		if (i == 19999)
			cr_assert_fail("the subscriber was not dropped");
	}
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "subscriber status %d", status);
	cr_assert(ag_log_has("(events subscriber): closed"));
	close(s);
}

/* The send buffer of the agent's end of our connection c, from sock_diag. */
static uint32_t agent_sndbuf(int c)
{
	struct {
		struct nlmsghdr nlh;
		struct unix_diag_req r;
	} req = {
		.nlh = { .nlmsg_len = sizeof(req), .nlmsg_type = SOCK_DIAG_BY_FAMILY,
			 .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP },
		.r = { .sdiag_family = AF_UNIX, .udiag_states = (__u32)-1,
		       .udiag_show = UDIAG_SHOW_PEER | UDIAG_SHOW_MEMINFO },
	};
	static char buf[1 << 16];
	struct stat sb;
	uint32_t found = 0;
	int nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	ssize_t n;

	cr_assert(nl >= 0 && fstat(c, &sb) == 0);
	cr_assert(send(nl, &req, sizeof(req), 0) == (ssize_t)sizeof(req), "sock_diag: %s", strerror(errno));
	while ((n = recv(nl, buf, sizeof(buf), 0)) > 0) {
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
			struct unix_diag_msg *m = NLMSG_DATA(h);
			struct rtattr *a = (struct rtattr *)(m + 1);
			int len = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(*m)));
			uint32_t peer = 0, sndbuf = 0;

			if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR)
				goto done;
			for (; RTA_OK(a, len); a = RTA_NEXT(a, len)) {
				if (a->rta_type == UNIX_DIAG_PEER)
					peer = *(uint32_t *)RTA_DATA(a);
				else if (a->rta_type == UNIX_DIAG_MEMINFO)
					sndbuf = ((uint32_t *)RTA_DATA(a))[SK_MEMINFO_SNDBUF];
			}
			if (peer == sb.st_ino)
				found = sndbuf;
		}
	}
done:
	close(nl);
	cr_assert(found, "no socket of the agent is the peer of ours");
	return found;
}

/* One message of any size from c (10 s at most): malloc'd and NUL-terminated, or NULL. */
static char *recv_whole(int c, size_t *len)
{
	struct timeval tv = { .tv_sec = 10 };
	char *buf;
	ssize_t n;

	setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	n = recv(c, NULL, 0, MSG_PEEK | MSG_TRUNC);
	if (n <= 0 || !(buf = malloc((size_t)n + 1)))
		return NULL;
	if (recv(c, buf, (size_t)n, 0) != n) {
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	*len = (size_t)n;
	return buf;
}

/* The number of reservations in a list reply on c; -1 if it is not one. */
static int listed_on(int c)
{
	size_t len = 0;
	char *text = recv_whole(c, &len);
	json_t *r = text ? json_loadb(text, len, 0, NULL) : NULL;
	int n = json_is_true(json_object_get(r, "ok")) ? (int)json_array_size(json_object_get(r, "reservations")) : -1;

	free(text);
	json_decref(r);
	return n;
}

#define PORTRES_MAX_ANCHORS_TEST 4 /* runtime reservations one socket may anchor */
#define MANY 3000  /* runtime reservations: their list is far bigger than a client's send buffer */
#define LISTS 8

static const char list_req[] = "{\"v\":1,\"op\":\"list\"}";

/* LISTS connections ask for the list at once, then read the replies: every one arrives whole. */
static int many_lists(void *arg)
{
	int c[LISTS];

	for (int i = 0; i < LISTS; i++)
		if ((c[i] = ag_connect()) < 0 || send(c[i], list_req, sizeof(list_req) - 1, MSG_NOSIGNAL) < 0)
			return 1;
	for (int i = LISTS; i-- > 0;)
		if (listed_on(c[i]) != MANY)
			return 10 + i;
	return 0;
}

Test(security, send_buffer_capped_big_list_delivered)
{
	struct rlimit rl = { 4096, 4096 };
	static int socks[MANY / PORTRES_MAX_ANCHORS_TEST];
	struct test_user u;
	size_t n = 0;
	int c;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max < 4096)
		rl.rlim_max = 4096;
	rl.rlim_cur = rl.rlim_max;
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0, "%s", strerror(errno));
	test_user_new(&u);
	ag_start(NULL);
	/* a client's buffer in the agent is far below the old 32 MiB (64 MiB as the kernel counts) */
	c = ag_connect();
	cr_assert(c >= 0 && status_ok(c));
	cr_assert(agent_sndbuf(c) <= 1024 * 1024, "the agent's send buffer for a client is %u bytes", agent_sndbuf(c));
	close(c);
	/* a list far bigger than that still arrives whole, to root and to a user asking on many connections */
	for (size_t i = 0; i < MANY; i++) {
		struct portres_instance in;

		if (i % PORTRES_MAX_ANCHORS_TEST == 0)
			socks[n++] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		cr_assert_eq(portres_acquire(socks[n - 1], &(struct portres_range){ 0, 1 }, &in), 0, "acquire %zu: %s",
			     i, strerror(errno));
	}
	c = ag_connect();
	cr_assert(c >= 0 && send(c, list_req, sizeof(list_req) - 1, 0) > 0);
	cr_assert_eq(listed_on(c), MANY);
	close(c);
	cr_assert_eq(ag_as_user(&u, many_lists, NULL, NULL, 0), 0);
	while (n > 0)
		close(socks[--n]);
}

/* --- privileged and service ports (issue 8, item 2) ------------------------ */

/* What a user's acquire asks for, and what it got: shared with the child. */
struct user_acquire {
	uint16_t start, count;
	char errno_name[32];  /* "" when it succeeded */
	char error[512];
	uint16_t got_start;
};

static struct user_acquire *shared_acquire(void)
{
	struct user_acquire *ua = mmap(NULL, sizeof(*ua), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	cr_assert(ua != MAP_FAILED);
	memset(ua, 0, sizeof(*ua));
	return ua;
}

/* The raw acquire (the error message names the range), reported into the shared struct. */
static int acquire_raw(void *arg)
{
	struct user_acquire *ua = arg;
	char req[128];
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), c = ag_connect();
	json_t *r;

	snprintf(req, sizeof(req), "{\"v\":1,\"op\":\"acquire\",\"start\":%u,\"count\":%u}", ua->start, ua->count);
	if (s < 0 || c < 0 || !(r = ag_raw(c, req, strlen(req), s)))
		return 1;
	snprintf(ua->errno_name, sizeof(ua->errno_name), "%s", ag_errno(r));
	snprintf(ua->error, sizeof(ua->error), "%s", json_string_value(json_object_get(r, "error")) ?: "");
	ua->got_start = (uint16_t)json_integer_value(json_object_get(r, "start"));
	json_decref(r);
	return 0;
}

/* As user u: acquire start/count; the errno name of the reply ("" for ok). */
static const char *user_acquire(const struct test_user *u, struct user_acquire *ua, uint16_t start, uint16_t count)
{
	ua->start = start;
	ua->count = count;
	ua->errno_name[0] = ua->error[0] = '\0';
	ua->got_start = 0;
	cr_assert_eq(ag_as_user(u, acquire_raw, ua, NULL, 0), 0, "the acquire as %s failed to run", u->name);
	return ua->errno_name;
}

static void write_sysctl(const char *name, const char *value)
{
	char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/sys/net/ipv4/%s", name);
	f = fopen(path, "we");
	cr_assert(f && fputs(value, f) >= 0 && fclose(f) == 0, "%s: %s", path, strerror(errno));
}

Test(security, user_ports_service_ports_refused)
{
	struct user_acquire *ua = shared_acquire();
	struct portres_instance in;
	struct test_user u;
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	test_user_new(&u);
	/* the test's netns: ephemeral range 32768-60999, unprivileged ports from 1024 */
	write_sysctl("ip_local_port_range", "32768 60999");
	write_sysctl("ip_unprivileged_port_start", "1024");
	ag_start(NULL);
	/* a user cannot take nginx's or postgres's port away from root */
	cr_assert_str_eq(user_acquire(&u, ua, 80, 1), "EACCES", "a user reserved port 80");
	cr_assert(strstr(ua->error, "32768-65535"), "the error does not name the range: %s", ua->error);
	cr_assert_str_eq(user_acquire(&u, ua, 443, 1), "EACCES");
	cr_assert_str_eq(user_acquire(&u, ua, 5432, 1), "EACCES");
	cr_assert_str_eq(user_acquire(&u, ua, 32760, 10), "EACCES", "a block reaching below the range");
	cr_assert_eq(ag_bind(IPPROTO_TCP, 80, NULL), 0, "root lost port 80");
	/* inside the range: allowed */
	cr_assert_str_eq(user_acquire(&u, ua, 40000, 10), "", "%s", ua->error);
	/* root is not limited */
	cr_assert_eq(portres_acquire(s, &(struct portres_range){ 80, 1 }, &in), 0, "%s", strerror(errno));
	close(s);
	/* its end rewrites the sysctl (port 80 out): over before the test writes it, or it may write over it */
	cr_assert(ag_wait_gone(in.token));

	/* the ports above the ephemeral range are taken: a wildcard goes below it for root only */
	ag_sysctl_set("61000-65535");
	s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_eq(portres_acquire(s, &(struct portres_range){ 0, 10 }, &in), 0, "%s", strerror(errno));
	cr_assert_eq(in.range.start, 32758, "root's wildcard: today's order (below the range, nearest first)");
	cr_assert_str_eq(user_acquire(&u, ua, 0, 10), "", "%s", ua->error);
	cr_assert(ua->got_start >= 32768, "a user's wildcard block landed at %u, below the range", ua->got_start);
	cr_assert_eq(ua->got_start, 60990, "a user's wildcard: the ephemeral range from its top");
	close(s);
}

Test(security, user_ports_flag_and_unprivileged_start)
{
	static const char *const extra[] = { "--user-ports", "40000-40099", NULL };
	static const char *const wide[] = { "--user-ports", "1024-65535", NULL };
	struct user_acquire *ua = shared_acquire();
	struct test_user u;

	test_user_new(&u);
	write_sysctl("ip_local_port_range", "32768 60999");
	write_sysctl("ip_unprivileged_port_start", "1024");
	ag_start(extra);
	cr_assert_str_eq(user_acquire(&u, ua, 39999, 2), "EACCES");
	cr_assert(strstr(ua->error, "40000-40099"), "the error does not name the range: %s", ua->error);
	cr_assert_str_eq(user_acquire(&u, ua, 40100, 1), "EACCES");
	cr_assert_str_eq(user_acquire(&u, ua, 40098, 2), "", "%s", ua->error);
	/* (that block ended with the child's socket) */
	/* the wildcard keeps its order within the range: here inside the ephemeral range, from the top */
	cr_assert_str_eq(user_acquire(&u, ua, 0, 10), "", "%s", ua->error);
	cr_assert_eq(ua->got_start, 40090, "a user's wildcard block at %u", ua->got_start);
	ag_stop();

	/* never below ip_unprivileged_port_start of the socket's netns */
	write_sysctl("ip_unprivileged_port_start", "5000");
	ag_start(wide);
	cr_assert_str_eq(user_acquire(&u, ua, 4000, 1), "EACCES", "a user reserved a port it could not bind");
	cr_assert(strstr(ua->error, "5000-65535"), "the error does not name the range: %s", ua->error);
	cr_assert_str_eq(user_acquire(&u, ua, 5000, 1), "", "%s", ua->error);
}

/* --- escaping --confine (issue 8, item 1) ---------------------------------- */

/* What the user tried inside the delegated cgroup, and what the agent said. */
struct escape {
	const struct test_user *u;
	char deleg[4200], child[4300], other[4200];
	int bind_before, bind_after;          /* bind(5000): 0 or -errno */
	char attach_deleg[32], attach_child[32], detach_deleg[32], attach_other[32], detach_other[32];
	char attach_msg[512];
};

/* One request on a new connection; its errno name ("" ok) into out, its message into msg (if non-NULL). */
static void ask(const char *req, char out[32], char *msg, size_t len)
{
	int c = ag_connect();
	json_t *r = c >= 0 ? ag_raw(c, req, strlen(req), -1) : NULL;

	snprintf(out, 32, "%s", r ? ag_errno(r) : "no reply");
	if (msg)
		snprintf(msg, len, "%s", json_string_value(json_object_get(r, "error")) ?: "");
	json_decref(r);
	if (c >= 0)
		close(c);
}

/* Runs in the delegated cgroup (moved there by the test), then as the user who owns it. */
static int try_escape(void *arg)
{
	struct escape *e = arg;
	struct portres_instance in;
	char req[9000], tok[17];
	int s, fd;

	if (test_user_become(e->u, NULL, 0))
		return 100;
	e->bind_before = ag_bind(IPPROTO_TCP, 5000, NULL);
	s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (portres_acquire(s, &(struct portres_range){ 0, 4 }, &in))
		return 101;
	snprintf(tok, sizeof(tok), "%016llx", (unsigned long long)in.token);
	/* replace the admin's attachment, shadow it at a child, or remove it */
	snprintf(req, sizeof(req), "{\"v\":1,\"op\":\"attach\",\"cgroup\":\"%s\",\"token\":\"%s\"}", e->deleg, tok);
	ask(req, e->attach_deleg, e->attach_msg, sizeof(e->attach_msg));
	if (mkdir(e->child, 0755))
		return 102;
	snprintf(req, sizeof(req), "{\"v\":1,\"op\":\"attach\",\"cgroup\":\"%s\",\"token\":\"%s\"}", e->child, tok);
	ask(req, e->attach_child, NULL, 0);
	snprintf(req, sizeof(req), "{\"v\":1,\"op\":\"detach\",\"cgroup\":\"%s\"}", e->deleg);
	ask(req, e->detach_deleg, NULL, 0);
	/* in the child cgroup, with no attachment of its own: still confined by the admin's */
	snprintf(req, sizeof(req), "%s/cgroup.procs", e->child);
	if ((fd = open(req, O_WRONLY | O_CLOEXEC)) < 0 || write(fd, "0", 1) != 1)
		return 103;
	close(fd);
	e->bind_after = ag_bind(IPPROTO_TCP, 5000, NULL);
	/* its own cgroup that no admin attached: the user may attach and detach its token there */
	snprintf(req, sizeof(req), "{\"v\":1,\"op\":\"attach\",\"cgroup\":\"%s\",\"token\":\"%s\"}", e->other, tok);
	ask(req, e->attach_other, NULL, 0);
	snprintf(req, sizeof(req), "{\"v\":1,\"op\":\"detach\",\"cgroup\":\"%s\"}", e->other);
	ask(req, e->detach_other, NULL, 0);
	close(s);
	return 0;
}

/* Hands a cgroup to u the way a delegation does: the directory and its procs file. */
static void delegate(const char *cg, const struct test_user *u)
{
	char procs[4300];

	snprintf(procs, sizeof(procs), "%s/cgroup.procs", cg);
	cr_assert(chown(cg, u->uid, u->gid) == 0 && chown(procs, u->uid, u->gid) == 0, "chown %s: %s", cg,
		  strerror(errno));
}

Test(security, confine_escape_refused)
{
	struct escape *e = mmap(NULL, sizeof(*e), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	char req[4400], *text;
	struct test_user u;
	json_t *r, *att;

	cr_assert(e != MAP_FAILED);
	memset(e, 0, sizeof(*e));
	test_user_new(&u);
	e->u = &u;
	ag_start(NULL);
	cli_cgroup("deleg", e->deleg, sizeof(e->deleg));
	cli_cgroup("other", e->other, sizeof(e->other));
	snprintf(e->child, sizeof(e->child), "%s/escape", e->deleg);
	delegate(e->deleg, &u);
	delegate(e->other, &u);
	/* the admin confines the delegated cgroup to its block */
	cli_create("tcp", 8000, 10, "web");
	snprintf(req, sizeof(req), "{\"v\":1,\"op\":\"attach\",\"cgroup\":\"%s\",\"name\":\"web\",\"confine\":true}",
		 e->deleg);
	r = ag_req(req, -1);
	cr_assert_str_eq(ag_errno(r), "");
	json_decref(r);

	cr_assert_eq(cli_in_cgroup(e->deleg, try_escape, e), 0);
	cr_assert_eq(e->bind_before, -EACCES, "not confined to begin with");
	cr_assert_str_eq(e->attach_deleg, "EACCES", "the user replaced the admin's attachment");
	cr_assert(strstr(e->attach_msg, e->deleg) && strstr(e->attach_msg, "web"),
		  "the refusal does not name the attachment: %s", e->attach_msg);
	cr_assert_str_eq(e->attach_child, "EACCES", "the user shadowed the admin's attachment below it");
	cr_assert_str_eq(e->detach_deleg, "EACCES", "the user detached the admin's attachment");
	cr_assert_eq(e->bind_after, -EACCES, "the confinement is gone (bind 5000: %d)", e->bind_after);
	cr_assert_str_eq(e->attach_other, "", "a user's own cgroup, not attached by an admin");
	cr_assert_str_eq(e->detach_other, "");
	/* the admin's attachment is where it was: the agent's table and the state file */
	r = ag_req("{\"v\":1,\"op\":\"show\",\"name\":\"web\"}", -1);
	att = json_object_get(json_object_get(r, "reservation"), "attachments");
	cr_assert_eq(json_array_size(att), 1, "%s", json_dumps(r, 0));
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(att, 0), "path")), e->deleg);
	cr_assert(json_is_true(json_object_get(json_array_get(att, 0), "confine")));
	json_decref(r);
	text = ag_db("SELECT path, made_by_admin FROM attachments");
	cr_assert(strstr(text, e->deleg) && strstr(text, "|1"), "the database lost the admin's attachment: %s", text);
	free(text);
}

/* --- a missing state file (issue 8, item 5) -------------------------------- */

/* What SQLite may leave beside a database it had open. */
static void unlink_db_leftovers(void)
{
	char path[400];

	snprintf(path, sizeof(path), "%s/portres.db-wal", ag.state);
	unlink(path);
	snprintf(path, sizeof(path), "%s/portres.db-shm", ag.state);
	unlink(path);
}

Test(security, missing_state_refused_adopt_or_reset)
{
	static const char *const adopt[] = { "--adopt-pins", NULL };
	static const char *const reset[] = { "--reset", NULL };
	char state[400], wrong[400], cg[4200], req[4400], *text;
	portres_token_t t, t2;
	json_t *r, *l, *web;

	snprintf(state, sizeof(state), "%s/portres.db", ag.state);
	snprintf(wrong, sizeof(wrong), "%s/wrong-state", ag.tmp);
	cr_assert_eq(mkdir(wrong, 0700), 0);
	cli_cgroup("svc", cg, sizeof(cg));
	ag_start(NULL);
	r = ag_req("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":8000,\"count\":10,\"name\":\"web\","
		   "\"grants\":[{\"type\":\"uid\",\"id\":1234}]}", -1);
	cr_assert_str_eq(ag_errno(r), "");
	json_decref(r);
	cr_assert_eq(portres_lookup_persistent(IPPROTO_TCP, 8000, 10, &t), 0);
	snprintf(req, sizeof(req), "{\"v\":1,\"op\":\"attach\",\"cgroup\":\"%s\",\"name\":\"web\",\"confine\":true}", cg);
	r = ag_req(req, -1);
	cr_assert_str_eq(ag_errno(r), "");
	json_decref(r);
	ag_stop();

	/* the database is gone, or the agent is pointed at another directory: it refuses, naming both */
	cr_assert_eq(unlink(state), 0);
	unlink_db_leftovers();
	cr_assert_eq(ag_run(NULL), 1, "the agent started without its state file while pins hold reservations");
	cr_assert(ag_log_has(ag.bpffs) && ag_log_has(state), "the refusal does not name the pins and the database");
	cr_assert_eq(ag_run((const char *const[]){ "--state-dir", wrong, NULL }), 1);
	/* nothing was removed: still enforced */
	cr_assert_eq(ag_bind(IPPROTO_TCP, 8005, NULL), -EACCES);
	cr_assert_str_eq(ag_sysctl(), "8000-8009");

	/* --adopt-pins: the state is rebuilt from the maps, same token, grant and attachment */
	ag_start(adopt);
	cr_assert_eq(portres_lookup_persistent(IPPROTO_TCP, 8000, 10, &t2), 0);
	cr_assert_eq(t2, t);
	l = ag_req("{\"v\":1,\"op\":\"list\"}", -1);
	web = json_array_get(json_object_get(l, "reservations"), 0);
	cr_assert_eq(json_integer_value(json_object_get(json_array_get(json_object_get(web, "grants"), 0), "id")), 1234,
		     "%s", json_dumps(l, 0));
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(web, "attachments"), 0),
							   "path")) ?: "", cg, "%s", json_dumps(l, 0));
	json_decref(l);
	text = ag_db("SELECT start FROM reservations; SELECT path FROM attachments");
	cr_assert(strstr(text, "8000") && strstr(text, cg), "database: %s", text);
	free(text);
	cr_assert_eq(ag_bind(IPPROTO_TCP, 8005, NULL), -EACCES);
	ag_stop();
	/* and the next start needs no flag */
	ag_start(NULL);
	cr_assert_eq(portres_lookup_persistent(IPPROTO_TCP, 8000, 10, &t2), 0);
	ag_stop();

	/* --reset: emptied on purpose */
	cr_assert_eq(unlink(state), 0);
	unlink_db_leftovers();
	ag_start(reset);
	errno = 0;
	cr_assert_eq(portres_lookup_persistent(IPPROTO_TCP, 8000, 10, &t2), -1);
	cr_assert_eq(errno, ENOENT);
	cr_assert_eq(ag_bind(IPPROTO_TCP, 8005, NULL), 0);
	cr_assert_str_eq(ag_sysctl(), "");
	cr_assert(ag_log_has("--reset"));
}

/* --- acknowledged vs saved (issue 8, item 7) ------------------------------- */

struct create_result {
	int rc, err;
	portres_token_t token;
};

Test(security, create_retried_after_crash_same_token)
{
	struct create_result cr = { -1, 0, 0 };
	int p[2], status;
	portres_token_t t;
	pid_t pid;
	json_t *l;

	/* the agent kills itself (SIGKILL) once the create is saved, before it replies */
	setenv("PORTRESD_TEST_CRASH_AFTER_SAVE", "create", 1);
	ag_start(NULL);
	unsetenv("PORTRESD_TEST_CRASH_AFTER_SAVE");
	cr_assert_eq(pipe(p), 0);
	fflush(NULL);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		struct create_result res = { 0 };

		res.rc = portres_create_persistent(IPPROTO_TCP, 8000, 10, &res.token);
		res.err = errno;
		_exit(write(p[1], &res, sizeof(res)) == sizeof(res) ? 0 : 1);
	}
	close(p[1]);
	for (int i = 0; i < 1000 && waitpid(ag.pid, &status, WNOHANG) == 0; i++)
		usleep(10000);
	cr_assert(kill(ag.pid, 0) != 0, "the agent did not stop after saving (test hook)");
	ag.pid = 0;
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "agent status %d", status);
	/* the next agent comes up while the caller still waits */
	ag_start(NULL);
	cr_assert_eq(read(p[0], &cr, sizeof(cr)), (ssize_t)sizeof(cr));
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert_eq(cr.rc, 0, "the caller saw %s for a create that was saved", strerror(cr.err));
	cr_assert_eq(portres_lookup_persistent(IPPROTO_TCP, 8000, 10, &t), 0);
	cr_assert_eq(cr.token, t, "the caller got another token than the saved one");
	l = ag_req("{\"v\":1,\"op\":\"list\"}", -1);
	cr_assert_eq(json_array_size(json_object_get(l, "reservations")), 1);
	json_decref(l);
}

#define RID "\"request_id\":\"0123456789abcdef0123456789abcdef\""

static const char create_rid[] = "{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":8000,\"count\":10," RID "}";

/* As an admin-group member: the same request id, the same block. */
static int create_same_id(void *arg)
{
	int c = ag_connect();
	json_t *r = c >= 0 ? ag_raw(c, create_rid, sizeof(create_rid) - 1, -1) : NULL;
	const char *tok = arg;
	char *text = r ? json_dumps(r, 0) : NULL;
	int ret = !r ? 1 : strcmp(ag_errno(r), "EINVAL") ? 2 : strstr(text, tok) ? 3 : 0;

	free(text);
	json_decref(r);
	return ret;
}

Test(security, create_request_id_is_its_senders)
{
	char tok[17], extra_group[64];
	const char *extra[3] = { "--admin-group", extra_group, NULL };
	struct test_user u;
	json_t *r;

	test_user_new(&u);
	snprintf(extra_group, sizeof(extra_group), "%s", u.name); /* the user's own group */
	ag_start(extra);
	r = ag_req(create_rid, -1);
	cr_assert_str_eq(ag_errno(r), "");
	snprintf(tok, sizeof(tok), "%s", json_string_value(json_object_get(r, "token")));
	json_decref(r);
	/* the same request again: the same token, nothing new */
	r = ag_req(create_rid, -1);
	cr_assert_str_eq(ag_errno(r), "", "a retry of a saved create failed");
	cr_assert_str_eq(json_string_value(json_object_get(r, "token")), tok);
	cr_assert(json_is_true(json_object_get(r, "replayed")));
	json_decref(r);
	/* another administrator with that id learns nothing and gets nothing */
	cr_assert_eq(ag_as_user(&u, create_same_id, tok, NULL, 0), 0, "another uid's replay was not refused, or named the token");
	/* the id with another block: refused */
	r = ag_req("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":9000,\"count\":10," RID "}", -1);
	cr_assert_str_eq(ag_errno(r), "EINVAL");
	json_decref(r);
	r = ag_req("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":9000,\"count\":10,\"request_id\":\"short\"}", -1);
	cr_assert_str_eq(ag_errno(r), "EINVAL");
	json_decref(r);
	/* kept across a restart (in the state file), gone with the reservation */
	ag_stop();
	ag_start(extra);
	r = ag_req(create_rid, -1);
	cr_assert_str_eq(json_string_value(json_object_get(r, "token")) ?: "", tok);
	json_decref(r);
	cr_assert_eq(portres_delete_persistent(IPPROTO_TCP, 8000, 10), 0);
	r = ag_req(create_rid, -1);
	cr_assert_str_eq(ag_errno(r), "");
	cr_assert_str_neq(json_string_value(json_object_get(r, "token")), tok);
	cr_assert(!json_object_get(r, "replayed"));
	json_decref(r);
}

/* --- the documentation ----------------------------------------------------- */

Test(security, flags_and_model_documented)
{
	static const char *const flags[] = { "--user-ports", "--max-clients", "--max-clients-per-uid",
					     "--stall-timeout", "--adopt-pins", "--reset" };
	static const char *const man[] = { "\\-\\-user\\-ports", "\\-\\-max\\-clients", "\\-\\-max\\-clients\\-per\\-uid",
					   "\\-\\-stall\\-timeout", "\\-\\-adopt\\-pins", "\\-\\-reset" };
	char *help = cli_agent_help(), *page, *readme, *agent;

	page = cli_read("scripts/man/portresd.8");
	readme = cli_read("README.md");
	agent = cli_read("user/portresd/README.md");
	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		cr_assert(strstr(help, flags[i]), "portresd --help lacks %s", flags[i]);
		cr_assert(strstr(page, man[i]), "portresd(8) lacks %s", flags[i]);
		cr_assert(strstr(readme, flags[i]), "README.md lacks %s", flags[i]);
		cr_assert(strstr(agent, flags[i]), "user/portresd/README.md lacks %s", flags[i]);
	}
	cr_assert(strstr(agent, "## Security model"));
	free(help);
	free(page);
	free(readme);
	free(agent);
}
