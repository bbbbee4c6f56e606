/* io_file.c: file I/O through the parking calls keeps the kernel's
 * meaning — data written is read back at the right offsets, positional
 * calls leave the file position alone, vectors split and join where they
 * should, open/openat/creat create, truncate and fail as the plain calls
 * do, statx sees the size, O_APPEND appends (also from many threads), EOF
 * is 0 — and many threads can do it at once on distinct files.
 *
 * Every case works in its own mkdtemp directory under /tmp and removes
 * it at the end. */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tcase.h"

#define MS 1000000ull

/* ------------------------------------------------------------------ */
/* helpers                                                            */

static char dir[64];

static void make_dir(void)
{
	strcpy(dir, "/tmp/caprice-io-file-XXXXXX");
	CHECK(mkdtemp(dir) != NULL);
}

/* dir/name in a buffer of the calling statement's block (not a static
 * or __thread one: __thread is per worker, shared by the user threads
 * on it, and the kernel may read the path after the caller parks). */
#define path(name) path_in((char[PATH_MAX]){ 0 }, (name))

static const char *path_in(char *buf, const char *name)
{
	snprintf(buf, PATH_MAX, "%s/%s", dir, name);
	return buf;
}

/* Removes what is in directory dfd, recursively, then closes dfd. */
static void empty_dir(int dfd)
{
	DIR *d = fdopendir(dfd);
	CHECK(d != NULL);
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (unlinkat(dirfd(d), e->d_name, 0) != 0) {
			CHECK(errno == EISDIR || errno == EPERM);
			int sub = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
			CHECK(sub >= 0);
			empty_dir(sub);
			CHECK(unlinkat(dirfd(d), e->d_name, AT_REMOVEDIR) == 0);
		}
	}
	closedir(d);
}

/* Removes the case's directory and all in it. */
static void remove_dir(void)
{
	int d = open(dir, O_RDONLY | O_DIRECTORY);
	CHECK(d >= 0);
	empty_dir(d);
	CHECK(rmdir(dir) == 0);
}

/* Reads until n bytes or EOF; returns the count. */
static size_t read_full(int fd, void *buf, size_t n)
{
	char *p = buf;
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, p + got, n - got);
		if (r < 0)
			TFAIL("read on fd %d: %s", fd, strerror(errno));
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return got;
}

static off_t pos(int fd)
{
	return lseek(fd, 0, SEEK_CUR);
}

static off_t size_of(int fd)
{
	struct stat st;
	CHECK(fstat(fd, &st) == 0);
	return st.st_size;
}

static void fill(uint8_t *buf, size_t n, uint64_t seed, uint64_t off)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = tc_pattern(seed, off + i);
}

/* The first offset in buf that differs from the pattern, or -1. */
static long check_pattern(const uint8_t *buf, size_t n, uint64_t seed, uint64_t off)
{
	for (size_t i = 0; i < n; i++)
		if (buf[i] != tc_pattern(seed, off + i))
			return (long)i;
	return -1;
}

/* ------------------------------------------------------------------ */
/* read, write, positions                                             */

TCASE(write_read_back_with_positions)
{
	tc_case_limit(20);
	make_dir();
	int fd = open(path("f"), O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0600);
	CHECK(fd >= 0);
	CHECK_EQ(write(fd, "Hello", 5), 5);
	CHECK_EQ(write(fd, ", ", 2), 2);
	CHECK_EQ(write(fd, "world!", 6), 6);
	CHECK_EQ(pos(fd), 13);
	CHECK_EQ(size_of(fd), 13);

	char buf[64];
	memset(buf, 0, sizeof buf);
	CHECK_EQ(lseek(fd, 0, SEEK_SET), 0);
	CHECK_EQ(read(fd, buf, sizeof buf), 13);
	CHECK(memcmp(buf, "Hello, world!", 13) == 0);
	CHECK_EQ(read(fd, buf, sizeof buf), 0); /* at EOF */
	CHECK_EQ(read(fd, buf, sizeof buf), 0);

	/* short reads follow the position */
	CHECK_EQ(lseek(fd, 7, SEEK_SET), 7);
	CHECK_EQ(read(fd, buf, 3), 3);
	CHECK(memcmp(buf, "wor", 3) == 0);
	CHECK_EQ(pos(fd), 10);

	/* pread and pwrite use their offset and leave the position */
	CHECK_EQ(pread(fd, buf, 5, 7), 5);
	CHECK(memcmp(buf, "world", 5) == 0);
	CHECK_EQ(pwrite(fd, "W", 1, 7), 1);
	CHECK_EQ(pos(fd), 10);
	CHECK_EQ(pread(fd, buf, sizeof buf, 0), 13); /* across EOF: what there is */
	CHECK(memcmp(buf, "Hello, World!", 13) == 0);
	CHECK_EQ(pread(fd, buf, 10, 13), 0);
	CHECK_EQ(pread(fd, buf, 10, 1000), 0);

	/* a pwrite past EOF leaves a hole that reads as zeros */
	CHECK_EQ(pwrite(fd, "tail", 4, 4096), 4);
	CHECK_EQ(size_of(fd), 4100);
	static char big[8192];
	memset(big, 'x', sizeof big);
	CHECK_EQ(pread(fd, big, sizeof big, 0), 4100);
	CHECK(memcmp(big, "Hello, World!", 13) == 0);
	for (int i = 13; i < 4096; i++)
		CHECK_EQ(big[i], 0);
	CHECK(memcmp(big + 4096, "tail", 4) == 0);
	CHECK_EQ(pos(fd), 10);

	/* the write position, and the read position after it */
	CHECK_EQ(write(fd, "!", 1), 1);
	CHECK_EQ(pread(fd, buf, 3, 9), 3);
	CHECK(memcmp(buf, "r!d", 3) == 0);

	/* a negative offset is refused */
	errno = 0;
	CHECK_EQ(pread(fd, buf, 1, -1), -1);
	CHECK_EQ(errno, EINVAL);
	errno = 0;
	CHECK_EQ(pwrite(fd, buf, 1, -5), -1);
	CHECK_EQ(errno, EINVAL);

	/* zero-length calls */
	CHECK_EQ(write(fd, buf, 0), 0);
	CHECK_EQ(read(fd, buf, 0), 0);
	CHECK_EQ(close(fd), 0);

	/* a fresh descriptor sees it all, from offset 0 */
	fd = open(path("f"), O_RDONLY);
	CHECK(fd >= 0);
	CHECK_EQ(read_full(fd, big, sizeof big), 4100);
	CHECK(memcmp(big, "Hello, Wor!d!", 13) == 0);
	CHECK_EQ(close(fd), 0);
	remove_dir();
}

