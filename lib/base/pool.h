/* The library's one thread pool (pool.c): every parallel loop of libcircuits runs on it, and
 * OpenBLAS is driven single-threaded from inside its tasks, so the process never holds two pools
 * competing for the cores (docs/threading.md). */
#ifndef CIRCUITS_POOL_H
#define CIRCUITS_POOL_H

#include "internal.h"

/* A task: processes items [begin, end) of a loop. */
typedef void (*cx_task_fn)(void *arg, int64_t begin, int64_t end);

/* Runs fn over items [0, n): the range is cut into circuits_get_num_threads() contiguous chunks whose
 * boundaries are multiples of `align` (so GEMM tiles line up), and the chunks run on the pool,
 * the caller taking the first. The split depends only on n, align and the configured thread
 * count — never on which threads happen to be free — so results are the same whether the
 * chunks run in parallel or, when the pool is busy with another thread's work or the call is
 * nested, one after another on the caller. Returns when every chunk is done. */
void cx_parallel_for(int64_t n, int64_t align, cx_task_fn fn, void *arg);

/* Serial mode for the calling thread (nestable: each on needs an off): while on, every loop it
 * starts is one chunk run inline, exactly as with a configured thread count of 1. Dataset jobs run
 * each unit so (lib/job/job.h): a unit's bits are then the one-thread bits whatever the pool's
 * size. */
void cx_pool_serial(bool on);

#endif
