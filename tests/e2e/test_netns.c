// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_netns.c - persistent reservations in other network namespaces: named
 * as `ip netns` names them (in the test's private mount namespace, a tmpfs
 * on /run), by path or by pid, through the CLI, the library and the
 * protocol; enforced and merged into ip_local_reserved_ports there, per
 * netns; and ended, with an event and nothing left in the maps, the state
 * file or the metrics, when the namespace goes away, also while the agent is
 * down.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_helpers.h"

static void setup(void)
{
	cli_setup();
	/* `ip netns add` works in /run/netns: a tmpfs of this mount namespace only */
	cr_assert(mount("tmpfs", "/run", "tmpfs", 0, "mode=0755") == 0, "tmpfs on /run: %s", strerror(errno));
}

static void teardown(void)
{
	cli_teardown();
	umount2("/run", MNT_DETACH);
}

TestSuite(netns, .init = setup, .fini = teardown, .timeout = 120);

static void sh(const char *cmd)
{
	int st = system(cmd);

	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: status %d", cmd, st);
}

static uint64_t inode_of(const char *path)
{
	struct stat sb;

	cr_assert(stat(path, &sb) == 0, "%s: %s", path, strerror(errno));
	return (uint64_t)sb.st_ino;
}

struct bind_arg {
	const char *netns;
	int proto;
	uint16_t port;
};

/* In a child that entered netns: binds [::]:port (v4 too); exits 0, or the errno. */
static int bind_in(void *p)
{
	const struct bind_arg *b = p;
	struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_port = htons(b->port) };
	int fd = open(b->netns, O_RDONLY | O_CLOEXEC), s;

	if (fd < 0 || setns(fd, CLONE_NEWNET))
		return 100;
	s = socket(AF_INET6, b->proto == IPPROTO_TCP ? SOCK_STREAM : SOCK_DGRAM, 0);
	if (s < 0)
		return 101;
	return bind(s, (struct sockaddr *)&sa, sizeof(sa)) ? errno : 0;
}

static int bind_status(const char *netns, int proto, uint16_t port)
{
	struct bind_arg b = { netns, proto, port };

	return ag_in_child(bind_in, &b);
}

