/* fdtable.c: per-fd state, so close() can cancel the operations other
 * user threads are blocked in (they get EBADF, never a hang or a
 * use-after-free) and socket timeouts can become linked timeouts.
 *
 * The table is two-level and grows by chunks on first use, so a process
 * with few fds pays for few entries and a lookup never takes a lock. */
#include "fdtable.h"
#include "rtmem.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define CHUNK_SHIFT 10
#define CHUNK_SIZE  (1u << CHUNK_SHIFT)
#define MAX_CHUNKS  1024 /* fds up to 2^20 */

static struct lt_fd *chunks[MAX_CHUNKS];

/* Out of line, as every call into the C library on a hot path is: it
 * would move the whole caller to a big chunk (sched/linked.c). */
static CP_COLD struct lt_fd *chunk_make(unsigned c)
{
	struct lt_fd *fresh = cp_rt_calloc(CHUNK_SIZE, sizeof *fresh);
	if (!fresh)
		return NULL;
	struct lt_fd *none = NULL;
	if (__atomic_compare_exchange_n(&chunks[c], &none, fresh, false, __ATOMIC_ACQ_REL,
	                                __ATOMIC_ACQUIRE))
		return fresh;
	cp_rt_free(fresh);
	return none;
}

struct lt_fd *lt_fd_get(int fd)
{
	if (fd < 0 || (unsigned)fd >= CHUNK_SIZE * MAX_CHUNKS)
		return NULL;
	unsigned c = (unsigned)fd >> CHUNK_SHIFT;
	struct lt_fd *chunk = __atomic_load_n(&chunks[c], __ATOMIC_ACQUIRE);
	if (cp_unlikely(!chunk) && !(chunk = chunk_make(c)))
		return NULL;
	return &chunk[(unsigned)fd & (CHUNK_SIZE - 1)];
}

/* In the child of fork(): the operations in flight belonged to threads
 * that do not exist there; a close() must not wait for them. */
static void after_fork_child(void)
{
	for (unsigned c = 0; c < MAX_CHUNKS; c++) {
		struct lt_fd *chunk = chunks[c];
		if (!chunk)
			continue;
		for (unsigned i = 0; i < CHUNK_SIZE; i++) {
			chunk[i].lock = (cp_spinlock)CP_SPINLOCK_INIT;
			chunk[i].closing = 0;
			chunk[i].ops = NULL;
			chunk[i].waiters = (struct cp_waitq)CP_WAITQ_INIT;
		}
	}
}

void lt_fd_init(void)
{
	cp_at_fork_child(after_fork_child);
}

static uint32_t flags_generation = 1;

bool lt_fd_nonblocking(struct lt_fd *f, int fd)
{
	uint32_t gen = __atomic_load_n(&flags_generation, __ATOMIC_ACQUIRE);
	if (cp_unlikely(__atomic_load_n(&f->flags_gen, __ATOMIC_RELAXED) != gen)) {
		long fl = syscall(SYS_fcntl, fd, F_GETFL);
		if (fl < 0)
			return false; /* let the operation report EBADF */
		f->nonblock = (fl & O_NONBLOCK) != 0;
		__atomic_store_n(&f->flags_gen, gen, __ATOMIC_RELEASE);
	}
	return f->nonblock;
}

/* Learns f's kind; LT_FD_UNKNOWN stays when fd is not open (EBADF and
 * the like: the operation itself says so). */
static CP_NOINLINE void probe(struct lt_fd *f, int fd)
{
	int e = errno;
	struct stat st;
	if (syscall(SYS_lseek, fd, 0L, SEEK_CUR) >= 0)
		f->kind = LT_FD_SEEKABLE;
	else if (errno == ESPIPE && syscall(SYS_fstat, fd, &st) == 0)
		f->kind = S_ISSOCK(st.st_mode) ? LT_FD_SOCKET : LT_FD_STREAM;
	errno = e;
}

bool lt_fd_seekable(struct lt_fd *f, int fd)
{
	if (cp_unlikely(f->kind == LT_FD_UNKNOWN)) {
		probe(f, fd);
		if (f->kind == LT_FD_UNKNOWN)
			return true; /* not open: the positional call says so */
	}
	return f->kind == LT_FD_SEEKABLE;
}

bool lt_fd_socket(struct lt_fd *f, int fd)
{
	if (cp_unlikely(f->kind == LT_FD_UNKNOWN))
		probe(f, fd);
	return f->kind == LT_FD_SOCKET;
}

void lt_fd_flags_set(int fd, long flags)
{
	struct lt_fd *f = lt_main ? lt_fd_get(fd) : NULL;
	if (!f)
		return;
	if (f->shared) {
		__atomic_add_fetch(&flags_generation, 1, __ATOMIC_ACQ_REL);
		return;
	}
	f->nonblock = (flags & O_NONBLOCK) != 0;
	__atomic_store_n(&f->flags_gen, __atomic_load_n(&flags_generation, __ATOMIC_ACQUIRE),
	                 __ATOMIC_RELEASE);
}

void lt_fd_dup_made(int fd, int newfd)
{
	if (!lt_main || newfd < 0)
		return;
	struct lt_fd *a = lt_fd_get(fd), *b = lt_fd_get(newfd);
	if (a)
		a->shared = 1;
	if (b)
		b->shared = 1;
}

