/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * cgroup.h - the cgroup2 hierarchy as the agent and the CLI see it: where it
 * is mounted, and which directory a cgroup id names.
 *
 * A cgroup id is what the kernel reports for a socket (sock_diag
 * INET_DIAG_CGROUP_ID, BPF events) and what portres keys attachments by; on
 * cgroup2 it is also the inode number of the cgroup's directory and the
 * content of its file handle (FILEID_KERNFS), so a path is found with one
 * open_by_handle_at (root, CAP_DAC_READ_SEARCH) or, without that privilege,
 * by walking the mount.
 */
#ifndef PORTRES_CGROUP_H
#define PORTRES_CGROUP_H

#include <stddef.h>
#include <stdint.h>

/* The cgroup2 mount point from /proc/self/mountinfo (looked up once), or NULL. */
const char *cgroup2_mount(void);

/*
 * The path of the cgroup with this id, below cgroup2_mount(), into buf.
 * 0; -ENOENT when no such cgroup exists (any more); -ENODEV without a cgroup2
 * mount; -ENAMETOOLONG.
 */
int cgroup2_path(uint64_t id, char *buf, size_t len);

/*
 * The cgroup id of the cgroup2 directory path (after "..", links): 0;
 * -EINVAL when it is not one, with why naming the cause (a file; where path
 * leads, outside the cgroup2 mount; another file system); -ENOENT and other
 * -errno when it cannot be looked at (why: strerror).
 */
int cgroup2_dir_id(const char *path, uint64_t *id, char *why, size_t len);

/* The calling process's cgroup2 directory (from /proc/self/cgroup) into buf. */
int cgroup2_self(char *buf, size_t len);

/* Moves the calling process into the cgroup2 directory path. 0 or -errno. */
int cgroup2_enter(const char *path);

/* Removes the cgroup path and every cgroup below it (they must hold no process). */
void cgroup2_remove(const char *path);

#endif /* PORTRES_CGROUP_H */
