// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * portresctl - the command line of portres: a client of portresd's protocol
 * (user/common/proto.h). main() reads the global options and hands argv to
 * the subcommand of the table below.
 *
 * Exit status: 0 ok, 1 the operation failed, 2 usage error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "portres.h"
#include "subcommands.h"

#define VERSION "0.1.0"

const struct subcommand subcommands[] = {
	{ "create", cmd_create, "Creates a persistent reservation and prints its token.\n"
	  "--netns creates it in that network namespace (a netns file, a name of `ip netns`, or a\n"
	  "process's); it ends when the namespace does. Without it: the caller's namespace.",
	  "create --proto tcp|udp --start P --count N [--name NAME] [--mode enforce|audit|advisory]\n"
	  "                  [--grant-uid U]... [--grant-gid G]... [--grant-cgroup PATH]...\n"
	  "                  [--netns PATH|NAME|pid:PID]",
	  "portresctl create --proto tcp --start 8000 --count 10 --name web --grant-uid www-data" },
	{ "lookup", cmd_lookup, "Prints the token of a persistent reservation (start and count must match,\n"
	  "in the caller's network namespace or --netns's).",
	  "lookup (--proto tcp|udp --start P --count N | --name NAME) [--netns PATH|NAME|pid:PID]",
	  "portresctl lookup --proto tcp --start 8000 --count 10 --netns pod1" },
	{ "delete", cmd_delete, "Deletes a reservation, unless it is in use (then --force does).\n"
	  "In use: sockets bound in it, cgroups attached to it; each holder is named (pid, command,\n"
	  "address; cgroup). --dry-run checks only. By range: in the caller's network namespace or --netns's.",
	  "delete (--proto tcp|udp --start P --count N | --token T | --name NAME) [--force] [--dry-run]\n"
	  "                  [--netns PATH|NAME|pid:PID]",
	  "portresctl delete --name web --dry-run" },
	{ "list", cmd_list, "Lists every reservation, persistent and runtime, by protocol and port\n"
	  "(--netns: those of that network namespace). -o wide adds ports in use of its size, its network\n"
	  "namespace (as lsns shows it) and attached cgroups; -o json (or jsonpath=...) has them too, with\n"
	  "the counters.",
	  "list [--netns PATH|NAME|pid:PID] [-o wide|json|jsonpath=TEMPLATE] [--no-headers]",
	  "portresctl list -o jsonpath='{range .reservations[*]}{.name} {.in_use}{\"\\n\"}{end}'" },
	{ "show", cmd_show, "Shows a reservation: its ports in use and by whom, attached cgroups, counters.",
	  "show (TOKEN | NAME | --token T | --name NAME) [--netns PATH|NAME|pid:PID] [--json]",
	  "portresctl show web" },
	{ "who", cmd_who, "Tells which reservation owns a port and which sockets hold it\n"
	  "(in the caller's network namespace, or --netns's).",
	  "who PORT [--proto tcp|udp] [--netns PATH|NAME|pid:PID] [--json]",
	  "portresctl who 8005 --proto tcp --netns pid:4242" },
	{ "attach", cmd_attach, "Ties a cgroup subtree to a reservation: its sockets of that protocol are associated\n"
	  "with it. A cgroup holds one TCP and one UDP block: attaching the other protocol's block\n"
	  "adds it; replacing a block of the same protocol needs --force (and says what it replaced).\n"
	  "The block must live in the network namespace of the cgroup's processes.\n"
	  "--confine denies the subtree's binds outside its blocks, for the protocols it has blocks\n"
	  "for (a TCP block alone: UDP stays free); --confine=all denies every other protocol's binds\n"
	  "too. The cgroup is confined as the strongest of its attachments asks.",
	  "attach --cgroup PATH (--token T | --name NAME) [--confine | --confine=all] [--force]",
	  "portresctl attach --cgroup system.slice/nginx.service --name web --confine" },
	{ "detach", cmd_detach, "Unties a cgroup from its blocks (--token/--name: from that one only).",
	  "detach --cgroup PATH [--token T | --name NAME]",
	  "portresctl detach --cgroup system.slice/nginx.service" },
	{ "run", cmd_run, "Runs CMD in a fresh cgroup tied to a reservation.\n"
	  "CMD gets PORTRES_TOKEN, PORTRES_START, PORTRES_COUNT (and PORTRES_PROTO) in its environment;\n"
	  "portresctl exits with CMD's status (128+N if killed by signal N). --acquire N holds a\n"
	  "runtime reservation of N ports exactly as long as CMD runs.",
	  "run (--token T | --name NAME | --acquire N [--proto tcp|udp] [--start P]) [--confine]\n"
	  "                  [--cgroup-parent PATH] -- CMD [ARG...]",
	  "portresctl run --acquire 10 -- python3 -m http.server 0" },
	{ "apply", cmd_apply, "Makes the named persistent reservations and cgroup attachments those of FILE.\n"
	  "Checks the whole plan first; a conflict changes nothing. --prune also deletes named\n"
	  "reservations (and detaches cgroups) the file does not list, but refuses those in use (bound\n"
	  "sockets, attached cgroups: each holder named) unless --force; the transient cgroups of\n"
	  "portresctl run are never detached. --dry-run prints the plan and what would be refused.",
	  "apply -f FILE [--dry-run] [--prune [--force]] [--json]",
	  "portresctl apply -f /etc/portres/reservations.json --prune --dry-run" },
	{ "events", cmd_events, "Prints the agent's events: denials, audit hits, exhaustion and changes.\n"
	  "Denials and audit hits carry their reason and address; changes are created, deleted, updated,\n"
	  "acquired, released, attached, detached, ended (its network namespace went). The agent keeps\n"
	  "them across restarts (a bounded log).\n"
	  "Without --follow the kept ones, then it exits; --follow prints new ones as they come (the kept\n"
	  "ones first only with --since or --tail).",
	  "events [--follow] [--since DURATION|TIME] [--tail N] [--name NAME] [--type TYPE[,TYPE]...]\n"
	  "                  [--count N] [--timeout SEC] [--json]",
	  "portresctl events --since 1h --type deny --name web" },
	{ "top", cmd_top, "Shows the usage of every block, refreshed like watch.\n"
	  "Ports in use, binds allowed and denied, ports allocated, exhaustion and audit hits per second.\n"
	  "--iterations N prints N refreshes one after the other and exits.",
	  "top [--interval SEC] [--iterations N] [--name NAME] [--no-headers]",
	  "portresctl top --interval 1" },
	{ "metrics", cmd_metrics, "Prints the agent's counters in the Prometheus text format.",
	  "metrics [--json]",
	  "portresctl metrics | grep portres_denied_total" },
	{ "status", cmd_status, "Shows the agent: version, paths, reservations, clients, data-plane counters.",
	  "status [--json]",
	  "portresctl status" },
	{ "help", cmd_help, "Shows the commands, or the usage of one.",
	  "help [COMMAND]",
	  "portresctl help run" },
};
const size_t n_subcommands = sizeof(subcommands) / sizeof(subcommands[0]);

