// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * test_associate.c - portresd --associate=agent: no setsockopt program is
 * attached, and portres_associate() goes to the agent (the socket passed by
 * SCM_RIGHTS), which decides as the program would: every errno of SPEC §3's
 * table for associating, the EACCES cases as a user the test creates, and
 * what the data plane wrote on the socket (anchors, confinement) kept.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <netinet/in.h>
#include <bpf/bpf.h>

#include "agent.h"
#include "cgroup.h"
#include "loader.h"
#include "progs.h"
#include "cli_helpers.h"

TestSuite(associate_agent, .init = ag_setup, .fini = ag_teardown, .timeout = 90);

static const char *const agent_mode[] = { "--associate", "agent", NULL };

#define EXPECT_ERR(call, e) do { \
	errno = 0; \
	cr_expect_eq((call), -1, #call " succeeded"); \
	cr_expect_eq(errno, (e), #call ": errno %d (%s), want %s", errno, strerror(errno), #e); \
} while (0)

/* Programs linked directly at the agent's cgroup on a hook. */
static unsigned progs_on(enum bpf_attach_type type)
{
	return test_progs_on(ag.cgroup, type);
}

static int sock(int family, int proto)
{
	int fd = socket(family, (proto == IPPROTO_TCP ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, proto);

	cr_assert(fd >= 0, "socket: %s", strerror(errno));
	return fd;
}

/* Binds fd (family's wildcard address) to port: 0 or -errno. */
static int bind_to(int fd, int family, uint16_t port)
{
	struct sockaddr_in6 s6 = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
	struct sockaddr_in s4 = { .sin_family = AF_INET, .sin_port = htons(port) };

	if (family == AF_INET6)
		return bind(fd, (struct sockaddr *)&s6, sizeof(s6)) ? -errno : 0;
	return bind(fd, (struct sockaddr *)&s4, sizeof(s4)) ? -errno : 0;
}

static uint16_t local_port(int fd)
{
	struct sockaddr_in6 ss;
	socklen_t len = sizeof(ss);

	cr_assert_eq(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
	/* sin_port and sin6_port sit at the same offset */
	return ntohs(ss.sin6_port);
}

static portres_token_t create(const char *proto, uint16_t start, const char *grants)
{
	char req[512];
	portres_token_t t;
	json_t *r;

	snprintf(req, sizeof(req), "{\"v\":1,\"op\":\"create\",\"proto\":\"%s\",\"start\":%u,\"count\":10%s%s%s}",
		 proto, start, grants ? ",\"grants\":[" : "", grants ? grants : "", grants ? "]" : "");
	r = ag_req(req, -1);
	cr_assert_str_eq(ag_errno(r), "", "create %s %u: %s", proto, start,
			 json_string_value(json_object_get(r, "error")));
	t = strtoull(json_string_value(json_object_get(r, "token")), NULL, 16);
	json_decref(r);
	return t;
}

/* The associate op sent by hand, with fd (or -1): the errno name of the reply. */
static char *raw_associate(portres_token_t t, int fd)
{
	static char name[32];
	char req[128];
	json_t *r;

	snprintf(req, sizeof(req), "{\"v\":1,\"op\":\"associate\",\"token\":\"%016" PRIx64 "\"}", t);
	r = ag_req(req, fd);
	snprintf(name, sizeof(name), "%s", ag_errno(r));
	json_decref(r);
	return name;
}

Test(associate_agent, no_setsockopt_program_in_agent_mode)
{
	portres_token_t t;
	int fd;

	ag_start(agent_mode);
	cr_expect_eq(progs_on(BPF_CGROUP_SETSOCKOPT), 0, "agent mode attached a setsockopt program");
	cr_expect_eq(progs_on(BPF_CGROUP_GETSOCKOPT), 1, "getsockopt(PORTRES_ASSOCIATION) stays the program's");
	cr_expect_eq(progs_on(BPF_CGROUP_INET4_BIND), 1);
	cr_assert(ag_log_has("sockets associated by the agent"));
	t = create("tcp", 8000, NULL);
	fd = sock(AF_INET, IPPROTO_TCP);
	EXPECT_ERR(setsockopt(fd, SOL_PORTRES, PORTRES_ASSOCIATE, &t, sizeof(t)), ENOPROTOOPT);
	close(fd);

	/* The default mode adopts the pins and links the program; agent mode unlinks it again. */
	ag_stop();
	ag_start(NULL);
	cr_expect_eq(progs_on(BPF_CGROUP_SETSOCKOPT), 1, "the default mode has the setsockopt program");
	fd = sock(AF_INET, IPPROTO_TCP);
	cr_expect_eq(setsockopt(fd, SOL_PORTRES, PORTRES_ASSOCIATE, &t, sizeof(t)), 0, "%s", strerror(errno));
	close(fd);
	ag_stop();
	ag_start(agent_mode);
	cr_expect_eq(progs_on(BPF_CGROUP_SETSOCKOPT), 0, "the setsockopt link of the earlier agent stayed");
}

Test(associate_agent, associates_and_binds_from_the_block)
{
	static const int families[] = { AF_INET, AF_INET6 }, protos[] = { IPPROTO_TCP, IPPROTO_UDP };
	portres_token_t tt, tu, got;
	socklen_t len;
	int fd;

	ag_start(agent_mode);
	tt = create("tcp", 8000, NULL);
	tu = create("udp", 8000, NULL);
	for (int f = 0; f < 2; f++)
		for (int p = 0; p < 2; p++) {
			portres_token_t t = protos[p] == IPPROTO_TCP ? tt : tu;

			fd = sock(families[f], protos[p]);
			cr_assert_eq(portres_associate(fd, t), 0, "family %d proto %d: %s", families[f], protos[p],
				     strerror(errno));
			len = sizeof(got);
			cr_expect_eq(getsockopt(fd, SOL_PORTRES, PORTRES_ASSOCIATION, &got, &len), 0, "%s",
				     strerror(errno));
			cr_expect_eq(got, t, "getsockopt reads the agent's association");
			cr_assert_eq(bind_to(fd, families[f], 0), 0);
			cr_expect(local_port(fd) >= 8000 && local_port(fd) < 8010, "bind(0) got %u", local_port(fd));
			close(fd);
		}
	/* Unassociated sockets are kept out. */
	fd = sock(AF_INET, IPPROTO_TCP);
	cr_expect_eq(bind_to(fd, AF_INET, 8005), -EACCES);
	close(fd);
}

static portres_token_t g_token;

/* A socket of another network namespace than the token's. */
static int other_netns_associate(void *arg)
{
	int fd;

	if (unshare(CLONE_NEWNET))
		return 125;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	return portres_associate(fd, g_token) ? errno : 0;
}

Test(associate_agent, errno_rows)
{
	int fd, p[2], u = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ag_start(agent_mode);
	g_token = create("tcp", 8000, NULL);
	cr_assert_eq(pipe(p), 0);
	fd = sock(AF_INET, IPPROTO_TCP);
	/* EINVAL: unknown token, token 0, another netns's socket, a bound socket */
	EXPECT_ERR(portres_associate(fd, 0x1234), EINVAL);
	EXPECT_ERR(portres_associate(fd, 0), EINVAL);
	cr_expect_eq(ag_in_child(other_netns_associate, NULL), EINVAL, "a socket of another netns");
	cr_assert_eq(bind_to(fd, AF_INET, 9500), 0);
	EXPECT_ERR(portres_associate(fd, g_token), EINVAL);
	close(fd);
	/* EPROTOTYPE: a UDP socket, a TCP token */
	fd = sock(AF_INET6, IPPROTO_UDP);
	EXPECT_ERR(portres_associate(fd, g_token), EPROTOTYPE);
	close(fd);
	/* ENOTSOCK and EOPNOTSUPP: the library's checks, and the agent's own */
	EXPECT_ERR(portres_associate(p[0], g_token), ENOTSOCK);
	EXPECT_ERR(portres_associate(u, g_token), EOPNOTSUPP);
	cr_expect_str_eq(raw_associate(g_token, p[0]), "ENOTSOCK");
	cr_expect_str_eq(raw_associate(g_token, u), "EOPNOTSUPP");
	cr_expect_str_eq(raw_associate(g_token, -1), "EINVAL", "no socket passed");
	/* and the op works by hand */
	fd = sock(AF_INET, IPPROTO_TCP);
	cr_expect_str_eq(raw_associate(g_token, fd), "");
	cr_expect_eq(bind_to(fd, AF_INET, 8003), 0, "a port of the block after the raw op");
	close(fd);
	close(p[0]);
	close(p[1]);
	close(u);
}

/* Associates a fresh TCP socket with g_token and binds 0: 0, or the errno (99: a port outside 8000+). */
static int try_associate(void *arg)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	uint16_t base = arg ? *(uint16_t *)arg : 0;

	if (portres_associate(fd, g_token))
		return errno;
	if (base && (bind_to(fd, AF_INET, 0) || local_port(fd) < base || local_port(fd) >= base + 10))
		return 99;
	return 0;
}

struct in_cg {
	const struct test_user *u;
	uint16_t base;
};

/* In the cgroup cli_in_cgroup moved us to, as the user. */
static int user_in_cgroup(void *arg)
{
	struct in_cg *x = arg;

	return test_user_become(x->u, NULL, 0) ? 126 : try_associate(&x->base);
}

Test(associate_agent, eacces_as_a_created_user)
{
	struct portres_instance in;
	struct test_user u;
	char grants[4400], granted[4200], below[4300], other[4200];
	uint16_t base;
	int s;

	test_user_new(&u);
	ag_start(agent_mode);

	/* A persistent token without a grant: EACCES for the user, allowed for root. */
	g_token = create("tcp", 8000, NULL);
	cr_expect_eq(ag_as_user(&u, try_associate, NULL, NULL, 0), EACCES, "no grant");
	base = 8000;
	cr_expect_eq(ag_in_child(try_associate, &base), 0, "root");

	/* A runtime token: its acquirer only, not another process, even root's. */
	s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_eq(portres_acquire(s, &(struct portres_range){ 0, 8 }, &in), 0, "%s", strerror(errno));
	g_token = in.token;
	cr_expect_eq(ag_as_user(&u, try_associate, NULL, NULL, 0), EACCES, "another user's runtime token");
	cr_expect_eq(ag_in_child(try_associate, NULL), EACCES, "another process's runtime token");
	cr_expect_eq(try_associate(NULL), 0, "the acquirer");

	/* Grants: uid, primary gid, cgroup (the caller's or an ancestor). */
	snprintf(grants, sizeof(grants), "{\"type\":\"uid\",\"id\":%u}", u.uid);
	g_token = create("tcp", 8100, grants);
	base = 8100;
	cr_expect_eq(ag_as_user(&u, try_associate, &base, NULL, 0), 0, "uid grant");
	snprintf(grants, sizeof(grants), "{\"type\":\"gid\",\"id\":%u}", u.gid);
	g_token = create("tcp", 8200, grants);
	base = 8200;
	cr_expect_eq(ag_as_user(&u, try_associate, &base, NULL, 0), 0, "gid grant");

	cli_cgroup("granted", granted, sizeof(granted));
	cli_cgroup("other", other, sizeof(other));
	snprintf(below, sizeof(below), "%s/below", granted);
	cr_assert(mkdir(below, 0755) == 0, "mkdir %s: %s", below, strerror(errno));
	snprintf(grants, sizeof(grants), "{\"type\":\"cgroup\",\"path\":\"%s\"}", granted);
	g_token = create("tcp", 8300, grants);
	cr_expect_eq(cli_in_cgroup(other, user_in_cgroup, &(struct in_cg){ &u, 8300 }), EACCES,
		     "a cgroup without a grant");
	cr_expect_eq(cli_in_cgroup(granted, user_in_cgroup, &(struct in_cg){ &u, 8300 }), 0, "the granted cgroup");
	cr_expect_eq(cli_in_cgroup(below, user_in_cgroup, &(struct in_cg){ &u, 8300 }), 0,
		     "below the granted cgroup");
	close(s);
}

/* In a confined cgroup: associated with g_token, then a bind outside every block: its errno, or 0. */
static int confined_outside(void *arg)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (portres_associate(fd, g_token))
		return 100 + errno;
	return -bind_to(fd, AF_INET, 9000);
}

Test(associate_agent, keeps_what_the_data_plane_wrote)
{
	struct portres_instance in;
	portres_token_t a, b;
	char cg[4200], req[4400];
	json_t *r;
	int s;

	ag_start(agent_mode);
	/* A runtime reservation's anchor stays the anchor when the socket is associated. */
	a = create("tcp", 8000, NULL);
	s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_eq(portres_acquire(s, &(struct portres_range){ 0, 4 }, &in), 0, "%s", strerror(errno));
	cr_assert_eq(portres_associate(s, a), 0, "%s", strerror(errno));
	cr_assert(ag_has_token(in.token));
	close(s);
	cr_expect(ag_wait_gone(in.token), "closing the associated anchor did not end the runtime reservation");

	/* A socket of a confined cgroup stays confined when associated with another block. */
	b = create("tcp", 8100, NULL);
	cli_cgroup("confined", cg, sizeof(cg));
	snprintf(req, sizeof(req), "{\"v\":1,\"op\":\"attach\",\"cgroup\":\"%s\",\"token\":\"%016" PRIx64 "\","
		 "\"confine\":true}", cg, a);
	r = ag_req(req, -1);
	cr_assert_str_eq(ag_errno(r), "", "%s", json_string_value(json_object_get(r, "error")));
	json_decref(r);
	g_token = b;
	cr_expect_eq(cli_in_cgroup(cg, try_associate, &(uint16_t){ 8100 }), 0, "associated, bind(0) from b");
	cr_expect_eq(cli_in_cgroup(cg, confined_outside, NULL), EACCES, "confinement lost by the association");
}

/* --- an agent that associates, nested below an instance with the setsockopt program ---------- */

static struct portres_loader *outer;

static void outer_down(void)
{
	if (outer)
		portres_loader_teardown(outer);
	outer = NULL;
	ag_teardown();
}

/*
 * The outer instance (default mode) at the test's cgroup, the agent in agent
 * mode at a child: the outer program knows no token of the agent and says
 * EINVAL; libportres then asks the agent, which associates.
 */
Test(associate_agent, below_an_instance_with_the_program, .fini = outer_down)
{
	static const char *extra[] = { "--associate", "agent", "--cgroup", NULL, NULL };
	struct portres_loader_opts opts = { .cgroup_path = ag.cgroup, .max_resv = 64, .max_ports = 64 };
	char inner[4200], dir[400];
	portres_token_t t, got;
	socklen_t len = sizeof(got);
	int fd, err;

	snprintf(dir, sizeof(dir), "%s/outer", ag.bpffs);
	opts.bpffs_dir = dir;
	err = portres_loader_open(&opts, &outer);
	cr_assert_eq(err, 0, "the outer instance: %s", strerror(-err));
	cli_cgroup("inner", inner, sizeof(inner));
	extra[3] = inner;
	ag_start(extra);
	cr_expect_eq(test_progs_on(inner, BPF_CGROUP_SETSOCKOPT), 0);
	cr_expect_eq(test_progs_on(ag.cgroup, BPF_CGROUP_SETSOCKOPT), 1, "the outer instance's program");
	t = create("tcp", 8000, NULL);
	g_token = t;
	cr_expect_eq(cli_in_cgroup(inner, try_associate, &(uint16_t){ 8000 }), 0,
		     "associated through the agent below the outer program, bind(0) from the block");
	/* the raw option reaches only the outer program, which does not know the token */
	cr_assert_eq(cgroup2_enter(inner), 0);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	EXPECT_ERR(setsockopt(fd, SOL_PORTRES, PORTRES_ASSOCIATE, &t, sizeof(t)), EINVAL);
	cr_assert_eq(portres_associate(fd, t), 0, "%s", strerror(errno));
	cr_expect_eq(getsockopt(fd, SOL_PORTRES, PORTRES_ASSOCIATION, &got, &len), 0, "%s", strerror(errno));
	cr_expect_eq(got, t, "getsockopt reads the inner agent's association");
	close(fd);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	EXPECT_ERR(portres_associate(fd, 0x1234), EINVAL);
	close(fd);
	cr_assert_eq(cgroup2_enter(ag.cgroup), 0);
}
