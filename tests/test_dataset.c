/* Datasets (lib/io/dataset.c, dataset_text.c, npy.c) and SHA-256 (lib/base/digest.c):
 *   - SHA-256 against the FIPS 180-2 vectors, whole and in uneven pieces, and files;
 *   - .npy files numpy wrote (tests/reference/generate_datasets.py): every integer dtype in both
 *     byte orders, versions 1.0 / 2.0 / 3.0, against the formula that made them;
 *   - safetensors datasets with their columns, every integer dtype;
 *   - text: corpus.txt / corpus.jsonl against the rows the generator computed with the Hugging Face
 *     tokenizer (per-document encode, EOS join, BOS prefix), the same with CRLF and CR line ends;
 *   - columns, and the digest against a canonical byte string built here and hashed with cx_sha256,
 *     changing with any value, column, name or shape and not with the order columns were set;
 *   - hostile files and bad arguments (named checks: docs/errors.md "Datasets");
 *   - every allocation of open / set_column / load_column / digest failed in turn (this program
 *     links the fault-injection objects, lib/base/fault.h): E_OUT_OF_MEMORY, nothing leaked,
 *     nothing changed.
 * Usage: test_dataset DATASETS_DIR (tests/reference/datasets) TOKENIZER_DIR (examples/models/tiny-random-gpt2) [-v] */
#include "catalogue.h"
#include "testutil.h"

#include "../lib/base/fault.h"
#include "../lib/io/dataset_text.h"
#include "../lib/io/npy.h"
#include "../lib/job/job.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *g_data, *g_tokdir;
static char g_tmp[] = "/tmp/circuits_dataset_XXXXXX";
static circuits_tokenizer *g_tok;

static const char *tmp_path(const char *name)
{
    static char bufs[8][600];
    static int next;
    char *p = bufs[next++ % 8];
    snprintf(p, 600, "%s/%s", g_tmp, name);
    return p;
}

static const char *data_path(const char *name)
{
    static char bufs[8][1200];
    static int next;
    char *p = bufs[next++ % 8];
    snprintf(p, 1200, "%s/%s", g_data, name);
    return p;
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "FATAL: writing %s\n", path);
        exit(2);
    }
}

static void write_str(const char *path, const char *s) { write_bytes(path, s, strlen(s)); }

static unsigned char *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)len + 1);
    *n = fread(p, 1, (size_t)len, f);
    fclose(f);
    return p;
}

/* ---- SHA-256 ---- */
static void sha_of(const void *p, size_t n, size_t piece, char *hex)
{
    cx_sha256 *h = NULL;
    CHECK_OK(cx_sha256_new(&h));
    for (size_t i = 0; i < n; i += piece) CHECK_OK(cx_sha256_update(h, (const char *)p + i, n - i < piece ? n - i : piece));
    CHECK_OK(cx_sha256_final(h, hex));
}

static void test_sha256(void)
{
    static const struct { const char *msg; const char *hex; } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    char hex[65];
    for (size_t i = 0; i < CX_COUNT(v); i++) {
        for (size_t piece = 1; piece <= 64; piece *= 4) {
            sha_of(v[i].msg, strlen(v[i].msg), piece, hex);
            CHECK(strcmp(hex, v[i].hex) == 0, "sha256('%s') in pieces of %zu = %s", v[i].msg, piece, hex);
        }
        write_bytes(tmp_path("vec"), v[i].msg, strlen(v[i].msg));
        CHECK_OK(cx_sha256_file(tmp_path("vec"), hex, "test"));
        CHECK(strcmp(hex, v[i].hex) == 0, "sha256 of a file of '%s' = %s", v[i].msg, hex);
    }
    enum { MILLION = 1000000 };
    static const char million_hex[] = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
    char *a = malloc(3 * MILLION);
    memset(a, 'a', 3 * MILLION);
    sha_of(a, MILLION, 1000, hex);
    CHECK(strcmp(hex, million_hex) == 0, "a million 'a' = %s", hex);
    sha_of(a, MILLION, 77777, hex);
    CHECK(strcmp(hex, million_hex) == 0, "a million 'a' in pieces of 77777 = %s", hex);
    write_bytes(tmp_path("million"), a, MILLION);
    CHECK_OK(cx_sha256_file(tmp_path("million"), hex, "test"));
    CHECK(strcmp(hex, million_hex) == 0, "a file of a million 'a' = %s", hex);
    /* a file of several 1 MiB chunks and a partial one equals the digest of its bytes */
    for (size_t i = 0; i < 3 * MILLION; i++) a[i] = (char)(i * 2654435761u >> 13);
    char want[65];
    sha_of(a, 3 * MILLION, 3 * MILLION, want);
    write_bytes(tmp_path("three"), a, 3 * MILLION);
    CHECK_OK(cx_sha256_file(tmp_path("three"), hex, "test"));
    CHECK(strcmp(hex, want) == 0, "a 3 MB file: %s, its bytes %s", hex, want);
    free(a);
    CALL_FAILS("sha256_file_missing", cx_sha256_file(tmp_path("absent"), hex, "circuits_job_create"), CIRCUITS_E_IO,
               "absent");
}

static void check_column(const circuits_dataset *ds, const char *name, const int64_t *want, int64_t n, int64_t width);

/* ---- .npy files numpy wrote ---- */
static int32_t want_value(bool is_signed, int64_t r, int64_t c) { return (int32_t)((r * 5 + c) * 3 - (is_signed ? 7 : 0)); }

static void check_formula(const circuits_dataset *ds, bool is_signed, const char *what)
{
    int64_t n = 0, p = 0;
    CHECK_OK(circuits_dataset_dims(ds, &n, &p));
    CHECK(n == 3 && p == 5, "%s: dims [%lld, %lld]", what, (long long)n, (long long)p);
    const int32_t *v = NULL;
    int64_t w = 0;
    CHECK_OK(circuits_dataset_column(ds, "tokens", &v, &w));
    if (!v || w != 5) return;
    int bad = 0;
    for (int64_t r = 0; r < 3; r++)
        for (int64_t c = 0; c < 5; c++) bad += v[r * 5 + c] != want_value(is_signed, r, c);
    CHECK(bad == 0, "%s: %d values differ from numpy's", what, bad);
}

