/* The catalogue of bad input (docs/errors.md): every named check is one row of its tables.
 * CALL_FAILS("check_name", call, status, needle) runs a call that must fail with `status` and a
 * message containing `needle`; in -v mode it prints the row
 *     | `call` | `STATUS` | `message` | `check_name` |
 * with the test's temporary directory shown as $TMP. tests/check_catalogue.sh matches the check
 * names of every *_FAILS("name", ...) / *_fails("name", ...) in the test sources against the
 * tables, so keep the name the first argument, a string literal, on the line of the call. */
#ifndef CIRCUITS_CATALOGUE_H
#define CIRCUITS_CATALOGUE_H

#include "testutil.h"

#include <stddef.h>

static int cat_verbose;           /* -v: print rows */
static const char *cat_tmp = "";  /* the test's temporary directory, printed as $TMP */
static const char *cat_data = ""; /* its data directory (tests/tokenizer), printed as $DATA */

/* Prints s with cat_tmp, cat_data replaced by $TMP, $DATA and '|' escaped for a markdown table. */
static void cat_print_text(const char *s)
{
    size_t rl = strlen(cat_tmp), dl = strlen(cat_data);
    while (*s) {
        if (rl && strncmp(s, cat_tmp, rl) == 0) {
            fputs("$TMP", stdout);
            s += rl;
        } else if (dl && strncmp(s, cat_data, dl) == 0) {
            fputs("$DATA", stdout);
            s += dl;
        } else if (*s == '|') {
            fputs("\\|", stdout);
            s++;
        } else {
            putchar(*s++);
        }
    }
}

/* One table row: input (may be NULL: left empty for a hand-written description), status,
 * the current message, check name. */
static void cat_row(const char *name, const char *input, int status)
{
    if (!cat_verbose) return;
    const char *code = circuits_status_string(status), *colon = strchr(code, ':');
    printf("| ");
    if (input) {
        printf("`");
        cat_print_text(input);
        printf("`");
    }
    printf(" | `%.*s` | `", (int)(colon ? colon - code : (ptrdiff_t)strlen(code)), code);
    cat_print_text(circuits_last_error());
    printf("` | `%s` |\n", name);
}

#define CAT_NOTE_FAIL(name, f0)                                                            \
    do {                                                                                   \
        if (tu_failures != (f0)) fprintf(stderr, "  ^ in check '%s'\n", (name));           \
    } while (0)

/* A call that must fail with status and a message containing needle. */
#define CALL_FAILS(name, call, status, needle)                                             \
    do {                                                                                   \
        int f0_ = tu_failures;                                                             \
        CHECK_FAILS((call), (status), (needle));                                           \
        cat_row((name), #call, (status));                                                  \
        CAT_NOTE_FAIL((name), f0_);                                                        \
    } while (0)

#endif
