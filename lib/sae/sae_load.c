/* Loading an SAE or transcoder from a directory as SAELens 6 saves it (SAE.save_model /
 * save_inference_model): cfg.json (the SAEConfig's fields, metadata.hook_name / hook_name_out,
 * "architecture"; a config from before SAELens 6 is read as its handle_pre_6_0_config converts it),
 * sae_weights.safetensors (the state dict by parameter name) and, optionally,
 * sparsity.safetensors (tensor "sparsity": log10 feature sparsity, as SAELens's loaders read it).
 * Both files are hostile input: every field is type- and range-checked, every tensor's dtype and
 * shape checked against the config, a missing or extra tensor refused, and every architecture or
 * setting that would change the computation and is not implemented refused by name
 * (docs/saes.md "What of SAELens's format is not supported, and why"). The parameters are copied
 * into owned fp32 arrays (F16 and BF16 converted), so the files are closed once loaded. Also the
 * public accessors (info, weight views) and the public whole-row encode / decode. */
#include "config.h"
#include "quant.h"
#include "sae.h"
#include "safetensors.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define TRY(x) do { if ((rc = (x)) != CIRCUITS_OK) goto done; } while (0)

/* The architectures implemented: SAELens's registry names. */
static const struct arch_row {
    const char *name;
    int32_t arch;
    bool transcoder, skip;
} archs[] = {
    {"standard", CIRCUITS_SAE_STANDARD, false, false},
    {"gated", CIRCUITS_SAE_GATED, false, false},
    {"jumprelu", CIRCUITS_SAE_JUMPRELU, false, false},
    {"topk", CIRCUITS_SAE_TOPK, false, false},
    {"transcoder", CIRCUITS_SAE_STANDARD, true, false},
    {"skip_transcoder", CIRCUITS_SAE_STANDARD, true, true},
    {"jumprelu_transcoder", CIRCUITS_SAE_JUMPRELU, true, false},
    {"jumprelu_skip_transcoder", CIRCUITS_SAE_JUMPRELU, true, true},
};

/* SAELens architectures refused, and why (the same words as docs/saes.md). */
static const struct {
    const char *name, *why;
} refused[] = {
    {"abstopk", "its activation keeps the k largest |pre-activations| with their sign, which libcircuits does not "
                "implement"},
    {"batchtopk", "a training architecture: SAELens saves the inference model as 'jumprelu' (load that)"},
    {"matryoshka_batchtopk", "a training architecture: SAELens saves the inference model as 'jumprelu' (load that)"},
    {"temporal", "its encoder attends over previous positions, which a per-position splice cannot compute"},
    {"matching_pursuit", "its encoder is an iterative matching pursuit, which libcircuits does not implement"},
};

void circuits_sae_free(circuits_sae *sae)
{
    if (!sae) return;
    if (sae->hook_name_out != sae->hook_name) cx_free(sae->hook_name_out);
    cx_free(sae->hook_name);
    cx_free(sae->arch_name);
    float *owned[] = {sae->W_enc, sae->W_dec, sae->b_enc, sae->b_dec, sae->b_gate, sae->b_mag, sae->r_mag,
                      sae->W_enc_mag, sae->threshold, sae->W_skip, sae->W_dec_norm, sae->log_sparsity};
    for (size_t i = 0; i < CX_COUNT(owned); i++) cx_free(owned[i]);
    cx_free(sae);
}

/* dir + "/" + file, allocated. */
static int join(const char *dir, const char *file, char **out)
{
    size_t n = strlen(dir) + strlen(file) + 2;
    *out = cx_malloc(n);
    if (!*out) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "circuits_sae_load: out of memory");
    snprintf(*out, n, "%s/%s", dir, file);
    return CIRCUITS_OK;
}

static int dup_str(const char *s, char **out)
{
    *out = cx_strdup(s);
    return *out ? CIRCUITS_OK : cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "circuits_sae_load: out of memory");
}

/* "blocks.<L>.<...>" -> L, else -1. */
static int32_t layer_of(const char *name)
{
    if (strncmp(name, "blocks.", 7) != 0) return -1;
    const char *p = name + 7;
    int64_t L = 0;
    if (*p < '0' || *p > '9') return -1;
    while (*p >= '0' && *p <= '9') {
        L = L * 10 + (*p++ - '0');
        if (L > CX_MAX_LAYERS) return -1;
    }
    return *p == '.' ? (int32_t)L : -1;
}

