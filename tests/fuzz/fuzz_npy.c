/* libFuzzer harness: a whole .npy image from memory (lib/io/npy.h): the header parsed, and an
 * integer array's values converted to int32 as a dataset reads them (range-checked). */
#include <stddef.h>
#include <stdint.h>

#include "npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cx_npy a;
    if (cx_npy_parse(&a, data, size, "fuzz.npy", "fuzz") != CIRCUITS_OK) return 0;
    char descr[8];
    cx_npy_descr(&a, descr);
    if ((a.kind != 'i' && a.kind != 'u') || a.numel == 0 || a.numel > (1u << 20)) return 0;
    int32_t *out = cx_malloc(a.numel * sizeof *out);
    if (!out) return 0;
    int64_t width = a.ndim >= 2 && a.shape[a.ndim - 1] > 0 ? a.shape[a.ndim - 1] : 1;
    (void)cx_ints_to_i32(a.data, a.numel, a.itemsize, a.kind == 'i', a.big_endian, width, out, "fuzz", "fuzz.npy");
    cx_free(out);
    return 0;
}
