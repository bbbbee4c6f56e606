/* barrier.c: (being written) */
#include "tcase.h"