TCASE(vectored_io_splits_and_joins)
{
	tc_case_limit(20);
	make_dir();
	int fd = open(path("v"), O_CREAT | O_RDWR | O_TRUNC, 0600);
	CHECK(fd >= 0);

	char a[] = "abc", b[] = "", c[] = "defghij";
	struct iovec w[3] = { { a, 3 }, { b, 0 }, { c, 7 } };
	CHECK_EQ(writev(fd, w, 3), 10);
	CHECK_EQ(pos(fd), 10);

	char r1[1], r2[5], r3[1], r4[100];
	memset(r4, 0, sizeof r4);
	struct iovec r[4] = { { r1, 1 }, { r2, 5 }, { r3, 0 }, { r4, sizeof r4 } };
	CHECK_EQ(lseek(fd, 0, SEEK_SET), 0);
	CHECK_EQ(readv(fd, r, 4), 10);
	CHECK_EQ(r1[0], 'a');
	CHECK(memcmp(r2, "bcdef", 5) == 0);
	CHECK(memcmp(r4, "ghij", 4) == 0);
	CHECK_EQ(pos(fd), 10);
	CHECK_EQ(readv(fd, r, 4), 0); /* at EOF */

	/* positional vectors: at their offset, position untouched */
	char x[] = "XY", y[] = "Z";
	struct iovec pw[2] = { { x, 2 }, { y, 1 } };
	CHECK_EQ(pwritev(fd, pw, 2, 4), 3);
	CHECK_EQ(pos(fd), 10);
	char p1[2], p2[4];
	struct iovec pr[2] = { { p1, 2 }, { p2, 4 } };
	CHECK_EQ(preadv(fd, pr, 2, 3), 6);
	CHECK(memcmp(p1, "dX", 2) == 0);
	CHECK(memcmp(p2, "YZhi", 4) == 0);
	CHECK_EQ(pos(fd), 10);
	CHECK_EQ(preadv(fd, pr, 2, 8), 2); /* across EOF */
	CHECK(memcmp(p1, "ij", 2) == 0);
	CHECK_EQ(preadv(fd, pr, 2, 10), 0);

	/* past EOF with a hole */
	CHECK_EQ(pwritev(fd, pw, 2, 20), 3);
	CHECK_EQ(size_of(fd), 23);
	char all[32];
	CHECK_EQ(pread(fd, all, sizeof all, 0), 23);
	CHECK(memcmp(all, "abcdXYZhij", 10) == 0);
	for (int i = 10; i < 20; i++)
		CHECK_EQ(all[i], 0);
	CHECK(memcmp(all + 20, "XYZ", 3) == 0);

	/* bad vectors */
	volatile int negative = -1; /* hidden from the compiler's checks */
	errno = 0;
	CHECK_EQ(readv(fd, r, negative), -1);
	CHECK_EQ(errno, EINVAL);
	errno = 0;
	CHECK_EQ(preadv(fd, pr, 2, -1), -1);
	CHECK_EQ(errno, EINVAL);
	errno = 0;
	CHECK_EQ(pwritev(fd, pw, 2, -1), -1);
	CHECK_EQ(errno, EINVAL);

	/* many small pieces in one call */
	enum { PIECES = 64 };
	struct iovec many[PIECES];
	char bytes[PIECES];
	for (int i = 0; i < PIECES; i++) {
		bytes[i] = (char)('0' + i % 10);
		many[i] = (struct iovec){ &bytes[i], 1 };
	}
	CHECK_EQ(lseek(fd, 0, SEEK_SET), 0);
	CHECK(ftruncate(fd, 0) == 0);
	CHECK_EQ(writev(fd, many, PIECES), PIECES);
	char back[PIECES];
	CHECK_EQ(pread(fd, back, PIECES, 0), PIECES);
	CHECK(memcmp(back, bytes, PIECES) == 0);
	CHECK_EQ(close(fd), 0);
	remove_dir();
}

