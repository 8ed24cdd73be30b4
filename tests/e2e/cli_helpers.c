// SPDX-License-Identifier: LGPL-2.1-or-later
/* cli_helpers.c - running portresctl against the fixture's agent (cli_helpers.h). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli_helpers.h"

#define CLI_MAX_ARGS 64
#define CLI_MAX_BG   16

static pid_t bg[CLI_MAX_BG];
static size_t n_bg;
static unsigned n_runs;

static const char *ctl_bin(void)
{
	const char *env = getenv("PORTRESCTL_BIN");
	const char *bin = env && *env ? env : "build/portresctl";
	struct stat sb;

	cr_assert(!stat(bin, &sb) && S_ISREG(sb.st_mode), "no portresctl program at %s: build it (make)", bin);
	return bin;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cli_setup(void)
{
	n_bg = 0;
	ag_setup();
	ag_start(NULL);
}

static bool populated(const char *dir)
{
	char path[4200];
	char *s;
	bool yes;

	snprintf(path, sizeof(path), "%.4000s/cgroup.events", dir);
	s = cli_read(path);
	yes = strstr(s, "populated 1") != NULL;
	free(s);
	return yes;
}

/* Kills the processes of every cgroup below dir (not dir: the test is in it), then removes them. */
static void remove_children(const char *dir)
{
	struct dirent *e;
	DIR *d = opendir(dir);

	if (!d)
		return;
	while ((e = readdir(d))) {
		char sub[4200], kill_file[4300];
		int fd;

		if (e->d_type != DT_DIR || e->d_name[0] == '.')
			continue;
		snprintf(sub, sizeof(sub), "%.3800s/%.255s", dir, e->d_name);
		remove_children(sub);
		snprintf(kill_file, sizeof(kill_file), "%.4100s/cgroup.kill", sub);
		if (populated(sub) && (fd = open(kill_file, O_WRONLY | O_CLOEXEC)) >= 0) {
			if (write(fd, "1", 1) < 0)
				fprintf(stderr, "cli: %s: %s\n", kill_file, strerror(errno));
			close(fd);
		}
		for (int i = 0; i < 250 && populated(sub); i++)
			usleep(20000);
		for (int i = 0; i < 50 && rmdir(sub) && errno == EBUSY; i++)
			usleep(20000);
	}
	closedir(d);
}

void cli_teardown(void)
{
	for (size_t i = 0; i < n_bg; i++) {
		kill(bg[i], SIGKILL);
		waitpid(bg[i], NULL, 0);
	}
	n_bg = 0;
	ag_kill_tracked();
	if (ag.cgroup[0])
		remove_children(ag.cgroup);
	ag_teardown();
}

char *cli_agent_help(void)
{
	const char *bin = getenv("PORTRESD_BIN");
	char cmd[600], *out;
	FILE *p;

	snprintf(cmd, sizeof(cmd), "%s --help", bin && *bin ? bin : "build/portresd");
	p = popen(cmd, "r");
	cr_assert(p);
	out = calloc(1, 65536);
	cr_assert(out && fread(out, 1, 65535, p) > 0);
	cr_assert_eq(pclose(p), 0);
	return out;
}

char *cli_read(const char *path)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t n = 0, cap = 0, got;

	if (f) {
		do {
			if (n + 4096 > cap) {
				cap = cap * 2 + 8192;
				buf = realloc(buf, cap);
				cr_assert(buf);
			}
			got = fread(buf + n, 1, cap - n - 1, f);
			n += got;
		} while (got);
		fclose(f);
	}
	if (!buf)
		buf = calloc(1, 1);
	buf[n] = '\0';
	return buf;
}

