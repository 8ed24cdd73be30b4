// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_containers.c - real runc containers through portres-oci-hook: a
 * busybox rootfs built in the test's temp dir (no registry), config.json
 * from `runc spec` edited with jansson (hooks, annotations, network
 * namespace, cgroupsPath below the test's cgroup, the agent's attach root),
 * runc with --root in the temp dir.
 *
 *   own netns: bind(0) gets a port of the block; ip_local_reserved_ports
 *   inside lists it; a second container in that netns (a pod) binding into
 *   it gets EACCES; outgoing connections there never take a reserved port;
 *   after delete nothing is left (maps, state, cgroups) and events say so;
 *   host network through io.portres.name; a bad annotation or a refused
 *   block fails the start and leaves nothing; no agent: a clear message.
 *
 * Containers are killed and deleted at teardown, even after a failure.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cgroup.h"
#include "cli_helpers.h"

static char root[400], rootfs[400], hook[PATH_MAX], cgroup_rel[300];

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: status %d", cmd, st);
}

/* The busybox rootfs every container shares (read-only). */
static void make_rootfs(void)
{
	snprintf(rootfs, sizeof(rootfs), "%s/rootfs", ag.tmp);
	sh("mkdir -p %s/bin %s/proc %s/sys %s/dev %s/tmp && cp /bin/busybox %s/bin/busybox && "
	   "for a in $(/bin/busybox --list); do [ $a = busybox ] || ln -s busybox %s/bin/$a; done",
	   rootfs, rootfs, rootfs, rootfs, rootfs, rootfs, rootfs);
}

static void setup(void)
{
	const char *bin = getenv("PORTRES_OCI_HOOK_BIN");
	const char *cg2 = cgroup2_mount();

	cli_setup();
	cr_assert(realpath(bin && *bin ? bin : "build/portres-oci-hook", hook), "no portres-oci-hook: build it (make)");
	snprintf(root, sizeof(root), "%s/runc", ag.tmp);
	cr_assert(mkdir(root, 0700) == 0);
	/* runc's cgroupsPath is relative to the cgroup2 mount: below the agent's attach root */
	snprintf(cgroup_rel, sizeof(cgroup_rel), "%s", ag.cgroup + strlen(cg2));
	make_rootfs();
}

/* Every container of our runc root, killed and deleted; cgroup v1 leftovers of runc (hybrid hosts) removed. */
static void teardown(void)
{
	char cmd[1200];
	DIR *d = opendir(root);
	struct dirent *e;

	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(cmd, sizeof(cmd), "runc --root %s delete -f %s >/dev/null 2>&1", root, e->d_name);
		if (system(cmd)) {
			/* nothing more to do: the state is removed with the temp dir */
		}
	}
	if (d)
		closedir(d);
	snprintf(cmd, sizeof(cmd), "for d in /sys/fs/cgroup/*/%s; do [ -d \"$d\" ] && "
		 "[ \"$(stat -f -c %%T \"$d\")\" = cgroupfs ] && rmdir \"$d\"/*/ \"$d\" 2>/dev/null; done; true",
		 cgroup_rel);
	if (system(cmd)) {
		/* best effort */
	}
	cli_teardown();
}

TestSuite(containers, .init = setup, .fini = teardown, .timeout = 240);

struct ctr {
	const char *id;
	const char *netns;     /* NULL: a new one; "host": none; else a path to join */
	const char *annotations[4][2];
	const char *cmd;       /* sh -c */
	bool hook;             /* portres-oci-hook in config.json (createRuntime, poststop) */
};

static json_t *hook_entry(const char *stage)
{
	char env[400];

	snprintf(env, sizeof(env), "%s=%s", PORTRES_SOCKET_ENV, ag.sock);
	return json_pack("{s:s, s:[s, s], s:[s]}", "path", hook, "args", "portres-oci-hook", stage, "env", env);
}

