/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * portres.h - port reservations for Linux, the public API of libportres.
 *
 * A reservation is a block of TCP or UDP ports [start, start+count) that the
 * kernel (cgroup eBPF programs loaded by portresd) keeps for its holders:
 * nobody else may bind its ports, and sockets associated with it get their
 * local ports from it. The calls mirror the Windows port reservation API:
 *
 *   portres_acquire            SIO_ACQUIRE_PORT_RESERVATION
 *   portres_associate          SIO_ASSOCIATE_PORT_RESERVATION
 *   portres_release            SIO_RELEASE_PORT_RESERVATION
 *   portres_create_persistent  CreatePersistent{Tcp,Udp}PortReservation
 *   portres_lookup_persistent  LookupPersistent{Tcp,Udp}PortReservation
 *   portres_delete_persistent  DeletePersistent{Tcp,Udp}PortReservation
 *
 * The persistent calls act in the caller's network namespace (the one its
 * connection to the agent is made in); their _ns twins in the network
 * namespace netns_fd refers to (an open /proc/PID/ns/net, /run/netns/NAME as
 * `ip netns` makes them, or any nsfs descriptor; passing it proves the
 * caller could open it). The same block may exist in two namespaces; a
 * reservation ends when its namespace does. With a netns_fd that is not open
 * they fail with EBADF, with one of something else with EINVAL.
 *
 * Every function returns 0 on success and -1 with errno set on failure.
 * Ports are in host byte order; proto is IPPROTO_TCP or IPPROTO_UDP.
 * Besides the errors of the Windows calls (EINVAL, EOPNOTSUPP, EPROTOTYPE,
 * EACCES, EADDRINUSE, ENOENT, ENOTSOCK), portres_acquire fails with EDQUOT
 * when the caller's uid would hold more runtime ports than the agent's quota
 * (portresd --quota; root is exempt); no free block is EADDRINUSE. A caller
 * that is neither root nor in the agent's admin group acquires only inside
 * portresd --user-ports (default: the low end of ip_local_port_range up to
 * 65535, never below ip_unprivileged_port_start): a start outside it is
 * EACCES, a wildcard block is chosen inside it.
 *
 * portres_create_persistent survives a lost answer: it sends a random
 * request id, and when the connection to the agent breaks after the request
 * went out (the agent stopped, perhaps after saving the block and before
 * answering) it sends the same request again until 30 s have passed since
 * the call began. An agent that saved the block answers with its token, so
 * the caller gets the token once, never EADDRINUSE for its own block. If the
 * agent is not back within 30 s the call fails with ETIMEDOUT and the block
 * may exist (portres_lookup_persistent tells). With no agent at the first
 * try it fails with ECONNREFUSED at once.
 *
 * Association without the library, from any language:
 *   setsockopt(fd, SOL_PORTRES, PORTRES_ASSOCIATE, &token, sizeof token);
 *   getsockopt(fd, SOL_PORTRES, PORTRES_ASSOCIATION, &token, &len);  (ENOENT: none)
 *
 * The management calls talk to portresd over its Unix socket, by default
 * PORTRES_DEFAULT_SOCKET, or the path in the environment variable
 * PORTRES_SOCKET. With no agent listening they fail with ECONNREFUSED.
 */
#ifndef PORTRES_H
#define PORTRES_H

#ifdef __cplusplus
extern "C" {
#endif

/* The socket option level handled by portres's cgroup/{set,get}sockopt programs. */
#define SOL_PORTRES          0x7072
#define PORTRES_ASSOCIATE    1 /* setsockopt: portres_token_t in, before bind() */
#define PORTRES_ASSOCIATION  2 /* getsockopt: portres_token_t out, ENOENT if none */

#define PORTRES_DEFAULT_SOCKET "/run/portres/portresd.sock"
#define PORTRES_SOCKET_ENV     "PORTRES_SOCKET"

/* The BPF programs (bpf/portres.bpf.c) use only the constants above. */
#ifndef __bpf__
#include <stdint.h>

/* libportres is built with hidden visibility; only these are exported. */
#define PORTRES_API __attribute__((visibility("default")))

typedef uint64_t portres_token_t;                       /* 0 is never a valid token */
struct portres_range    { uint16_t start; uint16_t count; };  /* start 0 = any free block */
struct portres_instance { struct portres_range range; portres_token_t token; };

PORTRES_API int portres_acquire(int sockfd, const struct portres_range *want, struct portres_instance *out);
PORTRES_API int portres_associate(int sockfd, portres_token_t token);
PORTRES_API int portres_release(int sockfd, portres_token_t token);
PORTRES_API int portres_create_persistent(int proto, uint16_t start, uint16_t count, portres_token_t *token);
PORTRES_API int portres_lookup_persistent(int proto, uint16_t start, uint16_t count, portres_token_t *token);
PORTRES_API int portres_delete_persistent(int proto, uint16_t start, uint16_t count);
PORTRES_API int portres_create_persistent_ns(int netns_fd, int proto, uint16_t start, uint16_t count,
					     portres_token_t *token);
PORTRES_API int portres_lookup_persistent_ns(int netns_fd, int proto, uint16_t start, uint16_t count,
					     portres_token_t *token);
PORTRES_API int portres_delete_persistent_ns(int netns_fd, int proto, uint16_t start, uint16_t count);
#endif /* !__bpf__ */

#ifdef __cplusplus
}
#endif

#endif /* PORTRES_H */
