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
