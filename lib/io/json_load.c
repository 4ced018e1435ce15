/* Loading JSON with jansson, telling an allocation failure from bad JSON (json_load.h). */
#include "json_load.h"

static json_t *checked(json_t *root, const json_error_t *err, unsigned long failures_before, bool *oom)
{
    /* an allocation failed during the parse: whatever came out may have lost characters */
    *oom = cx_alloc_failures() != failures_before ||
           (!root && (json_error_code(err) == json_error_out_of_memory || err->text[0] == '\0'));
    if (*oom && root) {
        json_decref(root);
        root = NULL;
    }
    return root;
}

json_t *cx_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *err, bool *oom)
{
    unsigned long failures = cx_alloc_failures();
    return checked(json_loadb(buf, len, flags, err), err, failures, oom);
}

json_t *cx_json_load_file(const char *path, size_t flags, json_error_t *err, bool *oom)
{
    unsigned long failures = cx_alloc_failures();
    return checked(json_load_file(path, flags, err), err, failures, oom);
}
