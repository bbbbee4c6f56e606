/* sleep.c: (being written) */
#include "tcase.h"
