// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_lifetime.c - a runtime reservation ends when its socket closes, its
 * process exits or is killed, or on release; its block and sysctl entries
 * are free again afterwards, also when the release ring overflowed.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"

TestSuite(lifetime, .init = ag_setup, .fini = ag_teardown, .timeout = 60);

static bool sysctl_has(uint16_t port)
{
	char needle[16];
	const char *s = ag_sysctl();

	/* blocks chosen by the agent are above 60999 here: a plain search is exact enough */
	snprintf(needle, sizeof(needle), "%u", port);
	return strstr(s, needle) != NULL;
}

/* The block is reserved: foreign binds denied, sysctl holds it. */
static void assert_held(const struct portres_instance *in)
{
	cr_assert_eq(ag_bind(IPPROTO_TCP, in->range.start, NULL), -EACCES, "foreign bind into a live block");
	cr_assert(sysctl_has(in->range.start), "sysctl %s lacks %u", ag_sysctl(), in->range.start);
}

static void assert_freed(const struct portres_instance *in)
{
	cr_assert(ag_wait_gone(in->token), "reservation still listed");
	cr_assert_eq(ag_bind(IPPROTO_TCP, in->range.start, NULL), 0, "block not free after the end");
	cr_assert_not(sysctl_has(in->range.start), "sysctl %s still has %u", ag_sysctl(), in->range.start);
}

Test(lifetime, close_ends_it)
{
	struct portres_instance in;
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ag_start(NULL);
	cr_assert_eq(portres_acquire(s, &(struct portres_range){ 0, 4 }, &in), 0, "%s", strerror(errno));
	assert_held(&in);
	close(s);
	assert_freed(&in);
	cr_assert(ag_log_has("socket closed"));
}

Test(lifetime, release_ends_it)
{
	struct portres_instance in;
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ag_start(NULL);
	cr_assert_eq(portres_acquire(s, &(struct portres_range){ 62000, 4 }, &in), 0, "%s", strerror(errno));
	cr_assert_eq(in.range.start, 62000);
	assert_held(&in);
	cr_assert_eq(portres_release(s, in.token), 0);
	cr_assert_not(ag_has_token(in.token));
	assert_freed(&in);
	/* the same block can be acquired again */
	cr_assert_eq(portres_acquire(s, &(struct portres_range){ 62000, 4 }, &in), 0, "%s", strerror(errno));
	close(s);
}

/* A child acquires, reports the reservation through a pipe, then ends as told. */
static pid_t child_acquire(struct portres_instance *in, int how)
{
	int p[2];
	pid_t pid;

	cr_assert_eq(pipe(p), 0);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		struct portres_instance got = { 0 };
		int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

		close(p[0]);
		if (portres_acquire(s, &(struct portres_range){ 0, 4 }, &got))
			_exit(1);
		if (write(p[1], &got, sizeof(got)) != sizeof(got))
			_exit(2);
		if (how == 0)
			_exit(0); /* exit: the kernel closes the socket */
		pause();      /* wait for kill -9 */
		_exit(3);
	}
	close(p[1]);
	cr_assert_eq(read(p[0], in, sizeof(*in)), (ssize_t)sizeof(*in), "child did not acquire");
	close(p[0]);
	return pid;
}

Test(lifetime, exit_ends_it)
{
	struct portres_instance in;
	pid_t pid;

	ag_start(NULL);
	pid = child_acquire(&in, 0);
	cr_assert_eq(waitpid(pid, NULL, 0), pid);
	assert_freed(&in);
}

Test(lifetime, kill9_ends_it)
{
	struct portres_instance in;
	pid_t pid;

	ag_start(NULL);
	pid = child_acquire(&in, 1);
	assert_held(&in);
	kill(pid, SIGKILL);
	cr_assert_eq(waitpid(pid, NULL, 0), pid);
	assert_freed(&in);
}

