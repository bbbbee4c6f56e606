/* rwlock.c: (being written) */
