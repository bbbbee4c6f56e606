/* context.h: saving and resuming an execution context (see context.S). */
#ifndef CAPRICE_CONTEXT_H
#define CAPRICE_CONTEXT_H

#include <stdint.h>

void cp_ctx_switch(void **save_sp, void *new_sp);
void cp_ctx_trampoline(void);
void cp_redirect_trampoline(void);

/* Lays out a fresh context at the top of a stack so that the first
 * cp_ctx_switch into it calls start(arg) on that stack. */
static inline void *cp_ctx_make(char *top, void (*start)(void *), void *arg)
{
	/* after the final ret the trampoline sees rsp == top, 16-byte aligned */
	uint64_t *sp = (uint64_t *)((uintptr_t)top & ~(uintptr_t)15);
	*--sp = (uint64_t)(uintptr_t)cp_ctx_trampoline; /* ret target */
	*--sp = 0;                        /* rbp */
	*--sp = 0;                        /* rbx */
	*--sp = (uint64_t)(uintptr_t)arg; /* r12 */
	*--sp = (uint64_t)(uintptr_t)start; /* r13 */
	*--sp = 0;                        /* r14 */
	*--sp = 0;                        /* r15 */
	/* MXCSR: all exceptions masked, round to nearest; x87 CW: same */
	*--sp = 0x1f80ull | (0x037full << 32);
	return sp;
}

#endif