static void test_npy_numpy(void)
{
    static const char *const files[] = {"i1_le", "i2_le", "i2_be", "i4_le", "i4_be", "i8_le", "i8_be", "u1_le", "u2_le",
                                        "u2_be", "u4_le", "u4_be", "u8_le", "u8_be", "i4_v2", "i4_v3"};
    for (size_t i = 0; i < CX_COUNT(files); i++) {
        char name[64];
        snprintf(name, sizeof name, "npy/%s.npy", files[i]);
        circuits_dataset *ds = NULL;
        CHECK_OK(circuits_dataset_open(&ds, data_path(name), NULL));
        if (ds) check_formula(ds, files[i][0] == 'i', files[i]);
        circuits_dataset_free(ds);
    }
    { /* max_rows: the first rows */
        circuits_dataset_options o;
        circuits_dataset_options_init(&o);
        o.max_rows = 2;
        circuits_dataset *ds = NULL;
        CHECK_OK(circuits_dataset_open(&ds, data_path("npy/i4_be.npy"), &o));
        int64_t want[10];
        for (int i = 0; i < 10; i++) want[i] = want_value(true, i / 5, i % 5);
        CHECK(ds && ds->n_rows == 2, "npy max_rows 2: %lld rows", ds ? (long long)ds->n_rows : -1LL);
        if (ds) check_column(ds, "tokens", want, 10, 5);
        circuits_dataset_free(ds);
    }
    /* the parser's view: versions and byte orders as numpy wrote them */
    size_t n;
    unsigned char *p = read_bytes(data_path("npy/i4_v3.npy"), &n);
    cx_npy a;
    CHECK_OK(cx_npy_parse(&a, p, n, "i4_v3.npy", "test"));
    CHECK(a.version == 3 && a.kind == 'i' && a.itemsize == 4 && !a.big_endian && a.ndim == 2 && a.numel == 15,
          "v3 header parsed as v%d %c%d", a.version, a.kind, a.itemsize);
    free(p);
    p = read_bytes(data_path("npy/u8_be.npy"), &n);
    CHECK_OK(cx_npy_parse(&a, p, n, "u8_be.npy", "test"));
    char d[8];
    cx_npy_descr(&a, d);
    CHECK(a.big_endian && strcmp(d, ">u8") == 0, "u8_be parsed as %s", d);
    free(p);

    circuits_dataset *ds = (circuits_dataset *)&g_tok;
    CALL_FAILS("ds_npy_fortran", circuits_dataset_open(&ds, data_path("npy/fortran.npy"), NULL), CIRCUITS_E_UNSUPPORTED,
               "Fortran-ordered");
    CHECK(ds == NULL, "*out not NULL after a failure");
    CALL_FAILS("ds_npy_float", circuits_dataset_open(&ds, data_path("npy/float32.npy"), NULL), CIRCUITS_E_DTYPE, "'<f4'");
    CALL_FAILS("ds_npy_3d", circuits_dataset_open(&ds, data_path("npy/three_d.npy"), NULL), CIRCUITS_E_SHAPE,
               "shape [2, 2, 2]");
    CALL_FAILS("ds_npy_1d_tokens", circuits_dataset_open(&ds, data_path("npy/column_1d.npy"), NULL), CIRCUITS_E_SHAPE,
               "tokens are [n_rows, pos]");
    CALL_FAILS("ds_npy_i64_range", circuits_dataset_open(&ds, data_path("npy/i8_out_of_range.npy"), NULL),
               CIRCUITS_E_RANGE, "the value 2147483648 at row 1, column 2 does not fit in int32");
    CALL_FAILS("ds_npy_u64_range", circuits_dataset_open(&ds, data_path("npy/u8_out_of_range.npy"), NULL),
               CIRCUITS_E_RANGE, "the value 18446744073709551615 at row 2, column 4");
}

/* ---- hostile .npy files, written here ---- */
/* A .npy image: magic, version, header length (2 or 4 bytes), header, data. */
static size_t npy_image(unsigned char *buf, int version, const char *header, const void *data, size_t nbytes)
{
    size_t h = strlen(header), pre = version == 1 ? 10 : 12;
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)version;
    buf[7] = 0;
    for (size_t i = 0; i < pre - 8; i++) buf[8 + i] = (unsigned char)(h >> (8 * i));
    memcpy(buf + pre, header, h);
    memcpy(buf + pre + h, data, nbytes);
    return pre + h + nbytes;
}

static const char *npy_file(const char *name, int version, const char *header, const void *data, size_t nbytes)
{
    static unsigned char buf[4096];
    size_t n = npy_image(buf, version, header, data, nbytes);
    const char *path = tmp_path(name);
    write_bytes(path, buf, n);
    return path;
}

