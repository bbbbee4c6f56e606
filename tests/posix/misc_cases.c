/* misc_cases.c: asynchronous cancellation, thread CPU-time clocks,
 * stacks as the attribute asks, and clock_nanosleep's errors, from
 * POSIX's pthread_setcanceltype, pthread_getcpuclockid, clock_getres,
 * pthread_attr_setstacksize/setguardsize and clock_nanosleep pages
 * (issue 10, items 4, 5 and 6). */
#include "pcase.h"

#include <sched.h>
#include <sys/wait.h>

/* ---- asynchronous cancellation --------------------------------------- */

static volatile int spinning, cleanup_ran;
static volatile unsigned long spins;

static void on_cleanup(void *arg)
{
	(void)arg;
	cleanup_ran = 1;
}

static void *async_spinner(void *arg)
{
	(void)arg;
	int old;
	pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, &old);
	pthread_cleanup_push(on_cleanup, NULL);
	spinning = 1;
	for (;;)
		spins++; /* no cancellation point, no call at all */
	pthread_cleanup_pop(0);
	return NULL;
}

/* PTHREAD_CANCEL_ASYNCHRONOUS: "new or pending cancellation requests may
 * be acted upon at any time": a thread in a loop that reaches no
 * cancellation point is cancelled, its cleanup handlers run, and join
 * gives PTHREAD_CANCELED. */
PCASE(cancel_async_pure_loop,
      "cancel=0 join=0 result=PTHREAD_CANCELED cleanup_ran=1\n")
{
	pthread_t t = spawn(async_spinner, NULL);
	for (int i = 0; i < 2000 && !spinning; i++)
		sleep_ms(1);
	sleep_ms(5);
	int c = pthread_cancel(t);
	void *res = NULL;
	struct timespec dl = abs_in_ms(CLOCK_REALTIME, 3000);
	int j = pthread_timedjoin_np(t, &res, &dl);
	if (j != 0) {
		say("cancel=%s join=%s spinner_still_running", en(c), en(j));
		fflush(NULL);
		_exit(0); /* the spinner would keep the process */
	}
	say("cancel=%s join=%s result=%s cleanup_ran=%d", en(c), en(j),
	    res == PTHREAD_CANCELED ? "PTHREAD_CANCELED" : "other", cleanup_ran);
}

/* ---- thread CPU-time clocks ------------------------------------------ */

static sem_t ready, release;

