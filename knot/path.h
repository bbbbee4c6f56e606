/* path.h: from a request target to a file under the document root, with
 * no way out of the root (dot segments, percent-encoded dots, NUL bytes,
 * symlinks pointing outside). */
#ifndef KNOT_PATH_H
#define KNOT_PATH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

#define PATH_KEY_MAX 4200   /* a decoded path plus "/index.html" fits */

/* Decodes the path part of target (origin form, or absolute form whose
 * scheme and authority are dropped) into out: percent-decoded once,
 * empty and "." segments dropped, no leading slash ("" is the root).
 * *dir is set when the path ends with a slash (or names the root).
 * *path_len is the length of the raw path in target (before '?').
 * Returns 0, or a status: 400 (not a path, bad escape, NUL byte),
 * 403 (a ".." segment), 414 (too long for out). */
int path_decode(const char *target, size_t n, char *out, size_t cap, size_t *out_len,
                bool *dir, size_t *path_off, size_t *path_len);

/* Opens the regular file rel (as made by path_decode, "" for the root
 * itself) beneath the directory rootfd for reading, refusing any
 * resolution that leaves the root: openat2 with RESOLVE_BENEATH (symlinks
 * inside the root work) or, where the kernel lacks it, one O_NOFOLLOW
 * step per component.  Resolution yields an O_PATH descriptor, checked
 * with fstat (into *st) before anything is opened for real, so a FIFO or
 * device is never opened.  Returns the fd, -EISDIR for a directory,
 * -EACCES for anything else that is not a regular file, or -errno. */
int path_open(int rootfd, const char *rel, struct stat *st);

/* The status for a failed open's errno. */
int path_errno_status(int err);

#endif
