// SPDX-License-Identifier: LGPL-2.1-or-later
/* test_proto.c - request validation and reply format of the portresd protocol. */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "portres_abi.h"
#include "proto.h"

static int parse(const char *text, struct proto_req *req, struct proto_err *err)
{
	return proto_parse_request(text, strlen(text), req, err);
}

static void expect_ok(const char *text, struct proto_req *req)
{
	struct proto_err err;

	cr_assert_eq(parse(text, req, &err), 0, "%s: %s", text, err.msg);
}

static void expect_err(const char *text, int code, const char *needle)
{
	struct proto_req req;
	struct proto_err err;

	cr_assert_eq(parse(text, &req, &err), -1, "accepted %s", text);
	cr_assert_eq(err.code, code, "%s: errno %d (%s), want %d", text, err.code, err.msg, code);
	if (needle)
		cr_assert(strstr(err.msg, needle), "%s: message \"%s\" lacks \"%s\"", text, err.msg, needle);
	proto_req_free(&req);
}

Test(proto, acquire)
{
	struct proto_req req;

	expect_ok("{\"v\":1,\"op\":\"acquire\",\"count\":10}", &req);
	cr_assert_eq(req.op, PROTO_OP_ACQUIRE);
	cr_assert_eq(req.start, 0);
	cr_assert_eq(req.count, 10);
	proto_req_free(&req);
	expect_ok("{\"v\":1,\"op\":\"acquire\",\"start\":65535,\"count\":1,\"extra\":[1,2]}", &req);
	cr_assert_eq(req.start, 65535);
	proto_req_free(&req);
	expect_err("{\"v\":1,\"op\":\"acquire\",\"start\":65535,\"count\":2}", EINVAL, "65535");
	expect_err("{\"v\":1,\"op\":\"acquire\",\"count\":0}", EINVAL, "count");
	expect_err("{\"v\":1,\"op\":\"acquire\"}", EINVAL, "count: missing");
	expect_err("{\"v\":1,\"op\":\"acquire\",\"count\":-1}", EINVAL, "count");
	expect_err("{\"v\":1,\"op\":\"acquire\",\"count\":1.5}", EINVAL, "count");
	expect_err("{\"v\":1,\"op\":\"acquire\",\"count\":\"5\"}", EINVAL, "count");
	expect_err("{\"v\":1,\"op\":\"acquire\",\"count\":70000}", EINVAL, "count");
}

Test(proto, create_with_everything)
{
	struct proto_req req;

	expect_ok("{\"v\":1,\"op\":\"create\",\"proto\":\"udp\",\"start\":8000,\"count\":10,\"name\":\"dns\","
		  "\"mode\":\"advisory\",\"grants\":[{\"type\":\"uid\",\"id\":1000},{\"type\":\"gid\",\"id\":100},"
		  "{\"type\":\"cgroup\",\"path\":\"/sys/fs/cgroup/x\"},{\"type\":\"cgroup\",\"id\":77}]}",
		  &req);
	cr_assert_eq(req.proto, IPPROTO_UDP);
	cr_assert_str_eq(req.name, "dns");
	cr_assert_eq(req.mode, PORTRES_MODE_ADVISORY);
	cr_assert_eq(req.n_grants, 4);
	cr_assert_eq(req.grants[1].type, PORTRES_GRANT_GID);
	cr_assert_str_eq(req.grants[2].path, "/sys/fs/cgroup/x");
	cr_assert_eq(req.grants[3].id, 77);
	proto_req_free(&req);
	expect_ok("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":1,\"count\":65535}", &req);
	cr_assert_eq(req.mode, -1);
	cr_assert_null(req.name);
	proto_req_free(&req);
}

