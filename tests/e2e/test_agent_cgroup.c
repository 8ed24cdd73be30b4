// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_agent_cgroup.c - the agent and cgroups: an attachment whose cgroup is
 * removed disappears (list, show, the BPF map, the state file) within a
 * short bounded wait, also after a restart; a sibling's removal changes
 * nothing; sockets in show/who replies and events carry their
 * cgroup's path, and portresctl prints it.
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <bpf/bpf.h>
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

TestSuite(agent_cgroup, .init = cli_setup, .fini = cli_teardown, .timeout = 90);

#define GONE_MS 2000

static uint64_t cg_id(const char *path)
{
	struct stat sb;

	cr_assert(stat(path, &sb) == 0, "%s: %s", path, strerror(errno));
	return (uint64_t)sb.st_ino;
}

/* Whether the pinned cgroup map has an entry for id. */
static bool in_map(uint64_t id)
{
	char pin[400];
	unsigned char value[256];
	int fd;
	bool found;

	snprintf(pin, sizeof(pin), "%s/maps/portres_cgroups", ag.bpffs);
	fd = bpf_obj_get(pin);
	cr_assert(fd >= 0, "%s: %s", pin, strerror(errno));
	found = bpf_map_lookup_elem(fd, &id, value) == 0;
	close(fd);
	return found;
}

/* The attachment paths of the reservation sel, from the agent's show reply, joined by spaces. */
static void attachments(const char *sel_json, char *buf, size_t len)
{
	char req[256];
	json_t *r, *x;
	size_t i, n = 0;

	snprintf(req, sizeof(req), "{\"v\":1,\"op\":\"show\",%s}", sel_json);
	r = ag_req(req, -1);
	cr_assert_str_eq(ag_errno(r), "", "show %s", sel_json);
	buf[0] = '\0';
	json_array_foreach(json_object_get(json_object_get(r, "reservation"), "attachments"), i, x)
		n += (size_t)snprintf(buf + n, len - n, "%s%s", n ? " " : "", json_string_value(json_object_get(x, "path")));
	json_decref(r);
}

/* Every attachment path of the list reply, joined by spaces. */
static void listed(char *buf, size_t len)
{
	json_t *l = ag_req("{\"v\":1,\"op\":\"list\"}", -1), *r, *x;
	size_t i, j, n = 0;

	buf[0] = '\0';
	json_array_foreach(json_object_get(l, "reservations"), i, r)
		json_array_foreach(json_object_get(r, "attachments"), j, x)
			n += (size_t)snprintf(buf + n, len - n, "%s%s", n ? " " : "",
					      json_string_value(json_object_get(x, "path")));
	json_decref(l);
}

static bool wait_listed(const char *want, char *got, size_t len)
{
	for (int i = 0; i < GONE_MS / 10; i++) {
		listed(got, len);
		if (!strcmp(got, want))
			return true;
		usleep(10000);
	}
	return false;
}

static void attach(const char *cgroup, const char *flag, const char *sel)
{
	struct cli_result r = cli_ctl("attach", "--cgroup", cgroup, flag, sel, NULL);

	CLI_ASSERT_STATUS(r, 0);
	cli_result_free(&r);
}

Test(agent_cgroup, removed_cgroup_is_detached)
{
	char gone[4200], stay[4200], other[4200], want[9000], got[9000], *text;
	uint64_t gone_id, stay_id;

	cli_cgroup("gone", gone, sizeof(gone));
	cli_cgroup("stay", stay, sizeof(stay));
	cli_cgroup("other", other, sizeof(other));
	cli_create("tcp", 40000, 10, "web");
	attach(gone, "--name", "web");
	attach(stay, "--name", "web");
	gone_id = cg_id(gone);
	stay_id = cg_id(stay);
	attachments("\"name\":\"web\"", got, sizeof(got));
	snprintf(want, sizeof(want), "%s %s", gone, stay);
	cr_assert_str_eq(got, want);
	cr_assert(in_map(gone_id) && in_map(stay_id));

	/* a sibling that is not attached goes: nothing changes */
	cr_assert(rmdir(other) == 0, "rmdir %s: %s", other, strerror(errno));
	usleep(200000);
	listed(got, sizeof(got));
	cr_assert_str_eq(got, want);

	/* the attached cgroup goes: so does its attachment, everywhere */
	cr_assert(rmdir(gone) == 0, "rmdir %s: %s", gone, strerror(errno));
	cr_assert(wait_listed(stay, got, sizeof(got)), "after %d ms list still has: %s", GONE_MS, got);
	attachments("\"name\":\"web\"", got, sizeof(got));
	cr_assert_str_eq(got, stay);
	cr_assert(!in_map(gone_id), "the BPF map still has cgroup %llu", (unsigned long long)gone_id);
	cr_assert(in_map(stay_id));
	text = ag_db("SELECT path FROM attachments");
	cr_assert(!strstr(text, gone) && strstr(text, stay), "the database's attachments: %s", text);
	free(text);
	cr_assert(ag_log_has("was removed: its attachment to token"));

	/* a restarted agent watches what it finds in the state file */
	ag_kill9();
	ag_start(NULL);
	listed(got, sizeof(got));
	cr_assert_str_eq(got, stay);
	cr_assert(in_map(stay_id));
	cr_assert(rmdir(stay) == 0);
	cr_assert(wait_listed("", got, sizeof(got)), "after %d ms list still has: %s", GONE_MS, got);
	cr_assert(!in_map(stay_id));
}

