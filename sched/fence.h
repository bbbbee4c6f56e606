/* fence.h: an asymmetric pair of full memory barriers, for the Dekker
 * handshakes where one side runs all the time and the other rarely: the
 * owner's pops against a thief (runq.h), a waiter publishing its wait
 * against an interrupter (wait.c, io.c).
 *
 * The frequent side's barrier is only the compiler's; the rare side runs
 * membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), which puts a full barrier
 * on every CPU running a thread of this process, so that each frequent
 * side's accesses are all before it or all after it.  Where the kernel
 * cannot (no expedited membarrier), both sides are real barriers. */
#ifndef CAPRICE_FENCE_H
#define CAPRICE_FENCE_H

#include <stdbool.h>

#include "compiler.h"

/* Set once the process registered for expedited membarrier (at start-up,
 * and again in a fork's child, before it has a second thread). */
extern bool cp_membarrier_ready CP_HIDDEN;
void cp_membarrier_init(void);

/* The frequent side's barrier: orders its stores before its loads
 * against a cp_fence_rare() on another kernel thread. */
static inline void cp_fence_frequent(void)
{
	if (cp_likely(__atomic_load_n(&cp_membarrier_ready, __ATOMIC_RELAXED)))
		cp_barrier();
	else
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* The rare side's barrier (a system call). */
void cp_fence_rare(void);

#endif