/* The leading major version of "6.54.12" (-1 if none). */
static long major_version(const char *v)
{
    if (!v || *v < '0' || *v > '9') return -1;
    long m = 0;
    while (*v >= '0' && *v <= '9' && m < 100000) m = m * 10 + (*v++ - '0');
    return m;
}

/* ---- cfg.json ---- */

static int parse_cfg(const cx_jcfg *c, circuits_sae *s)
{
    int rc;
    const char *str;
    /* the version: SAELens 6 keeps it (and the hook names) in metadata; a config without one
     * or from before 6 is converted as SAELens's handle_pre_6_0_config does */
    json_t *md = json_object_get(c->root, "metadata");
    if (md && !json_is_null(md) && !json_is_object(md))
        return cx_fail(CIRCUITS_E_CONFIG, "%s: 'metadata' must be an object", c->path);
    cx_jcfg m = {md && json_is_object(md) ? md : NULL, c->path};
    const char *version = NULL;
    if (m.root && (rc = cx_jcfg_str(&m, "sae_lens_version", &version))) return rc;
    if (!version && (rc = cx_jcfg_str(c, "sae_lens_version", &version))) return rc;
    bool pre6 = major_version(version) < 6;
    if (!pre6 && !m.root)
        return cx_fail(CIRCUITS_E_CONFIG, "%s: missing object 'metadata' (SAELens 6 keeps hook_name there)", c->path);
    if (pre6) m.root = c->root; /* hook names at the top level */
    /* architecture (pre-6: "standard" unless absent, topk from activation_fn "topk" with k) */
    if ((rc = cx_jcfg_str(c, "architecture", &str))) return rc;
    if (!str && !pre6) return cx_fail(CIRCUITS_E_CONFIG, "%s: missing required field 'architecture'", c->path);
    if (!str) str = "standard";
    int32_t pre6_k = -1;
    if (pre6) {
        const char *act, *act_key = cx_jcfg_absent(c, "activation_fn") ? "activation_fn_str" : "activation_fn";
        if ((rc = cx_jcfg_str(c, act_key, &act))) return rc;
        json_t *kw = json_object_get(c->root, "activation_fn_kwargs");
        if (act && strcmp(act, "topk") == 0 && kw && json_is_object(kw) && !cx_jcfg_absent(&(cx_jcfg){kw, c->path}, "k")) {
            if ((rc = cx_jcfg_int(&(cx_jcfg){kw, c->path}, "k", true, 0, 0, CX_MAX_DIM, &pre6_k))) return rc;
            str = "topk";
        } else if (act && strcmp(act, "relu") != 0) {
            return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: %s '%s' (a config from before SAELens 6) is not supported (SAELens 6 "
                           "computes relu whatever it says)", c->path, act_key, act);
        }
    }
    const struct arch_row *a = NULL;
    for (size_t i = 0; i < CX_COUNT(archs); i++)
        if (strcmp(str, archs[i].name) == 0) a = &archs[i];
    if (!a) {
        for (size_t i = 0; i < CX_COUNT(refused); i++)
            if (strcmp(str, refused[i].name) == 0)
                return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: architecture '%s' is not supported: %s", c->path, str,
                               refused[i].why);
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: architecture '%s' is not supported (libcircuits loads standard, "
                       "gated, jumprelu, topk, transcoder, skip_transcoder, jumprelu_transcoder, "
                       "jumprelu_skip_transcoder)", c->path, str);
    }
    s->arch = a->arch;
    s->transcoder = a->transcoder;
    s->skip = a->skip;
    if ((rc = dup_str(a->name, &s->arch_name))) return rc;
    /* sizes */
    int32_t v;
    if ((rc = cx_jcfg_int(c, "d_in", true, 0, 1, CX_MAX_DIM, &v))) return rc;
    s->d_in = v;
    if ((rc = cx_jcfg_int(c, "d_sae", true, 0, 1, CX_MAX_DIM, &v))) return rc;
    s->d_sae = v;
    s->d_out = s->d_in;
    if (s->transcoder) {
        if ((rc = cx_jcfg_int(c, "d_out", true, 0, 1, CX_MAX_DIM, &v))) return rc;
        s->d_out = v;
    }
    /* dtype: the weights are computed with in fp32 whatever it says; float64 would be computed in
     * more precision by SAELens than here, so it is refused rather than approximated */
    if ((rc = cx_jcfg_str(c, "dtype", &str))) return rc;
    if (str) {
        const char *t = strncmp(str, "torch.", 6) == 0 ? str + 6 : str;
        if (strcmp(t, "float64") == 0)
            return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: dtype '%s' is not supported (libcircuits computes SAEs in "
                           "float32; float32, float16 and bfloat16 are accepted)", c->path, str);
        if (strcmp(t, "float32") != 0 && strcmp(t, "float16") != 0 && strcmp(t, "bfloat16") != 0)
            return cx_fail(CIRCUITS_E_CONFIG, "%s: dtype '%s' is not a dtype SAELens knows", c->path, str);
    }
    if ((rc = cx_jcfg_bool(c, "apply_b_dec_to_input", true, &s->apply_b_dec_to_input))) return rc;
    if (s->transcoder && s->apply_b_dec_to_input)
        return cx_fail(CIRCUITS_E_CONFIG, "%s: apply_b_dec_to_input must be false for a transcoder ('%s'; SAELens "
                       "refuses it too: b_dec is d_out wide)", c->path, s->arch_name);
    /* normalize_activations */
    json_t *na = json_object_get(c->root, "normalize_activations");
    if (pre6 && na && json_is_boolean(na)) /* before 6: a boolean for expected_average_only_in */
        str = json_is_true(na) ? "expected_average_only_in" : "none";
    else if ((rc = cx_jcfg_str(c, "normalize_activations", &str)))
        return rc;
    if (!str || strcmp(str, "none") == 0) s->norm = CIRCUITS_SAE_NORM_NONE;
    else if (strcmp(str, "expected_average_only_in") == 0) s->norm = CIRCUITS_SAE_NORM_EXPECTED_AVERAGE;
    else if (strcmp(str, "constant_norm_rescale") == 0) s->norm = CIRCUITS_SAE_NORM_CONSTANT_NORM_RESCALE;
    else if (strcmp(str, "layer_norm") == 0) s->norm = CIRCUITS_SAE_NORM_LAYER_NORM;
    else if (strcmp(str, "covariance_whitening") == 0)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: normalize_activations 'covariance_whitening' is not supported (the "
                       "whitening is not in sae_weights.safetensors; fold it into the weights with SAELens's "
                       "fold_activation_whitening and save again)", c->path);
    else
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: normalize_activations '%s' is not supported (none, "
                       "expected_average_only_in, constant_norm_rescale, layer_norm)", c->path, str);
    /* reshape_activations */
    if ((rc = cx_jcfg_str(c, "reshape_activations", &str))) return rc;
    if (!str && pre6) { /* before 6: hook_z when the hook name says so */
        const char *h = NULL;
        if ((rc = cx_jcfg_str(c, cx_jcfg_absent(c, "hook_name") ? "hook_point" : "hook_name", &h))) return rc;
        str = h && strstr(h, "hook_z") ? "hook_z" : "none";
    }
    if (str && strcmp(str, "hook_z") == 0) s->reshape_hook_z = true;
    else if (str && strcmp(str, "none") != 0)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: reshape_activations '%s' is not supported (none, hook_z)", c->path,
                       str);
    /* topk */
    if (s->arch == CIRCUITS_SAE_TOPK) {
        if (pre6_k >= 0) s->k = pre6_k;
        else if ((rc = cx_jcfg_int(c, "k", false, 100, 0, CX_MAX_DIM, &s->k))) return rc;
        if (s->k > s->d_sae)
            return cx_fail(CIRCUITS_E_CONFIG, "%s: k = %d is larger than d_sae = %lld", c->path, (int)s->k,
                           (long long)s->d_sae);
        if ((rc = cx_jcfg_bool(c, "rescale_acts_by_decoder_norm", false, &s->rescale_acts_by_decoder_norm))) return rc;
    }
    /* fields of configs SAELens wrote before 6 that change the computation */
    bool fsf;
    if ((rc = cx_jcfg_bool(c, "finetuning_scaling_factor", false, &fsf))) return rc;
    if (fsf)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: finetuning_scaling_factor true is not supported", c->path);
    /* hook names */
    const char *hook_key = pre6 && cx_jcfg_absent(c, "hook_name") ? "hook_point" : "hook_name";
    if ((rc = cx_jcfg_str(&m, hook_key, &str))) return rc;
    if (!str || !*str)
        return cx_fail(CIRCUITS_E_CONFIG, "%s: %s is missing (the hook point the SAE reads)", c->path,
                       pre6 ? "hook_name (or hook_point: a config from before SAELens 6)" : "metadata.hook_name");
    if ((rc = dup_str(str, &s->hook_name))) return rc;
    s->hook_layer = layer_of(s->hook_name);
    if ((rc = cx_jcfg_str(&m, "hook_name_out", &str))) return rc;
    if (str && !*str) str = NULL; /* SAELens: hook_name_out or hook_name */
    if (!s->transcoder && str && strcmp(str, s->hook_name) != 0)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: metadata.hook_name_out '%s' differs from hook_name '%s' for a '%s' "
                       "SAE (writing another point than it reads is supported for transcoders only)", c->path, str,
                       s->hook_name, s->arch_name);
    if (s->transcoder && str) {
        if ((rc = dup_str(str, &s->hook_name_out))) return rc;
    } else {
        s->hook_name_out = s->hook_name;
    }
    if (s->reshape_hook_z) {
        size_t l = strlen(s->hook_name);
        if (s->transcoder)
            return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: reshape_activations 'hook_z' for a transcoder is not supported "
                           "(SAELens's transcoders do not reshape)", c->path);
        if (l < 2 || strcmp(s->hook_name + l - 2, "_z") != 0)
            return cx_fail(CIRCUITS_E_CONFIG, "%s: reshape_activations 'hook_z' at '%s' (SAELens requires a hook name "
                           "ending in _z)", c->path, s->hook_name);
    }
    return CIRCUITS_OK;
}

