/* The `circuits` command-line tool: shared helpers (docs/cli.md). Not part of the library. */
#ifndef CIRCUITS_CLI_H
#define CIRCUITS_CLI_H

#include <circuits.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define EXIT_USAGE 2 /* a bad command line: unknown option, missing or malformed value */
#define EXIT_FAIL 1  /* a failure: a model that does not load, a library error, an unwritable file */

/* ---- messages (util.c) ---- */
/* The subcommand being run, for messages ("circuits run: ..."). */
extern const char *cli_cmd;
/* Prints "circuits CMD: MESSAGE" and a hint to --help; returns EXIT_USAGE. */
int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints "circuits CMD: MESSAGE"; returns EXIT_FAIL. */
int failure(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints "circuits CMD: WHAT: <the library's last error>" (just the message when what is NULL);
 * returns EXIT_FAIL. */
int lib_failure(const char *what);

/* ---- argument parsing (util.c) ---- */
typedef struct args {
    int argc;
    char **argv;
    int i; /* the argument being looked at */
} args;

bool is_help(const char *s);
/* If argv[i] is option `name` ("--pos VALUE" or "--pos=VALUE"): *value is its value, 1 is
 * returned and i advanced past a separate value; 0 if it is another argument; -1 (message
 * printed) if the value is missing. */
int opt_value(args *a, const char *name, const char **value);
/* 1 if argv[i] is the flag `name` (a flag given a value, "--json=1", is a usage error: -1). */
int opt_flag(args *a, const char *name);
/* Whole-string numbers in [lo, hi]; 0 on success, else EXIT_USAGE with a message naming opt. */
int parse_int(const char *opt, const char *s, long long lo, long long hi, long long *out);
int parse_float(const char *opt, const char *s, double lo, double hi, double *out);
/* "1,2,3" or "1 2 3" into a malloc'ed array; 0 or EXIT_USAGE. */
int parse_ids(const char *opt, const char *s, int32_t **ids, int64_t *n);

/* Options most subcommands share. */
typedef struct common {
    const char *model;   /* the MODEL positional */
    bool json;           /* --json */
    bool no_processing;  /* --no-processing */
    bool no_mmap;        /* --no-mmap: read the weight files into memory (read_into_memory) */
    const char *prompt;  /* --prompt TEXT */
    const char *tokens;  /* --tokens IDS */
    bool no_bos;         /* --no-bos */
    bool keep_stored;    /* load with keep_stored_dtype (set by commands that offer it: diff) */
} common;

/* Handles --json, --no-processing, --no-mmap, and (when `input`) --prompt, --tokens, --no-bos. Returns 1
 * if argv[i] was one of them, 0 if not, EXIT_USAGE-style -1 on a missing value. */
int common_opt(args *a, common *c, bool input);
/* The MODEL positional (the first non-option); a second one is a usage error. 1 / 0 / -1. */
int common_positional(args *a, common *c);
/* After parsing: MODEL given, and (when `input`) exactly one of --prompt / --tokens. 0 or EXIT_USAGE. */
int common_check(const common *c, bool input);

/* ---- models and tokens (util.c) ---- */
/* Loads c->model (from_pretrained processing, or none with --no-processing; files mapped, or
 * read into memory with --no-mmap); 0 or EXIT_FAIL. */
int load_model(const common *c, circuits_model **m, circuits_config *cfg);
/* The input tokens from --prompt (the model's tokenizer; BOS first unless --no-bos, as
 * TransformerLens's to_tokens) or --tokens; *ids malloc'ed. 0 or EXIT_FAIL. */
int input_tokens(const common *c, const circuits_model *m, int32_t **ids, int64_t *n);
/* text tokenized by tok (BOS first when bos and the tokenizer has one); *ids malloc'ed. opt names
 * the option in messages, ids_opt the one that gives ids instead (tok NULL: the model has no
 * tokenizer). 0 or EXIT_FAIL. */
int tokenize_text(const circuits_tokenizer *tok, const char *model, const char *opt, const char *ids_opt,
                  const char *text, bool bos, int32_t **ids, int64_t *n);
/* A token's bytes for display: printable, with \n, \t, \xNN escapes ("?" without a tokenizer). */
void token_display(const circuits_tokenizer *tok, int32_t id, char *buf, size_t cap);
/* The raw bytes of a token into buf (NUL-terminated, possibly part of a UTF-8 character). */
size_t token_bytes(const circuits_tokenizer *tok, int32_t id, char *buf, size_t cap);

/* ---- JSON output (util.c) ---- */
/* A JSON string: escapes, and invalid UTF-8 bytes as U+FFFD, so that any bytes give valid JSON. */
void json_str(FILE *f, const char *s, size_t n);
void json_cstr(FILE *f, const char *s);
/* A number, or null when not finite. */
void json_num(FILE *f, double x);

/* ---- progress bar (util.c) ---- */
/* Seconds on the monotonic clock. */
double cli_now(void);
/* CPU seconds of this process (every thread). */
double cli_cpu_now(void);

/* Drawn on stderr only when stderr is a terminal and the work has taken more than a second
 * (CIRCUITS_PROGRESS=always / never overrides); erased when done. */
typedef struct progress {
    const char *label;
    int64_t total, done;
    double start, last, delay; /* delay: seconds before the bar appears */
    bool enabled, drawn;
    const char *unit;  /* progress_counted: "units": shows done/total, rate and ETA */
    int64_t base;      /* done already at the start (not counted in the rate) */
    bool lines;        /* plain lines (stderr not a terminal), one every few seconds, kept */
} progress;

void progress_begin(progress *p, const char *label, int64_t total);
/* Counts `unit`s (done/total, rate, ETA), base of them done before the start. `force` (--progress):
 * shown even when stderr is not a terminal, as plain lines then. */
void progress_counted(progress *p, const char *unit, int64_t base, bool force);
void progress_set(progress *p, int64_t done);
void progress_end(progress *p);
/* Registers a hook on every blocks.*.hook_resid_post that advances p by one per layer run. */
int progress_hook_layers(circuits_context *ctx, progress *p);

/* ---- pictures (util.c; built with cairo only) ---- */

/* ---- the picture commands attn, lens, patch (pictures.c) ---- */
typedef struct picture_opts {
    const char *png;       /* --png FILE */
    const char *html;      /* --html FILE */
    const char *tokenizer; /* --tokenizer FILE: instead of the model's (the bundled byte-level models have none) */
} picture_opts;
/* --png, --html, --tokenizer: 1 / 0 / -1 as common_opt. */
int picture_opt(args *a, picture_opts *p);
/* Before any work: --png needs cairo, and the directories of --png / --html must exist. 0 or an exit code. */
int picture_check(const picture_opts *p);
/* The tokenizer: the model's, or --tokenizer's loaded into *owned (free it after use). 0 or EXIT_FAIL. */
int picture_tokenizer(const picture_opts *p, const circuits_model *m, circuits_tokenizer **owned,
                      const circuits_tokenizer **tok);
/* Tokens from text (option text_opt, tokenized, BOS first when bos) or else ids_text (option
 * ids_opt), every id inside d_vocab and at most n_ctx of them; *ids malloc'ed. 0 or an exit code. */
int picture_tokens(const char *model, const circuits_config *cfg, const circuits_tokenizer *tok, bool bos,
                   const char *text_opt, const char *text, const char *ids_opt, const char *ids_text, int32_t **ids,
                   int64_t *n);
/* Each token's bytes as a NUL-terminated string (the id in decimal without a tokenizer); NULL when
 * out of memory. free_texts frees them. */
char **token_texts(const circuits_tokenizer *tok, const int32_t *ids, int64_t n);
void free_texts(char **s, int64_t n);
/* The model's directory name (the path's last part, trailing slashes ignored): its length, *name
 * where it starts in model. */
int picture_model_name(const char *model, const char **name);
/* attn-only-2l, "The cat sat..." (24 tokens): the model's directory name and the input (text NULL: ids). */
void picture_subtitle(char *buf, size_t cap, const char *model, const char *text, int64_t n_tokens);
/* A token for tables: token_display's text in quotes ('the'), or the id without a tokenizer. */
void quoted(const circuits_tokenizer *tok, int32_t id, char *buf, size_t cap);
/* Saves a page a circuits_vis_* function made (circuits_vis_save) and frees it. 0 or EXIT_FAIL. */
int write_page(const char *path, char *html, size_t len);
/* One HTML document holding n views made with circuits_vis_options.fragment = 1. 0 or EXIT_FAIL. */
int write_views(const char *path, const char *title, char *const *fragments, const size_t *lens, int n);
/* FILE.png -> FILE-SUFFIX.png (suffix NULL: the path itself). */
void picture_path(char *buf, size_t cap, const char *path, const char *suffix);
/* rows x cols floats as a JSON array of rows on stdout (json_num: non-finite as null). */
void json_grid(const float *v, int64_t rows, int64_t cols);
/* ,"png":FILE or null,"html":FILE or null} closing a picture command's JSON object. */
void json_outputs(const char *png, const char *html);
#ifdef CIRCUITS_CLI_CAIRO
struct plot_heatmap_spec;
/* plot_heatmap of s with its column labels (and, rows_too, its row labels: a square map) made from
 * col_texts by plot_token_label. 0 or EXIT_FAIL naming path. */
int picture_heatmap(const char *path, struct plot_heatmap_spec *s, char *const *col_texts, bool rows_too);
#endif

/* ---- tensor files (tensor_io.c) ---- */
typedef struct named_tensor {
    const char *name;
    int ndim;
    const int64_t *shape;
    const float *data; /* contiguous */
} named_tensor;

/* A NumPy .npy file (format 1.0, '<f4', C order) of one tensor; 0 or EXIT_FAIL. */
int write_npy(const char *path, const named_tensor *t);
/* A safetensors file of n F32 tensors, with string metadata pairs meta[2k], meta[2k+1]
 * (n_meta pairs); 0 or EXIT_FAIL. */
int write_safetensors(const char *path, const named_tensor *t, size_t n, const char *const *meta, size_t n_meta);

/* A NumPy .npy file of one vector (shape (d,), '<f4' or '<f8', C order) into a malloc'ed float
 * array; 0 or EXIT_FAIL. */
int read_npy_vector(const char *path, float **data, int64_t *n);

/* ---- steering (steer.c) ---- */
/* --steer HOOK=FILE.npy[:SCALE] and --control-vector FILE.gguf[:SCALE] of `generate`: parsed
 * while reading the command line, registered on the context once the model is loaded. */
typedef struct steer_spec {
    const char *arg;   /* the option's value as given */
    bool control;      /* --control-vector */
} steer_spec;
/* Checks the syntax of one value (exit EXIT_USAGE with a message if malformed). */
int steer_parse(const char *opt, const char *arg);
/* Registers every spec on ctx; 0 or EXIT_FAIL. */
int steer_apply(circuits_context *ctx, const circuits_config *cfg, const steer_spec *specs, size_t n);
/* A NumPy .npy file (float32/64, int32/64, bool, uint8; C order; at most 4 dims) as float32:
 * *out malloc'ed, *ndim and shape set; 0 or EXIT_FAIL. */
int read_npy(const char *path, float **out, int *ndim, int64_t shape[4]);

/* ---- subcommands ---- */
int cmd_info(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_cache(int argc, char **argv);
int cmd_heads(int argc, char **argv);
int cmd_compose(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_diff(int argc, char **argv);
int cmd_steer_vector(int argc, char **argv);
int cmd_sae_stats(int argc, char **argv);
int cmd_sae_show(int argc, char **argv);
int cmd_attn(int argc, char **argv);
int cmd_lens(int argc, char **argv);
int cmd_patch(int argc, char **argv);

/* ---- SAEs (sae.c) ---- */
/* --sae DIR ... [--sae-error-term] of run and cache: loads each SAE into (*saes)[i] (calloc'ed,
 * n entries) and attaches it to ctx (circuits_context_add_sae). 0 or EXIT_FAIL; free_saes after
 * the context in either case. */
int attach_saes(circuits_context *ctx, char *const *dirs, size_t n, bool error_term, circuits_sae ***saes);
void free_saes(circuits_sae **saes, size_t n);
int cmd_probe_fit(int argc, char **argv);
int cmd_job(int argc, char **argv);
int cmd_merge(int argc, char **argv);

#endif