/* ip_local_reserved_ports as the netns at path sees it. */
static char *sysctl_in(const char *path)
{
	char cmd[600];
	static char buf[4096];
	FILE *f;
	size_t n;

	snprintf(cmd, sizeof(cmd), "nsenter --net=%s cat /proc/sys/net/ipv4/ip_local_reserved_ports", path);
	f = popen(cmd, "r");
	cr_assert(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	pclose(f);
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return buf;
}


/* Whether the agent's recent events have one of type with this token. */

static bool wait_event(const char *type, const char *token)
{
	for (int i = 0; i < 1000; i++) {
		if (ag_has_event(type, token))
			return true;
		usleep(10000);
	}
	return false;
}

static const char *create_in(const char *netns, const char *proto, const char *start, const char *count,
			     const char *name)
{
	static char token[17];
	struct cli_result r = cli_ctl("create", "--netns", netns, "--proto", proto, "--start", start, "--count", count,
				      "--name", name, NULL);

	CLI_ASSERT_STATUS(r, 0);
	cr_assert_eq(strlen(r.out), 17, "token: %s", r.out);
	memcpy(token, r.out, 16);
	token[16] = '\0';
	cli_result_free(&r);
	return token;
}

/* Nothing of token left: the agent's list, the maps, the state file, the metrics. */
static void assert_no_trace(const char *token)
{
	struct cli_result m;
	char path[400];

	cr_assert_not(ag_has_token(strtoull(token, NULL, 16)), "token %s still listed", token);
	cr_assert_not(ag_in_resv_map(token), "token %s still in portres_resv", token);
	snprintf(path, sizeof(path), "%s/state.json", ag.state);
	cr_assert_null(strstr(cli_read(path), token), "state file still has %s: %s", token, cli_read(path));
	m = cli_ctl("metrics", NULL);
	CLI_ASSERT_STATUS(m, 0);
	cr_assert_null(strstr(m.out, token), "metrics still have %s", token);
	cli_result_free(&m);
}

Test(netns, create_lookup_delete_in_a_named_netns)
{
	struct cli_result r;
	char token[17];
	json_t *l, *x;
	size_t i;
	int n = 0;

	sh("ip netns add pod1");
	snprintf(token, sizeof(token), "%s", create_in("pod1", "tcp", "15000", "11", "side"));
	/* enforced there, and kept out of its ephemeral ports */
	cr_assert_eq(bind_status("/run/netns/pod1", IPPROTO_TCP, 15005), EACCES);
	cr_assert_str_eq(sysctl_in("/run/netns/pod1"), "15000-15010");
	/* not here: the agent's netns has neither */
	cr_assert_eq(ag_bind(IPPROTO_TCP, 15005, NULL), 0);
	cr_assert_str_eq(ag_sysctl(), "");
	r = cli_ctl("lookup", "--proto", "tcp", "--start", "15000", "--count", "11", NULL);
	CLI_ASSERT_STATUS(r, 1);
	cli_result_free(&r);
	r = cli_ctl("lookup", "--netns", "/run/netns/pod1", "--proto", "tcp", "--start", "15000", "--count", "11", NULL);
	CLI_ASSERT_STATUS(r, 0);
	cr_assert_eq(strncmp(r.out, token, 16), 0);
	cli_result_free(&r);
	/* the same block in the agent's netns: another reservation */
	cli_create("tcp", 15000, 11, "host");
	cr_assert_eq(ag_bind(IPPROTO_TCP, 15005, NULL), -EACCES);
	cr_assert_str_eq(ag_sysctl(), "15000-15010");
	/* users see the netns as lsns does, and the path they named it by */
	l = cli_list();
	json_array_foreach(json_object_get(l, "reservations"), i, x) {
		if (strcmp(json_string_value(json_object_get(x, "token")), token))
			continue;
		n++;
		cr_assert_eq(json_integer_value(json_object_get(x, "netns_inode")), (json_int_t)inode_of("/run/netns/pod1"));
		cr_assert_str_eq(json_string_value(json_object_get(x, "netns_path")), "/run/netns/pod1");
	}
	cr_assert_eq(n, 1);
	json_decref(l);
	r = cli_ctl("list", "--netns", "pod1", "--json", NULL);
	CLI_ASSERT_STATUS(r, 0);
	l = cli_json(&r);
	cr_assert_eq(json_array_size(json_object_get(l, "reservations")), 1, "%s", r.out);
	json_decref(l);
	cli_result_free(&r);
	r = cli_ctl("who", "15003", "--netns", "pod1", "--json", NULL);
	CLI_ASSERT_STATUS(r, 0);
	cr_assert(strstr(r.out, token), "who in pod1: %s", r.out);
	cli_result_free(&r);
	/* a block in one netns does not overlap the other's */
	r = cli_ctl("create", "--netns", "pod1", "--proto", "tcp", "--start", "15010", "--count", "1", NULL);
	CLI_ASSERT_STATUS(r, 1);
	cr_assert(strstr(r.err, "overlaps"), "%s", r.err);
	cli_result_free(&r);
	/* delete by range: in pod1 only */
	r = cli_ctl("delete", "--netns", "pod1", "--proto", "tcp", "--start", "15000", "--count", "11", NULL);
	CLI_ASSERT_STATUS(r, 0);
	cli_result_free(&r);
	cr_assert_str_eq(sysctl_in("/run/netns/pod1"), "");
	cr_assert_eq(bind_status("/run/netns/pod1", IPPROTO_TCP, 15005), 0);
	cr_assert_eq(ag_bind(IPPROTO_TCP, 15005, NULL), -EACCES, "the agent's netns keeps its own block");
	assert_no_trace(token);
	sh("ip netns del pod1");
}

/* Whether the pinned cgroup map has an entry for the cgroup at path. */
static bool cg_in_map(const char *path)
{
	uint64_t id = inode_of(path);

	return ag_map_has("portres_cgroups", &id);
}

Test(netns, a_netns_that_dies_ends_its_reservations)
{
	struct cli_result r;
	char token[17], cg[4096], path[400];

	sh("ip netns add pod2");
	snprintf(token, sizeof(token), "%s", create_in("pod2", "udp", "5353", "1", "dns"));
	cli_cgroup("app", cg, sizeof(cg));
	r = cli_ctl("attach", "--cgroup", cg, "--name", "dns", NULL);
	CLI_ASSERT_STATUS(r, 0);
	cli_result_free(&r);
	cr_assert(ag_in_resv_map(token));
	cr_assert(cg_in_map(cg), "the attachment is not in portres_cgroups");
	sh("ip netns del pod2");
	cr_assert(wait_event("ended", token), "no \"ended\" event for %s", token);
	cr_assert(ag_log_has("its network namespace is gone"));
	assert_no_trace(token);
	cr_assert_not(cg_in_map(cg), "the attachment stayed in portres_cgroups");
	r = cli_ctl("show", "dns", NULL);
	CLI_ASSERT_STATUS(r, 1);
	cli_result_free(&r);
	snprintf(path, sizeof(path), "%s/state.json", ag.state);
	cr_assert_null(strstr(cli_read(path), "\"cookie\""), "state: %s", cli_read(path));
}

Test(netns, found_again_after_a_restart_and_watched)
{
	char token[17];
	json_t *l;

	sh("ip netns add pod3");
	snprintf(token, sizeof(token), "%s", create_in("pod3", "tcp", "16000", "4", "keep"));
	ag_stop();
	ag_start(NULL);
	cr_assert(ag_has_token(strtoull(token, NULL, 16)), "the reservation did not survive the restart");
	cr_assert(ag_log_has("found again"));
	cr_assert_eq(bind_status("/run/netns/pod3", IPPROTO_TCP, 16001), EACCES);
	l = cli_show("keep");
	cr_assert_eq(json_integer_value(json_object_get(l, "netns_inode")), (json_int_t)inode_of("/run/netns/pod3"));
	json_decref(l);
	/* the restarted agent still hears of its end */
	sh("ip netns del pod3");
	cr_assert(wait_event("ended", token), "no \"ended\" event for %s after the restart", token);
	assert_no_trace(token);
}

Test(netns, a_netns_gone_while_the_agent_was_down)
{
	char token[17], path[400];

	sh("ip netns add pod4");
	snprintf(token, sizeof(token), "%s", create_in("pod4", "tcp", "17000", "2", "lost"));
	ag_stop();
	sh("ip netns del pod4");
	/* a new netns, likely with the inode and nsid of the old one, must not inherit its reservation */
	sh("ip netns add pod4");
	ag_start(NULL);
	cr_assert(ag_log_has("its network namespace is gone"));
	assert_no_trace(token);
	cr_assert(ag_has_event("ended", token));
	cr_assert_eq(bind_status("/run/netns/pod4", IPPROTO_TCP, 17000), 0);
	snprintf(path, sizeof(path), "%s/state.json", ag.state);
	cr_assert_null(strstr(cli_read(path), "\"cookie\""), "state: %s", cli_read(path));
	sh("ip netns del pod4");
}

/* In a child: the Windows-shaped call from inside another netns means that netns. */
static int create_from_inside(void *p)
{
	portres_token_t t;
	int fd = open(p, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || setns(fd, CLONE_NEWNET))
		return 100;
	return portres_create_persistent(IPPROTO_TCP, 18000, 3, &t) ? errno : 0;
}

Test(netns, library_calls_and_the_callers_netns)
{
	portres_token_t t, t2;
	int fd, other;

	sh("ip netns add pod5");
	fd = open("/run/netns/pod5", O_RDONLY | O_CLOEXEC);
	cr_assert(fd >= 0);
	cr_assert_eq(portres_create_persistent_ns(fd, IPPROTO_TCP, 19000, 5, &t), 0, "%s", strerror(errno));
	cr_assert_eq(portres_lookup_persistent_ns(fd, IPPROTO_TCP, 19000, 5, &t2), 0, "%s", strerror(errno));
	cr_assert_eq(t, t2);
	cr_assert_eq(portres_lookup_persistent(IPPROTO_TCP, 19000, 5, &t2), -1);
	cr_assert_eq(errno, ENOENT);
	cr_assert_eq(bind_status("/run/netns/pod5", IPPROTO_TCP, 19004), EACCES);
	cr_assert_eq(portres_delete_persistent_ns(fd, IPPROTO_TCP, 19000, 5), 0, "%s", strerror(errno));
	cr_assert_eq(bind_status("/run/netns/pod5", IPPROTO_TCP, 19004), 0);
	/* not a netns: EINVAL; no descriptor: EBADF */
	other = open("/proc/self/ns/uts", O_RDONLY | O_CLOEXEC);
	cr_assert_eq(portres_create_persistent_ns(other, IPPROTO_TCP, 19000, 5, &t), -1);
	cr_assert_eq(errno, EINVAL);
	cr_assert_eq(portres_create_persistent_ns(-1, IPPROTO_TCP, 19000, 5, &t), -1);
	cr_assert_eq(errno, EBADF);
	close(other);
	/* a caller inside pod5 creates in pod5 */
	cr_assert_eq(ag_in_child(create_from_inside, "/run/netns/pod5"), 0);
	cr_assert_eq(portres_lookup_persistent_ns(fd, IPPROTO_TCP, 18000, 3, &t2), 0, "%s", strerror(errno));
	cr_assert_eq(portres_lookup_persistent(IPPROTO_TCP, 18000, 3, &t2), -1);
	cr_assert_eq(bind_status("/run/netns/pod5", IPPROTO_TCP, 18001), EACCES);
	cr_assert_eq(ag_bind(IPPROTO_TCP, 18001, NULL), 0);
	close(fd);
	sh("ip netns del pod5");
}

static int create_as_user(void *p)
{
	portres_token_t t;
	int fd = open(p, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 100;
	if (!portres_create_persistent_ns(fd, IPPROTO_TCP, 20000, 2, &t))
		return 0;
	return errno;
}

Test(netns, who_may_and_what_the_agent_opens)
{
	struct test_user u;
	json_t *r;
	int fd;

	test_user_new(&u);
	sh("ip netns add pod6");
	/* persistent blocks anywhere: root and the admin group only */
	cr_assert_eq(ag_as_user(&u, create_as_user, "/run/netns/pod6", NULL, 0), EACCES);
	/* the agent opens no path a caller names: the namespace itself must come along */
	r = ag_req("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":20000,\"count\":2,\"netns\":\"/run/netns/pod6\"}", -1);
	cr_assert_str_eq(ag_errno(r), "EINVAL");
	json_decref(r);
	/* a descriptor of something else is refused */
	fd = open("/proc/self/ns/uts", O_RDONLY | O_CLOEXEC);
	r = ag_req("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":20000,\"count\":2}", fd);
	cr_assert_str_eq(ag_errno(r), "EINVAL");
	cr_assert(strstr(json_string_value(json_object_get(r, "error")), "not a network namespace"));
	json_decref(r);
	close(fd);
	/* ops that take no netns take no descriptor */
	fd = open("/run/netns/pod6", O_RDONLY | O_CLOEXEC);
	r = ag_req("{\"v\":1,\"op\":\"status\"}", fd);
	cr_assert_str_eq(ag_errno(r), "EINVAL");
	json_decref(r);
	close(fd);
	sh("ip netns del pod6");
}

Test(netns, by_pid)
{
	struct cli_result r;
	char spec[32];
	int p[2];
	pid_t pid;

	cr_assert(pipe(p) == 0);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		char c;

		close(p[1]);
		if (unshare(CLONE_NEWNET))
			_exit(1);
		if (read(p[0], &c, 1) < 0)
			_exit(2);
		_exit(0);
	}
	ag_track_child(pid);
	close(p[0]);
	snprintf(spec, sizeof(spec), "pid:%d", (int)pid);
	/* the child's unshare may not have happened yet: retry until its netns differs */
	for (int i = 0; i < 500; i++) {
		char path[64];

		snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)pid);
		if (inode_of(path) != inode_of("/proc/self/ns/net"))
			break;
		usleep(10000);
	}
	r = cli_ctl("create", "--netns", spec, "--proto", "udp", "--start", "21000", "--count", "2", "--name", "bypid",
		    NULL);
	CLI_ASSERT_STATUS(r, 0);
	cli_result_free(&r);
	r = cli_ctl("lookup", "--netns", spec, "--proto", "udp", "--start", "21000", "--count", "2", NULL);
	CLI_ASSERT_STATUS(r, 0);
	cli_result_free(&r);
	r = cli_ctl("lookup", "--netns", "nosuch", "--proto", "udp", "--start", "21000", "--count", "2", NULL);
	CLI_ASSERT_STATUS(r, 2);
	cr_assert(strstr(r.err, "ip netns add nosuch"), "%s", r.err);
	cli_result_free(&r);
	/* the process exits: its netns and the reservation with it */
	close(p[1]);
	waitpid(pid, NULL, 0);
	for (int i = 0; i < 1000; i++) {
		r = cli_ctl("show", "bypid", NULL);
		if (r.status == 1)
			break;
		cli_result_free(&r);
		usleep(10000);
	}
	CLI_ASSERT_STATUS(r, 1);
	cli_result_free(&r);
}

