/* attr.c: (being written) */
#include "tcase.h"
