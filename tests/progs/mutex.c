/* mutex.c: (being written) */
#include "tcase.h"
