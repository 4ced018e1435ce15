/* Files that change under a mapping (docs/loading.md#files-that-change-under-a-mapping).
 *
 *   test_load_memory MODEL_DIR
 *
 * MODEL_DIR is a GPT-2 directory with F32 weights (examples/models/tiny-random-gpt2). Its
 * config.json and model.safetensors are copied into a temporary directory, and:
 *   1. a child process loads the copy mapped (the default) without processing, so the F32
 *      weights are used in place, truncates the file and runs a forward: it must die of SIGBUS
 *      (the documented behaviour, proven);
 *   2. a model loaded from the copy with read_into_memory = 1 gives, after the file was
 *      truncated to 0 bytes and again after it was re-extended with zeros, logits and weights
 *      bit-identical to a mapped load of the untouched original; with processing too;
 *   3. a mapped load shows the file in /proc/self/maps, a read-into-memory load does not;
 *   4. options sizes: 0.2.0's (offsetof read_into_memory), 0.3.0's (offsetof keep_stored_dtype)
 *      and this one's are accepted, a size that cuts a field in two is refused, and so is
 *      keep_stored_dtype 2 (keep_stored_dtype's memory bound: test_stored_memory.c).
 * The child runs first, before this process has started any thread (a fork of a process with
 * a running thread pool would leave the child waiting for threads it does not have). */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define BATCH 2
#define POS 12

static void die(const char *what)
{
    fprintf(stderr, "test_load_memory: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    if (!in || !out) die(from);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) die(to);
    if (ferror(in) || fclose(out) != 0) die(to);
    fclose(in);
}

/* A fresh directory DIR/name holding the model's config.json and model.safetensors. */
static void copy_model(char *out, size_t cap, const char *tmp, const char *name, const char *model)
{
    char from[4096], to[4096 + 64];
    snprintf(out, cap, "%s/%s", tmp, name);
    if (mkdir(out, 0700) != 0) die(out);
    const char *files[] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        snprintf(from, sizeof from, "%s/%s", model, files[i]);
        snprintf(to, sizeof to, "%s/%s", out, files[i]);
        copy_file(from, to);
    }
}

static void resize(const char *dir, off_t size)
{
    char path[4096 + 64];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int fd = open(path, O_WRONLY);
    if (fd < 0 || ftruncate(fd, size) != 0) die(path);
    close(fd);
}

static circuits_load_options opts(int process, int read)
{
    circuits_load_options o;
    circuits_load_options_init(&o);
    if (!process) o.fold_ln = o.center_writing_weights = o.center_unembed = o.fold_value_biases = 0;
    o.read_into_memory = read;
    return o;
}

static const int32_t tokens[BATCH * POS] = {5, 17, 300, 2, 999, 41, 8, 8, 120, 77, 0, 512,
                                           1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};

/* logits[BATCH, POS, d_vocab_out] of a forward; NULL on failure (reported). */
static float *forward(const circuits_model *m)
{
    circuits_config cfg;
    cfg.size = sizeof cfg;
    CHECK_OK(circuits_model_config(m, &cfg));
    float *logits = malloc(sizeof(float) * BATCH * POS * (size_t)cfg.d_vocab_out);
    if (!logits) die("malloc");
    circuits_context *ctx = NULL;
    CHECK_OK(circuits_context_create(&ctx, m, NULL));
    if (!ctx) {
        free(logits);
        return NULL;
    }
    int rc = circuits_context_forward(ctx, tokens, BATCH, POS, logits, NULL, NULL);
    CHECK(rc == CIRCUITS_OK, "forward: %s", circuits_last_error());
    circuits_context_free(ctx);
    if (rc) {
        free(logits);
        return NULL;
    }
    return logits;
}

static size_t n_logits(const circuits_model *m)
{
    circuits_config cfg;
    cfg.size = sizeof cfg;
    return circuits_model_config(m, &cfg) ? 0 : (size_t)BATCH * POS * (size_t)cfg.d_vocab_out;
}

