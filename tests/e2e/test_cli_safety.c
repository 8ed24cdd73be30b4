// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_cli_safety.c - changes that could cut the ground from under running
 * programs, and errors that say what to do:
 *
 *   delete and apply --prune refuse blocks with bound sockets or attached
 *   cgroups unless --force, naming each holder once (pid, command, address);
 *   --dry-run says the same; prune leaves portresctl run's cgroups alone;
 *   portres_delete_persistent (the library) deletes anyway, as Windows does;
 *   a non-root run that cannot make its cgroup says how, before acquiring.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_helpers.h"

TestSuite(cli_safety, .init = cli_setup, .fini = cli_teardown, .timeout = 120);

#define ASSERT_HAS(text, needle) cr_assert(strstr((text), (needle)), "lacks \"%s\": %s", (needle), (text))
#define ASSERT_LACKS(text, needle) cr_assert(!strstr((text), (needle)), "has \"%s\": %s", (needle), (text))

/* A listening socket of family on addr:port, associated with token (root may). */
static int hold(const char *token, int family, const char *addr, uint16_t port)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	cr_assert(fd >= 0);
	cr_assert_eq(portres_associate(fd, strtoull(token, NULL, 16)), 0, "associate: %s", strerror(errno));
	if (family == AF_INET6) {
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		inet_pton(AF_INET6, addr, &in6->sin6_addr);
	} else {
		in4->sin_family = AF_INET;
		in4->sin_port = htons(port);
		inet_pton(AF_INET, addr, &in4->sin_addr);
	}
	cr_assert_eq(bind(fd, (struct sockaddr *)&ss, sizeof(ss)), 0, "bind %s %u: %s", addr, port, strerror(errno));
	cr_assert_eq(listen(fd, 8), 0);
	return fd;
}

