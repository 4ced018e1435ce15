/* The library's allocation functions: one place to check sizes and to inject failures.
 *
 * In the shipped library these are thin wrappers of malloc & co. Built with
 * -DCX_FAULT_INJECTION (lib/meson.build's test-only circuits_fault objects, never installed)
 * they also count every allocation and mapping, can make the n-th one fail (lib/base/fault.h), and
 * jansson allocates through them too, so tests can fail every allocation site in turn. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

bool cx_mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a) return false;
    *out = a * b;
    return true;
}

/* Failed allocations on this thread: lets json_load.c tell an allocation failure inside
 * jansson from bad JSON. */
static _Thread_local unsigned long failures;

unsigned long cx_alloc_failures(void) { return failures; }

static void *counted(void *p)
{
    if (!p) failures++;
    return p;
}


#ifndef CX_FAULT_INJECTION

void *cx_malloc(size_t n) { return counted(malloc(n ? n : 1)); }
void *cx_calloc(size_t count, size_t size) { return counted(calloc(count ? count : 1, size ? size : 1)); }
void *cx_realloc(void *p, size_t n) { return counted(realloc(p, n ? n : 1)); }
void cx_free(void *p) { free(p); }

void *cx_mmap_read(size_t size, int fd) { return mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0); }
void cx_munmap(void *p, size_t size) { munmap(p, size); }

#else /* CX_FAULT_INJECTION */

#include "fault.h"

#include <jansson.h>
#include <stdatomic.h>

/* Every block carries its size in front, so that live bytes can be counted exactly. 16 bytes
 * keep the payload aligned for any type (max_align_t). */
typedef struct header {
    size_t size;
    size_t magic;
} header;
#define MAGIC ((size_t)0xC1C0A110C8ED0000u)

static atomic_long n_calls;   /* allocation (and mapping) attempts so far */
static atomic_long fail_from = -1; /* the attempt number that fails first, or -1 */
static atomic_bool fail_once;  /* only that one attempt fails; later ones succeed */
static atomic_long n_injected; /* failures injected since the last cx_fault_fail_after */
static atomic_long live_blocks, live_maps;
static atomic_llong live_bytes;

/* true if this attempt must fail */
static bool inject(void)
{
    long call = atomic_fetch_add(&n_calls, 1);
    long from = atomic_load(&fail_from);
    if (from < 0 || call < from || (atomic_load(&fail_once) && call != from)) return false;
    atomic_fetch_add(&n_injected, 1);
    return true;
}

void cx_fault_fail_after(long n, bool once)
{
    atomic_store(&n_injected, 0);
    atomic_store(&fail_once, once);
    atomic_store(&fail_from, atomic_load(&n_calls) + n);
}

void cx_fault_disarm(void) { atomic_store(&fail_from, -1); }
long cx_fault_injected(void) { return atomic_load(&n_injected); }
long cx_fault_allocations(void) { return atomic_load(&n_calls); }
long cx_live_allocations(void) { return atomic_load(&live_blocks) + atomic_load(&live_maps); }
long long cx_live_bytes(void) { return atomic_load(&live_bytes); }

static void *track(header *h, size_t n)
{
    h->size = n;
    h->magic = MAGIC;
    atomic_fetch_add(&live_blocks, 1);
    atomic_fetch_add(&live_bytes, (long long)n);
    return h + 1;
}

static void *block(size_t n, bool injectable)
{
    if ((injectable && inject()) || n > SIZE_MAX - sizeof(header)) return counted(NULL);
    header *h = malloc(sizeof *h + n);
    return counted(h ? track(h, n) : NULL);
}

void *cx_malloc(size_t n) { return block(n, true); }

void *cx_calloc(size_t count, size_t size)
{
    size_t n;
    if (!cx_mul_size(count, size, &n)) return counted(NULL);
    void *p = cx_malloc(n);
    if (p) memset(p, 0, n);
    return p;
}

void *cx_realloc(void *p, size_t n)
{
    if (!p) return cx_malloc(n);
    if (inject() || n > SIZE_MAX - sizeof(header)) return counted(NULL);
    header *old = (header *)p - 1;
    size_t old_size = old->size;
    header *h = realloc(old, sizeof *h + n);
    if (!h) return counted(NULL);
    atomic_fetch_add(&live_bytes, (long long)n - (long long)old_size);
    h->size = n;
    return h + 1;
}

void cx_free(void *p)
{
    if (!p) return;
    header *h = (header *)p - 1;
    if (h->magic != MAGIC) abort(); /* test build only: a block cx_malloc did not make */
    h->magic = 0;
    atomic_fetch_sub(&live_blocks, 1);
    atomic_fetch_sub(&live_bytes, (long long)h->size);
    free(h);
}

void *cx_mmap_read(size_t size, int fd)
{
    if (inject()) {
        failures++;
        errno = ENOMEM;
        return MAP_FAILED;
    }
    void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p != MAP_FAILED) atomic_fetch_add(&live_maps, 1);
    return p;
}

void cx_munmap(void *p, size_t size)
{
    if (munmap(p, size) == 0) atomic_fetch_sub(&live_maps, 1);
}

/* jansson's allocations, counted. Growing its lexer's buffer (16 bytes, doubled each time) is
 * never failed: jansson 2.14 ignores that failure and, when the lexer then steps back over a
 * character it did not save, fails an assert() and aborts the process (load.c,
 * lex_unget_unsave) -- a jansson bug a test cannot survive. So power-of-two sizes from 32 on
 * are spared; every other allocation of jansson's can fail. */
static void *json_block(size_t n) { return block(n, n < 32 || (n & (n - 1)) != 0); }

/* before main: no JSON value exists yet that libc's malloc made */
__attribute__((constructor)) static void route_jansson(void) { json_set_alloc_funcs(json_block, cx_free); }

#endif /* CX_FAULT_INJECTION */

char *cx_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = cx_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}
