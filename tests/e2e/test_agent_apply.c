// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_agent_apply.c - portresd --apply FILE: applied once the agent is up,
 * applied again when the file changes (rename, in-place write, a Kubernetes
 * ConfigMap's ..data swap, a file that appears later), all or nothing on a
 * bad file, a conflict or a step that fails, the agent serving throughout.
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli_helpers.h"

TestSuite(agent_apply, .init = ag_setup, .fini = cli_teardown, .timeout = 90);

#define CONVERGE_MS 5000

static json_t *list(void)
{
	return ag_req("{\"v\":1,\"op\":\"list\"}", -1);
}

static const char *field(json_t *l, const char *name, const char *key)
{
	return json_string_value(json_object_get(ag_named(l, name), key)) ?: "";
}

struct named_resv {
	long long start;
	char text[96];
};

static int by_start(const void *a, const void *b)
{
	const struct named_resv *x = a, *y = b;

	return (x->start > y->start) - (x->start < y->start);
}

/* "name1=mode1 name2=mode2 ..." of the named reservations, by start: what the agent holds. */
static void summary(char *buf, size_t len)
{
	struct named_resv v[64];
	json_t *l = list(), *r;
	size_t i, n = 0, off = 0;

	json_array_foreach(json_object_get(l, "reservations"), i, r) {
		if (!json_object_get(r, "name") || n == 64)
			continue;
		v[n].start = json_integer_value(json_object_get(r, "start"));
		snprintf(v[n++].text, sizeof(v[0].text), "%s=%s", json_string_value(json_object_get(r, "name")),
			 json_string_value(json_object_get(r, "mode")));
	}
	json_decref(l);
	qsort(v, n, sizeof(v[0]), by_start);
	buf[0] = '\0';
	for (i = 0; i < n && off < len; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? " " : "", v[i].text);
}

static bool wait_summary(const char *want, char *got, size_t len)
{
	for (int i = 0; i < CONVERGE_MS / 20; i++) {
		summary(got, len);
		if (!strcmp(got, want))
			return true;
		usleep(20000);
	}
	return false;
}

/* Writes by rename, as editors and `sed -i` do. */
static void write_renamed(const char *path, const char *text)
{
	char tmp[600];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "we");
	cr_assert(f, "%s: %s", tmp, strerror(errno));
	fputs(text, f);
	cr_assert(fclose(f) == 0);
	cr_assert(rename(tmp, path) == 0, "rename %s: %s", path, strerror(errno));
}

/* Writes in place (truncate and write: IN_CLOSE_WRITE). */
static void write_in_place(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_TRUNC | O_CREAT | O_CLOEXEC, 0644);

	cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
	cr_assert(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
	close(fd);
}

#define RESV_WEB   "{ \"name\": \"web\", \"proto\": \"tcp\", \"ports\": \"40000-40009\" }"
#define RESV_DNS   "{ \"name\": \"dns\", \"proto\": \"udp\", \"start\": 5300, \"count\": 4, \"mode\": \"%s\" }"
#define RESV_KUBE  "{ \"name\": \"kubelet\", \"proto\": \"tcp\", \"ports\": 10250 }"

/* The file: web, dns (in dns_mode), web attached to cgroup, plus more reservations. */
static const char *conf(const char *cgroup, const char *dns_mode, const char *more)
{
	static char text[16384];
	char dns[256];

	snprintf(dns, sizeof(dns), RESV_DNS, dns_mode);
	snprintf(text, sizeof(text),
		 "{ \"version\": 1,\n"
		 "  \"reservations\": [ " RESV_WEB ",\n    %s%s%s ],\n"
		 "  \"attachments\": [ { \"cgroup\": \"%s\", \"reservation\": \"web\" } ]\n}\n",
		 dns, more[0] ? ",\n    " : "", more, cgroup);
	return text;
}

static void start_with(const char *file, bool prune)
{
	const char *extra[] = { "--apply", file, prune ? "--apply-prune" : NULL, NULL };

	ag_start(extra);
}

