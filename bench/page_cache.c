/* Page-cache control for cold-load benchmarks: posix_fadvise to evict, mincore to verify. */
#include "page_cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int page_cache_evict(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    int rc = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    return rc ? -1 : 0;
}

double page_cache_resident(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) || st.st_size == 0) {
        close(fd);
        return -1;
    }
    /* mapping without touching it does not fault pages in */
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return -1;
    long page = sysconf(_SC_PAGESIZE);
    size_t n = ((size_t)st.st_size + (size_t)page - 1) / (size_t)page, in = 0;
    unsigned char *vec = malloc(n);
    if (vec && !mincore(p, (size_t)st.st_size, vec))
        for (size_t i = 0; i < n; i++) in += vec[i] & 1;
    munmap(p, (size_t)st.st_size);
    double frac = vec ? (double)in / (double)n : -1;
    free(vec);
    return frac;
}

char **page_cache_weight_files(const char *dir, size_t *total_bytes)
{
    DIR *d = opendir(dir);
    if (!d) return NULL;
    size_t n = 0, cap = 8;
    char **list = calloc(cap + 1, sizeof *list);
    *total_bytes = 0;
    for (struct dirent *e; list && (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 12 || strcmp(e->d_name + len - 12, ".safetensors")) continue;
        if (n == cap) {
            char **grown = realloc(list, (2 * cap + 1) * sizeof *list);
            if (!grown) break;
            list = grown, cap *= 2;
        }
        list[n] = malloc(strlen(dir) + len + 2);
        sprintf(list[n], "%s/%s", dir, e->d_name);
        struct stat st;
        if (!stat(list[n], &st)) *total_bytes += (size_t)st.st_size;
        list[++n] = NULL;
    }
    closedir(d);
    return list;
}

void page_cache_free_list(char **list)
{
    for (char **p = list; p && *p; p++) free(*p);
    free(list);
}
