/* sem.c: (being written) */
