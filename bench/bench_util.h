/* Helpers shared by the tapegrad benchmarks: a monotonic clock, OpenBLAS
 * threads, an allocation counter, peak memory and JSON result lines. Not
 * part of the library. */
#ifndef TAPEGRAD_BENCH_UTIL_H
#define TAPEGRAD_BENCH_UTIL_H

#include <stddef.h>

#include "tapegrad/nn.h"

/* Options shared by every workload. */
typedef struct bench_options {
    int threads;          /* OpenBLAS threads */
    int reps;             /* timed repetitions after the warm-up */
    const char *data_dir; /* Fashion-MNIST IDX files */
} bench_options;

/* Returns seconds from a monotonic clock. */
double bench_now(void);

/* Sets the number of OpenBLAS threads (a no-op in a build without OpenBLAS). */
void bench_set_threads(int n);

/* Prints one JSON line that describes this build: whether the compiler
 * optimised it, whether AddressSanitizer instruments it, and the BLAS
 * library's own configuration string (its version and CPU kernel). */
void bench_print_build(void);

/* Installs an allocator that counts tapegrad's heap allocations (alloc and
 * realloc calls) and passes them on to malloc. Call before creating any
 * tape or tensor. */
void bench_count_allocations(void);

/* Returns the number of allocations counted so far. */
size_t bench_allocations(void);

/* Returns the process's peak resident set size in KiB. */
long bench_max_rss_kib(void);

/* Prints the library's last error after `context` to stderr and returns -1. */
int bench_fail(const char *context);

/* Prints one result as a JSON line on stdout:
 *   {"side": "tapegrad", "workload": W, "threads": N, "unit": U,
 *    "samples": [...], EXTRA}
 * `extra` is either NULL or more members, already formatted as JSON
 * ("\"allocs_per_step\": 0"). */
void bench_report(const char *workload, int threads, const char *unit,
                  const double *samples, int n_samples, const char *extra);

/* One unit of timed work, such as a training step. Returns 0 or -1. */
typedef int (*bench_step)(void *context);

/* Runs `step` for a warm-up of at least 0.2 s, then `reps` repetitions,
 * each of enough steps to last about 0.05 s. Stores the seconds per step of
 * each repetition in samples[0..reps), and the number of heap allocations
 * all the timed steps made together in *allocations. Returns 0, or -1 when
 * a step fails. */
int bench_time_steps(bench_step step, void *context, int reps, double *samples,
                     size_t *allocations);

/* Fills `t` with uniform numbers in [low, high) drawn from `rng`. */
void bench_fill_uniform(ag_tensor *t, double low, double high, ag_rng *rng);

#endif
