/* stack.c: slab-backed, guarded, pooled stacks (see stack.h for why). */
#include "stack.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "compiler.h"
#include "env.h"
#include "depot.h"
#include "rtmem.h"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

/* 256 KiB, not NPTL's 8 MiB: every live stack's top page sits in its own
 * 2 MiB page-table span at 8 MiB strides, which would add a hidden 4 KiB of
 * page tables per thread.  Overflow still faults loudly on the guard. */
#define DEFAULT_STACK_SIZE (256u * 1024)
#define MIN_STACK_SIZE     (16u * 1024)   /* PTHREAD_STACK_MIN */
#define POOL_CAP           64             /* hot stacks a worker keeps */
#define DEPOT_HOT_CAP      1024           /* hot stacks the depot keeps for good */
#define SLAB_BYTES         (32u << 20)    /* one mapping serves this much */

/* A free stack records itself in its own top bytes, which stay committed. */
struct cp_free_stack {
	struct cp_depot_link link; /* first: a depot link is a free stack */
	struct cp_free_stack *next; /* in a worker's pool, a new slab's chain */
	struct cp_stack desc;
};

static size_t page_size;
static size_t default_size;
static size_t default_guard;
static int guard_mode; /* 0 unknown, 1 MADV_GUARD_INSTALL, 2 mprotect */

static void give_back(struct cp_depot_link *l);

struct cp_stack_slab *cp_stack_slabs;
static struct cp_depot depot = CP_DEPOT_INIT(DEPOT_HOT_CAP, give_back);

static size_t round_pages(size_t n)
{
	return (n + page_size - 1) & ~(page_size - 1);
}

/* Out of line: C library calls move their caller to a big chunk on a
 * linked stack (sched/linked.c), and every stack taken checks this. */
static CP_COLD void geometry_read(void)
{
	size_t ps = (size_t)sysconf(_SC_PAGESIZE);
	size_t sz = cp_env_size("CAPRICE_STACK_SIZE", MIN_STACK_SIZE, 1ul << 30, DEFAULT_STACK_SIZE);
	default_size = (sz + ps - 1) & ~(ps - 1);
	default_guard = ps;
	__atomic_store_n(&page_size, ps, __ATOMIC_RELEASE);
}

static inline void geometry_init(void)
{
	if (cp_unlikely(!__atomic_load_n(&page_size, __ATOMIC_ACQUIRE)))
		geometry_read();
}

size_t cp_page_size(void) { geometry_init(); return page_size; }
size_t cp_stack_default_size(void) { geometry_init(); return default_size; }
size_t cp_stack_default_guard(void) { geometry_init(); return default_guard; }

/* Makes [p, p+len) fault on access; 0 or errno. */
static int install_guard(char *p, size_t len)
{
	int mode = __atomic_load_n(&guard_mode, __ATOMIC_RELAXED);
	if (mode != 2) {
		if (madvise(p, len, MADV_GUARD_INSTALL) == 0) {
			__atomic_store_n(&guard_mode, 1, __ATOMIC_RELAXED);
			return 0;
		}
		if (errno != EINVAL)
			return errno;
		__atomic_store_n(&guard_mode, 2, __ATOMIC_RELAXED);
	}
	return mprotect(p, len, PROT_NONE) == 0 ? 0 : errno;
}

static int map_errno(int e)
{
	/* mmap says ENOMEM both for memory and for the mapping-count limit; to
	 * a thread creator both mean "no more threads now": POSIX's EAGAIN. */
	return e == ENOMEM ? EAGAIN : e;
}

/* Maps a slab of default stacks (as many as fit in SLAB_BYTES, at most 64)
 * and threads them into a chain from *first to *last, counted in *count.
 * Called without locks held: mmap can take microseconds. */
/* Out of line (slab_new, map_single, unmap_single, give_back): a call
 * into the C library moves its caller to a big chunk on a linked stack
 * (sched/linked.c), and the pool's fast paths must not pay for it. */