/* ---- tensors ---- */

/* Tensor `name` of set as an owned fp32 array of the given shape (ndim 1 or 2). */
static int take(cx_st_set *set, const char *file, const char *name, int ndim, int64_t d0, int64_t d1, float **out)
{
    cx_st_tensor *t = cx_st_find(set, name);
    if (!t) return cx_fail(CIRCUITS_E_TENSOR_MISSING, "%s: tensor '%s' is missing", file, name);
    t->used = true;
    if (t->dtype != CX_DT_F32 && t->dtype != CX_DT_F16 && t->dtype != CX_DT_BF16)
        return cx_fail(CIRCUITS_E_DTYPE, "%s: tensor '%s' is %s (F32, F16 and BF16 are read)", file, name,
                       cx_dtype_name(t->dtype));
    int64_t want[2] = {d0, d1};
    bool ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == want[i];
    if (!ok) {
        char got[160] = "", exp[64];
        size_t used = 0;
        for (int i = 0; i < t->ndim && used < sizeof got; i++)
            used += (size_t)snprintf(got + used, sizeof got - used, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        if (ndim == 1) snprintf(exp, sizeof exp, "%lld", (long long)d0);
        else snprintf(exp, sizeof exp, "%lld, %lld", (long long)d0, (long long)d1);
        return cx_fail(CIRCUITS_E_SHAPE, "%s: tensor '%s' is [%s] but the config makes it [%s]", file, name, got, exp);
    }
    size_t bytes;
    if (!cx_mul_size(t->numel, sizeof(float), &bytes))
        return cx_fail(CIRCUITS_E_RANGE, "%s: tensor '%s' is too large", file, name);
    float *p = cx_malloc(bytes ? bytes : 1);
    if (!p) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "circuits_sae_load: out of memory reading '%s'", name);
    cx_dequantize_row(t->dtype, t->data, p, (int64_t)t->numel);
    *out = p;
    return CIRCUITS_OK;
}

