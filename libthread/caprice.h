/* caprice.h: the Caprice extension API, for what pthreads cannot say.
 * Link with -lthread (pkg-config: caprice). */
#ifndef CAPRICE_H
#define CAPRICE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of worker kernel threads (CAPRICE_WORKERS, default: CPUs). */
int caprice_worker_count(void);

/* The worker running the caller, 0..count-1, or -1 on a kernel thread
 * that is not a worker. */
int caprice_worker_index(void);

struct caprice_thread_stats {
	uint64_t id;           /* 1 for main, then in creation order */
	uint64_t switches;     /* times it was switched in */
	size_t stack_size;     /* usable stack bytes */
	size_t guard_size;
	int worker;            /* worker it last ran on */
};
/* 0, or ESRCH for a handle that names no live thread. */
int caprice_thread_stats(pthread_t thread, struct caprice_thread_stats *out);

struct caprice_worker_stats {
	uint64_t switches;     /* context switches into user threads */
	uint64_t parks;        /* times a thread blocked */
	uint64_t wakes_local, wakes_remote;
	uint64_t kicks;        /* sleeping worker woken by another */
	uint64_t steals_in, steals_out;
	uint64_t sleeps;       /* times the worker slept in the kernel */
	uint64_t timers_fired;
	uint32_t runq_len;     /* runnable threads waiting now */
	uint64_t io_ops;       /* I/O operations submitted to its ring */
	uint64_t enters;       /* io_uring_enter system calls it made */
	uint64_t pokes;        /* times the monitor signalled it (held too long) */
	uint64_t preempts;     /* threads asked to yield at a safe point */
	uint64_t yields;       /* yields: sched_yield, spinning locks, preempts */
	uint64_t tls_loads;    /* FS base loads, one system call each (TLS per
	                          user thread) */
	uint64_t covers;       /* a spare worker: times it took over the threads
	                          of a worker blocked in the kernel */
	uint64_t steals_direct; /* steals made from a busy worker's queue
	                           without its help (part of steals_in) */
	uint64_t big_chunks;   /* calls of threads on linked stacks that ran on
	                          a big chunk (into code without split-stack
	                          prologues) */
	uint64_t held;         /* CAPRICE_SCHED=2d: wakeups held back while a
	                          resource (descriptors, memory) ran short */
	uint64_t deferred;     /* CAPRICE_SCHED=2d: wakeups queued behind shorter
	                          work */
	uint32_t held_now;     /* threads held back now */
};
/* 0, or EINVAL for an index out of range. */
/* Spare workers (CAPRICE_SPARE_WORKERS) follow the regular ones: their
 * indexes run from caprice_worker_count() to that plus
 * caprice_spare_worker_count() - 1. */
int caprice_worker_stats(int worker, struct caprice_worker_stats *out);
int caprice_spare_worker_count(void);

/* The calling thread's stack.  A thread whose start routine was compiled
 * with -fsplit-stack runs on a linked stack, chunks that grow on demand
 * (pkg-config --cflags --libs caprice gives the flags): then linked is 1,
 * bytes what its chunks hold now, big_bytes the part of that in big
 * chunks, on which calls into code without split-stack prologues run,
 * and cap what they may hold in all
 * (pthread_attr_setstacksize; 8 MiB by default).  Otherwise linked is 0
 * and bytes = cap = its contiguous stack's size (main: its kernel
 * stack's).  chunks_mapped counts the small chunks the process ever carved
 * from memory, which stays put while threads reuse pooled ones. */
struct caprice_stack_info {
	int linked;
	size_t bytes, big_bytes, cap;
	uint64_t chunks_mapped;
	uint64_t big_calls;    /* calls the thread ran on a big chunk (calls into
	                          code without split-stack prologues) */
};
int caprice_stack_info(struct caprice_stack_info *out);

#ifdef __cplusplus
}
#endif
#endif
