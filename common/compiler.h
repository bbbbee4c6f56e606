/* compiler.h: the handful of compiler idioms every layer uses, so that hot
 * paths read the same everywhere (branch hints, hidden visibility, checks
 * that vanish in release builds but stay in debug and CI builds). */
#ifndef CAPRICE_COMPILER_H
#define CAPRICE_COMPILER_H

#include <stddef.h>

#define cp_likely(x)   __builtin_expect(!!(x), 1)
#define cp_unlikely(x) __builtin_expect(!!(x), 0)
#define CP_HIDDEN      __attribute__((visibility("hidden")))
#define CP_EXPORT      __attribute__((visibility("default")))
#define CP_NOINLINE    __attribute__((noinline))
#define CP_COLD        __attribute__((cold, noinline))
/* For code that runs where a split-stack prologue must not look (a
 * signal handler on its alternate stack, a kernel thread's first frame):
 * no prologue, so it can set the limit before anything checks it. */
#define CP_NO_SPLIT    __attribute__((no_split_stack))
#define CP_CACHELINE   64
#define cp_container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))
#define cp_barrier()   __asm__ __volatile__("" ::: "memory")
#define cp_cpu_relax() __builtin_ia32_pause()

/* Loads an initial-exec __thread pointer variable through asm, so the
 * compiler cannot reuse a value (or a TLS address) computed before a
 * context switch: a user thread may resume on another kernel thread. */
#define CP_TLS_LOAD_PTR(var, out)                                        \
	__asm__ volatile("movq " #var "@gottpoff(%%rip), %0\n\t"           \
	                 "movq %%fs:(%0), %0"                              \
	                 : "=r"(out))

#if defined(__SANITIZE_ADDRESS__)
#define CP_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CP_ASAN 1
#endif
#endif

/* cp_assert: active unless NDEBUG (debug and CI builds keep it).  A failed
 * assertion names the condition and the place, then aborts. */
#ifdef NDEBUG
#define cp_assert(c) ((void)0)
#else
#define cp_assert(c) \
	(cp_likely(c) ? (void)0 : cp_assert_fail(#c, __FILE__, __LINE__, __func__))
#endif

_Noreturn void cp_assert_fail(const char *cond, const char *file, int line,
                              const char *func) CP_HIDDEN CP_COLD;

/* cp_die: print "caprice: <message>" on stderr and abort.  For states the
 * runtime cannot continue from; the message must say which call and why. */
_Noreturn void cp_die(const char *fmt, ...) CP_HIDDEN CP_COLD
	__attribute__((format(printf, 1, 2)));

/* cp_warn_to: the same on another descriptor. */
void cp_warn_to(int fd, const char *fmt, ...) CP_HIDDEN CP_COLD __attribute__((format(printf, 2, 3)));
/* cp_warn: one line on stderr, prefixed "caprice: ". */
void cp_warn(const char *fmt, ...) CP_HIDDEN CP_COLD
	__attribute__((format(printf, 1, 2)));

/* The C library's definition of name: the one after the runtime's, which
 * may stand in its place.  Ends the process, naming it, if there is none;
 * callers keep the answer. */
void *cp_c_library_symbol(const char *name) CP_HIDDEN CP_COLD;

/* errno, read and written without a call.  glibc's errno is a TLS
 * variable of libc.so, in the static TLS block, so it lies at one offset
 * from the thread pointer in every TCB (user threads' own TCBs, tls.c,
 * copy that layout).  The runtime finds that offset once and reaches
 * errno through %fs from then on: a call to __errno_location, which is
 * code without split-stack prologues, would send every runtime function
 * that touches errno to a big chunk on a linked stack (sched/linked.c).
 * Read through volatile asm, as the thread pointer changes when a user
 * thread resumes on another worker. */
#include <errno.h>
extern long cp_errno_tpoff CP_HIDDEN;
int *cp_errno_find(void) CP_HIDDEN CP_NOINLINE;
static inline int *cp_errno_location(void)
{
	long off = __atomic_load_n(&cp_errno_tpoff, __ATOMIC_RELAXED);
	if (cp_unlikely(off == 0))
		return cp_errno_find();
	char *tp;
	__asm__ volatile("movq %%fs:0, %0" : "=r"(tp));
	return (int *)(tp + off);
}
#undef errno
#define errno (*cp_errno_location())

/* syscall(2) made inline, for the same reason: the C library's is code
 * without split-stack prologues.  Six arguments whatever the call takes,
 * as the C library's syscall() reads; -1 and errno on failure. */
#include <unistd.h>
static inline long cp_syscall6(long nr, long a1, long a2, long a3, long a4, long a5, long a6)
{
	register long r10 __asm__("r10") = a4;
	register long r8 __asm__("r8") = a5;
	register long r9 __asm__("r9") = a6;
	long ret;
	__asm__ volatile("syscall"
	                 : "=a"(ret)
	                 : "a"(nr), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8), "r"(r9)
	                 : "rcx", "r11", "memory");
	if (cp_unlikely(ret < 0 && ret > -4096)) {
		errno = (int)-ret;
		return -1;
	}
	return ret;
}
#define CP_SYSCALL_PICK(nr, a1, a2, a3, a4, a5, a6, ...)                          \
	cp_syscall6((long)(nr), (long)(a1), (long)(a2), (long)(a3), (long)(a4), (long)(a5), \
	            (long)(a6))
#define syscall(...) CP_SYSCALL_PICK(__VA_ARGS__, 0, 0, 0, 0, 0, 0, 0)

#endif
