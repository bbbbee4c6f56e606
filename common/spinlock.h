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

static inline bool cp_spin_trylock(cp_spinlock *l)
{
	return __atomic_load_n(&l->locked, __ATOMIC_RELAXED) == 0 &&
	       __atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE) == 0;
}

static inline void cp_spin_lock(cp_spinlock *l)
{
	while (cp_unlikely(__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE)))
		while (__atomic_load_n(&l->locked, __ATOMIC_RELAXED))
			cp_cpu_relax();
}

static inline void cp_spin_unlock(cp_spinlock *l)
{
	__atomic_store_n(&l->locked, 0, __ATOMIC_RELEASE);
}

#endif
