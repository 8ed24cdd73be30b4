/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * sockdiag.h - which sockets hold local ports, from NETLINK_SOCK_DIAG.
 *
 * Lists TCP (every state but TIME_WAIT, which holds no socket) and UDP sockets
 * of both families in the calling thread's network namespace whose local port
 * lies in [start, start+count), sorted by protocol, port, family and address,
 * then maps their inodes to processes by scanning /proc/<pid>/fd (best
 * effort: pid 0 when no process is found). A socket shared by several
 * processes (nginx's workers) lists them all.
 */
#ifndef PORTRES_SOCKDIAG_H
#define PORTRES_SOCKDIAG_H

#include <stddef.h>
#include <stdint.h>

struct sockdiag_proc {
	int32_t pid;
	char comm[16];
};

struct sockdiag_sock {
	uint8_t proto;      /* IPPROTO_TCP or IPPROTO_UDP */
	uint8_t family;     /* AF_INET or AF_INET6 */
	uint8_t state;      /* TCP_* state as the kernel reports it */
	uint16_t port;      /* local port, host order */
	uint8_t addr[16];   /* local address, network order (IPv4: the first 4 bytes) */
	uint32_t uid;
	uint32_t inode;
	uint64_t cgroup_id; /* 0 if the kernel did not say */
	int32_t pid;        /* the first process holding it, 0 if unknown */
	char comm[16];
	size_t n_procs;     /* every process holding it (sockdiag_find_pids), lowest pid first */
	struct sockdiag_proc *procs;
};

/* proto 0: both. Returns 0 and a malloc'd array (may be NULL with *n == 0), or -errno. */
int sockdiag_list(uint8_t proto, uint32_t start, uint32_t count, struct sockdiag_sock **out, size_t *n);
/* Fills pid, comm and procs of each entry from /proc (best effort). */
void sockdiag_find_pids(struct sockdiag_sock *socks, size_t n);
/* Frees what sockdiag_list and sockdiag_find_pids allocated. */
void sockdiag_free(struct sockdiag_sock *socks, size_t n);
/* "127.0.0.1:8005", "[::]:8005" */
void sockdiag_endpoint(const struct sockdiag_sock *s, char *buf, size_t len);
/*
 * The holders, one line each (a process, or a uid when no process was found),
 * every socket of it on that line, after "in use by:":
 *
 *   in use by:
 *     pid 4121 (nginx): tcp 0.0.0.0:8005, tcp [::]:8005
 *     uid 1000: udp 127.0.0.1:8006
 *
 * At most 8 lines, then "  and N more"; indent precedes each line.
 */
void sockdiag_describe(const struct sockdiag_sock *socks, size_t n, const char *indent, char *buf, size_t len);

#endif /* PORTRES_SOCKDIAG_H */
