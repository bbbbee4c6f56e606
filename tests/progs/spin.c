/* spin.c: (being written) */
#include "tcase.h"