/* Every weight of a equals b's, element by element (views may differ in strides). */
static int same_weights(const circuits_model *a, const circuits_model *b)
{
    size_t n = circuits_model_weight_count(a);
    if (n != circuits_model_weight_count(b)) return 0;
    for (size_t w = 0; w < n; w++) {
        circuits_tensor x, y;
        if (circuits_model_weight_at(a, w, &x) || circuits_model_weight_at(b, w, &y) || x.ndim != y.ndim) return 0;
        int64_t count = 1;
        for (int d = 0; d < x.ndim; d++) {
            if (x.shape[d] != y.shape[d]) return 0;
            count *= x.shape[d];
        }
        for (int64_t i = 0; i < count; i++) {
            int64_t r = i, ox = 0, oy = 0;
            for (int d = x.ndim - 1; d >= 0; d--) {
                ox += (r % x.shape[d]) * x.strides[d];
                oy += (r % x.shape[d]) * y.strides[d];
                r /= x.shape[d];
            }
            if (memcmp(&x.data[ox], &y.data[oy], sizeof(float)) != 0) return 0;
        }
    }
    return 1;
}

/* Does /proc/self/maps name a mapping of dir's model.safetensors? -1 if it cannot be read. */
static int mapped(const char *dir)
{
    char path[4096 + 64], line[8192];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return -1;
    int found = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, path)) found = 1;
    fclose(f);
    return found;
}

/* 1. The default: a mapped file truncated under a loaded model kills the next forward. */
static void sigbus_child(const char *tmp, const char *model)
{
    char dir[4096];
    copy_model(dir, sizeof dir, tmp, "mapped", model);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        alarm(120); /* a hang is a failure, not a stuck test */
        /* the default action, even where a sanitizer installed a handler of its own */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        sigaction(SIGBUS, &sa, NULL);
        circuits_load_options o = opts(0, 0);
        circuits_model *m = NULL;
        if (circuits_model_load(&m, dir, &o)) _exit(3);
        circuits_context *ctx = NULL;
        if (circuits_context_create(&ctx, m, NULL)) _exit(4);
        resize(dir, 0);
        float *logits = malloc(sizeof(float) * n_logits(m));
        circuits_context_forward(ctx, tokens, BATCH, POS, logits, NULL, NULL);
        _exit(0); /* not reached: the forward reads the lost pages */
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) die("waitpid");
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS,
          "a forward of a mapped model whose file was truncated: child %s %d, want killed by SIGBUS (%d)",
          WIFSIGNALED(st) ? "killed by signal" : "exited with", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st),
          SIGBUS);
}

/* 2 and 3. Read into memory: the file can change, the model does not. */
static void read_survives_truncation(const char *tmp, const char *model, int process)
{
    char dir[4096];
    copy_model(dir, sizeof dir, tmp, process ? "read_processed" : "read", model);
    circuits_load_options o = opts(process, 0), r = opts(process, 1);
    circuits_model *ref = NULL, *m = NULL;
    CHECK_OK(circuits_model_load(&ref, model, &o)); /* the untouched original, mapped */
    CHECK_OK(circuits_model_load(&m, dir, &r));
    if (!ref || !m) goto done;
    CHECK(mapped(dir) == 0, "a read_into_memory load still maps %s", dir);
    float *want = forward(ref), *got;
    size_t n = n_logits(ref);
    if (!want) goto done;
    resize(dir, 0);
    got = forward(m);
    CHECK(got && n_logits(m) == n && memcmp(got, want, n * sizeof(float)) == 0,
          "read_into_memory (processing %d): logits after truncating the file to 0 bytes differ", process);
    CHECK(same_weights(m, ref), "read_into_memory (processing %d): weights after truncation differ", process);
    free(got);
    resize(dir, 1 << 20); /* re-extended: zeros where the weights were */
    got = forward(m);
    CHECK(got && memcmp(got, want, n * sizeof(float)) == 0,
          "read_into_memory (processing %d): logits after the file became zeros differ", process);
    free(got);
    free(want);
done:
    circuits_model_free(m);
    circuits_model_free(ref);
}

/* 3 and 4. Mapped loads map; 0.2.0's and 0.3.0's options sizes are accepted, a size cutting a
 * field is not. */
