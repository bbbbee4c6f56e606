/* worker.h: a worker, the per-core kernel thread that runs user threads.
 * Internal to sched/: everything above goes through scheduler.h. */
#ifndef CAPRICE_WORKER_H
#define CAPRICE_WORKER_H

#include <pthread.h>
#include <sys/types.h>

#include "ring.h"
#include "runq.h"
#include "scheduler.h"
#include "timer.h"

struct cp_worker {
	/* ---- touched only by this worker ---- */
	struct cp_thread *current;      /* running user thread, or &idle */
	struct cp_runq rq;
	volatile uint32_t in_sched;     /* 1 while rq may be mid-update: a
	                                   steal poke then leaves it alone */
	int index;
	int *errno_loc;                 /* this kernel thread's errno */
	uint32_t poll_countdown;        /* switches until the next clock/ring look */
	uint32_t poll_deferred;         /* that look waits until after a switch */
	uint32_t sigmask_gen;           /* program signal mask applied here */
	cp_spinlock *unlock_after;      /* released once the switch is done */
	struct cp_thread *dead;         /* finished thread awaiting on_dead */
	void (*on_dead)(struct cp_thread *);
	struct cp_thread *switched_from;/* ASan needs the stack we left */
	struct cp_stack_pool stacks;
	struct cp_thread idle;          /* the worker's own loop, as a context */
	struct cp_worker *victim;       /* where our steal request is pending */
	uint64_t victim_beat;           /* its heartbeat when we asked */
	uint64_t asked_at;
	struct cp_worker_stats st;
	uint64_t spin_ns;               /* idle polling window, adaptive */
	uint64_t next_id, id_limit;     /* thread ids handed out in blocks */

	/* ---- timers: the owner fires them, anyone may cancel ---- */
	cp_spinlock timer_lock;
	struct cp_timer_heap timers;
	uint64_t next_deadline;         /* relaxed copy of the heap minimum */

	/* ---- shared with other workers, on their own lines ---- */
	_Alignas(CP_CACHELINE) struct cp_thread *inbox; /* wakeups from elsewhere */
	uint32_t sleeping;              /* 1 while asleep in the ring */
	struct cp_worker *steal_req;    /* an idle worker asking for threads */
	uint64_t heartbeat;             /* switches, published for thieves */
	struct cp_io_op *cancels;       /* I/O cancels asked by other threads */
	pid_t tid;

	_Alignas(CP_CACHELINE) struct cp_ring ring;
	pthread_t kthread;
};

/* The worker of the calling kernel thread.  Read through asm so that the
 * compiler never reuses a value from before a context switch: a user
 * thread may resume on a different worker. */
extern __thread struct cp_worker *cp_tls_worker
	__attribute__((tls_model("initial-exec"))) CP_HIDDEN;

static inline struct cp_worker *cp_worker_self(void)
{
	struct cp_worker *w;
	CP_TLS_LOAD_PTR(cp_tls_worker, w);
	return w;
}

struct cp_worker *cp_worker_get(int idx);
/* Parks the current thread; `lk` (may be NULL) is released after the
 * switch, when the thread can safely be woken elsewhere. */
void cp_park(cp_spinlock *lk);

/* Wakes w if it sleeps in its ring (after new work was handed to it). */
void cp_worker_kick(struct cp_worker *w);
/* Submits the cancellations other threads queued on w (io.c). */
struct cp_io_op;
void cp_io_run_cancels(struct cp_worker *w);

/* Timers, on the calling worker's heap (cp_timer_add) or on whichever
 * heap holds t (cp_timer_cancel; a no-op if it already fired). */
int cp_timer_add(struct cp_worker *w, struct cp_timer *t);
void cp_timer_cancel(struct cp_timer *t);

#endif
