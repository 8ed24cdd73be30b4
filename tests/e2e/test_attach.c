// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_attach.c - attach means what it says: a cgroup holds one TCP and one
 * UDP block; --confine covers the protocols it has blocks for, --confine=all
 * every protocol; replacing a block needs --force and says what it replaced;
 * a block of another netns than the cgroup's processes is refused naming
 * both; every deny event and log line says why (foreign-block, confined,
 * wrong-netns, gone).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_helpers.h"

TestSuite(attach, .init = cli_setup, .fini = cli_teardown, .timeout = 120);

static void ctl_ok(const char *a1, const char *a2, const char *a3, const char *a4, const char *a5, const char *a6,
		   const char *a7)
{
	struct cli_result r = cli_ctl(a1, a2, a3, a4, a5, a6, a7, NULL);

	CLI_ASSERT_STATUS(r, 0);
	cli_result_free(&r);
}

struct bind_arg {
	int proto;
	uint16_t port;
	uint16_t got;
};

/* Binds [::]:port of proto in the calling process: 0 and the port, or errno. */
static int bind_port(struct bind_arg *b)
{
	struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_port = htons(b->port) };
	socklen_t len = sizeof(sa);
	int s = socket(AF_INET6, b->proto == IPPROTO_TCP ? SOCK_STREAM : SOCK_DGRAM, 0);

	if (s < 0)
		return 100;
	if (bind(s, (struct sockaddr *)&sa, sizeof(sa)))
		return errno;
	getsockname(s, (struct sockaddr *)&sa, &len);
	b->got = ntohs(sa.sin6_port);
	return 0;
}

/* In the cgroup: binds port (0: any) and exits 0 if the port it got is in [lo, hi], 99 if not, else errno. */
struct in_block {
	int proto;
	uint16_t port, lo, hi;
};

static int bind_in_block(void *p)
{
	struct in_block *ib = p;
	struct bind_arg b = { ib->proto, ib->port, 0 };
	int e = bind_port(&b);

	if (e)
		return e;
	return b.got >= ib->lo && b.got <= ib->hi ? 0 : 99;
}

static int in_cg(const char *cg, int proto, uint16_t port, uint16_t lo, uint16_t hi)
{
	struct in_block ib = { proto, port, lo, hi };

	return cli_in_cgroup(cg, bind_in_block, &ib);
}

/* The agent's recent events of type deny with this reason and port. */
static bool has_deny(const char *reason, unsigned port)
{
	for (int i = 0; i < 500; i++) {
		json_t *r = ag_req("{\"v\":1,\"op\":\"events\"}", -1), *e;
		bool found = false;
		size_t k;

		json_array_foreach(json_object_get(r, "recent"), k, e)
			found |= !strcmp(json_string_value(json_object_get(e, "type")) ?: "", "deny") &&
				 !strcmp(json_string_value(json_object_get(e, "reason")) ?: "", reason) &&
				 json_integer_value(json_object_get(e, "port")) == port;
		json_decref(r);
		if (found)
			return true;
		usleep(10000);
	}
	return false;
}

Test(attach, one_tcp_and_one_udp_block)
{
	char cg[4096];

	cli_create("tcp", 30000, 4, "web");
	cli_create("udp", 30100, 4, "dns");
	cli_cgroup("app", cg, sizeof(cg));
	ctl_ok("attach", "--cgroup", cg, "--name", "web", NULL, NULL);
	ctl_ok("attach", "--cgroup", cg, "--name", "dns", NULL, NULL);
	cr_assert_eq(in_cg(cg, IPPROTO_TCP, 0, 30000, 30003), 0, "TCP bind(0) not from web");
	cr_assert_eq(in_cg(cg, IPPROTO_UDP, 0, 30100, 30103), 0, "UDP bind(0) not from dns");
	/* not confined: other ports are free */
	cr_assert_eq(in_cg(cg, IPPROTO_TCP, 31000, 31000, 31000), 0);
	/* a bind into the block from outside */
	cr_assert_eq(ag_bind(IPPROTO_TCP, 30001, NULL), -EACCES);
	cr_assert(has_deny("foreign-block", 30001));
	cr_assert(ag_log_has("reason foreign-block"));
	/* detach one block: the other stays */
	ctl_ok("detach", "--cgroup", cg, "--name", "web", NULL, NULL);
	cr_assert_eq(in_cg(cg, IPPROTO_UDP, 0, 30100, 30103), 0, "UDP block lost with the TCP one");
	cr_assert_neq(in_cg(cg, IPPROTO_TCP, 0, 30000, 30003), 0, "TCP still associated after its detach");
}

