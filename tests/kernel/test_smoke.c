// SPDX-License-Identifier: LGPL-2.1-or-later
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include "fixture.h"

TestSuite(smoke, .init = fx_setup, .fini = fx_teardown);

Test(smoke, reserved_port_denied_and_associated_bind0)
{
	uint64_t t = fx_reserve(IPPROTO_TCP, 20000, 4, PORTRES_KIND_PERSISTENT, PORTRES_MODE_ENFORCE);
	int a = fx_socket(AF_INET, IPPROTO_TCP), b = fx_socket(AF_INET, IPPROTO_TCP);
	uint64_t got = 0;
	socklen_t len = sizeof(got);

	cr_expect_eq(fx_bind(a, AF_INET, 20001), -EACCES);
	cr_assert_eq(portres_associate(b, t), 0, "associate: %s", strerror(errno));
	cr_assert_eq(getsockopt(b, SOL_PORTRES, PORTRES_ASSOCIATION, &got, &len), 0, "%s", strerror(errno));
	cr_expect_eq(got, t);
	cr_assert_eq(fx_bind(b, AF_INET, 0), 0);
	cr_expect(fx_local_port(b) >= 20000 && fx_local_port(b) < 20004, "port %u", fx_local_port(b));
	close(a);
	close(b);
}
