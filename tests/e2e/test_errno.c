// SPDX-License-Identifier: LGPL-2.1-or-later
/* test_errno.c - every row of SPEC §3's errno table, through libportres and the real agent. */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"

TestSuite(errno_table, .init = ag_setup, .fini = ag_teardown, .timeout = 60);

#define EXPECT_ERR(call, e) do { \
	errno = 0; \
	cr_assert_eq((call), -1, #call " succeeded"); \
	cr_assert_eq(errno, (e), #call ": errno %d (%s), want %s", errno, strerror(errno), #e); \
} while (0)

static int tcp(void)
{
	return socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
}

Test(errno_table, no_agent_is_econnrefused)
{
	portres_token_t t;
	struct portres_instance in;
	int s = tcp();

	/* no socket file at all */
	EXPECT_ERR(portres_create_persistent(IPPROTO_TCP, 8000, 10, &t), ECONNREFUSED);
	EXPECT_ERR(portres_lookup_persistent(IPPROTO_TCP, 8000, 10, &t), ECONNREFUSED);
	EXPECT_ERR(portres_delete_persistent(IPPROTO_TCP, 8000, 10), ECONNREFUSED);
	EXPECT_ERR(portres_acquire(s, &(struct portres_range){ 0, 4 }, &in), ECONNREFUSED);
	EXPECT_ERR(portres_release(s, 1), ECONNREFUSED);
	/* a socket file nobody listens on (an agent killed with -9) */
	ag_start(NULL);
	ag_kill9();
	EXPECT_ERR(portres_lookup_persistent(IPPROTO_TCP, 8000, 10, &t), ECONNREFUSED);
	close(s);
}

Test(errno_table, einval_rows)
{
	struct portres_instance in;
	portres_token_t t;
	int s = tcp();

	ag_start(NULL);
	EXPECT_ERR(portres_acquire(s, &(struct portres_range){ 9000, 0 }, &in), EINVAL);
	EXPECT_ERR(portres_acquire(s, &(struct portres_range){ 65535, 2 }, &in), EINVAL);
	EXPECT_ERR(portres_create_persistent(IPPROTO_TCP, 8000, 0, &t), EINVAL);
	EXPECT_ERR(portres_create_persistent(IPPROTO_TCP, 65000, 537, &t), EINVAL);
	EXPECT_ERR(portres_create_persistent(IPPROTO_TCP, 0, 10, &t), EINVAL);
	EXPECT_ERR(portres_lookup_persistent(IPPROTO_TCP, 0, 10, &t), EINVAL);
	EXPECT_ERR(portres_delete_persistent(IPPROTO_TCP, 0, 10), EINVAL);
	EXPECT_ERR(portres_create_persistent(IPPROTO_SCTP, 8000, 10, &t), EINVAL);
	/* unknown token */
	EXPECT_ERR(portres_release(s, 0x1234), EINVAL);
	EXPECT_ERR(portres_associate(s, 0x1234), EINVAL);
	/* a persistent token is not released, it is deleted */
	cr_assert_eq(portres_create_persistent(IPPROTO_TCP, 8000, 10, &t), 0);
	EXPECT_ERR(portres_release(s, t), EINVAL);
	close(s);
}

Test(errno_table, eopnotsupp_and_enotsock)
{
	struct portres_instance in;
	int u = socket(AF_UNIX, SOCK_STREAM, 0), raw = socket(AF_INET, SOCK_RAW, IPPROTO_TCP), p[2];

	ag_start(NULL);
	cr_assert_eq(pipe(p), 0);
	EXPECT_ERR(portres_acquire(u, &(struct portres_range){ 0, 4 }, &in), EOPNOTSUPP);
	EXPECT_ERR(portres_acquire(raw, &(struct portres_range){ 0, 4 }, &in), EOPNOTSUPP);
	EXPECT_ERR(portres_acquire(p[0], &(struct portres_range){ 0, 4 }, &in), ENOTSOCK);
	EXPECT_ERR(portres_release(p[0], 1), ENOTSOCK);
}

Test(errno_table, eaddrinuse_rows)
{
	struct portres_instance in;
	portres_token_t t;
	int s = tcp(), held;
	json_t *r;

	ag_start(NULL);
	cr_assert_eq(portres_create_persistent(IPPROTO_TCP, 8000, 10, &t), 0);
	/* overlaps */
	EXPECT_ERR(portres_create_persistent(IPPROTO_TCP, 8009, 1, &t), EADDRINUSE);
	EXPECT_ERR(portres_create_persistent(IPPROTO_TCP, 7990, 11, &t), EADDRINUSE);
	EXPECT_ERR(portres_acquire(s, &(struct portres_range){ 8005, 2 }, &in), EADDRINUSE);
	/* UDP has its own port space */
	cr_assert_eq(portres_create_persistent(IPPROTO_UDP, 8000, 10, &t), 0);
	/* bound sockets: refused, and the holder is named */
	cr_assert_eq(ag_bind(IPPROTO_TCP, 9100, &held), 0);
	EXPECT_ERR(portres_create_persistent(IPPROTO_TCP, 9095, 10, &t), EADDRINUSE);
	EXPECT_ERR(portres_acquire(s, &(struct portres_range){ 9100, 1 }, &in), EADDRINUSE);
	r = ag_req("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":9100,\"count\":1}", -1);
	cr_assert_str_eq(ag_errno(r), "EADDRINUSE");
	cr_assert(strstr(json_string_value(json_object_get(r, "error")), "in use by:\n  pid ") &&
		  strstr(json_string_value(json_object_get(r, "error")), ": tcp 127.0.0.1:9100"),
		  "message: %s", json_string_value(json_object_get(r, "error")));
	json_decref(r);
	close(held);
	/* no free block for a wildcard acquire */
	EXPECT_ERR(portres_acquire(s, &(struct portres_range){ 0, 65535 }, &in), EADDRINUSE);
	close(s);
}

Test(errno_table, enoent_rows)
{
	portres_token_t t, t2;

	ag_start(NULL);
	EXPECT_ERR(portres_lookup_persistent(IPPROTO_TCP, 8000, 10, &t), ENOENT);
	EXPECT_ERR(portres_delete_persistent(IPPROTO_TCP, 8000, 10), ENOENT);
	cr_assert_eq(portres_create_persistent(IPPROTO_TCP, 8000, 10, &t), 0);
	cr_assert_neq(t, 0);
	/* start and count must match exactly */
	EXPECT_ERR(portres_lookup_persistent(IPPROTO_TCP, 8000, 9, &t2), ENOENT);
	EXPECT_ERR(portres_lookup_persistent(IPPROTO_TCP, 8001, 9, &t2), ENOENT);
	EXPECT_ERR(portres_lookup_persistent(IPPROTO_UDP, 8000, 10, &t2), ENOENT);
	EXPECT_ERR(portres_delete_persistent(IPPROTO_TCP, 8000, 9), ENOENT);
	cr_assert_eq(portres_lookup_persistent(IPPROTO_TCP, 8000, 10, &t2), 0);
	cr_assert_eq(t2, t);
	cr_assert_eq(portres_delete_persistent(IPPROTO_TCP, 8000, 10), 0);
	EXPECT_ERR(portres_lookup_persistent(IPPROTO_TCP, 8000, 10, &t2), ENOENT);
}

static portres_token_t shared_token;

static int user_create(void *arg)
{
	portres_token_t t;

	if (portres_create_persistent(IPPROTO_TCP, 8100, 10, &t) == 0)
		return 0;
	return errno;
}

static int user_delete(void *arg)
{
	return portres_delete_persistent(IPPROTO_TCP, 8000, 10) ? errno : 0;
}

static int user_lookup(void *arg)
{
	portres_token_t t;

	if (portres_lookup_persistent(IPPROTO_TCP, 8000, 10, &t))
		return errno;
	return t == shared_token ? 0 : 99;
}

static int user_associate(void *arg)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	return portres_associate(s, shared_token) ? errno : 0;
}

