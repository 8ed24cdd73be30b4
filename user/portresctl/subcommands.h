/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * subcommands.h - portresctl's commands. main.c holds the table (name,
 * handler, one-line description, usage, example); each handler lives in the
 * file named in the comment and returns CTL_OK, CTL_FAIL or CTL_USAGE.
 * argv[0] is the command's name.
 */
#ifndef PORTRESCTL_SUBCOMMANDS_H
#define PORTRESCTL_SUBCOMMANDS_H

#include <stddef.h>

struct subcommand {
	const char *name;
	int (*fn)(int argc, char *argv[]);
	const char *description;
	const char *usage;   /* options, one per line after the synopsis */
	const char *example;
};

extern const struct subcommand subcommands[];
extern const size_t n_subcommands;

int cmd_create(int argc, char *argv[]);  /* persistent.c */
int cmd_lookup(int argc, char *argv[]);  /* persistent.c */
int cmd_delete(int argc, char *argv[]);  /* persistent.c */
int cmd_list(int argc, char *argv[]);    /* show.c */
int cmd_show(int argc, char *argv[]);    /* show.c */
int cmd_who(int argc, char *argv[]);     /* show.c */
int cmd_attach(int argc, char *argv[]);  /* attach.c */
int cmd_detach(int argc, char *argv[]);  /* attach.c */
int cmd_run(int argc, char *argv[]);     /* run.c */
int cmd_apply(int argc, char *argv[]);   /* apply.c */
int cmd_events(int argc, char *argv[]);  /* events.c */
int cmd_top(int argc, char *argv[]);     /* top.c */
int cmd_metrics(int argc, char *argv[]); /* status.c */
int cmd_status(int argc, char *argv[]);  /* status.c */
int cmd_help(int argc, char *argv[]);    /* main.c */

#endif /* PORTRESCTL_SUBCOMMANDS_H */
