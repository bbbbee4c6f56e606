/* latency_hist.h: the load clients' latency histogram, written once.
 * 64 linear sub-buckets per power of two of nanoseconds: any recorded
 * value is within 1.6% of the truth, and the whole uint64 range fits in
 * a few thousand counters, so a client counts every request without
 * keeping them. */
#ifndef CAPRICE_BENCH_LATENCY_HIST_H
#define CAPRICE_BENCH_LATENCY_HIST_H

#include <stdint.h>

#define SUB_BITS   6
#define SUB        (1u << SUB_BITS)
#define HIST_LEN   ((64 - SUB_BITS) * SUB + SUB)

static inline unsigned hist_index(uint64_t v)
{
	if (v < 2 * SUB)
		return (unsigned)v;
	unsigned e = 63 - (unsigned)__builtin_clzll(v);
	return (e - SUB_BITS) * SUB + (unsigned)(v >> (e - SUB_BITS));
}

/* the middle of the bucket's range */
static inline uint64_t hist_value(unsigned i)
{
	if (i < 2 * SUB)
		return i;
	unsigned e = i / SUB + SUB_BITS - 1;
	uint64_t lo = (uint64_t)(i % SUB + SUB) << (e - SUB_BITS);
	return lo + ((uint64_t)1 << (e - SUB_BITS)) / 2;
}

/* the p-th quantile (0..1) of a histogram holding total values */
static inline uint64_t hist_percentile(const uint64_t *h, uint64_t total, double p)
{
	if (!total)
		return 0;
	uint64_t want = (uint64_t)(p * (double)total);
	if (want >= total)
		want = total - 1;
	uint64_t seen = 0;
	for (unsigned i = 0; i < HIST_LEN; i++) {
		seen += h[i];
		if (seen > want)
			return hist_value(i);
	}
	return 0;
}

#endif