Test(attach, confine_covers_the_protocols_with_a_block)
{
	char cg[4096];

	cli_create("tcp", 30200, 4, "web");
	cli_cgroup("app", cg, sizeof(cg));
	ctl_ok("attach", "--cgroup", cg, "--name", "web", "--confine", NULL);
	cr_assert_eq(in_cg(cg, IPPROTO_TCP, 31200, 0, 65535), EACCES, "TCP outside the block");
	cr_assert(has_deny("confined", 31200));
	cr_assert(ag_log_has("reason confined"));
	/* UDP has no block: free */
	cr_assert_eq(in_cg(cg, IPPROTO_UDP, 31201, 0, 65535), 0, "UDP confined without a UDP block");
	/* --confine=all: UDP too */
	ctl_ok("attach", "--cgroup", cg, "--name", "web", "--confine=all", NULL);
	cr_assert_eq(in_cg(cg, IPPROTO_UDP, 31202, 0, 65535), EACCES, "UDP free with --confine=all");
	cr_assert_eq(in_cg(cg, IPPROTO_TCP, 0, 30200, 30203), 0);
}

Test(attach, replacing_needs_force)
{
	struct cli_result r;
	char cg[4096], line[4400];
	json_t *l;

	cli_create("tcp", 30300, 4, "a");
	cli_create("tcp", 30400, 4, "b");
	cli_cgroup("app", cg, sizeof(cg));
	ctl_ok("attach", "--cgroup", cg, "--name", "a", NULL, NULL);
	r = cli_ctl("attach", "--cgroup", cg, "--name", "b", NULL);
	CLI_ASSERT_STATUS(r, 1);
	cr_assert(strstr(r.err, "tcp 30300-30303") && strstr(r.err, "--force"), "%s", r.err);
	cli_result_free(&r);
	cr_assert_eq(in_cg(cg, IPPROTO_TCP, 0, 30300, 30303), 0, "the refused attach changed the cgroup");
	/* the same block again is fine */
	ctl_ok("attach", "--cgroup", cg, "--name", "a", NULL, NULL);
	r = cli_ctl("attach", "--cgroup", cg, "--name", "b", "--force", NULL);
	CLI_ASSERT_STATUS(r, 0);
	cr_assert(strstr(r.out, "replaced tcp 30300-30303 (a"), "%s", r.out);
	cli_result_free(&r);
	cr_assert_eq(in_cg(cg, IPPROTO_TCP, 0, 30400, 30403), 0);
	/* the log line names each token once: the new block's, then the one it replaced */
	l = ag_req("{\"v\":1,\"op\":\"list\"}", -1);
	snprintf(line, sizeof(line), "cgroup %s -> token %s (replacing tcp 30300-30303 (a, token %s)) by uid 0", cg,
		 json_string_value(json_object_get(ag_named(l, "b"), "token")),
		 json_string_value(json_object_get(ag_named(l, "a"), "token")));
	json_decref(l);
	cr_assert(ag_log_has(line), "no log line %s", line);
}

