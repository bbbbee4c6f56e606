/* attr.c: thread attributes — every pthread_attr_* call, its error
 * returns, and that a thread created with an attribute object really
 * gets what it asked for (read back with pthread_getattr_np). */
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "caprice.h"
#include "tcase.h"

static void *where_am_i(void *arg)
{
	volatile char here = 0;
	*(volatile char **)arg = (volatile char *)&here;
	return (void *)(uintptr_t)here;
}

static void *get_own_attr(void *arg)
{
	return (void *)(long)pthread_getattr_np(pthread_self(), arg);
}

TCASE(init_defaults)
{
	pthread_attr_t a;
	CHECK_OK(pthread_attr_init(&a));
	int v;
	CHECK_OK(pthread_attr_getdetachstate(&a, &v));
	CHECK_EQ(v, PTHREAD_CREATE_JOINABLE);
	CHECK_OK(pthread_attr_getschedpolicy(&a, &v));
	CHECK_EQ(v, SCHED_OTHER);
	CHECK_OK(pthread_attr_getinheritsched(&a, &v));
	CHECK_EQ(v, PTHREAD_INHERIT_SCHED);
	CHECK_OK(pthread_attr_getscope(&a, &v));
	CHECK_EQ(v, PTHREAD_SCOPE_SYSTEM);
	struct sched_param p = { .sched_priority = 99 };
	CHECK_OK(pthread_attr_getschedparam(&a, &p));
	CHECK_EQ(p.sched_priority, 0);
	size_t s;
	CHECK_OK(pthread_attr_getstacksize(&a, &s));
	CHECK(s >= (size_t)PTHREAD_STACK_MIN);
	CHECK_OK(pthread_attr_getguardsize(&a, &s));
	CHECK(s > 0);
	void *addr = (void *)1;
	CHECK_OK(pthread_attr_getstack(&a, &addr, &s));
	CHECK(addr == NULL);
	CHECK_OK(pthread_attr_destroy(&a));
	/* destroy then init again is allowed */
	CHECK_OK(pthread_attr_init(&a));
	CHECK_OK(pthread_attr_destroy(&a));
}

TCASE(detachstate)
{
	pthread_attr_t a;
	CHECK_OK(pthread_attr_init(&a));
	int v;
	CHECK_OK(pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED));
	CHECK_OK(pthread_attr_getdetachstate(&a, &v));
	CHECK_EQ(v, PTHREAD_CREATE_DETACHED);
	CHECK_EQ(pthread_attr_setdetachstate(&a, 12345), EINVAL);
	CHECK_EQ(pthread_attr_setdetachstate(&a, -1), EINVAL);
	CHECK_OK(pthread_attr_getdetachstate(&a, &v));
	CHECK_EQ(v, PTHREAD_CREATE_DETACHED); /* unchanged by the errors */
	CHECK_OK(pthread_attr_setdetachstate(&a, PTHREAD_CREATE_JOINABLE));
	CHECK_OK(pthread_attr_getdetachstate(&a, &v));
	CHECK_EQ(v, PTHREAD_CREATE_JOINABLE);
	pthread_attr_destroy(&a);
}

static pthread_mutex_t dm = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t dc = PTHREAD_COND_INITIALIZER;
static int detached_ran;
static int detached_state_seen = -1;

static void *detached_body(void *arg)
{
	(void)arg;
	pthread_attr_t a;
	int st = -1;
	if (pthread_getattr_np(pthread_self(), &a) == 0)
		pthread_attr_getdetachstate(&a, &st);
	pthread_mutex_lock(&dm);
	detached_state_seen = st;
	detached_ran = 1;
	pthread_cond_signal(&dc);
	pthread_mutex_unlock(&dm);
	return NULL;
}

/* A thread created detached runs, reports itself detached, and cannot be
 * joined. */