/* A tensor not read by take: refused, except the all-ones "scaling_factor" SAELens drops. */
static int leftovers(cx_st_set *set, const char *file, const char *arch)
{
    for (size_t i = 0; i < set->n_tensors; i++) {
        cx_st_tensor *t = &set->tensors[i];
        if (t->used) continue;
        if (strcmp(t->name, "scaling_factor") == 0 &&
            (t->dtype == CX_DT_F32 || t->dtype == CX_DT_F16 || t->dtype == CX_DT_BF16)) {
            bool ones = true;
            for (size_t j = 0; ones && j < t->numel; j++) ones = cx_st_read_f32(t, j) == 1.0f;
            if (ones) continue; /* SAELens deletes it */
            return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: a 'scaling_factor' other than ones (a finetuning scaling "
                           "factor) is not supported", file);
        }
        return cx_fail(CIRCUITS_E_TENSOR_UNEXPECTED, "%s: tensor '%s' has no place in a '%s' SAE", file, t->name,
                       arch);
    }
    return CIRCUITS_OK;
}

static int read_weights(const char *dir, circuits_sae *s)
{
    char *file = NULL;
    cx_st_set *set = NULL;
    int rc;
    TRY(join(dir, "sae_weights.safetensors", &file));
    TRY(cx_st_open(&set, file, CX_ST_MAP));
    int64_t di = s->d_in, ds = s->d_sae, dout = s->d_out;
    TRY(take(set, file, "W_enc", 2, di, ds, &s->W_enc));
    TRY(take(set, file, "W_dec", 2, ds, dout, &s->W_dec));
    TRY(take(set, file, "b_dec", 1, dout, 0, &s->b_dec));
    if (s->arch == CIRCUITS_SAE_GATED) {
        TRY(take(set, file, "b_gate", 1, ds, 0, &s->b_gate));
        TRY(take(set, file, "b_mag", 1, ds, 0, &s->b_mag));
        TRY(take(set, file, "r_mag", 1, ds, 0, &s->r_mag));
    } else {
        TRY(take(set, file, "b_enc", 1, ds, 0, &s->b_enc));
    }
    if (s->arch == CIRCUITS_SAE_JUMPRELU) TRY(take(set, file, "threshold", 1, ds, 0, &s->threshold));
    if (s->skip) TRY(take(set, file, "W_skip", 2, dout, di, &s->W_skip));
    TRY(leftovers(set, file, s->arch_name));
done:
    cx_st_close(set);
    cx_free(file);
    return rc;
}

