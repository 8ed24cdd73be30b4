// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * fuzz_apply.c - libFuzzer target for the declarative file of apply
 * (user/common/apply.c): the file is parsed, then planned against a fixed
 * agent state, so the planner sees every file the parser accepts.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "apply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char state[] =
	"{\"reservations\":["
	"{\"token\":\"00000000000000a1\",\"proto\":\"tcp\",\"start\":8000,\"count\":10,\"kind\":\"persistent\","
	"\"mode\":\"enforce\",\"name\":\"web\",\"netns\":1,\"grants\":[{\"type\":\"uid\",\"id\":1000}],"
	"\"attachments\":[{\"path\":\"/cg/a\",\"confine\":true}]},"
	"{\"token\":\"00000000000000a2\",\"proto\":\"udp\",\"start\":53,\"count\":1,\"kind\":\"runtime\","
	"\"mode\":\"enforce\",\"netns\":1,\"attachments\":[]}]}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static json_t *current;
	char err[APPLY_ERR_LEN];
	struct apply_file f;
	struct apply_plan plan;

	if (!current && !(current = json_loads(state, 0, NULL)))
		abort();
	if (apply_file_parse((const char *)data, size, "fuzz.json", "/cg", &f, err, sizeof(err)))
		return 0;
	for (int prune = 0; prune < 2; prune++) {
		struct apply_opts o = { .prune = prune };

		if (!apply_plan(&f, current, &o, &plan, err, sizeof(err)))
			apply_plan_free(&plan);
	}
	apply_file_free(&f);
	return 0;
}
