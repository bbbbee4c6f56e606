/* stdio.c: stdio reads that would block, on a helper kernel thread.
 *
 * fgets(stdin) and friends read through the C library's internal read,
 * which the shim cannot see: on a worker, a read of an empty pipe or a
 * terminal would stop every user thread queued there.  A read the FILE's
 * buffer can satisfy, or one from a file that seeks (the page cache answers
 * at once), runs in place; anything else runs whole on a helper kernel
 * thread (libthread/offload.c) while only the caller waits.  The helper
 * then holds the FILE's lock, which belongs to a kernel thread: another
 * user thread using the same FILE meanwhile waits for it in the kernel,
 * as it would on NPTL.
 *
 * fopen and fclose make and close descriptors inside the C library too,
 * so libthread's per-descriptor caches hear about them here. */
#undef _FILE_OFFSET_BITS /* fopen and fopen64 both */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fdtable.h"
#include "lt.h"
#include "offload.h"
#include "real.h"

/* Whether reading `want` bytes (or, with delim >= 0, up to delim) from f
 * could wait in the kernel. */
static bool may_block(FILE *f, size_t want, int delim)
{
	if (!lt_self())
		return false; /* not a user thread: nothing else to stop */
	ssize_t avail = f->_IO_read_end - f->_IO_read_ptr;
	if (avail > 0) {
		if (delim >= 0 ? memchr(f->_IO_read_ptr, delim, (size_t)avail) != NULL
		               : (size_t)avail >= want)
			return false;
	}
	int fd = f->_fileno;
	if (fd < 0)
		return false; /* a memory stream or a cookie: no descriptor */
	/* files and devices that seek answer at once; pipes, sockets and
	 * terminals do not (the fd table caches which is which) */
	struct lt_fd *e = lt_fd_get(fd);
	return e && !lt_fd_seekable(e, fd);
}

/* ---- line and block reads ---- */

PL_REAL(fgets, char *, (char *, int, FILE *))
PL_REAL(fgets_unlocked, char *, (char *, int, FILE *))
PL_REAL(__fgets_chk, char *, (char *, size_t, int, FILE *))
PL_REAL(__fgets_unlocked_chk, char *, (char *, size_t, int, FILE *))

struct gets_args {
	char *s;
	size_t size;
	int n;
	FILE *f;
	int variant;
};

static long run_gets(void *p)
{
	struct gets_args *a = p;
	switch (a->variant) {
	case 0:
		return (long)PL_CALL(fgets)(a->s, a->n, a->f);
	case 1:
		return (long)PL_CALL(fgets_unlocked)(a->s, a->n, a->f);
	case 2:
		return (long)PL_CALL(__fgets_chk)(a->s, a->size, a->n, a->f);
	default:
		return (long)PL_CALL(__fgets_unlocked_chk)(a->s, a->size, a->n, a->f);
	}
}

static char *gets_call(char *s, size_t size, int n, FILE *f, int variant)
{
	struct gets_args a = { s, size, n, f, variant };
	if (!may_block(f, 0, '\n'))
		return (char *)run_gets(&a);
	return (char *)lt_offload("fgets", run_gets, &a);
}

CP_EXPORT char *fgets(char *s, int n, FILE *f)
{
	return gets_call(s, 0, n, f, 0);
}

CP_EXPORT char *fgets_unlocked(char *s, int n, FILE *f)
{
	return gets_call(s, 0, n, f, 1);
}

CP_EXPORT char *__fgets_chk(char *s, size_t size, int n, FILE *f)
{
	return gets_call(s, size, n, f, 2);
}

CP_EXPORT char *__fgets_unlocked_chk(char *s, size_t size, int n, FILE *f)
{
	return gets_call(s, size, n, f, 3);
}

PL_REAL(fread, size_t, (void *, size_t, size_t, FILE *))
PL_REAL(fread_unlocked, size_t, (void *, size_t, size_t, FILE *))
PL_REAL(__fread_chk, size_t, (void *, size_t, size_t, size_t, FILE *))
PL_REAL(__fread_unlocked_chk, size_t, (void *, size_t, size_t, size_t, FILE *))

struct read_args {
	void *p;
	size_t plen, size, n;
	FILE *f;
	int variant;
};

