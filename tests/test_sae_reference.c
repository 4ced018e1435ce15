/* SAEs and transcoders against SAELens itself (tests/reference/generate_saes.py, README "SAEs and
 * transcoders against SAELens"; issue 17 "Proof"). For every case in SAES_DIR: the model loaded as
 * circuits_model_load loads it by default (processed, as from_pretrained), each SAE directory that
 * SAELens 6.54.12 wrote loaded with circuits_sae_load, and
 *   - circuits_sae_get_info against the manifest (architecture, sizes, settings, hook names);
 *   - circuits_sae_encode (acts_pre, acts_post) and circuits_sae_decode on the fixed rows against
 *     sae.encode / sae.decode (skip transcoders: against sae.forward, x W_skip^T included);
 *   - every recorded HookedSAETransformer run (circuits_context_add_sae in SAELens's attachment
 *     order, with the run's use_error_term, a registered hook zeroing latent 3 of hook_sae_acts_post
 *     for the edit runs) through circuits_context_run_with_cache: the logits and every hook_sae_*
 *     value, and the cache's key list and order (SAELens's, without the blocks.L.mlp.hook_in
 *     points HookedSAETransformer adds; the replaced point absent).
 * Each tensor is held to max |C - SAELens| <= 2e-5 * max(max |ref|, 1e-3) (the issue asks 1e-4; the
 * worst measured is 1.8e-6, and every input is >= 2e-3 from a jump). Skip transcoders'
 * spliced runs are compared with ":skip_errN" (W_skip kept, as SkipTranscoder.forward computes):
 * SAELens's HookedSAETransformer leaves W_skip out (its ":errN" runs; README). Prints the worst
 * error per architecture and value.
 * Usage: test_sae_reference CASES_DIR SAES_DIR [CASE ...] (default: every case in SAES_DIR). */
#include "testutil.h"

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>

#include "../lib/io/safetensors.h"
#include "reference_get.h"

#define TOL 2e-5
#define FLOOR 1e-3
#define MAX_REPORTS 40

/* the values compared, columns of the table */
enum { V_ENC_PRE, V_ENC_POST, V_DECODE, V_INPUT, V_PRE, V_POST, V_RECONS, V_ERROR, V_OUTPUT, V_LOGITS, N_V };
static const char *v_name[N_V] = {"enc.pre", "enc.post", "decode", "sae_input", "acts_pre", "acts_post",
                                  "recons", "error", "output", "logits"};

/* rows of the table: architectures (cfg.json's names), and the several-at-once runs */
#define MAX_ARCH 16
static char arch_row[MAX_ARCH][40];
static double worst[MAX_ARCH][N_V];
static char worst_where[MAX_ARCH][N_V][160];
static int n_arch;
static size_t n_failed, n_tensors;
static const char *case_name;

static int arch_index(const char *arch)
{
    for (int i = 0; i < n_arch; i++)
        if (strcmp(arch_row[i], arch) == 0) return i;
    if (n_arch == MAX_ARCH) return MAX_ARCH - 1;
    snprintf(arch_row[n_arch], sizeof arch_row[n_arch], "%s", arch);
    for (int v = 0; v < N_V; v++) worst[n_arch][v] = NAN;
    return n_arch++;
}

static void fail(const char *fmt, ...)
{
    n_failed++;
    tu_failures++;
    if (n_failed <= MAX_REPORTS) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "FAIL %s: ", case_name);
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\n");
        va_end(ap);
    }
}

/* got (ndim / shape / strides as a circuits_tensor; cols_limit > 0 compares only the first
 * cols_limit entries of the last axis, the stored logit columns) against reference `key`. */
