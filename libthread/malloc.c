/* malloc.c: the allocator family, counted.  The 2D policy (sched/policy.c)
 * holds back threads about to allocate while the program's bytes near
 * their budget (CAPRICE_MEM_LIMIT), and the blocking graph shows how many
 * bytes each run between two blocking points takes; glibc's allocator
 * keeps no count of bytes held per thread, so these definitions count
 * them (the usable size of each block taken and given back) and leave the
 * allocation itself to glibc (its __libc_ entry points).
 *
 * Every member of the family is here, not only malloc and free: a block
 * from memalign or reallocarray that this file did not count would be
 * subtracted when freed, and the count would drift.  With
 * CAPRICE_SCHED=fifo, the default, a call pays one load and branch.  A
 * program with an allocator of its own (a malloc in the executable, or one
 * preloaded before the shim) keeps it, and its bytes are not counted;
 * under a sanitizer, the sanitizer's allocator is the one called.
 * libthread-linked.so leaves the family to glibc: from split-stack code
 * each call into glibc would run on a big chunk (README, linked stacks). */
#include "lt.h"

#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>

extern void *__libc_malloc(size_t size);
extern void __libc_free(void *p);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void *__libc_memalign(size_t align, size_t size);
extern void *__libc_valloc(size_t size);
extern void *__libc_pvalloc(size_t size);

static inline bool counting(void)
{
	return cp_unlikely(__atomic_load_n(&cp_mem_counting, __ATOMIC_RELAXED));
}

static CP_NOINLINE void *taken(void *p)
{
	if (p)
		cp_mem_changed((int64_t)malloc_usable_size(p));
	return p;
}

CP_EXPORT void *malloc(size_t size)
{
	if (!counting())
		return __libc_malloc(size);
	return taken(__libc_malloc(size));
}

CP_EXPORT void free(void *p)
{
	if (!counting()) {
		__libc_free(p); /* a jump: the whole cost under fifo is a load and a branch */
		return;
	}
	if (p)
		cp_mem_changed(-(int64_t)malloc_usable_size(p));
	__libc_free(p);
}

CP_EXPORT void *calloc(size_t n, size_t size)
{
	if (!counting())
		return __libc_calloc(n, size);
	return taken(__libc_calloc(n, size));
}

CP_EXPORT void *realloc(void *p, size_t size)
{
	if (!counting())
		return __libc_realloc(p, size);
	size_t was = p ? malloc_usable_size(p) : 0;
	void *q = __libc_realloc(p, size);
	/* realloc(p, 0) frees p and answers NULL; a failed one keeps p */
	if (q)
		cp_mem_changed((int64_t)malloc_usable_size(q) - (int64_t)was);
	else if (p && size == 0)
		cp_mem_changed(-(int64_t)was);
	return q;
}

CP_EXPORT void *reallocarray(void *p, size_t n, size_t size)
{
	size_t bytes;
	if (__builtin_mul_overflow(n, size, &bytes)) {
		errno = ENOMEM;
		return NULL;
	}
	return realloc(p, bytes);
}

CP_EXPORT void *memalign(size_t align, size_t size)
{
	if (!counting())
		return __libc_memalign(align, size);
	return taken(__libc_memalign(align, size));
}

CP_EXPORT void *aligned_alloc(size_t align, size_t size)
{
	/* as glibc 2.36's: memalign's, which rounds an alignment that is not
	 * a power of two up to one */
	return memalign(align, size);
}

CP_EXPORT int posix_memalign(void **out, size_t align, size_t size)
{
	if (align % sizeof(void *) != 0 || (align & (align - 1)) != 0 || align == 0)
		return EINVAL;
	int saved = errno; /* posix_memalign answers its error; errno stays */
	void *p = memalign(align, size);
	errno = saved;
	if (!p)
		return ENOMEM;
	*out = p;
	return 0;
}

CP_EXPORT void *valloc(size_t size)
{
	if (!counting())
		return __libc_valloc(size);
	return taken(__libc_valloc(size));
}

CP_EXPORT void *pvalloc(size_t size)
{
	if (!counting())
		return __libc_pvalloc(size);
	return taken(__libc_pvalloc(size));
}
