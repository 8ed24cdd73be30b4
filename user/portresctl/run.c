// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * run.c - run CMD in a fresh cgroup tied to a reservation.
 *
 *   mkdir <parent>/portresctl-run-<pid> (first: without it nothing is acquired)
 *   -> reservation: --token/--name (show), or --acquire (a socket of ours,
 *                portres_acquire on it: the reservation lives as long as it)
 *   -> attach (agent)
 *   -> fork; the child enters cgroup.procs, then execs CMD with PORTRES_*
 *   -> wait (signals sent to us with kill(1) are passed on to CMD)
 *   -> detach, kill what CMD left in the cgroup, rmdir, close the socket.
 *
 * Exit status: CMD's, 128+N when a signal N ended it, 127 when CMD cannot be
 * found, 126 when it cannot be run, 1/2 when portresctl itself failed.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "apply.h"
#include "cgroup.h"
#include "ctl.h"
#include "portres.h"
#include "state.h"
#include "subcommands.h"
#include "transport.h"

enum { OPT_TOKEN = 't', OPT_NAME = 'n', OPT_ACQUIRE = 'a', OPT_PROTO = 'p', OPT_START = 's',
       OPT_CONFINE = 0x200, OPT_PARENT };

struct run_resv {
	char token[17];
	char proto[4];
	uint16_t start, count;
};

static volatile sig_atomic_t child_pid;
static const int forwarded[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 };

/*
 * Signals sent with kill(2) go to CMD. Those the terminal sends reach CMD's
 * process group by themselves: passing them on would deliver them twice.
 */
static void forward(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	if (child_pid > 0 && si->si_code <= 0)
		kill(child_pid, sig);
}

static int write_file(const char *dir, const char *file, const char *s)
{
	char path[PATH_MAX];
	int fd, err = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	if ((fd = open(path, O_WRONLY | O_CLOEXEC)) < 0)
		return -errno;
	if (write(fd, s, strlen(s)) != (ssize_t)strlen(s))
		err = -errno;
	close(fd);
	return err;
}

static bool cgroup_populated(const char *dir)
{
	char path[PATH_MAX], line[64];
	bool populated = false;
	FILE *f;

	snprintf(path, sizeof(path), "%s/cgroup.events", dir);
	if (!(f = fopen(path, "re")))
		return false;
	while (fgets(line, sizeof(line), f))
		if (!strcmp(line, "populated 1\n"))
			populated = true;
	fclose(f);
	return populated;
}

/* Kills what CMD left behind, then removes the cgroup. */
static void cgroup_remove(const char *dir)
{
	struct timespec tick = { 0, 10 * 1000 * 1000 };

	if (cgroup_populated(dir) && write_file(dir, "cgroup.kill", "1") == 0)
		for (int i = 0; i < 500 && cgroup_populated(dir); i++)
			nanosleep(&tick, NULL);
	for (int i = 0; i < 100; i++) {
		if (!rmdir(dir) || errno == ENOENT)
			return;
		if (errno != EBUSY)
			break;
		nanosleep(&tick, NULL);
	}
	ctl_fail("run: cannot remove cgroup %s: %s", dir, strerror(errno));
}

/*
 * Makes CMD's cgroup and checks that CMD may enter it (cgroup.procs of the new
 * cgroup and of our own cgroup, their common ancestor, writable). Without
 * root that holds only in a cgroup delegated to the user: say how to get one.
 */
static int make_cgroup(const char *cgroup, bool parent_given)
{
	char procs[PATH_MAX + 64];
	int err = 0;

	if (mkdir(cgroup, 0755))
		err = errno;
	/* the new cgroup's, then its parent's (the common ancestor with ours when it is ours) */
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", cgroup);
	if (!err && access(procs, W_OK))
		err = errno;
	snprintf(procs, sizeof(procs), "%s/../cgroup.procs", cgroup);
	if (!err && access(procs, W_OK))
		err = errno;
	if (!err)
		return CTL_OK;
	rmdir(cgroup);
	ctl_fail("run: cannot create cgroup %s: %s", cgroup, strerror(err));
	if (err == EACCES || err == EPERM || err == EROFS)
		fprintf(stderr, "run needs a cgroup it may create and enter: run it as root, or%s in a cgroup\n"
				"delegated to you, e.g.\n"
				"  systemd-run --user --scope -p Delegate=yes portresctl run ...\n"
				"Nothing was acquired.\n", parent_given ? " with --cgroup-parent" : "");
	return CTL_FAIL;
}

