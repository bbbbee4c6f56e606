/* location.c: where threads block, the blocking graph of Capriccio's
 * location-aware ("2D") scheduling.  With CAPRICE_SCHED=2d, every park
 * records where in the program the thread blocked: a hash of the first
 * return addresses above the runtime (libgcc's unwinder, which works
 * from CFI, so in unmodified binaries without frame pointers too).  The
 * unwinder walks the program's frames only the first time a call site
 * (the first return address above the runtime, found through the
 * runtime's own frame pointers) parks; later parks there reuse its hash,
 * so callers of one call site that differ further up share a node after
 * the first.  Locations are the graph's nodes; an edge joins two consecutive blocking
 * points of one thread and keeps how often it was taken, an EWMA of the
 * CPU time run between them (cpuclock.c's accounting), one of the
 * descriptors the thread opened minus those it closed between them, and
 * one of the bytes it took from malloc minus those it gave back (the
 * malloc family's count, libthread/malloc.c).  Each
 * worker keeps its own bounded graph, with no lock; CAPRICE_GRAPH=FILE
 * writes them merged, as a Graphviz digraph, when the process exits and
 * whenever it gets SIGUSR2 (the monitor writes it: a snapshot read while
 * the workers go on, so its counts may be a moment apart).
 *
 * The nodes also keep what the policies (policy.c) predict from: the CPU
 * time, descriptors and bytes of the run that follows a park there.
 * With CAPRICE_SCHED=fifo, the default, a park pays one load and branch
 * for all of it. */
#include "worker.h"

#include <dlfcn.h>
#include <errno.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <unwind.h>

#include "compiler.h"
#include "env.h"
#include "rtmem.h"

#define FRAMES      4      /* return addresses above the runtime, hashed */
#define NODES       1024   /* per worker; a full table drops new nodes */
#define EDGES       4096
#define EWMA_SHIFT  3      /* each new sample weighs 1/8 */


struct edge {
	uint64_t from, to;     /* 0 from: free */
	uint64_t count;
	uint64_t ewma_ns;      /* CPU time between the two blocking points */
	int64_t ewma_fds;      /* descriptors opened minus closed, x FDS_ONE */
	int64_t ewma_bytes;    /* bytes taken from malloc minus given back */
};
#define FDS_ONE CP_FDS_ONE

/* a call site's location, so that only a site's first park unwinds */
struct site {
	void *site;
	uint64_t key;
};
#define SITES 256

struct cp_blocking_graph {
	struct cp_loc_node nodes[NODES];
	struct edge edges[EDGES];
	struct site sites[SITES];
	uint64_t dropped;
};

bool cp_sched_2d CP_HIDDEN;
static uintptr_t own_lo, own_hi;      /* this library's text: frames to skip */
static const char *graph_path;

static int find_own_text(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	uintptr_t probe = (uintptr_t)arg;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
			continue;
		uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
		if (probe >= lo && probe < hi) {
			own_lo = lo;
			own_hi = hi;
			return 1;
		}
	}
	return 0;
}

/* The return addresses of the calling frames, innermost first, through
 * the C++ exception unwinder's walk (libgcc's _Unwind_Backtrace, which
 * reads the CFI every binary carries, and finds a module's unwind table
 * through glibc's lock-free _dl_find_object).  Not libunwind: it blocks
 * all signals with sigprocmask around its lookups, which in a program
 * whose signal mask is this library's is the process's mask, so two
 * workers' walks interleaved left every signal blocked for good (SIGTERM
 * never reached Knot under CAPRICE_SCHED=2d); it takes the program's
 * mutexes (this library's, which must not park inside the scheduler);
 * and its unw_backtrace cache is freed by a user thread's key destructor
 * while a worker's __thread still points to it. */
struct walk {
	void **ips;
	int n, max;
};

static _Unwind_Reason_Code walk_one(struct _Unwind_Context *ctx, void *arg)
{
	struct walk *w = arg;
	uintptr_t ip = _Unwind_GetIP(ctx);
	if (!ip)
		return _URC_END_OF_STACK;
	w->ips[w->n++] = (void *)ip;
	return w->n < w->max ? _URC_NO_REASON : _URC_END_OF_STACK;
}

