/* The one size rule of the size-versioned structs (docs/abi.md#size-versioned-structs).
 *
 * A struct the caller allocates starts with `uint32_t size`. Each release that changes such a
 * struct appends fields and publishes a new sizeof; the library keeps the list of every size it
 * published. A caller's size must be one of them: then every field it has is whole (an
 * arbitrary size could cut a field in two), the fields it lacks keep their defaults, and a size
 * from a newer release than this library is refused instead of half-read. A struct the library
 * fills (the config) from a newer release is filled up to the newest version known here, and
 * its size says so. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

int cx_struct_size_check(uint32_t size, const size_t *versions, size_t n_versions, const char *fn, bool filled)
{
    for (size_t i = 0; i < n_versions; i++)
        if (size == versions[i]) return CIRCUITS_OK;
    /* a struct the library fills may come from a newer release: its versions only append, so
     * the newest one known here is a whole prefix of it */
    if (filled && size > versions[n_versions - 1]) return CIRCUITS_OK;
    char known[64] = "";
    size_t used = 0;
    for (size_t i = 0; i < n_versions && used < sizeof known; i++)
        used += (size_t)snprintf(known + used, sizeof known - used, "%s%zu", i ? " or " : "", versions[i]);
    return cx_fail(CIRCUITS_E_VERSION, "%s: %s %u is not one this library knows (%s)", fn,
                   filled ? "out->size" : "options size", size, known);
}

int cx_options_copy(void *dst, const void *src, const size_t *versions, size_t n_versions, const char *fn)
{
    uint32_t size;
    memcpy(&size, src, sizeof size);
    int rc = cx_struct_size_check(size, versions, n_versions, fn, false);
    if (rc) return rc;
    memcpy(dst, src, size); /* dst holds the defaults and is the newest version: fields past `size` keep them */
    uint32_t newest = (uint32_t)versions[n_versions - 1];
    memcpy(dst, &newest, sizeof newest);
    return CIRCUITS_OK;
}
