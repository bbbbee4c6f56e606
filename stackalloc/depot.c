/* depot.c: the shared store of free stack memory and its decay (depot.h). */
#include "depot.h"

#include "compiler.h"

#define DECAY_BATCH 256 /* blocks detached per hold of the lock */

void cp_depot_push(struct cp_depot *d, struct cp_depot_link *l)
{
	cp_spin_lock(&d->lock);
	l->older = NULL;
	l->newer = NULL;
	if (d->hot_new) {
		d->hot_new->newer = l;
		l->older = d->hot_new;
	} else {
		d->hot_old = l;
	}
	d->hot_new = l;
	d->hot++;
	cp_spin_unlock(&d->lock);
}

struct cp_depot_link *cp_depot_pop(struct cp_depot *d)
{
	cp_spin_lock(&d->lock);
	struct cp_depot_link *l = d->hot_new;
	if (l) {
		d->hot_new = l->older;
		if (d->hot_new)
			d->hot_new->newer = NULL;
		else
			d->hot_old = NULL;
		if (--d->hot < d->hot_low)
			d->hot_low = d->hot;
	} else if ((l = d->cold) != NULL) {
		d->cold = l->older;
		d->cold_count--;
	}
	cp_spin_unlock(&d->lock);
	return l;
}

/* Gives back up to n of the oldest hot blocks, keeping d->keep hot;
 * returns how many it gave back. */
static uint64_t give_back_oldest(struct cp_depot *d, uint64_t n)
{
	cp_spin_lock(&d->lock);
	if (d->hot <= d->keep)
		n = 0;
	else if (n > d->hot - d->keep)
		n = d->hot - d->keep;
	/* a chain through `older`, from the newest of them to the oldest */
	struct cp_depot_link *first = NULL, *last = NULL;
	if (n) {
		last = d->hot_old;
		first = last;
		for (uint64_t i = 1; i < n; i++)
			first = first->newer;
		d->hot_old = first->newer;
		if (d->hot_old)
			d->hot_old->older = NULL;
		else
			d->hot_new = NULL;
		d->hot -= n;
		if (d->hot_low > d->hot)
			d->hot_low = d->hot;
	}
	cp_spin_unlock(&d->lock);
	if (!n)
		return 0;
	for (struct cp_depot_link *l = first; l; l = l->older)
		d->give_back(l);
	cp_spin_lock(&d->lock);
	last->older = d->cold;
	d->cold = first;
	d->cold_count += n;
	cp_spin_unlock(&d->lock);
	return n;
}

void cp_depot_decay(struct cp_depot *d, uint64_t now_ns)
{
	if (now_ns - __atomic_load_n(&d->decayed_at, __ATOMIC_RELAXED) < CP_DEPOT_DECAY_NS)
		return;
	__atomic_store_n(&d->decayed_at, now_ns, __ATOMIC_RELAXED);
	/* hot blocks past `keep` that stayed hot all interval went unneeded */
	cp_spin_lock(&d->lock);
	uint64_t idle = d->hot_low > d->keep ? d->hot_low - d->keep : 0;
	d->hot_low = d->hot;
	cp_spin_unlock(&d->lock);
	while (idle) {
		uint64_t n = give_back_oldest(d, idle < DECAY_BATCH ? idle : DECAY_BATCH);
		if (!n)
			break;
		idle -= n;
	}
}

uint64_t cp_depot_count(struct cp_depot *d)
{
	cp_spin_lock(&d->lock);
	uint64_t n = d->hot + d->cold_count;
	cp_spin_unlock(&d->lock);
	return n;
}

void cp_depot_after_fork(struct cp_depot *d)
{
	d->lock = (cp_spinlock)CP_SPINLOCK_INIT;
}
