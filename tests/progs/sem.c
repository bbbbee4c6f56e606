/* sem.c: (being written) */
#include "tcase.h"
