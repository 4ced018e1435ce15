/* Linear probes (docs/probes.md): the probe object shared by the fit and the predictions
 * (probe.c), the solvers (probe_fit.c), the file (io/probe_file.c) and the monitor
 * (probe_monitor.c). */
#ifndef CIRCUITS_PROBE_H
#define CIRCUITS_PROBE_H

#include "internal.h"

/* The Newton system of a logistic fit holds (n_coef * (d + 1))^2 doubles: refused above this
 * many unknowns (2 GiB of Hessian: a binary probe on a residual stream of up to 16383 dimensions,
 * three classes at d_model 4096). */
#define CX_PROBE_MAX_NEWTON 16384

struct circuits_probe {
    int32_t kind;          /* circuits_probe_kind */
    int64_t d;             /* input width */
    int64_t n_outputs;     /* LINEAR: n_targets; LOGISTIC: K classes */
    int64_t n_coef;        /* rows of W: n_targets, 1 (binary logistic) or K */
    float l2;
    int32_t fit_intercept;
    int32_t n_iter;
    char *hook_name;       /* "" when none */
    float *W;              /* [n_coef, d] */
    float *b;              /* [n_coef] (zeros without an intercept) */
};

/* An empty probe of the given shape (W, b zeroed) into *out; fn names the caller in messages. */
int cx_probe_new(circuits_probe **out, int32_t kind, int64_t d, int64_t n_outputs, const char *hook_name,
                 const char *fn);

/* out [n, n_outputs] for contiguous rows X [n, d] (no checks: the callers made them); scratch:
 * 2 * (n_outputs + 1) doubles. */
void cx_probe_apply(const circuits_probe *p, const float *X, int64_t n, float *out, double *scratch);

/* The solvers (probe_fit.c) into a probe cx_probe_new made; o: the checked options. */
int cx_probe_fit_linear(circuits_probe *p, const float *X, int64_t n, const float *y, const circuits_probe_options *o);
int cx_probe_fit_logistic(circuits_probe *p, const float *X, int64_t n, const float *y, const circuits_probe_options *o);

#endif