static uint64_t clock_ns(clockid_t c)
{
	struct timespec ts;
	if (clock_gettime(c, &ts) != 0)
		return UINT64_MAX;
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *sleeper(void *arg)
{
	(void)arg;
	sleep_ms(40);
	sem_post(&ready);
	while (sem_wait(&release) != 0)
		;
	return NULL;
}

static volatile uint64_t spinner_self_ns;

static void *spinner(void *arg)
{
	(void)arg;
	uint64_t wall_end = now_ns() + 1000000000u;
	volatile unsigned long x = 0;
	while (clock_ns(CLOCK_THREAD_CPUTIME_ID) < 30000000u && now_ns() < wall_end)
		for (int i = 0; i < 10000; i++)
			x++;
	spinner_self_ns = clock_ns(CLOCK_THREAD_CPUTIME_ID);
	sem_post(&ready);
	while (sem_wait(&release) != 0)
		;
	return NULL;
}

/* CLOCK_THREAD_CPUTIME_ID and pthread_getcpuclockid name "the CPU-time
 * clock of the calling thread" and of another: a thread that slept 40 ms
 * shows well under 10 ms, one that computed until its own clock read 30
 * ms shows at least 25 ms from outside too. */
PCASE(cpuclock_sleeper_and_spinner,
      "getcpuclockid=0 0 sleeper_small=1 spinner_big=1 spinner_self_big=1\n")
{
	MUST(sem_init(&ready, 0, 0) == 0 && sem_init(&release, 0, 0) == 0);
	pthread_t s = spawn(sleeper, NULL), p = spawn(spinner, NULL);
	for (int i = 0; i < 2; i++)
		while (sem_wait(&ready) != 0)
			;
	clockid_t cs, cp;
	int rs = pthread_getcpuclockid(s, &cs), rp = pthread_getcpuclockid(p, &cp);
	uint64_t ns_s = rs == 0 ? clock_ns(cs) : UINT64_MAX;
	uint64_t ns_p = rp == 0 ? clock_ns(cp) : 0;
	sem_post(&release);
	sem_post(&release);
	join(s);
	join(p);
	say("getcpuclockid=%s %s sleeper_small=%d spinner_big=%d spinner_self_big=%d", en(rs),
	    en(rp), ns_s < 10000000u, ns_p >= 25000000u && ns_p != UINT64_MAX,
	    spinner_self_ns >= 25000000u);
}

static void compete(struct link *l, void *arg)
{
	(void)arg;
	link_send(l, 'r');
	uint64_t end = now_ns() + 2000000000u; /* the parent kills it long before */
	volatile unsigned long x = 0;
	while (now_ns() < end)
		for (int i = 0; i < 10000; i++)
			x++;
}

static void *measure_share(void *arg)
{
	double *share = arg;
	uint64_t w0 = now_ns(), c0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
	volatile unsigned long x = 0;
	while (now_ns() - w0 < 60000000u)
		for (int i = 0; i < 10000; i++)
			x++;
	*share = (double)(clock_ns(CLOCK_THREAD_CPUTIME_ID) - c0) / (double)(now_ns() - w0);
	return NULL;
}

/* A thread's CPU-time clock measures "the amount of execution time" of
 * that thread, not the time that passed while it was ready but the
 * processor ran another process: computing for 60 ms on one processor
 * beside another process that computes too, it is charged well under
 * the 60 ms (about half). */
PCASE(cpuclock_excludes_time_preempted,
      "competitor=ready share_below_80pct=1 competitor_end=SIGKILL\n")
{
	cpu_set_t set;
	CPU_ZERO(&set);
	int cpu = sched_getcpu();
	CPU_SET(cpu >= 0 ? cpu : 0, &set);
	MUST(sched_setaffinity(0, sizeof set, &set) == 0);
	struct link l;
	link_init(&l);
	pid_t pid = fork_child(&l, compete, NULL);
	bool ready = link_recv(&l, 5000) == 'r';
	double share = 1;
	join(spawn(measure_share, &share));
	kill(pid, SIGKILL);
	say("competitor=%s share_below_80pct=%d competitor_end=%s", ready ? "ready" : "absent",
	    share < 0.8, wait_child(pid, 5000));
}

/* ---- stacks --------------------------------------------------------- */

#define STACK_S (128u * 1024)
#define GUARD_G (64u * 1024)

struct stack_report {
	size_t size, guard, size_after;
	int r1, r2;
};

static sem_t asked, answered;

static void *report_stack(void *arg)
{
	struct stack_report *r = arg;
	pthread_attr_t a;
	r->r1 = pthread_getattr_np(pthread_self(), &a);
	if (r->r1 == 0) {
		pthread_attr_getstacksize(&a, &r->size);
		pthread_attr_getguardsize(&a, &r->guard);
		pthread_attr_destroy(&a);
	}
	sem_post(&answered);
	while (sem_wait(&asked) != 0)
		;
	r->r2 = pthread_getattr_np(pthread_self(), &a);
	if (r->r2 == 0) {
		pthread_attr_getstacksize(&a, &r->size_after);
		pthread_attr_destroy(&a);
	}
	return NULL;
}

static void sized_attr(pthread_attr_t *a)
{
	MUST0(pthread_attr_init(a));
	MUST0(pthread_attr_setstacksize(a, STACK_S));
	MUST0(pthread_attr_setguardsize(a, GUARD_G));
}

/* pthread_attr_setstacksize: "the minimum stack size (in bytes) they
 * shall use"; pthread_getattr_np (NPTL) reports the thread's actual
 * stack, and its guard as asked; the attribute "can be used to create
 * more than one thread" and changing it after pthread_create does not
 * touch the thread made from it. */
PCASE(stack_size_as_asked,
      "getattr=0 stacksize=131072 guardsize=65536 attr_changed=0 getattr_again=0 "
      "stacksize_after=131072\n")
{
	MUST(sem_init(&asked, 0, 0) == 0 && sem_init(&answered, 0, 0) == 0);
	pthread_attr_t a;
	sized_attr(&a);
	struct stack_report r = { 0 };
	pthread_t t;
	MUST0(pthread_create(&t, &a, report_stack, &r));
	while (sem_wait(&answered) != 0)
		;
	int ch = pthread_attr_setstacksize(&a, 4 * STACK_S);
	sem_post(&asked);
	join(t);
	pthread_attr_destroy(&a);
	say("getattr=%s stacksize=%zu guardsize=%zu attr_changed=%s getattr_again=%s "
	    "stacksize_after=%zu",
	    en(r.r1), r.size, r.guard, en(ch), en(r.r2), r.size_after);
}

#define OVERFLOW_EXIT 42

static void on_segv(int sig)
{
	(void)sig;
	_exit(OVERFLOW_EXIT);
}

static volatile char *volatile target;
static int inside_fd;

/* Writes into its own stack, at half the requested size below here
 * (inside), then a little more than the requested size below (past
 * it, in the guard below the stack).  The exit says which faulted. */
static void *write_past(void *arg)
{
	(void)arg;
	char here;
	target = (volatile char *)((uintptr_t)&here - STACK_S / 2);
	*target = 1;
	if (write(inside_fd, "i", 1) != 1)
		_exit(5);
	target = (volatile char *)((uintptr_t)&here - STACK_S - 1024);
	*target = 1;
	return NULL;
}

static void overflow_child(struct link *l, void *arg)
{
	(void)l;
	(void)arg;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_segv;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
	pthread_attr_t a;
	sized_attr(&a);
	pthread_t t;
	if (pthread_create(&t, &a, write_past, NULL) != 0)
		_exit(4);
	pthread_join(t, NULL);
}

/* The stack is as big as asked and the guard lies right below it ("if a
 * thread overflows into the guard area ... the implementation shall
 * generate a SIGSEGV signal"): a write at half the size from the top is
 * fine, one 1 KiB past the size faults. */
PCASE(stack_overflow_faults,
      "inside=ok overflow=SIGSEGV\n")
{
	int p[2];
	MUST(pipe(p) == 0);
	inside_fd = p[1];
	pid_t pid = fork_child(NULL, overflow_child, NULL);
	close(p[1]);
	char c = 0;
	ssize_t n = read(p[0], &c, 1);
	const char *st = wait_child(pid, 10000);
	say("inside=%s overflow=%s", n == 1 && c == 'i' ? "ok" : "fault",
	    strcmp(st, "exit42") == 0 ? "SIGSEGV" : strcmp(st, "exit0") == 0 ? "none" : st);
	close(p[0]);
}

/* ---- clock_nanosleep ------------------------------------------------- */

/* clock_nanosleep: "[EINVAL] The clock_id argument does not specify a
 * known clock, or specifies the CPU-time clock of the calling thread";
 * "[EINVAL] The rqtp argument specified a nanosecond value less than
 * zero or greater than or equal to 1000 million" (it returns the error,
 * while nanosleep returns -1 and sets errno). */
PCASE(clock_nanosleep_invalid_einval,
      "unknown_clock=EINVAL thread_cputime=EINVAL nsec_1e9=EINVAL nsec_negative=EINVAL "
      "nanosleep_nsec_1e9=-1/EINVAL\n")
{
	struct timespec ok = { 0, 1000 }, big = { 0, 1000000000L }, neg = { 0, -1 };
	int a = clock_nanosleep((clockid_t)12345, 0, &ok, NULL);
	int b = clock_nanosleep(CLOCK_THREAD_CPUTIME_ID, 0, &ok, NULL);
	int c = clock_nanosleep(CLOCK_MONOTONIC, 0, &big, NULL);
	int d = clock_nanosleep(CLOCK_REALTIME, 0, &neg, NULL);
	errno = 0;
	int e = nanosleep(&big, NULL);
	int ee = errno;
	say("unknown_clock=%s thread_cputime=%s nsec_1e9=%s nsec_negative=%s "
	    "nanosleep_nsec_1e9=%d/%s",
	    en(a), en(b), en(c), en(d), e, en(ee));
}

/* ---- fork under RLIMIT_AS -------------------------------------------- */

#include <sys/resource.h>

static long vm_size_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	MUST(f != NULL);
	char line[256];
	long kb = -1;
	while (fgets(line, sizeof line, f))
		if (strncmp(line, "VmSize:", 7) == 0)
			kb = atol(line + 7);
	fclose(f);
	MUST(kb > 0);
	return kb;
}