Test(lifetime, wildcard_blocks_do_not_overlap)
{
	struct portres_instance in[8];
	int s[8];

	ag_start(NULL);
	for (int i = 0; i < 8; i++) {
		s[i] = socket(AF_INET, (i % 2 ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
		cr_assert_eq(portres_acquire(s[i], &(struct portres_range){ 0, 100 }, &in[i]), 0);
		/* outside the ephemeral range (32768-60999 by default) */
		cr_assert(in[i].range.start > 60999 || in[i].range.start + 100 <= 32768, "start %u", in[i].range.start);
		for (int j = 0; j < i; j++)
			if (j % 2 == i % 2)
				cr_assert(in[i].range.start >= in[j].range.start + 100 ||
					  in[j].range.start >= in[i].range.start + 100, "blocks %d and %d overlap", i, j);
	}
	for (int i = 0; i < 8; i++)
		close(s[i]);
}

/*
 * A socket of another network namespace: the reservation lives there, its
 * ports go into that namespace's ip_local_reserved_ports (the agent enters it
 * through the socket, SIOCGSKNS), and leave it when the socket closes.
 */
static int acquire_in_new_netns(void *arg)
{
	struct portres_instance in;
	char before[256], during[256];
	int s, c;

	if (unshare(CLONE_NEWNET))
		return 10;
	snprintf(before, sizeof(before), "%s", ag_sysctl());
	s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (portres_acquire(s, &(struct portres_range){ 0, 4 }, &in))
		return 11;
	snprintf(during, sizeof(during), "%s", ag_sysctl());
	if (!strstr(during, "-") || !strcmp(before, during))
		return 12;
	close(s);
	for (c = 0; c < 500 && strcmp(ag_sysctl(), before); c++)
		usleep(10000);
	return strcmp(ag_sysctl(), before) ? 13 : 0;
}

Test(lifetime, socket_of_another_netns)
{
	ag_start(NULL);
	cr_assert_eq(ag_in_child(acquire_in_new_netns, NULL), 0);
	cr_assert_str_eq(ag_sysctl(), "", "the agent's own netns was changed: %s", ag_sysctl());
	cr_assert(ag_log_has("socket closed"));
}

/*
 * Releases lost to a full ring (issue "Hardening", item 2, in the agent):
 * anchors close while the agent is stopped, more than the release ring
 * holds (64 KiB, ~680 events). Once it runs again it reads what the ring
 * kept, sees the data plane counted more closes, and its sweep ends the
 * rest: every reservation goes, and the log says some were found so.
 */
#define LOST_ANCHORS 1000

Test(lifetime, releases_beyond_the_ring_found_by_the_sweep)
{
	static int fds[LOST_ANCHORS];
	static struct portres_instance in[LOST_ANCHORS];
	struct rlimit rl = { LOST_ANCHORS + 256, LOST_ANCHORS + 256 };
	json_t *r;
	int left = -1;

	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0, "%s", strerror(errno));
	ag_start(NULL);
	for (int i = 0; i < LOST_ANCHORS; i++) {
		fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		cr_assert(fds[i] >= 0);
		cr_assert_eq(portres_acquire(fds[i], &(struct portres_range){ 0, 1 }, &in[i]), 0, "acquire %d: %s", i,
			     strerror(errno));
	}
	cr_assert_eq(kill(ag.pid, SIGSTOP), 0);
	for (int i = 0; i < LOST_ANCHORS; i++)
		close(fds[i]);
	cr_assert_eq(kill(ag.pid, SIGCONT), 0);
	/* every one ends: by its event, or by the sweep */
	for (int t = 0; t < 500 && left; t++) {
		r = ag_req("{\"v\":1,\"op\":\"status\"}", -1);
		left = (int)json_integer_value(json_object_get(json_object_get(r, "reservations"), "runtime"));
		json_decref(r);
		if (left)
			usleep(10000);
	}
	cr_assert_eq(left, 0, "%d runtime reservations outlived their anchors", left);
	cr_expect(!ag_has_token(in[LOST_ANCHORS - 1].token));
	cr_expect(ag_log_has("found by the sweep"), "no reservation was ended by the sweep: did the ring not overflow?");
}
