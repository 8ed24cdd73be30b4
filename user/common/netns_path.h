/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * netns_path.h - naming a network namespace the way users do, for the CLI,
 * the apply file and the OCI hook:
 *
 *   /proc/4242/ns/net, /var/run/netns/x   a netns file (any path with a '/')
 *   web                                   /run/netns/web, as `ip netns add web` makes it
 *   pid:4242                              /proc/4242/ns/net
 *
 * The descriptor opened is what travels to the agent (SCM_RIGHTS): it proves
 * the caller could open the namespace; the path goes along to be shown.
 */
#ifndef PORTRES_NETNS_PATH_H
#define PORTRES_NETNS_PATH_H

#include <stddef.h>

#define NETNS_RUN_DIR "/run/netns"

/* The absolute path spec names into path; 0 or -EINVAL with err. */
int netns_spec_path(const char *spec, char *path, size_t len, char *err, size_t errlen);
/*
 * Opens the network namespace spec names (O_CLOEXEC) and fills path: an fd,
 * or -errno with err naming spec and the cause (not a network namespace:
 * -EINVAL).
 */
int netns_spec_open(const char *spec, char *path, size_t len, char *err, size_t errlen);

#endif /* PORTRES_NETNS_PATH_H */
