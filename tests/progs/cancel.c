/* cancel.c: (being written) */
#include "tcase.h"