static void test_npy_hostile(void)
{
    int32_t six[6] = {1, 2, 3, 4, 5, 6};
    const char *good = "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }\n";
    circuits_dataset *ds = NULL;
    CHECK_OK(circuits_dataset_open(&ds, npy_file("good.npy", 1, good, six, sizeof six), NULL));
    circuits_dataset_free(ds);
    /* double-quoted keys and no trailing comma are Python too */
    CHECK_OK(circuits_dataset_open(&ds, npy_file("dq.npy", 1, "{\"descr\":\"<i4\",\"shape\":(2,3),\"fortran_order\":False}", six, sizeof six), NULL));
    circuits_dataset_free(ds);

    const char *p;
    write_bytes(tmp_path("magic.npy"), "\x93NUMPZ\x01\x00\x00\x00", 10);
    CALL_FAILS("ds_npy_magic", circuits_dataset_open(&ds, tmp_path("magic.npy"), NULL), CIRCUITS_E_FORMAT, "no \\x93NUMPY magic");
    write_bytes(tmp_path("short.npy"), "\x93NUMPY\x01", 7);
    CALL_FAILS("ds_npy_truncated", circuits_dataset_open(&ds, tmp_path("short.npy"), NULL), CIRCUITS_E_FORMAT, "short.npy: truncated: 7 bytes");
    write_bytes(tmp_path("empty.npy"), "", 0);
    CALL_FAILS("ds_npy_empty", circuits_dataset_open(&ds, tmp_path("empty.npy"), NULL), CIRCUITS_E_FORMAT, "circuits_dataset_open: ");
    p = npy_file("v4.npy", 1, good, six, sizeof six);
    {
        size_t n;
        unsigned char *b = read_bytes(p, &n);
        b[6] = 4;
        write_bytes(p, b, n);
        free(b);
    }
    CALL_FAILS("ds_npy_version", circuits_dataset_open(&ds, p, NULL), CIRCUITS_E_UNSUPPORTED, "format version 4.0");
    write_bytes(tmp_path("v2short.npy"), "\x93NUMPY\x02\x00\x10\x00", 10);
    CALL_FAILS("ds_npy_v2_length", circuits_dataset_open(&ds, tmp_path("v2short.npy"), NULL), CIRCUITS_E_FORMAT,
               "ends inside its header length");
    write_bytes(tmp_path("hlen.npy"), "\x93NUMPY\x01\x00\xff\x00{'descr'", 17);
    CALL_FAILS("ds_npy_header_past_end", circuits_dataset_open(&ds, tmp_path("hlen.npy"), NULL), CIRCUITS_E_FORMAT,
               "ends inside its header");
    write_bytes(tmp_path("huge.npy"), "\x93NUMPY\x02\x00\x00\x00\x00\x7f", 12);
    CALL_FAILS("ds_npy_header_huge", circuits_dataset_open(&ds, tmp_path("huge.npy"), NULL), CIRCUITS_E_FORMAT,
               "a header of 2130706432 bytes");
    CALL_FAILS("ds_npy_not_dict", circuits_dataset_open(&ds, npy_file("list.npy", 1, "['<i4', False, (2, 3)]", six, sizeof six), NULL),
               CIRCUITS_E_FORMAT, "not a dict literal");
    CALL_FAILS("ds_npy_missing_key", circuits_dataset_open(&ds, npy_file("nokey.npy", 1, "{'descr': '<i4', 'shape': (2, 3)}", six, sizeof six), NULL),
               CIRCUITS_E_FORMAT, "lacks 'fortran_order'");
    CALL_FAILS("ds_npy_extra_key", circuits_dataset_open(&ds, npy_file("extra.npy", 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}", six, sizeof six), NULL),
               CIRCUITS_E_FORMAT, "a key 'x'");
    CALL_FAILS("ds_npy_duplicate_key", circuits_dataset_open(&ds, npy_file("dup.npy", 1, "{'descr': '<i4', 'descr': '<i4', 'fortran_order': False, 'shape': (2, 3)}", six, sizeof six), NULL),
               CIRCUITS_E_FORMAT, "'descr' twice");
    CALL_FAILS("ds_npy_descr_unknown", circuits_dataset_open(&ds, npy_file("c8.npy", 1, "{'descr': '<c8', 'fortran_order': False, 'shape': (2, 3)}", six, sizeof six), NULL),
               CIRCUITS_E_DTYPE, "dtype '<c8'");
    CALL_FAILS("ds_npy_descr_structured", circuits_dataset_open(&ds, npy_file("rec.npy", 1, "{'descr': [('a', '<i4')], 'fortran_order': False, 'shape': (2, 3)}", six, sizeof six), NULL),
               CIRCUITS_E_FORMAT, "structured");
    CALL_FAILS("ds_npy_descr_bar", circuits_dataset_open(&ds, npy_file("bar.npy", 1, "{'descr': '|i4', 'fortran_order': False, 'shape': (2, 3)}", six, sizeof six), NULL),
               CIRCUITS_E_DTYPE, "dtype '|i4'");
    CALL_FAILS("ds_npy_fortran_value", circuits_dataset_open(&ds, npy_file("fo.npy", 1, "{'descr': '<i4', 'fortran_order': 0, 'shape': (2, 3)}", six, sizeof six), NULL),
               CIRCUITS_E_FORMAT, "neither True nor False");
    CALL_FAILS("ds_npy_shape_list", circuits_dataset_open(&ds, npy_file("sl.npy", 1, "{'descr': '<i4', 'fortran_order': False, 'shape': [2, 3]}", six, sizeof six), NULL),
               CIRCUITS_E_FORMAT, "'shape' is not a tuple");
    CALL_FAILS("ds_npy_shape_negative", circuits_dataset_open(&ds, npy_file("sn.npy", 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (-2, 3)}", six, sizeof six), NULL),
               CIRCUITS_E_FORMAT, "other than non-negative integers");
    CALL_FAILS("ds_npy_shape_overflow", circuits_dataset_open(&ds, npy_file("so.npy", 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296)}", six, sizeof six), NULL),
               CIRCUITS_E_FORMAT, "element count overflows");
    CALL_FAILS("ds_npy_data_short", circuits_dataset_open(&ds, npy_file("ds.npy", 1, good, six, 20), NULL),
               CIRCUITS_E_FORMAT, "20 bytes of data, but 6 elements of <i4 take 24");
    int32_t seven[7] = {0};
    CALL_FAILS("ds_npy_data_long", circuits_dataset_open(&ds, npy_file("dl.npy", 1, good, seven, sizeof seven), NULL),
               CIRCUITS_E_FORMAT, "28 bytes of data");
    CALL_FAILS("ds_npy_trailing", circuits_dataset_open(&ds, npy_file("tr.npy", 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3)} x", six, sizeof six), NULL),
               CIRCUITS_E_FORMAT, "something after its dict");
    CALL_FAILS("ds_npy_zero_rows", circuits_dataset_open(&ds, npy_file("z.npy", 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (0, 3)}", six, 0), NULL),
               CIRCUITS_E_SHAPE, "rows and columns must be at least 1");
    {
        unsigned char buf[256];
        const char *h = "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3)}";
        size_t n = npy_image(buf, 1, h, six, sizeof six);
        buf[20] = '\0';
        write_bytes(tmp_path("nul.npy"), buf, n);
    }
    CALL_FAILS("ds_npy_nul", circuits_dataset_open(&ds, tmp_path("nul.npy"), NULL), CIRCUITS_E_FORMAT, "NUL byte");
    CALL_FAILS("ds_open_missing", circuits_dataset_open(&ds, tmp_path("absent.npy"), NULL), CIRCUITS_E_IO, "circuits_dataset_open: cannot open");
    CHECK(ds == NULL, "*out not NULL after failures");
}

/* ---- safetensors datasets ---- */
typedef struct st_int {
    const char *name, *dtype;
    int ndim;
    int64_t shape[3];
    int size;            /* bytes per element */
    const int64_t *vals; /* numel values, stored little-endian in size bytes */
} st_int;

static void write_st_ints(const char *path, const st_int *t, int n)
{
    char h[4096];
    size_t hl = 0, off = 0;
    hl += (size_t)snprintf(h + hl, sizeof h - hl, "{");
    for (int i = 0; i < n; i++) {
        size_t ne = 1;
        for (int d = 0; d < t[i].ndim; d++) ne *= (size_t)t[i].shape[d];
        hl += (size_t)snprintf(h + hl, sizeof h - hl, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "", t[i].name,
                               t[i].dtype);
        for (int d = 0; d < t[i].ndim; d++) hl += (size_t)snprintf(h + hl, sizeof h - hl, d ? ",%lld" : "%lld", (long long)t[i].shape[d]);
        hl += (size_t)snprintf(h + hl, sizeof h - hl, "],\"data_offsets\":[%zu,%zu]}", off, off + ne * (size_t)t[i].size);
        off += ne * (size_t)t[i].size;
    }
    hl += (size_t)snprintf(h + hl, sizeof h - hl, "}");
    while (hl % 8) h[hl++] = ' ';
    unsigned char *buf = malloc(8 + hl + off);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, h, hl);
    size_t at = 8 + hl;
    for (int i = 0; i < n; i++) {
        size_t ne = 1;
        for (int d = 0; d < t[i].ndim; d++) ne *= (size_t)t[i].shape[d];
        for (size_t k = 0; k < ne; k++)
            for (int b = 0; b < t[i].size; b++) buf[at++] = (unsigned char)((uint64_t)t[i].vals[k] >> (8 * b));
    }
    write_bytes(path, buf, at);
    free(buf);
}

static void check_column(const circuits_dataset *ds, const char *name, const int64_t *want, int64_t n, int64_t width)
{
    const int32_t *v = NULL;
    int64_t w = 0;
    CHECK_OK(circuits_dataset_column(ds, name, &v, &w));
    CHECK(w == width, "column %s: width %lld, want %lld", name, (long long)w, (long long)width);
    if (!v || w != width) return;
    int bad = 0;
    for (int64_t i = 0; i < n; i++) bad += v[i] != (int32_t)want[i];
    CHECK(bad == 0, "column %s: %d values differ", name, bad);
}

enum { SR = 4, SP = 6 };
static int64_t s_tok[SR * SP], s_cor[SR * SP], s_ans[SR] = {5, 6, 7, 8}, s_wrong[SR] = {250, 1, 2, 3},
               s_posn[SR] = {5, 4, -1, 0};

static void test_safetensors(void)
{
    for (int i = 0; i < SR * SP; i++) {
        s_tok[i] = (i * 37) % 1000;
        s_cor[i] = (i * 11) % 1000;
    }
    static const char *const dts[] = {"I8", "U8", "I16", "U16", "I32", "U32", "I64", "U64"};
    static const int sizes[] = {1, 1, 2, 2, 4, 4, 8, 8};
    int64_t small[SR * SP];
    for (int i = 0; i < SR * SP; i++) small[i] = i * 5; /* fits every dtype */
    for (size_t d = 0; d < CX_COUNT(dts); d++) {
        st_int t[] = {{"tokens", dts[d], 2, {SR, SP}, sizes[d], small}};
        write_st_ints(tmp_path("dt.safetensors"), t, 1);
        circuits_dataset *ds = NULL;
        CHECK_OK(circuits_dataset_open(&ds, tmp_path("dt.safetensors"), NULL));
        if (ds) check_column(ds, "tokens", small, SR * SP, SP);
        circuits_dataset_free(ds);
    }
    st_int full[] = {
        {"tokens", "I64", 2, {SR, SP}, 8, s_tok},  {"corrupted", "I32", 2, {SR, SP}, 4, s_cor},
        {"answer", "I32", 1, {SR}, 4, s_ans},      {"wrong", "U8", 2, {SR, 1}, 1, s_wrong},
        {"position", "I16", 2, {SR, 1}, 2, s_posn}, {"attention_mask", "I64", 2, {SR, SP}, 8, s_tok},
    };
    write_st_ints(tmp_path("full.safetensors"), full, 6);
    circuits_dataset *ds = NULL;
    CHECK_OK(circuits_dataset_open(&ds, tmp_path("full.safetensors"), NULL));
    if (ds) {
        check_column(ds, "tokens", s_tok, SR * SP, SP);
        check_column(ds, "corrupted", s_cor, SR * SP, SP);
        check_column(ds, "answer", s_ans, SR, 1);
        check_column(ds, "wrong", s_wrong, SR, 1);
        check_column(ds, "position", s_posn, SR, 1);
        CHECK(ds->n_cols == 5, "%zu columns: other tensors are not columns", ds->n_cols);
    }
    circuits_dataset_free(ds);
    /* max_rows: the first rows of every column */
    circuits_dataset_options o;
    circuits_dataset_options_init(&o);
    o.max_rows = 3;
    CHECK_OK(circuits_dataset_open(&ds, tmp_path("full.safetensors"), &o));
    int64_t n = 0, p = 0;
    if (ds) {
        CHECK_OK(circuits_dataset_dims(ds, &n, &p));
        CHECK(n == 3 && p == SP, "max_rows 3: [%lld, %lld]", (long long)n, (long long)p);
        check_column(ds, "corrupted", s_cor, 3 * SP, SP);
        check_column(ds, "position", s_posn, 3, 1);
    }
    circuits_dataset_free(ds);
    /* option tensor */
    st_int named[] = {{"ids", "I32", 2, {SR, SP}, 4, s_tok}};
    write_st_ints(tmp_path("ids.safetensors"), named, 1);
    o.max_rows = 0;
    o.tensor = "ids";
    CHECK_OK(circuits_dataset_open(&ds, tmp_path("ids.safetensors"), &o));
    if (ds) check_column(ds, "tokens", s_tok, SR * SP, SP);
    circuits_dataset_free(ds);
    ds = NULL;

    CALL_FAILS("ds_st_no_tokens", circuits_dataset_open(&ds, tmp_path("ids.safetensors"), NULL), CIRCUITS_E_TENSOR_MISSING,
               "has no tensor 'tokens'");
    st_int fl[] = {{"tokens", "F32", 2, {SR, SP}, 4, s_tok}};
    write_st_ints(tmp_path("f32.safetensors"), fl, 1);
    CALL_FAILS("ds_st_float_tokens", circuits_dataset_open(&ds, tmp_path("f32.safetensors"), NULL), CIRCUITS_E_DTYPE,
               "tensor 'tokens' is F32");
    st_int three[] = {{"tokens", "I32", 3, {2, 2, 6}, 4, s_tok}};
    write_st_ints(tmp_path("3d.safetensors"), three, 1);
    CALL_FAILS("ds_st_3d_tokens", circuits_dataset_open(&ds, tmp_path("3d.safetensors"), NULL), CIRCUITS_E_SHAPE,
               "has shape [2, 2, 6]");
    st_int rows[] = {{"tokens", "I32", 2, {SR, SP}, 4, s_tok}, {"answer", "I32", 1, {SR - 1}, 4, s_ans}};
    write_st_ints(tmp_path("rows.safetensors"), rows, 2);
    CALL_FAILS("ds_st_column_rows", circuits_dataset_open(&ds, tmp_path("rows.safetensors"), NULL), CIRCUITS_E_SHAPE,
               "tensor 'answer' has 3 rows, the tokens 4");
    st_int cw[] = {{"tokens", "I32", 2, {SR, SP}, 4, s_tok}, {"corrupted", "I32", 2, {SR, SP - 1}, 4, s_cor}};
    write_st_ints(tmp_path("cw.safetensors"), cw, 2);
    CALL_FAILS("ds_st_corrupted_width", circuits_dataset_open(&ds, tmp_path("cw.safetensors"), NULL), CIRCUITS_E_SHAPE,
               "'corrupted' has width 5: it is [n_rows, 6]");
    st_int aw[] = {{"tokens", "I32", 2, {SR, SP}, 4, s_tok}, {"answer", "I32", 2, {SR, 2}, 4, s_tok}};
    write_st_ints(tmp_path("aw.safetensors"), aw, 2);
    CALL_FAILS("ds_st_answer_width", circuits_dataset_open(&ds, tmp_path("aw.safetensors"), NULL), CIRCUITS_E_SHAPE,
               "tensor 'answer' has width 2: it is [n_rows, 1]");
    int64_t big[SR] = {1, 2, (int64_t)1 << 40, 4};
    st_int rg[] = {{"tokens", "I32", 2, {SR, SP}, 4, s_tok}, {"position", "I64", 2, {SR, 1}, 8, big}};
    write_st_ints(tmp_path("rg.safetensors"), rg, 2);
    CALL_FAILS("ds_st_range", circuits_dataset_open(&ds, tmp_path("rg.safetensors"), NULL), CIRCUITS_E_RANGE,
               "tensor 'position': the value 1099511627776 at row 2, column 0");
    write_bytes(tmp_path("junk.safetensors"), "\x08\0\0\0\0\0\0\0{nope}  ", 16);
    CALL_FAILS("ds_st_malformed", circuits_dataset_open(&ds, tmp_path("junk.safetensors"), NULL), CIRCUITS_E_FORMAT,
               "circuits_dataset_open: ");
    CHECK(ds == NULL, "*out not NULL after failures");
}

/* ---- text ---- */
static circuits_dataset *open_text(const char *path, int64_t seq_len, int bos, int64_t max_rows, const char *column)
{
    circuits_dataset_options o;
    circuits_dataset_options_init(&o);
    o.tokenizer = g_tok;
    o.seq_len = seq_len;
    o.prepend_bos = bos;
    o.max_rows = max_rows;
    o.column = column;
    circuits_dataset *ds = NULL;
    CHECK_OK(circuits_dataset_open(&ds, path, &o));
    return ds;
}

/* The dataset's tokens equal the rows of a reference .npy. */
static void check_rows(const circuits_dataset *ds, const char *ref, const char *what)
{
    circuits_dataset *want = NULL;
    CHECK_OK(circuits_dataset_open(&want, data_path(ref), NULL));
    if (!ds || !want) {
        circuits_dataset_free(want);
        CHECK(false, "%s: no dataset", what);
        return;
    }
    CHECK(ds->n_rows == want->n_rows && ds->pos == want->pos, "%s: [%lld, %lld], the reference [%lld, %lld]", what,
          (long long)ds->n_rows, (long long)ds->pos, (long long)want->n_rows, (long long)want->pos);
    if (ds->n_rows == want->n_rows && ds->pos == want->pos) {
        int64_t bad = 0, first = -1;
        for (int64_t i = 0; i < ds->n_rows * ds->pos; i++)
            if (ds->cols[0].values[i] != want->cols[0].values[i]) {
                if (first < 0) first = i;
                bad++;
            }
        CHECK(bad == 0, "%s: %lld tokens differ from the Hugging Face reference (first at row %lld, position %lld)",
              what, (long long)bad, (long long)(first / (ds->pos ? ds->pos : 1)), (long long)(first % (ds->pos ? ds->pos : 1)));
    }
    circuits_dataset_free(want);
}

static void test_text(void)
{
    circuits_dataset *ds;
    ds = open_text(data_path("corpus.txt"), 32, 1, 0, NULL);
    check_rows(ds, "rows_txt_s32_bos.npy", "corpus.txt seq_len 32");
    { /* the digest is the contents': text and the .npy of its rows agree */
        circuits_dataset *npy = NULL;
        char a[65] = "", b[65] = "x";
        CHECK_OK(circuits_dataset_open(&npy, data_path("rows_txt_s32_bos.npy"), NULL));
        if (ds && npy) {
            CHECK_OK(circuits_dataset_digest(ds, a));
            CHECK_OK(circuits_dataset_digest(npy, b));
        }
        CHECK(strcmp(a, b) == 0, "text and .npy of the same rows: digests %s, %s", a, b);
        circuits_dataset_free(npy);
    }
    circuits_dataset_free(ds);
    ds = open_text(data_path("corpus.txt"), 17, 0, 0, NULL);
    check_rows(ds, "rows_txt_s17_nobos.npy", "corpus.txt seq_len 17 without BOS");
    circuits_dataset_free(ds);
    ds = open_text(data_path("corpus.txt"), 32, 1, 5, NULL);
    check_rows(ds, "rows_txt_s32_bos_max5.npy", "corpus.txt max_rows 5");
    circuits_dataset_free(ds);
    ds = open_text(data_path("corpus.jsonl"), 24, 1, 0, NULL);
    check_rows(ds, "rows_jsonl_s24_bos.npy", "corpus.jsonl");
    circuits_dataset_free(ds);
    /* CRLF and CR line ends are line ends (universal newlines, as the text loader opens files) */
    size_t n;
    unsigned char *txt = read_bytes(data_path("corpus.txt"), &n);
    char *crlf = malloc(2 * n + 1), *cr = malloc(n + 1);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (txt[i] == '\n') crlf[m++] = '\r';
        crlf[m++] = (char)txt[i];
        cr[i] = txt[i] == '\n' ? '\r' : (char)txt[i];
    }
    write_bytes(tmp_path("crlf.txt"), crlf, m);
    write_bytes(tmp_path("cr.txt"), cr, n);
    ds = open_text(tmp_path("crlf.txt"), 32, 1, 0, NULL);
    check_rows(ds, "rows_txt_s32_bos.npy", "corpus with CRLF");
    circuits_dataset_free(ds);
    ds = open_text(tmp_path("cr.txt"), 32, 1, 0, NULL);
    check_rows(ds, "rows_txt_s32_bos.npy", "corpus with CR");
    circuits_dataset_free(ds);
    /* a final newline ends the last document: no empty document after it */
    memcpy(crlf, txt, n);
    crlf[n] = '\n';
    write_bytes(tmp_path("final.txt"), crlf, n + 1);
    ds = open_text(tmp_path("final.txt"), 32, 1, 0, NULL);
    check_rows(ds, "rows_txt_s32_bos.npy", "corpus with a final newline");
    circuits_dataset_free(ds);
    /* the jsonl column option: the same documents under another key */
    FILE *f = fopen(tmp_path("body.jsonl"), "w");
    FILE *src = fopen(data_path("corpus.jsonl"), "r");
    char line[4096];
    while (src && fgets(line, sizeof line, src)) {
        char *k = strstr(line, "\"text\"");
        if (k) memcpy(k, "\"body\"", 6);
        fputs(line, f);
    }
    if (src) fclose(src);
    fclose(f);
    ds = open_text(tmp_path("body.jsonl"), 24, 1, 0, "body");
    check_rows(ds, "rows_jsonl_s24_bos.npy", "corpus.jsonl column body");
    circuits_dataset_free(ds);
    /* a document split over the buffer's refills: a line of 200,000 bytes (the reader starts at 64 KiB) */
    {
        size_t L = 200000;
        char *big = malloc(L + 16);
        memcpy(big, "first\r", 6);
        for (size_t i = 6; i < L; i++) big[i] = (char)('a' + i % 23);
        memcpy(big + L, "\r\nlast\r", 7);
        write_bytes(tmp_path("big.txt"), big, L + 7);
        circuits_dataset *d2 = open_text(tmp_path("big.txt"), 64, 1, 0, NULL);
        /* the expected ids: encode each document and join by hand */
        int32_t *ids = malloc(sizeof(int32_t) * (L + 64));
        size_t k = 0, got = 0;
        const char *docs[3] = {"first", big + 6, "last"};
        size_t lens[3] = {5, L - 6, 4};
        circuits_encode_options eo;
        circuits_encode_options_init(&eo);
        for (int d = 0; d < 3; d++) {
            if (d) ids[k++] = circuits_tokenizer_eos_id(g_tok);
            CHECK_OK(circuits_tokenizer_encode(g_tok, docs[d], lens[d], &eo, ids + k, L + 64 - k, &got));
            k += got;
        }
        int64_t rows = (int64_t)k / 63, bad = 0;
        CHECK(d2 && d2->n_rows == rows, "a long line: %lld rows, want %lld", d2 ? (long long)d2->n_rows : -1LL, (long long)rows);
        for (int64_t r = 0; d2 && r < rows && r < d2->n_rows; r++) {
            bad += d2->cols[0].values[r * 64] != circuits_tokenizer_bos_id(g_tok);
            for (int64_t i = 0; i < 63; i++) bad += d2->cols[0].values[r * 64 + 1 + i] != ids[r * 63 + i];
        }
        CHECK(bad == 0, "a long line: %lld tokens differ", (long long)bad);
        circuits_dataset_free(d2);
        free(ids);
        free(big);
    }
    free(txt);
    free(crlf);
    free(cr);
}

static void test_text_hostile(void)
{
    circuits_dataset_options o;
    circuits_dataset_options_init(&o);
    o.tokenizer = g_tok;
    o.seq_len = 8;
    circuits_dataset *ds = NULL;
    const char *p = tmp_path("bad.jsonl");
    write_bytes(p, "{\"text\": \"a b c d e f g h i j\"}\n{\"text\": \"ok\"\n", 46);
    CALL_FAILS("ds_jsonl_bad_json", circuits_dataset_open(&ds, p, &o), CIRCUITS_E_FORMAT, "line 2 is not valid JSON");
    p = tmp_path("array.jsonl");
    write_bytes(p, "\n[\"text\"]\n", 10);
    CALL_FAILS("ds_jsonl_not_object", circuits_dataset_open(&ds, p, &o), CIRCUITS_E_FORMAT, "line 2 is an array, not a JSON object");
    p = tmp_path("nofield.jsonl");
    write_bytes(p, "{\"txt\": \"hello\"}\n", 18);
    CALL_FAILS("ds_jsonl_missing_field", circuits_dataset_open(&ds, p, &o), CIRCUITS_E_FORMAT, "line 1 has no field 'text'");
    p = tmp_path("number.jsonl");
    write_bytes(p, "{\"text\": \"hello there\"}\n{\"text\": 42}\n", 38);
    CALL_FAILS("ds_jsonl_field_type", circuits_dataset_open(&ds, p, &o), CIRCUITS_E_FORMAT, "line 2: field 'text' is a number, not a string");
    p = tmp_path("dupkey.jsonl");
    write_bytes(p, "{\"text\": \"a\", \"text\": \"b\"}\n", 28);
    CALL_FAILS("ds_jsonl_duplicate_key", circuits_dataset_open(&ds, p, &o), CIRCUITS_E_FORMAT, "line 1 is not valid JSON");
    p = tmp_path("trail.jsonl");
    write_bytes(p, "{\"text\": \"a\"} {}\n", 17);
    CALL_FAILS("ds_jsonl_two_values", circuits_dataset_open(&ds, p, &o), CIRCUITS_E_FORMAT, "line 1 is not valid JSON");
    p = tmp_path("short.txt");
    write_bytes(p, "hi\n", 3);
    CALL_FAILS("ds_text_no_row", circuits_dataset_open(&ds, p, &o), CIRCUITS_E_SHAPE, "its 1 documents make no whole row of 8 tokens");
    {
        size_t L = CX_DS_MAX_LINE + 10;
        char *big = malloc(L);
        memset(big, 'a', L);
        write_bytes(tmp_path("long.txt"), big, L);
        free(big);
    }
    CALL_FAILS("ds_text_line_too_long", circuits_dataset_open(&ds, tmp_path("long.txt"), &o), CIRCUITS_E_FORMAT,
               "line 1 is longer than 67108864 bytes");
    unlink(tmp_path("long.txt"));
    CALL_FAILS("ds_text_missing", circuits_dataset_open(&ds, tmp_path("absent.txt"), &o), CIRCUITS_E_IO, "absent.txt");
    o.tokenizer = NULL;
    CALL_FAILS("ds_text_no_tokenizer", circuits_dataset_open(&ds, data_path("corpus.txt"), &o), CIRCUITS_E_INVALID_ARGUMENT,
               "the option tokenizer is needed");
    o.tokenizer = g_tok;
    o.seq_len = 1;
    CALL_FAILS("ds_text_seq_len", circuits_dataset_open(&ds, data_path("corpus.txt"), &o), CIRCUITS_E_INVALID_ARGUMENT,
               "seq_len 1 is not in 2 ..");
    o.seq_len = 8;
    o.prepend_bos = 2;
    CALL_FAILS("ds_text_prepend_bos", circuits_dataset_open(&ds, data_path("corpus.txt"), &o), CIRCUITS_E_INVALID_ARGUMENT,
               "prepend_bos 2");
    o.prepend_bos = 1;
    o.max_rows = -1;
    CALL_FAILS("ds_max_rows", circuits_dataset_open(&ds, data_path("corpus.txt"), &o), CIRCUITS_E_INVALID_ARGUMENT,
               "max_rows -1 is negative");
    o.max_rows = 0;
    CALL_FAILS("ds_open_extension", circuits_dataset_open(&ds, data_path("corpus.csv"), &o), CIRCUITS_E_UNSUPPORTED,
               "unknown dataset extension");
    circuits_dataset_options small = o;
    small.size = 8;
    CALL_FAILS("ds_options_size", circuits_dataset_open(&ds, data_path("corpus.txt"), &small), CIRCUITS_E_VERSION,
               "circuits_dataset_open");
    CALL_FAILS("ds_open_null", circuits_dataset_open(NULL, data_path("corpus.txt"), &o), CIRCUITS_E_INVALID_ARGUMENT,
               "out and path must not be NULL");
    /* tokenizers without EOS, or without BOS */
    char dir[700];
    snprintf(dir, sizeof dir, "%s/toktok", g_tmp);
    CHECK(mkdir(dir, 0700) == 0, "mkdir");
    write_str(tmp_path("toktok/vocab.json"), "{\"a\": 0, \"b\": 1, \"c\": 2, \"\\u0120\": 3}");
    write_str(tmp_path("toktok/merges.txt"), "#version: 0.2\n");
    circuits_tokenizer *bare = NULL;
    CHECK_OK(circuits_tokenizer_load(&bare, dir));
    o.tokenizer = bare;
    if (bare) {
        CALL_FAILS("ds_text_no_eos", circuits_dataset_open(&ds, data_path("corpus.txt"), &o), CIRCUITS_E_UNSUPPORTED,
                   "the tokenizer has no EOS token");
        circuits_tokenizer_free(bare);
    }
    write_str(tmp_path("toktok/special_tokens_map.json"), "{\"eos_token\": \"c\"}");
    bare = NULL;
    CHECK_OK(circuits_tokenizer_load(&bare, dir));
    o.tokenizer = bare;
    if (bare) {
        CHECK(circuits_tokenizer_eos_id(bare) == 2 && circuits_tokenizer_bos_id(bare) < 0, "eos %d bos %d",
              circuits_tokenizer_eos_id(bare), circuits_tokenizer_bos_id(bare));
        CALL_FAILS("ds_text_no_bos", circuits_dataset_open(&ds, data_path("corpus.txt"), &o), CIRCUITS_E_UNSUPPORTED,
                   "the tokenizer has no BOS token");
        o.prepend_bos = 0;
        write_bytes(tmp_path("abc.txt"), "abcab\nccba", 10);
        CHECK_OK(circuits_dataset_open(&ds, tmp_path("abc.txt"), &o)); /* rows without BOS need none */
        /* a b c a b EOS(c) c c b a: rows of 8, the tail dropped */
        static const int64_t want[8] = {0, 1, 2, 0, 1, 2, 2, 2};
        if (ds) check_column(ds, "tokens", want, 8, 8);
        circuits_dataset_free(ds);
        ds = NULL;
        circuits_tokenizer_free(bare);
    }
    unlink(tmp_path("toktok/vocab.json"));
    unlink(tmp_path("toktok/merges.txt"));
    unlink(tmp_path("toktok/special_tokens_map.json"));
    rmdir(dir);
    CHECK(ds == NULL, "*out not NULL after failures");
}

/* ---- columns and the digest ---- */
static void put_le(unsigned char **p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++) *(*p)++ = (unsigned char)(v >> (8 * i));
}

