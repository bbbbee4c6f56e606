/* stack.h: stacks for user threads.
 *
 * A stack is a range of anonymous memory committed lazily by the kernel,
 * with a guard region below it so an overflow faults instead of silently
 * corrupting a neighbour.  Default-sized stacks come from slabs (one mmap
 * for many stacks) and are recycled through per-worker pools, so creating
 * a thread costs no syscall in the steady state.
 *
 * Guards use MADV_GUARD_INSTALL (Linux 6.13+), which marks pages in the page
 * tables without splitting the mapping: with mprotect() every guard is a
 * separate VMA, and vm.max_map_count (65,530) would cap us near 32K
 * threads.  Older kernels fall back to mprotect() and that cap. */
#ifndef CAPRICE_STACK_H
#define CAPRICE_STACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum cp_stack_kind {
	CP_STACK_POOLED = 1, /* default size, from a slab; recycled */
	CP_STACK_MAPPED,     /* odd size or guard: own mapping, unmapped on release */
	CP_STACK_USER,       /* pthread_attr_setstack: the caller owns the memory */
	CP_STACK_LINKED,     /* chunks (chunk.h): lo..lo+size is the first one's
	                        room; the thread grows onto more */
};

struct cp_stack {
	char *lo;     /* lowest usable byte (just above the guard) */
	size_t size;  /* usable bytes; the stack grows down from lo + size */
	size_t guard; /* guard bytes directly below lo (0 for user stacks) */
	int kind;     /* enum cp_stack_kind */
};

static inline char *cp_stack_top(const struct cp_stack *s) { return s->lo + s->size; }

/* A free-list of default stacks owned by one worker; no locking, since only
 * that worker touches it. */
struct cp_stack_pool {
	struct cp_free_stack *head;
	unsigned count;
};

/* Stack geometry in force: CAPRICE_STACK_SIZE (bytes, k/m suffixes) or the
 * built-in default, rounded to pages. */
size_t cp_stack_default_size(void);
size_t cp_stack_default_guard(void);
size_t cp_page_size(void);

/* How a stack must fit a request: a pooled default stack answers every
 * request up to its size and guard (sizes are minimums), or the stack is
 * exactly that size with exactly that guard right below it (what a
 * program asks for when it sets both: a write past the size faults). */
enum cp_stack_fit { CP_STACK_AT_LEAST, CP_STACK_EXACT };

/* Gets a stack of `size` bytes (rounded to pages) with `guard` guard bytes.
 * Defaults come from `pool` (may be NULL), then the shared depot, then a
 * new slab.  Returns 0, or EAGAIN when address space or mappings run out,
 * ENOMEM when memory does, EINVAL for a size that cannot be a stack. */
int cp_stack_get(struct cp_stack_pool *pool, size_t size, size_t guard, enum cp_stack_fit fit,
                 struct cp_stack *out);

/* Wraps caller-provided memory (pthread_attr_setstack). */
int cp_stack_wrap_user(void *addr, size_t size, struct cp_stack *out);

/* Returns a stack.  Pooled stacks stay committed (a hot stack costs no
 * page faults on reuse); past the pool's cap they go to the depot, which
 * keeps them hot too until cp_stack_decay finds them unneeded. */
void cp_stack_put(struct cp_stack_pool *pool, struct cp_stack *s);

/* For the runtime's monitor, called often (now_ns: CLOCK_MONOTONIC): the
 * depot gives back, in the caller's time rather than at a thread's exit,
 * what went unneeded for a while (depot.h). */
void cp_stack_decay(uint64_t now_ns);

/* True when addr lies in the guard of s: the fault was a stack overflow. */
static inline bool cp_stack_guard_hit(const struct cp_stack *s, const void *addr)
{
	const char *a = addr;
	return s->guard && a >= s->lo - s->guard && a < s->lo;
}

/* Every slab of pooled stacks, newest first.  Debuggers find the live
 * user threads by walking them (a thread record sits at the top of its
 * stack), which costs a thread's creation nothing, where a registry of
 * threads would cost every creation and exit (sched/caprice-gdb.py). */
struct cp_stack_slab {
	struct cp_stack_slab *next;
	char *base;      /* the first stack's guard */
	size_t stride;   /* guard + stack */
	size_t guard;    /* below each stack */
	size_t size;     /* usable bytes of each stack */
	unsigned count;
};
extern struct cp_stack_slab *cp_stack_slabs __attribute__((visibility("hidden")));

/* In the child of fork(): the depot's lock may have been held by a
 * thread that does not exist there. */
void cp_stack_after_fork(void);

#endif
