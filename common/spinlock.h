/* spinlock.h: the runtime's internal lock.  Critical sections inside the
 * runtime are a few dozen instructions (queue splices, heap updates), so a
 * test-and-test-and-set spinlock beats parking; and the runtime must never
 * call pthread_mutex_lock on itself, since that is the symbol it exports. */
#ifndef CAPRICE_SPINLOCK_H
#define CAPRICE_SPINLOCK_H

#include <stdbool.h>
#include <stdint.h>

#include "compiler.h"

typedef struct {
	uint32_t locked;
} cp_spinlock;

#define CP_SPINLOCK_INIT { 0 }

/* Runtime spinlocks held by this kernel thread, and work deferred until
 * it holds none.  A wakeup that must wake a sleeping worker (a syscall)
 * is deferred this way: done inside the critical section, the woken
 * worker can preempt the waker on its CPU and then spin on the very lock
 * the waker still holds, until the next timer tick (4 ms here).  A lock
 * is always released on the kernel thread that took it (a waiter's lock
 * is released right after its switch, on the same worker), so the count
 * stays balanced.  Read through asm: a user thread may resume on another
 * kernel thread, and the compiler must not reuse a TLS address.
 *
 * The lock lives here, below every layer, so that stackalloc can use it
 * alone; what the deferred work is belongs to the scheduler, which
 * registers it (cp_spin_set_deferred_hook) before it defers anything. */
extern __thread uint32_t cp_locks_held
	__attribute__((tls_model("initial-exec"))) __attribute__((visibility("hidden")));
extern __thread uint32_t cp_deferred_work
	__attribute__((tls_model("initial-exec"))) __attribute__((visibility("hidden")));
/* Runs the deferred work once the last lock is released. */
void cp_run_deferred_work(void) __attribute__((visibility("hidden")));
void cp_spin_set_deferred_hook(void (*hook)(void)) __attribute__((visibility("hidden")));

static inline void cp_locks_held_inc(void)
{
	__asm__ volatile("movq cp_locks_held@gottpoff(%%rip), %%rax\n\t"
	                 "incl %%fs:(%%rax)" ::: "rax", "memory", "cc");
}

/* Decrements the count; true when this released the last lock and
 * deferred work is waiting. */
static inline bool cp_locks_held_dec(void)
{
	uint32_t held, work;
	__asm__ volatile("movq cp_locks_held@gottpoff(%%rip), %%rax\n\t"
	                 "decl %%fs:(%%rax)\n\t"
	                 "movl %%fs:(%%rax), %0\n\t"
	                 "movq cp_deferred_work@gottpoff(%%rip), %%rax\n\t"
	                 "movl %%fs:(%%rax), %1"
	                 : "=r"(held), "=r"(work) :: "rax", "memory", "cc");
	return held == 0 && work != 0;
}

static inline bool cp_spin_trylock(cp_spinlock *l)
{
	if (__atomic_load_n(&l->locked, __ATOMIC_RELAXED) == 0 &&
	    __atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE) == 0) {
		cp_locks_held_inc();
		return true;
	}
	return false;
}

/* Waits until l is free, without taking it: what its holder did before
 * the release is visible after. */
static inline void cp_spin_wait_unlocked(cp_spinlock *l)
{
	while (__atomic_load_n(&l->locked, __ATOMIC_ACQUIRE))
		cp_cpu_relax();
}

static inline void cp_spin_lock(cp_spinlock *l)
{
	while (cp_unlikely(__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE)))
		cp_spin_wait_unlocked(l);
	cp_locks_held_inc();
}

static inline void cp_spin_unlock(cp_spinlock *l)
{
	__atomic_store_n(&l->locked, 0, __ATOMIC_RELEASE);
	if (cp_unlikely(cp_locks_held_dec()))
		cp_run_deferred_work();
}

#endif