Test(proto, create_rejects)
{
	expect_err("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":0,\"count\":1}", EINVAL, "start");
	expect_err("{\"v\":1,\"op\":\"create\",\"start\":1,\"count\":1}", EINVAL, "proto");
	expect_err("{\"v\":1,\"op\":\"create\",\"proto\":\"icmp\",\"start\":1,\"count\":1}", EINVAL, "proto");
	expect_err("{\"v\":1,\"op\":\"create\",\"proto\":6,\"start\":1,\"count\":1}", EINVAL, "proto");
	expect_err("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":1,\"count\":1,\"name\":\"../x\"}", EINVAL, "name");
	expect_err("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":1,\"count\":1,\"name\":5}", EINVAL, "name");
	expect_err("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":1,\"count\":1,\"mode\":\"x\"}", EINVAL, "mode");
	expect_err("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":1,\"count\":1,\"grants\":{}}", EINVAL, "grants");
	expect_err("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":1,\"count\":1,\"grants\":[{\"type\":\"uid\"}]}",
		   EINVAL, "grants[0]");
	expect_err("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":1,\"count\":1,\"grants\":[{\"type\":\"uid\",\"id\":4294967296}]}",
		   EINVAL, "grants[0].id");
	expect_err("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":1,\"count\":1,\"grants\":[{\"type\":\"uid\",\"path\":\"/x\"}]}",
		   EINVAL, "grants[0].path");
	expect_err("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":1,\"count\":1,\"grants\":[{\"type\":\"cgroup\",\"path\":\"rel\"}]}",
		   EINVAL, "grants[0].path");
}

Test(proto, create_request_id)
{
	struct proto_req req;

	expect_ok("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":1,\"count\":1,"
		  "\"request_id\":\"0123456789abcdef0123456789abcdef\"}", &req);
	cr_assert_str_eq(req.request_id, "0123456789abcdef0123456789abcdef");
	proto_req_free(&req);
	expect_ok("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":1,\"count\":1}", &req);
	cr_assert_null(req.request_id);
	proto_req_free(&req);
	expect_err("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":1,\"count\":1,\"request_id\":\"abc\"}",
		   EINVAL, "request_id");
	expect_err("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":1,\"count\":1,"
		   "\"request_id\":\"0123456789abcdef/0123456789abcdef\"}", EINVAL, "request_id");
	expect_err("{\"v\":1,\"op\":\"create\",\"proto\":\"tcp\",\"start\":1,\"count\":1,\"request_id\":7}",
		   EINVAL, "request_id");
}

Test(proto, selectors)
{
	struct proto_req req;

	expect_ok("{\"v\":1,\"op\":\"delete\",\"token\":\"00000000000000aa\"}", &req);
	cr_assert_eq(req.sel, PROTO_SEL_TOKEN);
	cr_assert_eq(req.token, 0xaa);
	proto_req_free(&req);
	expect_ok("{\"v\":1,\"op\":\"delete\",\"name\":\"web\"}", &req);
	cr_assert_eq(req.sel, PROTO_SEL_NAME);
	proto_req_free(&req);
	expect_ok("{\"v\":1,\"op\":\"delete\",\"proto\":\"tcp\",\"start\":80,\"count\":1}", &req);
	cr_assert_eq(req.sel, PROTO_SEL_RANGE);
	proto_req_free(&req);
	expect_err("{\"v\":1,\"op\":\"delete\"}", EINVAL, "exactly one");
	expect_err("{\"v\":1,\"op\":\"delete\",\"name\":\"web\",\"token\":\"00000000000000aa\"}", EINVAL, "exactly one");
	expect_err("{\"v\":1,\"op\":\"delete\",\"token\":\"0000000000000000\"}", EINVAL, "token");
	expect_err("{\"v\":1,\"op\":\"delete\",\"token\":170}", EINVAL, "token");
	expect_err("{\"v\":1,\"op\":\"show\",\"proto\":\"tcp\",\"start\":80,\"count\":1}", EINVAL, "exactly one");
	expect_err("{\"v\":1,\"op\":\"lookup\",\"proto\":\"tcp\",\"start\":0,\"count\":1}", EINVAL, "start");
	expect_err("{\"v\":1,\"op\":\"release\"}", EINVAL, "token");
	expect_err("{\"v\":1,\"op\":\"update\",\"name\":\"web\"}", EINVAL, "mode");
}

