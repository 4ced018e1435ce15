/* Loading JSON with jansson, telling an allocation failure from bad JSON. */
#ifndef CIRCUITS_JSON_LOAD_H
#define CIRCUITS_JSON_LOAD_H

#include "internal.h"

#include <jansson.h>

/* json_loadb / json_load_file, except that on an allocation failure they return NULL with
 * *oom set (err then means nothing). jansson 2.14 reports its allocation failures in three
 * ways: json_error_out_of_memory, no error text at all, and, when its lexer's buffer cannot
 * grow, a syntax error or even a successful parse with a character missing from a string. The
 * last two are caught only where jansson allocates through cx_malloc (the fault-injection
 * build: lib/base/fault.h); the shipped library cannot see them (docs/errors.md). */
json_t *cx_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *err, bool *oom);
json_t *cx_json_load_file(const char *path, size_t flags, json_error_t *err, bool *oom);

#endif