static int walk_frames(void **ips, int max)
{
	struct walk w = { ips, 0, max };
	_Unwind_Backtrace(walk_one, &w);
	return w.n;
}

static void write_graph(void);

/* SIGUSR2 asks for the graph; the monitor thread writes it
 * (cp_location_monitor_look), where stdio may run. */
static int graph_wanted;
static cp_spinlock graph_writing = CP_SPINLOCK_INIT;

static CP_NO_SPLIT void on_graph_signal(int sig)
{
	(void)sig;
	__atomic_store_n(&graph_wanted, 1, __ATOMIC_RELAXED);
}

void cp_location_monitor_look(void)
{
	if (cp_likely(!__atomic_load_n(&graph_wanted, __ATOMIC_RELAXED)))
		return;
	__atomic_store_n(&graph_wanted, 0, __ATOMIC_RELAXED);
	write_graph();
}

void cp_location_configure(void)
{
	const char *s = getenv("CAPRICE_SCHED");
	if (!s || !*s || strcmp(s, "fifo") == 0)
		return;
	if (strcmp(s, "2d") != 0) {
		cp_warn("CAPRICE_SCHED=%s: want fifo or 2d; fifo applies", s);
		return;
	}
	dl_iterate_phdr(find_own_text, (void *)(uintptr_t)cp_location_configure);
	/* the unwinder loads and initializes itself once: now, before any
	 * thread parks */
	void *ip[2];
	walk_frames(ip, 2);
	cp_sched_2d = true;
	cp_cpuclock_start(); /* the CPU time between blocking points */
	cp_policy_configure();
	graph_path = getenv("CAPRICE_GRAPH");
	if (graph_path && *graph_path) {
		atexit(write_graph);
		/* only where the program keeps SIGUSR2's default (it starts so;
		 * a handler it installs later takes the signal over) */
		struct sigaction old;
		if (sigaction(SIGUSR2, NULL, &old) == 0 && old.sa_handler == SIG_DFL) {
			struct sigaction sa;
			memset(&sa, 0, sizeof sa);
			sa.sa_handler = on_graph_signal;
			sa.sa_flags = SA_RESTART | SA_ONSTACK;
			sigemptyset(&sa.sa_mask);
			sigaction(SIGUSR2, &sa, NULL);
		}
	}
}

static uint64_t hash_frames(void *const *ip, int n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (int i = 0; i < n; i++) {
		h ^= (uint64_t)(uintptr_t)ip[i];
		h *= 0x100000001b3ull;
	}
	return h ? h : 1;
}

static struct cp_loc_node *node_of(struct cp_blocking_graph *g, uint64_t key, void *ip)
{
	for (uint32_t i = 0, at = (uint32_t)key & (NODES - 1); i < NODES;
	     i++, at = (at + 1) & (NODES - 1)) {
		struct cp_loc_node *n = &g->nodes[at];
		if (n->key == key)
			return n;
		if (!n->key) {
			n->key = key;
			n->ip = ip;
			return n;
		}
	}
	return NULL;
}

static struct edge *edge_of(struct cp_blocking_graph *g, uint64_t from, uint64_t to)
{
	uint64_t h = from * 31 + to;
	for (uint32_t i = 0, at = (uint32_t)(h ^ (h >> 29)) & (EDGES - 1); i < EDGES;
	     i++, at = (at + 1) & (EDGES - 1)) {
		struct edge *e = &g->edges[at];
		if (e->from == from && e->to == to)
			return e;
		if (!e->from) {
			e->from = from;
			e->to = to;
			return e;
		}
	}
	return NULL;
}

static inline bool node_in(const struct cp_blocking_graph *g, const struct cp_loc_node *n)
{
	return n >= g->nodes && n < g->nodes + NODES;
}

/* A signed EWMA's next value: the first sample as it is (seen == 0),
 * then each weighing 1/2^EWMA_SHIFT. */
static inline int64_t ewma(int64_t was, int64_t sample, uint64_t seen)
{
	return seen ? was + (sample - was) / (1 << EWMA_SHIFT) : sample;
}

static inline int64_t clamp(int64_t v, int64_t bound)
{
	return v > bound ? bound : v < -bound ? -bound : v;
}

