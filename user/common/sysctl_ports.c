// SPDX-License-Identifier: LGPL-2.1-or-later
/* sysctl_ports.c - ip_local_reserved_ports parsing, formatting and merging. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sysctl_ports.h"

void portset_clear(struct portset *s)
{
	memset(s, 0, sizeof(*s));
}

/* The bits of [lo, hi] within word w (both inside that word's 64 ports). */
static inline uint64_t word_mask(uint32_t lo, uint32_t hi)
{
	uint64_t m = ~0ULL << (lo % 64);

	return hi % 64 == 63 ? m : m & ((2ULL << (hi % 64)) - 1);
}

/* Runs body for each word i of [start, start+count) (clipped at 65535), mask its bits of the range. */
#define FOR_RANGE_WORDS(start, count, i, mask, body)                                              \
	do {                                                                                      \
		uint32_t lo_ = (start), hi_ = (uint32_t)(start) + (count);                        \
		if (hi_ > 65536)                                                                  \
			hi_ = 65536;                                                              \
		while (lo_ < hi_) {                                                               \
			uint32_t last_ = (lo_ | 63) < hi_ - 1 ? (lo_ | 63) : hi_ - 1;             \
			size_t i = lo_ / 64;                                                      \
			uint64_t mask = word_mask(lo_, last_);                                    \
			body;                                                                     \
			lo_ = last_ + 1;                                                          \
		}                                                                                 \
	} while (0)

void portset_add(struct portset *s, uint32_t start, uint32_t count)
{
	FOR_RANGE_WORDS(start, count, i, m, s->w[i] |= m);
}

void portset_del(struct portset *s, uint32_t start, uint32_t count)
{
	FOR_RANGE_WORDS(start, count, i, m, s->w[i] &= ~m);
}

bool portset_any(const struct portset *s, uint32_t start, uint32_t count)
{
	FOR_RANGE_WORDS(start, count, i, m, if (s->w[i] & m) return true);
	return false;
}

bool portset_next_run(const struct portset *s, uint32_t from, uint32_t *lo, uint32_t *hi)
{
	size_t i = from / 64;
	uint64_t w;

	if (from > 65535)
		return false;
	/* the first set bit at or after from */
	w = s->w[i] & (~0ULL << (from % 64));
	while (!w) {
		if (++i == 1024)
			return false;
		w = s->w[i];
	}
	*lo = (uint32_t)(i * 64 + (size_t)__builtin_ctzll(w));
	/* the first clear bit after it */
	w = ~s->w[i] & (~0ULL << (*lo % 64));
	while (!w) {
		if (++i == 1024) {
			*hi = 65535;
			return true;
		}
		w = ~s->w[i];
	}
	*hi = (uint32_t)(i * 64 + (size_t)__builtin_ctzll(w)) - 1;
	return true;
}

bool portset_empty(const struct portset *s)
{
	for (size_t i = 0; i < 1024; i++)
		if (s->w[i])
			return false;
	return true;
}

size_t portset_count(const struct portset *s)
{
	size_t n = 0;

	for (size_t i = 0; i < 1024; i++)
		n += (size_t)__builtin_popcountll(s->w[i]);
	return n;
}

void portset_or(struct portset *dst, const struct portset *src)
{
	for (size_t i = 0; i < 1024; i++)
		dst->w[i] |= src->w[i];
}

static int parse_port(const char **p, uint32_t *out)
{
	char *end;
	unsigned long v;

	if (!isdigit((unsigned char)**p))
		return -EINVAL;
	errno = 0;
	v = strtoul(*p, &end, 10);
	if (errno || v > 65535)
		return -EINVAL;
	*out = (uint32_t)v;
	*p = end;
	return 0;
}

int portset_parse(const char *text, struct portset *out)
{
	const char *p = text;

	portset_clear(out);
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '\0' || *p == '\n')
		return 0;
	for (;;) {
		uint32_t lo, hi;

		if (parse_port(&p, &lo))
			return -EINVAL;
		hi = lo;
		if (*p == '-') {
			p++;
			if (parse_port(&p, &hi) || hi < lo)
				return -EINVAL;
		}
		portset_add(out, lo, hi - lo + 1);
		if (*p == ',') {
			p++;
			continue;
		}
		while (*p == ' ' || *p == '\t' || *p == '\n')
			p++;
		return *p ? -EINVAL : 0;
	}
}

static size_t digits(uint32_t v)
{
	return v >= 10000 ? 5 : v >= 1000 ? 4 : v >= 100 ? 3 : v >= 10 ? 2 : 1;
}

size_t portset_format_len(const struct portset *s)
{
	uint32_t lo, hi, from = 0;
	size_t len = 0;

	while (portset_next_run(s, from, &lo, &hi)) {
		len += (len ? 1 : 0) + digits(lo) + (hi > lo ? 1 + digits(hi) : 0);
		if (hi == 65535)
			break;
		from = hi + 1;
	}
	return len;
}

