/* A toy public header in the shape of circuits.h (status enum returned as int, opaque handle,
 * size-versioned options struct, callback type), for tests/abi/selftest.sh. Each TOY_* macro
 * makes one variant of the next release; the unmarked header is the baseline. */
#ifndef TOY_H
#define TOY_H

#include <stdint.h>

typedef enum toy_status {
    TOY_OK = 0,
#ifdef TOY_ENUMERATOR_RENUMBERED
    TOY_E_BAD = -3,
#else
    TOY_E_BAD = -1,
#endif
#ifdef TOY_ENUMERATOR_ADDED
    TOY_E_NEW = -2,
#endif
    TOY_E_LAST_UNUSED = -100
} toy_status;

typedef struct toy_handle toy_handle;

typedef int (*toy_fn)(const float *x, void *user_data);
/* a callback only an options struct names (as circuits_generate_fn) */
#ifdef TOY_CALLBACK_CHANGED
typedef int (*toy_step_fn)(int32_t step, void *user_data);
#else
typedef int (*toy_step_fn)(int64_t step, void *user_data);
#endif

typedef struct toy_options {
    uint32_t size;
#ifdef TOY_FIELD_INSERTED
    int32_t first;
#endif
#ifdef TOY_FIELD_RETYPED
    int64_t level;
#else
    int32_t level;
#endif
#ifdef TOY_POINTER_RETYPED
    const double *input;
#else
    const float *input;
#endif
    toy_step_fn on_step;
#ifdef TOY_FIELD_APPENDED
    int32_t extra;
#endif
} toy_options;

/* a struct without a size field, filled by the library (as circuits_tensor) */
typedef struct toy_point {
    float x;
#ifdef TOY_POINT_APPENDED
    float y;
#endif
} toy_point;


void toy_options_init(toy_options *opts);
int toy_point_get(const toy_handle *h, toy_point *out);
int toy_create(toy_handle **out, const toy_options *opts);
#ifdef TOY_SIGNATURE_CHANGED
int toy_run(toy_handle *h, toy_fn fn, void *user_data, int64_t n);
#else
int toy_run(toy_handle *h, toy_fn fn, void *user_data, int32_t n);
#endif
#ifndef TOY_FUNCTION_REMOVED
void toy_free(toy_handle *h);
#endif
#ifdef TOY_FUNCTION_ADDED
int toy_count(const toy_handle *h);
#endif

#endif
