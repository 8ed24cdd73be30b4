// SPDX-License-Identifier: LGPL-2.1-or-later
/* test_sysctl.c - port lists and the merge rules of ip_local_reserved_ports (on a plain file). */
#include <criterion/criterion.h>
#include <errno.h>
#include <malloc.h>
#include <sched.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sysctl_ports.h"

static char path[] = "/tmp/portres-sysctl-XXXXXX";

static void setup(void)
{
	int fd = mkstemp(path);

	cr_assert(fd >= 0);
	close(fd);
}

static void teardown(void)
{
	unlink(path);
	strcpy(path, "/tmp/portres-sysctl-XXXXXX");
}

static void put(const char *text)
{
	FILE *f = fopen(path, "w");

	cr_assert(f);
	fputs(text, f);
	fclose(f);
}

static char *get(void)
{
	static char buf[4096];
	FILE *f = fopen(path, "r");
	size_t n;

	cr_assert(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return buf;
}

static struct portset *set_of(const char *text)
{
	static struct portset s[4];
	static int i;
	struct portset *p = &s[i++ % 4];

	cr_assert_eq(portset_parse(text, p), 0, "parse %s", text);
	return p;
}

Test(portset, parse_and_format_round_trip)
{
	const char *cases[][2] = {
		{ "", "" }, { "\n", "" }, { "1", "1" }, { "1,2,3", "1-3" }, { "5-9,1", "1,5-9" },
		{ "0,65535", "0,65535" }, { "8000-8009,8005", "8000-8009" }, { "0-65535\n", "0-65535" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *out = portset_format(set_of(cases[i][0]));

		cr_assert_str_eq(out, cases[i][1], "case %s", cases[i][0]);
		free(out);
	}
}

Test(portset, parse_rejects_garbage)
{
	const char *bad[] = { "a", "1,", ",1", "5-3", "65536", "1-65536", "1 2", "-1", "1--2", "99999999999999999999" };
	struct portset s;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(portset_parse(bad[i], &s), -EINVAL, "accepted \"%s\"", bad[i]);
}

Test(portset, range_helpers)
{
	struct portset s;

	portset_clear(&s);
	portset_add(&s, 65530, 6);
	cr_assert(portset_test(&s, 65535));
	cr_assert_eq(portset_count(&s), 6);
	cr_assert(portset_any(&s, 65000, 531));
	cr_assert_not(portset_any(&s, 65000, 530));
	portset_del(&s, 65530, 6);
	cr_assert(portset_empty(&s));
}

/*
 * The longest texts: 2-port blocks with 1-port gaps ("1-2,4-5,...", 254 KB)
 * and every other port ("1,3,5,..."). The buffer holds the text whatever
 * the set (issue 11 item 1: a fixed 229,377 bytes was written past), and the
 * text reads back (portset_read once refused it with EFBIG).
 */
Test(portset, worst_case_text_fits_its_buffer, .init = setup, .fini = teardown)
{
	struct portset s[2], back;

	portset_clear(&s[0]);
	portset_clear(&s[1]);
	for (uint32_t p = 1; p < 65536; p += 3)
		portset_add(&s[0], p, 2);
	for (uint32_t p = 1; p < 65536; p += 2)
		portset_add(&s[1], p, 1);
	for (int k = 0; k < 2; k++) {
		char *text = portset_format(&s[k]);
		size_t len;

		cr_assert(text);
		len = strlen(text);
		cr_assert_eq(len, portset_format_len(&s[k]));
		cr_assert_geq(malloc_usable_size(text), len + 1, "text of %zu bytes in a buffer of %zu", len,
			      malloc_usable_size(text));
		cr_assert_eq(portset_parse(text, &back), 0);
		cr_assert_eq(memcmp(&back, &s[k], sizeof(back)), 0);
		free(text);
		cr_assert_eq(portset_write(path, &s[k]), 0);
		cr_assert_eq(portset_read(path, &back), 0);
		cr_assert_eq(memcmp(&back, &s[k], sizeof(back)), 0);
	}
	cr_assert_gt(portset_format_len(&s[0]), 250000);
}

/*
 * The kernel takes at most a page of text per write() of the sysctl (a
 * first write replaces the set, later ones add to it): the worst-case set,
 * written to the real ip_local_reserved_ports of a network namespace of the
 * test's own, reads back whole (one write() used to stop after its first
 * page with EIO, leaving a few hundred ports).
 */
Test(sysctl, worst_case_set_in_the_real_sysctl)
{
	pid_t pid = fork();
	int status;

	cr_assert(pid >= 0);
	if (pid == 0) {
		struct portset s, back;

		if (unshare(CLONE_NEWNET))
			_exit(2);
		portset_clear(&s);
		for (uint32_t p = 1; p < 65536; p += 3)
			portset_add(&s, p, 2);
		if (portset_write(SYSCTL_RESERVED_PORTS, &s) || portset_read(SYSCTL_RESERVED_PORTS, &back))
			_exit(3);
		_exit(memcmp(&s, &back, sizeof(s)) ? 4 : 0);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d (2 unshare, 3 write/read, 4 differs)",
		  status);
}

Test(portset, runs)
{
	struct portset s;
	uint32_t lo, hi;

	portset_clear(&s);
	cr_assert_not(portset_next_run(&s, 0, &lo, &hi));
	portset_add(&s, 0, 1);
	portset_add(&s, 63, 66);
	portset_add(&s, 65535, 1);
	cr_assert(portset_next_run(&s, 0, &lo, &hi));
	cr_assert(lo == 0 && hi == 0);
	cr_assert(portset_next_run(&s, 1, &lo, &hi));
	cr_assert(lo == 63 && hi == 128, "%u-%u", lo, hi);
	cr_assert(portset_next_run(&s, 100, &lo, &hi));
	cr_assert(lo == 100 && hi == 128);
	cr_assert(portset_next_run(&s, 129, &lo, &hi));
	cr_assert(lo == 65535 && hi == 65535);
	portset_add(&s, 65000, 536);
	cr_assert(portset_next_run(&s, 129, &lo, &hi));
	cr_assert(lo == 65000 && hi == 65535);
}

Test(sysctl, merge_keeps_preexisting_entries, .init = setup, .fini = teardown)
{
	struct portset owned, wanted;
	bool changed;

	put("22,8005,9000-9001\n");
	portset_clear(&owned);
	portset_clear(&wanted);
	portset_add(&wanted, 8000, 10);
	cr_assert_eq(sysctl_ports_sync(path, &wanted, &owned, &changed), 0);
	cr_assert(changed);
	cr_assert_str_eq(get(), "22,8000-8009,9000-9001");
	/* 8005 was the administrator's: not ours. */
	cr_assert_not(portset_test(&owned, 8005));
	cr_assert_eq(portset_count(&owned), 9);

	/* delete: only ours go, 8005 stays */
	portset_clear(&wanted);
	cr_assert_eq(sysctl_ports_sync(path, &wanted, &owned, &changed), 0);
	cr_assert_str_eq(get(), "22,8005,9000-9001");
	cr_assert(portset_empty(&owned));
}

Test(sysctl, shared_ports_stay_while_wanted, .init = setup, .fini = teardown)
{
	struct portset owned, wanted;

	put("\n");
	portset_clear(&owned);
	portset_clear(&wanted);
	/* tcp 8000-8009 and udp 8005-8014 */
	portset_add(&wanted, 8000, 10);
	portset_add(&wanted, 8005, 10);
	cr_assert_eq(sysctl_ports_sync(path, &wanted, &owned, NULL), 0);
	cr_assert_str_eq(get(), "8000-8014");
	/* tcp goes: udp's ports stay */
	portset_clear(&wanted);
	portset_add(&wanted, 8005, 10);
	cr_assert_eq(sysctl_ports_sync(path, &wanted, &owned, NULL), 0);
	cr_assert_str_eq(get(), "8005-8014");
	portset_clear(&wanted);
	cr_assert_eq(sysctl_ports_sync(path, &wanted, &owned, NULL), 0);
	cr_assert_str_eq(get(), "");
}

Test(sysctl, entry_added_later_by_admin_is_kept_unless_ours, .init = setup, .fini = teardown)
{
	struct portset owned, wanted;
	bool changed;

	put("");
	portset_clear(&owned);
	portset_clear(&wanted);
	portset_add(&wanted, 100, 1);
	cr_assert_eq(sysctl_ports_sync(path, &wanted, &owned, NULL), 0);
	put("100,200\n"); /* the administrator adds 200 */
	cr_assert_eq(sysctl_ports_sync(path, &wanted, &owned, &changed), 0);
	cr_assert_not(changed);
	portset_clear(&wanted);
	cr_assert_eq(sysctl_ports_sync(path, &wanted, &owned, NULL), 0);
	cr_assert_str_eq(get(), "200");
}

Test(sysctl, unreadable_file_changes_nothing)
{
	struct portset owned, wanted;

	portset_clear(&owned);
	portset_clear(&wanted);
	portset_add(&wanted, 1, 1);
	cr_assert_eq(sysctl_ports_sync("/nonexistent/portres", &wanted, &owned, NULL), -ENOENT);
	cr_assert(portset_empty(&owned));
}

Test(sysctl, port_range, .init = setup, .fini = teardown)
{
	uint16_t lo, hi;

	put("32768\t60999\n");
	cr_assert_eq(sysctl_port_range(path, &lo, &hi), 0);
	cr_assert_eq(lo, 32768);
	cr_assert_eq(hi, 60999);
	put("9 1\n");
	cr_assert_eq(sysctl_port_range(path, &lo, &hi), -EINVAL);
}

Test(sysctl, read_ulong, .init = setup, .fini = teardown)
{
	unsigned long v = 7;

	put("1024\n");
	cr_assert_eq(sysctl_read_ulong(path, &v), 0);
	cr_assert_eq(v, 1024);
	put("0");
	cr_assert_eq(sysctl_read_ulong(path, &v), 0);
	cr_assert_eq(v, 0);
	put("abc\n");
	cr_assert_eq(sysctl_read_ulong(path, &v), -EINVAL);
	put("12 13\n");
	cr_assert_eq(sysctl_read_ulong(path, &v), -EINVAL);
	put("");
	cr_assert_eq(sysctl_read_ulong(path, &v), -EINVAL);
	cr_assert_eq(sysctl_read_ulong("/nonexistent/portres", &v), -ENOENT);
	/* the real ones this is for */
	cr_assert_eq(sysctl_read_ulong("/proc/sys/net/ipv4/ip_unprivileged_port_start", &v), 0);
	cr_assert_leq(v, 65536);
}
