/* chunk.c: slabs, pools and the depot of linked-stack chunks (chunk.h). */
#include "chunk.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compiler.h"
#include "depot.h"
#include "spinlock.h"

#define SLAB_BYTES (4u << 20)

static const size_t class_size[CP_CHUNK_CLASSES] = { 2u << 10, 8u << 10, 32u << 10, 128u << 10 };
/* a worker keeps this many free chunks of each class before the depot
 * takes them: the first chunks of threads that come and go, and enough
 * for the growth and shrinking of a few deep calls */
static const unsigned pool_cap[CP_CHUNK_CLASSES] = { 256, 64, 16, 4 };
/* A free chunk in the depot is linked through its header's first words
 * (`older` and `newer`, which cp_chunk_get resets). */
_Static_assert(sizeof(struct cp_depot_link) <= offsetof(struct cp_chunk, size), "depot link");

static void give_back_pages(struct cp_depot_link *l);

/* the depots keep this many committed for good; what else they hold
 * gives its pages back once unneeded for a while (depot.h; a 2 KiB chunk
 * shares its page, and keeps it) */
static struct cp_depot depot[CP_CHUNK_CLASSES] = {
	CP_DEPOT_INIT(4096, give_back_pages), CP_DEPOT_INIT(1024, give_back_pages),
	CP_DEPOT_INIT(64, give_back_pages), CP_DEPOT_INIT(16, give_back_pages),
};

/* the slabs being carved, one per class */
static cp_spinlock carve_lock = CP_SPINLOCK_INIT;
static struct {
	char *cursor, *end;
} slab[CP_CHUNK_CLASSES];
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

/* With carve_lock: a chunk from the class's slab, mapping a new slab
 * when it is used up.  The tail of the old slab that no chunk fits
 * is never touched, so it costs address space only.  Out of line, as
 * every C library call here: it would move the pool's fast paths to a big
 * chunk when a linked thread runs them (sched/linked.c). */
static CP_NOINLINE struct cp_chunk *carve(unsigned cls)
{
	__typeof__(slab[0]) *d = &slab[cls];
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
	} else if ((c = (struct cp_chunk *)cp_depot_pop(&depot[cls])) == NULL) {
		cp_spin_lock(&carve_lock);
		c = carve(cls);
		cp_spin_unlock(&carve_lock);
		if (!c)
			return NULL;
	}
	c->older = c->newer = c->kept = NULL;
	return c;
}

/* The depots': the pages of a free chunk, but the header's, which holds
 * the depot's link. */
static CP_NOINLINE void give_back_pages(struct cp_depot_link *l)
{
	struct cp_chunk *c = (struct cp_chunk *)l;
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
	cp_depot_push(&depot[cls], (struct cp_depot_link *)c);
}

void cp_chunk_decay(uint64_t now_ns)
{
	for (unsigned i = 0; i < CP_CHUNK_CLASSES; i++)
		cp_depot_decay(&depot[i], now_ns);
}

void cp_chunk_after_fork(void)
{
	carve_lock = (cp_spinlock)CP_SPINLOCK_INIT;
	for (unsigned i = 0; i < CP_CHUNK_CLASSES; i++)
		cp_depot_after_fork(&depot[i]);
}

void cp_chunk_counts(uint64_t *mapped, uint64_t *in_depot)
{
	cp_spin_lock(&carve_lock);
	*mapped = mapped_chunks;
	cp_spin_unlock(&carve_lock);
	uint64_t n = 0;
	for (unsigned i = 0; i < CP_CHUNK_CLASSES; i++)
		n += cp_depot_count(&depot[i]);
	*in_depot = n;
}