/* Writes the bundle of c: runc spec, then our changes. Returns its directory (static). */
static const char *bundle(const struct ctr *c)
{
	static char dir[600];
	char file[700], cgp[400];
	json_t *cfg, *ns, *x, *ann;
	size_t i;

	snprintf(dir, sizeof(dir), "%s/bundle-%s", ag.tmp, c->id);
	sh("mkdir -p %s && cd %s && rm -f config.json && runc spec", dir, dir);
	snprintf(file, sizeof(file), "%s/config.json", dir);
	cfg = json_load_file(file, 0, NULL);
	cr_assert_not_null(cfg);
	json_object_set_new(json_object_get(cfg, "process"), "terminal", json_false());
	json_object_set_new(json_object_get(cfg, "process"), "args", json_pack("[s, s, s]", "sh", "-c", c->cmd));
	json_object_set_new(json_object_get(cfg, "root"), "path", json_string(rootfs));
	json_object_set_new(json_object_get(cfg, "root"), "readonly", json_true());
	snprintf(cgp, sizeof(cgp), "%s/%s", cgroup_rel, c->id);
	json_object_set_new(json_object_get(cfg, "linux"), "cgroupsPath", json_string(cgp));
	/* the network namespace: new (runc spec's default), the host's, or a pod's */
	ns = json_object_get(json_object_get(cfg, "linux"), "namespaces");
	json_array_foreach(ns, i, x) {
		if (strcmp(json_string_value(json_object_get(x, "type")), "network"))
			continue;
		if (c->netns && !strcmp(c->netns, "host"))
			json_array_remove(ns, i);
		else if (c->netns)
			json_object_set_new(x, "path", json_string(c->netns));
		break;
	}
	ann = json_object();
	for (i = 0; i < 4 && c->annotations[i][0]; i++)
		json_object_set_new(ann, c->annotations[i][0], json_string(c->annotations[i][1]));
	json_object_set_new(cfg, "annotations", ann);
	if (c->hook)
		json_object_set_new(cfg, "hooks", json_pack("{s:[o], s:[o]}", "createRuntime", hook_entry("createRuntime"),
							     "poststop", hook_entry("poststop")));
	cr_assert_eq(json_dump_file(cfg, file, JSON_INDENT(1)), 0);
	json_decref(cfg);
	return dir;
}

/* runc run -d: 0 and the container's pid, or runc's exit status with its output in out. */
static int run_detached(const struct ctr *c, pid_t *pid, char *out, size_t len)
{
	char cmd[4096], log[500], pidf[500];
	const char *b = bundle(c);
	int st;

	snprintf(log, sizeof(log), "%s/%s.log", ag.tmp, c->id);
	snprintf(pidf, sizeof(pidf), "%s/%s.pid", ag.tmp, c->id);
	snprintf(cmd, sizeof(cmd), "runc --root %s run -d --bundle %s --pid-file %s %s </dev/null >%s 2>&1", root, b,
		 pidf, c->id, log);
	st = system(cmd);
	snprintf(out, len, "%s", cli_read(log));
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
	*pid = (pid_t)atoi(cli_read(pidf));
	return 0;
}

