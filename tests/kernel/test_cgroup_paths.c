// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_cgroup_paths.c - cgroup.h: the path of a cgroup id, by file handle
 * (root) and by walking the mount (a real unprivileged user, who may not use
 * handles), and why a path is not a cgroup2 directory.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cgroup.h"
#include "helpers.h"

TestSuite(cgroup_paths, .init = fx_setup, .fini = fx_teardown);

struct lookup {
	uint64_t id;
	const char *want;
	int rounds;
};

/* cgroup2_path of each id, as the caller is; several times, as the agent does for a list. */
static int path_of(void *arg)
{
	const struct lookup *l = arg;
	char got[4200];

	for (int i = 0; i < l->rounds; i++) {
		int err = cgroup2_path(l->id, got, sizeof(got));

		if (err)
			return h_fail("cgroup2_path(%llu) as uid %u: %s", (unsigned long long)l->id, getuid(),
				      strerror(-err));
		if (strcmp(got, l->want))
			return h_fail("cgroup2_path(%llu) as uid %u: %s, want %s", (unsigned long long)l->id, getuid(),
				      got, l->want);
	}
	/* a cgroup that is no more */
	if (cgroup2_path(l->id + (1ull << 40), got, sizeof(got)) != -ENOENT)
		return h_fail("an id no cgroup has was found: %s", got);
	return 0;
}

struct as_user {
	const struct test_user *u;
	struct lookup *l;
};

static int path_of_as_user(void *arg)
{
	const struct as_user *x = arg;

	if (test_user_become(x->u, NULL, 0))
		return h_fail("become %s: %s", x->u->name, strerror(errno));
	/* without CAP_DAC_READ_SEARCH no file handle: the walk finds it */
	return path_of(x->l);
}

Test(cgroup_paths, path_of_id_by_handle_and_by_walk)
{
	char deep[4200];
	struct test_user u;
	struct lookup l = { .want = deep, .rounds = 3 };
	struct as_user x = { &u, &l };

	test_user_new(&u);
	fx_child_cgroup("a", deep, sizeof(deep));
	fx_child_cgroup("a/b", deep, sizeof(deep));
	cr_assert_eq(portres_cgroup_id(deep, &l.id), 0);
	h_expect_child(path_of, &l, "as root (file handle)");
	h_expect_child(path_of_as_user, &x, "as a user (walk)");
}

Test(cgroup_paths, not_a_cgroup_names_the_cause)
{
	char why[600], path[4200];
	uint64_t id = 0, want;

	/* leads to "/": outside the mount, said so (not "Wrong medium type") */
	cr_assert_eq(cgroup2_dir_id("/etc/../../../", &id, why, sizeof(why)), -EINVAL);
	cr_assert(strstr(why, "not a cgroup2 directory: it is /, outside the cgroup2 mount "), "%s", why);
	cr_assert_eq(cgroup2_dir_id("/etc", &id, why, sizeof(why)), -EINVAL);
	cr_assert(strstr(why, "it is /etc, outside the cgroup2 mount "), "%s", why);
	snprintf(path, sizeof(path), "%s/cgroup.procs", fx.cgroup);
	cr_assert_eq(cgroup2_dir_id(path, &id, why, sizeof(why)), -EINVAL);
	cr_assert(strstr(why, "is a file"), "%s", why);
	snprintf(path, sizeof(path), "%s/no-such-cgroup", fx.cgroup);
	cr_assert_eq(cgroup2_dir_id(path, &id, why, sizeof(why)), -ENOENT);
	/* a cgroup, reached through ".." too */
	snprintf(path, sizeof(path), "%s/../%s", fx.cgroup, strrchr(fx.cgroup, '/') + 1);
	cr_assert_eq(cgroup2_dir_id(path, &id, why, sizeof(why)), 0, "%s", why);
	cr_assert_eq(portres_cgroup_id(fx.cgroup, &want), 0);
	cr_assert_eq(id, want);
}
