// SPDX-License-Identifier: LGPL-2.1-or-later
/* test_sysctl.c - port lists and the merge rules of ip_local_reserved_ports (on a plain file). */
#include <criterion/criterion.h>
#include <errno.h>
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
