/* cond.c: (being written) */
#include "tcase.h"
