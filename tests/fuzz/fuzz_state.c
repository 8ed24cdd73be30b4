// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * fuzz_state.c - libFuzzer target for the state file the agent imports once
 * (user/common/state.c, versions 1 and 2) and for its way into the database
 * (user/portresd/store.c): whatever state_parse accepts is imported into an
 * in-memory database and read back, and what comes back must be what went
 * in (reservations with their grants, netns, attachments, owned ports).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "state.h"
#include "store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct state_resv *find(const struct state *st, uint64_t token)
{
	return state_find_token(st, token);
}

static void same_strings(const char *a, const char *b)
{
	if (!a != !b || (a && strcmp(a, b)))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[STATE_ERR_LEN + 128];
	struct store_contents c;
	struct store *s;
	struct state st;

	if (state_parse((const char *)data, size, "fuzz.json", &st, err, sizeof(err)))
		return 0;
	if (store_open_memory(&s, err, sizeof(err)))
		abort();
	store_import(s, &st);
	if (store_commit(s, err, sizeof(err)) || store_load(s, &c, err, sizeof(err)))
		abort();
	if (c.st.n_resv != st.n_resv || c.st.n_netns != st.n_netns || c.st.n_attach != st.n_attach ||
	    memcmp(&c.st.sysctl_added, &st.sysctl_added, sizeof(st.sysctl_added)))
		abort();
	for (size_t i = 0; i < st.n_resv; i++) {
		const struct state_resv *a = &st.resv[i], *b = find(&c.st, a->token);

		if (!b || a->proto != b->proto || a->start != b->start || a->count != b->count || a->mode != b->mode ||
		    a->netns != b->netns || a->n_grants != b->n_grants || (a->request_id && a->request_uid != b->request_uid))
			abort();
		same_strings(a->name, b->name);
		same_strings(a->request_id, b->request_id);
	}
	for (size_t i = 0; i < st.n_netns; i++) {
		const struct state_netns *a = &st.netns[i], *b = state_find_netns(&c.st, a->cookie);
		struct portset none;

		portset_clear(&none);
		if (!b || a->inode != b->inode || a->nsid != b->nsid ||
		    memcmp(a->sysctl_added ? a->sysctl_added : &none, b->sysctl_added ? b->sysctl_added : &none,
			   sizeof(none)))
			abort();
		same_strings(a->path, b->path);
	}
	store_contents_free(&c);
	store_close(s);
	state_free(&st);
	return 0;
}
