// SPDX-License-Identifier: LGPL-2.1-or-later
/* fuzz_proto.c - libFuzzer target for the portresd request parser. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_req req;
	struct proto_err err;
	char *reply;

	if (proto_parse_request((const char *)data, size, &req, &err))
		reply = proto_err_reply(err.code, err.msg);
	else
		reply = proto_ok_reply(NULL);
	if (!reply)
		abort();
	free(reply);
	proto_req_free(&req);
	return 0;
}
