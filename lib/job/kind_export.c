/* Job kind(s). PLACEHOLDER. */
#include "job.h"

static int prepare_nb(circuits_job *job, json_t *params)
{
    (void)job;
    (void)params;
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "job kind: not built yet");
}

const cx_job_kind cx_job_export = {.name = "export", .prepare = prepare_nb};
