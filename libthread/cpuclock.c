/* cpuclock.c: CPU-time clocks of user threads, under the POSIX names:
 * clock_gettime and clock_getres with CLOCK_THREAD_CPUTIME_ID, and
 * pthread_getcpuclockid's clocks.  The kernel's thread clocks measure the
 * worker kernel threads, so these are served from the scheduler's own
 * accounting (sched/cpuclock.c); every other clock goes to the C library.
 *
 * A thread's clock id is encoded as the kernel encodes a thread's CPU
 * clock (a negative number ending in binary 110) around a slot number of
 * ours, which maps back to the thread while it lives. */
#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "lt.h"
#include "timespec.h"
#include "rtmem.h"

#define CLOCK_TAG     6             /* the kernel's CPUCLOCK_PERTHREAD | SCHED */
#define SLOTS_MAX     (1u << 20)

typedef int (*clock_fn)(clockid_t, struct timespec *);

static clock_fn real_getres;
static cp_spinlock slots_lock = CP_SPINLOCK_INIT;
static struct lt_thread **slots;     /* slot -> thread; NULL: free */
static uint32_t nslots;

static clock_fn real(clock_fn *fn, const char *name)
{
	clock_fn f = __atomic_load_n(fn, __ATOMIC_ACQUIRE);
	if (cp_unlikely(!f)) {
		f = (clock_fn)cp_c_library_symbol(name);
		__atomic_store_n(fn, f, __ATOMIC_RELEASE);
	}
	return f;
}

static clockid_t encode(uint32_t slot)
{
	return (clockid_t)(((unsigned)~slot << 3) | CLOCK_TAG);
}

/* The thread behind one of our clock ids, or NULL (not ours, or gone). */
static struct lt_thread *decode(clockid_t clock)
{
	if (clock >= 0 || (clock & 7) != CLOCK_TAG)
		return NULL;
	uint32_t slot = ~(uint32_t)((unsigned)clock >> 3) & ((1u << 29) - 1);
	struct lt_thread *t = NULL;
	cp_spin_lock(&slots_lock);
	if (slot < nslots)
		t = slots[slot];
	cp_spin_unlock(&slots_lock);
	return t;
}

/* One of our thread clocks, live or not (a thread clock the kernel would
 * read as some kernel thread's: user threads have no kernel tid) */
static bool thread_clock(clockid_t clock)
{
	return clock < 0 && (clock & 7) == CLOCK_TAG;
}

CP_EXPORT int clock_gettime(clockid_t clock, struct timespec *ts)
{
	if (cp_likely(clock >= 0 && clock != CLOCK_THREAD_CPUTIME_ID))
		return cp_clock_gettime(clock, ts);
	struct lt_thread *t = clock == CLOCK_THREAD_CPUTIME_ID ? lt_self() : decode(clock);
	if (!t && thread_clock(clock)) {
		errno = EINVAL; /* its thread is gone, as NPTL answers */
		return -1;
	}
	if (!t)
		return cp_clock_gettime(clock, ts);
	cp_cpuclock_start();
	*ts = cp_ns_to_ts(cp_thread_cpu_ns(&t->cp));
	return 0;
}

CP_EXPORT int clock_getres(clockid_t clock, struct timespec *res)
{
	if ((clock == CLOCK_THREAD_CPUTIME_ID && lt_self()) || decode(clock)) {
		if (res)
			*res = (struct timespec){ 0, 1 };
		return 0;
	}
	if (thread_clock(clock)) {
		errno = EINVAL;
		return -1;
	}
	return real(&real_getres, "clock_getres")(clock, res);
}

CP_EXPORT int pthread_getcpuclockid(pthread_t h, clockid_t *clock)
{
	struct lt_thread *t = lt_from_handle(h);
	if (!t)
		return ESRCH;
	cp_spin_lock(&slots_lock);
	if (!t->cpuclock_slot) {
		uint32_t s = 0;
		while (s < nslots && slots[s])
			s++;
		if (s == nslots) {
			uint32_t n = nslots ? nslots * 2 : 64;
			struct lt_thread **grown = n <= SLOTS_MAX ? cp_rt_realloc(slots, n * sizeof *slots) : NULL;
			if (!grown) {
				cp_spin_unlock(&slots_lock);
				return ENOMEM;
			}
			for (uint32_t i = nslots; i < n; i++)
				grown[i] = NULL;
			slots = grown;
			nslots = n;
		}
		slots[s] = t;
		t->cpuclock_slot = s + 1;
	}
	*clock = encode(t->cpuclock_slot - 1);
	cp_spin_unlock(&slots_lock);
	cp_cpuclock_start();
	return 0;
}

void lt_cpuclock_thread_gone(struct lt_thread *t)
{
	if (!t->cpuclock_slot)
		return;
	cp_spin_lock(&slots_lock);
	slots[t->cpuclock_slot - 1] = NULL;
	t->cpuclock_slot = 0;
	cp_spin_unlock(&slots_lock);
}
