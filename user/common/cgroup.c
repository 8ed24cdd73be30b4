// SPDX-License-Identifier: LGPL-2.1-or-later
/* cgroup.c - the cgroup2 mount and the path of a cgroup id (cgroup.h). */
#include <errno.h>
#include <fcntl.h>
#include <fts.h>
#include <limits.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "cgroup.h"

#define FILEID_KERNFS 0xfe /* include/linux/exportfs.h: the handle is the 64-bit kernfs node id */

const char *cgroup2_mount(void)
{
	static char root[PATH_MAX];
	char line[8192], fstype[64];
	FILE *f;

	if (root[0])
		return root;
	if (!(f = fopen("/proc/self/mountinfo", "re")))
		return NULL;
	/* field 5 is the mount point, the fstype follows " - " */
	while (fgets(line, sizeof(line), f)) {
		char *sep = strstr(line, " - ");

		if (!sep || sscanf(sep + 3, "%63s", fstype) != 1 || strcmp(fstype, "cgroup2"))
			continue;
		if (sscanf(line, "%*s %*s %*s %*s %4095s", root) == 1)
			break;
		root[0] = '\0';
	}
	fclose(f);
	return root[0] ? root : NULL;
}

/* 0 with the path, -ENOENT (stale handle: the cgroup is gone), or -errno when handles cannot be used. */
static int path_by_handle(const char *root, uint64_t id, char *buf, size_t len)
{
	struct {
		struct file_handle fh;
		uint64_t id;
	} h = { .fh = { .handle_bytes = sizeof(uint64_t), .handle_type = FILEID_KERNFS } };
	char link[64];
	ssize_t n;
	int mount_fd, fd;

	if ((mount_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return -errno;
	memcpy(h.fh.f_handle, &id, sizeof(id));
	fd = open_by_handle_at(mount_fd, &h.fh, O_PATH | O_CLOEXEC);
	close(mount_fd);
	if (fd < 0)
		return errno == ESTALE ? -ENOENT : -errno;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, buf, len);
	close(fd);
	if (n < 0)
		return -errno;
	if ((size_t)n >= len)
		return -ENAMETOOLONG;
	buf[n] = '\0';
	/* a cgroup outside what this mount shows (another cgroup namespace) has no path here */
	n = (ssize_t)strlen(root);
	if (strncmp(buf, root, (size_t)n) || (buf[n] != '/' && buf[n] != '\0'))
		return -ENOENT;
	return 0;
}

/*
 * Unprivileged: a cgroup2 directory's inode number is its cgroup id, so the
 * mount is walked for it (fts: the walk's state is this call's own).
 */
static int path_by_walk(const char *root, uint64_t id, char *buf, size_t len)
{
	char *const paths[] = { (char *)root, NULL };
	FTS *fts = fts_open(paths, FTS_PHYSICAL | FTS_XDEV | FTS_NOCHDIR, NULL);
	FTSENT *e;
	int err = -ENOENT;

	if (!fts)
		return -errno;
	while ((e = fts_read(fts))) {
		if (e->fts_info != FTS_D || (uint64_t)e->fts_statp->st_ino != id)
			continue;
		err = (size_t)snprintf(buf, len, "%s", e->fts_path) >= len ? -ENAMETOOLONG : 0;
		break;
	}
	fts_close(fts);
	return err;
}

int cgroup2_path(uint64_t id, char *buf, size_t len)
{
	const char *root = cgroup2_mount();
	int err;

	if (!root)
		return -ENODEV;
	if (!id)
		return -ENOENT;
	err = path_by_handle(root, id, buf, len);
	if (err != -EPERM && err != -EOPNOTSUPP && err != -EINVAL && err != -ENOSYS && err != -EACCES)
		return err;
	return path_by_walk(root, id, buf, len);
}

int cgroup2_dir_id(const char *path, uint64_t *id, char *why, size_t len)
{
	const char *root;
	char real[PATH_MAX];
	struct statfs sfs;
	struct stat sb;
	size_t n;
	int err;

	if (!realpath(path, real) || stat(real, &sb) || statfs(real, &sfs)) {
		err = errno;
		snprintf(why, len, "%s", strerror(err));
		return -err;
	}
	if (sfs.f_type == CGROUP2_SUPER_MAGIC && S_ISDIR(sb.st_mode)) {
		*id = sb.st_ino; /* on cgroup2 the inode number is the cgroup id */
		return 0;
	}
	/* "/etc/../../../" is "/": the cause is where it leads (EMEDIUMTYPE would say "wrong medium type") */
	root = cgroup2_mount();
	n = root ? strlen(root) : 0;
	if (!S_ISDIR(sb.st_mode))
		snprintf(why, len, "not a cgroup2 directory: %s is a file", real);
	else if (!root)
		snprintf(why, len, "not a cgroup2 directory: %s (and no cgroup2 is mounted)", real);
	else if (strncmp(real, root, n) || (real[n] != '/' && real[n] != '\0'))
		snprintf(why, len, "not a cgroup2 directory: it is %s, outside the cgroup2 mount %s", real, root);
	else
		snprintf(why, len, "not a cgroup2 directory: %s is on another file system", real);
	return -EINVAL;
}

int cgroup2_self(char *buf, size_t len)
{
	const char *root = cgroup2_mount();
	char line[PATH_MAX + 8];
	int err = -ENOENT;
	FILE *f;

	if (!root)
		return -ENODEV;
	if (!(f = fopen("/proc/self/cgroup", "re")))
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "0::", 3))
			continue;
		line[strcspn(line, "\n")] = '\0';
		/* "0::/" is the root itself */
		if ((size_t)snprintf(buf, len, "%s%s", root, strcmp(line + 3, "/") ? line + 3 : "") >= len)
			err = -ENAMETOOLONG;
		else
			err = 0;
		break;
	}
	fclose(f);
	return err;
}

int cgroup2_enter(const char *path)
{
	char procs[PATH_MAX];
	int fd, err = 0;

	if ((size_t)snprintf(procs, sizeof(procs), "%s/cgroup.procs", path) >= sizeof(procs))
		return -ENAMETOOLONG;
	fd = open(procs, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* "0" is the writing process itself */
	if (write(fd, "0", 1) != 1)
		err = -errno;
	close(fd);
	return err;
}

void cgroup2_remove(const char *path)
{
	char *const paths[] = { (char *)path, NULL };
	FTS *fts = fts_open(paths, FTS_PHYSICAL | FTS_XDEV | FTS_NOCHDIR, NULL);
	FTSENT *e;

	/* Depth first (FTS_DP, a directory after its contents): a cgroup goes only when its children went first. */
	while (fts && (e = fts_read(fts)))
		if (e->fts_info == FTS_DP)
			rmdir(e->fts_accpath);
	if (fts)
		fts_close(fts);
}
