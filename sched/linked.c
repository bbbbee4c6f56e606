/* linked.c: linked stacks, the thread's side (chunk.h has the chunks,
 * morestack.S the entry points split-stack prologues call).
 *
 * A thread whose start routine was compiled with -fsplit-stack starts on
 * one small chunk (2 KiB), with its record at the top, and its
 * split-stack limit (%fs:0x70) at that chunk's.  A call whose frame does
 * not fit goes to __morestack, which enters the chunk kept from the last
 * such call or comes here for a new one: the next size class up (8, 32,
 * 128 KiB), so a deep recursion makes few splits.  When the call returns,
 * that chunk stays attached as the older chunk's `newer`, so a call made
 * in a loop right at a boundary allocates nothing (the hot split);
 * whatever was attached beyond it goes back to the pools, so a recursion
 * that shrinks gives its memory back.  Calls into code without prologues
 * (the C library, any library not built with -fsplit-stack) run on a big
 * chunk, an ordinary pooled stack with a guard page, which goes back to
 * the pool when the call returns.
 *
 * The limit is per user thread: a switch saves the outgoing thread's and
 * loads the incoming one's (sched.c), and the scheduler's own contexts,
 * main and threads on contiguous stacks run with 0, which no prologue
 * ever finds too low.  A thread's chunks together may not pass its cap
 * (pthread_attr_setstacksize, 8 MiB by default, as NPTL's stacks).
 *
 * An exception unwinding through __morestack runs its cleanup, which does
 * what a return does.  Cancellation jumps (longjmp) to the frame of a
 * pthread_cleanup_push, on an older chunk: cp_linked_unwind_to gives the
 * limit that chunk's first.
 *
 * A program built with -fsplit-stack links libthread-linked.so, the
 * runtime built as split-stack code and linked by gold, so a linked thread
 * that calls into the library (pthread_cond_wait, read...) parks on the
 * chunk it is on; a parking thread gives back the chunk it keeps for its
 * next deep call.
 * gold moves a runtime function that calls the C library to a big chunk,
 * so on the runtime's hot paths such calls are kept out of line (cold
 * helpers), errno is reached through %fs and syscall(2) is inline
 * (compiler.h); code that runs off any chunk (signal handlers, a kernel
 * thread's first frame) has no prologue and sets the limit to 0.
 *
 * Limit of this version: a longjmp of the program's own across chunks
 * leaves the limit of the chunk it left. */
#include "worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "compiler.h"
#include "context.h"
#include "env.h"
#include "rtmem.h"

#define SCRATCH_BYTES (32u << 10)
/* room the first chunk keeps for frames beside the record: a start, and a
 * park inside the library, fit without a split */
#define FIRST_FRAMES  1024u
#define DEFAULT_CAP   (8u << 20)
#define BIG_BIT       62

/* The stack __morestack runs its C part on, one per kernel thread.  The
 * entry points (morestack.S) are linked into the program itself, since
 * gold and lld turn a prologue's call into a call to
 * __morestack_non_split only when that is defined in the same module, so
 * what they use here is exported under reserved names. */
CP_EXPORT __thread char *__caprice_morestack_scratch __attribute__((tls_model("initial-exec")));

void cp_linked_bind_kthread(void)
{
	/* a kernel thread's TCB may be a recycled one with an old limit */
	cp_split_limit_set(0);
	if (!__caprice_morestack_scratch) {
		char *s = cp_rt_aligned(64, SCRATCH_BYTES);
		if (!s)
			cp_die("cannot allocate the split-stack scratch stack: out of memory");
		__caprice_morestack_scratch = s + SCRATCH_BYTES;
	}
}

#ifndef CP_ASAN
/* Out of line, as the C library calls on every hot path here: gold would
 * move pthread_create's check to a big chunk otherwise. */
static CP_COLD int stacks_mode_from_env(void)
{
	const char *m = getenv("CAPRICE_STACKS");
	return m && strcmp(m, "contiguous") == 0 ? 0 : 1;
}
#endif