TCASE(create_detached)
{
	pthread_attr_t a;
	CHECK_OK(pthread_attr_init(&a));
	CHECK_OK(pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED));
	pthread_t t;
	pthread_mutex_lock(&dm); /* hold it: t cannot finish before we look */
	CHECK_OK(pthread_create(&t, &a, detached_body, NULL));
	CHECK_EQ(pthread_join(t, NULL), EINVAL);
	CHECK_EQ(pthread_detach(t), EINVAL);
	struct timespec dl = tc_abs_ms(CLOCK_REALTIME, 5000);
	while (!detached_ran)
		CHECK_OK(pthread_cond_timedwait(&dc, &dm, &dl));
	pthread_mutex_unlock(&dm);
	CHECK_EQ(detached_state_seen, PTHREAD_CREATE_DETACHED);
	pthread_attr_destroy(&a);
}

TCASE(stacksize)
{
	pthread_attr_t a;
	CHECK_OK(pthread_attr_init(&a));
	size_t s;
	CHECK_OK(pthread_attr_setstacksize(&a, PTHREAD_STACK_MIN));
	CHECK_OK(pthread_attr_getstacksize(&a, &s));
	CHECK_EQ(s, PTHREAD_STACK_MIN);
	CHECK_OK(pthread_attr_setstacksize(&a, 1 << 20));
	CHECK_OK(pthread_attr_getstacksize(&a, &s));
	CHECK_EQ(s, 1 << 20);
	CHECK_EQ(pthread_attr_setstacksize(&a, PTHREAD_STACK_MIN - 1), EINVAL);
	CHECK_EQ(pthread_attr_setstacksize(&a, 0), EINVAL);
	CHECK_OK(pthread_attr_getstacksize(&a, &s));
	CHECK_EQ(s, 1 << 20); /* unchanged */
	pthread_attr_destroy(&a);
}

/* Threads get the stack size they ask for, and can use nearly all of it. */
static void *use_stack(void *arg)
{
	size_t want = (size_t)arg;
	volatile char *buf = __builtin_alloca(want);
	for (size_t i = 0; i < want; i += 1024)
		buf[i] = (char)i;
	buf[want - 1] = 1;
	return (void *)(uintptr_t)buf[want - 1];
}

TCASE(create_with_stacksize)
{
	size_t sizes[] = { PTHREAD_STACK_MIN, 100 * 1024, 1 << 20, 8 << 20 };
	for (unsigned i = 0; i < sizeof sizes / sizeof *sizes; i++) {
		pthread_attr_t a, got;
		CHECK_OK(pthread_attr_init(&a));
		CHECK_OK(pthread_attr_setstacksize(&a, sizes[i]));
		pthread_t t;
		void *r;
		CHECK_OK(pthread_create(&t, &a, get_own_attr, &got));
		CHECK_OK(pthread_join(t, &r));
		CHECK_EQ((long)r, 0);
		size_t s;
		CHECK_OK(pthread_attr_getstacksize(&got, &s));
		CHECK(s >= sizes[i]);
		CHECK(s < sizes[i] + (size_t)sysconf(_SC_PAGESIZE));
		/* most of it is usable: all but 8 KiB (the record and frames) */
		CHECK_OK(pthread_create(&t, &a, use_stack, (void *)(sizes[i] - 8192)));
		CHECK_OK(pthread_join(t, &r));
		CHECK_EQ((long)r, 1);
		pthread_attr_destroy(&a);
		pthread_attr_destroy(&got);
	}
}

TCASE(setstack_user_memory)
{
	const size_t size = 256 * 1024;
	char *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(mem != MAP_FAILED);
	pthread_attr_t a;
	CHECK_OK(pthread_attr_init(&a));
	CHECK_OK(pthread_attr_setstack(&a, mem, size));
	void *addr;
	size_t s;
	CHECK_OK(pthread_attr_getstack(&a, &addr, &s));
	CHECK(addr == mem);
	CHECK_EQ(s, size);
	CHECK_OK(pthread_attr_getstacksize(&a, &s));
	CHECK_EQ(s, size);

	/* the thread runs on our memory */
	volatile char *seen = NULL;
	pthread_t t;
	CHECK_OK(pthread_create(&t, &a, where_am_i, &seen));
	CHECK_OK(pthread_join(t, NULL));
	CHECK((char *)seen >= mem && (char *)seen < mem + size);

	/* and getattr_np says so */
	pthread_attr_t got;
	void *r;
	CHECK_OK(pthread_create(&t, &a, get_own_attr, &got));
	CHECK_OK(pthread_join(t, &r));
	CHECK_EQ((long)r, 0);
	CHECK_OK(pthread_attr_getstack(&got, &addr, &s));
	CHECK(addr == mem);
	CHECK_EQ(s, size);

	/* the memory stays ours after the join: still mapped and writable */
	mem[0] = 1;
	mem[size - 1] = 1;
	CHECK(munmap(mem, size) == 0);

	CHECK_EQ(pthread_attr_setstack(&a, mem, PTHREAD_STACK_MIN - 1), EINVAL);
	pthread_attr_destroy(&a);
}