/* runc run (foreground): its exit status, its output in out. */
static int run_fg(const struct ctr *c, char *out, size_t len)
{
	char cmd[4096], log[500];
	const char *b = bundle(c);
	int st;

	snprintf(log, sizeof(log), "%s/%s.log", ag.tmp, c->id);
	snprintf(cmd, sizeof(cmd), "runc --root %s run --bundle %s %s </dev/null >%s 2>&1", root, b, c->id, log);
	st = system(cmd);
	snprintf(out, len, "%s", cli_read(log));
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void delete_ctr(const char *id)
{
	sh("runc --root %s delete -f %s", root, id);
}

/* The TCP port a process of pid's netns listens on (/proc/PID/net/tcp6 and tcp), polling; 0 if none. */
static uint16_t listener_of(pid_t pid)
{
	for (int t = 0; t < 500; t++) {
		const char *files[] = { "tcp6", "tcp" };

		for (int f = 0; f < 2; f++) {
			char path[64], line[512];
			FILE *fp;

			snprintf(path, sizeof(path), "/proc/%d/net/%s", (int)pid, files[f]);
			if (!(fp = fopen(path, "r")))
				continue;
			while (fgets(line, sizeof(line), fp)) {
				char local[128], st[8];
				unsigned port;

				if (sscanf(line, " %*d: %127s %*s %7s", local, st) == 2 && !strcmp(st, "0A") &&
				    sscanf(strchr(local, ':') + 1, "%x", &port) == 1) {
					fclose(fp);
					return (uint16_t)port;
				}
			}
			fclose(fp);
		}
		usleep(10000);
	}
	return 0;
}

static json_t *named(const char *name)
{
	json_t *l = cli_list(), *r = ag_named(l, name);

	r = r ? json_incref(r) : NULL;
	json_decref(l);
	return r;
}



struct conn_arg {
	pid_t pod;
	uint16_t port;
	const char *cgroup;
};

/*
 * In a child that joined the pod (its netns and the cgroup of its second
 * container): the pod's ephemeral range narrowed to 15000-15009, six
 * connections to the server; exits 0 when none took a port of 15000-15003.
 */
static int connect_from_pod(void *p)
{
	const struct conn_arg *c = p;
	char path[64], procs[4200];
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)c->pod);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 || setns(fd, CLONE_NEWNET))
		return 100;
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", c->cgroup);
	if ((fd = open(procs, O_WRONLY | O_CLOEXEC)) < 0 || write(fd, "0", 1) != 1)
		return 101;
	if ((fd = open("/proc/sys/net/ipv4/ip_local_port_range", O_WRONLY | O_CLOEXEC)) < 0 ||
	    write(fd, "15000 15009", 11) != 11)
		return 102;
	close(fd);
	for (int i = 0; i < 6; i++) {
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(c->port),
					  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		socklen_t len = sizeof(sa);
		int s = socket(AF_INET, SOCK_STREAM, 0);

		if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof(sa)))
			return 103;
		getsockname(s, (struct sockaddr *)&sa, &len);
		if (ntohs(sa.sin_port) >= 15000 && ntohs(sa.sin_port) <= 15003)
			return 104; /* a reserved port as source */
		/* kept open: each next connect needs another port */
	}
	return 0;
}

Test(containers, own_netns_pod_and_cleanup)
{
	struct ctr web = { .id = "web1", .hook = true, .cmd = "exec nc -ll -p 0 -e /bin/cat",
			   .annotations = { { "io.portres.reserve", "tcp:15000-15003,udp:5353" } } };
	struct ctr side = { .id = "side1", .cmd = "nc -l -p 15001 </dev/null; echo bind-exit=$?" };
	char out[8192], netns[64], tcp_tok[17], udp_tok[17], cg[4200], path[4300];
	struct conn_arg ca;
	struct stat sb;
	pid_t pid;
	uint16_t port;
	json_t *x;

	cr_assert_eq(run_detached(&web, &pid, out, sizeof(out)), 0, "runc run: %s", out);
	/* the blocks, named after the container, in its netns */
	x = named("oci-web1.tcp");
	cr_assert_not_null(x, "no block oci-web1.tcp");
	snprintf(tcp_tok, sizeof(tcp_tok), "%s", json_string_value(json_object_get(x, "token")));
	snprintf(netns, sizeof(netns), "/proc/%d/ns/net", (int)pid);
	cr_assert(stat(netns, &sb) == 0);
	cr_assert_eq(json_integer_value(json_object_get(x, "netns_inode")), (json_int_t)sb.st_ino);
	json_decref(x);
	x = named("oci-web1.udp");
	cr_assert_not_null(x, "no block oci-web1.udp");
	snprintf(udp_tok, sizeof(udp_tok), "%s", json_string_value(json_object_get(x, "token")));
	json_decref(x);
	/* bind(0) in the container: a port of its block */
	port = listener_of(pid);
	cr_assert(port >= 15000 && port <= 15003, "the server listens on %u", port);
	/* the container's own view of ip_local_reserved_ports */
	sh("runc --root %s exec web1 cat /proc/sys/net/ipv4/ip_local_reserved_ports > %s/rp.txt", root, ag.tmp);
	snprintf(path, sizeof(path), "%s/rp.txt", ag.tmp);
	cr_assert(strstr(cli_read(path), "5353") && strstr(cli_read(path), "15000-15003"), "inside: %s",
		  cli_read(path));
	/* a second container of the pod, not tied to the block */
	side.netns = netns;
	cr_assert_eq(run_fg(&side, out, sizeof(out)), 0, "runc run side1: %s", out);
	cr_assert(strstr(out, "Permission denied") && strstr(out, "bind-exit=1"), "side1 said: %s", out);
	/* outgoing connections from the pod never take a reserved port */
	snprintf(cg, sizeof(cg), "%s/side1", ag.cgroup);
	cr_assert(mkdir(cg, 0755) == 0 || errno == EEXIST);
	ca = (struct conn_arg){ .pod = pid, .port = port, .cgroup = cg };
	cr_assert_eq(ag_in_child(connect_from_pod, &ca), 0, "connect_from_pod");
	rmdir(cg);
	/* delete: the hook's poststop (or the netns's end) takes everything away */
	delete_ctr("side1");
	delete_ctr("web1");
	for (int i = 0; i < 500 && (named("oci-web1.tcp") || named("oci-web1.udp")); i++)
		usleep(10000);
	cr_assert_null(named("oci-web1.tcp"));
	cr_assert_null(named("oci-web1.udp"));
	cr_assert_not(ag_in_resv_map(tcp_tok));
	cr_assert_not(ag_in_resv_map(udp_tok));
	snprintf(path, sizeof(path), "%s/state.json", ag.state);
	cr_assert_null(strstr(cli_read(path), tcp_tok), "state: %s", cli_read(path));
	snprintf(path, sizeof(path), "%s/web1", ag.cgroup);
	cr_assert(access(path, F_OK) != 0, "cgroup %s left", path);
	cr_assert(ag_has_event("deleted", tcp_tok) || ag_has_event("ended", tcp_tok), "no event says %s ended", tcp_tok);
	cr_assert(ag_has_event("deleted", udp_tok) || ag_has_event("ended", udp_tok), "no event says %s ended", udp_tok);
}

