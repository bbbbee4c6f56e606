/* barrier.c: (being written) */