/* Does the code at fn begin with a split-stack prologue?  What GCC emits
 * (an endbr64 first with -fcf-protection):
 *     cmp %fs:0x70,%rsp                    64 48 3b 24 25 70 00 00 00
 *     lea -N(%rsp),%r11; cmp %fs:0x70,%r11 4c 8d 9c 24 <N> 64 4c 3b 1c 25 70 00 00 00
 * and what gold and lld make of the first when the function calls code
 * without prologues: stc and a 8-byte nop (f9 0f 1f 84 00 00 00 00 00). */
bool cp_linked_code(const void *fn)
{
#ifdef CP_ASAN
	(void)fn;
	return false; /* README: sanitized builds use contiguous stacks */
#else
	static int stacks_mode = -1; /* 1: linked for split-stack code, 0: never */
	if (cp_unlikely(stacks_mode < 0))
		stacks_mode = stacks_mode_from_env();
	if (!stacks_mode || !fn)
		return false;
	static const unsigned char endbr[] = { 0xf3, 0x0f, 0x1e, 0xfa };
	static const unsigned char cmp_rsp[] = { 0x64, 0x48, 0x3b, 0x24, 0x25, 0x70, 0, 0, 0 };
	static const unsigned char lea_r11[] = { 0x4c, 0x8d, 0x9c, 0x24 };
	static const unsigned char cmp_r11[] = { 0x64, 0x4c, 0x3b, 0x1c, 0x25, 0x70, 0, 0, 0 };
	static const unsigned char stc_nop[] = { 0xf9, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0 };
	const unsigned char *p = fn;
	if (memcmp(p, endbr, sizeof endbr) == 0)
		p += sizeof endbr;
	return memcmp(p, cmp_rsp, sizeof cmp_rsp) == 0 || memcmp(p, stc_nop, sizeof stc_nop) == 0 ||
	       (memcmp(p, lea_r11, sizeof lea_r11) == 0 && memcmp(p + 8, cmp_r11, sizeof cmp_r11) == 0);
#endif
}

struct cp_thread *cp_thread_new_linked(size_t thread_size, size_t cap,
                                       void (*entry)(struct cp_thread *), int *err)
{
	struct cp_worker *w = cp_worker_self();
	struct cp_chunk *c = cp_chunk_get(w ? &w->chunks : NULL, w ? &w->stacks : NULL, 0);
	if (!c) {
		*err = EAGAIN;
		return NULL;
	}
	size_t rec = (thread_size + 63) & ~(size_t)63;
	if (rec + CP_CHUNK_LIMIT_OFF + FIRST_FRAMES > c->size)
		cp_die("a thread record of %zu bytes leaves less than %u bytes of frames in a "
		       "%zu-byte first chunk (chunk.h): the record grew", thread_size,
		       FIRST_FRAMES, c->size);
	struct cp_stack st = { .lo = (char *)cp_chunk_limit(c),
	                       .size = c->size - CP_CHUNK_LIMIT_OFF,
	                       .guard = 0,
	                       .kind = CP_STACK_LINKED };
	struct cp_thread *t = cp_thread_init(st, rec, entry, err);
	if (!t) {
		cp_chunk_put(w ? &w->chunks : NULL, w ? &w->stacks : NULL, c);
		return NULL;
	}
	t->chunk0 = c;
	t->chunk_bytes = c->size;
	t->chunk_cap = cap ? cap : DEFAULT_CAP;
	t->ss_limit = cp_chunk_limit(c);
	cp_switch_extras_add(CP_EXTRA_LINKED, __ATOMIC_RELAXED);
	return t;
}

/* Gives back c and every chunk newer than it, kept ones included. */
static void put_from(struct cp_worker *w, struct cp_thread *t, struct cp_chunk *c)
{
	while (c) {
		struct cp_chunk *n = c->newer;
		if (c->kept)
			put_from(w, t, c->kept); /* one level: a kept chunk keeps none */
		if (t)
			t->chunk_bytes -= c->size;
		cp_chunk_put(w ? &w->chunks : NULL, w ? &w->stacks : NULL, c);
		c = n;
	}
}

