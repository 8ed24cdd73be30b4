/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * fixture.h - every kernel test runs in its own world: a private mount and
 * network namespace (so a crash leaves no pin, mount or sysctl behind), its
 * own bpffs instance, and its own cgroup under the cgroup2 mount, with
 * portres's programs loaded and attached there.
 */
#ifndef PORTRES_TEST_FIXTURE_H
#define PORTRES_TEST_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include "loader.h"
#include "portres.h"
#include "users.h"

struct fixture {
	char cgroup[4096];       /* the test's cgroup2 directory */
	char home_cgroup[4096];  /* where the test process came from */
	char tmp[256];           /* private temp dir */
	char bpffs[300];         /* private bpffs mount inside tmp */
	struct portres_loader *l;
	uint64_t netns;          /* cookie of the test's netns */
};

extern struct fixture fx;

/*
 * Criterion .init / .fini for kernel tests. Unprivileged cases run as real
 * users (users.h): fx_teardown removes those test_user_new made, even when
 * the test failed, and fx_setup those of crashed runs.
 */
void fx_setup(void);
void fx_teardown(void);

/* Unshare mount + net namespaces, bring lo up. Used by fx_setup; also by e2e tests. */
void fx_private_namespaces(void);
/* The cgroup2 mount point, from /proc/self/mountinfo. */
const char *fx_cgroup2_root(void);
/* Create a child cgroup of the test's cgroup (for cgroup association tests). */
void fx_child_cgroup(const char *name, char *path, size_t len);
/* Move the calling process into cgroup path. */
void fx_enter_cgroup(const char *path);

/* Adds a reservation and returns its token (test-chosen, non-zero). */
uint64_t fx_reserve(uint8_t proto, uint16_t start, uint16_t count, uint8_t kind, uint8_t mode);

/* Sockets. family AF_INET or AF_INET6; proto IPPROTO_TCP or IPPROTO_UDP. */
int fx_socket(int family, int proto);
/* bind to the wildcard address; returns 0 or -errno. */
int fx_bind(int fd, int family, uint16_t port);
/* the bound local port */
uint16_t fx_local_port(int fd);
int fx_sotype(int proto);

#endif
