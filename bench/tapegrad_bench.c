/*
 * tapegrad_bench: runs tapegrad's side of the benchmark workloads and prints
 * one JSON line per result on stdout. bench/run.py runs it alternately with
 * bench/torch_bench.py, which prints the same lines for PyTorch, and makes
 * the table of medians and ratios.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "workloads.h"

#define DEFAULT_DATA_DIR "/usr/share/datasets/fashion-mnist"

typedef struct workload {
    const char *name;
    int (*run)(const bench_options *options);
    const char *summary;
} workload;

static const workload workloads[] = {
    {"regression", bench_regression, "1-20-20-1 ReLU MLP, MSE, SGD, batch 64 (us/step)"},
    {"classifier", bench_classifier, "30-16-1 MLP, sigmoid output, BCE, SGD, batch 32 (us/step)"},
    {"mlp", bench_mlp, "784-256-128-10 MLP, cross-entropy, SGD, batch 128 (us/step)"},
    {"sgemm", bench_sgemm, "cblas_sgemm alone on the mlp step's 8 products (us/step)"},
    {"chain", bench_chain, "10,000 f64 scalar ops on the tape, forward + backward (ns/op)"},
    {"chain_plain", bench_chain_plain, "the same chain as a plain C loop, value only (ns/op)"},
    {"epoch", bench_epoch, "one Fashion-MNIST epoch as examples/fashion_mnist (s)"},
};

#define N_WORKLOADS (sizeof workloads / sizeof workloads[0])

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tapegrad_bench [options] WORKLOAD...\n"
            "Runs tapegrad's side of the benchmarks; prints one JSON line per result.\n"
            "\n"
            "  --threads N   OpenBLAS threads (default 1)\n"
            "  --reps N      timed repetitions after the warm-up, 1 to 1000 (default 15)\n"
            "  --data DIR    Fashion-MNIST IDX files for `epoch` (default %s)\n"
            "  --build-info  print how this build was made (optimised, sanitised,\n"
            "                BLAS configuration) as one JSON line, and exit\n"
            "  --help        print this help\n"
            "\n"
            "Workloads (`all` runs every one but epoch):\n",
            DEFAULT_DATA_DIR);
    for (size_t i = 0; i < N_WORKLOADS; i++)
        fprintf(out, "  %-12s %s\n", workloads[i].name, workloads[i].summary);
}

static bool parse_int(const char *text, int min, int max, int *value)
{
    char *end;
    long v = strtol(text, &end, 10);

    if (end == text || *end != '\0' || v < min || v > max)
        return false;
    *value = (int)v;
    return true;
}

static int parse_options(int argc, char **argv, bench_options *options)
{
    static const struct option long_options[] = {
        {"threads", required_argument, NULL, 't'},
        {"reps", required_argument, NULL, 'r'},
        {"data", required_argument, NULL, 'd'},
        {"build-info", no_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;

    while ((c = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        switch (c) {
        case 't':
            if (!parse_int(optarg, 1, 256, &options->threads)) {
                fprintf(stderr, "tapegrad_bench: invalid --threads \"%s\"; pass 1 to 256\n",
                        optarg);
                return -1;
            }
            break;
        case 'r':
            if (!parse_int(optarg, 1, 1000, &options->reps)) {
                fprintf(stderr, "tapegrad_bench: invalid --reps \"%s\"; pass 1 to 1000\n",
                        optarg);
                return -1;
            }
            break;
        case 'd':
            options->data_dir = optarg;
            break;
        case 'b':
            bench_print_build();
            return 1;
        case 'h':
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return -1;
        }
    }
    if (optind == argc) {
        fprintf(stderr, "tapegrad_bench: no workload given\n");
        usage(stderr);
        return -1;
    }
    return 0;
}

static const workload *find_workload(const char *name)
{
    for (size_t i = 0; i < N_WORKLOADS; i++) {
        if (strcmp(workloads[i].name, name) == 0)
            return &workloads[i];
    }
    return NULL;
}

int main(int argc, char **argv)
{
    bench_options options = {.threads = 1, .reps = 15, .data_dir = DEFAULT_DATA_DIR};
    int parsed = parse_options(argc, argv, &options);

    if (parsed != 0)
        return parsed > 0 ? 0 : 2;

    /* Check every name before running anything. */
    for (int i = optind; i < argc; i++) {
        if (strcmp(argv[i], "all") != 0 && find_workload(argv[i]) == NULL) {
            fprintf(stderr, "tapegrad_bench: unknown workload \"%s\"; see --help\n", argv[i]);
            return 2;
        }
    }

    bench_count_allocations();
    bench_set_threads(options.threads);
    for (int i = optind; i < argc; i++) {
        if (strcmp(argv[i], "all") == 0) {
            for (size_t w = 0; w < N_WORKLOADS; w++) {
                if (strcmp(workloads[w].name, "epoch") != 0 && workloads[w].run(&options) != 0)
                    return 1;
            }
        } else if (find_workload(argv[i])->run(&options) != 0) {
            return 1;
        }
    }
    return 0;
}
