/* The benchmark workloads. Each runs a warm-up, then options->reps timed
 * repetitions, and prints one JSON result line per measured quantity (see
 * bench_report). Each returns 0, or -1 after printing the error. */
#ifndef TAPEGRAD_BENCH_WORKLOADS_H
#define TAPEGRAD_BENCH_WORKLOADS_H

#include "bench_util.h"

/* Training steps (zero grad, forward, loss, backward, SGD update):
 * the 1-20-20-1 ReLU regression net with MSE at batch 64, microseconds per
 * step. */
int bench_regression(const bench_options *options);

/* The 30-16-1 classifier, ReLU then a sigmoid output with binary
 * cross-entropy, batch 32, microseconds per step. */
int bench_classifier(const bench_options *options);

/* The 784-256-128-10 ReLU MLP with softmax cross-entropy, batch 128,
 * microseconds per step (and the floating-point operations of its matrix
 * products per step). */
int bench_mlp(const bench_options *options);

/* cblas_sgemm alone on the eight matrix products of one step of bench_mlp
 * (three forward, five backward), microseconds per set of eight. */
int bench_sgemm(const bench_options *options);

/* A chain of 10,000 f64 scalar ops (mul, add, tanh in turn), forward and
 * backward on the tape, nanoseconds per op. */
int bench_chain(const bench_options *options);

/* The same chain as a plain C loop over doubles that computes only the
 * value, nanoseconds per op. */
int bench_chain_plain(const bench_options *options);

/* One epoch of the Fashion-MNIST example's training (784-256-128-10 MLP,
 * Adam, batch 128), seconds, with the test accuracy after it and the peak
 * resident memory of the process. */
int bench_epoch(const bench_options *options);

#endif
