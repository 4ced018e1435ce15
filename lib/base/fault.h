/* Allocation-failure injection and allocation counters: only in objects built with
 * -DCX_FAULT_INJECTION (the test-only circuits_fault objects of lib/meson.build), never in the
 * shipped library. Counted: every cx_malloc / cx_calloc / cx_realloc / cx_strdup, jansson's
 * allocations, and every file mapping (cx_mmap_read). */
#ifndef CIRCUITS_FAULT_H
#define CIRCUITS_FAULT_H

#include <stdbool.h>

/* The next n attempts succeed; the one after fails, and so does every later one unless once. */
void cx_fault_fail_after(long n, bool once);
/* No more failures. */
void cx_fault_disarm(void);
/* Failures injected since the last cx_fault_fail_after. */
long cx_fault_injected(void);
/* Allocation attempts since the process started. */
long cx_fault_allocations(void);
/* Blocks and file mappings the library holds now, and the bytes of the blocks. */
long cx_live_allocations(void);
long long cx_live_bytes(void);

#endif