TCASE(guardsize)
{
	pthread_attr_t a;
	CHECK_OK(pthread_attr_init(&a));
	size_t g;
	CHECK_OK(pthread_attr_getguardsize(&a, &g));
	CHECK_EQ(g, (size_t)sysconf(_SC_PAGESIZE));
	CHECK_OK(pthread_attr_setguardsize(&a, 65536));
	CHECK_OK(pthread_attr_getguardsize(&a, &g));
	CHECK_EQ(g, 65536);
	CHECK_OK(pthread_attr_setguardsize(&a, 0)); /* no guard at all is allowed */
	CHECK_OK(pthread_attr_getguardsize(&a, &g));
	CHECK_EQ(g, 0);
	pthread_attr_destroy(&a);
}

TCASE(create_with_guardsize)
{
	size_t guards[] = { 0, 4096, 65536, 1 << 20 };
	for (unsigned i = 0; i < sizeof guards / sizeof *guards; i++) {
		pthread_attr_t a, got;
		CHECK_OK(pthread_attr_init(&a));
		CHECK_OK(pthread_attr_setguardsize(&a, guards[i]));
		pthread_t t;
		void *r;
		CHECK_OK(pthread_create(&t, &a, get_own_attr, &got));
		CHECK_OK(pthread_join(t, &r));
		CHECK_EQ((long)r, 0);
		size_t g;
		CHECK_OK(pthread_attr_getguardsize(&got, &g));
		CHECK_EQ(g, guards[i]);
		pthread_attr_destroy(&a);
		pthread_attr_destroy(&got);
	}
}

TCASE(schedpolicy_and_param)
{
	pthread_attr_t a;
	CHECK_OK(pthread_attr_init(&a));
	int pol;
	struct sched_param p;
	/* SCHED_OTHER has priority 0 only */
	p.sched_priority = 0;
	CHECK_OK(pthread_attr_setschedparam(&a, &p));
	p.sched_priority = 1;
	CHECK_EQ(pthread_attr_setschedparam(&a, &p), EINVAL);
	CHECK_OK(pthread_attr_setschedpolicy(&a, SCHED_FIFO));
	CHECK_OK(pthread_attr_getschedpolicy(&a, &pol));
	CHECK_EQ(pol, SCHED_FIFO);
	p.sched_priority = sched_get_priority_max(SCHED_FIFO);
	CHECK_OK(pthread_attr_setschedparam(&a, &p));
	p.sched_priority = sched_get_priority_max(SCHED_FIFO) + 1;
	CHECK_EQ(pthread_attr_setschedparam(&a, &p), EINVAL);
	p.sched_priority = sched_get_priority_min(SCHED_FIFO) - 1;
	CHECK_EQ(pthread_attr_setschedparam(&a, &p), EINVAL);
	p.sched_priority = -1;
	CHECK_OK(pthread_attr_getschedparam(&a, &p));
	CHECK_EQ(p.sched_priority, sched_get_priority_max(SCHED_FIFO));
	CHECK_OK(pthread_attr_setschedpolicy(&a, SCHED_RR));
	CHECK_OK(pthread_attr_getschedpolicy(&a, &pol));
	CHECK_EQ(pol, SCHED_RR);
	CHECK_EQ(pthread_attr_setschedpolicy(&a, 12345), EINVAL);
	CHECK_EQ(pthread_attr_setschedpolicy(&a, -1), EINVAL);
	CHECK_OK(pthread_attr_getschedpolicy(&a, &pol));
	CHECK_EQ(pol, SCHED_RR);
	CHECK_OK(pthread_attr_setschedpolicy(&a, SCHED_OTHER));
	pthread_attr_destroy(&a);
}

