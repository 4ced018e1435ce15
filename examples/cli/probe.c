/* circuits probe-fit: fit a linear probe (circuits_probe_fit) on activations from a .npy file or
 * from a run of a model at one hook point, with labels from a .npy file, and write the probe
 * file (circuits_probe_save; docs/probes.md). `circuits generate --probe FILE` runs it. */
#include "cli.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

static void usage(void)
{
    printf("usage: circuits probe-fit --acts X.npy --labels Y.npy -o OUT [options]\n"
           "       circuits probe-fit MODEL --hook NAME (--prompt TEXT | --tokens IDS) --labels Y.npy -o OUT [options]\n"
           "\n"
           "Fits a linear probe and writes it as a probe file (safetensors; docs/probes.md):\n"
           "logistic regression with an L2 penalty (scikit-learn's LogisticRegression, C = 1 / l2;\n"
           "labels 0 .. K-1, binary or multinomial) or least squares (ridge with l2 > 0). The rows\n"
           "are an activations .npy [n, d] (or [..., d]), or a model's activations at --hook for\n"
           "every position of the input (n = its tokens, BOS included). Prints the fit's scores on\n"
           "its own rows (accuracy and log-loss, or R^2 and MSE).\n"
           "\n"
           "  --acts X.npy        activations [n, d] or [..., d] (float32/64, int)\n"
           "  --hook NAME         the hook point: where a MODEL's rows come from, and the name\n"
           "                      stored in the probe (what `generate --probe` reads)\n"
           "  --labels Y.npy      logistic: class labels [n]; linear: targets [n] or [n, t]\n"
           "  -o, --output OUT    the probe file to write\n"
           "  --kind K            logistic (default) or linear\n"
           "  --l2 F              the L2 penalty (default 1: C = 1; linear: ridge alpha, 0 plain least squares)\n"
           "  --no-intercept      fit no intercept\n"
           "  --max-iter N        Newton steps at most (default 50)\n"
           "  --tol T             logistic: stop when a step changes nothing by more than T;\n"
           "                      linear least squares: the relative singular-value cutoff (default 1e-6)\n"
           "  --prompt TEXT / --tokens IDS / --no-bos / --no-processing / --no-mmap   as `circuits run`\n"
           "  --json              one JSON object on stdout\n");
}

/* The rows of a model's run at one hook point: [T, width] for the input's T positions. */
static int model_rows(const common *c, const char *hook, float **X, int64_t *n, int64_t *d)
{
    circuits_model *m;
    circuits_config cfg;
    int rc = load_model(c, &m, &cfg);
    if (rc) return rc;
    int32_t *ids = NULL;
    int64_t T = 0;
    circuits_context *ctx = NULL;
    circuits_cache *cache = NULL;
    if ((rc = input_tokens(c, m, &ids, &T))) goto done;
    if (circuits_context_create(&ctx, m, NULL) || circuits_cache_create(&cache)) {
        rc = lib_failure("context");
        goto done;
    }
    const char *filter[] = {hook};
    circuits_tensor t;
    if (circuits_context_run_with_cache(ctx, ids, 1, T, filter, 1, cache, NULL, NULL, NULL) ||
        circuits_cache_get(cache, hook, &t)) {
        rc = lib_failure(hook);
        goto done;
    }
    if (circuits_cache_count(cache) != 1 || t.ndim < 2) {
        rc = failure("--hook '%s' must name one hook point with [batch, pos, ...] activations", hook);
        goto done;
    }
    int64_t w = 1;
    for (int a = 2; a < t.ndim; a++) w *= t.shape[a];
    *X = malloc(sizeof(float) * (size_t)(T * w));
    if (!*X) {
        rc = failure("out of memory");
        goto done;
    }
    memcpy(*X, t.data, sizeof(float) * (size_t)(T * w)); /* cache entries are contiguous */
    *n = T;
    *d = w;
done:
    circuits_cache_free(cache);
    circuits_context_free(ctx);
    free(ids);
    circuits_model_free(m);
    return rc;
}

