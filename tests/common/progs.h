/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* progs.h - what is attached where, for the tests (kernel and end-to-end). */
#ifndef PORTRES_TEST_PROGS_H
#define PORTRES_TEST_PROGS_H

#include <linux/bpf.h>

/* Programs linked directly at the cgroup directory path on a hook (Criterion assertion on failure). */
unsigned test_progs_on(const char *cgroup, enum bpf_attach_type type);

#endif
