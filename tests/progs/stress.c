/* stress.c: (being written) */
#include "tcase.h"