static long run_read(void *p)
{
	struct read_args *a = p;
	switch (a->variant) {
	case 0:
		return (long)PL_CALL(fread)(a->p, a->size, a->n, a->f);
	case 1:
		return (long)PL_CALL(fread_unlocked)(a->p, a->size, a->n, a->f);
	case 2:
		return (long)PL_CALL(__fread_chk)(a->p, a->plen, a->size, a->n, a->f);
	default:
		return (long)PL_CALL(__fread_unlocked_chk)(a->p, a->plen, a->size, a->n, a->f);
	}
}

static size_t read_call(void *p, size_t plen, size_t size, size_t n, FILE *f, int variant)
{
	struct read_args a = { p, plen, size, n, f, variant };
	if (!may_block(f, size * n, -1))
		return (size_t)run_read(&a);
	return (size_t)lt_offload("fread", run_read, &a);
}

CP_EXPORT size_t(fread)(void *p, size_t size, size_t n, FILE *f)
{
	return read_call(p, 0, size, n, f, 0);
}

CP_EXPORT size_t(fread_unlocked)(void *p, size_t size, size_t n, FILE *f)
{
	return read_call(p, 0, size, n, f, 1);
}

CP_EXPORT size_t __fread_chk(void *p, size_t plen, size_t size, size_t n, FILE *f)
{
	return read_call(p, plen, size, n, f, 2);
}

CP_EXPORT size_t __fread_unlocked_chk(void *p, size_t plen, size_t size, size_t n, FILE *f)
{
	return read_call(p, plen, size, n, f, 3);
}

PL_REAL(getdelim, ssize_t, (char **, size_t *, int, FILE *))

struct delim_args {
	char **line;
	size_t *cap;
	int delim;
	FILE *f;
};

static long run_delim(void *p)
{
	struct delim_args *a = p;
	return PL_CALL(getdelim)(a->line, a->cap, a->delim, a->f);
}

CP_EXPORT ssize_t(getdelim)(char **line, size_t *cap, int delim, FILE *f)
{
	struct delim_args a = { line, cap, delim, f };
	if (!may_block(f, 0, delim))
		return run_delim(&a);
	return lt_offload("getdelim", run_delim, &a);
}

CP_EXPORT ssize_t __getdelim(char **line, size_t *cap, int delim, FILE *f)
{
	return getdelim(line, cap, delim, f);
}

CP_EXPORT ssize_t(getline)(char **line, size_t *cap, FILE *f)
{
	return getdelim(line, cap, '\n', f);
}

/* ---- characters ---- */

PL_REAL(fgetc, int, (FILE *))
PL_REAL(fgetc_unlocked, int, (FILE *))
PL_REAL(__uflow, int, (FILE *))
PL_REAL(__underflow, int, (FILE *))

struct char_args {
	FILE *f;
	int variant;
};

static long run_char(void *p)
{
	struct char_args *a = p;
	switch (a->variant) {
	case 0:
		return PL_CALL(fgetc)(a->f);
	case 1:
		return PL_CALL(fgetc_unlocked)(a->f);
	case 2:
		return PL_CALL(__uflow)(a->f);
	default:
		return PL_CALL(__underflow)(a->f);
	}
}

static int char_call(FILE *f, int variant)
{
	struct char_args a = { f, variant };
	if (!may_block(f, 1, -1))
		return (int)run_char(&a);
	return (int)lt_offload("fgetc", run_char, &a);
}

CP_EXPORT int(fgetc)(FILE *f)
{
	return char_call(f, 0);
}

CP_EXPORT int(getc)(FILE *f)
{
	return char_call(f, 0);
}

CP_EXPORT int _IO_getc(FILE *f)
{
	return char_call(f, 0);
}

CP_EXPORT int(getchar)(void)
{
	return char_call(stdin, 0);
}

CP_EXPORT int(fgetc_unlocked)(FILE *f)
{
	return char_call(f, 1);
}

CP_EXPORT int(getc_unlocked)(FILE *f)
{
	return char_call(f, 1);
}

CP_EXPORT int(getchar_unlocked)(void)
{
	return char_call(stdin, 1);
}

/* what getc_unlocked and friends, expanded inline, call on an empty buffer */
CP_EXPORT int __uflow(FILE *f)
{
	return char_call(f, 2);
}