static int read_sparsity(const char *dir, circuits_sae *s)
{
    char *file = NULL;
    cx_st_set *set = NULL;
    int rc;
    TRY(join(dir, "sparsity.safetensors", &file));
    struct stat st;
    if (stat(file, &st) != 0 && errno == ENOENT) goto done; /* optional */
    TRY(cx_st_open(&set, file, CX_ST_MAP));
    TRY(take(set, file, "sparsity", 1, s->d_sae, 0, &s->log_sparsity));
    for (size_t i = 0; i < set->n_tensors; i++)
        if (!set->tensors[i].used) {
            rc = cx_fail(CIRCUITS_E_TENSOR_UNEXPECTED, "%s: tensor '%s' is unexpected (the file holds 'sparsity')",
                         file, set->tensors[i].name);
            goto done;
        }
done:
    cx_st_close(set);
    cx_free(file);
    return rc;
}

/* What load derives: gated's magnitude encoder, topk's decoder row norms. */
static int derive(circuits_sae *s)
{
    int64_t di = s->d_in, ds = s->d_sae, dout = s->d_out;
    if (s->arch == CIRCUITS_SAE_GATED) {
        s->W_enc_mag = cx_malloc((size_t)di * (size_t)ds * sizeof(float));
        if (!s->W_enc_mag) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "circuits_sae_load: out of memory");
        for (int64_t j = 0; j < ds; j++) {
            float e = expf(s->r_mag[j]);
            for (int64_t i = 0; i < di; i++) s->W_enc_mag[i * ds + j] = s->W_enc[i * ds + j] * e;
        }
    }
    if (s->arch == CIRCUITS_SAE_TOPK && s->rescale_acts_by_decoder_norm) {
        s->W_dec_norm = cx_malloc((size_t)ds * sizeof(float));
        if (!s->W_dec_norm) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "circuits_sae_load: out of memory");
        for (int64_t j = 0; j < ds; j++) {
            double a = 0;
            const float *r = s->W_dec + j * dout;
            for (int64_t i = 0; i < dout; i++) a += (double)r[i] * r[i];
            s->W_dec_norm[j] = (float)sqrt(a);
        }
    }
    return CIRCUITS_OK;
}

