/* spin.c: (being written) */
