/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * sockdiag.h - which sockets hold local ports, from NETLINK_SOCK_DIAG.
 *
 * Lists TCP (every state but TIME_WAIT, which holds no socket) and UDP sockets
 * of both families in the calling thread's network namespace whose local port
 * lies in [start, start+count), then maps their inodes to processes by
 * scanning /proc/<pid>/fd (best effort: pid 0 when no process is found).
 */
#ifndef PORTRES_SOCKDIAG_H
#define PORTRES_SOCKDIAG_H

#include <stddef.h>
#include <stdint.h>

struct sockdiag_sock {
	uint8_t proto;      /* IPPROTO_TCP or IPPROTO_UDP */
	uint8_t family;     /* AF_INET or AF_INET6 */
	uint8_t state;      /* TCP_* state as the kernel reports it */
	uint16_t port;      /* local port, host order */
	uint32_t uid;
	uint32_t inode;
	uint64_t cgroup_id; /* 0 if the kernel did not say */
	int32_t pid;        /* 0 if unknown */
	char comm[16];
};

/* proto 0: both. Returns 0 and a malloc'd array (may be NULL with *n == 0), or -errno. */
int sockdiag_list(uint8_t proto, uint32_t start, uint32_t count, struct sockdiag_sock **out, size_t *n);
/* Fills pid and comm of each entry from /proc (best effort). */
void sockdiag_find_pids(struct sockdiag_sock *socks, size_t n);
/*
 * "port 8005/tcp in use by pid 4121 (nginx), port 8006/udp by uid 1000" into
 * buf (at most max holders named, then "and N more").
 */
void sockdiag_describe(const struct sockdiag_sock *socks, size_t n, char *buf, size_t len);

#endif /* PORTRES_SOCKDIAG_H */
