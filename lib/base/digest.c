/* SHA-256 through OpenSSL's libcrypto. PLACEHOLDER. */
#include "job.h"

struct cx_sha256 { int unused; };
int cx_sha256_new(cx_sha256 **out)
{
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "cx_sha256_new: not built yet");
}
int cx_sha256_update(cx_sha256 *h, const void *data, size_t n)
{
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "cx_sha256_update: not built yet");
}
int cx_sha256_final(cx_sha256 *h, char *hex)
{
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "cx_sha256_final: not built yet");
}
int cx_sha256_file(const char *path, char *hex, const char *fn)
{
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "cx_sha256_file: not built yet");
}
void cx_sha256_free(cx_sha256 *h)
{
}
