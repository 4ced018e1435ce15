/* Error codes, their names, and the per-thread last-error message. */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define CX_MSG_MAX 1024

static _Thread_local char tls_message[CX_MSG_MAX];

const char *circuits_status_string(int status)
{
    switch (status) {
    case CIRCUITS_OK: return "CIRCUITS_OK: success";
    case CIRCUITS_E_INVALID_ARGUMENT: return "CIRCUITS_E_INVALID_ARGUMENT: invalid argument";
    case CIRCUITS_E_OUT_OF_MEMORY: return "CIRCUITS_E_OUT_OF_MEMORY: out of memory";
    case CIRCUITS_E_IO: return "CIRCUITS_E_IO: input/output error";
    case CIRCUITS_E_FORMAT: return "CIRCUITS_E_FORMAT: malformed file";
    case CIRCUITS_E_CONFIG: return "CIRCUITS_E_CONFIG: invalid model config";
    case CIRCUITS_E_UNSUPPORTED: return "CIRCUITS_E_UNSUPPORTED: not supported";
    case CIRCUITS_E_TENSOR_MISSING: return "CIRCUITS_E_TENSOR_MISSING: missing tensor";
    case CIRCUITS_E_TENSOR_UNEXPECTED: return "CIRCUITS_E_TENSOR_UNEXPECTED: unexpected tensor";
    case CIRCUITS_E_SHAPE: return "CIRCUITS_E_SHAPE: shape mismatch";
    case CIRCUITS_E_DTYPE: return "CIRCUITS_E_DTYPE: unsupported dtype";
    case CIRCUITS_E_NOT_FOUND: return "CIRCUITS_E_NOT_FOUND: not found";
    case CIRCUITS_E_RANGE: return "CIRCUITS_E_RANGE: value out of range";
    case CIRCUITS_E_CALLBACK: return "CIRCUITS_E_CALLBACK: hook callback failed";
    case CIRCUITS_E_STOPPED: return "CIRCUITS_E_STOPPED: run stopped by a hook callback";
    case CIRCUITS_E_VERSION: return "CIRCUITS_E_VERSION: unknown options struct size";
    case CIRCUITS_E_PROVENANCE: return "CIRCUITS_E_PROVENANCE: outputs whose provenance records disagree";
    default: return "unknown circuits status";
    }
}

const char *circuits_last_error(void) { return tls_message; }

void circuits_clear_error(void) { tls_message[0] = '\0'; }

int cx_fail(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls_message, sizeof tls_message, fmt, ap);
    va_end(ap);
    return status;
}

unsigned circuits_version_number(void) { return CIRCUITS_VERSION_NUMBER; }
const char *circuits_version_string(void) { return CIRCUITS_VERSION_STRING; }
int circuits_abi_version(void) { return CIRCUITS_ABI_VERSION; }
