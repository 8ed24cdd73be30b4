// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_stop.c - SIGTERM stops the agent: the loop, asleep in epoll_wait, is
 * woken by its signalfd (not killed by the signal's default action), closes
 * its clients, removes its socket and exits 0, leaving enforcement in place;
 * a detached agent (no --foreground) too, once its reaper reaps it.
 *
 * The time is not measured (no timed assertions); the bound on the wait
 * (STOP_BOUND_MS) is only there to fail rather than hang.
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
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"

#define STOP_BOUND_MS 5000

TestSuite(stop, .init = ag_setup, .fini = ag_teardown, .timeout = 60);

/* Whether pid sleeps in epoll_wait (/proc/PID/syscall: the number of the call it is blocked in). */
static bool in_epoll_wait(pid_t pid)
{
	char path[64], line[256];
	long nr = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/syscall", (int)pid);
	if (!(f = fopen(path, "re")))
		return false;
	if (fgets(line, sizeof(line), f))
		nr = strtol(line, NULL, 10);
	fclose(f);
#ifdef SYS_epoll_wait
	if (nr == SYS_epoll_wait)
		return true;
#endif
#ifdef SYS_epoll_pwait2
	if (nr == SYS_epoll_pwait2)
		return true;
#endif
	return nr == SYS_epoll_pwait;
}

/* waitpid within STOP_BOUND_MS; the status, or -1 (then the process is killed). */
static int wait_bounded(pid_t pid)
{
	int status;

	for (int ms = 0; ms < STOP_BOUND_MS; ms += 10) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			return status;
		if (r < 0)
			return -1;
		usleep(10000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return -1;
}

Test(stop, sigterm_wakes_the_loop_and_it_exits_cleanly)
{
	static const char events[] = "{\"v\":1,\"op\":\"events\"}";
	json_t *r;
	struct stat sb;
	char buf[4096], token[17];
	int sub, idle, status;
	pid_t pid;

	ag_start(NULL);
	r = ag_req("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":8000,\"count\":10}", -1);
	cr_assert_str_eq(ag_errno(r), "");
	snprintf(token, sizeof(token), "%s", json_string_value(json_object_get(r, "token")));
	json_decref(r);
	/* a subscriber and an idle client: their connections end with the agent */
	sub = ag_connect();
	cr_assert(sub >= 0);
	r = ag_raw(sub, events, strlen(events), -1);
	cr_assert_str_eq(ag_errno(r), "");
	json_decref(r);
	idle = ag_connect();
	cr_assert(idle >= 0);
	/* the agent asleep in its loop: only a wake-up can make it see the signal */
	for (int i = 0; i < 500 && !in_epoll_wait(ag.pid); i++)
		usleep(10000);
	cr_assert(in_epoll_wait(ag.pid), "the agent is not waiting in epoll_wait");
	pid = ag.pid;
	cr_assert_eq(kill(pid, SIGTERM), 0);
	status = wait_bounded(pid);
	ag.pid = 0;
	cr_assert_neq(status, -1, "the agent still ran %d ms after SIGTERM", STOP_BOUND_MS);
	/* exit 0 after the loop's stop: the signalfd was read, the default action (death by signal) did not run */
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %#x", status);
	cr_assert(ag_log_has("stop: signal 15: stopping, enforcement stays in place"));
	cr_assert(stat(ag.sock, &sb) && errno == ENOENT, "the socket file is left");
	/* the clients see the end of their connections (the subscriber's event replies drained first) */
	while (recv(sub, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
	cr_assert_eq(recv(sub, buf, sizeof(buf), 0), 0, "the subscriber's connection was not closed");
	cr_assert_eq(recv(idle, buf, sizeof(buf), 0), 0, "the idle client's connection was not closed");
	close(sub);
	close(idle);
	/* enforcement stays: the block is in the pinned map, its port refused */
	cr_assert(ag_in_resv_map(token));
	cr_assert_eq(ag_bind(IPPROTO_TCP, 8005, NULL), -EACCES);
}

/*
 * The daemon's pid, from its "ready" log line (in the pid namespace it runs
 * in); 0 if none within 5 s. The socket may answer a moment before the line
 * is written.
 */
static pid_t daemon_pid(void)
{
	char line[1024], *p;
	int pid = 0, tries;

	for (tries = 0; !pid && tries < 500; tries++) {
		FILE *f = fopen(ag.log, "re");

		while (f && fgets(line, sizeof(line), f))
			if ((p = strstr(line, "ready: serving ")) && (p = strstr(p, "(pid ")))
				pid = atoi(p + 5);
		if (f)
			fclose(f);
		if (!pid)
			usleep(10000);
	}
	return pid;
}

/*
 * pid 1 of a pid namespace of its own: the detached agent is reparented to
 * it, so it can wait for it; and if the test dies, the namespace and the
 * agent with it are killed by the kernel.
 */
static int detached_init(void *arg)
{
	pid_t pid;
	int status;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	/* the first agent process exits 0 once the socket answers; the daemon goes on */
	if (ag_run(NULL) != 0)
		return 10;
	if ((pid = daemon_pid()) <= 1)
		return 11;
	if (kill(pid, SIGTERM))
		return 12;
	status = wait_bounded(pid);
	if (status == -1)
		return 13;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 14;
}

static int in_new_pid_ns(void *arg)
{
	pid_t init;
	int status;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (unshare(CLONE_NEWPID))
		return 20;
	if ((init = fork()) < 0)
		return 21;
	if (init == 0)
		_exit(detached_init(arg));
	if (waitpid(init, &status, 0) != init)
		return 22;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 23;
}

Test(stop, detached_agent_exits_on_sigterm)
{
	struct stat sb;
	int code;

	ag.detach = true;
	code = ag_in_child(in_new_pid_ns, NULL);
	cr_assert_eq(code, 0, "code %d (see detached_init); log %s", code, ag.log);
	cr_assert(ag_log_has("stop: signal 15: stopping, enforcement stays in place"));
	cr_assert(stat(ag.sock, &sb) && errno == ENOENT, "the socket file is left");
}