void cp_linked_park_trim(void)
{
	uintptr_t limit = cp_split_limit();
	if (!limit)
		return;
	struct cp_chunk *c = cp_chunk_of_limit(limit);
	if (cp_likely(!c->newer))
		return;
	put_from(cp_worker_self(), cp_self(), c->newer);
	c->newer = NULL;
}

void cp_linked_release(struct cp_thread *t)
{
	struct cp_worker *w = cp_worker_self();
	struct cp_chunk *c0 = t->chunk0; /* t lives in it */
	put_from(w, NULL, c0->newer);
	put_from(w, NULL, c0->kept);
	cp_chunk_put(w ? &w->chunks : NULL, w ? &w->stacks : NULL, c0);
}

static _Noreturn void overflow(struct cp_thread *t, size_t need)
{
	cp_die("stack overflow in thread %llu%s%s%s: its linked stack would pass %zu bytes "
	       "(%zu in use, %zu more asked); give it more with pthread_attr_setstacksize()",
	       (unsigned long long)t->id, t->name[0] ? " (" : "", t->name, t->name[0] ? ")" : "",
	       t->chunk_cap, t->chunk_bytes, need);
}

/* __morestack's slow path, on the scratch stack: enter a chunk with room
 * for a frame of `frame` bytes (BIG_BIT: a big chunk, for code without
 * prologues) with argbytes of stack arguments copied from args, newer
 * than cur.  Returns the body's %rsp. */
CP_EXPORT void *__caprice_morestack_grow(uintptr_t frame, size_t argbytes, const char *args,
                                  struct cp_chunk *cur)
{
	bool big = (frame >> BIG_BIT) & 1;
	frame &= ~(1ull << BIG_BIT);
	struct cp_worker *w = cp_worker_self();
	struct cp_thread *t = cp_self();
	if (!w || !t)
		cp_die("__morestack outside a user thread (limit %p)", (void *)cp_split_limit());
	size_t need = frame + argbytes + CP_CHUNK_LIMIT_OFF + 256;
	if (big) {
		t->big_calls++;
		w->st.big_chunks++;
	}
	struct cp_chunk *n = cur->newer;
	if (n && big && n->cls != CP_CHUNK_BIG && !cur->kept) {
		/* a call into the C library between two deep calls must not
		 * cost the small chunk they reuse: it waits beside */
		cur->kept = n;
		n->older = NULL; /* not in the chain while it waits */
		cur->newer = n = NULL;
	}
	if (n && (big || n->cls == CP_CHUNK_BIG || n->size < need)) {
		put_from(w, t, n);
		cur->newer = n = NULL;
	}
	if (!n) {
		unsigned cls = CP_CHUNK_BIG;
		if (!big) {
			cls = cp_chunk_class_for(need);
			/* grow geometrically: a deep recursion splits few times */
			unsigned next = cur->cls == CP_CHUNK_BIG ? 0 : cur->cls + 1;
			if (next < CP_CHUNK_CLASSES && next > cls)
				cls = next;
			if (cls == CP_CHUNK_CLASSES)
				cls = CP_CHUNK_BIG; /* a frame bigger than any class */
		}
		size_t size = cls == CP_CHUNK_BIG ? cp_stack_default_size() : cp_chunk_class_size(cls);
		if (cls == CP_CHUNK_BIG && need > size)
			cp_die("thread %llu: a frame of %zu bytes is bigger than a whole stack chunk "
			       "(%zu bytes, CAPRICE_STACK_SIZE)", (unsigned long long)t->id, frame, size);
		if (t->chunk_bytes + size > t->chunk_cap)
			overflow(t, size);
		n = cp_chunk_get(&w->chunks, &w->stacks, cls);
		if (!n)
			cp_die("thread %llu: out of memory for a stack chunk of %zu bytes "
			       "(its linked stack holds %zu)", (unsigned long long)t->id, size,
			       t->chunk_bytes);
		n->older = cur;
		cur->newer = n;
		t->chunk_bytes += n->size;
	}
	char *sp = (char *)(((uintptr_t)cp_chunk_top(n) - argbytes) & ~(uintptr_t)15);
	memcpy(sp, args, argbytes);
	cp_split_limit_set(cp_chunk_limit(n));
	return sp;
}

