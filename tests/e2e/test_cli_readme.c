// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_cli_readme.c - README.md's examples work when pasted: the shell blocks
 * of its section "A reserved, enforced, visible block in a few lines" are fed,
 * line by line as a person pastes them, to one bash talking to the fixture's
 * agent (PORTRES_SOCKET), from the top of the repository.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_helpers.h"

TestSuite(cli_readme, .init = cli_setup, .fini = cli_teardown, .timeout = 120);

#define SECTION "## A reserved, enforced, visible block in a few lines"

/* The ```sh blocks of README's section, one after the other. */
static char *readme_examples(void)
{
	char *text = cli_read("README.md"), *out = calloc(1, strlen(text) + 1), *p, *end;

	cr_assert(out);
	p = strstr(text, SECTION);
	cr_assert_not_null(p, "README.md has no section \"%s\"", SECTION);
	end = strstr(p + strlen(SECTION), "\n## ");
	if (end)
		*end = '\0';
	while ((p = strstr(p, "```sh\n"))) {
		char *close = strstr(p += 6, "```");

		cr_assert_not_null(close);
		strncat(out, p, (size_t)(close - p));
		p = close + 3;
	}
	free(text);
	cr_assert(strlen(out) > 100, "no examples in the section: %s", out);
	return out;
}

/* True once the reservation named web has a socket (the server started in the background listens). */
static bool web_listens(void)
{
	struct cli_result r = cli_ctl("show", "web", "-o", "jsonpath={.reservation.sockets[*].port}", NULL);
	bool yes = r.status == 0 && r.out[0] >= '0' && r.out[0] <= '9';

	cli_result_free(&r);
	return yes;
}

Test(cli_readme, examples_work_when_pasted)
{
	char out[400], *lines = readme_examples(), *text, *line, *save = NULL;
	int in[2], status, fd;
	json_t *l;
	pid_t pid;

	snprintf(out, sizeof(out), "%s/readme.out", ag.tmp);
	cr_assert_eq(pipe(in), 0);
	fflush(NULL);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0 || dup2(in[0], 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
			_exit(125);
		close(in[1]);
		execlp("bash", "bash", "--norc", "--noprofile", "-s", (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	/* with sudo installed, root's `sudo` would drop PORTRES_SOCKET: here it runs the command as it is */
	dprintf(in[1], "sudo() { \"$@\"; }\n");
	for (line = strtok_r(lines, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *hash = strstr(line, "  #");
		size_t n;

		dprintf(in[1], "%s\n", line);
		/* as a person would: the server started in the background listens before the next line */
		if (hash)
			*hash = '\0';
		n = strlen(line);
		while (n && line[n - 1] == ' ')
			n--;
		if (n && line[n - 1] == '&') {
			for (int i = 0; i < 200 && !web_listens(); i++)
				usleep(100000);
			cr_assert(web_listens(), "the server of the example never listened: %s", cli_read(out));
		}
	}
	close(in[1]);
	status = cli_wait(pid, 60000);
	if (status < 0)
		kill(pid, SIGKILL);
	text = cli_read(out);
	cr_log_info("README transcript:\n%s", text);
	cr_assert_eq(status, 0, "bash ended with %d: %s", status, text);
	cr_assert(!strstr(text, "command not found") && !strstr(text, "No such file"), "%s", text);
	cr_assert(!strstr(text, "Try 'portresctl help"), "a usage error: %s", text);
	/* what each line says it does */
	cr_assert(strstr(text, "PermissionError: [Errno 13]"), "the foreign bind was not refused: %s", text);
	cr_assert(strstr(text, "IN-USE") && strstr(text, "1/10"), "list -o wide: %s", text);
	cr_assert(strstr(text, "deny      tcp 0.0.0.0:8005 ipv4") && strstr(text, "reason foreign-block"), "%s", text);
	cr_assert(strstr(text, "portres_denied_total{"), "%s", text);
	cr_assert(strstr(text, "portresctl: delete web: tcp 8000-8009 named web: in use by:\n  pid "), "%s", text);
	cr_assert(strstr(text, "(python3): tcp 0.0.0.0:800"), "the holder is named: %s", text);
	cr_assert(strstr(text, "my ports: ") && strstr(text, " +10\n"), "%s", text);
	/* the only error is the refusal the comment announces */
	{
		size_t errors = 0;

		for (const char *p = text; (p = strstr(p, "portresctl: ")); p++)
			errors++;
		cr_assert_eq(errors, 1, "%s", text);
	}
	/* and it cleaned up after itself: the block is deleted, the run's reservation ended */
	l = cli_list();
	cr_assert_eq(json_array_size(json_object_get(l, "reservations")), 0, "left: %s", json_dumps(l, 0));
	json_decref(l);
	free(text);
	free(lines);
}
