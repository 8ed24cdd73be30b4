// SPDX-License-Identifier: LGPL-2.1-or-later
/* cgroup.c - the cgroup2 mount and the path of a cgroup id (cgroup.h). */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
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
	static int mount_fd = -1;
	struct {
		struct file_handle fh;
		uint64_t id;
	} h = { .fh = { .handle_bytes = sizeof(uint64_t), .handle_type = FILEID_KERNFS } };
	char link[64];
	ssize_t n;
	int fd;

	if (mount_fd < 0 && (mount_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return -errno;
	memcpy(h.fh.f_handle, &id, sizeof(id));
	if ((fd = open_by_handle_at(mount_fd, &h.fh, O_PATH | O_CLOEXEC)) < 0)
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

static uint64_t walk_id;
static char *walk_buf;
static size_t walk_len;
static int walk_err;

static int walk_cb(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	if (type != FTW_D || (uint64_t)sb->st_ino != walk_id)
		return 0;
	walk_err = (size_t)snprintf(walk_buf, walk_len, "%s", path) >= walk_len ? -ENAMETOOLONG : 0;
	return 1;
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
	/* Unprivileged: a cgroup2 directory's inode number is its cgroup id. */
	walk_id = id;
	walk_buf = buf;
	walk_len = len;
	walk_err = -ENOENT;
	nftw(root, walk_cb, 16, FTW_PHYS | FTW_MOUNT);
	return walk_err;
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

static int rmdir_cb(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	if (type == FTW_DP)
		rmdir(path);
	return 0;
}

void cgroup2_remove(const char *path)
{
	/* Depth first: a cgroup goes only when its children went first. */
	nftw(path, rmdir_cb, 16, FTW_DEPTH | FTW_PHYS);
}
