// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * associate.c - the associate op: what portres_setsopt decides for
 * setsockopt(SOL_PORTRES, PORTRES_ASSOCIATE), decided here for a socket
 * passed with the request, then written into its portres_sk storage
 * (portres_sk_associate). It serves agents started with --associate=agent,
 * where that program is not attached (libportres falls back to this op).
 *
 * The checks are the program's (bpf/portres.bpf.c: portres_setsopt and
 * may_associate), in its order, with the caller's credentials (SO_PEERCRED,
 * or the message's SCM_CREDENTIALS) in place of the current task's: the
 * socket unbound, the token a live reservation of the socket's netns (else
 * EINVAL), of the socket's protocol (EPROTOTYPE); a runtime token only for
 * the process that acquired it, a persistent one for root and the uids,
 * primary gids and cgroups (the caller's or an ancestor) granted (EACCES).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cgroup.h"
#include "portresd.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

/* A pidfd of the caller: the connection's own (the process that connected) when it sent the request. */
static int caller_pidfd(const struct peer *p)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	int pidfd;

	if (p->conn >= 0 && !getsockopt(p->conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) && cred.pid == p->pid) {
		len = sizeof(pidfd);
		if (!getsockopt(p->conn, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len))
			return pidfd;
	}
	/* A privileged sender's SCM_CREDENTIALS named another pid. */
	pidfd = (int)syscall(SYS_pidfd_open, p->pid, 0);
	return pidfd < 0 ? -errno : pidfd;
}

/*
 * The ids (cgroup2 inode numbers) of the caller's cgroup and its ancestors
 * up to the cgroup2 mount, deepest first: their number, or -errno. Read from
 * /proc/PID/cgroup, then the caller's pidfd must show it alive still: the
 * pid named the caller all along, not a process that took it over.
 */
static int caller_cgroups(const struct peer *p, uint64_t *ids, int max)
{
	const char *root = cgroup2_mount();
	char file[64], line[PATH_MAX], path[2 * PATH_MAX];
	size_t rootlen;
	struct stat st;
	FILE *f;
	int n = 0, pidfd, err = -ENOENT;
	char *cut;

	if (!root)
		return -ENODEV;
	if ((pidfd = caller_pidfd(p)) < 0)
		return pidfd;
	snprintf(file, sizeof(file), "/proc/%d/cgroup", (int)p->pid);
	if (!(f = fopen(file, "re"))) {
		err = -errno;
		goto cleanup;
	}
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "0::/", 4))
			continue;
		line[strcspn(line, "\n")] = '\0';
		snprintf(path, sizeof(path), "%s%s", root, strcmp(line + 3, "/") ? line + 3 : "");
		err = 0;
		break;
	}
	fclose(f);
	if (err)
		goto cleanup;
	if (syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0)) {
		err = -ESRCH;
		goto cleanup;
	}
	rootlen = strlen(root);
	while (n < max) {
		if (stat(path, &st)) {
			err = -errno;
			goto cleanup;
		}
		ids[n++] = st.st_ino; /* on cgroup2 the inode number is the cgroup id */
		if (strlen(path) <= rootlen || !(cut = strrchr(path, '/')) || (size_t)(cut - path) < rootlen)
			break;
		*cut = '\0';
	}
	err = n;
cleanup:
	close(pidfd);
	return err;
}

/* May the caller associate a socket with reservation r (may_associate in bpf/portres.bpf.c)? 0 or -EACCES. */
static int may_associate(struct agent *a, const struct peer *p, uint64_t token, const struct portres_resv *r,
			 char *msg, size_t len)
{
	uint64_t ids[PORTRES_MAX_CG_DEPTH];
	int i, n;

	if (r->kind == PORTRES_KIND_RUNTIME) {
		if ((uint32_t)p->pid == r->owner_tgid)
			return 0;
		snprintf(msg, len, "token %016" PRIx64 " is a runtime reservation of pid %u", token, r->owner_tgid);
		return -EACCES;
	}
	if (p->uid == 0 || portres_grant_has(a->loader, token, PORTRES_GRANT_UID, p->uid) == 1 ||
	    portres_grant_has(a->loader, token, PORTRES_GRANT_GID, p->gid) == 1)
		return 0;
	n = caller_cgroups(p, ids, PORTRES_MAX_CG_DEPTH);
	for (i = 0; i < n; i++)
		if (portres_grant_has(a->loader, token, PORTRES_GRANT_CGROUP, ids[i]) == 1)
			return 0;
	snprintf(msg, len, "uid %u, gid %u and %s have no grant of token %016" PRIx64, p->uid, p->gid,
		 n < 0 ? "an unknown cgroup" : "the caller's cgroup", token);
	if (n < 0)
		snprintf(msg + strlen(msg), len - strlen(msg), " (cgroup of pid %d: %s)", (int)p->pid, strerror(-n));
	return -EACCES;
}

int associate_socket(struct agent *a, const struct peer *p, int fd, uint8_t proto, uint64_t netns, uint64_t token,
		     char *msg, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	struct portres_resv r;
	uint16_t port;
	int err;

	if (getsockname(fd, (struct sockaddr *)&ss, &sslen)) {
		snprintf(msg, len, "cannot read the socket's address: %s", strerror(errno));
		return -EINVAL;
	}
	port = ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port;
	if (port) {
		snprintf(msg, len, "the socket is bound already (port %u): associate before bind()", ntohs(port));
		return -EINVAL;
	}
	if ((err = portres_resv_get(a->loader, token, &r)) || (r.flags & PORTRES_RESV_DEAD) || r.netns != netns) {
		snprintf(msg, len, "no reservation with token %016" PRIx64 "%s", token,
			 err || (r.flags & PORTRES_RESV_DEAD) ? "" : " in the socket's network namespace");
		return -EINVAL;
	}
	if (r.proto != proto) {
		snprintf(msg, len, "token %016" PRIx64 " is a %s reservation, the socket is %s", token,
			 state_proto_name(r.proto), state_proto_name(proto));
		return -EPROTOTYPE;
	}
	if ((err = may_associate(a, p, token, &r, msg, len)))
		return err;
	if ((err = portres_sk_associate(a->loader, fd, token))) {
		snprintf(msg, len, "cannot write the socket's association: %s", strerror(-err));
		return err;
	}
	log_msg(LOG_DEBUG, "associate", "a socket of pid %d with token %016" PRIx64, (int)p->pid, token);
	return 0;
}