static void compare(int row, int v, const char *key, const circuits_tensor *got, int64_t cols_limit)
{
    tu_checks++;
    n_tensors++;
    const cx_st_tensor *e = cx_st_find(ref, key);
    if (!e) {
        fail("%s: no reference", key);
        return;
    }
    int64_t shape[CIRCUITS_MAX_DIMS];
    for (int d = 0; d < got->ndim; d++) shape[d] = got->shape[d];
    if (cols_limit > 0 && got->ndim > 0 && shape[got->ndim - 1] > cols_limit) shape[got->ndim - 1] = cols_limit;
    bool same = e->ndim == got->ndim;
    for (int d = 0; same && d < got->ndim; d++) same = e->shape[d] == shape[d];
    if (!same) {
        fail("%s: shape differs from the reference (ndim %d vs %d)", key, got->ndim, e->ndim);
        return;
    }
    int64_t idx[CIRCUITS_MAX_DIMS] = {0};
    double d = 0.0, scale = 0.0;
    size_t at = 0;
    float at_got = 0.0f, at_ref = 0.0f;
    for (size_t i = 0; i < e->numel; i++) {
        int64_t off = 0;
        for (int k = 0; k < got->ndim; k++) off += idx[k] * got->strides[k];
        float r = cx_st_read_f32(e, i), g = got->data[off];
        double dd = fabs((double)g - (double)r);
        if (isnan(dd) || isinf(dd)) dd = INFINITY;
        if (dd > d) {
            d = dd;
            at = i;
            at_got = g;
            at_ref = r;
        }
        if (fabs(r) > scale) scale = fabs(r);
        for (int k = got->ndim - 1; k >= 0; k--) {
            if (++idx[k] < shape[k]) break;
            idx[k] = 0;
        }
    }
    double rel = d / fmax(scale, FLOOR);
    if (isnan(worst[row][v]) || rel > worst[row][v]) {
        worst[row][v] = rel;
        snprintf(worst_where[row][v], sizeof worst_where[row][v], "%s %s", case_name, key);
    }
    if (!(rel <= TOL))
        fail("%s: max-abs diff %.3g at flat index %zu (got %.7g, SAELens %.7g), scale %.3g, relative %.3g", key, d, at,
             at_got, at_ref, scale, rel);
}

/* a contiguous [n, m] buffer as a tensor */
static circuits_tensor rows(float *data, int64_t n, int64_t m)
{
    circuits_tensor t = {0};
    t.ndim = 2;
    t.shape[0] = n, t.shape[1] = m;
    t.strides[0] = m, t.strides[1] = 1;
    t.data = data;
    return t;
}