static void *nothing(void *arg)
{
	return arg;
}

static void limited_child(struct link *l, void *arg)
{
	(void)l;
	int *out = arg;
	pthread_t t;
	out[0] = pthread_create(&t, NULL, nothing, (void *)7);
	void *r = NULL;
	if (out[0] == 0)
		out[1] = pthread_join(t, &r) == 0 && r == (void *)7;
}

/* fork "shall create a new process ... an exact copy of the calling
 * process" under its resource limits: with RLIMIT_AS 16 MiB above what
 * the process maps, the child still runs and makes a thread (its stack,
 * 8 MiB at most by default, fits). */
PCASE(fork_under_rlimit_as,
      "child=exit0 create=0 joined=1\n")
{
	int *out = shared_mem(4096);
	out[0] = -1;
	struct rlimit old, lim;
	MUST(getrlimit(RLIMIT_AS, &old) == 0);
	lim = old;
	lim.rlim_cur = (rlim_t)(vm_size_kb() + 16 * 1024) * 1024;
	MUST(setrlimit(RLIMIT_AS, &lim) == 0);
	pid_t pid = fork_child(NULL, limited_child, out);
	MUST(setrlimit(RLIMIT_AS, &old) == 0);
	const char *st = wait_child(pid, 10000);
	say("child=%s create=%s joined=%d", st, out[0] < 0 ? "none" : en(out[0]), out[1]);
}
