/* (being written: issue 16) */
#include "internal.h"