static void sizes(const char *tmp, const char *model)
{
    char dir[4096];
    copy_model(dir, sizeof dir, tmp, "sizes", model);
    size_t v020 = offsetof(circuits_load_options, read_into_memory),
           v030 = offsetof(circuits_load_options, keep_stored_dtype);
    CHECK(v020 == 24 && v030 == 28 && sizeof(circuits_load_options) == 32,
          "layout: read_into_memory at %zu, keep_stored_dtype at %zu, size %zu", v020, v030,
          sizeof(circuits_load_options));

    /* 0.2.0's struct, in a block of exactly its size: accepted, and the file is mapped */
    circuits_load_options o = opts(0, 0);
    o.size = (uint32_t)v020;
    unsigned char *old = malloc(v020);
    if (!old) die("malloc");
    memcpy(old, &o, v020);
    circuits_model *m = NULL;
    CHECK_OK(circuits_model_load(&m, dir, (const circuits_load_options *)(void *)old));
    free(old);
    CHECK(m && mapped(dir) == 1, "a load with 0.2.0's options does not map %s", dir);
    circuits_model_free(m);
    m = NULL;

    /* the whole struct, mapped then read */
    o = opts(0, 0);
    CHECK_OK(circuits_model_load(&m, dir, &o));
    CHECK(m && mapped(dir) == 1, "a default load does not map %s", dir);
    circuits_model_free(m);
    m = NULL;
    CHECK(mapped(dir) == 0, "freeing the model leaves %s mapped", dir);
    o = opts(0, 1);
    CHECK_OK(circuits_model_load(&m, dir, &o));
    CHECK(m && mapped(dir) == 0, "a read_into_memory load maps %s", dir);
    circuits_model_free(m);
    m = NULL;

    /* 0.3.0's struct (read_into_memory, no keep_stored_dtype), in a block of exactly its size */
    o = opts(0, 1);
    o.size = (uint32_t)v030;
    old = malloc(v030);
    if (!old) die("malloc");
    memcpy(old, &o, v030);
    CHECK_OK(circuits_model_load(&m, dir, (const circuits_load_options *)(void *)old));
    free(old);
    CHECK(m && mapped(dir) == 0, "a load with 0.3.0's options and read_into_memory maps %s", dir);
    circuits_model_free(m);

    /* sizes that are not the end of a published version */
    const uint32_t bad[] = {0, 4, (uint32_t)v020 - 4, (uint32_t)v020 + 2, (uint32_t)v030 + 2, (uint32_t)sizeof o + 4};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o = opts(0, 1);
        o.size = bad[i];
        m = (circuits_model *)(void *)&o;
        CHECK_FAILS(circuits_model_load(&m, dir, &o), CIRCUITS_E_VERSION, "is not one this library knows (24 or 28 or 32)");
        CHECK(m == NULL, "size %u: *out not NULL", bad[i]);
    }
    o = opts(0, 2);
    CHECK_FAILS(circuits_model_load(&m, dir, &o), CIRCUITS_E_INVALID_ARGUMENT, "read_into_memory 2 must be 0 or 1");
    o = opts(0, 0);
    o.keep_stored_dtype = 2;
    CHECK_FAILS(circuits_model_load(&m, dir, &o), CIRCUITS_E_INVALID_ARGUMENT, "keep_stored_dtype 2 must be 0 or 1");
}

static void remove_tree(const char *tmp)
{
    const char *dirs[] = {"mapped", "read", "read_processed", "sizes"};
    char path[4096 + 128];
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        const char *files[] = {"config.json", "model.safetensors"};
        for (int k = 0; k < 2; k++) {
            snprintf(path, sizeof path, "%s/%s/%s", tmp, dirs[i], files[k]);
            unlink(path);
        }
        snprintf(path, sizeof path, "%s/%s", tmp, dirs[i]);
        rmdir(path);
    }
    rmdir(tmp);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_load_memory MODEL_DIR\n");
        return 2;
    }
    const char *model = argv[1];
    const char *base = getenv("TMPDIR");
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/test_load_memory.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmp)) die("mkdtemp");

    sigbus_child(tmp, model); /* first: no thread of this process exists yet */
    read_survives_truncation(tmp, model, 0);
    read_survives_truncation(tmp, model, 1);
    sizes(tmp, model);

    remove_tree(tmp);
    return tu_finish("test_load_memory");
}
