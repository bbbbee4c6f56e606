/* rtmem.h: the runtime's own memory (its workers, thread records, fd
 * table, timers, TLS blocks...) comes from glibc's allocator, through its
 * __libc_ entry points, whatever allocator the program uses.
 *
 * A program's allocator may be a library that calls back into functions
 * the runtime serves: jemalloc's start-up reads /sys through syscall(),
 * whose close() took the fd table, which allocated through the program's
 * calloc, which waited on jemalloc's start-up lock, held further up the
 * same stack (redis-server under the shim hung before its first line).
 * No block passes between the runtime and the program, so the two never
 * need to agree.  Under a sanitizer the sanitizer's allocator is used, so
 * that it checks the runtime's blocks too (and no sanitizer runs with an
 * allocator library of the program's). */
#ifndef CAPRICE_RTMEM_H
#define CAPRICE_RTMEM_H

#include <stdlib.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CP_RT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define CP_RT_SANITIZED 1
#endif
#endif

/* glibc's allocator, whichever allocator `malloc` names (libthread's
 * allocator family passes the program's calls on to them too) */
extern void *__libc_malloc(size_t size);
extern void __libc_free(void *p);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void *__libc_memalign(size_t align, size_t size);
extern void *__libc_valloc(size_t size);
extern void *__libc_pvalloc(size_t size);

#ifdef CP_RT_SANITIZED
static inline void *cp_rt_malloc(size_t size) { return malloc(size); }
static inline void *cp_rt_calloc(size_t n, size_t size) { return calloc(n, size); }
static inline void *cp_rt_realloc(void *p, size_t size) { return realloc(p, size); }
/* align: a power of two */
static inline void *cp_rt_aligned(size_t align, size_t size) { return aligned_alloc(align, size); }
static inline void cp_rt_free(void *p) { free(p); }
#else
static inline void *cp_rt_malloc(size_t size) { return __libc_malloc(size); }
static inline void *cp_rt_calloc(size_t n, size_t size) { return __libc_calloc(n, size); }
static inline void *cp_rt_realloc(void *p, size_t size) { return __libc_realloc(p, size); }
static inline void *cp_rt_aligned(size_t align, size_t size) { return __libc_memalign(align, size); }
static inline void cp_rt_free(void *p) { __libc_free(p); }
#endif

#endif