int circuits_sae_load(circuits_sae **out, const char *path)
{
    if (out) *out = NULL;
    if (!out || !path) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_sae_load: out and path must not be NULL");
    circuits_sae *s = cx_calloc(1, sizeof *s);
    if (!s) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "circuits_sae_load: out of memory");
    char *cfg_path = NULL;
    cx_jcfg c = {NULL, NULL};
    int rc;
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        rc = cx_fail(CIRCUITS_E_IO, "circuits_sae_load: '%s' is not a directory", path);
        goto done;
    }
    TRY(join(path, "cfg.json", &cfg_path));
    TRY(cx_jcfg_open(cfg_path, NULL, 0, &c));
    TRY(parse_cfg(&c, s));
    TRY(read_weights(path, s));
    TRY(read_sparsity(path, s));
    TRY(derive(s));
done:
    if (c.root) json_decref(c.root);
    cx_free(cfg_path);
    if (rc) {
        circuits_sae_free(s);
        return rc;
    }
    *out = s;
    return CIRCUITS_OK;
}

/* ---- accessors ---- */

int circuits_sae_get_info(const circuits_sae *sae, circuits_sae_info *info)
{
    const char *fn = "circuits_sae_get_info";
    if (!sae || !info) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: NULL argument", fn);
    static const size_t versions[] = {sizeof(circuits_sae_info)}; /* 0.8.0 */
    uint32_t size = info->size;
    int rc = cx_struct_size_check(size, versions, CX_COUNT(versions), fn, true);
    if (rc) return rc;
    circuits_sae_info v = {
        .size = sizeof v,
        .architecture = sae->arch,
        .is_transcoder = sae->transcoder,
        .has_skip = sae->skip,
        .d_in = sae->d_in,
        .d_sae = sae->d_sae,
        .d_out = sae->d_out,
        .apply_b_dec_to_input = sae->apply_b_dec_to_input,
        .normalize_activations = sae->norm,
        .reshape_hook_z = sae->reshape_hook_z,
        .k = sae->arch == CIRCUITS_SAE_TOPK ? sae->k : 0,
        .rescale_acts_by_decoder_norm = sae->rescale_acts_by_decoder_norm,
        .hook_layer = sae->hook_layer,
        .hook_name = sae->hook_name,
        .hook_name_out = sae->hook_name_out,
        .architecture_name = sae->arch_name,
        .has_sparsity = sae->log_sparsity != NULL,
    };
    if (size > sizeof v) size = sizeof v;
    memcpy((char *)info + sizeof(uint32_t), (const char *)&v + sizeof(uint32_t), size - sizeof(uint32_t));
    info->size = size;
    return CIRCUITS_OK;
}