char *portset_format(const struct portset *s)
{
	/*
	 * Sized by a first pass: the text of 2-port blocks with 1-port gaps
	 * ("1-2,4-5,...") is about 254 KB, more than any fixed guess by count
	 * of entries. One byte more than the text, which portset_write uses for
	 * its newline.
	 */
	size_t cap = portset_format_len(s) + 1, len = 0;
	uint32_t lo, hi, from = 0;
	char *buf = malloc(cap);

	if (!buf)
		return NULL;
	buf[0] = '\0';
	while (portset_next_run(s, from, &lo, &hi)) {
		int n = snprintf(buf + len, cap - len, hi == lo ? "%s%u" : "%s%u-%u", len ? "," : "", lo, hi);

		if (n < 0 || (size_t)n >= cap - len) {
			/* cannot happen: the first pass counted every byte */
			free(buf);
			errno = EOVERFLOW;
			return NULL;
		}
		len += (size_t)n;
		if (hi == 65535)
			break;
		from = hi + 1;
	}
	return buf;
}

/* The whole text of path into buf (cap bytes); -EFBIG when it fills buf (it may be longer). */
static int read_text(const char *path, char *buf, size_t cap)
{
	size_t len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC), err = 0;

	if (fd < 0)
		return -errno;
	for (;;) {
		ssize_t n = read(fd, buf + len, cap - 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			err = -errno;
			break;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len == cap - 1) {
			err = -EFBIG;
			break;
		}
	}
	close(fd);
	buf[len] = '\0';
	return err;
}

/*
 * The kernel makes the whole text in the first read (room for it allocated
 * and cleared in the kernel for each read, as big as the read asks), and a
 * read at an offset returns nothing: a text is read whole or not at all. Most
 * are short: 16 KiB first, and only a text that fills it is read again with
 * room for the longest (under 300 KB: 2-port blocks with 1-port gaps, 254 KB).
 */
int portset_read(const char *path, struct portset *out)
{
	static const size_t caps[] = { 16 * 1024, 1 << 19 };
	int err = -EFBIG;

	for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]) && err == -EFBIG; i++) {
		char *buf = malloc(caps[i]);

		if (!buf)
			return -ENOMEM;
		if (!(err = read_text(path, buf, caps[i])))
			err = portset_parse(buf, out);
		free(buf);
	}
	return err;
}

int portset_write(const char *path, const struct portset *s)
{
	char *text = portset_format(s);
	size_t len, off = 0;
	int fd, err = 0;

	if (!text)
		return -ENOMEM;
	len = strlen(text);
	/* "" would be refused, "\n" clears the set. */
	text[len++] = '\n';
	fd = open(path, O_WRONLY | O_CLOEXEC | O_TRUNC);
	if (fd < 0) {
		err = -errno;
		goto out;
	}
	/*
	 * The kernel parses at most a page of text per write() and says how much
	 * it took (never half a number); the first write (offset 0) replaces the
	 * set, later ones on the same file add to it.
	 */
	while (off < len) {
		ssize_t n = write(fd, text + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = n < 0 ? -errno : -EIO;
			break;
		}
		off += (size_t)n;
	}
	if (close(fd) && !err)
		err = -errno;
out:
	free(text);
	return err;
}

int sysctl_ports_sync(const char *path, const struct portset *wanted, struct portset *owned,
		      bool *changed)
{
	struct portset *cur = malloc(sizeof(*cur)), *next = malloc(sizeof(*next));
	bool write_needed = false, owned_changed = false;
	int err;

	if (changed)
		*changed = false;
	if (!cur || !next) {
		err = -ENOMEM;
		goto cleanup;
	}
	err = portset_read(path, cur);
	if (err)
		goto cleanup;
	*next = *cur;
	for (size_t i = 0; i < 1024; i++) {
		uint64_t add = wanted->w[i] & ~cur->w[i];
		uint64_t drop = owned->w[i] & ~wanted->w[i];

		next->w[i] = (cur->w[i] | add) & ~drop;
		if (next->w[i] != cur->w[i])
			write_needed = true;
		if (add || drop)
			owned_changed = true;
	}
	if (write_needed) {
		err = portset_write(path, next);
		if (err)
			goto cleanup;
	}
	for (size_t i = 0; i < 1024; i++) {
		uint64_t add = wanted->w[i] & ~cur->w[i];
		uint64_t drop = owned->w[i] & ~wanted->w[i];

		owned->w[i] = (owned->w[i] | add) & ~drop;
	}
	if (changed)
		*changed = owned_changed;
cleanup:
	free(cur);
	free(next);
	return err;
}

/* A short sysctl's text, NUL-terminated: open, one read, close. */
static int read_short(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), err = 0;
	ssize_t n;

	if (fd < 0)
		return -errno;
	while ((n = read(fd, buf, len - 1)) < 0 && errno == EINTR)
		;
	if (n < 0)
		err = -errno;
	else
		buf[n] = '\0';
	close(fd);
	return err;
}

int sysctl_port_range(const char *path, uint16_t *lo, uint16_t *hi)
{
	unsigned int a, b;
	char buf[64];
	int err = read_short(path, buf, sizeof(buf));

	if (err)
		return err;
	if (sscanf(buf, "%u %u", &a, &b) != 2 || a > 65535 || b > 65535 || a > b)
		return -EINVAL;
	*lo = (uint16_t)a;
	*hi = (uint16_t)b;
	return 0;
}

int sysctl_read_ulong(const char *path, unsigned long *v)
{
	char buf[32], *end;
	int err = read_short(path, buf, sizeof(buf));

	if (err)
		return err;
	errno = 0;
	*v = strtoul(buf, &end, 10);
	if (end == buf || errno || (*end && *end != '\n'))
		return -EINVAL;
	return 0;
}