CP_EXPORT int __underflow(FILE *f)
{
	return char_call(f, 3);
}

/* ---- formatted input ---- */

PL_REAL(vfscanf, int, (FILE *, const char *, va_list))
PL_REAL(__isoc99_vfscanf, int, (FILE *, const char *, va_list))

struct scan_args {
	FILE *f;
	const char *fmt;
	va_list ap;
	bool c99;
};

static long run_scan(void *p)
{
	struct scan_args *a = p;
	return a->c99 ? PL_CALL(__isoc99_vfscanf)(a->f, a->fmt, a->ap)
	              : PL_CALL(vfscanf)(a->f, a->fmt, a->ap);
}

static int scan_call(FILE *f, const char *fmt, va_list ap, bool c99)
{
	struct scan_args a = { .f = f, .fmt = fmt, .c99 = c99 };
	va_copy(a.ap, ap);
	int r = may_block(f, 0, '\n') ? (int)lt_offload("scanf", run_scan, &a) : (int)run_scan(&a);
	va_end(a.ap);
	return r;
}

/* <stdio.h> may redirect the plain scanf names to __isoc99_*: the plain
 * ones are defined under other C names with asm labels */
CP_EXPORT int pl_vfscanf(FILE *f, const char *fmt, va_list ap) __asm__("vfscanf");
CP_EXPORT int pl_vscanf(const char *fmt, va_list ap) __asm__("vscanf");
CP_EXPORT int pl_scanf(const char *fmt, ...) __asm__("scanf");
CP_EXPORT int pl_fscanf(FILE *f, const char *fmt, ...) __asm__("fscanf");

CP_EXPORT int pl_vfscanf(FILE *f, const char *fmt, va_list ap)
{
	return scan_call(f, fmt, ap, false);
}

CP_EXPORT int __isoc99_vfscanf(FILE *f, const char *fmt, va_list ap)
{
	return scan_call(f, fmt, ap, true);
}

CP_EXPORT int pl_vscanf(const char *fmt, va_list ap)
{
	return scan_call(stdin, fmt, ap, false);
}

CP_EXPORT int __isoc99_vscanf(const char *fmt, va_list ap)
{
	return scan_call(stdin, fmt, ap, true);
}

#define SCAN_VARIADIC(name, file, c99)                                      \
	CP_EXPORT int name(const char *fmt, ...)                            \
	{                                                                   \
		va_list ap;                                                 \
		va_start(ap, fmt);                                          \
		int r = scan_call(file, fmt, ap, c99);                      \
		va_end(ap);                                                 \
		return r;                                                   \
	}
SCAN_VARIADIC(pl_scanf, stdin, false)
SCAN_VARIADIC(__isoc99_scanf, stdin, true)

#define FSCAN_VARIADIC(name, c99)                                           \
	CP_EXPORT int name(FILE *f, const char *fmt, ...)                   \
	{                                                                   \
		va_list ap;                                                 \
		va_start(ap, fmt);                                          \
		int r = scan_call(f, fmt, ap, c99);                         \
		va_end(ap);                                                 \
		return r;                                                   \
	}
FSCAN_VARIADIC(pl_fscanf, false)
FSCAN_VARIADIC(__isoc99_fscanf, true)

/* ---- descriptors made and closed inside the C library ---- */

PL_REAL(fopen, FILE *, (const char *, const char *))
PL_REAL(fopen64, FILE *, (const char *, const char *))
PL_REAL(freopen, FILE *, (const char *, const char *, FILE *))
PL_REAL(fclose, int, (FILE *))

static FILE *fresh_file(FILE *f)
{
	if (f)
		lt_fd_fresh(fileno(f));
	return f;
}

CP_EXPORT FILE *fopen(const char *path, const char *mode)
{
	return fresh_file(PL_CALL(fopen)(path, mode));
}

CP_EXPORT FILE *fopen64(const char *path, const char *mode)
{
	return fresh_file(PL_CALL(fopen64)(path, mode));
}

CP_EXPORT FILE *freopen(const char *path, const char *mode, FILE *f)
{
	return fresh_file(PL_CALL(freopen)(path, mode, f));
}

CP_EXPORT int fclose(FILE *f)
{
	int fd = fileno(f);
	int r = PL_CALL(fclose)(f);
	lt_fd_fresh(fd);
	return r;
}