int cmd_probe_fit(int argc, char **argv)
{
    common c = {0};
    const char *acts = NULL, *labels = NULL, *outp = NULL, *hook = NULL, *kind_s = "logistic";
    double l2 = -1, tol = 1e-6;
    long long max_iter = 50;
    bool no_intercept = false;
    args a = {argc, argv, 1};
    for (; a.i < argc; a.i++) {
        const char *v;
        int r;
        if (is_help(argv[a.i])) return usage(), 0;
        if ((r = common_opt(&a, &c, true))) {
            if (r < 0) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--acts", &acts)) || (r = opt_value(&a, "--labels", &labels)) ||
                   (r = opt_value(&a, "--hook", &hook)) || (r = opt_value(&a, "--kind", &kind_s)) ||
                   (r = opt_value(&a, "--output", &outp)) || (r = opt_value(&a, "-o", &outp))) {
            if (r < 0) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--l2", &v))) {
            if (r < 0 || parse_float("--l2", v, 0.0, 1e30, &l2)) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--tol", &v))) {
            if (r < 0 || parse_float("--tol", v, 1e-30, 1.0, &tol)) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--max-iter", &v))) {
            if (r < 0 || parse_int("--max-iter", v, 1, INT32_MAX, &max_iter)) return EXIT_USAGE;
        } else if ((r = opt_flag(&a, "--no-intercept"))) {
            if (r < 0) return EXIT_USAGE;
            no_intercept = true;
        } else if (common_positional(&a, &c) < 0) {
            return EXIT_USAGE;
        }
    }
    bool logistic = strcmp(kind_s, "logistic") == 0;
    if (!logistic && strcmp(kind_s, "linear") != 0)
        return usage_error("--kind: '%s' is not 'logistic' or 'linear'", kind_s);
    if (!labels) return usage_error("needs --labels Y.npy");
    if (!outp) return usage_error("needs -o OUT (the probe file to write)");
    if (acts && c.model) return usage_error("give --acts or a MODEL, not both");
    if (!acts && !c.model) return usage_error("needs --acts X.npy, or a MODEL with --hook and --prompt / --tokens");
    if (c.model) {
        if (!hook) return usage_error("a MODEL needs --hook NAME (where the rows come from)");
        int rc = common_check(&c, true);
        if (rc) return rc;
    } else if (c.prompt || c.tokens) {
        return usage_error("--prompt / --tokens need a MODEL");
    }
    if (l2 < 0) l2 = 1.0;
    float *X = NULL, *y = NULL;
    int64_t n = 0, d = 0, ysh[4];
    int nd, ynd, rc;
    circuits_probe *p = NULL;
    if (acts) {
        int64_t sh[4];
        if ((rc = read_npy(acts, &X, &nd, sh))) return rc;
        if (nd < 2) {
            free(X);
            return failure("--acts: '%s' must be [n, d] (or [..., d]), not %d-dimensional", acts, nd);
        }
        d = sh[nd - 1];
        n = 1;
        for (int i = 0; i < nd - 1; i++) n *= sh[i];
    } else if ((rc = model_rows(&c, hook, &X, &n, &d))) {
        return rc;
    }
    if ((rc = read_npy(labels, &y, &ynd, ysh))) goto done;
    int64_t ny = ynd ? ysh[0] : 1, nt = ynd == 2 ? ysh[1] : 1;
    if (ynd < 1 || ynd > 2 || (logistic && ynd != 1) || ny != n) {
        rc = failure("--labels: '%s' must be [%lld]%s, one per row of the activations", labels, (long long)n,
                     logistic ? "" : " or [n, t]");
        goto done;
    }
    circuits_probe_options o;
    circuits_probe_options_init(&o);
    o.kind = logistic ? CIRCUITS_PROBE_LOGISTIC : CIRCUITS_PROBE_LINEAR;
    o.l2 = (float)l2;
    o.fit_intercept = !no_intercept;
    o.max_iter = (int32_t)max_iter;
    o.tol = (float)tol;
    o.hook_name = hook;
    if (circuits_probe_fit(&p, X, n, d, y, logistic ? 1 : nt, &o) != CIRCUITS_OK) {
        rc = lib_failure("fit");
        goto done;
    }
    circuits_probe_info info = {.size = sizeof info};
    circuits_probe_score s = {.size = sizeof s};
    if (circuits_probe_get_info(p, &info) || circuits_probe_evaluate(p, X, n, y, &s)) {
        rc = lib_failure("evaluate");
        goto done;
    }
    if (circuits_probe_save(p, outp) != CIRCUITS_OK) {
        rc = lib_failure(NULL);
        goto done;
    }
    if (c.json) {
        printf("{\"output\":");
        json_cstr(stdout, outp);
        printf(",\"kind\":\"%s\",\"n\":%lld,\"d\":%lld,\"n_outputs\":%lld,\"l2\":", kind_s, (long long)n, (long long)d,
               (long long)info.n_outputs);
        json_num(stdout, info.l2);
        printf(",\"fit_intercept\":%s,\"n_iter\":%d,\"hook_name\":", info.fit_intercept ? "true" : "false",
               info.n_iter);
        if (hook) json_cstr(stdout, hook);
        else printf("null");
        if (logistic) {
            printf(",\"train\":{\"accuracy\":");
            json_num(stdout, s.accuracy);
            printf(",\"log_loss\":");
            json_num(stdout, s.log_loss);
        } else {
            printf(",\"train\":{\"r2\":");
            json_num(stdout, s.r2);
            printf(",\"mse\":");
            json_num(stdout, s.mse);
        }
        printf("}}\n");
    } else {
        if (logistic)
            printf("logistic probe: %lld rows x %lld, %lld classes, l2 %g, %d Newton steps\n"
                   "on its own rows: accuracy %.4f, log-loss %.4f\n",
                   (long long)n, (long long)d, (long long)info.n_outputs, (double)info.l2, info.n_iter, s.accuracy,
                   s.log_loss);
        else
            printf("linear probe: %lld rows x %lld, %lld targets, l2 %g\non its own rows: R^2 %.4f, MSE %.6g\n",
                   (long long)n, (long long)d, (long long)info.n_outputs, (double)info.l2, s.r2, s.mse);
        printf("wrote %s", outp);
        if (hook) printf(" (hook %s)", hook);
        printf("\n");
    }
done:
    circuits_probe_free(p);
    free(X);
    free(y);
    return rc;
}
