/* Text datasets (io/dataset_text.c): .txt (one document a line) and .jsonl (one JSON object a
 * line, its string field o->column) read line by line, never whole, each document tokenized
 * alone, the documents joined by EOS and cut into rows (docs/jobs.md "Datasets"). */
#ifndef CIRCUITS_DATASET_TEXT_H
#define CIRCUITS_DATASET_TEXT_H

#include "internal.h"

/* A line (a document, a JSON object) may not be longer than this: a bound on the memory a
 * hostile file can make one line take. */
#define CX_DS_MAX_LINE ((size_t)64 << 20)

/* The rows of the text file at path: *rows [*n_rows, o->seq_len], cx_malloc'd (NULL and 0 on
 * failure). o holds the checked options (seq_len, prepend_bos, max_rows, tokenizer, column). */
int cx_dataset_text_rows(const char *path, bool jsonl, const circuits_dataset_options *o, int32_t **rows,
                         int64_t *n_rows, const char *fn);

#endif