Test(agent_apply, start_change_conflict_rollback)
{
	char cg[4200], file[400], got[1024], dns_token[17], web_token[17];
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(42005) };
	json_t *l, *r;
	int held, one = 1;

	cli_cgroup("web", cg, sizeof(cg));
	snprintf(file, sizeof(file), "%s/reservations.json", ag.tmp);
	write_renamed(file, conf(cg, "audit", ""));
	start_with(file, false);

	/* applied once the agent is up: the first request already sees it */
	summary(got, sizeof(got));
	cr_assert_str_eq(got, "dns=audit web=enforce");
	l = list();
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(ag_named(l, "web"), "attachments"), 0),
							   "path")) ?: "", cg);
	snprintf(dns_token, sizeof(dns_token), "%s", field(l, "dns", "token"));
	snprintf(web_token, sizeof(web_token), "%s", field(l, "web", "token"));
	json_decref(l);
	cr_assert(ag_log_has("3 changes applied"));

	/* renamed over: one more, and a mode changed (the token stays) */
	write_renamed(file, conf(cg, "enforce", RESV_KUBE));
	cr_assert(wait_summary("dns=enforce kubelet=enforce web=enforce", got, sizeof(got)), "agent has: %s", got);
	l = list();
	cr_assert_str_eq(field(l, "dns", "token"), dns_token);
	cr_assert_str_eq(field(l, "web", "token"), web_token);
	json_decref(l);

	/* written in place */
	write_in_place(file, conf(cg, "enforce", RESV_KUBE ", { \"name\": \"extra\", \"proto\": \"udp\", \"ports\": 5400 }"));
	cr_assert(wait_summary("dns=enforce extra=enforce kubelet=enforce web=enforce", got, sizeof(got)),
		  "agent has: %s", got);

	/* a conflict with what the agent has: one line naming file and cause, nothing changes */
	r = ag_req("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":41000,\"count\":5,\"name\":\"manual\"}", -1);
	cr_assert_str_eq(ag_errno(r), "");
	json_decref(r);
	write_renamed(file, conf(cg, "advisory", RESV_KUBE ", { \"name\": \"clash\", \"proto\": \"tcp\", \"ports\": \"41002-41003\" }"));
	cr_assert(ag_log_wait("clash (tcp 41002-41003) overlaps persistent reservation tcp 41000-41004 named manual",
			      CONVERGE_MS),
		  "no conflict line in %s", ag.log);
	cr_assert(ag_log_has("reservations.json: "));
	summary(got, sizeof(got));
	cr_assert_str_eq(got, "dns=enforce extra=enforce kubelet=enforce web=enforce manual=enforce");
	r = ag_req("{\"v\":1,\"op\":\"status\"}", -1);
	cr_assert_str_eq(ag_errno(r), "", "the agent still answers");
	json_decref(r);

	/* not JSON */
	write_renamed(file, "{ \"reservations\": [ oops ] }\n");
	cr_assert(ag_log_wait("reservations.json:1:", CONVERGE_MS), "no parse error line in %s", ag.log);
	summary(got, sizeof(got));
	cr_assert_str_eq(got, "dns=enforce extra=enforce kubelet=enforce web=enforce manual=enforce");

	/* a step that fails mid-way (a port held by a socket): the steps done are undone */
	held = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	setsockopt(held, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	cr_assert(bind(held, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(held, 1) == 0);
	write_renamed(file, conf(cg, "advisory", RESV_KUBE ", { \"name\": \"first\", \"proto\": \"tcp\", \"ports\": 42100 },"
						    " { \"name\": \"held\", \"proto\": \"tcp\", \"ports\": \"42000-42009\" }"));
	cr_assert(ag_log_wait("create held tcp 42000-42009 enforce: tcp 42000-42009: in use by: pid ", CONVERGE_MS),
		  "no failure line in %s", ag.log);
	cr_assert(ag_log_wait("rolled back", CONVERGE_MS));
	summary(got, sizeof(got));
	cr_assert_str_eq(got, "dns=enforce extra=enforce kubelet=enforce web=enforce manual=enforce",
			 "the dns mode and first must be as before: %s", got);

	/* the holder goes, the same file is written again: now it applies */
	close(held);
	write_in_place(file, conf(cg, "advisory", RESV_KUBE ", { \"name\": \"first\", \"proto\": \"tcp\", \"ports\": 42100 },"
						      " { \"name\": \"held\", \"proto\": \"tcp\", \"ports\": \"42000-42009\" }"));
	cr_assert(wait_summary("dns=advisory extra=enforce kubelet=enforce web=enforce manual=enforce held=enforce "
			       "first=enforce", got, sizeof(got)), "agent has: %s", got);
	l = list();
	cr_assert_str_eq(field(l, "dns", "token"), dns_token);
	cr_assert_str_eq(field(l, "web", "token"), web_token);
	json_decref(l);
}

Test(agent_apply, configmap_swap_and_late_file)
{
	char dir[400], path[600], target[600], got[1024], cg[4200];
	const char *file;

	cli_cgroup("web", cg, sizeof(cg));
	/* a ConfigMap volume: reservations.json -> ..data/reservations.json, ..data -> ..<timestamp> */
	snprintf(dir, sizeof(dir), "%s/cm", ag.tmp);
	cr_assert(mkdir(dir, 0755) == 0);
	snprintf(path, sizeof(path), "%s/..2026_01_01_00_00_00.1", dir);
	cr_assert(mkdir(path, 0755) == 0);
	snprintf(path, sizeof(path), "%s/..2026_01_01_00_00_00.1/reservations.json", dir);
	write_in_place(path, conf(cg, "audit", ""));
	snprintf(path, sizeof(path), "%s/..data", dir);
	cr_assert(symlink("..2026_01_01_00_00_00.1", path) == 0);
	snprintf(path, sizeof(path), "%s/reservations.json", dir);
	cr_assert(symlink("..data/reservations.json", path) == 0);
	start_with(path, false);
	summary(got, sizeof(got));
	cr_assert_str_eq(got, "dns=audit web=enforce");

	/* kubelet's update: new directory, ..data_tmp -> it, renamed over ..data, old directory removed */
	snprintf(target, sizeof(target), "%s/..2026_01_01_00_01_00.2", dir);
	cr_assert(mkdir(target, 0755) == 0);
	snprintf(target, sizeof(target), "%s/..2026_01_01_00_01_00.2/reservations.json", dir);
	write_in_place(target, conf(cg, "enforce", RESV_KUBE));
	snprintf(target, sizeof(target), "%s/..data_tmp", dir);
	cr_assert(symlink("..2026_01_01_00_01_00.2", target) == 0);
	snprintf(path, sizeof(path), "%s/..data", dir);
	cr_assert(rename(target, path) == 0);
	snprintf(path, sizeof(path), "%s/..2026_01_01_00_00_00.1/reservations.json", dir);
	cr_assert(unlink(path) == 0);
	snprintf(path, sizeof(path), "%s/..2026_01_01_00_00_00.1", dir);
	cr_assert(rmdir(path) == 0);
	cr_assert(wait_summary("dns=enforce kubelet=enforce web=enforce", got, sizeof(got)), "agent has: %s", got);

	/* a file that is not there at start: logged, served, applied when it appears */
	ag_kill9();
	snprintf(path, sizeof(path), "%s/late.json", ag.tmp);
	start_with(path, false);
	cr_assert(ag_log_wait("late.json: cannot read: No such file or directory; keeping the current reservations",
			      CONVERGE_MS));
	summary(got, sizeof(got));
	cr_assert_str_eq(got, "dns=enforce kubelet=enforce web=enforce");
	file = cli_write_tmp("late.json", "{ \"reservations\": [ " RESV_WEB ", " RESV_KUBE " ] }\n");
	cr_assert_str_eq(file, path);
	/* without --apply-prune nothing the file lacks is deleted */
	cr_assert(ag_log_wait("late.json: 0 changes applied, 2 unchanged", CONVERGE_MS), "log %s", ag.log);
	summary(got, sizeof(got));
	cr_assert_str_eq(got, "dns=enforce kubelet=enforce web=enforce");
}

Test(agent_apply, prune)
{
	char file[400], got[1024];
	json_t *r;

	snprintf(file, sizeof(file), "%s/reservations.json", ag.tmp);
	write_renamed(file, "{ \"reservations\": [ " RESV_WEB ", " RESV_KUBE " ] }\n");
	start_with(file, true);
	summary(got, sizeof(got));
	cr_assert_str_eq(got, "kubelet=enforce web=enforce");
	/* an unnamed reservation is never pruned; a named one the file lacks is */
	r = ag_req("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":41000,\"count\":5}", -1);
	cr_assert_str_eq(ag_errno(r), "");
	json_decref(r);
	write_renamed(file, "{ \"reservations\": [ " RESV_WEB " ] }\n");
	cr_assert(wait_summary("web=enforce", got, sizeof(got)), "agent has: %s", got);
	r = list();
	cr_assert_eq(json_array_size(json_object_get(r, "reservations")), 2, "web and the unnamed one");
	json_decref(r);
}

Test(agent_apply, documented)
{
	char *out = cli_agent_help();

	cr_assert(strstr(out, "--apply FILE") && strstr(out, "--apply-prune") && strstr(out, "EDQUOT"), "%s", out);
	free(out);
	out = cli_read("scripts/man/portresd.8");
	cr_assert(strstr(out, "\\-\\-apply") && strstr(out, "\\-\\-apply\\-prune") && strstr(out, "EDQUOT"));
	free(out);
}