TCASE(fsync_and_fdatasync)
{
	tc_case_limit(20);
	make_dir();
	int fd = open(path("s"), O_CREAT | O_RDWR | O_TRUNC, 0600);
	CHECK(fd >= 0);
	static char buf[256 << 10];
	fill((uint8_t *)buf, sizeof buf, 5, 0);
	tc_write_all(fd, buf, sizeof buf);
	CHECK_EQ(fsync(fd), 0);
	CHECK_EQ(pwrite(fd, "x", 1, 10), 1);
	CHECK_EQ(fdatasync(fd), 0);
	CHECK_EQ(fsync(fd), 0); /* nothing dirty: still 0 */
	CHECK_EQ(close(fd), 0);

	fd = open(path("s"), O_RDONLY);
	CHECK(fd >= 0);
	CHECK_EQ(fsync(fd), 0); /* a read-only descriptor may be synced */
	CHECK_EQ(fdatasync(fd), 0);
	static char back[sizeof buf];
	CHECK_EQ(read_full(fd, back, sizeof back), sizeof back);
	buf[10] = 'x';
	CHECK(memcmp(buf, back, sizeof buf) == 0);
	CHECK_EQ(close(fd), 0);

	/* a directory can be synced too (what renames need) */
	int d = open(dir, O_RDONLY | O_DIRECTORY);
	CHECK(d >= 0);
	CHECK_EQ(fsync(d), 0);
	CHECK_EQ(close(d), 0);

	errno = 0;
	CHECK_EQ(fsync(fd), -1); /* closed */
	CHECK_EQ(errno, EBADF);
	errno = 0;
	CHECK_EQ(fdatasync(-1), -1);
	CHECK_EQ(errno, EBADF);
	int p[2];
	CHECK(pipe(p) == 0);
	errno = 0;
	CHECK_EQ(fsync(p[1]), -1);
	CHECK_EQ(errno, EINVAL);
	CHECK_EQ(close(p[0]), 0);
	CHECK_EQ(close(p[1]), 0);
	remove_dir();
}

/* ------------------------------------------------------------------ */
/* open, openat, creat                                                */

static void expect_open_fails(const char *p, int flags, int want)
{
	errno = 0;
	int fd = open(p, flags, 0600);
	if (fd >= 0 || errno != want)
		TFAIL("open(%s, %#x) = %d (%s), wanted -1 (%s)", p, flags, fd,
		      fd >= 0 ? "success" : strerror(errno), strerror(want));
}