Test(containers, host_network_through_a_named_block)
{
	struct ctr c = { .id = "hostnet", .netns = "host", .hook = true,
			 .cmd = "nc -l -p 17000 </dev/null; echo bind17000-exit=$?; exec nc -ll -p 0 -e /bin/cat",
			 .annotations = { { "io.portres.name", "web" }, { "io.portres.confine", "true" } } };
	char out[8192], log[500];
	json_t *x;
	pid_t pid;
	uint16_t port;

	cli_create("tcp", 16000, 4, "web");
	cr_assert_eq(run_detached(&c, &pid, out, sizeof(out)), 0, "runc run: %s", out);
	port = listener_of(pid);
	cr_assert(port >= 16000 && port <= 16003, "the server listens on %u", port);
	snprintf(log, sizeof(log), "%s/hostnet.log", ag.tmp);
	cr_assert(strstr(cli_read(log), "bind17000-exit=1"), "confined container bound 17000: %s", cli_read(log));
	x = cli_show("web");
	cr_assert_eq(json_array_size(json_object_get(x, "attachments")), 1);
	json_decref(x);
	delete_ctr("hostnet");
	/* the block stays; the container's cgroup and its attachment are gone */
	for (int i = 0; i < 500; i++) {
		x = cli_show("web");
		if (!json_array_size(json_object_get(x, "attachments")))
			break;
		json_decref(x);
		x = NULL;
		usleep(10000);
	}
	cr_assert_not_null(x, "the attachment stayed after the container's delete");
	json_decref(x);
}

/* Nothing of a failed start: no block, no attachment, no container, no cgroup. */
static void assert_nothing_left(const char *id)
{
	char path[4300], cmd[600], name[80];
	json_t *l = cli_list();

	snprintf(name, sizeof(name), "oci-%s.tcp", id);
	cr_assert_null(ag_named(l, name), "block %s left", name);
	json_decref(l);
	snprintf(path, sizeof(path), "%s/%s", ag.cgroup, id);
	cr_assert(access(path, F_OK) != 0, "cgroup %s left", path);
	snprintf(cmd, sizeof(cmd), "runc --root %s state %s >/dev/null 2>&1", root, id);
	cr_assert_neq(system(cmd), 0, "container %s left", id);
}