/* One sample of what follows a park at n, until the thread ends. */
static void rest_learn(struct cp_loc_node *n, int64_t sample)
{
	int32_t was = __atomic_load_n(&n->rest_fds, __ATOMIC_RELAXED);
	__atomic_store_n(&n->rest_fds, (int32_t)ewma(was, clamp(sample, CP_FDS_REST_MAX), n->outs),
	                 __ATOMIC_RELAXED);
}

/* One sample of the bytes the run from n to the next park took. */
static void next_kib_learn(struct cp_loc_node *n, int64_t bytes)
{
	int32_t was = __atomic_load_n(&n->next_kib, __ATOMIC_RELAXED);
	__atomic_store_n(&n->next_kib, (int32_t)ewma(was, clamp(bytes / 1024, INT32_MAX / 2), n->outs),
	                 __ATOMIC_RELAXED);
}

void cp_location_exit_slow(struct cp_worker *w, struct cp_thread *t)
{
	struct cp_loc_node *last = t->loc;
	struct cp_blocking_graph *g = w->graph;
	if (g && !node_in(g, last))
		last = node_of(g, last->key, last->ip); /* this worker's copy */
	if (!last)
		return;
	rest_learn(last, (int64_t)t->fds_run * FDS_ONE);
	next_kib_learn(last, t->mem_run);
	last->outs++;
}

void cp_location_park_slow(struct cp_worker *w, struct cp_thread *t)
{
	struct cp_blocking_graph *g = w->graph;
	if (!g) {
		g = cp_rt_calloc(1, sizeof *g);
		if (!g)
			return; /* no graph, no harm: the park goes on */
		w->graph = g;
	}
	/* The call site in the program: the first return address above this
	 * library, found through the library's own frame pointers (it is
	 * built with them), whatever the program's code is built with.  Only
	 * a site seen for the first time pays for the unwinder's walk of the
	 * program's frames, which tells its callers apart. */
	void *site = NULL;
	void **fp = __builtin_frame_address(0);
	for (int i = 0; i < 64 && fp && !((uintptr_t)fp & 7); i++) {
		void *ret = fp[1];
		if ((uintptr_t)ret < own_lo || (uintptr_t)ret >= own_hi) {
			site = ret;
			break;
		}
		void **up = fp[0];
		if (up <= fp) /* frames only go up the stack, within the library */
			break;
		fp = up;
	}
	struct site *cached = site ? &g->sites[((uintptr_t)site >> 2) & (SITES - 1)] : NULL;
	uint64_t key;
	void *name_ip = site;
	if (cached && cached->site == site) {
		key = cached->key;
	} else {
		void *ips[FRAMES + 16];
		int n = walk_frames(ips, (int)(sizeof ips / sizeof ips[0]));
		int first = 0;
		while (first < n && (uintptr_t)ips[first] >= own_lo && (uintptr_t)ips[first] < own_hi)
			first++;
		int k = n - first < FRAMES ? n - first : FRAMES;
		if (k <= 0)
			return;
		key = hash_frames(ips + first, k);
		name_ip = ips[first];
		if (cached) {
			cached->site = site;
			cached->key = key;
		}
	}
	struct cp_loc_node *nd = node_of(g, key, name_ip);
	if (!nd) {
		g->dropped++;
		return;
	}
	nd->count++;
	/* its run so far: the switch that parks it has not added it yet */
	uint64_t ticks = t->cpu_ticks + (t->run_since ? cp_rdtsc() - t->run_since : 0);
	struct cp_loc_node *from = t->loc;
	if (from) {
		uint64_t ran = cp_cpuclock_ticks_to_ns(ticks - t->loc_ticks);
		int64_t fds = (int64_t)t->fds_run * FDS_ONE;
		int64_t bytes = t->mem_run;
		/* what a thread that parks at `from` does next, for the
		 * policies (policy.c), learned in this worker's own copy of
		 * `from` (t may have parked there on another worker): a node
		 * written by two workers at every park would bounce between
		 * their caches */
		struct cp_loc_node *mine = from;
		if (!node_in(g, from))
			mine = node_of(g, from->key, from->ip);
		if (mine) {
			mine->next_ns = mine->outs ? mine->next_ns - (mine->next_ns >> EWMA_SHIFT) +
			                                     (ran >> EWMA_SHIFT)
			                           : ran;
			rest_learn(mine, fds + nd->rest_fds);
			next_kib_learn(mine, bytes);
			mine->outs++;
		}
		struct edge *e = edge_of(g, from->key, key);
		if (e) {
			e->ewma_ns = e->count ? e->ewma_ns - (e->ewma_ns >> EWMA_SHIFT) +
			                                (ran >> EWMA_SHIFT)
			                      : ran;
			e->ewma_fds = ewma(e->ewma_fds, fds, e->count);
			e->ewma_bytes = ewma(e->ewma_bytes, bytes, e->count);
			e->count++;
		} else {
			g->dropped++;
		}
	}
	t->loc = nd;
	t->loc_ticks = ticks;
	t->fds_run = 0;
	t->mem_run = 0;
}

