// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * associate.c - portres_associate: tie a socket to a reservation before bind().
 *
 * The work is done in the kernel by portres's cgroup/setsockopt program; this
 * call adds the checks that the kernel cannot make for a socket it does not
 * see (ENOTSOCK, EOPNOTSUPP) so every caller gets the errno of SPEC §3.
 *
 * An agent started with --associate=agent attaches no setsockopt program
 * (every setsockopt(2) of the host is cheaper without one): the kernel then
 * answers ENOPROTOOPT for our level, and the socket goes to the agent
 * (SCM_RIGHTS), which checks the same rules and writes the association. The
 * agent is also asked when the programs know no such token (EINVAL): an
 * instance in agent mode nested below one with the program may know it.
 */
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "portres.h"
#include "transport.h"

/* 0 if fd is a TCP or UDP socket over IPv4/IPv6, else -1 with errno set. */
static int check_inet_socket(int fd)
{
	int domain, type, protocol;
	socklen_t len = sizeof(int);
	struct stat st;

	if (fstat(fd, &st))
		return -1;
	if (!S_ISSOCK(st.st_mode)) {
		errno = ENOTSOCK;
		return -1;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len))
		return -1;
	len = sizeof(int);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len))
		return -1;
	len = sizeof(int);
	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len))
		return -1;
	if ((domain != AF_INET && domain != AF_INET6) ||
	    !((type == SOCK_STREAM && protocol == IPPROTO_TCP) ||
	      (type == SOCK_DGRAM && protocol == IPPROTO_UDP))) {
		errno = EOPNOTSUPP;
		return -1;
	}
	return 0;
}

int portres_associate(int sockfd, portres_token_t token)
{
	int kernel, err;

	if (check_inet_socket(sockfd))
		return -1;
	if (token == 0) {
		errno = EINVAL;
		return -1;
	}
	if (setsockopt(sockfd, SOL_PORTRES, PORTRES_ASSOCIATE, &token, sizeof(token)) == 0)
		return 0;
	if (errno != ENOPROTOOPT && errno != EINVAL)
		return -1;
	kernel = errno;
	err = portres_associate_agent(sockfd, token);
	if (!err)
		return 0;
	/* No program and no agent: no portres knows the token. */
	if (err == -ECONNREFUSED)
		errno = EINVAL;
	/* The programs' EINVAL stands unless an agent knew the token and refused. */
	else if (kernel == EINVAL && err != -EACCES && err != -EPROTOTYPE)
		errno = EINVAL;
	else
		errno = -err;
	return -1;
}
