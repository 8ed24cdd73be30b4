// SPDX-License-Identifier: LGPL-2.1-or-later
/* users.c - real users for tests (see users.h). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "users.h"

#define MAX_USERS 8

static char users[MAX_USERS][40];
static int n_users, user_seq;

/* Runs a system tool (useradd, userdel, groupdel) quietly; its exit status. */
static int run_tool(const char *tool, const char *const *args)
{
	const char *argv[16] = { tool };
	char path[64];
	pid_t pid;
	int status;

	for (size_t i = 0; args[i] && i < 14; i++)
		argv[i + 1] = args[i];
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY | O_CLOEXEC);

		if (null >= 0) {
			dup2(null, STDOUT_FILENO);
			dup2(null, STDERR_FILENO);
		}
		snprintf(path, sizeof(path), "/usr/sbin/%s", tool);
		execv(path, (char *const *)argv);
		snprintf(path, sizeof(path), "/sbin/%s", tool);
		execv(path, (char *const *)argv);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) != pid)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Kills every process of uid (all made by the test that made the user) and waits until they are gone. */
static void kill_user_procs(uid_t uid)
{
	for (int round = 0; round < 100; round++) {
		DIR *d = opendir("/proc");
		struct dirent *e;
		bool any = false;

		while (d && (e = readdir(d))) {
			char path[300], line[256];
			unsigned int real = 0;
			FILE *f;
			int pid = atoi(e->d_name);

			if (pid <= 0)
				continue;
			snprintf(path, sizeof(path), "/proc/%d/status", pid);
			if (!(f = fopen(path, "re")))
				continue;
			while (fgets(line, sizeof(line), f)) {
				if (!strncmp(line, "State:\tZ", 8))
					break; /* a zombie: gone but for its parent's wait */
				if (sscanf(line, "Uid: %u", &real) == 1)
					break;
			}
			fclose(f);
			if (real == uid && kill(pid, SIGKILL) == 0)
				any = true;
		}
		if (d)
			closedir(d);
		if (!any)
			return;
		usleep(20000);
	}
}

/* userdel, retried: /etc/passwd may be locked by a test running beside this one. */
static bool user_del(const char *name)
{
	struct passwd *pw = getpwnam(name);

	if (pw && pw->pw_uid != 0)
		kill_user_procs(pw->pw_uid);
	for (int i = 0; i < 200; i++) {
		int st = run_tool("userdel", (const char *const[]){ name, NULL });

		if (st == 0 || st == 6 /* no such user */) {
			/* the user's own group goes with it; one left by an interrupted userdel too */
			run_tool("groupdel", (const char *const[]){ name, NULL });
			return true;
		}
		usleep(25000);
	}
	fprintf(stderr, "tests: userdel %s failed\n", name);
	return false;
}

void test_users_sweep(void)
{
	static const char *const files[] = { "/etc/passwd", "/etc/group" };
	char line[1024], name[64];
	int pid, n;

	n_users = 0;
	for (size_t f = 0; f < 2; f++) {
		FILE *fp = fopen(files[f], "re");

		while (fp && fgets(line, sizeof(line), fp)) {
			if (sscanf(line, "portres-user-%d-%d:", &pid, &n) != 2 || kill(pid, 0) == 0 || errno != ESRCH)
				continue;
			snprintf(name, sizeof(name), "portres-user-%d-%d", pid, n);
			fclose(fp);
			fp = NULL;
			user_del(name);
			fp = fopen(files[f], "re"); /* the file changed: read it again */
		}
		if (fp)
			fclose(fp);
	}
}

void test_user_new(struct test_user *u)
{
	struct passwd *pw;
	int st = -1;

	cr_assert(n_users < MAX_USERS, "at most %d users per test", MAX_USERS);
	memset(u, 0, sizeof(*u));
	for (int i = 0; i < 200 && st; i++) {
		snprintf(u->name, sizeof(u->name), "portres-user-%d-%d", (int)getpid(), user_seq);
		st = run_tool("useradd", (const char *const[]){ "--no-create-home", "--user-group", "--shell",
								"/usr/sbin/nologin", u->name, NULL });
		if (st == 9) /* the name is taken (a crashed run of a pid like ours): next one */
			user_seq++;
		else if (st)
			usleep(25000); /* /etc/passwd locked by a test running beside this one */
	}
	cr_assert_eq(st, 0, "useradd %s: exit %d", u->name, st);
	snprintf(users[n_users++], sizeof(users[0]), "%s", u->name);
	user_seq++;
	pw = getpwnam(u->name);
	cr_assert(pw, "getpwnam %s after useradd", u->name);
	u->uid = pw->pw_uid;
	u->gid = pw->pw_gid;
	cr_assert(u->uid != 0 && u->gid != 0);
}

void test_users_remove(void)
{
	while (n_users > 0)
		user_del(users[--n_users]);
}

int test_user_become(const struct test_user *u, const gid_t *groups, int ngroups)
{
	gid_t all[17] = { u->gid };

	for (int i = 0; i < ngroups && i < 16; i++)
		all[i + 1] = groups[i];
	if (setgroups((size_t)(ngroups < 16 ? ngroups : 16) + 1, all) || setgid(u->gid) || setuid(u->uid))
		return -1;
	return 0;
}
