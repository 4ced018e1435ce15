/* The job engine. PLACEHOLDER. */
#include "job.h"

void circuits_job_options_init(circuits_job_options *opts)
{
}
int circuits_job_create(circuits_job **out, const circuits_model *model, const circuits_dataset *ds, const circuits_job_options *opts, const char *dir)
{
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_job_create: not built yet");
}
int circuits_job_status(const circuits_job *job, int64_t *n_units, int64_t *n_done, int64_t *n_mine)
{
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_job_status: not built yet");
}
int circuits_job_unit_done(const circuits_job *job, int64_t unit, int32_t *done)
{
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_job_unit_done: not built yet");
}
int circuits_job_run(circuits_job *job)
{
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_job_run: not built yet");
}
int circuits_job_compute(circuits_job *job, const int64_t *units, size_t n_units, circuits_job_unit_fn on_unit, void *user_data)
{
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_job_compute: not built yet");
}
int circuits_job_store(circuits_job *job, int64_t unit, const void *bytes, size_t n_bytes)
{
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_job_store: not built yet");
}
int cx_job_result_add(cx_job_result *r, const char *name, cx_dtype dtype, int ndim, const int64_t *shape, void **data)
{
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "cx_job_result_add: not built yet");
}
void circuits_job_free(circuits_job *job)
{
}
const char *circuits_job_provenance(const circuits_job *job)
{
    return NULL;
}
void cx_job_result_clear(cx_job_result *r)
{
}
void cx_job_unit_rows(const circuits_job *job, int64_t u, int64_t *row0, int64_t *n)
{
}
const cx_job_kind *cx_job_kind_by_name(const char *name)
{
    return NULL;
}
