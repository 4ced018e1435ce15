/* Evicting files from the page cache (for cold-load timings) and checking that it worked. */
#ifndef PAGE_CACHE_H
#define PAGE_CACHE_H

#include <stddef.h>

/* Drops the file's clean pages from the page cache (posix_fadvise DONTNEED; no root needed).
 * Pages another process has mapped or dirtied stay: check with page_cache_resident. 0 or -1. */
int page_cache_evict(const char *path);
/* Fraction of the file's pages in the page cache (mincore on a fresh mapping), or -1. */
double page_cache_resident(const char *path);
/* Paths of the *.safetensors files of a model directory (NULL-terminated, malloc'd; free with
 * page_cache_free_list), and their total size in bytes. */
char **page_cache_weight_files(const char *dir, size_t *total_bytes);
void page_cache_free_list(char **list);

#endif