TCASE(open_errors_and_modes)
{
	tc_case_limit(20);
	make_dir();
	expect_open_fails(path("missing"), O_RDONLY, ENOENT);
	expect_open_fails(path("missing/deeper"), O_RDONLY, ENOENT);
	expect_open_fails(path("nodir/new"), O_CREAT | O_WRONLY, ENOENT);

	int fd = open(path("exists"), O_CREAT | O_EXCL | O_WRONLY, 0640);
	CHECK(fd >= 0);
	CHECK_EQ(close(fd), 0);
	expect_open_fails(path("exists"), O_CREAT | O_EXCL | O_WRONLY, EEXIST);
	expect_open_fails(path("exists/child"), O_RDONLY, ENOTDIR);
	expect_open_fails(path("exists"), O_RDONLY | O_DIRECTORY, ENOTDIR);
	expect_open_fails(dir, O_WRONLY, EISDIR);
	expect_open_fails(dir, O_RDWR, EISDIR);

	/* the mode passes through (0640 survives any common umask) */
	struct stat st;
	CHECK(stat(path("exists"), &st) == 0);
	CHECK_EQ(st.st_mode & 0777, 0640);
	CHECK(S_ISREG(st.st_mode));

	/* O_CREAT on an existing file opens it as it is */
	fd = open(path("exists"), O_WRONLY);
	CHECK(fd >= 0);
	CHECK_EQ(write(fd, "data", 4), 4);
	CHECK_EQ(close(fd), 0);
	fd = open(path("exists"), O_CREAT | O_RDONLY, 0600);
	CHECK(fd >= 0);
	char buf[8];
	CHECK_EQ(read(fd, buf, sizeof buf), 4);
	CHECK(memcmp(buf, "data", 4) == 0);
	CHECK_EQ(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
	CHECK_EQ(close(fd), 0);

	/* O_TRUNC empties, O_CLOEXEC sets the descriptor flag */
	fd = open(path("exists"), O_RDWR | O_TRUNC | O_CLOEXEC);
	CHECK(fd >= 0);
	CHECK_EQ(size_of(fd), 0);
	CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	CHECK_EQ(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDWR);
	CHECK_EQ(close(fd), 0);

	/* an unnamed temporary file takes its mode from the third argument */
	fd = open(dir, O_TMPFILE | O_RDWR, 0600);
	CHECK(fd >= 0);
	CHECK_EQ(write(fd, "tmp", 3), 3);
	CHECK_EQ(pread(fd, buf, 3, 0), 3);
	CHECK(memcmp(buf, "tmp", 3) == 0);
	CHECK(fstat(fd, &st) == 0);
	CHECK_EQ(st.st_mode & 0777, 0600);
	CHECK_EQ(close(fd), 0);
	remove_dir();
}

TCASE(openat_relative_to_directory_fd)
{
	tc_case_limit(20);
	make_dir();
	CHECK(mkdir(path("sub"), 0700) == 0);
	int d = open(path("sub"), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	CHECK(d >= 0);

	int fd = openat(d, "inner", O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	CHECK(fd >= 0);
	CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	CHECK_EQ(write(fd, "relative", 8), 8);
	CHECK_EQ(close(fd), 0);

	/* it is where the directory descriptor says */
	char buf[16];
	fd = open(path("sub/inner"), O_RDONLY);
	CHECK(fd >= 0);
	CHECK_EQ(read(fd, buf, sizeof buf), 8);
	CHECK(memcmp(buf, "relative", 8) == 0);
	CHECK_EQ(close(fd), 0);
	errno = 0;
	CHECK_EQ(open(path("inner"), O_RDONLY), -1);
	CHECK_EQ(errno, ENOENT);

	/* relative paths may climb out of it */
	fd = openat(d, "../sub/./inner", O_RDONLY);
	CHECK(fd >= 0);
	CHECK_EQ(read(fd, buf, sizeof buf), 8);
	CHECK_EQ(close(fd), 0);

	/* an absolute path ignores the directory descriptor, even a bad one */
	fd = openat(d, path("sub/inner"), O_RDONLY);
	CHECK(fd >= 0);
	CHECK_EQ(close(fd), 0);
	fd = openat(-1, path("sub/inner"), O_RDONLY);
	CHECK(fd >= 0);
	CHECK_EQ(close(fd), 0);

	/* AT_FDCWD resolves against the working directory */
	char cwd[PATH_MAX];
	CHECK(getcwd(cwd, sizeof cwd) != NULL);
	CHECK(chdir(dir) == 0);
	fd = openat(AT_FDCWD, "sub/inner", O_RDONLY);
	CHECK(fd >= 0);
	CHECK_EQ(close(fd), 0);
	fd = open("sub/inner", O_RDONLY);
	CHECK(fd >= 0);
	CHECK_EQ(close(fd), 0);
	CHECK(chdir(cwd) == 0);

	/* errors */
	errno = 0;
	CHECK_EQ(openat(d, "nothing", O_RDONLY), -1);
	CHECK_EQ(errno, ENOENT);
	errno = 0;
	CHECK_EQ(openat(-1, "inner", O_RDONLY), -1);
	CHECK_EQ(errno, EBADF);
	int f = openat(d, "inner", O_RDONLY);
	CHECK(f >= 0);
	errno = 0;
	CHECK_EQ(openat(f, "x", O_RDONLY), -1); /* not a directory */
	CHECK_EQ(errno, ENOTDIR);
	errno = 0;
	CHECK_EQ(openat(d, "inner", O_CREAT | O_EXCL | O_WRONLY, 0600), -1);
	CHECK_EQ(errno, EEXIST);
	CHECK_EQ(close(f), 0);
	CHECK_EQ(close(d), 0);
	remove_dir();
}

TCASE(creat_truncates_and_opens_write_only)
{
	tc_case_limit(20);
	make_dir();
	int fd = creat(path("c"), 0600);
	CHECK(fd >= 0);
	CHECK_EQ(fcntl(fd, F_GETFL) & O_ACCMODE, O_WRONLY);
	char buf[128];
	memset(buf, 'c', sizeof buf);
	CHECK_EQ(write(fd, buf, sizeof buf), (ssize_t)sizeof buf);
	errno = 0;
	CHECK_EQ(read(fd, buf, 1), -1);
	CHECK_EQ(errno, EBADF);
	CHECK_EQ(close(fd), 0);
	struct stat st;
	CHECK(stat(path("c"), &st) == 0);
	CHECK_EQ(st.st_size, 128);
	CHECK_EQ(st.st_mode & 0777, 0600);

	/* creat on an existing file truncates it and keeps its mode */
	CHECK(chmod(path("c"), 0640) == 0);
	fd = creat(path("c"), 0600);
	CHECK(fd >= 0);
	CHECK_EQ(size_of(fd), 0);
	CHECK_EQ(write(fd, "new", 3), 3);
	CHECK_EQ(close(fd), 0);
	CHECK(stat(path("c"), &st) == 0);
	CHECK_EQ(st.st_size, 3);
	CHECK_EQ(st.st_mode & 0777, 0640);

	errno = 0;
	CHECK_EQ(creat(path("none/c"), 0600), -1);
	CHECK_EQ(errno, ENOENT);
	errno = 0;
	CHECK_EQ(creat(dir, 0600), -1);
	CHECK_EQ(errno, EISDIR);
	remove_dir();
}

TCASE(statx_reports_size_and_type)
{
	tc_case_limit(20);
	make_dir();
	static const off_t sizes[] = { 0, 1, 4095, 4097, 1 << 20, (3 << 20) + 17 };
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		char name[16];
		snprintf(name, sizeof name, "s%zu", i);
		int fd = open(path(name), O_CREAT | O_WRONLY | O_TRUNC, 0600);
		CHECK(fd >= 0);
		if (sizes[i])
			CHECK_EQ(pwrite(fd, "e", 1, sizes[i] - 1), 1); /* holes and one byte */
		CHECK_EQ(close(fd), 0);
		struct statx sx;
		memset(&sx, 0xff, sizeof sx);
		CHECK_EQ(statx(AT_FDCWD, path(name), 0, STATX_SIZE | STATX_TYPE | STATX_MODE, &sx), 0);
		CHECK((sx.stx_mask & (STATX_SIZE | STATX_TYPE)) == (STATX_SIZE | STATX_TYPE));
		CHECK_EQ(sx.stx_size, sizes[i]);
		CHECK(S_ISREG(sx.stx_mode));
		CHECK_EQ(sx.stx_mode & 0777, 0600);
	}

	/* relative to a directory descriptor, and on a descriptor itself */
	int d = open(dir, O_RDONLY | O_DIRECTORY);
	CHECK(d >= 0);
	struct statx sx;
	CHECK_EQ(statx(d, "s3", 0, STATX_SIZE, &sx), 0);
	CHECK_EQ(sx.stx_size, 4097);
	int fd = openat(d, "s4", O_RDONLY);
	CHECK(fd >= 0);
	CHECK_EQ(statx(fd, "", AT_EMPTY_PATH, STATX_SIZE, &sx), 0);
	CHECK_EQ(sx.stx_size, 1 << 20);
	/* the size follows writes */
	CHECK_EQ(close(fd), 0);
	fd = openat(d, "s4", O_WRONLY | O_APPEND);
	CHECK(fd >= 0);
	CHECK_EQ(write(fd, "more", 4), 4);
	CHECK_EQ(statx(fd, "", AT_EMPTY_PATH, STATX_SIZE, &sx), 0);
	CHECK_EQ(sx.stx_size, (1 << 20) + 4);
	CHECK_EQ(close(fd), 0);

	/* a directory, a symbolic link followed or not */
	CHECK_EQ(statx(AT_FDCWD, dir, 0, STATX_TYPE, &sx), 0);
	CHECK(S_ISDIR(sx.stx_mode));
	CHECK(symlinkat("s3", d, "link") == 0);
	CHECK_EQ(statx(d, "link", AT_SYMLINK_NOFOLLOW, STATX_TYPE | STATX_SIZE, &sx), 0);
	CHECK(S_ISLNK(sx.stx_mode));
	CHECK_EQ(sx.stx_size, 2); /* the target's name */
	CHECK_EQ(statx(d, "link", 0, STATX_TYPE | STATX_SIZE, &sx), 0);
	CHECK(S_ISREG(sx.stx_mode));
	CHECK_EQ(sx.stx_size, 4097);

	errno = 0;
	CHECK_EQ(statx(d, "missing", 0, STATX_SIZE, &sx), -1);
	CHECK_EQ(errno, ENOENT);
	errno = 0;
	CHECK_EQ(statx(-1, "missing", 0, STATX_SIZE, &sx), -1);
	CHECK_EQ(errno, EBADF);
	CHECK_EQ(close(d), 0);
	remove_dir();
}

/* ------------------------------------------------------------------ */
/* O_APPEND                                                           */

struct appender {
	int id;
	int records;
};

enum { REC = 64 };

static void record(char *r, int id, int i)
{
	memset(r, 'a' + id, REC);
	snprintf(r, REC, "%02d:%05d|", id, i);
	r[strlen(r)] = 'a' + id; /* overwrite the NUL */
	r[REC - 1] = '\n';
}

static void *appender_main(void *arg)
{
	struct appender *a = arg;
	int fd = open(path("log"), O_WRONLY | O_APPEND);
	CHECK(fd >= 0);
	char r[REC];
	for (int i = 0; i < a->records; i++) {
		record(r, a->id, i);
		/* one write per record: O_APPEND makes each land whole at the end */
		CHECK_EQ(write(fd, r, REC), REC);
		if (i % 16 == 0)
			sched_yield();
	}
	CHECK_EQ(close(fd), 0);
	return NULL;
}

TCASE(o_append_appends)
{
	tc_case_limit(30);
	make_dir();
	int fd = open(path("log"), O_CREAT | O_RDWR | O_TRUNC, 0600);
	CHECK(fd >= 0);
	CHECK_EQ(write(fd, "abc", 3), 3);
	CHECK_EQ(close(fd), 0);

	fd = open(path("log"), O_WRONLY | O_APPEND);
	CHECK(fd >= 0);
	CHECK_EQ(lseek(fd, 0, SEEK_SET), 0);
	CHECK_EQ(write(fd, "def", 3), 3); /* at the end, wherever we seeked */
	CHECK_EQ(pos(fd), 6);
	struct iovec iov[2] = { { "gh", 2 }, { "i", 1 } };
	CHECK_EQ(lseek(fd, 1, SEEK_SET), 1);
	CHECK_EQ(writev(fd, iov, 2), 3);
	CHECK_EQ(close(fd), 0);
	char buf[16];
	fd = open(path("log"), O_RDONLY);
	CHECK(fd >= 0);
	CHECK_EQ(read(fd, buf, sizeof buf), 9);
	CHECK(memcmp(buf, "abcdefghi", 9) == 0);
	CHECK_EQ(close(fd), 0);

	/* appenders in many threads, each with its own descriptor */
	fd = open(path("log"), O_WRONLY | O_TRUNC);
	CHECK(fd >= 0);
	CHECK_EQ(close(fd), 0);
	enum { THREADS = 8, RECORDS = 300 };
	struct appender ap[THREADS];
	pthread_t t[THREADS];
	for (int i = 0; i < THREADS; i++) {
		ap[i] = (struct appender){ i, RECORDS };
		t[i] = tc_spawn(appender_main, &ap[i]);
	}
	for (int i = 0; i < THREADS; i++)
		tc_join(t[i]);

	size_t total = (size_t)THREADS * RECORDS * REC;
	char *all = malloc(total + 1);
	CHECK(all != NULL);
	fd = open(path("log"), O_RDONLY);
	CHECK(fd >= 0);
	CHECK_EQ(size_of(fd), total);
	CHECK_EQ(read_full(fd, all, total + 1), total);
	CHECK_EQ(close(fd), 0);
	/* every record whole, each thread's in its own order */
	int next[THREADS] = { 0 };
	for (size_t off = 0; off < total; off += REC) {
		int id = (all[off] - '0') * 10 + (all[off + 1] - '0');
		CHECK(id >= 0 && id < THREADS);
		char want[REC];
		record(want, id, next[id]);
		if (memcmp(all + off, want, REC) != 0)
			TFAIL("record at offset %zu is torn or out of order: %.*s", off, REC - 1,
			      all + off);
		next[id]++;
	}
	for (int i = 0; i < THREADS; i++)
		CHECK_EQ(next[i], RECORDS);
	free(all);
	remove_dir();
}

/* ------------------------------------------------------------------ */
/* EOF, bad descriptors, what is not a file                           */

TCASE(eof_and_bad_descriptors)
{
	tc_case_limit(20);
	make_dir();
	int fd = open(path("e"), O_CREAT | O_RDWR | O_TRUNC, 0600);
	CHECK(fd >= 0);
	char buf[16];
	CHECK_EQ(read(fd, buf, sizeof buf), 0); /* empty file */
	struct iovec iov = { buf, sizeof buf };
	CHECK_EQ(readv(fd, &iov, 1), 0);
	CHECK_EQ(pread(fd, buf, sizeof buf, 0), 0);
	CHECK_EQ(preadv(fd, &iov, 1, 0), 0);
	CHECK_EQ(write(fd, "12345", 5), 5);
	CHECK_EQ(read(fd, buf, sizeof buf), 0); /* the position is at the end */
	CHECK_EQ(lseek(fd, 2, SEEK_SET), 2);
	CHECK_EQ(read(fd, buf, sizeof buf), 3);
	CHECK_EQ(read(fd, buf, sizeof buf), 0);
	CHECK_EQ(close(fd), 0);

	/* a closed descriptor, and never-opened ones */
	errno = 0;
	CHECK_EQ(read(fd, buf, 1), -1);
	CHECK_EQ(errno, EBADF);
	errno = 0;
	CHECK_EQ(write(fd, buf, 1), -1);
	CHECK_EQ(errno, EBADF);
	errno = 0;
	CHECK_EQ(read(-1, buf, 1), -1);
	CHECK_EQ(errno, EBADF);
	errno = 0;
	CHECK_EQ(pwrite(-7, buf, 1, 0), -1);
	CHECK_EQ(errno, EBADF);
	errno = 0;
	CHECK_EQ(close(fd), -1);
	CHECK_EQ(errno, EBADF);
	errno = 0;
	CHECK_EQ(close(100000), -1);
	CHECK_EQ(errno, EBADF);

	/* the access mode is enforced */
	fd = open(path("e"), O_RDONLY);
	CHECK(fd >= 0);
	errno = 0;
	CHECK_EQ(write(fd, "x", 1), -1);
	CHECK_EQ(errno, EBADF);
	errno = 0;
	CHECK_EQ(pwrite(fd, "x", 1, 0), -1);
	CHECK_EQ(errno, EBADF);
	CHECK_EQ(close(fd), 0);
	fd = open(path("e"), O_WRONLY);
	CHECK(fd >= 0);
	errno = 0;
	CHECK_EQ(read(fd, buf, 1), -1);
	CHECK_EQ(errno, EBADF);
	errno = 0;
	CHECK_EQ(pread(fd, buf, 1, 0), -1);
	CHECK_EQ(errno, EBADF);
	CHECK_EQ(close(fd), 0);

	/* a directory is not read with read() */
	int d = open(dir, O_RDONLY | O_DIRECTORY);
	CHECK(d >= 0);
	errno = 0;
	CHECK_EQ(read(d, buf, sizeof buf), -1);
	CHECK_EQ(errno, EISDIR);
	CHECK_EQ(close(d), 0);
	remove_dir();
}

TCASE(positional_io_on_pipe_is_espipe)
{
	tc_case_limit(20);
	/* a pipe has no offsets: the positional calls must refuse rather
	 * than read or write the stream */
	int p[2];
	CHECK(pipe(p) == 0);
	CHECK_EQ(write(p[1], "abc", 3), 3);
	char buf[8], wrong[512] = "";
	struct iovec iov = { buf, 1 };
	for (int call = 0; call < 4; call++) {
		static const char *const names[] = { "pread", "preadv", "pwrite", "pwritev" };
		errno = 0;
		ssize_t r = call == 0 ? pread(p[0], buf, 1, 0)
		          : call == 1 ? preadv(p[0], &iov, 1, 0)
		          : call == 2 ? pwrite(p[1], "x", 1, 0)
		          : pwritev(p[1], &iov, 1, 0);
		if (r != -1 || errno != ESPIPE)
			snprintf(wrong + strlen(wrong), sizeof wrong - strlen(wrong),
			         "\n  %s on a pipe: %zd (%s), wanted -1 (ESPIPE)", names[call], r,
			         r < 0 ? strerror(errno) : call < 2 ? "read the stream" : "wrote the stream");
	}
	if (wrong[0])
		TFAIL("positional calls on a pipe:%s", wrong);
	/* the stream is as it was */
	CHECK_EQ(read(p[0], buf, sizeof buf), 3);
	CHECK(memcmp(buf, "abc", 3) == 0);
	CHECK_EQ(close(p[0]), 0);
	CHECK_EQ(close(p[1]), 0);
}

/* ------------------------------------------------------------------ */
/* volume                                                             */

TCASE(large_file_copy_in_1mib_chunks)
{
	tc_case_limit(60);
	make_dir();
	enum { CHUNK = 1 << 20, CHUNKS = 32 };
	const uint64_t seed = 99;
	uint8_t *buf = malloc(CHUNK), *back = malloc(CHUNK);
	CHECK(buf && back);

	uint64_t t0 = tc_now_ns();
	int src = open(path("src"), O_CREAT | O_WRONLY | O_TRUNC, 0600);
	CHECK(src >= 0);
	for (int i = 0; i < CHUNKS; i++) {
		fill(buf, CHUNK, seed, (uint64_t)i * CHUNK);
		tc_write_all(src, buf, CHUNK);
	}
	CHECK_EQ(fsync(src), 0);
	CHECK_EQ(close(src), 0);
	uint64_t t_write = tc_now_ns() - t0;

	t0 = tc_now_ns();
	src = open(path("src"), O_RDONLY);
	CHECK(src >= 0);
	int dst = open(path("dst"), O_CREAT | O_WRONLY | O_TRUNC, 0600);
	CHECK(dst >= 0);
	uint64_t copied = 0;
	for (;;) {
		ssize_t r = read(src, buf, CHUNK);
		CHECK(r >= 0);
		if (r == 0)
			break;
		tc_write_all(dst, buf, (size_t)r);
		copied += (uint64_t)r;
	}
	CHECK_EQ(copied, (uint64_t)CHUNK * CHUNKS);
	CHECK_EQ(fdatasync(dst), 0);
	CHECK_EQ(close(dst), 0);
	uint64_t t_copy = tc_now_ns() - t0;

	/* the copy equals the source, and both are the pattern */
	t0 = tc_now_ns();
	CHECK_EQ(lseek(src, 0, SEEK_SET), 0);
	dst = open(path("dst"), O_RDONLY);
	CHECK(dst >= 0);
	CHECK_EQ(size_of(dst), (off_t)CHUNK * CHUNKS);
	for (int i = 0; i < CHUNKS; i++) {
		CHECK_EQ(read_full(src, buf, CHUNK), CHUNK);
		CHECK_EQ(read_full(dst, back, CHUNK), CHUNK);
		if (memcmp(buf, back, CHUNK) != 0)
			TFAIL("chunk %d of the copy differs", i);
		long bad = check_pattern(buf, CHUNK, seed, (uint64_t)i * CHUNK);
		if (bad >= 0)
			TFAIL("byte %ld of chunk %d is wrong", bad, i);
	}
	CHECK_EQ(read(src, buf, 1), 0);
	CHECK_EQ(read(dst, buf, 1), 0);
	/* and positional reads of the copy agree at odd offsets */
	for (uint64_t off = 12345; off < (uint64_t)CHUNK * CHUNKS; off += 3333333) {
		CHECK_EQ(pread(dst, buf, 4096, (off_t)off), 4096);
		CHECK_EQ(check_pattern(buf, 4096, seed, off), -1);
	}
	CHECK_EQ(close(src), 0);
	CHECK_EQ(close(dst), 0);
	uint64_t t_check = tc_now_ns() - t0;
	free(buf);
	free(back);
	remove_dir();
	printf("32 MiB: written in %.1f ms, copied in %.1f ms, compared in %.1f ms\n",
	       t_write / 1e6, t_copy / 1e6, t_check / 1e6);
}

struct file_worker {
	int id;
	uint64_t bytes;
	int ticks_seen;        /* progress of the ticker while we worked */
};

static int ticks;

static void *file_worker_main(void *arg)
{
	struct file_worker *w = arg;
	char name[32];
	snprintf(name, sizeof name, "w%02d", w->id);
	const uint64_t seed = 1000 + (uint64_t)w->id;
	const size_t total = 512 << 10;
	uint8_t *buf = malloc(total), *back = malloc(total);
	CHECK(buf && back);
	fill(buf, total, seed, 0);
	int start_ticks = __atomic_load_n(&ticks, __ATOMIC_RELAXED);

	int fd = open(path(name), O_CREAT | O_EXCL | O_RDWR, 0600);
	CHECK(fd >= 0);
	/* uneven chunks, alternating write and pwrite */
	size_t off = 0;
	for (int i = 0; off < total; i++) {
		size_t len = (size_t)(4096 << (i % 5)) + (size_t)(i * 37 % 1000);
		if (len > total - off)
			len = total - off;
		if (i % 2 == 0) {
			CHECK_EQ(lseek(fd, (off_t)off, SEEK_SET), (off_t)off);
			tc_write_all(fd, buf + off, len);
		} else {
			CHECK_EQ(pwrite(fd, buf + off, len, (off_t)off), (ssize_t)len);
		}
		off += len;
	}
	CHECK_EQ(fsync(fd), 0);
	struct statx sx;
	CHECK_EQ(statx(AT_FDCWD, path(name), 0, STATX_SIZE, &sx), 0);
	CHECK_EQ(sx.stx_size, total);
	/* read back whole, then pieces at scattered offsets */
	CHECK_EQ(lseek(fd, 0, SEEK_SET), 0);
	memset(back, 0, total);
	CHECK_EQ(read_full(fd, back, total), total);
	if (memcmp(buf, back, total) != 0)
		TFAIL("thread %d read back different data", w->id);
	for (int i = 0; i < 64; i++) {
		size_t o = (size_t)i * 8191 % (total - 512);
		uint8_t piece[512];
		CHECK_EQ(pread(fd, piece, sizeof piece, (off_t)o), (ssize_t)sizeof piece);
		CHECK(memcmp(piece, buf + o, sizeof piece) == 0);
	}
	CHECK_EQ(close(fd), 0);
	CHECK(unlink(path(name)) == 0);
	w->bytes = total;
	w->ticks_seen = __atomic_load_n(&ticks, __ATOMIC_RELAXED) - start_ticks;
	free(buf);
	free(back);
	return NULL;
}

static int ticker_stop;

static void *ticker_main(void *arg)
{
	(void)arg;
	while (!__atomic_load_n(&ticker_stop, __ATOMIC_ACQUIRE)) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
		__atomic_add_fetch(&ticks, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

TCASE(many_threads_distinct_files)
{
	tc_case_limit(60);
	make_dir();
	enum { THREADS = 32 };
	struct file_worker w[THREADS];
	pthread_t t[THREADS];
	pthread_t tick = tc_spawn(ticker_main, NULL);
	uint64_t t0 = tc_now_ns();
	for (int i = 0; i < THREADS; i++) {
		w[i] = (struct file_worker){ .id = i };
		t[i] = tc_spawn(file_worker_main, &w[i]);
	}
	uint64_t bytes = 0;
	for (int i = 0; i < THREADS; i++) {
		tc_join(t[i]);
		bytes += w[i].bytes;
	}
	uint64_t el = tc_now_ns() - t0;
	__atomic_store_n(&ticker_stop, 1, __ATOMIC_RELEASE);
	tc_join(tick);
	CHECK_EQ(bytes, (uint64_t)THREADS * (512 << 10));
	/* the directory is empty again: every thread cleaned up */
	int d = open(dir, O_RDONLY | O_DIRECTORY);
	CHECK(d >= 0);
	struct statx sx;
	for (int i = 0; i < THREADS; i++) {
		char name[32];
		snprintf(name, sizeof name, "w%02d", i);
		errno = 0;
		CHECK_EQ(statx(d, name, 0, STATX_SIZE, &sx), -1);
		CHECK_EQ(errno, ENOENT);
	}
	CHECK_EQ(close(d), 0);
	remove_dir();
	printf("%d threads x 512 KiB written, synced, read back in %.1f ms; ticker ran %d times\n",
	       THREADS, el / 1e6, ticks);
}