static pid_t start(const char *const *args, const char *out, const char *err)
{
	const char *argv[CLI_MAX_ARGS + 2];
	size_t n = 0;
	pid_t pid;

	argv[n++] = ctl_bin();
	for (size_t i = 0; args[i] && n < CLI_MAX_ARGS; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	fflush(NULL);
	pid = fork();
	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		int fe = err ? open(err, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : fo;
		int null = open("/dev/null", O_RDONLY | O_CLOEXEC);

		if (fo < 0 || fe < 0 || null < 0 || dup2(null, 0) < 0 || dup2(fo, 1) < 0 || dup2(fe, 2) < 0)
			_exit(125);
		execv(argv[0], (char *const *)argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(125);
	}
	return pid;
}

int cli_wait(pid_t pid, int timeout_ms)
{
	long long end = now_ms() + timeout_ms;
	int status;

	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			break;
		cr_assert(r == 0, "waitpid: %s", strerror(errno));
		if (now_ms() > end)
			return -1;
		usleep(10000);
	}
	for (size_t i = 0; i < n_bg; i++)
		if (bg[i] == pid)
			bg[i] = bg[--n_bg];
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

struct cli_result cli_ctlv(const char *const *argv)
{
	struct cli_result r;
	char out[400], err[400];
	pid_t pid;

	snprintf(out, sizeof(out), "%s/cli-%u.out", ag.tmp, n_runs);
	snprintf(err, sizeof(err), "%s/cli-%u.err", ag.tmp, n_runs++);
	pid = start(argv, out, err);
	r.status = cli_wait(pid, 30000);
	if (r.status < 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	r.out = cli_read(out);
	r.err = cli_read(err);
	cr_assert(r.status >= 0, "portresctl %s did not finish in 30 s; stdout: %s; stderr: %s", argv[0], r.out,
		  r.err);
	cr_log_info("portresctl %s ... -> %d\n%s%s", argv[0], r.status, r.out, r.err);
	return r;
}

struct cli_result cli_ctl(const char *arg, ...)
{
	const char *argv[CLI_MAX_ARGS + 1];
	size_t n = 0;
	va_list ap;

	va_start(ap, arg);
	for (const char *a = arg; a && n < CLI_MAX_ARGS; a = va_arg(ap, const char *))
		argv[n++] = a;
	va_end(ap);
	argv[n] = NULL;
	return cli_ctlv(argv);
}

void cli_result_free(struct cli_result *r)
{
	free(r->out);
	free(r->err);
	r->out = r->err = NULL;
}

json_t *cli_json(const struct cli_result *r)
{
	json_error_t e;
	json_t *j = json_loads(r->out, 0, &e);

	cr_assert(j, "stdout is not JSON (%s at %d:%d): %s", e.text, e.line, e.column, r->out);
	return j;
}

pid_t cli_spawn(const char *out_path, const char *arg, ...)
{
	const char *argv[CLI_MAX_ARGS + 1];
	size_t n = 0;
	va_list ap;
	pid_t pid;

	va_start(ap, arg);
	for (const char *a = arg; a && n < CLI_MAX_ARGS; a = va_arg(ap, const char *))
		argv[n++] = a;
	va_end(ap);
	argv[n] = NULL;
	cr_assert(n_bg < CLI_MAX_BG);
	pid = start(argv, out_path, NULL);
	bg[n_bg++] = pid;
	return pid;
}

json_t *cli_list(void)
{
	struct cli_result r = cli_ctl("list", "--json", NULL);
	json_t *j;

	CLI_ASSERT_STATUS(r, 0);
	j = cli_json(&r);
	cli_result_free(&r);
	return j;
}

json_t *cli_show(const char *sel)
{
	struct cli_result r = cli_ctl("show", sel, "--json", NULL);
	json_t *j, *res;

	CLI_ASSERT_STATUS(r, 0);
	j = cli_json(&r);
	res = json_incref(json_object_get(j, "reservation"));
	cr_assert_not_null(res, "show %s: no reservation in %s", sel, r.out);
	json_decref(j);
	cli_result_free(&r);
	return res;
}

const char *cli_create(const char *proto, unsigned start_port, unsigned count, const char *name)
{
	static char token[17];
	char s[8], c[8];
	struct cli_result r;

	snprintf(s, sizeof(s), "%u", start_port);
	snprintf(c, sizeof(c), "%u", count);
	if (name)
		r = cli_ctl("create", "--proto", proto, "--start", s, "--count", c, "--name", name, NULL);
	else
		r = cli_ctl("create", "--proto", proto, "--start", s, "--count", c, NULL);
	cr_assert_eq(r.status, 0, "create %s %s+%s: %s", proto, s, c, r.err);
	cr_assert_eq(strlen(r.out), 17, "create prints a token and a newline: \"%s\"", r.out);
	memcpy(token, r.out, 16);
	token[16] = '\0';
	cli_result_free(&r);
	return token;
}

void cli_cgroup(const char *name, char *path, size_t len)
{
	snprintf(path, len, "%s/%s", ag.cgroup, name);
	cr_assert(mkdir(path, 0755) == 0 || errno == EEXIST, "mkdir %s: %s", path, strerror(errno));
}

int cli_in_cgroup(const char *cgroup, int (*fn)(void *arg), void *arg)
{
	pid_t pid;
	int status;

	fflush(NULL);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		char procs[4200];
		int fd;

		snprintf(procs, sizeof(procs), "%s/cgroup.procs", cgroup);
		fd = open(procs, O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write(fd, "0", 1) != 1)
			_exit(125);
		close(fd);
		_exit(fn(arg));
	}
	cr_assert(waitpid(pid, &status, 0) == pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool cli_wait_file(const char *path, const char *text, int timeout_ms)
{
	long long end = now_ms() + timeout_ms;

	do {
		char *s = cli_read(path);
		bool found = strstr(s, text) != NULL;

		free(s);
		if (found)
			return true;
		usleep(20000);
	} while (now_ms() < end);
	return false;
}

uint16_t cli_wait_listener(int timeout_ms)
{
	long long end = now_ms() + timeout_ms;

	do {
		char *s = cli_read("/proc/net/tcp"), *line = strchr(s, '\n');
		unsigned addr, port, state;
		uint16_t found = 0;

		while (line && !found) {
			line++;
			if (sscanf(line, " %*d: %x:%x %*x:%*x %x", &addr, &port, &state) == 3 && state == 0x0A &&
			    addr == htonl(INADDR_LOOPBACK))
				found = (uint16_t)port;
			line = strchr(line, '\n');
		}
		free(s);
		if (found)
			return found;
		usleep(50000);
	} while (now_ms() < end);
	return 0;
}

int cli_http_get(uint16_t port, const char *path, char **body)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct timeval tv = { .tv_sec = 10 };
	char req[512], *buf = NULL, *b;
	size_t n = 0, cap = 0;
	int fd, status = 0;
	ssize_t got;

	*body = NULL;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		close(fd);
		return 0;
	}
	snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
	if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
		close(fd);
		return 0;
	}
	do {
		if (n + 4096 > cap) {
			cap = cap * 2 + 8192;
			buf = realloc(buf, cap);
			cr_assert(buf);
		}
		got = read(fd, buf + n, cap - n - 1);
		if (got > 0)
			n += (size_t)got;
	} while (got > 0);
	close(fd);
	if (!buf)
		return 0;
	buf[n] = '\0';
	sscanf(buf, "HTTP/%*s %d", &status);
	b = strstr(buf, "\r\n\r\n");
	*body = strdup(b ? b + 4 : "");
	free(buf);
	return status;
}

const char *cli_write_tmp(const char *name, const char *text)
{
	static char path[400];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", ag.tmp, name);
	f = fopen(path, "we");
	cr_assert(f, "%s: %s", path, strerror(errno));
	fputs(text, f);
	fclose(f);
	return path;
}

json_t *cli_find_runtime(json_t *list, unsigned count)
{
	json_t *r;
	size_t i;

	json_array_foreach(json_object_get(list, "reservations"), i, r)
		if (!strcmp(json_string_value(json_object_get(r, "kind")) ?: "", "runtime") &&
		    json_integer_value(json_object_get(r, "count")) == count)
			return r;
	return NULL;
}
