/* keys.c: (being written) */
#include "tcase.h"
