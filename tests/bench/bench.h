/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bench.h - what tests/bench/bench.c offers the other benchmarks linked into
 * build/bench.
 *
 * Section 5 of the table, control-plane operations per second, belongs to
 * tests/bench/ctlbench.c (the agent's benchmark). bench.c calls ctlbench_run()
 * when that file is linked in (the declaration below is weak: without it the
 * symbol is NULL) and prints one line per row() call. Without ctlbench.c, or
 * when ctlbench_run returns -ECONNREFUSED, the line reads
 * "n/a (agent not running)". To link it, build/bench must be built from
 * every tests/bench/ C file instead of bench.c alone (a Makefile change).
 */
#ifndef PORTRES_BENCH_H
#define PORTRES_BENCH_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * The private world bench.c has built. ctlbench_run is called after bench.c's
 * own loader is torn down: the bpffs mount and the cgroups are empty and may
 * be used to start portresd in.
 */
struct bench_world {
	const char *tmp;            /* private temp dir, e.g. for the agent's socket */
	const char *bpffs;          /* private bpffs mount */
	const char *cgroup;         /* the benchmark's cgroup, portres-bench-<pid> */
	const char *cgroup_none;    /* leaf without programs; the process is in it */
	const char *cgroup_portres; /* leaf bench.c attached portres to (free again) */
	uint64_t netns;             /* cookie of the private network namespace */
};

/* Set by SIGINT/SIGTERM/SIGHUP: long loops return -EINTR when they see it. */
extern volatile sig_atomic_t bench_stop;

/*
 * One line of section 5: what was measured and the figure, with its unit
 * ("21,340/s", "0.412 ms", "38.1 MiB"). target is NULL when there is none
 * (pass is then ignored), e.g. "< 1 ms".
 */
typedef void (*bench_row_cb)(void *arg, const char *what, const char *figure,
			     const char *target, bool pass);

/* Returns 0 or -errno; -ECONNREFUSED means no agent could be reached. */
int ctlbench_run(const struct bench_world *w, bench_row_cb row, void *arg) __attribute__((weak));

#endif /* PORTRES_BENCH_H */
