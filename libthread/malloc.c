/* malloc.c: the allocator family, counted.  The 2D policy (sched/policy.c)
 * holds back threads about to allocate while the program's bytes near
 * their budget (CAPRICE_MEM_LIMIT), and the blocking graph shows how many
 * bytes each run between two blocking points takes; glibc's allocator
 * keeps no count of bytes held per thread, so these definitions count
 * them (the usable size of each block taken and given back) and leave the
 * allocation itself to the allocator the program would have had without
 * them.
 *
 * Every member of the family is here, not only malloc and free: a block
 * from memalign or reallocarray that this file did not count would be
 * subtracted when freed, and the count would drift.  With
 * CAPRICE_SCHED=fifo, the default, a call to glibc's allocator pays two
 * loads and a branch.  A program with an allocator of its own in the
 * executable, or preloaded before the shim, keeps it without coming here;
 * one in a library it links (Debian's redis-server links jemalloc) comes
 * after the shim in the lookup order, so these definitions find it
 * (dlsym RTLD_NEXT, at the family's first call) and pass every call on
 * to it: handing its blocks to glibc, or glibc's to its
 * malloc_usable_size, crashed redis before its first line of output.
 * Under a sanitizer, the sanitizer's allocator is the one called.
 * libthread-linked.so leaves the family to glibc: from split-stack code
 * each call into glibc would run on a big chunk (README, linked stacks). */
#include "lt.h"

#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>

#include "rtmem.h"

/* Which allocator the family passes calls on to. */
enum family { NOT_LOOKED, GLIBC, FOREIGN };
static uint32_t family_is = NOT_LOOKED;

/* The next definitions after this library's, when they are not glibc's. */
static struct {
	void *(*malloc)(size_t);
	void (*free)(void *);
	void *(*calloc)(size_t, size_t);
	void *(*realloc)(void *, size_t);
	void *(*memalign)(size_t, size_t);
	void *(*aligned_alloc)(size_t, size_t);
	int (*posix_memalign)(void **, size_t, size_t);
	void *(*valloc)(size_t);
	void *(*pvalloc)(size_t);
} foreign;

/* glibc's, and not counting: the path every call of most programs takes */
static inline bool plain(void)
{
	return cp_likely(__atomic_load_n(&family_is, __ATOMIC_RELAXED) == GLIBC &&
	                 !__atomic_load_n(&cp_mem_counting, __ATOMIC_RELAXED));
}

static inline bool counting(void)
{
	return cp_unlikely(__atomic_load_n(&cp_mem_counting, __ATOMIC_RELAXED));
}

static __thread bool looking;

/* At the family's first call (any thread: they find the same).  A call
 * the lookup itself makes goes to glibc; dlsym allocates only to report
 * an error, and these names are found. */
static CP_NOINLINE void look(void)
{
	if (__atomic_load_n(&family_is, __ATOMIC_ACQUIRE) != NOT_LOOKED || looking)
		return;
	looking = true;
	void *m = dlsym(RTLD_NEXT, "malloc");
	if (!m || m == (void *)__libc_malloc) {
		__atomic_store_n(&family_is, GLIBC, __ATOMIC_RELEASE);
	} else {
		/* a member that allocator lacks is found in glibc, as the
		 * program would find it without this library (so none is
		 * missing) */
		foreign.malloc = m;
		foreign.free = dlsym(RTLD_NEXT, "free");
		foreign.calloc = dlsym(RTLD_NEXT, "calloc");
		foreign.realloc = dlsym(RTLD_NEXT, "realloc");
		foreign.memalign = dlsym(RTLD_NEXT, "memalign");
		foreign.aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
		foreign.posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
		foreign.valloc = dlsym(RTLD_NEXT, "valloc");
		foreign.pvalloc = dlsym(RTLD_NEXT, "pvalloc");
		__atomic_store_n(&family_is, FOREIGN, __ATOMIC_RELEASE);
	}
	looking = false;
}

/* Not plain(): looks first, then is the allocator another one? */
static inline bool is_foreign(void)
{
	look();
	return __atomic_load_n(&family_is, __ATOMIC_ACQUIRE) == FOREIGN;
}

static CP_NOINLINE void *taken(void *p)
{
	if (p && counting())
		cp_mem_changed((int64_t)malloc_usable_size(p));
	return p;
}

static CP_NOINLINE void *malloc_slow(size_t size)
{
	return taken(is_foreign() ? foreign.malloc(size) : __libc_malloc(size));
}

CP_EXPORT void *malloc(size_t size)
{
	if (plain())
		return __libc_malloc(size);
	return malloc_slow(size);
}

static CP_NOINLINE void free_slow(void *p)
{
	bool other = is_foreign();
	if (p && counting())
		cp_mem_changed(-(int64_t)malloc_usable_size(p));
	if (other)
		foreign.free(p);
	else
		__libc_free(p);
}

CP_EXPORT void free(void *p)
{
	if (plain()) {
		__libc_free(p); /* a jump: the whole cost under fifo is two loads and a branch */
		return;
	}
	free_slow(p);
}

CP_EXPORT void *calloc(size_t n, size_t size)
{
	if (plain())
		return __libc_calloc(n, size);
	return taken(is_foreign() ? foreign.calloc(n, size) : __libc_calloc(n, size));
}

CP_EXPORT void *realloc(void *p, size_t size)
{
	if (plain())
		return __libc_realloc(p, size);
	bool other = is_foreign();
	bool count = counting();
	size_t was = p && count ? malloc_usable_size(p) : 0;
	void *q = other ? foreign.realloc(p, size) : __libc_realloc(p, size);
	/* realloc(p, 0) frees p and answers NULL; a failed one keeps p */
	if (count && q)
		cp_mem_changed((int64_t)malloc_usable_size(q) - (int64_t)was);
	else if (count && p && size == 0)
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
	if (plain())
		return __libc_memalign(align, size);
	return taken(is_foreign() ? foreign.memalign(align, size) : __libc_memalign(align, size));
}

CP_EXPORT void *aligned_alloc(size_t align, size_t size)
{
	if (!plain() && is_foreign())
		return taken(foreign.aligned_alloc(align, size));
	/* as glibc 2.36's: memalign's, which rounds an alignment that is not
	 * a power of two up to one */
	return memalign(align, size);
}

CP_EXPORT int posix_memalign(void **out, size_t align, size_t size)
{
	if (!plain() && is_foreign()) {
		int e = foreign.posix_memalign(out, align, size);
		if (e == 0)
			taken(*out);
		return e;
	}
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
	if (plain())
		return __libc_valloc(size);
	return taken(is_foreign() ? foreign.valloc(size) : __libc_valloc(size));
}

CP_EXPORT void *pvalloc(size_t size)
{
	if (plain())
		return __libc_pvalloc(size);
	return taken(is_foreign() ? foreign.pvalloc(size) : __libc_pvalloc(size));
}
