/* chunk.c: slabs, pools and the depot of linked-stack chunks (chunk.h). */
#include "chunk.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compiler.h"
#include "spinlock.h"

#define SLAB_BYTES (4u << 20)

static const size_t class_size[CP_CHUNK_CLASSES] = { 2u << 10, 8u << 10, 32u << 10, 128u << 10 };
/* a worker keeps this many free chunks of each class before the depot
 * takes them: the first chunks of threads that come and go, and enough
 * for the growth and shrinking of a few deep calls */
static const unsigned pool_cap[CP_CHUNK_CLASSES] = { 256, 64, 16, 4 };
/* the depot keeps this many committed; the rest give their pages back
 * (a 2 KiB chunk shares its page, and keeps it) */
static const unsigned depot_hot_cap[CP_CHUNK_CLASSES] = { 4096, 1024, 64, 16 };

struct depot_class {
	struct cp_chunk *free;
	unsigned count;
	char *cursor, *end;      /* the slab being carved */
};

static cp_spinlock depot_lock = CP_SPINLOCK_INIT;
static struct depot_class depot[CP_CHUNK_CLASSES];
static uint64_t mapped_chunks;

size_t cp_chunk_class_size(unsigned cls)
{
	return class_size[cls];
}

unsigned cp_chunk_class_for(size_t bytes)
{
	unsigned c = 0;
	while (c < CP_CHUNK_CLASSES && class_size[c] < bytes)
		c++;
	return c;
}

/* With the depot's lock: a chunk from the class's slab, mapping a new
 * slab when it is used up.  The tail of the old slab that no chunk fits
 * is never touched, so it costs address space only.  Out of line, as
 * every C library call here: it would move the pool's fast paths to a big
 * chunk when a linked thread runs them (sched/linked.c). */
static CP_NOINLINE struct cp_chunk *carve(unsigned cls)
{
	struct depot_class *d = &depot[cls];
	size_t size = class_size[cls];
	if (!d->cursor || (size_t)(d->end - d->cursor) < size) {
		void *p = mmap(NULL, SLAB_BYTES, PROT_READ | PROT_WRITE,
		               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED)
			return NULL;
		d->cursor = p;
		d->end = (char *)p + SLAB_BYTES;
	}
	struct cp_chunk *c = (struct cp_chunk *)d->cursor;
	d->cursor += size;
	mapped_chunks++;
	c->size = size;
	c->cls = cls;
	return c;
}

struct cp_chunk *cp_chunk_get(struct cp_chunk_pool *pool, struct cp_stack_pool *stacks,
                              unsigned cls)
{
	struct cp_chunk *c;
	if (cls == CP_CHUNK_BIG) {
		struct cp_stack st;
		if (cp_stack_get(stacks, cp_stack_default_size(), cp_stack_default_guard(),
		                 CP_STACK_AT_LEAST, &st))
			return NULL;
		c = (struct cp_chunk *)st.lo;
		c->big = st;
		c->size = st.size;
		c->cls = CP_CHUNK_BIG;
	} else if (pool && (c = pool->free[cls]) != NULL) {
		pool->free[cls] = c->newer;
		pool->count[cls]--;
	} else {
		cp_spin_lock(&depot_lock);
		struct depot_class *d = &depot[cls];
		if ((c = d->free) != NULL) {
			d->free = c->newer;
			d->count--;
		} else {
			c = carve(cls);
		}
		cp_spin_unlock(&depot_lock);
		if (!c)
			return NULL;
	}
	c->older = c->newer = c->kept = NULL;
	return c;
}

/* The pages of a free chunk, but the header's, which holds the depot's
 * link. */
static CP_NOINLINE void give_back_pages(struct cp_chunk *c)
{
	size_t page = cp_page_size();
	char *from = (char *)(((uintptr_t)c + CP_CHUNK_LIMIT_OFF + page - 1) & ~(page - 1));
	char *to = (char *)c + c->size;
	if (from < to)
		madvise(from, (size_t)(to - from), MADV_DONTNEED);
}

void cp_chunk_put(struct cp_chunk_pool *pool, struct cp_stack_pool *stacks, struct cp_chunk *c)
{
	unsigned cls = c->cls;
	if (cls == CP_CHUNK_BIG) {
		struct cp_stack st = c->big; /* c lives inside it */
		cp_stack_put(stacks, &st);
		return;
	}
	if (pool && pool->count[cls] < pool_cap[cls]) {
		c->newer = pool->free[cls];
		pool->free[cls] = c;
		pool->count[cls]++;
		return;
	}
	struct depot_class *d = &depot[cls];
	/* past the depot's hot part its pages go back first (a racy count is
	 * fine for that) */
	if (__atomic_load_n(&d->count, __ATOMIC_RELAXED) >= depot_hot_cap[cls])
		give_back_pages(c);
	cp_spin_lock(&depot_lock);
	c->newer = d->free;
	d->free = c;
	d->count++;
	cp_spin_unlock(&depot_lock);
}

void cp_chunk_after_fork(void)
{
	depot_lock = (cp_spinlock)CP_SPINLOCK_INIT;
}

void cp_chunk_counts(uint64_t *mapped, uint64_t *in_depot)
{
	cp_spin_lock(&depot_lock);
	*mapped = mapped_chunks;
	uint64_t n = 0;
	for (unsigned i = 0; i < CP_CHUNK_CLASSES; i++)
		n += depot[i].count;
	*in_depot = n;
	cp_spin_unlock(&depot_lock);
}
