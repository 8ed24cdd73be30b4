/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * proto_errno.h - errno names as they travel in portresd replies.
 *
 * Header-only because both sides need it: the agent (user/common) and
 * libportres (user/lib, which links nothing of user/common).
 */
#ifndef PORTRES_PROTO_ERRNO_H
#define PORTRES_PROTO_ERRNO_H

#include <errno.h>
#include <stddef.h>
#include <string.h>

#define PROTO_ERRNO(e) { e, #e }
static const struct {
	int code;
	const char *name;
} proto_errno_table[] = {
	/* SPEC §3, what the library's callers see */
	PROTO_ERRNO(EINVAL), PROTO_ERRNO(EOPNOTSUPP), PROTO_ERRNO(EPROTOTYPE),
	PROTO_ERRNO(EACCES), PROTO_ERRNO(EADDRINUSE), PROTO_ERRNO(ENOENT),
	PROTO_ERRNO(ENOTSOCK), PROTO_ERRNO(ECONNREFUSED),
	/* the rest of what the agent may say */
	PROTO_ERRNO(EPERM), PROTO_ERRNO(EEXIST), PROTO_ERRNO(EDQUOT), PROTO_ERRNO(ENOSPC),
	PROTO_ERRNO(EMSGSIZE), PROTO_ERRNO(EPROTO), PROTO_ERRNO(ENOSYS), PROTO_ERRNO(ENOMEM),
	PROTO_ERRNO(EIO), PROTO_ERRNO(EBUSY), PROTO_ERRNO(EAGAIN), PROTO_ERRNO(EBADF),
	PROTO_ERRNO(ENOTDIR), PROTO_ERRNO(E2BIG), PROTO_ERRNO(ESRCH), PROTO_ERRNO(ENODEV),
	PROTO_ERRNO(EADDRNOTAVAIL), PROTO_ERRNO(ENAMETOOLONG), PROTO_ERRNO(EROFS),
	PROTO_ERRNO(ETIMEDOUT), PROTO_ERRNO(EFBIG), PROTO_ERRNO(EUSERS), PROTO_ERRNO(ENOBUFS),
};
#undef PROTO_ERRNO

/* "EADDRINUSE"; NULL when not in the table. */
static inline const char *proto_errno_name(int code)
{
	for (size_t i = 0; i < sizeof(proto_errno_table) / sizeof(proto_errno_table[0]); i++)
		if (proto_errno_table[i].code == code)
			return proto_errno_table[i].name;
	return NULL;
}

/* The errno of a name; 0 when not in the table. */
static inline int proto_errno_from_name(const char *name)
{
	for (size_t i = 0; i < sizeof(proto_errno_table) / sizeof(proto_errno_table[0]); i++)
		if (!strcmp(proto_errno_table[i].name, name))
			return proto_errno_table[i].code;
	return 0;
}

#endif /* PORTRES_PROTO_ERRNO_H */