static float *copy_f32(const char *key, size_t *numel)
{
    const cx_st_tensor *t = get(key);
    float *p = malloc(t->numel * sizeof *p);
    if (!p) exit(2);
    for (size_t i = 0; i < t->numel; i++) p[i] = cx_st_read_f32(t, i);
    if (numel) *numel = t->numel;
    return p;
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static int64_t jint(json_t *o, const char *k) { return (int64_t)json_integer_value(json_object_get(o, k)); }

static int norm_code(const char *s)
{
    if (strcmp(s, "expected_average_only_in") == 0) return CIRCUITS_SAE_NORM_EXPECTED_AVERAGE;
    if (strcmp(s, "constant_norm_rescale") == 0) return CIRCUITS_SAE_NORM_CONSTANT_NORM_RESCALE;
    if (strcmp(s, "layer_norm") == 0) return CIRCUITS_SAE_NORM_LAYER_NORM;
    return CIRCUITS_SAE_NORM_NONE;
}

static int arch_code(const char *s)
{
    if (strstr(s, "gated")) return CIRCUITS_SAE_GATED;
    if (strstr(s, "jumprelu")) return CIRCUITS_SAE_JUMPRELU;
    if (strstr(s, "topk")) return CIRCUITS_SAE_TOPK;
    return CIRCUITS_SAE_STANDARD;
}

static bool is_skip(const char *arch) { return strstr(arch, "skip") != NULL; }

/* cfg.json as circuits_sae_get_info reports it, against the manifest */
static void check_info(const circuits_sae *sae, json_t *m, const char *name)
{
    circuits_sae_info info;
    memset(&info, 0, sizeof info);
    info.size = sizeof info;
    if (circuits_sae_get_info(sae, &info) != CIRCUITS_OK) {
        fail("%s: circuits_sae_get_info: %s", name, circuits_last_error());
        return;
    }
    const char *arch = jstr(m, "architecture");
    bool transcoder = strstr(arch, "transcoder") != NULL;
    CHECK(info.architecture == arch_code(arch), "%s: architecture %d", name, info.architecture);
    CHECK(strcmp(info.architecture_name ? info.architecture_name : "", arch) == 0, "%s: architecture_name %s", name,
          info.architecture_name ? info.architecture_name : "(null)");
    CHECK(info.is_transcoder == transcoder, "%s: is_transcoder %d", name, info.is_transcoder);
    CHECK(info.has_skip == is_skip(arch), "%s: has_skip %d", name, info.has_skip);
    CHECK(info.d_in == jint(m, "d_in") && info.d_sae == jint(m, "d_sae") && info.d_out == jint(m, "d_out"),
          "%s: sizes %lld %lld %lld", name, (long long)info.d_in, (long long)info.d_sae, (long long)info.d_out);
    CHECK(info.apply_b_dec_to_input == json_is_true(json_object_get(m, "apply_b_dec_to_input")),
          "%s: apply_b_dec_to_input %d", name, info.apply_b_dec_to_input);
    CHECK(info.normalize_activations == norm_code(jstr(m, "normalize_activations")), "%s: normalize_activations %d",
          name, info.normalize_activations);
    CHECK(info.reshape_hook_z == (strcmp(jstr(m, "reshape_activations"), "hook_z") == 0), "%s: reshape_hook_z %d",
          name, info.reshape_hook_z);
    if (info.architecture == CIRCUITS_SAE_TOPK) {
        CHECK(info.k == jint(m, "k"), "%s: k %d", name, info.k);
        CHECK(info.rescale_acts_by_decoder_norm == json_is_true(json_object_get(m, "rescale_acts_by_decoder_norm")),
              "%s: rescale_acts_by_decoder_norm %d", name, info.rescale_acts_by_decoder_norm);
    }
    CHECK(info.hook_name && strcmp(info.hook_name, jstr(m, "hook_name")) == 0, "%s: hook_name %s", name,
          info.hook_name ? info.hook_name : "(null)");
    CHECK(info.hook_name_out && strcmp(info.hook_name_out, jstr(m, "hook_name_out")) == 0, "%s: hook_name_out %s",
          name, info.hook_name_out ? info.hook_name_out : "(null)");
    CHECK(info.has_sparsity == json_is_true(json_object_get(m, "sparsity_file")), "%s: has_sparsity %d", name,
          info.has_sparsity);
}

/* sae.encode / sae.decode on the fixed rows */
static void check_encode_decode(const circuits_sae *sae, json_t *m, const char *name, int row)
{
    char key[200];
    int64_t d_in = jint(m, "d_in"), d_sae = jint(m, "d_sae"), d_out = jint(m, "d_out");
    size_t nx;
    snprintf(key, sizeof key, "%s:x", name);
    float *x = copy_f32(key, &nx);
    int64_t n = (int64_t)nx / d_in;
    float *pre = calloc((size_t)(n * d_sae), sizeof *pre), *post = calloc((size_t)(n * d_sae), sizeof *post);
    float *out = calloc((size_t)(n * d_out), sizeof *out);
    if (!pre || !post || !out) exit(2);
    int rc = circuits_sae_encode(sae, x, n, pre, post);
    if (rc != CIRCUITS_OK) {
        fail("%s: circuits_sae_encode -> %d (%s)", name, rc, circuits_last_error());
    } else {
        circuits_tensor t = rows(pre, n, d_sae);
        snprintf(key, sizeof key, "%s:acts_pre", name);
        compare(row, V_ENC_PRE, key, &t, 0);
        t = rows(post, n, d_sae);
        snprintf(key, sizeof key, "%s:acts_post", name);
        compare(row, V_ENC_POST, key, &t, 0);
    }
    /* decode SAELens's own activations, so that decode is checked alone */
    snprintf(key, sizeof key, "%s:acts_post", name);
    float *acts = copy_f32(key, NULL);
    rc = circuits_sae_decode(sae, acts, n, x, out);
    if (rc != CIRCUITS_OK) {
        fail("%s: circuits_sae_decode -> %d (%s)", name, rc, circuits_last_error());
    } else {
        circuits_tensor t = rows(out, n, d_out);
        /* libcircuits's decode of a skip transcoder adds x W_skip^T (SkipTranscoder.forward);
         * SAELens's decode leaves it to forward */
        snprintf(key, sizeof key, "%s:%s", name, is_skip(jstr(m, "architecture")) ? "forward" : "decode");
        compare(row, V_DECODE, key, &t, 0);
    }
    free(acts);
    free(x);
    free(pre);
    free(post);
    free(out);
}

/* the edit: latent `*ud` of every row set to 0 */
static int zero_latent(const circuits_tensor *act, void *ud)
{
    int64_t latent = *(const int64_t *)ud;
    int nd = act->ndim;
    if (nd < 1 || latent >= act->shape[nd - 1]) return -1;
    int64_t outer = 1;
    for (int k = 0; k < nd - 1; k++) outer *= act->shape[k];
    for (int64_t i = 0; i < outer; i++) {
        int64_t off = 0, r = i;
        for (int k = nd - 2; k >= 0; k--) {
            off += (r % act->shape[k]) * act->strides[k];
            r /= act->shape[k];
        }
        act->data[off + latent * act->strides[nd - 1]] = 0.0f;
    }
    return CIRCUITS_HOOK_CONTINUE;
}

static int value_of(const char *hook)
{
    static const char *suffix[] = {".hook_sae_input", ".hook_sae_acts_pre", ".hook_sae_acts_post",
                                   ".hook_sae_recons", ".hook_sae_error", ".hook_sae_output"};
    size_t hl = strlen(hook);
    for (int i = 0; i < 6; i++) {
        size_t sl = strlen(suffix[i]);
        if (hl > sl && strcmp(hook + hl - sl, suffix[i]) == 0) return V_INPUT + i;
    }
    return -1;
}

static bool in_list(json_t *list, const char *s)
{
    for (size_t i = 0; i < json_array_size(list); i++)
        if (strcmp(json_string_value(json_array_get(list, i)), s) == 0) return true;
    return false;
}

typedef struct loaded { const char *name; circuits_sae *sae; } loaded;

static circuits_sae *find_sae(loaded *l, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(l[i].name, name) == 0) return l[i].sae;
    return NULL;
}