TCASE(inheritsched)
{
	pthread_attr_t a;
	CHECK_OK(pthread_attr_init(&a));
	int v;
	CHECK_OK(pthread_attr_setinheritsched(&a, PTHREAD_EXPLICIT_SCHED));
	CHECK_OK(pthread_attr_getinheritsched(&a, &v));
	CHECK_EQ(v, PTHREAD_EXPLICIT_SCHED);
	CHECK_EQ(pthread_attr_setinheritsched(&a, 12345), EINVAL);
	CHECK_OK(pthread_attr_getinheritsched(&a, &v));
	CHECK_EQ(v, PTHREAD_EXPLICIT_SCHED);
	CHECK_OK(pthread_attr_setinheritsched(&a, PTHREAD_INHERIT_SCHED));
	CHECK_OK(pthread_attr_getinheritsched(&a, &v));
	CHECK_EQ(v, PTHREAD_INHERIT_SCHED);
	pthread_attr_destroy(&a);
}

/* Explicit scheduling attributes reach the thread; inherited ones come
 * from the creator, not from the attribute object. */
TCASE(create_with_sched_attrs)
{
	pthread_attr_t a;
	CHECK_OK(pthread_attr_init(&a));
	CHECK_OK(pthread_attr_setschedpolicy(&a, SCHED_RR));
	struct sched_param p = { .sched_priority = 7 };
	CHECK_OK(pthread_attr_setschedparam(&a, &p));

	int seen[2] = { -1, -1 };
	pthread_t t;
	void *r;
	/* inherit (the default): the creator's SCHED_OTHER/0 */
	CHECK_OK(pthread_create(&t, &a, tc_report_sched, seen));
	CHECK_OK(pthread_join(t, &r));
	CHECK_EQ((long)r, 0);
	CHECK_EQ(seen[0], SCHED_OTHER);
	CHECK_EQ(seen[1], 0);

	CHECK_OK(pthread_attr_setinheritsched(&a, PTHREAD_EXPLICIT_SCHED));
	CHECK_OK(pthread_create(&t, &a, tc_report_sched, seen));
	CHECK_OK(pthread_join(t, &r));
	CHECK_EQ((long)r, 0);
	CHECK_EQ(seen[0], SCHED_RR);
	CHECK_EQ(seen[1], 7);

	/* getattr_np reports them */
	pthread_attr_t got;
	CHECK_OK(pthread_create(&t, &a, get_own_attr, &got));
	CHECK_OK(pthread_join(t, &r));
	CHECK_EQ((long)r, 0);
	int pol;
	CHECK_OK(pthread_attr_getschedpolicy(&got, &pol));
	CHECK_EQ(pol, SCHED_RR);
	CHECK_OK(pthread_attr_getschedparam(&got, &p));
	CHECK_EQ(p.sched_priority, 7);
	pthread_attr_destroy(&a);
	pthread_attr_destroy(&got);
}

TCASE(scope)
{
	pthread_attr_t a;
	CHECK_OK(pthread_attr_init(&a));
	int v;
	CHECK_OK(pthread_attr_setscope(&a, PTHREAD_SCOPE_SYSTEM));
	CHECK_OK(pthread_attr_getscope(&a, &v));
	CHECK_EQ(v, PTHREAD_SCOPE_SYSTEM);
	CHECK_EQ(pthread_attr_setscope(&a, PTHREAD_SCOPE_PROCESS), ENOTSUP);
	CHECK_EQ(pthread_attr_setscope(&a, 12345), EINVAL);
	CHECK_OK(pthread_attr_getscope(&a, &v));
	CHECK_EQ(v, PTHREAD_SCOPE_SYSTEM);
	pthread_attr_destroy(&a);
}

/* One attribute object serves many creations, and changing it after a
 * create does not change the thread already made. */