static int user_acquire(void *arg)
{
	struct portres_instance in;
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (portres_acquire(s, &(struct portres_range){ 0, *(uint16_t *)arg }, &in))
		return errno;
	return in.range.count == *(uint16_t *)arg ? 0 : 99;
}

Test(errno_table, eacces_non_root)
{
	struct test_user u;
	uint16_t n = 16;

	test_user_new(&u);
	ag_start(NULL);
	cr_assert_eq(portres_create_persistent(IPPROTO_TCP, 8000, 10, &shared_token), 0);
	cr_assert_eq(ag_as_user(&u, user_create, NULL, NULL, 0), EACCES);
	cr_assert_eq(ag_as_user(&u, user_delete, NULL, NULL, 0), EACCES);
	/* lookup is for everyone; associating a persistent token needs a grant */
	cr_assert_eq(ag_as_user(&u, user_lookup, NULL, NULL, 0), 0);
	cr_assert_eq(ag_as_user(&u, user_associate, NULL, NULL, 0), EACCES);
	/* any local user may acquire, within the quota */
	cr_assert_eq(ag_as_user(&u, user_acquire, &n, NULL, 0), 0);
}

Test(errno_table, admin_group_and_grants)
{
	struct test_user u, admins;
	const char *extra[] = { "--admin-group", admins.name, "--quota", "8", NULL };
	char req[300];
	uint16_t n;
	json_t *r;

	test_user_new(&u);
	/* the admin group: a group of the machine (the one useradd made for this second user) */
	test_user_new(&admins);
	ag_start(extra);
	/* member of the admin group (here: a supplementary group) */
	cr_assert_eq(ag_as_user(&u, user_create, NULL, &admins.gid, 1), 0);
	/* not a member: refused */
	cr_assert_eq(ag_as_user(&u, user_delete, NULL, NULL, 0), EACCES);
	/* a uid grant lets that user associate */
	snprintf(req, sizeof(req), "{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":8000,\"count\":10,"
		 "\"grants\":[{\"type\":\"uid\",\"id\":%u}]}", (unsigned)u.uid);
	r = ag_req(req, -1);
	cr_assert_str_eq(ag_errno(r), "");
	cr_assert_eq(portres_lookup_persistent(IPPROTO_TCP, 8000, 10, &shared_token), 0);
	json_decref(r);
	cr_assert_eq(ag_as_user(&u, user_associate, NULL, NULL, 0), 0);
	/* the per-uid runtime quota */
	n = 8;
	cr_assert_eq(ag_as_user(&u, user_acquire, &n, NULL, 0), 0);
	n = 9;
	cr_assert_eq(ag_as_user(&u, user_acquire, &n, NULL, 0), EDQUOT);
}