static void run_one(const circuits_model *model, json_t *man, const char *run, json_t *r, loaded *saes, size_t n_saes,
                    const int32_t *tokens, int64_t B, int64_t T, int row, const char *ref_run)
{
    json_t *names = json_object_get(r, "saes");
    bool err = json_is_true(json_object_get(r, "use_error_term"));
    json_t *edit = json_object_get(r, "edit");
    int64_t latent = json_is_object(edit) ? jint(edit, "latent") : 0;
    circuits_context *ctx = NULL;
    circuits_cache *cache = NULL;
    circuits_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.size = sizeof cfg;
    if (circuits_model_config(model, &cfg) != CIRCUITS_OK) exit(2);
    int64_t vocab = cfg.d_vocab_out, columns = jint(man, "logit_columns");
    float *logits = calloc((size_t)(B * T * vocab), sizeof *logits);
    if (!logits || circuits_context_create(&ctx, model, NULL) != CIRCUITS_OK || circuits_cache_create(&cache) != CIRCUITS_OK)
        exit(2);
    int rc = CIRCUITS_OK;
    for (size_t i = 0; rc == CIRCUITS_OK && i < json_array_size(names); i++) {
        const char *sn = json_string_value(json_array_get(names, i));
        circuits_sae *s = find_sae(saes, n_saes, sn);
        if (!s) {
            fail("%s: SAE %s not loaded", run, sn);
            rc = -1;
            break;
        }
        rc = circuits_context_add_sae(ctx, s, err);
        if (rc != CIRCUITS_OK) fail("%s: circuits_context_add_sae(%s) -> %d (%s)", run, sn, rc, circuits_last_error());
    }
    if (rc == CIRCUITS_OK && json_is_object(edit)) {
        rc = circuits_context_add_hook(ctx, jstr(edit, "hook"), zero_latent, &latent, NULL);
        if (rc != CIRCUITS_OK) fail("%s: circuits_context_add_hook(%s) -> %d (%s)", run, jstr(edit, "hook"), rc,
                                    circuits_last_error());
    }
    if (rc == CIRCUITS_OK) {
        rc = circuits_context_run_with_cache(ctx, tokens, B, T, NULL, 0, cache, logits, NULL, NULL);
        if (rc != CIRCUITS_OK) fail("%s: circuits_context_run_with_cache -> %d (%s)", run, rc, circuits_last_error());
    }
    if (rc == CIRCUITS_OK) {
        char key[300];
        circuits_tensor lt = {0};
        lt.ndim = 3;
        lt.shape[0] = B, lt.shape[1] = T, lt.shape[2] = vocab;
        lt.strides[0] = T * vocab, lt.strides[1] = vocab, lt.strides[2] = 1;
        lt.data = logits;
        snprintf(key, sizeof key, "%s%slogits", ref_run, *ref_run ? ":" : "");
        compare(row, V_LOGITS, key, &lt, columns);
        /* the key list: SAELens's (the clean keys without HookedSAETransformer's mlp.hook_in, each
         * replaced point's name giving way to its SAE's points) */
        json_t *clean = json_object_get(man, "clean_cache_keys"), *extra = json_object_get(man, "hookedsae_only_keys");
        json_t *replaced = json_object_get(r, "replaced"), *sae_keys = json_object_get(r, "sae_keys");
        size_t at = 0, n_cache = circuits_cache_count(cache);
        bool order_ok = true;
        for (size_t i = 0; order_ok && i < json_array_size(clean); i++) {
            const char *k = json_string_value(json_array_get(clean, i));
            if (in_list(extra, k)) continue;
            if (!in_list(replaced, k)) {
                circuits_tensor t;
                order_ok = at < n_cache && circuits_cache_at(cache, at, &t) == CIRCUITS_OK && strcmp(t.name, k) == 0;
                if (!order_ok) fail("%s: cache key %zu is %s, SAELens has %s", run, at,
                                    at < n_cache && circuits_cache_at(cache, at, &t) == CIRCUITS_OK ? t.name : "(none)", k);
                at++;
                continue;
            }
            size_t kl = strlen(k);
            for (size_t j = 0; order_ok && j < json_array_size(sae_keys); j++) {
                const char *sk = json_string_value(json_array_get(sae_keys, j));
                if (strncmp(sk, k, kl) != 0 || sk[kl] != '.') continue;
                circuits_tensor t;
                order_ok = at < n_cache && circuits_cache_at(cache, at, &t) == CIRCUITS_OK && strcmp(t.name, sk) == 0;
                if (!order_ok) fail("%s: cache key %zu is %s, SAELens has %s", run, at,
                                    at < n_cache && circuits_cache_at(cache, at, &t) == CIRCUITS_OK ? t.name : "(none)", sk);
                at++;
            }
        }
        tu_checks++;
        if (order_ok && at != n_cache) fail("%s: the cache has %zu keys, SAELens %zu", run, n_cache, at);
        for (size_t i = 0; i < json_array_size(replaced); i++) {
            circuits_tensor t;
            tu_checks++;
            if (circuits_cache_get(cache, json_string_value(json_array_get(replaced, i)), &t) == CIRCUITS_OK)
                fail("%s: the replaced point %s is in the cache", run, json_string_value(json_array_get(replaced, i)));
        }
        /* every hook_sae_* value; an edit run's input and acts_pre are the unedited run's */
        for (size_t j = 0; j < json_array_size(sae_keys); j++) {
            const char *sk = json_string_value(json_array_get(sae_keys, j));
            int v = value_of(sk);
            circuits_tensor t;
            if (circuits_cache_get(cache, sk, &t) != CIRCUITS_OK) {
                fail("%s: %s not in the cache", run, sk);
                continue;
            }
            snprintf(key, sizeof key, "%s:%s", ref_run, sk);
            if (json_is_object(edit) && (v == V_INPUT || v == V_PRE)) {
                char base[200];
                snprintf(base, sizeof base, "%s", ref_run);
                char *e = strstr(base, ":edit");
                if (e) memcpy(e, ":err", 4), memmove(e + 4, e + 5, strlen(e + 5) + 1);
                snprintf(key, sizeof key, "%s:%s", base, sk);
            }
            compare(row, v < 0 ? V_OUTPUT : v, key, &t, 0);
        }
    }
    circuits_cache_free(cache);
    circuits_context_free(ctx);
    free(logits);
}

