// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_store.c - the agent's database (user/portresd/store.c) in memory:
 * owned sysctl ports kept as runs, each change touching only the runs that
 * changed; a reservation's rows in and out.
 */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

static struct store *open_mem(void)
{
	char err[STATE_ERR_LEN + 128];
	struct store *s;

	cr_assert_eq(store_open_memory(&s, err, sizeof(err)), 0, "%s", err);
	return s;
}

static void owned_of(struct store *s, uint64_t netns, struct portset *out)
{
	char err[STATE_ERR_LEN + 128];
	struct store_contents c;

	cr_assert_eq(store_load(s, &c, err, sizeof(err)), 0, "%s", err);
	portset_clear(out);
	if (!netns)
		*out = c.st.sysctl_added;
	for (size_t i = 0; i < c.n_owned; i++)
		if (c.owned[i].netns == netns)
			*out = c.owned[i].ports;
	store_contents_free(&c);
}

/* Random sets one after the other: what the database reads back is the last one, in every step. */
Test(store, owned_runs_follow_the_set)
{
	struct store *s = open_mem();
	struct portset *from = calloc(1, sizeof(*from)), *to = calloc(1, sizeof(*to)), *back = calloc(1, sizeof(*back));
	char err[STATE_ERR_LEN + 128];

	srand(42);
	for (int round = 0; round < 200; round++) {
		*to = *from;
		/* a few blocks come and go, some next to others (runs merge and split) */
		for (int k = 0; k < 8; k++) {
			uint32_t start = (uint32_t)(rand() % 65536), count = 1 + (uint32_t)(rand() % 40);

			if (rand() % 2)
				portset_add(to, start, count);
			else
				portset_del(to, start, count);
		}
		if (round % 50 == 0)
			portset_add(to, 65530, 6); /* the last port too */
		store_set_owned(s, 7, from, to);
		cr_assert_eq(store_commit(s, err, sizeof(err)), 0, "%s", err);
		owned_of(s, 7, back);
		cr_assert_eq(memcmp(back, to, sizeof(*to)), 0, "round %d", round);
		*from = *to;
	}
	free(from);
	free(to);
	free(back);
	store_close(s);
}

/* One changed port records the runs around it only, not every run of the set. */
Test(store, owned_change_touches_its_runs)
{
	struct store *s = open_mem();
	struct portset from, to;
	char err[STATE_ERR_LEN + 128];

	portset_clear(&from);
	for (uint32_t p = 1; p < 65536; p += 3)
		portset_add(&from, p, 2);
	store_set_owned(s, 0, &(struct portset){ 0 }, &from);
	cr_assert_eq(store_commit(s, err, sizeof(err)), 0, "%s", err);
	to = from;
	portset_add(&to, 3, 1); /* 1-2 and 4-5 become 1-5 */
	store_set_owned(s, 0, &from, &to);
	/* two runs out, one in */
	cr_assert_eq(store_pending(s), 3);
	cr_assert_eq(store_commit(s, err, sizeof(err)), 0, "%s", err);
	owned_of(s, 0, &from);
	cr_assert_eq(memcmp(&from, &to, sizeof(to)), 0);
	store_close(s);
}

Test(store, reservation_rows)
{
	struct store *s = open_mem();
	struct state_grant g = { .type = 1, .id = 1000 };
	struct state_resv r = { .token = 0xfeedfacecafebeefULL, .proto = IPPROTO_TCP, .start = 8000, .count = 10,
				.name = "web", .n_grants = 1, .grants = &g };
	struct state_attach at = { .path = "/sys/fs/cgroup/web", .cgroup_id = 99, .token = r.token, .confine = 2,
				   .by_uid = 5 };
	char err[STATE_ERR_LEN + 128];
	struct store_contents c;

	store_put_resv(s, &r, 1);
	store_put_attach(s, &at, IPPROTO_TCP);
	store_put_runtime(s, &(struct store_runtime){ .token = 5, .proto = IPPROTO_UDP, .start = 61000, .count = 4,
						      .uid = 1000, .pid = 42 }, 1);
	cr_assert_eq(store_commit(s, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(store_load(s, &c, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.st.n_resv, 1);
	cr_assert_eq(c.st.resv[0].token, r.token, "a token with its top bit set comes back whole");
	cr_assert_str_eq(c.st.resv[0].name, "web");
	cr_assert_eq(c.st.resv[0].n_grants, 1);
	cr_assert_eq(c.st.n_attach, 1);
	cr_assert_eq(c.st.attach[0].confine, 2);
	cr_assert_eq(c.st.attach[0].by_uid, 5);
	cr_assert_eq(c.n_rt, 1);
	cr_assert_eq(c.rt[0].uid, 1000);
	store_contents_free(&c);
	/* the reservation goes: its grant and attachment with it */
	store_del_resv(s, r.token, true);
	store_del_resv(s, 5, false);
	cr_assert_eq(store_commit(s, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(store_load(s, &c, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.st.n_resv + c.st.n_attach + c.n_rt, 0);
	store_contents_free(&c);
	store_close(s);
}
