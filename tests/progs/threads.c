/* threads.c: thread lifecycle — create, join, detach, exit, identity. */
#include <pthread.h>
#include <unistd.h>

#include "tcase.h"

static void *plus_one(void *a)
{
	return (void *)((long)a + 1);
}

TCASE(create_join_returns_value)
{
	for (long i = 0; i < 1000; i++) {
		pthread_t t;
		void *r;
		CHECK_OK(pthread_create(&t, NULL, plus_one, (void *)i));
		CHECK_OK(pthread_join(t, &r));
		CHECK_EQ((long)r, i + 1);
	}
}

static void *self_id(void *out)
{
	*(pthread_t *)out = pthread_self();
	return NULL;
}

TCASE(self_matches_handle)
{
	pthread_t t, seen;
	CHECK_OK(pthread_create(&t, NULL, self_id, &seen));
	CHECK_OK(pthread_join(t, NULL));
	CHECK(pthread_equal(t, seen));
	CHECK(!pthread_equal(t, pthread_self()));
}
