/* path.c: request-target decoding and confined opening.  Decoding is done
 * exactly once, so "%252e%252e" names a file literally called "%2e%2e";
 * dot-dot segments are refused after decoding rather than resolved; the
 * kernel then enforces confinement at open time, which also covers
 * symlinks. */
#include "path.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* closes the segment out[seg..*o): 0 or a status */
static int end_segment(char *out, size_t seg, size_t *o)
{
	size_t n = *o - seg;
	if (n == 0 || (n == 1 && out[seg] == '.')) {
		*o = seg; /* dropped */
		return 0;
	}
	if (n == 2 && out[seg] == '.' && out[seg + 1] == '.')
		return 403;
	return -1; /* kept */
}

int path_decode(const char *t, size_t n, char *out, size_t cap, size_t *out_len,
                bool *dir, size_t *path_off, size_t *path_len)
{
	size_t i = 0;
	if (n >= 7 && strncasecmp(t, "http://", 7) == 0)
		i = 7;
	else if (n >= 8 && strncasecmp(t, "https://", 8) == 0)
		i = 8;
	if (i) { /* absolute form: skip the authority */
		while (i < n && t[i] != '/' && t[i] != '?' && t[i] != '#')
			i++;
		if (i == n || t[i] != '/')
			return 400;
	}
	if (i >= n || t[i] != '/')
		return 400;
	*path_off = i;
	size_t o = 0, seg = 0;
	bool slash = true;
	for (; i < n && t[i] != '?' && t[i] != '#'; i++) {
		unsigned char c = (unsigned char)t[i];
		if (c <= ' ' || c == 0x7f)
			return 400; /* never in a parsed target; refused for other callers */
		if (c == '%') {
			int hi, lo;
			if (i + 2 >= n || (hi = hexval((unsigned char)t[i + 1])) < 0 ||
			    (lo = hexval((unsigned char)t[i + 2])) < 0)
				return 400;
			c = (unsigned char)(hi * 16 + lo);
			if (c == 0)
				return 400;
			i += 2;
		}
		if (c == '/') {
			int r = end_segment(out, seg, &o);
			if (r > 0)
				return r;
			if (r < 0) {
				if (o + 1 >= cap)
					return 414;
				out[o++] = '/';
			}
			seg = o;
			slash = true;
			continue;
		}
		if (o + 1 >= cap)
			return 414;
		out[o++] = (char)c;
		slash = false;
	}
	*path_len = i - *path_off;
	int r = end_segment(out, seg, &o);
	if (r > 0)
		return r;
	if (r == 0)
		slash = true; /* "/a/." is "/a/" */
	if (o > 0 && out[o - 1] == '/')
		o--; /* kept segment followed by a final slash */
	out[o] = '\0';
	*out_len = o;
	*dir = slash || o == 0;
	return 0;
}

static int open_walk(int rootfd, const char *rel)
{
	/* one component at a time, never following a symlink */
	int dfd = rootfd;
	const char *p = rel;
	for (;;) {
		const char *slash = strchr(p, '/');
		char comp[256];
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		if (n >= sizeof comp) {
			if (dfd != rootfd)
				close(dfd);
			return -ENAMETOOLONG;
		}
		memcpy(comp, p, n);
		comp[n] = '\0';
		int flags = O_PATH | O_CLOEXEC | O_NOFOLLOW;
		if (slash)
			flags |= O_DIRECTORY;
		int fd = openat(dfd, comp, flags);
		int err = errno;
		if (dfd != rootfd)
			close(dfd);
		if (fd < 0)
			return -err;
		if (!slash)
			return fd;
		dfd = fd;
		p = slash + 1;
	}
}

/* An O_PATH descriptor for rel beneath rootfd: it opens nothing (a FIFO
 * cannot hang us, a device is not touched) and reads no permission. */
static int open_path(int rootfd, const char *rel)
{
	static int no_openat2;
	if (*rel == '\0')
		rel = ".";
	if (!__atomic_load_n(&no_openat2, __ATOMIC_RELAXED)) {
		struct open_how how = {
			.flags = O_PATH | O_CLOEXEC,
			.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
		};
		long fd = syscall(SYS_openat2, rootfd, rel, &how, sizeof how);
		if (fd >= 0)
			return (int)fd;
		if (errno != ENOSYS)
			return -errno;
		__atomic_store_n(&no_openat2, 1, __ATOMIC_RELAXED);
	}
	if (rel[0] == '.' && rel[1] == '\0') {
		int fd = openat(rootfd, ".", O_PATH | O_CLOEXEC | O_DIRECTORY);
		return fd < 0 ? -errno : fd;
	}
	return open_walk(rootfd, rel);
}

int path_open(int rootfd, const char *rel, struct stat *st)
{
	int pfd = open_path(rootfd, rel);
	if (pfd < 0)
		return pfd;
	if (fstat(pfd, st) != 0) {
		int e = errno;
		close(pfd);
		return -e;
	}
	if (!S_ISREG(st->st_mode)) {
		close(pfd);
		return S_ISDIR(st->st_mode) ? -EISDIR : -EACCES;
	}
	/* Now open it for reading, blocking (so reads go through the I/O
	 * layer), through the descriptor already resolved: no second lookup
	 * that a rename could redirect. */
	char proc[40];
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", pfd);
	int fd = open(proc, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	int e = errno;
	if (fd < 0 && e == ENOENT) {
		/* no /proc: a non-blocking open (a FIFO swapped in now must
		 * not hang us), made blocking again */
		fd = openat(rootfd, *rel ? rel : ".", O_RDONLY | O_CLOEXEC | O_NOCTTY |
		            O_NONBLOCK | O_NOFOLLOW);
		e = errno;
		struct stat st2;
		if (fd >= 0 && (fstat(fd, &st2) != 0 || st2.st_ino != st->st_ino ||
		                st2.st_dev != st->st_dev)) {
			close(fd);
			fd = -1;
			e = EAGAIN;
		}
		if (fd >= 0)
			fcntl(fd, F_SETFL, 0);
	}
	close(pfd);
	return fd >= 0 ? fd : -e;
}

int path_errno_status(int err)
{
	switch (err) {
	case ENOENT:
	case ENOTDIR:
		return 404;
	case EACCES:
	case EPERM:
	case EXDEV:   /* RESOLVE_BENEATH refused an escape */
	case ELOOP:   /* a symlink met with O_NOFOLLOW */
		return 403;
	case ENAMETOOLONG:
		return 414;
	case EMFILE:
	case ENFILE:
	case ENOMEM:
		return 503;
	default:
		return 500;
	}
}
