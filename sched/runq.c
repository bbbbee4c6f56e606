/* runq.c: the run queue's slow paths: stealing, waiting out a thief, and
 * the owner's donations (runq.h has the protocol). */
#include "runq.h"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "compiler.h"

bool cp_runq_steal_ready CP_HIDDEN;

bool cp_runq_steal_init(void)
{
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0)
		cp_runq_steal_ready = true;
	return cp_runq_steal_ready;
}

void cp_runq_sync(struct cp_runq *q)
{
	/* a thief holds `steal` for a system call and a few slots; it is a
	 * kernel thread that may lose its CPU, so back off to the kernel
	 * after a while */
	for (unsigned spins = 0; __atomic_load_n(&q->steal, __ATOMIC_ACQUIRE); spins++) {
		if (spins < 4096)
			cp_cpu_relax();
		else
			syscall(SYS_sched_yield);
	}
	uint32_t gone = __atomic_exchange_n(&q->stolen, 0, __ATOMIC_ACQ_REL);
	if (gone)
		cp_runq_set_len(q, q->len - gone);
}

struct cp_thread *cp_runq_take(struct cp_runq *q, uint32_t n, bool take_pinned,
                               struct cp_thread **last, uint32_t *taken)
{
	struct cp_thread *first = NULL, *end = NULL;
	uint32_t k = 0;
	/* hold off thieves while we read and clear slots */
	for (;;) {
		uint32_t idle = 0;
		if (__atomic_compare_exchange_n(&q->steal, &idle, 1, false, __ATOMIC_ACQUIRE,
		                                __ATOMIC_RELAXED))
			break;
		cp_cpu_relax();
	}
	uint32_t gone = __atomic_exchange_n(&q->stolen, 0, __ATOMIC_ACQ_REL);
	uint32_t len = q->len - gone;
	for (uint32_t i = q->head; i != q->tail && k < n; i++) {
		struct cp_thread **slot = &q->ring[i & (CP_RUNQ_RING - 1)];
		struct cp_thread *c = *slot;
		if (!c || (c->pinned && !take_pinned) || c->on_cpu)
			continue;
		*slot = NULL;
		c->next = NULL;
		if (end)
			end->next = c;
		else
			first = c;
		end = c;
		k++;
	}
	/* the overflow list, behind the ring */
	for (struct cp_thread *c = q->over_head, *prev = NULL, *next; c && k < n; c = next) {
		next = c->next;
		if (c->pinned && !take_pinned) {
			prev = c;
			continue;
		}
		if (prev)
			prev->next = next;
		else
			q->over_head = next;
		if (q->over_tail == c)
			q->over_tail = prev;
		q->over_len--;
		c->next = NULL;
		if (end)
			end->next = c;
		else
			first = c;
		end = c;
		k++;
	}
	/* leading holes: pop would skip them anyway */
	while (q->head != q->tail && !q->ring[q->head & (CP_RUNQ_RING - 1)])
		q->head++;
	cp_runq_set_len(q, len - k);
	__atomic_store_n(&q->steal, 0, __ATOMIC_RELEASE);
	cp_runq_refill(q);
	*last = end;
	*taken = k;
	return first;
}

/* Not pinned to its worker, and not the thread that is still running
 * there (a yield queues the running thread before it switches away). */
static inline bool movable(struct cp_thread *c)
{
	return !__atomic_load_n(&c->on_cpu, __ATOMIC_ACQUIRE) &&
	       !__atomic_load_n(&c->pinned, __ATOMIC_RELAXED);
}

uint32_t cp_runq_steal(struct cp_runq *q, const volatile uint32_t *owner_in_sched,
                       bool take_lone, struct cp_thread **first, struct cp_thread **last)
{
	uint32_t idle = 0;
	if (!__atomic_compare_exchange_n(&q->steal, &idle, 1, false, __ATOMIC_ACQUIRE,
	                                 __ATOMIC_RELAXED))
		return 0;
	/* from here on every pop the owner starts waits for us; after the
	 * barrier we see all it did before */
	syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
	/* an owner inside the scheduler may be claiming the head slot: a pop
	 * that began before the barrier.  in_sched is read first: the owner
	 * stores head before it clears in_sched, so a 0 seen here comes with
	 * the head of any pop that preceded it */
	bool owner_busy = __atomic_load_n(owner_in_sched, __ATOMIC_ACQUIRE) != 0;
	uint32_t head = __atomic_load_n(&q->head, __ATOMIC_ACQUIRE);
	uint32_t tail = __atomic_load_n(&q->tail, __ATOMIC_ACQUIRE);
	if (owner_busy)
		head++;
	uint32_t avail = 0;
	for (uint32_t i = head; (int32_t)(tail - i) > 0; i++) {
		struct cp_thread *c = __atomic_load_n(&q->ring[i & (CP_RUNQ_RING - 1)], __ATOMIC_RELAXED);
		if (c && movable(c))
			avail++;
	}
	uint32_t want = avail - avail / 2; /* half, rounded up */
	if (avail == 1 && !take_lone)
		want = 0;
	struct cp_thread *f = NULL, *e = NULL;
	uint32_t k = 0;
	for (uint32_t i = head; (int32_t)(tail - i) > 0 && k < want; i++) {
		struct cp_thread **slot = &q->ring[i & (CP_RUNQ_RING - 1)];
		struct cp_thread *c = __atomic_load_n(slot, __ATOMIC_RELAXED);
		if (!c || !movable(c))
			continue;
		__atomic_store_n(slot, NULL, __ATOMIC_RELAXED);
		c->next = NULL;
		if (e)
			e->next = c;
		else
			f = c;
		e = c;
		k++;
	}
	if (k)
		__atomic_add_fetch(&q->stolen, k, __ATOMIC_RELAXED);
	__atomic_store_n(&q->steal, 0, __ATOMIC_RELEASE);
	*first = f;
	*last = e;
	return k;
}
