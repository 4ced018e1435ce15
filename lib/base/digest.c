/* SHA-256 through OpenSSL's libcrypto (EVP): its SHA-NI / AVX2 code hashes a large model file
 * in a fraction of a second. The library's own state is a cx_malloc'd block holding the EVP
 * context (libcrypto allocates that one itself: its failure is reported as out of memory too). */
#include "job.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <string.h>
#include <unistd.h>

struct cx_sha256 {
    EVP_MD_CTX *ctx;
};

int cx_sha256_new(cx_sha256 **out)
{
    *out = NULL;
    cx_sha256 *h = cx_malloc(sizeof *h);
    if (!h) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory starting a SHA-256 digest");
    h->ctx = EVP_MD_CTX_new();
    if (!h->ctx) {
        cx_free(h);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory starting a SHA-256 digest (libcrypto)");
    }
    if (EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
        cx_sha256_free(h);
        /* libcrypto fails an init only when it cannot allocate or fetch the algorithm */
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory starting a SHA-256 digest (libcrypto init)");
    }
    *out = h;
    return CIRCUITS_OK;
}

int cx_sha256_update(cx_sha256 *h, const void *data, size_t n)
{
    if (n && EVP_DigestUpdate(h->ctx, data, n) != 1)
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "SHA-256: libcrypto failed to update a digest");
    return CIRCUITS_OK;
}

int cx_sha256_final(cx_sha256 *h, char *hex)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    int ok = EVP_DigestFinal_ex(h->ctx, md, &len) == 1 && len == 32;
    cx_sha256_free(h);
    if (!ok) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "SHA-256: libcrypto failed to finish a digest");
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[64] = '\0';
    return CIRCUITS_OK;
}

void cx_sha256_free(cx_sha256 *h)
{
    if (!h) return;
    EVP_MD_CTX_free(h->ctx);
    cx_free(h);
}

int cx_sha256_file(const char *path, char *hex, const char *fn)
{
    enum { CHUNK = 1 << 20 };
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cx_fail(CIRCUITS_E_IO, "%s: cannot open %s: %s", fn, path, strerror(errno));
    unsigned char *buf = cx_malloc(CHUNK);
    cx_sha256 *h = NULL;
    int rc = buf ? cx_sha256_new(&h)
                 : cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory hashing %s", fn, path);
    while (!rc) {
        ssize_t n = read(fd, buf, CHUNK);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            rc = cx_fail(CIRCUITS_E_IO, "%s: cannot read %s: %s", fn, path, strerror(errno));
            break;
        }
        if (n == 0) break;
        rc = cx_sha256_update(h, buf, (size_t)n);
    }
    if (!rc) {
        rc = cx_sha256_final(h, hex);
        h = NULL;
    }
    cx_sha256_free(h);
    cx_free(buf);
    close(fd);
    return rc;
}