static size_t occurrences(const char *text, const char *needle)
{
	size_t n = 0;

	for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

static bool listed(const char *name)
{
	json_t *l = cli_list();
	bool found = ag_named(l, name) != NULL;

	json_decref(l);
	return found;
}

Test(cli_safety, delete_refuses_holders_one_line_each)
{
	char token[17], mine[64], child_line[64];
	struct cli_result r;
	int v4, v6, pipefd[2];
	pid_t child;
	char c;

	snprintf(token, sizeof(token), "%s", cli_create("tcp", 36000, 10, "web"));
	/* like redis: one process, the port on 0.0.0.0 and on :: */
	v4 = hold(token, AF_INET, "0.0.0.0", 36005);
	v6 = hold(token, AF_INET6, "::", 36005);
	/* like nginx's workers: a child shares the sockets */
	cr_assert_eq(pipe(pipefd), 0);
	child = fork();
	cr_assert(child >= 0);
	if (child == 0) {
		close(pipefd[1]);
		if (read(pipefd[0], &c, 1) < 0)
			_exit(1);
		_exit(0);
	}
	close(pipefd[0]);
	snprintf(mine, sizeof(mine), "\n  pid %d (", (int)getpid());
	snprintf(child_line, sizeof(child_line), "\n  pid %d (", (int)child);

	r = cli_ctl("delete", "--name", "web", NULL);
	CLI_ASSERT_STATUS(r, 1);
	ASSERT_HAS(r.err, "portresctl: delete web: tcp 36000-36009 named web: in use by:\n");
	ASSERT_HAS(r.err, "): tcp 0.0.0.0:36005, tcp [::]:36005\n");
	cr_assert_eq(occurrences(r.err, mine), 1, "one line for this process: %s", r.err);
	cr_assert_eq(occurrences(r.err, child_line), 1, "one line for the child sharing them: %s", r.err);
	ASSERT_HAS(r.err, "Nothing changed; --force deletes it anyway.");
	cli_result_free(&r);
	cr_assert(listed("web"));

	/* the dry run says the same, and changes nothing either */
	r = cli_ctl("delete", "--name", "web", "--dry-run", NULL);
	CLI_ASSERT_STATUS(r, 1);
	ASSERT_HAS(r.err, "): tcp 0.0.0.0:36005, tcp [::]:36005\n");
	ASSERT_HAS(r.err, "delete would refuse; --force deletes it anyway.");
	cli_result_free(&r);
	cr_assert(listed("web"));

	/* show lists every process of the shared socket, sorted with its address */
	r = cli_ctl("show", "web", NULL);
	CLI_ASSERT_STATUS(r, 0);
	ASSERT_HAS(r.out, "0.0.0.0:36005");
	ASSERT_HAS(r.out, "[::]:36005");
	{
		char both[64];

		snprintf(both, sizeof(both), "%d,%d", (int)getpid() < child ? (int)getpid() : child,
			 (int)getpid() < child ? child : (int)getpid());
		ASSERT_HAS(r.out, both);
	}
	cr_assert_lt(strstr(r.out, "0.0.0.0:36005"), strstr(r.out, "[::]:36005"), "IPv4 first: %s", r.out);
	cli_result_free(&r);

	close(pipefd[1]);
	waitpid(child, NULL, 0);
	close(v4);
	close(v6);
	r = cli_ctl("delete", "--name", "web", "--dry-run", NULL);
	CLI_ASSERT_STATUS(r, 0);
	cr_assert_str_eq(r.out, "would delete persistent tcp 36000-36009 (web)\n");
	cli_result_free(&r);
	cr_assert(listed("web"));
	r = cli_ctl("delete", "--name", "web", NULL);
	CLI_ASSERT_STATUS(r, 0);
	cli_result_free(&r);
	cr_assert(!listed("web"));
}

Test(cli_safety, attachments_hold_and_force_deletes)
{
	char cg[4200], token[17];
	struct cli_result r;
	portres_token_t t;

	snprintf(token, sizeof(token), "%s", cli_create("udp", 36100, 4, "dns"));
	cli_cgroup("resolver", cg, sizeof(cg));
	r = cli_ctl("attach", "--cgroup", cg, "--name", "dns", "--confine", NULL);
	CLI_ASSERT_STATUS(r, 0);
	cli_result_free(&r);

	r = cli_ctl("delete", "--token", token, NULL);
	CLI_ASSERT_STATUS(r, 1);
	ASSERT_HAS(r.err, "in use by:\n  cgroup ");
	ASSERT_HAS(r.err, "/resolver is attached (confined)\n");
	cli_result_free(&r);
	cr_assert(listed("dns"));

	r = cli_ctl("delete", "--token", token, "--force", NULL);
	CLI_ASSERT_STATUS(r, 0);
	cli_result_free(&r);
	cr_assert(!listed("dns"));

	/* the library deletes without asking, as Windows' DeletePersistent does */
	cli_create("udp", 36200, 4, "lib");
	r = cli_ctl("attach", "--cgroup", cg, "--name", "lib", NULL);
	CLI_ASSERT_STATUS(r, 0);
	cli_result_free(&r);
	cr_assert_eq(portres_lookup_persistent(IPPROTO_UDP, 36200, 4, &t), 0);
	cr_assert_eq(portres_delete_persistent(IPPROTO_UDP, 36200, 4), 0, "%s", strerror(errno));
	cr_assert(!listed("lib"));
}

/* The attachments of the reservation named name (borrowed from l): their paths joined by spaces. */
static void attached(json_t *l, const char *name, char *out, size_t len)
{
	json_t *x;
	size_t i, n = 0;

	out[0] = '\0';
	json_array_foreach(json_object_get(ag_named(l, name), "attachments"), i, x)
		n += (size_t)snprintf(out + n, len - n, "%s ", json_string_value(json_object_get(x, "path")) ?: "?");
}

Test(cli_safety, prune_spares_runs_and_refuses_held_blocks)
{
	char outp[400], paths[8192], file_keep[300], file_drop[300];
	struct cli_result r;
	json_t *l;
	pid_t run;

	cli_create("tcp", 37000, 10, "app");
	snprintf(outp, sizeof(outp), "%s/run.out", ag.tmp);
	run = cli_spawn(outp, "run", "--name", "app", "--", "sh", "-c", "echo started; exec sleep 60", NULL);
	cr_assert(cli_wait_file(outp, "started", 20000), "run did not start: %s", cli_read(outp));
	l = cli_list();
	attached(l, "app", paths, sizeof(paths));
	json_decref(l);
	ASSERT_HAS(paths, "/portresctl-run-");

	/* the file keeps app but lists no attachments: prune must not detach the run's cgroup */
	snprintf(file_keep, sizeof(file_keep), "%s",
		 cli_write_tmp("keep.json", "{\"reservations\":[{\"name\":\"app\",\"proto\":\"tcp\",\"ports\":\"37000-37009\"}]}"));
	r = cli_ctl("apply", "-f", file_keep, "--prune", NULL);
	CLI_ASSERT_STATUS(r, 0);
	ASSERT_HAS(r.out, "no changes");
	cli_result_free(&r);
	l = cli_list();
	attached(l, "app", paths, sizeof(paths));
	json_decref(l);
	ASSERT_HAS(paths, "/portresctl-run-");

	/* a file without app: prune refuses (the run holds it), the dry run says so too */
	snprintf(file_drop, sizeof(file_drop), "%s", cli_write_tmp("drop.json", "{\"reservations\":[]}"));
	r = cli_ctl("apply", "-f", file_drop, "--prune", "--dry-run", NULL);
	CLI_ASSERT_STATUS(r, 1);
	ASSERT_HAS(r.out, "would delete app tcp 37000-37009 (not in the file)");
	ASSERT_HAS(r.err, "delete app tcp 37000-37009 (not in the file): tcp 37000-37009 named app: in use by:\n");
	ASSERT_HAS(r.err, "is attached (a running portresctl run)");
	ASSERT_HAS(r.err, "apply would refuse; --force deletes them anyway.");
	cli_result_free(&r);
	r = cli_ctl("apply", "-f", file_drop, "--prune", NULL);
	CLI_ASSERT_STATUS(r, 1);
	ASSERT_HAS(r.err, "is attached (a running portresctl run)");
	ASSERT_HAS(r.err, "Nothing changed; --force deletes them anyway.");
	cli_result_free(&r);
	cr_assert(listed("app"));

	/* --force: deleted; the run goes on and ends without complaint when CMD ends */
	r = cli_ctl("apply", "-f", file_drop, "--prune", "--force", NULL);
	CLI_ASSERT_STATUS(r, 0);
	ASSERT_HAS(r.out, "delete app tcp 37000-37009 (not in the file)");
	cli_result_free(&r);
	cr_assert(!listed("app"));
	kill(run, SIGTERM);
	cr_assert_eq(cli_wait(run, 20000), 128 + SIGTERM);
	{
		char *text = cli_read(outp);

		ASSERT_LACKS(text, "detach");
		free(text);
	}
}

struct ctl_as {
	const struct test_user *u;
	const char *cgroup; /* entered first (as root); NULL: stay */
	const char *out;
	const char *const *argv;
};

/*
 * Runs portresctl argv as the user u in cgroup, stdout and stderr into out;
 * its exit status. The binary is copied into the fixture's directory (0755)
 * first: the checkout may be where that user cannot reach.
 */
static int ctl_as_user(const struct ctl_as *a)
{
	const char *src = getenv("PORTRESCTL_BIN") && *getenv("PORTRESCTL_BIN") ? getenv("PORTRESCTL_BIN")
										  : "build/portresctl";
	char bin[400], cmd[1200];
	const char *argv[32];
	pid_t pid;
	int status;

	snprintf(bin, sizeof(bin), "%s/portresctl", ag.tmp);
	snprintf(cmd, sizeof(cmd), "install -m 0755 '%s' '%s'", src, bin);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
	argv[0] = bin;
	for (size_t i = 0; i < 30 && (argv[i + 1] = a->argv[i]); i++)
		;
	argv[31] = NULL;
	fflush(NULL);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		char procs[4300];
		int fd = open(a->out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644), p;

		if (a->cgroup) {
			snprintf(procs, sizeof(procs), "%s/cgroup.procs", a->cgroup);
			if ((p = open(procs, O_WRONLY | O_CLOEXEC)) < 0 || write(p, "0", 1) != 1)
				_exit(125);
			close(p);
		}
		if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0 || chdir("/") || test_user_become(a->u, NULL, 0))
			_exit(125);
		execv(bin, (char *const *)argv);
		_exit(125);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

Test(cli_safety, non_root_run_says_what_works)
{
	char out[400], deleg[4200], path[4300], *text;
	const char *const argv[] = { "run", "--acquire", "4", "--", "sh", "-c", "echo ports $PORTRES_COUNT", NULL };
	struct test_user u;
	struct ctl_as a = { .u = &u, .out = out, .argv = argv };
	struct cli_result r;

	test_user_new(&u);
	/* in a cgroup root owns: refused before anything is acquired, with what works instead */
	snprintf(out, sizeof(out), "%s/user.out", ag.tmp);
	chmod(out, 0666);
	cr_assert_eq(ctl_as_user(&a), 1);
	text = cli_read(out);
	ASSERT_HAS(text, "portresctl: run: cannot create cgroup ");
	ASSERT_HAS(text, "Permission denied");
	ASSERT_HAS(text, "systemd-run --user --scope -p Delegate=yes portresctl run ...");
	ASSERT_HAS(text, "Nothing was acquired.");
	free(text);
	r = cli_ctl("events", "--type", "acquired", NULL);
	CLI_ASSERT_STATUS(r, 0);
	cr_assert_str_eq(r.out, "", "something was acquired: %s", r.out);
	cli_result_free(&r);

	/* in a cgroup delegated to the user (as systemd-run -p Delegate=yes makes one): it runs */
	cli_cgroup("delegated", deleg, sizeof(deleg));
	cr_assert_eq(chown(deleg, u.uid, u.gid), 0);
	snprintf(path, sizeof(path), "%s/cgroup.procs", deleg);
	cr_assert_eq(chown(path, u.uid, u.gid), 0);
	a.cgroup = deleg;
	cr_assert_eq(ctl_as_user(&a), 0, "%s", cli_read(out));
	text = cli_read(out);
	cr_assert_str_eq(text, "ports 4\n");
	free(text);
	r = cli_ctl("events", "--type", "acquired", NULL);
	CLI_ASSERT_STATUS(r, 0);
	ASSERT_HAS(r.out, "acquired  tcp ");
	cli_result_free(&r);
}
