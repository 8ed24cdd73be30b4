// SPDX-License-Identifier: LGPL-2.1-or-later
/* progs.c - what is attached where (see progs.h). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <bpf/bpf.h>

#include "progs.h"

unsigned test_progs_on(const char *cgroup, enum bpf_attach_type type)
{
	__u32 cnt = 0;
	int fd = open(cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	cr_assert(fd >= 0, "%s: %s", cgroup, strerror(errno));
	cr_assert_eq(bpf_prog_query(fd, type, 0, NULL, NULL, &cnt), 0, "bpf_prog_query: %s", strerror(errno));
	close(fd);
	return cnt;
}