/* __morestack's return path when something goes back: leaving is a big
 * chunk, or has chunks attached beyond it (a deep call shrank). */
CP_EXPORT void __caprice_morestack_release(struct cp_chunk *leaving)
{
	struct cp_worker *w = cp_worker_self();
	struct cp_thread *t = cp_self();
	struct cp_chunk *older = leaving->older;
	put_from(w, t, leaving->newer);
	leaving->newer = NULL;
	if (leaving->cls == CP_CHUNK_BIG) {
		older->newer = older->kept;
		if (older->kept)
			older->kept->older = older;
		older->kept = NULL;
		put_from(w, t, leaving);
	}
	cp_split_limit_set(cp_chunk_limit(older));
}

/* For __morestack_allocate_stack_space (morestack.S), on the scratch stack:
 * what split-stack code calls for alloca() or a variable-length array
 * that does not fit in its chunk.  The block lives until the thread ends,
 * as libgcc's does. */
struct alloca_block {
	struct alloca_block *next;
	max_align_t data[];
};

CP_EXPORT void *__caprice_morestack_alloca(size_t size)
{
	struct alloca_block *b = cp_rt_malloc(sizeof *b + size);
	if (!b)
		cp_die("out of memory for %zu bytes of stack space (alloca or a variable-length "
		       "array in split-stack code)", size);
	struct cp_thread *t = cp_self();
	b->next = t ? t->alloca_blocks : NULL;
	if (t)
		t->alloca_blocks = b;
	return b->data;
}

void cp_linked_free_alloca(struct cp_thread *t)
{
	for (struct alloca_block *b = t->alloca_blocks, *n; b; b = n) {
		n = b->next;
		cp_rt_free(b);
	}
	t->alloca_blocks = NULL;
}

void cp_linked_info(const struct cp_thread *t, struct cp_linked_info *out)
{
	uint64_t in_depot;
	cp_chunk_counts(&out->chunks_mapped, &in_depot);
	out->linked = t && t->stack.kind == CP_STACK_LINKED;
	out->bytes = !t ? 0 : out->linked ? t->chunk_bytes : t->stack.size;
	out->cap = !t ? 0 : out->linked ? t->chunk_cap : t->stack.size;
	out->big_bytes = 0;
	out->big_calls = t ? t->big_calls : 0;
	if (out->linked)
		for (const struct cp_chunk *c = t->chunk0; c; c = c->newer)
			if (c->cls == CP_CHUNK_BIG)
				out->big_bytes += c->size;
}

void cp_linked_unwind_to(const void *addr)
{
	struct cp_thread *t = cp_self();
	if (!t || t->stack.kind != CP_STACK_LINKED)
		return;
	const char *a = addr;
	struct cp_chunk *k = t->chunk0;
	while (k && !(a >= (char *)k && a < cp_chunk_top(k)))
		k = k->newer;
	uintptr_t limit = cp_split_limit();
	struct cp_chunk *cur = limit ? cp_chunk_of_limit(limit) : NULL;
	if (!k || !cur || k == cur)
		return;
	/* the chunks between are dead once the jump is made; the one this
	 * runs on stays attached (as the kept chunk, which a later call
	 * replaces if it is a big one) until then */
	struct cp_worker *w = cp_worker_self();
	struct cp_chunk *dead = k->newer;
	if (dead && dead != cur) {
		struct cp_chunk *last = dead;
		while (last->newer && last->newer != cur)
			last = last->newer;
		last->newer = NULL; /* cur stays; what lies between goes */
		put_from(w, t, dead);
	}
	if (k->kept) {
		put_from(w, t, k->kept);
		k->kept = NULL;
	}
	k->newer = cur;
	cur->older = k;
	cp_split_limit_set(cp_chunk_limit(k));
}
