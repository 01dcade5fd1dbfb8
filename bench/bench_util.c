/* Helpers shared by the tapegrad benchmarks. */
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#ifdef AG_HAVE_CBLAS
void openblas_set_num_threads(int num_threads);
char *openblas_get_config(void);
#endif

/* AddressSanitizer defines __SANITIZE_ADDRESS__ under GCC; Clang reports it
 * through __has_feature. */
#if defined(__SANITIZE_ADDRESS__)
#define BENCH_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BENCH_SANITIZED 1
#endif
#endif
#ifndef BENCH_SANITIZED
#define BENCH_SANITIZED 0
#endif

double bench_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void bench_set_threads(int n)
{
#ifdef AG_HAVE_CBLAS
    if (n > 0)
        openblas_set_num_threads(n);
#else
    (void)n;
#endif
}

void bench_print_build(void)
{
#ifdef __OPTIMIZE__
    const char *optimized = "true";
#else
    const char *optimized = "false";
#endif
#ifdef AG_HAVE_CBLAS
    const char *blas = openblas_get_config();
#else
    const char *blas = "none (portable kernel)";
#endif

    /* The OpenBLAS configuration string has no quotes or backslashes. */
    printf("{\"build\": true, \"optimized\": %s, \"sanitized\": %s, \"blas\": \"%s\"}\n",
           optimized, BENCH_SANITIZED ? "true" : "false", blas);
}

/* ---- counting allocator --------------------------------------------------- */

static size_t allocation_count;

static void *counting_alloc(size_t size, void *user)
{
    (void)user;
    allocation_count++;
    return malloc(size);
}

static void *counting_realloc(void *ptr, size_t size, void *user)
{
    (void)user;
    allocation_count++;
    return realloc(ptr, size);
}

static void counting_free(void *ptr, void *user)
{
    (void)user;
    free(ptr);
}

void bench_count_allocations(void)
{
    static const ag_allocator counting = {counting_alloc, counting_realloc,
                                          counting_free, NULL};

    ag_set_allocator(&counting);
}

size_t bench_allocations(void)
{
    return allocation_count;
}

/* ---- timing --------------------------------------------------------------- */

#define WARMUP_SECONDS 0.2
#define REP_SECONDS 0.05

int bench_time_steps(bench_step step, void *context, int reps, double *samples,
                     size_t *allocations)
{
    /* The warm-up also sizes the repetitions: it grows the tape's arena to
     * its final size and measures the time of one step. */
    double start = bench_now();
    long warm_steps = 0;
    double elapsed;

    do {
        if (step(context) != 0)
            return -1;
        warm_steps++;
        elapsed = bench_now() - start;
    } while (elapsed < WARMUP_SECONDS || warm_steps < 3);

    long steps_per_rep = (long)(REP_SECONDS / (elapsed / (double)warm_steps));
    if (steps_per_rep < 1)
        steps_per_rep = 1;

    size_t allocations_before = bench_allocations();
    for (int r = 0; r < reps; r++) {
        double rep_start = bench_now();

        for (long i = 0; i < steps_per_rep; i++) {
            if (step(context) != 0)
                return -1;
        }
        samples[r] = (bench_now() - rep_start) / (double)steps_per_rep;
    }
    *allocations = bench_allocations() - allocations_before;
    return 0;
}

/* ---- reporting ------------------------------------------------------------ */

long bench_max_rss_kib(void)
{
    struct rusage usage;

    if (getrusage(RUSAGE_SELF, &usage) != 0)
        return -1;
    return usage.ru_maxrss; /* KiB on Linux */
}

int bench_fail(const char *context)
{
    const char *message = ag_error();

    fprintf(stderr, "tapegrad_bench: %s: %s\n", context,
            message != NULL ? message : "unknown error");
    return -1;
}

void bench_report(const char *workload, int threads, const char *unit,
                  const double *samples, int n_samples, const char *extra)
{
    printf("{\"side\": \"tapegrad\", \"workload\": \"%s\", \"threads\": %d, "
           "\"unit\": \"%s\", \"samples\": [",
           workload, threads, unit);
    for (int i = 0; i < n_samples; i++)
        printf(i == 0 ? "%.6g" : ", %.6g", samples[i]);
    printf("]");
    if (extra != NULL && extra[0] != '\0')
        printf(", %s", extra);
    printf("}\n");
    fflush(stdout);
}

void bench_fill_uniform(ag_tensor *t, double low, double high, ag_rng *rng)
{
    size_t n = ag_tensor_numel(t);

    for (size_t i = 0; i < n; i++)
        ag_tensor_set(t, i, low + (high - low) * ag_rng_uniform(rng));
}