static void run_case(const char *cases_dir, const char *saes_dir, const char *name)
{
    case_name = name;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/manifest.json", saes_dir, name);
    json_error_t jerr;
    json_t *man = json_load_file(path, 0, &jerr);
    if (!man) {
        fprintf(stderr, "%s: %s\n", path, jerr.text);
        exit(2);
    }
    snprintf(path, sizeof path, "%s/%s/expected.safetensors", saes_dir, name);
    if (cx_st_open_file(&ref, path) != CIRCUITS_OK) {
        fprintf(stderr, "%s: %s\n", path, circuits_last_error());
        exit(2);
    }
    snprintf(path, sizeof path, "%s/%s", cases_dir, name);
    circuits_model *model = NULL;
    if (circuits_model_load(&model, path, NULL) != CIRCUITS_OK) {
        fail("model %s: %s", path, circuits_last_error());
        cx_st_close(ref);
        json_decref(man);
        return;
    }
    int64_t B = jint(man, "batch"), T = jint(man, "pos");
    const cx_st_tensor *tt = get("tokens");
    int32_t *tokens = malloc((size_t)(B * T) * sizeof *tokens);
    if (!tokens || tt->dtype != CX_DT_I32 || tt->numel != (size_t)(B * T)) exit(2);
    memcpy(tokens, tt->data, tt->numel * sizeof *tokens);

    /* the model alone: logits and key list */
    json_t *clean_run = json_pack("{s:[], s:b, s:n, s:[], s:[]}", "saes", "use_error_term", 0, "edit", "replaced",
                                  "sae_keys");
    run_one(model, man, "clean", clean_run, NULL, 0, tokens, B, T, arch_index("(no SAE)"), "");
    json_decref(clean_run);

    json_t *saes_m = json_object_get(man, "saes");
    size_t n_saes = json_object_size(saes_m), k = 0;
    loaded *saes = calloc(n_saes, sizeof *saes);
    const char *sn;
    json_t *m;
    json_object_foreach(saes_m, sn, m) {
        snprintf(path, sizeof path, "%s/%s/%s", saes_dir, name, jstr(m, "dir"));
        saes[k].name = sn;
        int rc = circuits_sae_load(&saes[k].sae, path);
        tu_checks++;
        if (rc != CIRCUITS_OK) {
            fail("circuits_sae_load(%s) -> %d (%s)", path, rc, circuits_last_error());
            saes[k].sae = NULL;
        } else {
            int row = arch_index(jstr(m, "architecture"));
            check_info(saes[k].sae, m, sn);
            if (!json_object_get(m, "only_in")) check_encode_decode(saes[k].sae, m, sn, row);
        }
        k++;
    }
    json_t *runs = json_object_get(man, "runs"), *r;
    const char *run;
    json_object_foreach(runs, run, r) {
        json_t *names = json_object_get(r, "saes");
        bool missing = false;
        for (size_t i = 0; i < json_array_size(names); i++)
            missing |= !find_sae(saes, n_saes, json_string_value(json_array_get(names, i)));
        if (missing) continue; /* its load failed: reported above */
        const char *first = json_string_value(json_array_get(names, 0));
        const char *arch = jstr(json_object_get(saes_m, first), "architecture");
        int row = json_array_size(names) > 1 ? arch_index("several (multi)") : arch_index(arch);
        /* skip transcoders: libcircuits keeps W_skip in the splice, SAELens's wrapper drops it; the
         * ":skip_errN" runs are SAELens's values with it kept */
        if (is_skip(arch) && strstr(run, ":skip_err")) continue; /* compared under the ":errN" run's entry */
        char ref_run[200];
        snprintf(ref_run, sizeof ref_run, "%s", run);
        const char *e = is_skip(arch) ? strstr(run, ":err") : NULL;
        if (e) snprintf(ref_run, sizeof ref_run, "%.*s:skip_err%s", (int)(e - run), run, e + 4);
        run_one(model, man, run, r, saes, n_saes, tokens, B, T, row, ref_run);
    }
    for (size_t i = 0; i < n_saes; i++) circuits_sae_free(saes[i].sae);
    free(saes);
    free(tokens);
    circuits_model_free(model);
    cx_st_close(ref);
    json_decref(man);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s CASES_DIR SAES_DIR [CASE ...]\n", argv[0]);
        return 2;
    }
    char *names[64];
    size_t n = 0;
    if (argc > 3) {
        for (int i = 3; i < argc && n < 64; i++) names[n++] = strdup(argv[i]);
    } else {
        DIR *d = opendir(argv[2]);
        if (!d) return 2;
        struct dirent *e;
        while ((e = readdir(d)) && n < 64) {
            if (e->d_name[0] == '.') continue;
            char p[1024];
            snprintf(p, sizeof p, "%s/%s/manifest.json", argv[2], e->d_name);
            FILE *f = fopen(p, "r");
            if (f) {
                fclose(f);
                names[n++] = strdup(e->d_name);
            }
        }
        closedir(d);
        qsort(names, n, sizeof *names, cmp_str);
    }
    CHECK(n > 0, "no cases in %s", argv[2]);
    for (size_t i = 0; i < n; i++) {
        run_case(argv[1], argv[2], names[i]);
        free(names[i]);
    }
    printf("worst max|C - SAELens| / max(max|SAELens|, %.0e) per architecture and value (limit %.0e; %zu tensors, "
           "%zu failed):\n%-26s", FLOOR, TOL, n_tensors, n_failed, "architecture");
    for (int v = 0; v < N_V; v++) printf(" %9s", v_name[v]);
    printf("\n");
    for (int a = 0; a < n_arch; a++) {
        printf("%-26s", arch_row[a]);
        for (int v = 0; v < N_V; v++) {
            if (isnan(worst[a][v])) printf(" %9s", "-");
            else printf(" %9.2e", worst[a][v]);
        }
        printf("\n");
    }
    double w = 0.0;
    const char *where = "";
    for (int a = 0; a < n_arch; a++)
        for (int v = 0; v < N_V; v++)
            if (!isnan(worst[a][v]) && worst[a][v] >= w) w = worst[a][v], where = worst_where[a][v];
    printf("worst: %.2e (%s)\n", w, where);
    return tu_finish("sae_reference");
}
