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

#endif