Test(containers, bad_annotation_or_refused_block_fails_the_start)
{
	struct ctr bad = { .id = "bad1", .hook = true, .cmd = "sleep 1",
			   .annotations = { { "io.portres.reserve", "tcp:99999" } } };
	struct ctr first = { .id = "pod1", .hook = true, .cmd = "exec sleep 600",
			     .annotations = { { "io.portres.reserve", "tcp:15000-15003" } } };
	struct ctr clash = { .id = "clash1", .hook = true, .cmd = "sleep 1",
			     .annotations = { { "io.portres.reserve", "udp:5000,tcp:15002" } } };
	char out[8192], netns[64];
	pid_t pid;

	cr_assert_neq(run_detached(&bad, &pid, out, sizeof(out)), 0, "started with a bad annotation");
	cr_assert(strstr(out, "io.portres.reserve") && strstr(out, "99999"), "runc said: %s", out);
	assert_nothing_left("bad1");
	/* a block the agent refuses: it overlaps the pod's, in the pod's netns */
	cr_assert_eq(run_detached(&first, &pid, out, sizeof(out)), 0, "runc run: %s", out);
	snprintf(netns, sizeof(netns), "/proc/%d/ns/net", (int)pid);
	clash.netns = netns;
	cr_assert_neq(run_detached(&clash, &pid, out, sizeof(out)), 0, "started with an overlapping block");
	cr_assert(strstr(out, "io.portres.reserve") && strstr(out, "overlaps"), "runc said: %s", out);
	assert_nothing_left("clash1");
	cr_assert_null(named("oci-clash1.udp"), "the UDP block made before the refusal is left");
	delete_ctr("pod1");
}

Test(containers, no_agent_is_a_clear_message)
{
	char cmd[8192], out[600];
	int st;

	ag_stop();
	snprintf(out, sizeof(out), "%s/hook.out", ag.tmp);
	snprintf(cmd, sizeof(cmd),
		 "echo '{\"ociVersion\":\"1.0.2\",\"id\":\"x\",\"pid\":%d,\"status\":\"creating\",\"bundle\":\"/nonexistent\","
		 "\"annotations\":{\"io.portres.reserve\":\"tcp:15000\"}}' | %s=%s %s createRuntime >%s 2>&1",
		 (int)getpid(), PORTRES_SOCKET_ENV, ag.sock, hook, out);
	st = system(cmd);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "status %d", st);
	cr_assert(strstr(cli_read(out), "no portres agent at"), "%s", cli_read(out));
}

/*
 * CRI-O gives every container of a pod the pod's annotations: the first one
 * makes the blocks, the others join them; a block outlives its maker while
 * another container of the pod is tied to it, and ends with the pod's netns.
 */
Test(containers, pod_members_share_the_pods_block)
{
	struct ctr a = { .id = "pause1", .hook = true, .cmd = "exec sleep 600",
			 .annotations = { { "io.portres.reserve", "tcp:15100-15103" } } };
	struct ctr b = { .id = "app1", .hook = true, .cmd = "exec nc -ll -p 0 -e /bin/cat",
			 .annotations = { { "io.portres.reserve", "tcp:15100-15103" } } };
	char out[8192], netns[64], tok[17];
	json_t *x;
	pid_t pa, pb;
	uint16_t port;

	cr_assert_eq(run_detached(&a, &pa, out, sizeof(out)), 0, "runc run: %s", out);
	snprintf(netns, sizeof(netns), "/proc/%d/ns/net", (int)pa);
	b.netns = netns;
	cr_assert_eq(run_detached(&b, &pb, out, sizeof(out)), 0, "runc run app1: %s", out);
	port = listener_of(pb);
	cr_assert(port >= 15100 && port <= 15103, "app1 listens on %u", port);
	cr_assert_null(named("oci-app1.tcp"), "app1 made a block of its own");
	x = cli_show("oci-pause1.tcp");
	snprintf(tok, sizeof(tok), "%s", json_string_value(json_object_get(x, "token")));
	cr_assert_eq(json_array_size(json_object_get(x, "attachments")), 2, "both containers are tied to the block");
	json_decref(x);
	/* the maker goes first: app1 still uses the block */
	delete_ctr("pause1");
	cr_assert_not_null(named("oci-pause1.tcp"), "the pod's block went with its maker");
	delete_ctr("app1");
	/* the pod's netns is gone: so is its block */
	for (int i = 0; i < 500 && (x = named("oci-pause1.tcp")); i++) {
		json_decref(x);
		usleep(10000);
	}
	cr_assert_null(named("oci-pause1.tcp"));
	cr_assert(ag_has_event("ended", tok) || ag_has_event("deleted", tok));
	cr_assert_not(ag_in_resv_map(tok));
}
