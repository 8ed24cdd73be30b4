// SPDX-License-Identifier: LGPL-2.1-or-later
/* netns_path.c - PATH | NAME | pid:PID to an open network namespace (netns_path.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "netns_path.h"

static int fail(char *err, size_t len, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t len, int code, const char *fmt, ...)
{
	va_list ap;

	if (err && len) {
		va_start(ap, fmt);
		vsnprintf(err, len, fmt, ap);
		va_end(ap);
	}
	return code;
}

int netns_spec_path(const char *spec, char *path, size_t len, char *err, size_t errlen)
{
	char cwd[PATH_MAX];
	char *end;
	long pid;

	if (!spec || !spec[0])
		return fail(err, errlen, -EINVAL, "empty network namespace (PATH, NAME or pid:PID)");
	if (!strncmp(spec, "pid:", 4)) {
		errno = 0;
		pid = strtol(spec + 4, &end, 10);
		if (errno || *end || end == spec + 4 || pid <= 0 || pid > INT_MAX)
			return fail(err, errlen, -EINVAL, "%s: pid:PID needs a process id", spec);
		snprintf(path, len, "/proc/%ld/ns/net", pid);
		return 0;
	}
	if (strchr(spec, '/')) {
		if (spec[0] == '/') {
			if ((size_t)snprintf(path, len, "%s", spec) >= len)
				return fail(err, errlen, -EINVAL, "%s: path too long", spec);
			return 0;
		}
		if (!getcwd(cwd, sizeof(cwd)) || (size_t)snprintf(path, len, "%s/%s", cwd, spec) >= len)
			return fail(err, errlen, -EINVAL, "%s: path too long", spec);
		return 0;
	}
	if (!strcmp(spec, ".") || !strcmp(spec, ".."))
		return fail(err, errlen, -EINVAL, "%s: not a network namespace name", spec);
	if ((size_t)snprintf(path, len, NETNS_RUN_DIR "/%s", spec) >= len)
		return fail(err, errlen, -EINVAL, "%s: name too long", spec);
	return 0;
}

int netns_spec_open(const char *spec, char *path, size_t len, char *err, size_t errlen)
{
	int fd, e;

	if ((e = netns_spec_path(spec, path, len, err, errlen)))
		return e;
	/* O_NONBLOCK: a FIFO in its place must not hang us */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		e = errno;
		if (e == ENOENT && !strchr(spec, '/') && strncmp(spec, "pid:", 4))
			return fail(err, errlen, -ENOENT, "network namespace %s: %s does not exist (ip netns add %s makes it)",
				    spec, path, spec);
		return fail(err, errlen, -e, "network namespace %s: %s: %s", spec, path, strerror(e));
	}
	if (ioctl(fd, NS_GET_NSTYPE) != CLONE_NEWNET) {
		close(fd);
		return fail(err, errlen, -EINVAL, "%s is not a network namespace (a file of /proc/PID/ns/net or %s)",
			    path, NETNS_RUN_DIR);
	}
	return fd;
}
