/* die.c: the runtime's voice on stderr.  Written with a raw write(2) on a
 * stack buffer because it runs where stdio may be locked or malloc broken:
 * inside signal handlers, on a blown stack's alternate stack, mid-switch. */
#include "compiler.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The variadic entry points only gather their arguments: gold cannot
 * rewrite the prologue of a variadic function that calls the C library
 * (split-stack builds), so what does call it is here, out of line. */
static CP_NOINLINE void vsay_to(int fd, const char *fmt, va_list ap)
{
	char buf[512];
	int n = snprintf(buf, sizeof buf, "caprice: ");
	int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
	if (m < 0)
		m = 0;
	size_t len = (size_t)n + (size_t)m;
	if (len > sizeof buf - 2)
		len = sizeof buf - 2;
	buf[len++] = '\n';
	/* raw syscall: the I/O layer may interpose write() */
	(void)syscall(SYS_write, fd, buf, len);
}

static void vsay(const char *fmt, va_list ap)
{
	vsay_to(2, fmt, ap);
}

static CP_NOINLINE _Noreturn void vdie(const char *fmt, va_list ap)
{
	vsay(fmt, ap);
	abort();
}

void cp_warn_to(int fd, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsay_to(fd, fmt, ap);
	va_end(ap);
}

void cp_warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
}

void cp_die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vdie(fmt, ap);
}

void cp_assert_fail(const char *cond, const char *file, int line, const char *func)
{
	cp_die("assertion failed: %s (%s:%d, %s)", cond, file, line, func);
}