/* ---- the graph, merged and written at exit ---- */

/* The function of a module's full symbol table (.symtab, which names the
 * static functions the dynamic one leaves out) that holds the return
 * address ip (the call before it: a call may end its function), with the
 * module loaded at base, written as name+offset into buf; false if the
 * file has no such table (stripped) or no such function.  The last file
 * stays mapped: a graph's nodes mostly lie in one or two modules. */
static bool symtab_name(const char *path, uintptr_t ip, uintptr_t base, char *buf, size_t size)
{
	static char mapped_path[4096];
	static const unsigned char *map;
	static size_t map_len;
	if (!map || strcmp(path, mapped_path) != 0) {
		if (map)
			munmap((void *)map, map_len);
		map = NULL;
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		struct stat st;
		if (fd < 0 || fstat(fd, &st) != 0 || (size_t)st.st_size < sizeof(ElfW(Ehdr))) {
			if (fd >= 0)
				close(fd);
			return false;
		}
		void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
		close(fd);
		if (m == MAP_FAILED)
			return false;
		map = m;
		map_len = (size_t)st.st_size;
		snprintf(mapped_path, sizeof mapped_path, "%s", path);
	}
	const ElfW(Ehdr) *eh = (const void *)map;
	if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_shoff == 0 ||
	    eh->e_shoff + (size_t)eh->e_shnum * sizeof(ElfW(Shdr)) > map_len)
		return false;
	/* link-time addresses: relative to the load base but in a
	 * position-dependent executable */
	uintptr_t off = eh->e_type == ET_EXEC ? ip : ip - base;
	const ElfW(Shdr) *sh = (const void *)(map + eh->e_shoff);
	for (unsigned i = 0; i < eh->e_shnum; i++) {
		if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum)
			continue;
		const ElfW(Shdr) *strs = &sh[sh[i].sh_link];
		if (sh[i].sh_offset + sh[i].sh_size > map_len ||
		    strs->sh_offset + strs->sh_size > map_len)
			return false;
		const ElfW(Sym) *sym = (const void *)(map + sh[i].sh_offset);
		size_t n = sh[i].sh_size / sizeof *sym;
		for (size_t k = 0; k < n; k++) {
			if (ELF64_ST_TYPE(sym[k].st_info) != STT_FUNC || sym[k].st_name >= strs->sh_size ||
			    off - 1 < sym[k].st_value || off - 1 >= sym[k].st_value + sym[k].st_size)
				continue;
			snprintf(buf, size, "%s+%#lx", (const char *)map + strs->sh_offset + sym[k].st_name,
			         (unsigned long)(off - sym[k].st_value));
			return true;
		}
	}
	return false;
}

static void name_of(void *ip, char *buf, size_t size)
{
	Dl_info di;
	if (dladdr(ip, &di) && di.dli_fname &&
	    symtab_name(di.dli_fname[0] ? di.dli_fname : "/proc/self/exe", (uintptr_t)ip,
	                (uintptr_t)di.dli_fbase, buf, size))
		return;
	if (dladdr(ip, &di) && di.dli_sname)
		snprintf(buf, size, "%s+%#lx", di.dli_sname,
		         (unsigned long)((uintptr_t)ip - (uintptr_t)di.dli_saddr));
	else if (dladdr(ip, &di) && di.dli_fname)
		snprintf(buf, size, "%s+%#lx", strrchr(di.dli_fname, '/') ?
		         strrchr(di.dli_fname, '/') + 1 : di.dli_fname,
		         (unsigned long)((uintptr_t)ip - (uintptr_t)di.dli_fbase));
	else
		snprintf(buf, size, "%p", ip);
}