Test(proto, attach_who)
{
	struct proto_req req;

	expect_ok("{\"v\":1,\"op\":\"attach\",\"cgroup\":\"/sys/fs/cgroup/a\",\"name\":\"web\",\"confine\":true}", &req);
	cr_assert_str_eq(req.cgroup, "/sys/fs/cgroup/a");
	cr_assert(req.confine);
	proto_req_free(&req);
	expect_ok("{\"v\":1,\"op\":\"who\",\"port\":0,\"proto\":\"udp\"}", &req);
	cr_assert_eq(req.proto, IPPROTO_UDP);
	cr_assert_null(req.name);
	proto_req_free(&req);
	expect_err("{\"v\":1,\"op\":\"attach\",\"cgroup\":\"a\",\"name\":\"web\"}", EINVAL, "cgroup");
	expect_err("{\"v\":1,\"op\":\"attach\",\"cgroup\":\"/a\",\"name\":\"web\",\"confine\":1}", EINVAL, "confine");
	expect_err("{\"v\":1,\"op\":\"detach\"}", EINVAL, "cgroup");
	expect_err("{\"v\":1,\"op\":\"who\",\"port\":65536}", EINVAL, "port");
}

Test(proto, envelope)
{
	static char big[PROTO_MAX_MSG + 2];

	expect_err("", EPROTO, "not JSON");
	expect_err("{", EPROTO, "not JSON");
	expect_err("[1]", EPROTO, "object");
	expect_err("{\"op\":\"list\"}", EPROTO, "version");
	expect_err("{\"v\":2,\"op\":\"list\"}", EPROTO, "version");
	expect_err("{\"v\":1}", EINVAL, "op");
	expect_err("{\"v\":1,\"op\":7}", EINVAL, "op");
	expect_err("{\"v\":1,\"op\":\"format-disk\"}", ENOSYS, "format-disk");
	expect_err("{\"v\":1,\"op\":\"list\",\"op\":\"list\"}", EPROTO, NULL);
	expect_err("{\"v\":1,\"op\":\"list\"} trailing", EPROTO, NULL);
	memset(big, ' ', sizeof(big));
	cr_assert_eq(proto_parse_request(big, sizeof(big), &(struct proto_req){ 0 }, &(struct proto_err){ 0 }), -1);
	{
		struct proto_req req;
		struct proto_err err;

		cr_assert_eq(proto_parse_request(big, sizeof(big), &req, &err), -1);
		cr_assert_eq(err.code, EMSGSIZE);
		proto_req_free(&req);
		/* not NUL-terminated: the parser must stop at len */
		memcpy(big, "{\"v\":1,\"op\":\"list\"}xxxx", 23);
		cr_assert_eq(proto_parse_request(big, 19, &req, &err), 0, "%s", err.msg);
		proto_req_free(&req);
	}
}

Test(proto, replies)
{
	char *s = proto_err_reply(EADDRINUSE, "ports in use by pid 1 (init)");
	json_t *o = json_object();

	cr_assert_str_eq(s, "{\"v\":1,\"ok\":false,\"errno\":\"EADDRINUSE\",\"error\":\"ports in use by pid 1 (init)\"}");
	free(s);
	json_object_set_new(o, "token", json_string("00000000000000aa"));
	s = proto_ok_reply(o);
	cr_assert(strstr(s, "\"ok\":true"));
	cr_assert(strstr(s, "\"token\":\"00000000000000aa\""));
	free(s);
	cr_assert_eq(proto_errno_from_name("ENOTSOCK"), ENOTSOCK);
	cr_assert_str_eq(proto_errno_name(EPROTOTYPE), "EPROTOTYPE");
	cr_assert_eq(proto_errno_from_name("EWHAT"), 0);
}

/* An error message that quotes invalid UTF-8 (or cuts a sequence) still makes a JSON reply. */
Test(proto, error_reply_with_invalid_utf8)
{
	char *r = proto_err_reply(EINVAL, "token: \"5f0B2\\\xc7\x9a\xce\x9d\xc8\x9b\xcb\"");
	json_t *j;

	cr_assert_not_null(r, "no reply for a message with a cut UTF-8 sequence");
	j = json_loads(r, 0, NULL);
	cr_assert_not_null(j);
	cr_expect_str_eq(json_string_value(json_object_get(j, "errno")), "EINVAL");
	json_decref(j);
	free(r);
}
