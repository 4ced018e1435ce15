/* circuits_dataset: token rows and per-row columns (.npy, .safetensors, text). PLACEHOLDER. */
#include "job.h"

void circuits_dataset_options_init(circuits_dataset_options *opts)
{
}
int circuits_dataset_open(circuits_dataset **out, const char *path, const circuits_dataset_options *opts)
{
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_dataset_open: not built yet");
}
int circuits_dataset_from_tokens(circuits_dataset **out, const int32_t *tokens, int64_t n_rows, int64_t pos)
{
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_dataset_from_tokens: not built yet");
}
int circuits_dataset_set_column(circuits_dataset *ds, const char *name, const int32_t *values, int64_t n_rows, int64_t width)
{
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_dataset_set_column: not built yet");
}
int circuits_dataset_load_column(circuits_dataset *ds, const char *name, const char *path, const char *tensor)
{
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_dataset_load_column: not built yet");
}
int circuits_dataset_dims(const circuits_dataset *ds, int64_t *n_rows, int64_t *pos)
{
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_dataset_dims: not built yet");
}
int circuits_dataset_column(const circuits_dataset *ds, const char *name, const int32_t **values, int64_t *width)
{
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_dataset_column: not built yet");
}
int circuits_dataset_digest(const circuits_dataset *ds, char *out)
{
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_dataset_digest: not built yet");
}
void circuits_dataset_free(circuits_dataset *ds)
{
}
const cx_ds_column *cx_dataset_find(const circuits_dataset *ds, const char *name)
{
    return NULL;
}
