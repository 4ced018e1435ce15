/* bench_pagecache evict|resident FILE...: the page-cache control of the C driver, for the
 * Python peers' cold loads. Prints one JSON line per file: the resident fraction after the
 * action (evict checks that eviction worked: another process mapping the file defeats it). */
#include "page_cache.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 3 || (strcmp(argv[1], "evict") && strcmp(argv[1], "resident"))) {
        fprintf(stderr, "usage: %s evict|resident FILE...\n", argv[0]);
        return 2;
    }
    int rc = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[1], "evict") && page_cache_evict(argv[i])) rc = 1;
        printf("{\"file\": \"%s\", \"resident\": %.4f}\n", argv[i], page_cache_resident(argv[i]));
    }
    return rc;
}
