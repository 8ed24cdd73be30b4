// SPDX-License-Identifier: LGPL-2.1-or-later
/* test_state.c - the state file: round trip, strict loading, atomic saving. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "portres_abi.h"
#include "state.h"

static char dir[] = "/tmp/portres-state-XXXXXX";
static char file[300];

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(p);
}

static void setup(void)
{
	cr_assert(mkdtemp(dir));
	snprintf(file, sizeof(file), "%s/%s", dir, STATE_FILE);
}

static void teardown(void)
{
	nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
	strcpy(dir, "/tmp/portres-state-XXXXXX");
}

static void put(const char *text)
{
	FILE *f = fopen(file, "w");

	cr_assert(f);
	fputs(text, f);
	fclose(f);
}

static char *slurp(void)
{
	static char buf[65536];
	FILE *f = fopen(file, "r");
	size_t n;

	cr_assert(f, "no %s", file);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return buf;
}

static void sample(struct state *st)
{
	struct state_grant grants[] = {
		{ .type = PORTRES_GRANT_UID, .id = 1000 },
		{ .type = PORTRES_GRANT_CGROUP, .id = 4242, .path = "/sys/fs/cgroup/web" },
	};
	struct state_resv web = { .token = 0x5f0c2a9e1b7d4c33ULL, .proto = IPPROTO_TCP, .start = 8000,
				  .count = 10, .name = "web", .mode = PORTRES_MODE_AUDIT,
				  .n_grants = 2, .grants = grants,
				  .request_id = "0123456789abcdef0123456789abcdef", .request_uid = 1001 };
	struct state_resv dns = { .token = 0xffffffffffffffffULL, .proto = IPPROTO_UDP, .start = 8000,
				  .count = 1 };
	struct state_attach a = { .path = "/sys/fs/cgroup/web", .cgroup_id = 4242,
				  .token = web.token, .confine = true, .by_uid = 1001 };

	memset(st, 0, sizeof(*st));
	cr_assert_eq(state_add_resv(st, &web), 0);
	cr_assert_eq(state_add_resv(st, &dns), 0);
	cr_assert_eq(state_add_attach(st, &a), 0);
	portset_add(&st->sysctl_added, 8000, 10);
}

Test(state, missing_file_is_empty, .init = setup, .fini = teardown)
{
	struct state st;
	char err[STATE_ERR_LEN];

	cr_assert_eq(state_load(dir, &st, err, sizeof(err)), 0);
	cr_assert_eq(st.n_resv, 0);
	cr_assert_eq(st.n_attach, 0);
	cr_assert(portset_empty(&st.sysctl_added));
	state_free(&st);
}

Test(state, round_trip, .init = setup, .fini = teardown)
{
	struct state st, back;
	char err[STATE_ERR_LEN];

	sample(&st);
	cr_assert_eq(state_save(dir, &st, true, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(state_load(dir, &back, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(back.n_resv, 2);
	cr_assert_eq(back.resv[0].token, 0x5f0c2a9e1b7d4c33ULL);
	cr_assert_eq(back.resv[0].mode, PORTRES_MODE_AUDIT);
	cr_assert_str_eq(back.resv[0].name, "web");
	cr_assert_eq(back.resv[0].n_grants, 2);
	cr_assert_eq(back.resv[0].grants[1].id, 4242);
	cr_assert_str_eq(back.resv[0].grants[1].path, "/sys/fs/cgroup/web");
	cr_assert_eq(back.resv[1].token, 0xffffffffffffffffULL);
	cr_assert_null(back.resv[1].name);
	cr_assert_str_eq(back.resv[0].request_id, "0123456789abcdef0123456789abcdef");
	cr_assert_eq(back.resv[0].request_uid, 1001);
	cr_assert_null(back.resv[1].request_id);
	cr_assert_eq(back.n_attach, 1);
	cr_assert(back.attach[0].confine);
	cr_assert(!back.attach[0].by_admin);
	cr_assert_eq(back.attach[0].by_uid, 1001);
	cr_assert_eq(portset_count(&back.sysctl_added), 10);
	cr_assert(strstr(slurp(), "\"token\": \"5f0c2a9e1b7d4c33\""));
	cr_assert(strstr(slurp(), "\"version\": 2"));
	cr_assert(strstr(slurp(), "\"boot_id\": \""), "the boot is saved: %s", slurp());
	state_free(&st);
	state_free(&back);
}

Test(state, save_leaves_no_temporary_and_mode_0600, .init = setup, .fini = teardown)
{
	struct state st;
	struct stat sb;
	char err[STATE_ERR_LEN], cmd[400];

	sample(&st);
	cr_assert_eq(state_save(dir, &st, false, err, sizeof(err)), 0);
	cr_assert_eq(stat(file, &sb), 0);
	cr_assert_eq(sb.st_mode & 0777, 0600);
	snprintf(cmd, sizeof(cmd), "test $(ls -A %s | wc -l) -eq 1", dir);
	cr_assert_eq(system(cmd), 0);
	state_free(&st);
}

static void expect_refused(const char *text, const char *needle)
{
	struct state st;
	char err[STATE_ERR_LEN];
	char *before;

	put(text);
	before = strdup(slurp());
	cr_assert_eq(state_load(dir, &st, err, sizeof(err)), -EINVAL, "accepted: %s", text);
	cr_assert(strstr(err, needle), "message \"%s\" lacks \"%s\"", err, needle);
	cr_assert(strstr(err, file), "message \"%s\" does not name the file", err);
	cr_assert_str_eq(slurp(), before, "file was modified");
	cr_assert_eq(st.n_resv, 0);
	free(before);
}

#define R(x) "{\"version\":1,\"reservations\":[" x "]}"
#define T "\"token\":\"00000000000000aa\""

Test(state, refuses_torn_and_invalid_files, .init = setup, .fini = teardown)
{
	expect_refused("{\"version\":1,\"reservations\":[{\"tok", ":1:");
	expect_refused("", ":1:");
	expect_refused("[]", "top level");
	expect_refused("{}", "version");
	expect_refused("{\"version\":3}", "version");
	expect_refused("{\"version\":0}", "version");
	expect_refused("{\"version\":\"1\"}", "version");
	expect_refused(R("{\"proto\":\"tcp\",\"start\":1,\"count\":1}"), "reservations[0].token");
	expect_refused(R("{\"token\":\"0000000000000000\",\"proto\":\"tcp\",\"start\":1,\"count\":1}"),
		       "reservations[0].token");
	expect_refused(R("{" T ",\"proto\":\"sctp\",\"start\":1,\"count\":1}"), "reservations[0].proto");
	expect_refused(R("{" T ",\"proto\":\"tcp\",\"start\":0,\"count\":1}"), "reservations[0].start");
	expect_refused(R("{" T ",\"proto\":\"tcp\",\"start\":\"80\",\"count\":1}"), "reservations[0].start");
	expect_refused(R("{" T ",\"proto\":\"tcp\",\"start\":65535,\"count\":2}"), "bad range");
	expect_refused(R("{" T ",\"proto\":\"tcp\",\"start\":1,\"count\":0}"), "reservations[0].count");
	expect_refused(R("{" T ",\"proto\":\"tcp\",\"start\":1,\"count\":1,\"mode\":\"loud\"}"), "mode");
	expect_refused(R("{" T ",\"proto\":\"tcp\",\"start\":1,\"count\":1,\"name\":\"a b\"}"), "name");
	expect_refused(R("{" T ",\"proto\":\"tcp\",\"start\":1,\"count\":1,\"grants\":[{\"type\":\"pid\",\"id\":1}]}"),
		       "grants[0].type");
	expect_refused(R("{" T ",\"proto\":\"tcp\",\"start\":100,\"count\":10},"
			 "{\"token\":\"00000000000000bb\",\"proto\":\"tcp\",\"start\":109,\"count\":1}"),
		       "overlaps");
	expect_refused(R("{" T ",\"proto\":\"tcp\",\"start\":100,\"count\":10},"
			 "{" T ",\"proto\":\"udp\",\"start\":100,\"count\":10}"), "same as");
	expect_refused("{\"version\":1,\"attachments\":[{\"path\":\"/x\",\"cgroup_id\":1," T "}]}",
		       "no such reservation");
	expect_refused("{\"version\":1,\"sysctl_added\":\"1-\"}", "sysctl_added");
	expect_refused(R("{" T ",\"proto\":\"tcp\",\"start\":1,\"count\":1,\"request\":\"x\"}"),
		       "reservations[0].request");
	expect_refused(R("{" T ",\"proto\":\"tcp\",\"start\":1,\"count\":1,\"request\":{\"id\":\"short\",\"uid\":0}}"),
		       "reservations[0].request.id");
	expect_refused(R("{" T ",\"proto\":\"tcp\",\"start\":1,\"count\":1,"
			 "\"request\":{\"id\":\"0123456789abcdef\"}}"), "reservations[0].request.uid");
	expect_refused("{\"version\":1,\"reservations\":[{" T ",\"proto\":\"tcp\",\"start\":1,\"count\":1}],"
		       "\"attachments\":[{\"path\":\"/x\",\"cgroup_id\":1," T ",\"made_by\":{\"admin\":1,\"uid\":0}}]}",
		       "attachments[0].made_by.admin");
	expect_refused("{\"version\":1,\"reservations\":[{" T ",\"proto\":\"tcp\",\"start\":1,\"count\":1}],"
		       "\"attachments\":[{\"path\":\"/x\",\"cgroup_id\":1," T ",\"made_by\":{\"admin\":false}}]}",
		       "attachments[0].made_by.uid");
	expect_refused("{\"version\":1,\"version\":1}", ":1:");
}

/* Attachments saved before "made_by" was kept were all made by administrators. */
Test(state, attachment_without_made_by_is_an_admins, .init = setup, .fini = teardown)
{
	struct state st;
	char err[STATE_ERR_LEN];

	put("{\"version\":1,\"reservations\":[{" T ",\"proto\":\"tcp\",\"start\":1,\"count\":1}],"
	    "\"attachments\":[{\"path\":\"/x\",\"cgroup_id\":1," T ",\"confine\":true}]}");
	cr_assert_eq(state_load(dir, &st, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(st.n_attach, 1);
	cr_assert(st.attach[0].by_admin);
	cr_assert_eq(st.attach[0].by_uid, 0);
	state_free(&st);
}

Test(state, udp_and_tcp_may_share_ports, .init = setup, .fini = teardown)
{
	struct state st;
	char err[STATE_ERR_LEN];

	put(R("{" T ",\"proto\":\"tcp\",\"start\":100,\"count\":10},"
	      "{\"token\":\"00000000000000bb\",\"proto\":\"udp\",\"start\":100,\"count\":10}"));
	cr_assert_eq(state_load(dir, &st, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(st.n_resv, 2);
	state_free(&st);
}

/* A short write (RLIMIT_FSIZE stands in for a full disk) keeps the old file. */
Test(state, failed_save_keeps_old_file, .init = setup, .fini = teardown)
{
	struct state st;
	char err[STATE_ERR_LEN];
	char *before;
	pid_t pid;
	int status;

	sample(&st);
	cr_assert_eq(state_save(dir, &st, true, err, sizeof(err)), 0);
	before = strdup(slurp());
	for (int i = 0; i < 200; i++) {
		struct state_resv r = { .token = 0x1000 + (uint64_t)i, .proto = IPPROTO_TCP,
					.start = (uint16_t)(20000 + i), .count = 1 };

		cr_assert_eq(state_add_resv(&st, &r), 0);
	}
	pid = fork();
	if (pid == 0) {
		struct rlimit rl = { 512, 512 };

		signal(SIGXFSZ, SIG_IGN);
		setrlimit(RLIMIT_FSIZE, &rl);
		_exit(state_save(dir, &st, true, err, sizeof(err)) == -EFBIG && strstr(err, "old state kept") ? 0 : 1);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "save did not fail cleanly");
	cr_assert_str_eq(slurp(), before);
	state_free(&st);
	free(before);
}

Test(state, save_into_missing_directory_fails, .init = setup, .fini = teardown)
{
	struct state st;
	char err[STATE_ERR_LEN];

	sample(&st);
	cr_assert_lt(state_save("/nonexistent/portres", &st, true, err, sizeof(err)), 0);
	cr_assert(strstr(err, "/nonexistent/portres"));
	state_free(&st);
}

Test(state, helpers)
{
	uint64_t t;
	char buf[17];

	cr_assert_eq(state_token_parse("00000000000000aB", &t), 0);
	cr_assert_eq(t, 0xab);
	state_token_format(t, buf);
	cr_assert_str_eq(buf, "00000000000000ab");
	cr_assert_neq(state_token_parse("0000000000000000", &t), 0);
	cr_assert_neq(state_token_parse("00000000000000a", &t), 0);
	cr_assert_neq(state_token_parse("00000000000000ag", &t), 0);
	cr_assert(state_name_valid("web-1.prod_x"));
	cr_assert_not(state_name_valid(""));
	cr_assert_not(state_name_valid("-x"));
	cr_assert_not(state_name_valid("a/b"));
	cr_assert_eq(state_proto_parse("udp"), IPPROTO_UDP);
	cr_assert_eq(state_mode_parse("advisory"), PORTRES_MODE_ADVISORY);
	cr_assert_eq(state_grant_parse("gid"), PORTRES_GRANT_GID);
}

/* Version 2: reservations in other network namespaces, found again by their netns entry. */
static void sample_netns(struct state *st)
{
	struct portset added;
	struct state_netns ns = { .cookie = 4711, .inode = 4026532178ULL, .nsid = 3, .path = "/run/netns/pod",
				  .sysctl_added = &added };
	struct state_resv pod = { .token = 0x77aa01c3d2e4f5a6ULL, .proto = IPPROTO_TCP, .start = 8000, .count = 10,
				  .name = "pod", .netns = 4711 };
	struct state_attach a = { .path = "/sys/fs/cgroup/pod", .cgroup_id = 99, .token = pod.token,
				  .confine = STATE_CONFINE_ALL };

	sample(st);
	portset_clear(&added);
	portset_add(&added, 8000, 10);
	cr_assert_eq(state_add_netns(st, &ns), 0);
	/* the same block as "web": another netns */
	cr_assert_eq(state_add_resv(st, &pod), 0);
	cr_assert_eq(state_add_attach(st, &a), 0);
}

Test(state, netns_round_trip, .init = setup, .fini = teardown)
{
	struct state st, back;
	char err[STATE_ERR_LEN], boot[STATE_BOOT_ID_LEN + 1];

	sample_netns(&st);
	cr_assert_eq(state_save(dir, &st, true, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(state_load(dir, &back, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(back.n_resv, 3);
	cr_assert_eq(back.resv[0].netns, 0);
	cr_assert_eq(back.resv[2].netns, 4711);
	cr_assert_eq(back.n_netns, 1);
	cr_assert_eq(back.netns[0].inode, 4026532178ULL);
	cr_assert_eq(back.netns[0].nsid, 3);
	cr_assert_str_eq(back.netns[0].path, "/run/netns/pod");
	cr_assert_not_null(back.netns[0].sysctl_added);
	cr_assert_eq(portset_count(back.netns[0].sysctl_added), 10);
	cr_assert_eq(back.attach[1].confine, STATE_CONFINE_ALL);
	cr_assert(strstr(slurp(), "\"confine\": \"all\""));
	cr_assert_eq(state_boot_id(boot), 0);
	cr_assert_str_eq(back.boot_id, boot);
	state_free(&st);
	state_free(&back);
}

Test(state, version_1_still_loads, .init = setup, .fini = teardown)
{
	struct state st;
	char err[STATE_ERR_LEN];

	put("{\"version\":1,\"reservations\":[{" T ",\"proto\":\"tcp\",\"start\":100,\"count\":10}],"
	    "\"attachments\":[{\"path\":\"/x\",\"cgroup_id\":1," T ",\"confine\":true}],\"sysctl_added\":\"100-109\"}");
	cr_assert_eq(state_load(dir, &st, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(st.n_resv, 1);
	cr_assert_eq(st.resv[0].netns, 0);
	cr_assert_eq(st.attach[0].confine, STATE_CONFINE);
	cr_assert_str_eq(st.boot_id, "");
	state_free(&st);
}

#define N(x) "{\"cookie\":7,\"inode\":9" x "}"
#define R2(n, x) "{\"version\":2,\"netns\":[" n "],\"reservations\":[" x "]}"

Test(state, refuses_invalid_netns, .init = setup, .fini = teardown)
{
	expect_refused(R2("", "{" T ",\"proto\":\"tcp\",\"start\":1,\"count\":1,\"netns\":7}"), "no netns entry");
	expect_refused(R2("{\"cookie\":0,\"inode\":9}", ""), "netns[0]");
	expect_refused(R2("{\"cookie\":7}", ""), "netns[0].inode");
	expect_refused(R2(N(",\"path\":\"run/netns/x\""), ""), "netns[0].path");
	expect_refused(R2(N(",\"nsid\":-2"), ""), "netns[0].nsid");
	expect_refused(R2(N(",\"sysctl_added\":\"x\""), ""), "netns[0].sysctl_added");
	expect_refused(R2(N("") "," N(""), ""), "same as netns[0]");
	expect_refused(R2(N(""), "{" T ",\"proto\":\"tcp\",\"start\":1,\"count\":5,\"netns\":7},"
			  "{\"token\":\"00000000000000bb\",\"proto\":\"tcp\",\"start\":5,\"count\":1,\"netns\":7}"),
		       "overlaps");
	expect_refused("{\"version\":2,\"boot_id\":\"x\"}", "boot_id");
	/* "all" is version 2 */
	expect_refused("{\"version\":1,\"reservations\":[{" T ",\"proto\":\"tcp\",\"start\":1,\"count\":1}],"
		       "\"attachments\":[{\"path\":\"/x\",\"cgroup_id\":1," T ",\"confine\":\"all\"}]}", "confine");
	/* one block per protocol and cgroup */
	expect_refused("{\"version\":2,\"reservations\":[{" T ",\"proto\":\"tcp\",\"start\":1,\"count\":1},"
		       "{\"token\":\"00000000000000bb\",\"proto\":\"tcp\",\"start\":2,\"count\":1}],"
		       "\"attachments\":[{\"path\":\"/x\",\"cgroup_id\":1," T "},"
		       "{\"path\":\"/x\",\"cgroup_id\":1,\"token\":\"00000000000000bb\"}]}", "attached twice");
}

Test(state, same_block_in_two_netns, .init = setup, .fini = teardown)
{
	struct state st;
	char err[STATE_ERR_LEN];

	put(R2(N(""), "{" T ",\"proto\":\"tcp\",\"start\":100,\"count\":10},"
	       "{\"token\":\"00000000000000bb\",\"proto\":\"tcp\",\"start\":100,\"count\":10,\"netns\":7}"));
	cr_assert_eq(state_load(dir, &st, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(st.n_resv, 2);
	state_free(&st);
}
