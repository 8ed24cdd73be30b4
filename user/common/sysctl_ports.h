/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * sysctl_ports.h - net.ipv4.ip_local_reserved_ports as a set of 65,536 ports.
 *
 * The sysctl is shared with the administrator and other tools, so portres
 * merges into it and never overwrites it. sysctl_ports_sync() is the one
 * mechanism every operation uses: given the ports portres wants reserved in a
 * network namespace (the union of its reservations there) and the set of ports
 * portres itself added earlier ("owned"), it
 *
 *   adds    wanted - current          and records them in owned,
 *   removes owned - wanted            and forgets them,
 *
 * so an entry that was present before portres touched it survives create,
 * delete and teardown (teardown is sync with wanted = {}).
 *
 * The text format is the kernel's: "1,2-5,8000-8009", empty for no ports.
 */
#ifndef PORTRES_SYSCTL_PORTS_H
#define PORTRES_SYSCTL_PORTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SYSCTL_RESERVED_PORTS "/proc/sys/net/ipv4/ip_local_reserved_ports"
#define SYSCTL_PORT_RANGE     "/proc/sys/net/ipv4/ip_local_port_range"

struct portset {
	uint64_t w[65536 / 64];
};

void portset_clear(struct portset *s);
void portset_add(struct portset *s, uint32_t start, uint32_t count);
void portset_del(struct portset *s, uint32_t start, uint32_t count);
static inline bool portset_test(const struct portset *s, uint16_t port)
{
	return s->w[port / 64] >> (port % 64) & 1;
}
/* True if any port of [start, start+count) is in s. */
bool portset_any(const struct portset *s, uint32_t start, uint32_t count);
/* The first run [*lo, *hi] of ports in s at or after from; false when there is none. */
bool portset_next_run(const struct portset *s, uint32_t from, uint32_t *lo, uint32_t *hi);
bool portset_empty(const struct portset *s);
size_t portset_count(const struct portset *s);
void portset_or(struct portset *dst, const struct portset *src);

/* Parses "1,2-5" (whitespace and a trailing newline allowed); -EINVAL on bad text. */
int portset_parse(const char *text, struct portset *out);
/*
 * Formats as "1,2-5"; "" for the empty set: malloc'd, sized for the text and
 * its NUL whatever the set (portset_write puts its newline in the NUL's
 * place), NULL on ENOMEM. portset_format_len is the text's length.
 */
char *portset_format(const struct portset *s);
size_t portset_format_len(const struct portset *s);

/* Reads/writes a file in the sysctl's format; 0 or -errno. */
int portset_read(const char *path, struct portset *out);
int portset_write(const char *path, const struct portset *s);

/*
 * Merges wanted into the sysctl at path as described above, updating owned.
 * Writes only when something changes; *changed tells whether owned changed.
 * Returns 0 or -errno (owned unchanged then).
 */
int sysctl_ports_sync(const char *path, const struct portset *wanted, struct portset *owned,
		      bool *changed);

/* Reads ip_local_port_range ("lo hi"); 0 or -errno. */
int sysctl_port_range(const char *path, uint16_t *lo, uint16_t *hi);
/*
 * Reads a one-number sysctl (ip_unprivileged_port_start, bindv6only,
 * wmem_default): 0, or -errno (-EINVAL: not a number). open, read, close:
 * no stdio, which adds an fstat and a buffer per file read once per batch.
 */
int sysctl_read_ulong(const char *path, unsigned long *v);

#endif /* PORTRES_SYSCTL_PORTS_H */
