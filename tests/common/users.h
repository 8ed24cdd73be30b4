/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * users.h - real unprivileged users for the tests that need one (kernel and
 * end-to-end): made with useradd (a unique name, its own group, no home, no
 * login shell) and removed with userdel when the test ends, even when it
 * failed; those of crashed runs (their pid is gone) are removed at setup.
 */
#ifndef PORTRES_TEST_USERS_H
#define PORTRES_TEST_USERS_H

#include <sys/types.h>

struct test_user {
	char name[40];       /* portres-user-<pid>-<n> */
	uid_t uid;
	gid_t gid;           /* its own group, of the same name */
};

/* Removes the users and groups of crashed runs (a fixture's .init). */
void test_users_sweep(void);
/* Creates a user (Criterion assertion on failure); test_users_remove removes it. */
void test_user_new(struct test_user *u);
/* Removes the users made by this process, killing their processes first (a fixture's .fini). */
void test_users_remove(void);
/* Makes the calling process u, with the supplementary groups (up to 16); 0 or -1. */
int test_user_become(const struct test_user *u, const gid_t *groups, int ngroups);

#endif
