/* location.c: where threads block, the blocking graph of Capriccio's
 * location-aware ("2D") scheduling.  With CAPRICE_SCHED=2d, every park
 * records where in the program the thread blocked: a hash of the first
 * return addresses above the runtime (libunwind's unw_backtrace, which
 * works from CFI, so in unmodified binaries without frame pointers too).
 * libunwind walks the program's frames only the first time a call site
 * (the first return address above the runtime, found through the
 * runtime's own frame pointers) parks; later parks there reuse its hash,
 * so callers of one call site that differ further up share a node after
 * the first.  Locations are the graph's nodes; an edge joins two consecutive blocking
 * points of one thread and keeps how often it was taken and an EWMA of the
 * CPU time run between them (cpuclock.c's accounting).  Each worker keeps
 * its own bounded graph, with no lock; CAPRICE_GRAPH=FILE writes them
 * merged, as a Graphviz digraph, when the process exits.
 *
 * This is the graph only: the run queues are still FIFO whatever
 * CAPRICE_SCHED says (the policies that use the graph are to come), and
 * with CAPRICE_SCHED=fifo, the default, a park pays one load and branch
 * for all of it. */
#define UNW_LOCAL_ONLY
#include "worker.h"

#include <dlfcn.h>
#include <libunwind.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler.h"
#include "env.h"

#define FRAMES      4      /* return addresses above the runtime, hashed */
#define NODES       1024   /* per worker; a full table drops new nodes */
#define EDGES       4096
#define EWMA_SHIFT  3      /* each new sample weighs 1/8 */

struct node {
	uint64_t key;          /* 0: free */
	void *ip;              /* the innermost frame above the runtime, to name it */
	uint64_t count;
};

struct edge {
	uint64_t from, to;     /* 0 from: free */
	uint64_t count;
	uint64_t ewma_ns;      /* CPU time between the two blocking points */
};

/* a call site's location, so that only a site's first park unwinds */
struct site {
	void *site;
	uint64_t key;
};
#define SITES 256

struct cp_blocking_graph {
	struct node nodes[NODES];
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

static void write_graph(void);

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
	/* libunwind initializes itself once, with pthread_once, which must
	 * not run inside the scheduler (it could park there): now, before
	 * any thread parks */
	void *ip[2];
	unw_backtrace(ip, 2);
	cp_sched_2d = true;
	cp_cpuclock_start(); /* the CPU time between blocking points */
	graph_path = getenv("CAPRICE_GRAPH");
	if (graph_path && *graph_path)
		atexit(write_graph);
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

static struct node *node_of(struct cp_blocking_graph *g, uint64_t key, void *ip)
{
	for (uint32_t i = 0, at = (uint32_t)key & (NODES - 1); i < NODES;
	     i++, at = (at + 1) & (NODES - 1)) {
		struct node *n = &g->nodes[at];
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

void cp_location_park_slow(struct cp_worker *w, struct cp_thread *t)
{
	struct cp_blocking_graph *g = w->graph;
	if (!g) {
		g = calloc(1, sizeof *g);
		if (!g)
			return; /* no graph, no harm: the park goes on */
		w->graph = g;
	}
	/* The call site in the program: the first return address above this
	 * library, found through the library's own frame pointers (it is
	 * built with them), whatever the program's code is built with.  Only
	 * a site seen for the first time pays for libunwind's walk of the
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
		int n = unw_backtrace(ips, (int)(sizeof ips / sizeof ips[0]));
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
	struct node *nd = node_of(g, key, name_ip);
	if (!nd) {
		g->dropped++;
		return;
	}
	nd->count++;
	/* its run so far: the switch that parks it has not added it yet */
	uint64_t ticks = t->cpu_ticks + (t->run_since ? cp_rdtsc() - t->run_since : 0);
	if (t->loc_key) {
		struct edge *e = edge_of(g, t->loc_key, key);
		if (e) {
			uint64_t ran = cp_cpuclock_ticks_to_ns(ticks - t->loc_ticks);
			e->ewma_ns = e->count ? e->ewma_ns - (e->ewma_ns >> EWMA_SHIFT) +
			                                (ran >> EWMA_SHIFT)
			                      : ran;
			e->count++;
		} else {
			g->dropped++;
		}
	}
	t->loc_key = key;
	t->loc_ticks = ticks;
}

/* ---- the graph, merged and written at exit ---- */

static void name_of(void *ip, char *buf, size_t size)
{
	Dl_info di;
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
	FILE *f = fopen(graph_path, "w");
	if (!f) {
		cp_warn("CAPRICE_GRAPH=%s: cannot write it", graph_path);
		return;
	}
	struct cp_blocking_graph all;
	memset(&all, 0, sizeof all);
	for (int i = 0; i < cp_nall; i++) {
		struct cp_blocking_graph *g = cp_workers[i]->graph;
		if (!g)
			continue;
		all.dropped += g->dropped;
		for (int j = 0; j < NODES; j++) {
			struct node *n = &g->nodes[j];
			struct node *m = n->key ? node_of(&all, n->key, n->ip) : NULL;
			if (m)
				m->count += n->count;
		}
		for (int j = 0; j < EDGES; j++) {
			struct edge *e = &g->edges[j];
			struct edge *m = e->from ? edge_of(&all, e->from, e->to) : NULL;
			if (!m)
				continue;
			/* the workers' EWMAs, weighted by how often each saw the edge */
			uint64_t c = m->count + e->count;
			m->ewma_ns = c ? (m->ewma_ns * m->count + e->ewma_ns * e->count) / c : 0;
			m->count = c;
		}
	}
	fprintf(f, "digraph blocking {\n\tnode [shape=box];\n");
	for (int j = 0; j < NODES; j++) {
		struct node *n = &all.nodes[j];
		if (!n->key)
			continue;
		char name[256];
		name_of(n->ip, name, sizeof name);
		fprintf(f, "\tn%016llx [label=\"%s\\n%llu parks\", parks=%llu];\n",
		        (unsigned long long)n->key, name, (unsigned long long)n->count,
		        (unsigned long long)n->count);
	}
	for (int j = 0; j < EDGES; j++) {
		struct edge *e = &all.edges[j];
		if (!e->from)
			continue;
		fprintf(f, "\tn%016llx -> n%016llx [label=\"%llu x %.1f us\", count=%llu, cpu_ns=%llu];\n",
		        (unsigned long long)e->from, (unsigned long long)e->to,
		        (unsigned long long)e->count, e->ewma_ns / 1e3, (unsigned long long)e->count,
		        (unsigned long long)e->ewma_ns);
	}
	fprintf(f, "\t/* dropped (a full table): %llu */\n}\n", (unsigned long long)all.dropped);
	fclose(f);
}