int circuits_sae_weight(const circuits_sae *sae, const char *name, circuits_tensor *out)
{
    const char *fn = "circuits_sae_weight";
    if (!sae || !name || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: NULL argument", fn);
    const struct {
        const char *name;
        const float *data;
        int ndim;
        int64_t d0, d1;
    } w[] = {
        {"W_enc", sae->W_enc, 2, sae->d_in, sae->d_sae},     {"W_dec", sae->W_dec, 2, sae->d_sae, sae->d_out},
        {"b_enc", sae->b_enc, 1, sae->d_sae, 0},             {"b_dec", sae->b_dec, 1, sae->d_out, 0},
        {"b_gate", sae->b_gate, 1, sae->d_sae, 0},           {"b_mag", sae->b_mag, 1, sae->d_sae, 0},
        {"r_mag", sae->r_mag, 1, sae->d_sae, 0},             {"threshold", sae->threshold, 1, sae->d_sae, 0},
        {"W_skip", sae->W_skip, 2, sae->d_out, sae->d_in},   {"log_feature_sparsity", sae->log_sparsity, 1, sae->d_sae, 0},
    };
    for (size_t i = 0; i < CX_COUNT(w); i++) {
        if (strcmp(name, w[i].name) != 0) continue;
        if (!w[i].data)
            return cx_fail(CIRCUITS_E_NOT_FOUND, "%s: this '%s' SAE has no '%s'%s", fn, sae->arch_name, name,
                           strcmp(name, "log_feature_sparsity") == 0 ? " (no sparsity.safetensors was loaded)" : "");
        memset(out, 0, sizeof *out);
        out->name = w[i].name;
        out->layer = -1;
        out->head = -1;
        out->head_axis = -1;
        out->ndim = w[i].ndim;
        out->shape[0] = w[i].d0;
        if (w[i].ndim == 2) out->shape[1] = w[i].d1;
        cx_contiguous_strides(out->ndim, out->shape, out->strides);
        out->data = (float *)w[i].data;
        return CIRCUITS_OK;
    }
    return cx_fail(CIRCUITS_E_NOT_FOUND, "%s: no parameter '%s' (W_enc, W_dec, b_enc, b_dec, b_gate, b_mag, r_mag, "
                   "threshold, W_skip, log_feature_sparsity)", fn, name);
}

/* ---- whole-row encode / decode ---- */

/* n rows of `width` floats: the count, or a refusal. */
static int rows_size(const char *fn, int64_t n, int64_t width, size_t *out)
{
    if (!cx_mul_size((size_t)n, (size_t)width, out) || !cx_mul_size(*out, sizeof(float), &(size_t){0}))
        return cx_fail(CIRCUITS_E_RANGE, "%s: %lld rows of %lld are too many", fn, (long long)n, (long long)width);
    return CIRCUITS_OK;
}

/* The encoder's input of x (a copy, processed) and the per-row factors, in one allocation. */
static int encoder_input(const circuits_sae *s, const char *fn, const float *x, int64_t n, float **buf, float **coeff)
{
    size_t nx, total;
    int rc = rows_size(fn, n, s->d_in + 2, &total);
    if (rc) return rc;
    nx = (size_t)n * (size_t)s->d_in;
    *buf = cx_malloc(total * sizeof(float));
    if (!*buf) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    memcpy(*buf, x, nx * sizeof(float));
    *coeff = *buf + nx;
    return cx_sae_input(s, *buf, n, *coeff);
}

int circuits_sae_encode(const circuits_sae *sae, const float *x, int64_t n, float *acts_pre, float *acts_post)
{
    const char *fn = "circuits_sae_encode";
    if (!sae || (!x && n > 0)) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: sae and x must not be NULL", fn);
    if (n < 0) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: n = %lld is negative", fn, (long long)n);
    if (n == 0 || (!acts_pre && !acts_post)) return CIRCUITS_OK;
    size_t npre;
    int rc = rows_size(fn, n, sae->d_sae, &npre);
    if (rc) return rc;
    float *buf = NULL, *coeff, *own_pre = NULL, *pre = acts_pre;
    if (!pre && !(pre = own_pre = cx_malloc(npre * sizeof(float)))) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    if (!(rc = encoder_input(sae, fn, x, n, &buf, &coeff)) && !(rc = cx_sae_pre(sae, buf, n, pre)) && acts_post)
        rc = cx_sae_post(sae, buf, pre, n, acts_post);
    cx_free(buf);
    cx_free(own_pre);
    return rc;
}

int circuits_sae_decode(const circuits_sae *sae, const float *acts, int64_t n, const float *x, float *out)
{
    const char *fn = "circuits_sae_decode";
    if (!sae || ((!acts || !out) && n > 0))
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: sae, acts and out must not be NULL", fn);
    if (n < 0) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: n = %lld is negative", fn, (long long)n);
    bool need = cx_sae_needs_input(sae);
    if (need && !x && n > 0)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: this SAE's output depends on the rows it encoded (%s): pass "
                       "them as x", fn, sae->skip ? "its skip connection W_skip" : "per-row normalization");
    if (n == 0) return CIRCUITS_OK;
    size_t nout;
    int rc = rows_size(fn, n, sae->d_out, &nout);
    if (rc) return rc;
    float *buf = NULL, *coeff = NULL;
    if (need && !sae->transcoder && sae->norm != CIRCUITS_SAE_NORM_NONE && sae->norm != CIRCUITS_SAE_NORM_EXPECTED_AVERAGE &&
        (rc = encoder_input(sae, fn, x, n, &buf, &coeff))) {
        cx_free(buf);
        return rc;
    }
    if (!(rc = cx_sae_decode(sae, acts, n, out))) rc = cx_sae_output(sae, out, n, coeff, x);
    cx_free(buf);
    return rc;
}