/* The canonical serialization (docs/jobs.md "Datasets"), written out by hand, hashed with cx_sha256. */
typedef struct col_spec { const char *name; int64_t width; const int32_t *v; } col_spec;

static void canonical_digest(int64_t n_rows, int64_t pos, const col_spec *cols, int n, char *hex)
{
    unsigned char *buf = malloc(1 << 16), *p = buf;
    put_le(&p, (uint64_t)n_rows, 8);
    put_le(&p, (uint64_t)pos, 8);
    for (int i = 0; i < n; i++) { /* cols given in name order */
        memcpy(p, cols[i].name, strlen(cols[i].name) + 1);
        p += strlen(cols[i].name) + 1;
        put_le(&p, (uint64_t)cols[i].width, 8);
        for (int64_t k = 0; k < n_rows * cols[i].width; k++) put_le(&p, (uint32_t)cols[i].v[k], 4);
    }
    sha_of(buf, (size_t)(p - buf), 1 << 16, hex);
    free(buf);
}

static void test_columns_digest(void)
{
    enum { R = 3, P = 4 };
    int32_t tok[R * P], cor[R * P], ans[R] = {7, -8, 9}, two[R * 2] = {1, 2, 3, 4, 5, 6};
    for (int i = 0; i < R * P; i++) {
        tok[i] = i * 13 - 20;
        cor[i] = 1000 + i;
    }
    circuits_dataset *ds = NULL, *ds2 = NULL;
    CHECK_OK(circuits_dataset_from_tokens(&ds, tok, R, P));
    if (!ds) return;
    tok[0] = 999; /* copied: the dataset keeps what it was given */
    CHECK(ds->cols[0].values[0] == -20, "from_tokens copies");
    tok[0] = -20;
    char hex[65], want[65];
    CHECK_OK(circuits_dataset_digest(ds, hex));
    col_spec only[] = {{"tokens", P, tok}};
    canonical_digest(R, P, only, 1, want);
    CHECK(strcmp(hex, want) == 0, "digest of tokens: %s, canonical %s", hex, want);

    CHECK_OK(circuits_dataset_set_column(ds, "corrupted", cor, R, P));
    CHECK_OK(circuits_dataset_set_column(ds, "answer", ans, R, 1));
    CHECK_OK(circuits_dataset_set_column(ds, "pairs", two, R, 2));
    ans[0] = 0; /* copied */
    check_column(ds, "answer", (const int64_t[]){7, -8, 9}, R, 1);
    ans[0] = 7;
    CHECK_OK(circuits_dataset_digest(ds, hex));
    col_spec all[] = {{"answer", 1, ans}, {"corrupted", P, cor}, {"pairs", 2, two}, {"tokens", P, tok}};
    canonical_digest(R, P, all, 4, want);
    CHECK(strcmp(hex, want) == 0, "digest of four columns: %s, canonical %s", hex, want);

    /* the order columns were set in does not matter */
    CHECK_OK(circuits_dataset_from_tokens(&ds2, tok, R, P));
    CHECK_OK(circuits_dataset_set_column(ds2, "pairs", two, R, 2));
    CHECK_OK(circuits_dataset_set_column(ds2, "answer", ans, R, 1));
    CHECK_OK(circuits_dataset_set_column(ds2, "corrupted", cor, R, P));
    char hex2[65];
    CHECK_OK(circuits_dataset_digest(ds2, hex2));
    CHECK(strcmp(hex, hex2) == 0, "column order changed the digest");
    /* any value, name, width or shape changes it */
    int32_t ans2[R] = {7, -8, 10};
    CHECK_OK(circuits_dataset_set_column(ds2, "answer", ans2, R, 1)); /* replace */
    check_column(ds2, "answer", (const int64_t[]){7, -8, 10}, R, 1);
    CHECK_OK(circuits_dataset_digest(ds2, hex2));
    CHECK(strcmp(hex, hex2) != 0, "a changed value kept the digest");
    circuits_dataset_free(ds2);
    ds2 = NULL;
    CHECK_OK(circuits_dataset_from_tokens(&ds2, tok, R, P));
    CHECK_OK(circuits_dataset_set_column(ds2, "pairz", two, R, 2));
    CHECK_OK(circuits_dataset_digest(ds2, hex2));
    col_spec renamed[] = {{"pairz", 2, two}, {"tokens", P, tok}};
    canonical_digest(R, P, renamed, 2, want);
    CHECK(strcmp(hex2, want) == 0, "digest with 'pairz' is canonical");
    col_spec orig[] = {{"pairs", 2, two}, {"tokens", P, tok}};
    canonical_digest(R, P, orig, 2, want);
    CHECK(strcmp(hex2, want) != 0, "a renamed column kept the digest");
    circuits_dataset_free(ds2);
    ds2 = NULL;
    CHECK_OK(circuits_dataset_from_tokens(&ds2, tok, R, P));
    CHECK_OK(circuits_dataset_set_column(ds2, "pairs", two, R, 2));
    char a[65];
    CHECK_OK(circuits_dataset_digest(ds2, a));
    CHECK_OK(circuits_dataset_set_column(ds2, "pairs", two, R, 1)); /* the same first values, another width */
    CHECK_OK(circuits_dataset_digest(ds2, hex2));
    CHECK(strcmp(a, hex2) != 0, "another width kept the digest");
    circuits_dataset_free(ds2);
    ds2 = NULL;
    CHECK_OK(circuits_dataset_from_tokens(&ds2, tok, P, R)); /* the same values as [4, 3] */
    CHECK_OK(circuits_dataset_digest(ds2, hex2));
    canonical_digest(R, P, only, 1, want);
    CHECK(strcmp(hex2, want) != 0, "a reshaped dataset kept the digest");
    circuits_dataset_free(ds2);
    ds2 = NULL;

    /* load_column: .npy (1-D as width 1; 2-D) and safetensors */
    CHECK_OK(circuits_dataset_load_column(ds, "position", data_path("npy/column_1d.npy"), NULL));
    check_column(ds, "position", (const int64_t[]){0, 11, 22}, R, 1);
    CHECK_OK(circuits_dataset_load_column(ds, "grid", data_path("npy/i2_be.npy"), NULL));
    int64_t grid[15];
    for (int i = 0; i < 15; i++) grid[i] = want_value(true, i / 5, i % 5);
    check_column(ds, "grid", grid, 15, 5);
    int64_t w3[R] = {4, 5, 6};
    st_int st[] = {{"wrong_ids", "U16", 2, {R, 1}, 2, w3}, {"wrong", "I8", 1, {R}, 1, w3}};
    write_st_ints(tmp_path("cols.safetensors"), st, 2);
    CHECK_OK(circuits_dataset_load_column(ds, "wrong", tmp_path("cols.safetensors"), "wrong_ids"));
    check_column(ds, "wrong", w3, R, 1);
    CHECK_OK(circuits_dataset_load_column(ds, "wrong", tmp_path("cols.safetensors"), NULL));
    check_column(ds, "wrong", w3, R, 1);

    const int32_t *v = NULL;
    int64_t width = 0;
    CALL_FAILS("ds_column_missing", circuits_dataset_column(ds, "labels", &v, &width), CIRCUITS_E_NOT_FOUND,
               "the dataset has no column 'labels'");
    CALL_FAILS("ds_column_null", circuits_dataset_column(NULL, "tokens", &v, &width), CIRCUITS_E_INVALID_ARGUMENT,
               "ds and name must not be NULL");
    CALL_FAILS("ds_set_tokens", circuits_dataset_set_column(ds, "tokens", tok, R, P), CIRCUITS_E_INVALID_ARGUMENT,
               "'tokens' cannot be replaced");
    CALL_FAILS("ds_set_rows", circuits_dataset_set_column(ds, "x", tok, R + 1, 1), CIRCUITS_E_SHAPE,
               "'x' has shape [4, 1]: it needs the dataset's 3 rows");
    CALL_FAILS("ds_set_width", circuits_dataset_set_column(ds, "x", tok, R, 0), CIRCUITS_E_SHAPE, "a width of at least 1");
    CALL_FAILS("ds_set_corrupted_width", circuits_dataset_set_column(ds, "corrupted", tok, R, 2), CIRCUITS_E_SHAPE,
               "'corrupted' has width 2: it is [n_rows, 4] (the tokens' pos)");
    CALL_FAILS("ds_set_answer_width", circuits_dataset_set_column(ds, "answer", two, R, 2), CIRCUITS_E_SHAPE,
               "'answer' has width 2: it is [n_rows, 1]");
    CALL_FAILS("ds_set_name", circuits_dataset_set_column(ds, "", tok, R, 1), CIRCUITS_E_INVALID_ARGUMENT,
               "a column name has 1 .. 255 bytes, not 0");
    CALL_FAILS("ds_set_null", circuits_dataset_set_column(ds, "x", NULL, R, 1), CIRCUITS_E_INVALID_ARGUMENT,
               "ds, name and values must not be NULL");
    CALL_FAILS("ds_load_rows", circuits_dataset_load_column(ds, "answer", data_path("rows_txt_s32_bos_max5.npy"), NULL),
               CIRCUITS_E_SHAPE, "has 5 rows, the dataset 3");
    CALL_FAILS("ds_load_width", circuits_dataset_load_column(ds, "answer", data_path("npy/i4_le.npy"), NULL),
               CIRCUITS_E_SHAPE, "i4_le.npy as 'answer' has width 5: it is [n_rows, 1]");
    CALL_FAILS("ds_load_tensor_missing", circuits_dataset_load_column(ds, "answer", tmp_path("cols.safetensors"), "nope"),
               CIRCUITS_E_TENSOR_MISSING, "has no tensor 'nope'");
    CALL_FAILS("ds_load_extension", circuits_dataset_load_column(ds, "answer", data_path("corpus.txt"), NULL),
               CIRCUITS_E_UNSUPPORTED, "a column is read from .npy or .safetensors");
    CALL_FAILS("ds_load_tokens", circuits_dataset_load_column(ds, "tokens", data_path("npy/i4_le.npy"), NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "'tokens' cannot be replaced");
    CALL_FAILS("ds_load_null", circuits_dataset_load_column(ds, "answer", NULL, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "ds, name and path must not be NULL");
    CALL_FAILS("ds_from_tokens_shape", circuits_dataset_from_tokens(&ds2, tok, 0, P), CIRCUITS_E_SHAPE,
               "tokens shape [0, 4]");
    CALL_FAILS("ds_from_tokens_null", circuits_dataset_from_tokens(&ds2, NULL, R, P), CIRCUITS_E_INVALID_ARGUMENT,
               "out and tokens must not be NULL");
    CALL_FAILS("ds_digest_null", circuits_dataset_digest(ds, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "ds and out must not be NULL");
    CALL_FAILS("ds_dims_null", circuits_dataset_dims(NULL, NULL, NULL), CIRCUITS_E_INVALID_ARGUMENT, "ds is NULL");
    /* failed calls changed nothing */
    CHECK_OK(circuits_dataset_digest(ds, hex2));
    CHECK_OK(circuits_dataset_set_column(ds, "grid2", (const int32_t[]){0, 11, 22}, R, 1));
    circuits_dataset_free(ds);
    circuits_dataset_free(NULL);
}

/* ---- every allocation failed in turn ---- */
static void fault_open(const char *what, const char *path, const circuits_dataset_options *base)
{
    circuits_dataset_options o = *base;
    char want[65] = "", got[65];
    circuits_dataset *ds = NULL;
    CHECK_OK(circuits_dataset_open(&ds, path, &o));
    if (ds) CHECK_OK(circuits_dataset_digest(ds, want));
    circuits_dataset_free(ds);
    long k = 0;
    for (; k < 100000; k++) {
        long live = cx_live_allocations();
        long long bytes = cx_live_bytes();
        ds = (circuits_dataset *)&g_tok;
        circuits_clear_error();
        cx_fault_fail_after(k, true);
        int rc = circuits_dataset_open(&ds, path, &o);
        long injected = cx_fault_injected();
        cx_fault_disarm();
        if (rc == CIRCUITS_OK) {
            CHECK(ds != NULL, "%s: no dataset", what);
            if (ds) CHECK_OK(circuits_dataset_digest(ds, got));
            CHECK(strcmp(got, want) == 0, "%s: k=%ld: a success with another digest", what, k);
            circuits_dataset_free(ds);
            if (!injected) break;
            continue;
        }
        CHECK(rc == CIRCUITS_E_OUT_OF_MEMORY, "%s: k=%ld: status %d (%s)", what, k, rc, circuits_last_error());
        CHECK(strstr(circuits_last_error(), "memory") != NULL, "%s: k=%ld: message '%s'", what, k, circuits_last_error());
        CHECK(ds == NULL, "%s: k=%ld: *out not NULL", what, k);
        CHECK(cx_live_allocations() == live && cx_live_bytes() == bytes, "%s: k=%ld: live %ld -> %ld", what, k, live,
              cx_live_allocations());
        if (tu_failures > 50) break;
    }
    printf("%-40s %6ld allocation sites\n", what, k);
}

static void fault_columns(void)
{
    int32_t tok[12], col[12];
    for (int i = 0; i < 12; i++) tok[i] = i, col[i] = 100 - i;
    circuits_dataset *ds = NULL;
    CHECK_OK(circuits_dataset_from_tokens(&ds, tok, 3, 4));
    if (!ds) return;
    CHECK_OK(circuits_dataset_set_column(ds, "answer", col, 3, 1));
    static const char *const what[] = {"set_column add", "set_column replace", "load_column .npy",
                                       "load_column safetensors", "digest"};
    for (int op = 0; op < 5; op++) {
        long k = 0;
        for (; k < 100000; k++) {
            char before[65], after[65];
            CHECK_OK(circuits_dataset_digest(ds, before));
            size_t n_cols = ds->n_cols;
            long live = cx_live_allocations();
            long long bytes = cx_live_bytes();
            cx_fault_fail_after(k, true);
            int rc;
            switch (op) {
            case 0: rc = circuits_dataset_set_column(ds, "extra", col, 3, 2); break;
            case 1: rc = circuits_dataset_set_column(ds, "answer", col + 1, 3, 1); break;
            case 2: rc = circuits_dataset_load_column(ds, "position", data_path("npy/column_1d.npy"), NULL); break;
            case 3: rc = circuits_dataset_load_column(ds, "wrong", tmp_path("cols.safetensors"), "wrong_ids"); break;
            default: rc = circuits_dataset_digest(ds, after); break;
            }
            long injected = cx_fault_injected();
            cx_fault_disarm();
            if (rc == CIRCUITS_OK) {
                if (op < 4) { /* undo, for the next k: drop the column again (internal: the test owns ds) */
                    if (op == 1) CHECK_OK(circuits_dataset_set_column(ds, "answer", col, 3, 1));
                    else {
                        cx_ds_column *c = &ds->cols[--ds->n_cols];
                        cx_free(c->name);
                        cx_free(c->values);
                    }
                }
                if (!injected) break;
                continue;
            }
            CHECK(rc == CIRCUITS_E_OUT_OF_MEMORY, "%s: k=%ld: status %d (%s)", what[op], k, rc, circuits_last_error());
            CHECK(ds->n_cols == n_cols && cx_live_allocations() == live && cx_live_bytes() == bytes,
                  "%s: k=%ld: columns %zu -> %zu, live %ld -> %ld", what[op], k, n_cols, ds->n_cols, live,
                  cx_live_allocations());
            CHECK_OK(circuits_dataset_digest(ds, after));
            CHECK(strcmp(before, after) == 0, "%s: k=%ld: a failed call changed the dataset", what[op], k);
            if (tu_failures > 50) break;
        }
        printf("%-40s %6ld allocation sites\n", what[op], k);
    }
    circuits_dataset_free(ds);
}

static void test_failure_injection(void)
{
    circuits_dataset_options o;
    circuits_dataset_options_init(&o);
    fault_open("open .npy (v1, big-endian)", data_path("npy/i8_be.npy"), &o);
    fault_open("open .npy (v3)", data_path("npy/i4_v3.npy"), &o);
    fault_open("open safetensors with columns", tmp_path("full.safetensors"), &o);
    o.tokenizer = g_tok;
    o.seq_len = 16;
    fault_open("open .txt", data_path("corpus.txt"), &o);
    o.max_rows = 3;
    fault_open("open .jsonl, max_rows 3", data_path("corpus.jsonl"), &o);
    fault_columns();
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s DATASETS_DIR TOKENIZER_DIR [-v]\n", argv[0]);
        return 2;
    }
    g_data = argv[1];
    g_tokdir = argv[2];
    cat_verbose = argc > 3 && strcmp(argv[3], "-v") == 0;
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 2;
    }
    cat_tmp = g_tmp;
    cat_data = g_data;
    if (circuits_tokenizer_load(&g_tok, g_tokdir) != CIRCUITS_OK) {
        fprintf(stderr, "FATAL: %s\n", circuits_last_error());
        return 2;
    }
    test_sha256();
    test_npy_numpy();
    test_npy_hostile();
    test_safetensors();
    test_text();
    test_text_hostile();
    test_columns_digest();
    test_failure_injection();
    circuits_tokenizer_free(g_tok);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmp);
    return tu_finish("test_dataset");
}
