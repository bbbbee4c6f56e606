/* rwlock.c: (being written) */
#include "tcase.h"