static void write_graph(void)
{
	cp_spin_lock(&graph_writing); /* the monitor's and exit's */
	/* a whole file or none: written beside it, then renamed over it */
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s.tmp%d", graph_path, (int)getpid());
	/* merged off the stack: it is some 200 KiB, and exit may run on a
	 * user thread's */
	struct cp_blocking_graph *all = cp_rt_calloc(1, sizeof *all);
	FILE *f = all ? fopen(tmp, "w") : NULL;
	if (!f) {
		cp_warn("CAPRICE_GRAPH=%s: cannot write it: %s", graph_path,
		        all ? strerror(errno) : "out of memory");
		cp_rt_free(all);
		cp_spin_unlock(&graph_writing);
		return;
	}
	for (int i = 0; i < cp_nall; i++) {
		struct cp_blocking_graph *g = cp_workers[i]->graph;
		if (!g)
			continue;
		all->dropped += g->dropped;
		for (int j = 0; j < NODES; j++) {
			struct cp_loc_node *n = &g->nodes[j];
			if (!n->key)
				continue;
			struct cp_loc_node *m = node_of(all, n->key, n->ip);
			if (m)
				m->count += n->count;
			else
				all->dropped += n->count; /* the merged table is full too */
		}
		for (int j = 0; j < EDGES; j++) {
			struct edge *e = &g->edges[j];
			struct edge *m = e->from ? edge_of(all, e->from, e->to) : NULL;
			if (!m)
				continue;
			/* the workers' EWMAs, weighted by how often each saw the edge */
			uint64_t c = m->count + e->count;
			m->ewma_ns = c ? (m->ewma_ns * m->count + e->ewma_ns * e->count) / c : 0;
			m->ewma_fds = c ? (m->ewma_fds * (int64_t)m->count +
			                   e->ewma_fds * (int64_t)e->count) / (int64_t)c
			                : 0;
			m->ewma_bytes = c ? (int64_t)(((double)m->ewma_bytes * (double)m->count +
			                               (double)e->ewma_bytes * (double)e->count) /
			                              (double)c)
			                  : 0;
			m->count = c;
		}
	}
	fprintf(f, "digraph blocking {\n\tnode [shape=box];\n");
	for (int j = 0; j < NODES; j++) {
		struct cp_loc_node *n = &all->nodes[j];
		if (!n->key)
			continue;
		char name[256];
		name_of(n->ip, name, sizeof name);
		fprintf(f, "\tn%016llx [label=\"%s\\n%llu parks\", parks=%llu];\n",
		        (unsigned long long)n->key, name, (unsigned long long)n->count,
		        (unsigned long long)n->count);
	}
	for (int j = 0; j < EDGES; j++) {
		struct edge *e = &all->edges[j];
		if (!e->from)
			continue;
		double fds = (double)e->ewma_fds / FDS_ONE;
		char fds_label[32] = "", mem_label[32] = "";
		if (fds >= 0.05 || fds <= -0.05)
			snprintf(fds_label, sizeof fds_label, ", %+.1f fds", fds);
		double kib = (double)e->ewma_bytes / 1024;
		if (kib >= 0.5 || kib <= -0.5)
			snprintf(mem_label, sizeof mem_label, ", %+.0f KiB", kib);
		fprintf(f, "\tn%016llx -> n%016llx [label=\"%llu x %.1f us%s%s\", count=%llu, "
		        "cpu_ns=%llu, fds=%.2f, bytes=%lld];\n",
		        (unsigned long long)e->from, (unsigned long long)e->to,
		        (unsigned long long)e->count, e->ewma_ns / 1e3, fds_label, mem_label,
		        (unsigned long long)e->count, (unsigned long long)e->ewma_ns, fds,
		        (long long)e->ewma_bytes);
	}
	fprintf(f, "\t/* dropped (a full table): %llu */\n}\n", (unsigned long long)all->dropped);
	if (fclose(f) != 0 || rename(tmp, graph_path) != 0) {
		cp_warn("CAPRICE_GRAPH=%s: cannot write it", graph_path);
		unlink(tmp);
	}
	cp_rt_free(all);
	cp_spin_unlock(&graph_writing);
}
