// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_security.c - what an unprivileged user can and cannot make the agent
 * do (issue 8), each case run as a real user the test creates (ag_user_new)
 * and removes; and a second agent on the same socket touches nothing
 * (issue 11, item 12).
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

Test(security, second_agent_touches_nothing)
{
	char before[2048], after[2048], state[400], *text_before, *text_after;
	struct stat sb_before, sb_after;
	portres_token_t t;
	json_t *r;

	ag_start(NULL);
	cr_assert_eq(portres_create_persistent(IPPROTO_TCP, 8000, 10, &t), 0, "%s", strerror(errno));
	link_progs(before, sizeof(before));
	snprintf(state, sizeof(state), "%s/state.json", ag.state);
	text_before = cli_read(state);
	cr_assert_eq(stat(state, &sb_before), 0);

	cr_assert_neq(ag_run(NULL), 0, "a second agent on the same socket started");
	cr_assert(ag_log_has("another portresd answers"));
	/* it found the other agent before loading anything */
	cr_assert(!ag_log_has("adopted programs"), "the second agent adopted the pins before it checked the socket");
	link_progs(after, sizeof(after));
	cr_assert_str_eq(after, before, "the pinned links were re-pointed");
	text_after = cli_read(state);
	cr_assert_eq(stat(state, &sb_after), 0);
	cr_assert_str_eq(text_after, text_before);
	cr_assert(sb_after.st_mtim.tv_sec == sb_before.st_mtim.tv_sec &&
		  sb_after.st_mtim.tv_nsec == sb_before.st_mtim.tv_nsec, "the state file was rewritten");
	/* the first agent serves on, enforcement as it was */
	r = ag_req("{\"v\":1,\"op\":\"status\"}", -1);
	cr_assert_str_eq(ag_errno(r), "");
	cr_assert_eq(json_integer_value(json_object_get(r, "pid")), ag.pid);
	json_decref(r);
	cr_assert_eq(ag_bind(IPPROTO_TCP, 8005, NULL), -EACCES);
	free(text_before);
	free(text_after);
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