static struct portres_instance parent_resv;

static int other_release(void *arg)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	return portres_release(s, parent_resv.token) ? errno : 0;
}

static int other_associate(void *arg)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	return portres_associate(s, parent_resv.token) ? errno : 0;
}

Test(errno_table, runtime_token_is_the_acquirers)
{
	int s = tcp(), u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), a = tcp();

	ag_start(NULL);
	cr_assert_eq(portres_acquire(s, &(struct portres_range){ 0, 8 }, &parent_resv), 0, "%s", strerror(errno));
	cr_assert_eq(parent_resv.range.count, 8);
	cr_assert_neq(parent_resv.range.start, 0);
	/* another process (even root) may neither release nor associate it */
	cr_assert_eq(ag_in_child(other_release, NULL), EACCES);
	cr_assert_eq(ag_in_child(other_associate, NULL), EACCES);
	/* the token's protocol is the socket's */
	EXPECT_ERR(portres_associate(u, parent_resv.token), EPROTOTYPE);
	/* the acquirer may */
	cr_assert_eq(portres_associate(a, parent_resv.token), 0, "%s", strerror(errno));
	cr_assert_eq(portres_release(s, parent_resv.token), 0);
	EXPECT_ERR(portres_release(s, parent_resv.token), EINVAL);
}

/* A grant of a path that is no cgroup: EINVAL naming why, not EMEDIUMTYPE's "Wrong medium type". */
Test(errno_table, grant_of_a_non_cgroup_names_the_cause)
{
	static const char *const paths[] = { "/etc/../../../", "/etc" };
	char req[400];
	json_t *r;

	ag_start(NULL);
	for (size_t i = 0; i < 2; i++) {
		const char *err;

		snprintf(req, sizeof(req), "{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":8000,\"count\":10,"
			 "\"grants\":[{\"type\":\"cgroup\",\"path\":\"%s\"}]}", paths[i]);
		r = ag_req(req, -1);
		err = json_string_value(json_object_get(r, "error")) ?: "";
		cr_assert_str_eq(ag_errno(r), "EINVAL");
		cr_assert(strstr(err, "not a cgroup2 directory") && strstr(err, "outside the cgroup2 mount"), "%s", err);
		cr_assert(!strstr(err, "medium"), "%s", err);
		json_decref(r);
	}
	/* nothing was made */
	r = ag_req("{\"v\":1,\"op\":\"list\"}", -1);
	cr_assert_eq(json_array_size(json_object_get(r, "reservations")), 0);
	json_decref(r);
}