static void show_usage(FILE *f)
{
	fprintf(f, "usage: portresctl [--socket PATH] COMMAND [OPTIONS]\n\n"
		   "Port reservations for Linux, enforced by cgroup eBPF (agent: portresd).\n\ncommands:\n");
	for (size_t i = 0; i < n_subcommands; i++) {
		const char *d = subcommands[i].description;

		fprintf(f, "  %-8s %.*s\n", subcommands[i].name, (int)strcspn(d, "\n"), d);
	}
	fprintf(f, "\nThe agent's socket: --socket PATH, $%s, or %s.\n"
		   "Exit status: 0 ok, 1 operation failed, 2 usage error.\n"
		   "'portresctl help COMMAND' or 'portresctl COMMAND --help' shows a command's usage.\n",
		PORTRES_SOCKET_ENV, PORTRES_DEFAULT_SOCKET);
}

/* "unknown command "lsit"; did you mean "list"?" and where to look, not the whole usage. */
static int unknown_command(const char *name)
{
	const char *cands[32], *hint;
	size_t n = 0;

	for (size_t i = 0; i < n_subcommands && n < 32; i++)
		cands[n++] = subcommands[i].name;
	if ((hint = ctl_suggest(name, cands, n)))
		fprintf(stderr, "portresctl: unknown command \"%s\"; did you mean \"%s\"?\n", name, hint);
	else
		fprintf(stderr, "portresctl: unknown command \"%s\"\n", name);
	fprintf(stderr, "Try 'portresctl help' for the list of commands.\n");
	return CTL_USAGE;
}

int cmd_help(int argc, char *argv[])
{
	if (argc < 2) {
		show_usage(stdout);
		return CTL_OK;
	}
	for (size_t i = 0; i < n_subcommands; i++)
		if (!strcmp(subcommands[i].name, argv[1])) {
			ctl_usage(argv[1], false);
			return CTL_OK;
		}
	ctl.cmd = NULL;
	return unknown_command(argv[1]);
}

int main(int argc, char *argv[])
{
	int i = 1;

	ctl.socket = getenv(PORTRES_SOCKET_ENV);
	if (!ctl.socket || !ctl.socket[0])
		ctl.socket = PORTRES_DEFAULT_SOCKET;
	/* global options before the command */
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "--socket") && i + 1 < argc) {
			ctl.socket = argv[++i];
		} else if (!strncmp(argv[i], "--socket=", 9)) {
			ctl.socket = argv[i] + 9;
		} else if (!strcmp(argv[i], "--json")) {
			ctl.json = true;
		} else if ((!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) && i + 1 < argc) {
			if (ctl_set_output(argv[++i]))
				return CTL_USAGE;
		} else if (!strncmp(argv[i], "--output=", 9)) {
			if (ctl_set_output(argv[i] + 9))
				return CTL_USAGE;
		} else if (!strcmp(argv[i], "--no-headers")) {
			ctl.no_headers = true;
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			show_usage(stdout);
			return CTL_OK;
		} else if (!strcmp(argv[i], "--version")) {
			printf("portresctl %s\n", VERSION);
			return CTL_OK;
		} else {
			fprintf(stderr, "portresctl: unknown option %s (before the command)\n"
					"Try 'portresctl help'.\n", argv[i]);
			return CTL_USAGE;
		}
	}
	if (i == argc) {
		show_usage(stderr);
		return CTL_USAGE;
	}
	for (size_t k = 0; k < n_subcommands; k++) {
		if (strcmp(subcommands[k].name, argv[i]))
			continue;
		ctl.cmd = subcommands[k].name;
		optind = 0; /* glibc: start getopt afresh on the command's argv */
		return subcommands[k].fn(argc - i, argv + i);
	}
	return unknown_command(argv[i]);
}