Test(netns, apply_file_with_netns)
{
	struct cli_result r;
	const char *file;
	char *text;
	json_t *l;

	sh("ip netns add pod7");
	sh("ip netns add pod8");
	/* one block in two namespaces: no overlap */
	file = cli_write_tmp("apply.json",
			     "{\"reservations\":["
			     "{\"name\":\"proxy\",\"proto\":\"tcp\",\"ports\":\"15000-15090\",\"netns\":\"pod7\"},"
			     "{\"name\":\"proxy-host\",\"proto\":\"tcp\",\"ports\":\"15000-15090\"}]}");
	r = cli_ctl("apply", "-f", file, NULL);
	CLI_ASSERT_STATUS(r, 0);
	cli_result_free(&r);
	cr_assert_eq(bind_status("/run/netns/pod7", IPPROTO_TCP, 15050), EACCES);
	cr_assert_eq(ag_bind(IPPROTO_TCP, 15050, NULL), -EACCES);
	l = cli_show("proxy");
	cr_assert_str_eq(json_string_value(json_object_get(l, "netns_path")), "/run/netns/pod7");
	json_decref(l);
	/* applied again: nothing to do */
	r = cli_ctl("apply", "-f", file, NULL);
	CLI_ASSERT_STATUS(r, 0);
	cr_assert(strstr(r.out, "no changes"), "%s", r.out);
	cli_result_free(&r);
	/* moved to another netns: replaced there */
	file = cli_write_tmp("apply.json",
			     "{\"reservations\":["
			     "{\"name\":\"proxy\",\"proto\":\"tcp\",\"ports\":\"15000-15090\",\"netns\":\"/run/netns/pod8\"},"
			     "{\"name\":\"proxy-host\",\"proto\":\"tcp\",\"ports\":\"15000-15090\"}]}");
	r = cli_ctl("apply", "-f", file, NULL);
	CLI_ASSERT_STATUS(r, 0);
	cli_result_free(&r);
	cr_assert_eq(bind_status("/run/netns/pod7", IPPROTO_TCP, 15050), 0);
	cr_assert_eq(bind_status("/run/netns/pod8", IPPROTO_TCP, 15050), EACCES);
	cr_assert_str_eq(sysctl_in("/run/netns/pod7"), "");
	cr_assert_str_eq(sysctl_in("/run/netns/pod8"), "15000-15090");
	/* a netns that does not exist: named, nothing done */
	file = cli_write_tmp("apply.json",
			     "{\"reservations\":[{\"name\":\"x\",\"proto\":\"udp\",\"ports\":53,\"netns\":\"nosuch\"}]}");
	r = cli_ctl("apply", "-f", file, NULL);
	CLI_ASSERT_STATUS(r, 1);
	cr_assert(strstr(r.err, "/run/netns/nosuch"), "%s", r.err);
	cli_result_free(&r);
	text = ag_db("SELECT path FROM netns");
	cr_assert(strstr(text, "/run/netns/pod8"), "the database's netns: %s", text);
	free(text);
	sh("ip netns del pod7");
	sh("ip netns del pod8");
}