TCASE(attr_reused_and_independent)
{
	pthread_attr_t a, got;
	CHECK_OK(pthread_attr_init(&a));
	CHECK_OK(pthread_attr_setstacksize(&a, 512 * 1024));
	pthread_t t[16];
	/* each thread writes its answer here: it must outlive the loop */
	volatile char *where[16] = { NULL };
	for (int i = 0; i < 16; i++)
		CHECK_OK(pthread_create(&t[i], &a, where_am_i, &where[i]));
	CHECK_OK(pthread_attr_setstacksize(&a, 128 * 1024));
	for (int i = 0; i < 16; i++)
		CHECK_OK(pthread_join(t[i], NULL));
	void *r;
	CHECK_OK(pthread_create(&t[0], &a, get_own_attr, &got));
	CHECK_OK(pthread_join(t[0], &r));
	CHECK_EQ((long)r, 0);
	size_t s;
	CHECK_OK(pthread_attr_getstacksize(&got, &s));
	CHECK_EQ(s, 128 * 1024);
	pthread_attr_destroy(&a);
	pthread_attr_destroy(&got);
}

TCASE(default_attr_np)
{
	pthread_attr_t d, set, got;
	CHECK_OK(pthread_getattr_default_np(&d));
	size_t s0, g0;
	CHECK_OK(pthread_attr_getstacksize(&d, &s0));
	CHECK_OK(pthread_attr_getguardsize(&d, &g0));
	CHECK(s0 >= (size_t)PTHREAD_STACK_MIN);

	CHECK_OK(pthread_attr_init(&set));
	CHECK_OK(pthread_attr_setstacksize(&set, 192 * 1024));
	CHECK_OK(pthread_attr_setguardsize(&set, 8192));
	CHECK_OK(pthread_setattr_default_np(&set));
	CHECK_OK(pthread_getattr_default_np(&d));
	size_t s, g;
	CHECK_OK(pthread_attr_getstacksize(&d, &s));
	CHECK_OK(pthread_attr_getguardsize(&d, &g));
	CHECK_EQ(s, 192 * 1024);
	CHECK_EQ(g, 8192);

	/* a thread created with NULL attributes gets the new defaults */
	pthread_t t;
	void *r;
	CHECK_OK(pthread_create(&t, NULL, get_own_attr, &got));
	CHECK_OK(pthread_join(t, &r));
	CHECK_EQ((long)r, 0);
	CHECK_OK(pthread_attr_getstacksize(&got, &s));
	CHECK_OK(pthread_attr_getguardsize(&got, &g));
	CHECK_EQ(s, 192 * 1024);
	CHECK_EQ(g, 8192);

	/* a stack address cannot be a default */
	static char stk[256 * 1024];
	pthread_attr_t bad;
	CHECK_OK(pthread_attr_init(&bad));
	CHECK_OK(pthread_attr_setstack(&bad, stk, sizeof stk));
	CHECK_EQ(pthread_setattr_default_np(&bad), EINVAL);
	CHECK_OK(pthread_getattr_default_np(&d));
	CHECK_OK(pthread_attr_getstacksize(&d, &s));
	CHECK_EQ(s, 192 * 1024);

	/* back to what it was */
	CHECK_OK(pthread_attr_setstacksize(&set, s0));
	CHECK_OK(pthread_attr_setguardsize(&set, g0));
	CHECK_OK(pthread_setattr_default_np(&set));
	CHECK_OK(pthread_create(&t, NULL, get_own_attr, &got));
	CHECK_OK(pthread_join(t, &r));
	CHECK_OK(pthread_attr_getstacksize(&got, &s));
	CHECK_EQ(s, s0);
}

/* The smallest stack the attributes accept is enough to run a thread. */
TCASE(create_with_min_user_stack)
{
	const size_t size = PTHREAD_STACK_MIN;
	char *stk = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(stk != MAP_FAILED);
	pthread_attr_t a;
	CHECK_OK(pthread_attr_init(&a));
	CHECK_OK(pthread_attr_setstack(&a, stk, size));
	pthread_t t;
	volatile char *seen = NULL;
	CHECK_OK(pthread_create(&t, &a, where_am_i, &seen));
	CHECK_OK(pthread_join(t, NULL));
	CHECK((char *)seen >= stk && (char *)seen < stk + size);
	munmap(stk, size);
	pthread_attr_destroy(&a);
}