int lt_fd_fresh_known(int fd, enum lt_fd_kind kind, enum lt_fd_nonblock nonblock)
{
	struct lt_fd *f = lt_main ? lt_fd_get(fd) : NULL; /* NULL for fd < 0 */
	if (f) {
		struct lt_thread *t = lt_self();
		cp_fds_changed(t ? &t->cp : NULL, 1); /* the blocking graph, admission */
		f->nonblock = nonblock == LT_NONBLOCK_YES;
		/* a new open file description, shared with no other fd yet */
		__atomic_store_n(&f->flags_gen,
		                 nonblock == LT_NONBLOCK_ASK
		                         ? 0
		                         : __atomic_load_n(&flags_generation, __ATOMIC_ACQUIRE),
		                 __ATOMIC_RELEASE);
		f->kind = (uint8_t)kind;
		f->no_cached_read = 0;
		f->shared = 0;
	} else if (fd < 0 && errno == EMFILE && lt_main) {
		cp_fds_exhausted();
	}
	return fd;
}

void lt_fd_kind_unknown(struct lt_fd *f)
{
	f->kind = LT_FD_UNKNOWN;
}

/* Cancels what is in flight on f and waits for it to drain; f->lock held
 * on entry and exit. */
static void drain(struct lt_fd *f)
{
	f->closing = 1;
	for (struct cp_io_op *op = f->ops; op; op = op->fd_next)
		cp_io_cancel(op);
	while (f->ops) {
		struct cp_waiter w;
		cp_wait(&f->waiters, &f->lock, &w, CP_NO_DEADLINE, false);
		cp_spin_lock(&f->lock);
	}
	f->rcvtimeo_ns = f->sndtimeo_ns = 0;
	__atomic_store_n(&f->flags_gen, 0, __ATOMIC_RELAXED);
	f->kind = LT_FD_UNKNOWN;
	f->no_cached_read = 0;
	f->shared = 0;
}

static void undrain(struct lt_fd *f)
{
	cp_spin_lock(&f->lock);
	f->closing = 0;
	cp_wake_all(&f->waiters);
	cp_spin_unlock(&f->lock);
}

static void drain_locked(struct lt_fd *f)
{
	cp_spin_lock(&f->lock);
	drain(f);
	cp_spin_unlock(&f->lock);
}

void lt_fd_forget(int fd)
{
	struct lt_fd *f = lt_fd_get(fd);
	if (!f)
		return;
	drain_locked(f);
	undrain(f);
}

void lt_fd_begin(struct lt_fd *f, struct cp_io_op *op)
{
	cp_spin_lock(&f->lock);
	while (f->closing) {
		/* a close is draining this number: once it is done the number
		 * is closed (EBADF from the kernel) or already reused */
		struct cp_waiter w;
		cp_wait(&f->waiters, &f->lock, &w, CP_NO_DEADLINE, false);
		cp_spin_lock(&f->lock);
	}
	op->fd_prev = NULL;
	op->fd_next = f->ops;
	if (f->ops)
		f->ops->fd_prev = op;
	f->ops = op;
	cp_spin_unlock(&f->lock);
}

void lt_fd_end(struct lt_fd *f, struct cp_io_op *op)
{
	cp_spin_lock(&f->lock);
	if (op->fd_prev)
		op->fd_prev->fd_next = op->fd_next;
	else
		f->ops = op->fd_next;
	if (op->fd_next)
		op->fd_next->fd_prev = op->fd_prev;
	if (f->closing && !f->ops)
		cp_wake_all(&f->waiters);
	cp_spin_unlock(&f->lock);
}

void lt_fd_await_close(struct lt_fd *f)
{
	if (!__atomic_load_n(&f->closing, __ATOMIC_ACQUIRE))
		return;
	cp_spin_lock(&f->lock);
	while (f->closing) {
		struct cp_waiter w;
		cp_wait(&f->waiters, &f->lock, &w, CP_NO_DEADLINE, false);
		cp_spin_lock(&f->lock);
	}
	cp_spin_unlock(&f->lock);
}

/* Each entry of [lo, hi] the table has (no chunk is made for the rest:
 * nothing can be in flight on a number never used). */
static void each_entry(unsigned lo, unsigned hi, void (*fn)(struct lt_fd *f))
{
	for (unsigned c = lo >> CHUNK_SHIFT; c < MAX_CHUNKS && c <= hi >> CHUNK_SHIFT; c++) {
		struct lt_fd *chunk = __atomic_load_n(&chunks[c], __ATOMIC_ACQUIRE);
		if (!chunk)
			continue;
		unsigned first = c == lo >> CHUNK_SHIFT ? lo & (CHUNK_SIZE - 1) : 0;
		unsigned last = c == hi >> CHUNK_SHIFT ? hi & (CHUNK_SIZE - 1) : CHUNK_SIZE - 1;
		for (unsigned i = first; i <= last; i++)
			fn(&chunk[i]);
	}
}

void lt_fd_drain_range(unsigned lo, unsigned hi)
{
	each_entry(lo, hi, drain_locked);
}

void lt_fd_undrain_range(unsigned lo, unsigned hi)
{
	each_entry(lo, hi, undrain);
}

int lt_fd_close(int fd)
{
	if (cp_unlikely(cp_rtfd_owned(fd))) {
		errno = EBADF; /* the runtime's (sched/rtfd.c): not the program's to close */
		return -1;
	}
	struct lt_fd *f = lt_fd_get(fd);
	if (f) {
		cp_spin_lock(&f->lock);
		drain(f);
		cp_spin_unlock(&f->lock);
	}
	int r = (int)syscall(SYS_close, fd);
	int e = errno;
	if (r == 0) {
		struct lt_thread *t = lt_self();
		cp_fds_changed(t ? &t->cp : NULL, -1);
	}
	if (f)
		undrain(f);
	errno = e;
	return r;
}