/* The reservation named by --token or --name, from the agent. */
static int resolve(const char *token, const char *name, struct run_resv *out)
{
	json_t *req = ctl_req("show"), *reply, *r;
	char what[96];
	int ret;

	if ((ret = ctl_set_selector(req, token, name, true))) {
		json_decref(req);
		return ret;
	}
	snprintf(what, sizeof(what), "run: %s %s", token ? "token" : "name", token ? token : name);
	reply = ctl_request(what, req, NULL);
	json_decref(req);
	if (!reply)
		return CTL_FAIL;
	r = json_object_get(reply, "reservation");
	snprintf(out->token, sizeof(out->token), "%s", ctl_jstr(r, "token", ""));
	snprintf(out->proto, sizeof(out->proto), "%s", ctl_jstr(r, "proto", ""));
	out->start = (uint16_t)ctl_jint(r, "start", 0);
	out->count = (uint16_t)ctl_jint(r, "count", 0);
	ret = json_is_true(json_object_get(r, "dead")) ? ctl_fail("%s: the reservation has ended", what) : CTL_OK;
	json_decref(reply);
	return ret;
}

/* A runtime reservation held by a socket of ours (close-on-exec: CMD does not keep it). */
static int acquire(const char *proto, uint16_t start, uint16_t count, struct run_resv *out, int *sock)
{
	struct portres_range want = { .start = start, .count = count };
	struct portres_instance inst;
	bool udp = !strcmp(proto, "udp");

	*sock = socket(AF_INET, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
	if (*sock < 0)
		return ctl_fail("run: socket: %s", strerror(errno));
	/* libportres finds the agent through the environment */
	setenv(PORTRES_SOCKET_ENV, ctl.socket, 1);
	if (portres_acquire(*sock, &want, &inst)) {
		int err = errno;

		if (err == ECONNREFUSED || err == ENOENT)
			return ctl_fail("no agent at %s (start portresd)", ctl.socket);
		if (start)
			return ctl_fail("run: acquire %s %u-%u: %s", proto, start, start + count - 1,
					err == EADDRINUSE ? "ports reserved or in use" : strerror(err));
		return ctl_fail("run: acquire %u %s ports: %s", count, proto,
				err == EADDRINUSE ? "no free block" : err == EDQUOT ? "over your runtime port quota" :
				strerror(err));
	}
	state_token_format(inst.token, out->token);
	snprintf(out->proto, sizeof(out->proto), "%s", proto);
	out->start = inst.range.start;
	out->count = inst.range.count;
	return CTL_OK;
}

static int attach(const char *cgroup, const struct run_resv *r, bool confine)
{
	json_t *req = json_pack("{s:i, s:s, s:s, s:s, s:b}", "v", 1, "op", "attach", "cgroup", cgroup, "token",
				r->token, "confine", confine), *reply;
	char what[PATH_MAX + 32];
	int ret;

	snprintf(what, sizeof(what), "run: attach %.4000s", cgroup);
	reply = ctl_request(what, req, NULL);
	ret = reply ? CTL_OK : CTL_FAIL;
	json_decref(req);
	json_decref(reply);
	return ret;
}

static void detach(const char *cgroup)
{
	json_t *req = json_pack("{s:s, s:s}", "op", "detach", "cgroup", cgroup), *reply = NULL;
	int fd = portres_transport_connect(ctl.socket), err;

	/* a connection of its own: CMD may have run for longer than the agent keeps an idle one */
	if (fd < 0)
		err = fd;
	else if (!(err = portres_transport_call(fd, req, -1, PORTRES_TRANSPORT_TIMEOUT_MS, &reply)))
		err = -portres_transport_error(reply);
	/* ENOENT: the reservation was deleted (delete --force), and the attachment with it */
	if (err && err != -ENOENT)
		ctl_fail("run: detach %s: %s", cgroup,
			 reply ? ctl_jstr(reply, "error", strerror(-err)) : strerror(-err));
	if (fd >= 0)
		close(fd);
	json_decref(reply);
	json_decref(req);
}

static void exec_child(const char *cgroup, const struct run_resv *r, char **cmd)
{
	char num[8];
	int err;

	for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
		signal(forwarded[i], SIG_DFL);
	sigprocmask(SIG_SETMASK, &(sigset_t){ 0 }, NULL);
	/* "0" is the writer itself: CMD starts in the cgroup, before its first socket */
	if ((err = write_file(cgroup, "cgroup.procs", "0"))) {
		fprintf(stderr, "portresctl: run: cannot enter cgroup %s: %s\n", cgroup, strerror(-err));
		_exit(CTL_FAIL);
	}
	setenv("PORTRES_TOKEN", r->token, 1);
	setenv("PORTRES_PROTO", r->proto, 1);
	snprintf(num, sizeof(num), "%u", r->start);
	setenv("PORTRES_START", num, 1);
	snprintf(num, sizeof(num), "%u", r->count);
	setenv("PORTRES_COUNT", num, 1);
	execvp(cmd[0], cmd);
	err = errno;
	fprintf(stderr, "portresctl: run: %s: %s\n", cmd[0], strerror(err));
	_exit(err == ENOENT ? 127 : 126);
}

/* Forks CMD and waits for it; returns its exit status as a shell would. */
static int spawn(const char *cgroup, const struct run_resv *r, char **cmd)
{
	struct sigaction sa = { .sa_sigaction = forward, .sa_flags = SA_SIGINFO | SA_RESTART };
	sigset_t all, old;
	int status;
	pid_t pid;

	fflush(NULL);
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	pid = fork();
	if (pid == 0)
		exec_child(cgroup, r, cmd);
	if (pid < 0) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		return ctl_fail("run: fork: %s", strerror(errno));
	}
	child_pid = pid;
	for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
		sigaction(forwarded[i], &sa, NULL);
	sigprocmask(SIG_SETMASK, &old, NULL);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return ctl_fail("run: waitpid: %s", strerror(errno));
	child_pid = 0;
	for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
		signal(forwarded[i], SIG_DFL);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

int cmd_run(int argc, char *argv[])
{
	static const struct option opts[] = {
		{ "token", required_argument, NULL, OPT_TOKEN },
		{ "name", required_argument, NULL, OPT_NAME },
		{ "acquire", required_argument, NULL, OPT_ACQUIRE },
		{ "proto", required_argument, NULL, OPT_PROTO },
		{ "start", required_argument, NULL, OPT_START },
		{ "confine", no_argument, NULL, OPT_CONFINE },
		{ "cgroup-parent", required_argument, NULL, OPT_PARENT },
		CTL_COMMON_OPTIONS,
		{ 0 }
	};
	const char *token = NULL, *name = NULL, *count_s = NULL, *proto = NULL, *start_s = NULL, *parent_s = NULL;
	char parent[PATH_MAX], cgroup[PATH_MAX + 32];
	struct run_resv r = { 0 };
	uint16_t start = 0, count = 0;
	bool confine = false;
	int c, ret, err, sock = -1;

	/* '+': options end at CMD, with or without "--" */
	while ((c = ctl_getopt(argc, argv, "+ht:n:a:p:s:", opts)) != -1) {
		switch (c) {
		case OPT_TOKEN: token = optarg; continue;
		case OPT_NAME: name = optarg; continue;
		case OPT_ACQUIRE: count_s = optarg; continue;
		case OPT_PROTO: proto = optarg; continue;
		case OPT_START: start_s = optarg; continue;
		case OPT_CONFINE: confine = true; continue;
		case OPT_PARENT: parent_s = optarg; continue;
		}
		if (ctl_common_opt(c, &ret))
			return ret;
	}
	if (optind == argc)
		return ctl_bad_usage("no command to run (portresctl run ... -- CMD [ARG...])");
	if (!!token + !!name + !!count_s != 1)
		return ctl_bad_usage("give one of --token, --name, --acquire N");
	if ((proto || start_s) && !count_s)
		return ctl_bad_usage("--proto and --start go with --acquire");
	if (count_s && (ctl_parse_count(count_s, &count) || ctl_parse_proto(proto ? proto : "tcp", &proto) ||
			(start_s && ctl_parse_port("--start", start_s, true, &start))))
		return CTL_USAGE;
	if (count_s && (uint32_t)start + count > 65536)
		return ctl_bad_usage("--start %u with --acquire %u goes past port 65535", start, count);
	if (parent_s)
		err = ctl_cgroup_path(parent_s, parent, sizeof(parent));
	else
		err = cgroup2_self(parent, sizeof(parent));
	if (err)
		return ctl_fail("run: cannot find %s: %s", parent_s ? parent_s : "our own cgroup (cgroup2)",
				strerror(-err));

	/* the cgroup first: nothing is acquired when it cannot be made (and entered) */
	snprintf(cgroup, sizeof(cgroup), "%s/" APPLY_RUN_CGROUP_PREFIX "%d", parent, (int)getpid());
	if ((ret = make_cgroup(cgroup, parent_s != NULL)))
		return ret;
	if (count_s)
		ret = acquire(proto, start, count, &r, &sock);
	else
		ret = resolve(token, name, &r);
	if (ret)
		goto out_cgroup;
	if ((ret = attach(cgroup, &r, confine)))
		goto out_sock;
	ret = spawn(cgroup, &r, argv + optind);
	detach(cgroup);
out_sock:
	/* closing it ends the runtime reservation */
	if (sock >= 0)
		close(sock);
out_cgroup:
	cgroup_remove(cgroup);
	return ret;
}
