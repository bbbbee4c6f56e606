/* chunk.h: the chunks of linked stacks.
 *
 * Code compiled with -fsplit-stack checks, in every function's prologue,
 * that its frame fits above a limit (the TCB word at %fs:0x70), and calls
 * __morestack when it does not (sched/morestack.S).  So a thread whose
 * code is all split-stack code can start on one small chunk and get more
 * only when a call needs it: a linked stack.
 *
 * A chunk is a block of memory with this header at its lowest address;
 * the stack grows down from its top towards the limit, CP_CHUNK_LIMIT_OFF
 * bytes above the header's start.  The bytes between the header and the
 * limit are the slack a prologue may use before it checks (frames under
 * 256 bytes compare %rsp itself with the limit), the red zone below a
 * leaf's %rsp, and __morestack's own saves.
 *
 * Small chunks come in a few size classes, carved from slabs (one mmap
 * for many chunks) and recycled through per-worker pools with no lock and
 * no atomic operation; past a pool's cap they go to a shared depot, which
 * gives the memory of what a load stopped needing back to the kernel
 * (depot.h).  Big chunks, on
 * which calls into code without split-stack prologues run, are ordinary
 * pooled stacks (stack.h), guard page included. */
#ifndef CAPRICE_CHUNK_H
#define CAPRICE_CHUNK_H

/* Size classes of small chunks: 2, 8, 32 and 128 KiB.  A thread starts
 * on a 2 KiB one, with its record at the top: two blocked threads share a
 * page when neither went deeper than about 1 KiB of frames. */
#define CP_CHUNK_CLASSES 4
#define CP_CHUNK_BIG     CP_CHUNK_CLASSES /* a pooled stack (stack.h) */

/* Field offsets morestack.S reads: keep them in step with the struct. */
#define CP_CHUNK_OLDER 0
#define CP_CHUNK_NEWER 8
#define CP_CHUNK_SIZE  16
#define CP_CHUNK_CLS   24
#define CP_CHUNK_LIMIT_OFF 640

#ifndef __ASSEMBLER__
#include <stddef.h>
#include <stdint.h>

#include "stack.h"

struct cp_chunk {
	struct cp_chunk *older;  /* the chunk it was entered from; NULL: the first */
	struct cp_chunk *newer;  /* the one entered from it: kept, once the call
	                            that needed it returns, for the next call */
	size_t size;             /* bytes, this header included */
	uint32_t cls;            /* size class, or CP_CHUNK_BIG */
	uint32_t pad;
	struct cp_stack big;     /* CP_CHUNK_BIG: the stack this chunk is */
	struct cp_chunk *kept;   /* `newer` while a big chunk stands in for it
	                            (a call into code without prologues) */
};

_Static_assert(offsetof(struct cp_chunk, older) == CP_CHUNK_OLDER, "morestack.S");
_Static_assert(offsetof(struct cp_chunk, newer) == CP_CHUNK_NEWER, "morestack.S");
_Static_assert(offsetof(struct cp_chunk, size) == CP_CHUNK_SIZE, "morestack.S");
_Static_assert(offsetof(struct cp_chunk, cls) == CP_CHUNK_CLS, "morestack.S");
_Static_assert(sizeof(struct cp_chunk) <= CP_CHUNK_LIMIT_OFF / 8, "slack");

static inline char *cp_chunk_top(const struct cp_chunk *c) { return (char *)c + c->size; }
static inline uintptr_t cp_chunk_limit(const struct cp_chunk *c)
{
	return (uintptr_t)c + CP_CHUNK_LIMIT_OFF;
}
static inline struct cp_chunk *cp_chunk_of_limit(uintptr_t limit)
{
	return (struct cp_chunk *)(limit - CP_CHUNK_LIMIT_OFF);
}

/* Bytes of a small chunk of class cls. */
size_t cp_chunk_class_size(unsigned cls);
/* The smallest class whose chunks hold `bytes`, or CP_CHUNK_CLASSES if
 * none does. */
unsigned cp_chunk_class_for(size_t bytes);

/* A worker's free chunks, one list per class.  Only that worker touches
 * it. */
struct cp_chunk_pool {
	struct cp_chunk *free[CP_CHUNK_CLASSES];
	unsigned count[CP_CHUNK_CLASSES];
};

/* A chunk of class cls (0 .. CP_CHUNK_CLASSES-1) from pool (may be NULL),
 * the depot, or a new slab; or CP_CHUNK_BIG: a pooled stack from stacks.
 * NULL when memory runs out. */
struct cp_chunk *cp_chunk_get(struct cp_chunk_pool *pool, struct cp_stack_pool *stacks,
                              unsigned cls);
/* Gives a chunk back (to pool, or the depot past the pool's cap). */
void cp_chunk_put(struct cp_chunk_pool *pool, struct cp_stack_pool *stacks, struct cp_chunk *c);

/* For the runtime's monitor, called often (now_ns: CLOCK_MONOTONIC): the
 * depots give back what went unneeded for a while (depot.h). */
void cp_chunk_decay(uint64_t now_ns);

/* In the child of fork(): the depots' locks may have been held. */
void cp_chunk_after_fork(void);

/* Chunks mapped so far, and those free in the depot (for benchmarks). */
void cp_chunk_counts(uint64_t *mapped, uint64_t *in_depot);
#endif

#endif
