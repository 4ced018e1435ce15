/* Writing small safetensors files from tests: 8-byte little-endian header length, a JSON
 * header padded with spaces to a multiple of 8, then the data in list order: F32 (st_write), or
 * the same floats stored as F16 or BF16 (st_write_as: rounded to nearest, ties away; F16 flushes
 * values below its normal range to zero and saturates large ones). Exits the test (status 2) on
 * an I/O failure. */
#ifndef CIRCUITS_TESTS_ST_WRITE_H
#define CIRCUITS_TESTS_ST_WRITE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct st_entry {
    char name[64];
    int ndim;
    int64_t shape[3];
    const float *data;
} st_entry;

static void st_fail(const char *what)
{
    fprintf(stderr, "FATAL: writing %s\n", what);
    exit(2);
}

typedef enum st_dtype { ST_F32, ST_F16, ST_BF16 } st_dtype;

static uint16_t st_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, man = x & 0x7fffffu;
    int32_t e = (int32_t)((x >> 23) & 0xffu) - 127 + 15;
    if (e <= 0) return (uint16_t)sign;
    if (e >= 31) return (uint16_t)(sign | 0x7bffu);
    uint32_t h = sign | (uint32_t)e << 10 | man >> 13;
    if (man & 0x1000u) h++;
    return (uint16_t)h;
}

static uint16_t st_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    return (uint16_t)((x + 0x8000u) >> 16);
}

static void st_write_as(const char *path, const st_entry *t, int n, st_dtype dt)
{
    static const char *const names[] = {"F32", "F16", "BF16"};
    size_t esize = dt == ST_F32 ? 4 : 2;
    size_t cap = 128 + (size_t)n * 192, hl = 0, off = 0;
    char *h = malloc(cap);
    if (!h) st_fail(path);
    hl += (size_t)snprintf(h + hl, cap - hl, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) {
        size_t nb = esize;
        for (int d = 0; d < t[i].ndim; d++) nb *= (size_t)t[i].shape[d];
        hl += (size_t)snprintf(h + hl, cap - hl, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t[i].name, names[dt]);
        for (int d = 0; d < t[i].ndim; d++)
            hl += (size_t)snprintf(h + hl, cap - hl, d ? ",%lld" : "%lld", (long long)t[i].shape[d]);
        hl += (size_t)snprintf(h + hl, cap - hl, "],\"data_offsets\":[%zu,%zu]}", off, off + nb);
        off += nb;
    }
    hl += (size_t)snprintf(h + hl, cap - hl, "}");
    while (hl % 8) h[hl++] = ' ';
    FILE *fp = fopen(path, "wb");
    if (!fp) st_fail(path);
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    if (fwrite(len, 1, 8, fp) != 8 || fwrite(h, 1, hl, fp) != hl) st_fail(path);
    for (int i = 0; i < n; i++) {
        size_t ne = 1;
        for (int d = 0; d < t[i].ndim; d++) ne *= (size_t)t[i].shape[d];
        if (dt == ST_F32) {
            if (fwrite(t[i].data, sizeof(float), ne, fp) != ne) st_fail(path);
            continue;
        }
        for (size_t k = 0; k < ne; k++) {
            uint16_t v = dt == ST_F16 ? st_f16(t[i].data[k]) : st_bf16(t[i].data[k]);
            unsigned char b2[2] = {(unsigned char)v, (unsigned char)(v >> 8)};
            if (fwrite(b2, 1, 2, fp) != 2) st_fail(path);
        }
    }
    if (fclose(fp) != 0) st_fail(path);
    free(h);
}

static inline void st_write(const char *path, const st_entry *t, int n) { st_write_as(path, t, n, ST_F32); }

#endif
