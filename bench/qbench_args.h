/* The command line shared by bench_qmatmul.c and its llama.cpp peer, peer_ggml_mulmat.c:
 *   PROGRAM THREADS REPS [DTYPE ...] [-M m1,m2,...] [-N n1,n2,...] [-copies C]
 * Defaults: Q4_K Q8_0 F16 BF16, M = 1,128,512, N = 4096,11008 (Llama-7B's d_model and d_mlp),
 * one copy of W. */
#ifndef QBENCH_ARGS_H
#define QBENCH_ARGS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct qbench_args {
    int threads, reps, copies, n_names, n_m, n_n;
    const char *names[16];
    int64_t Ms[16], Ns[16];
} qbench_args;

static void qbench_list(const char *s, int64_t *v, int *n)
{
    *n = 0;
    while (*s && *n < 16) {
        v[(*n)++] = strtoll(s, (char **)&s, 10);
        if (*s == ',') s++;
    }
}

/* false (after a usage line) when the arguments are not enough */
static bool qbench_parse(int argc, char **argv, qbench_args *a)
{
    static const char *def[] = {"Q4_K", "Q8_0", "F16", "BF16"};
    if (argc < 3) {
        fprintf(stderr, "usage: %s THREADS REPS [DTYPE ...] [-M m1,m2] [-N n1,n2] [-copies C]\n", argv[0]);
        return false;
    }
    *a = (qbench_args){.threads = atoi(argv[1]), .reps = atoi(argv[2]), .copies = 1, .n_m = 3, .n_n = 2,
                       .Ms = {1, 128, 512}, .Ns = {4096, 11008}};
    if (a->reps < 1) a->reps = 1;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "-M") == 0 && i + 1 < argc) qbench_list(argv[++i], a->Ms, &a->n_m);
        else if (strcmp(argv[i], "-N") == 0 && i + 1 < argc) qbench_list(argv[++i], a->Ns, &a->n_n);
        else if (strcmp(argv[i], "-copies") == 0 && i + 1 < argc) a->copies = atoi(argv[++i]) > 0 ? atoi(argv[i]) : 1;
        else if (a->n_names < 16) a->names[a->n_names++] = argv[i];
    }
    for (int i = 0; !a->n_names && i < 4; i++) a->names[i] = def[i];
    if (!a->n_names) a->n_names = 4;
    return true;
}

#endif