static CP_NOINLINE int slab_new(struct cp_free_stack **first, struct cp_free_stack **last, unsigned *count)
{
	size_t stride = default_size + default_guard;
	unsigned n = (unsigned)(SLAB_BYTES / stride);
	if (n < 1)
		n = 1;
	if (n > 64)
		n = 64;
	char *base = mmap(NULL, stride * n, PROT_READ | PROT_WRITE,
	                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
	if (base == MAP_FAILED)
		return map_errno(errno);
	struct cp_free_stack *head = NULL, *tail = NULL;
	for (unsigned i = 0; i < n; i++) {
		char *g = base + (size_t)i * stride;
		int e = install_guard(g, default_guard);
		if (e) {
			/* keep what we carved; give back the rest */
			munmap(g, stride * (n - i));
			if (!head)
				return map_errno(e);
			break;
		}
		struct cp_stack d = { g + default_guard, default_size, default_guard, CP_STACK_POOLED };
		struct cp_free_stack *f = (struct cp_free_stack *)(cp_stack_top(&d) - sizeof *f);
		f->desc = d;
		f->next = NULL;
		if (tail)
			tail->next = f;
		else
			head = f;
		tail = f;
		(*count)++;
	}
	struct cp_stack_slab *slab = cp_rt_malloc(sizeof *slab);
	if (slab) { /* for debuggers only: without it the slab just goes unlisted */
		*slab = (struct cp_stack_slab){ NULL, base, stride, default_guard, default_size, *count };
		slab->next = __atomic_load_n(&cp_stack_slabs, __ATOMIC_RELAXED);
		while (!__atomic_compare_exchange_n(&cp_stack_slabs, &slab->next, slab, true,
		                                    __ATOMIC_RELEASE, __ATOMIC_RELAXED))
			;
	}
	*first = head;
	*last = tail;
	return 0;
}

static CP_NOINLINE int map_single(size_t size, size_t guard, struct cp_stack *out)
{
	char *base = mmap(NULL, size + guard, PROT_READ | PROT_WRITE,
	                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
	if (base == MAP_FAILED)
		return map_errno(errno);
	if (guard) {
		int e = install_guard(base, guard);
		if (e) {
			munmap(base, size + guard);
			return map_errno(e);
		}
	}
	*out = (struct cp_stack){ base + guard, size, guard, CP_STACK_MAPPED };
	return 0;
}

int cp_stack_get(struct cp_stack_pool *pool, size_t size, size_t guard, enum cp_stack_fit fit,
                 struct cp_stack *out)
{
	geometry_init();
	if (size < MIN_STACK_SIZE)
		return EINVAL;
	size = round_pages(size);
	guard = round_pages(guard);
	/* a smaller request gets a pooled default stack: sizes and guards
	 * are minimums, pages are committed only when touched, and a
	 * mapping of its own would cost an mmap and a munmap per thread
	 * (servers commonly ask for 64 KiB stacks) */
	if (fit == CP_STACK_AT_LEAST && size <= default_size && guard <= default_guard) {
		size = default_size;
		guard = default_guard;
	}
	if (size != default_size || guard != default_guard)
		return map_single(size, guard, out);

	struct cp_free_stack *f = pool ? pool->head : NULL;
	if (f) {
		pool->head = f->next;
		pool->count--;
		*out = f->desc;
		return 0;
	}
	f = (struct cp_free_stack *)cp_depot_pop(&depot);
	if (f) {
		*out = f->desc;
		return 0;
	}
	struct cp_free_stack *first = NULL, *last = NULL;
	unsigned n = 0;
	int e = slab_new(&first, &last, &n);
	if (e)
		return e;
	*out = first->desc;
	if (first != last) {
		/* the rest of the slab feeds this worker's pool first */
		struct cp_free_stack *rest = first->next;
		if (pool) {
			last->next = pool->head;
			pool->head = rest;
			pool->count += n - 1;
		} else {
			for (struct cp_free_stack *r = rest; r; r = r->next)
				cp_depot_push(&depot, &r->link);
		}
	}
	return 0;
}

int cp_stack_wrap_user(void *addr, size_t size, struct cp_stack *out)
{
	if (!addr || size < MIN_STACK_SIZE)
		return EINVAL;
	*out = (struct cp_stack){ addr, size, 0, CP_STACK_USER };
	return 0;
}

static CP_NOINLINE void unmap_single(struct cp_stack *s)
{
	munmap(s->lo - s->guard, s->size + s->guard);
}

/* The depot's: a free stack's memory but its top page, which holds f. */
static CP_NOINLINE void give_back(struct cp_depot_link *l)
{
	struct cp_free_stack *f = (struct cp_free_stack *)l;
	char *top_page = (char *)((uintptr_t)f & ~(page_size - 1));
	if (top_page > f->desc.lo)
		madvise(f->desc.lo, (size_t)(top_page - f->desc.lo), MADV_DONTNEED);
}

void cp_stack_decay(uint64_t now_ns)
{
	cp_depot_decay(&depot, now_ns);
}

void cp_stack_put(struct cp_stack_pool *pool, struct cp_stack *s)
{
	switch (s->kind) {
	case CP_STACK_USER:
		return;
	case CP_STACK_MAPPED:
		unmap_single(s);
		return;
	case CP_STACK_POOLED:
		break;
	default:
		cp_die("cp_stack_put: corrupt stack descriptor (kind %d)", s->kind);
	}
	struct cp_stack d = *s; /* s may live inside the stack we are freeing */
	struct cp_free_stack *f = (struct cp_free_stack *)(cp_stack_top(&d) - sizeof *f);
	f->desc = d;
	if (pool && pool->count < POOL_CAP) {
		f->next = pool->head;
		pool->head = f;
		pool->count++;
		return;
	}
	cp_depot_push(&depot, &f->link);
}

void cp_stack_after_fork(void)
{
	cp_depot_after_fork(&depot);
}