TCASE(affinity_and_sigmask_np)
{
	pthread_attr_t a;
	CHECK_OK(pthread_attr_init(&a));
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(0, &set);
	CHECK_OK(pthread_attr_setaffinity_np(&a, sizeof set, &set));
	cpu_set_t got;
	CPU_ZERO(&got);
	CHECK_OK(pthread_attr_getaffinity_np(&a, sizeof got, &got));
	CHECK(CPU_COUNT(&got) >= 1);
	sigset_t ss;
	sigemptyset(&ss);
	sigaddset(&ss, SIGUSR1);
	CHECK_OK(pthread_attr_setsigmask_np(&a, &ss));
	int e = pthread_attr_getsigmask_np(&a, &ss);
	CHECK(e == 0 || e == PTHREAD_ATTR_NO_SIGMASK_NP);
	pthread_t t;
	volatile char *seen = NULL;
	CHECK_OK(pthread_create(&t, &a, where_am_i, &seen));
	CHECK_OK(pthread_join(t, NULL));
	CHECK(seen != NULL);
	pthread_attr_destroy(&a);
}

/* Bigger guard: an overflow into it is caught rather than landing in a
 * neighbour; here we just check the guard is really there by reading the
 * thread's stack bounds and that its usable size is unaffected. */
TCASE(guard_does_not_eat_stack)
{
	pthread_attr_t a, got;
	CHECK_OK(pthread_attr_init(&a));
	CHECK_OK(pthread_attr_setstacksize(&a, 128 * 1024));
	CHECK_OK(pthread_attr_setguardsize(&a, 64 * 1024));
	pthread_t t;
	void *r;
	CHECK_OK(pthread_create(&t, &a, get_own_attr, &got));
	CHECK_OK(pthread_join(t, &r));
	CHECK_EQ((long)r, 0);
	size_t s;
	CHECK_OK(pthread_attr_getstacksize(&got, &s));
	CHECK_EQ(s, 128 * 1024);
	CHECK_OK(pthread_create(&t, &a, use_stack, (void *)(128 * 1024 - 8192)));
	CHECK_OK(pthread_join(t, &r));
	CHECK_EQ((long)r, 1);
	pthread_attr_destroy(&a);
	pthread_attr_destroy(&got);
}

/* A thread given both a stack size and a guard size gets exactly that
 * stack, with the guard right below it, as on NPTL: a write just past the
 * size faults (the pool's bigger stacks answer only requests that leave
 * the guard at its default). */
static void *write_below_stack(void *arg)
{
	(void)arg;
	pthread_attr_t a;
	CHECK_OK(pthread_getattr_np(pthread_self(), &a));
	void *addr;
	size_t size, guard;
	CHECK_OK(pthread_attr_getstack(&a, &addr, &size));
	CHECK_OK(pthread_attr_getguardsize(&a, &guard));
	pthread_attr_destroy(&a);
	printf("stack %p, %zu bytes, guard %zu\n", addr, size, guard);
	fflush(stdout);
	CHECK_EQ(size, 64 * 1024);
	CHECK_EQ(guard, 8192);
	volatile char *below = (char *)addr - 100;
	*below = 1; /* the guard: the runtime names the overflow and stops */
	return NULL;
}

TCASE(exact_stack_when_size_and_guard_are_set)
{
	static const char *const said[] = { "stack overflow in thread", NULL };
	if (tc_rerun_must_die(NULL, said))
		return;
	pthread_attr_t a;
	CHECK_OK(pthread_attr_init(&a));
	CHECK_OK(pthread_attr_setstacksize(&a, 64 * 1024));
	CHECK_OK(pthread_attr_setguardsize(&a, 8192));
	pthread_t t;
	CHECK_OK(pthread_create(&t, &a, write_below_stack, NULL));
	pthread_join(t, NULL);
	TFAIL("a write below the stack's guard did not fault");
}