Test(agent_cgroup, adopted_runtime_attachment)
{
	struct portres_instance in;
	char cg[4200], got[9000], tok[17], idpath[64];
	struct cli_result r;
	uint64_t id;
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cli_cgroup("job", cg, sizeof(cg));
	id = cg_id(cg);
	cr_assert_eq(portres_acquire(s, &(struct portres_range){ 0, 4 }, &in), 0, "%s", strerror(errno));
	snprintf(tok, sizeof(tok), "%016llx", (unsigned long long)in.token);
	attach(cg, "--token", tok);
	/* after a restart the agent knows a runtime attachment by its id only, and finds its path */
	ag_kill9();
	ag_start(NULL);
	cr_assert(wait_listed(cg, got, sizeof(got)), "list has: %s", got);
	snprintf(idpath, sizeof(idpath), "cgroup-id:%llu", (unsigned long long)id);
	cr_assert(!strstr(got, idpath));
	r = cli_ctl("show", tok, NULL);
	CLI_ASSERT_STATUS(r, 0);
	cr_assert(strstr(r.out, cg), "%s", r.out);
	cli_result_free(&r);
	cr_assert(rmdir(cg) == 0);
	cr_assert(wait_listed("", got, sizeof(got)), "after %d ms list still has: %s", GONE_MS, got);
	cr_assert(!in_map(id));
	close(s);
}

/* A process in a cgroup holding a listening socket on a port. */
struct holder {
	pid_t pid;
	int done;  /* write end: closing it ends the holder */
};

static struct holder hold_port(const char *cgroup, uint16_t port, uint16_t deny_port)
{
	int ready[2], done[2];
	struct holder h;
	char c;

	cr_assert(pipe2(ready, O_CLOEXEC) == 0 && pipe2(done, O_CLOEXEC) == 0);
	fflush(NULL);
	h.pid = fork();
	cr_assert(h.pid >= 0);
	if (h.pid == 0) {
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
		char procs[4300];
		FILE *f;
		int fd;

		close(ready[0]);
		close(done[1]);
		snprintf(procs, sizeof(procs), "%.4200s/cgroup.procs", cgroup);
		if (!(f = fopen(procs, "we")) || fputs("0", f) < 0 || fclose(f))
			_exit(1);
		inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 1))
			_exit(2);
		/* a denied bind, for an event from this cgroup */
		sa.sin_port = htons(deny_port);
		if (bind(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), (struct sockaddr *)&sa, sizeof(sa)) == 0)
			_exit(3);
		if (write(ready[1], "r", 1) != 1)
			_exit(4);
		if (read(done[0], &c, 1) < 0)
			_exit(5);
		_exit(0);
	}
	close(ready[1]);
	close(done[0]);
	cr_assert_eq(read(ready[0], &c, 1), 1, "the holder did not start");
	close(ready[0]);
	h.done = done[1];
	return h;
}

static void release_holder(struct holder *h)
{
	int status;

	close(h->done);
	cr_assert(waitpid(h->pid, &status, 0) == h->pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "holder status %d", status);
}

static const char *first_socket_cgroup(json_t *sockets)
{
	return json_string_value(json_object_get(json_array_get(sockets, 0), "cgroup")) ?: "";
}

Test(agent_cgroup, socket_cgroup_paths)
{
	char svc[4200];
	struct cli_result r;
	struct holder h;
	json_t *j, *ev;
	bool seen = false;
	size_t i;

	cli_cgroup("svc", svc, sizeof(svc));
	cli_create("tcp", 40000, 10, "web");
	cli_create("tcp", 41000, 10, "other");
	attach(svc, "--name", "web");
	h = hold_port(svc, 40003, 41005);

	/* the agent's replies carry the path */
	j = ag_req("{\"v\":1,\"op\":\"show\",\"name\":\"web\"}", -1);
	cr_assert_str_eq(first_socket_cgroup(json_object_get(json_object_get(j, "reservation"), "sockets")), svc,
			 "%s", json_dumps(j, 0));
	json_decref(j);
	j = ag_req("{\"v\":1,\"op\":\"who\",\"port\":40003}", -1);
	cr_assert_str_eq(first_socket_cgroup(json_object_get(j, "sockets")), svc);
	json_decref(j);
	/* and so do events: the denied bind of 41005 */
	j = ag_req("{\"v\":1,\"op\":\"events\"}", -1);
	json_array_foreach(json_object_get(j, "recent"), i, ev)
		seen |= !strcmp(json_string_value(json_object_get(ev, "type")) ?: "", "deny") &&
			json_integer_value(json_object_get(ev, "port")) == 41005 &&
			!strcmp(json_string_value(json_object_get(ev, "cgroup")) ?: "", svc);
	cr_assert(seen, "no deny event of 41005 from %s: %s", svc, json_dumps(j, 0));
	json_decref(j);

	/* portresctl prints it */
	r = cli_ctl("show", "web", NULL);
	CLI_ASSERT_STATUS(r, 0);
	cr_assert(strstr(r.out, "40003") && strstr(r.out, svc), "%s", r.out);
	cli_result_free(&r);
	r = cli_ctl("who", "40003", "--json", NULL);
	CLI_ASSERT_STATUS(r, 0);
	j = cli_json(&r);
	cr_assert_str_eq(first_socket_cgroup(json_object_get(j, "sockets")), svc);
	json_decref(j);
	cli_result_free(&r);
	release_holder(&h);
}
