/* fortify.c: the other names compilers and the C library emit for the
 * blocking calls.  -D_FORTIFY_SOURCE (on by default in distribution
 * builds) turns read() into __read_chk() and open(path, O_RDONLY) into
 * __open_2(); some code calls the exported __ aliases (__read, __connect)
 * directly.  Each checks what the C library's would, then takes the same
 * path as the plain call. */
#undef _FILE_OFFSET_BITS
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "compiler.h"
#include "lt_io.h"

/* the C library's: prints "*** buffer overflow detected ***" and aborts */
extern void __chk_fail(void) __attribute__((noreturn));
extern void __fortify_fail(const char *msg) __attribute__((noreturn));

CP_EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
	if (n > buflen)
		__chk_fail();
	return read(fd, buf, n);
}

CP_EXPORT ssize_t __pread_chk(int fd, void *buf, size_t n, off_t off, size_t buflen)
{
	if (n > buflen)
		__chk_fail();
	return pread(fd, buf, n, off);
}

CP_EXPORT ssize_t __pread64_chk(int fd, void *buf, size_t n, off64_t off, size_t buflen)
{
	if (n > buflen)
		__chk_fail();
	return pread64(fd, buf, n, off);
}

CP_EXPORT ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags)
{
	if (n > buflen)
		__chk_fail();
	return recv(fd, buf, n, flags);
}

CP_EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags,
                                 struct sockaddr *addr, socklen_t *addrlen)
{
	if (n > buflen)
		__chk_fail();
	return recvfrom(fd, buf, n, flags, addr, addrlen);
}

CP_EXPORT int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen)
{
	if (fdslen / sizeof *fds < n)
		__chk_fail();
	return poll(fds, n, timeout);
}

CP_EXPORT int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *ts,
                          const sigset_t *mask, size_t fdslen)
{
	if (fdslen / sizeof *fds < n)
		__chk_fail();
	return ppoll(fds, n, ts, mask);
}

/* __open_2 and friends: the fortified open without a mode argument */
static void check_open_flags(int flags)
{
	if ((flags & O_CREAT) || (flags & __O_TMPFILE) == __O_TMPFILE)
		__fortify_fail("invalid open call: O_CREAT or O_TMPFILE without mode");
}

CP_EXPORT int __open_2(const char *path, int flags)
{
	check_open_flags(flags);
	return open(path, flags);
}

CP_EXPORT int __open64_2(const char *path, int flags)
{
	check_open_flags(flags);
	return open64(path, flags);
}

CP_EXPORT int __openat_2(int dfd, const char *path, int flags)
{
	check_open_flags(flags);
	return openat(dfd, path, flags);
}

CP_EXPORT int __openat64_2(int dfd, const char *path, int flags)
{
	check_open_flags(flags);
	return openat64(dfd, path, flags);
}

/* the exported __ aliases (GLIBC_2.2.5 names programs can bind to) */
CP_EXPORT ssize_t __read(int fd, void *buf, size_t n)
{
	return read(fd, buf, n);
}

CP_EXPORT ssize_t __write(int fd, const void *buf, size_t n)
{
	return write(fd, buf, n);
}

CP_EXPORT ssize_t __pread64(int fd, void *buf, size_t n, off64_t off)
{
	return pread64(fd, buf, n, off);
}

CP_EXPORT ssize_t __pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
	return pwrite64(fd, buf, n, off);
}

CP_EXPORT int __open(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = lt_open_mode(flags, ap);
	va_end(ap);
	return open(path, flags, mode);
}

CP_EXPORT int __open64(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = lt_open_mode(flags, ap);
	va_end(ap);
	return open64(path, flags, mode);
}

CP_EXPORT int __close(int fd)
{
	return close(fd);
}

CP_EXPORT int __connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	return connect(fd, addr, len);
}

CP_EXPORT ssize_t __send(int fd, const void *buf, size_t n, int flags)
{
	return send(fd, buf, n, flags);
}

CP_EXPORT int __poll(struct pollfd *fds, nfds_t n, int timeout)
{
	return poll(fds, n, timeout);
}

CP_EXPORT int __select(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, struct timeval *tv)
{
	return select(nfds, rd, wr, ex, tv);
}

CP_EXPORT int __nanosleep(const struct timespec *req, struct timespec *rem)
{
	return nanosleep(req, rem);
}

CP_EXPORT int __fcntl(int fd, int cmd, ...)
{
	va_list ap;
	va_start(ap, cmd);
	void *arg = va_arg(ap, void *); /* every argument fits a word */
	va_end(ap);
	return fcntl(fd, cmd, arg);
}

CP_EXPORT int __dup2(int fd, int fd2)
{
	return dup2(fd, fd2);
}