/* A child that sits in a network namespace of its own (once this returns); the caller kills it. */
static pid_t child_in_new_netns(void)
{
	int p[2];
	pid_t pid;
	char c;

	cr_assert(pipe(p) == 0);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		if (unshare(CLONE_NEWNET) || write(p[1], "x", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	ag_track_child(pid);
	close(p[1]);
	cr_assert_eq(read(p[0], &c, 1), 1);
	close(p[0]);
	return pid;
}

/* A child in another netns, moved into cg; killed at the end. */
static pid_t sleeper_in_netns(const char *cg)
{
	char procs[4200], pid_s[16];
	pid_t pid = child_in_new_netns();
	int fd;

	snprintf(procs, sizeof(procs), "%s/cgroup.procs", cg);
	snprintf(pid_s, sizeof(pid_s), "%d", (int)pid);
	fd = open(procs, O_WRONLY | O_CLOEXEC);
	cr_assert(fd >= 0 && write(fd, pid_s, strlen(pid_s)) > 0);
	close(fd);
	return pid;
}

Test(attach, a_block_of_another_netns_is_refused)
{
	struct cli_result r;
	char cg[4096];
	pid_t pid;

	cli_create("tcp", 30500, 4, "web");
	cli_cgroup("pod", cg, sizeof(cg));
	pid = sleeper_in_netns(cg);
	r = cli_ctl("attach", "--cgroup", cg, "--name", "web", NULL);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	CLI_ASSERT_STATUS(r, 1);
	cr_assert(strstr(r.err, "lives in network namespace net:[") && strstr(r.err, "the block tcp 30500-30503"),
		  "%s", r.err);
	cli_result_free(&r);
}

Test(attach, wrong_netns_and_gone_reasons)
{
	char cg[4096], cg2[4096];
	json_t *x;
	int fd, p[2], q[2], st;
	pid_t pid;
	char c;

	/* a block in another netns, the cgroup (empty at attach time) later gets a process of this one */
	pid = child_in_new_netns();
	{
		char spec[32];
		struct cli_result r;

		snprintf(spec, sizeof(spec), "pid:%d", (int)pid);
		r = cli_ctl("create", "--netns", spec, "--proto", "tcp", "--start", "30600", "--count", "4", "--name",
			    "elsewhere", NULL);
		CLI_ASSERT_STATUS(r, 0);
		cli_result_free(&r);
	}
	cli_cgroup("wrong", cg, sizeof(cg));
	ctl_ok("attach", "--cgroup", cg, "--name", "elsewhere", "--confine", NULL);
	cr_assert_eq(in_cg(cg, IPPROTO_TCP, 31600, 0, 65535), EACCES);
	cr_assert(has_deny("wrong-netns", 31600));
	cr_assert(ag_log_has("reason wrong-netns"));
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);

	/* a socket made while its block lived, bound after it was deleted */
	cli_create("tcp", 30700, 4, "short");
	cli_cgroup("gone", cg2, sizeof(cg2));
	ctl_ok("attach", "--cgroup", cg2, "--name", "short", "--confine", NULL);
	cr_assert(pipe(p) == 0 && pipe(q) == 0);
	pid = fork();
	cr_assert(pid >= 0);
	ag_track_child(pid);
	if (pid == 0) {
		char procs[4200];
		struct bind_arg b = { IPPROTO_TCP, 31700, 0 };
		int s;

		snprintf(procs, sizeof(procs), "%s/cgroup.procs", cg2);
		fd = open(procs, O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write(fd, "0", 1) != 1)
			_exit(125);
		s = socket(AF_INET6, SOCK_STREAM, 0);
		if (s < 0 || write(p[1], "x", 1) != 1 || read(q[0], &c, 1) != 1)
			_exit(126);
		{
			struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_port = htons(b.port) };

			_exit(bind(s, (struct sockaddr *)&sa, sizeof(sa)) ? errno : 0);
		}
	}
	cr_assert_eq(read(p[0], &c, 1), 1);
	ctl_ok("delete", "--name", "short", "--force", NULL, NULL, NULL);
	cr_assert_eq(write(q[1], "x", 1), 1);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == EACCES, "status %d", st);
	cr_assert(has_deny("gone", 31700));
	/* and the bind's local address */
	x = ag_req("{\"v\":1,\"op\":\"events\"}", -1);
	{
		char *text = json_dumps(x, JSON_COMPACT);

		cr_assert(strstr(text, "\"addr\":\"::\""), "no local address in the events: %s", text);
		free(text);
	}
	json_decref(x);
}
