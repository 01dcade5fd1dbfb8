/* Helpers shared by the examples: output directory, timing, progress bars,
 * gnuplot, accuracy and OpenBLAS threads. Not part of the library. */
#ifndef TAPEGRAD_EXAMPLES_COMMON_H
#define TAPEGRAD_EXAMPLES_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "tapegrad/nn.h"

/* Default directory for plots, tables and checkpoints. */
#define EX_DEFAULT_OUT "tapegrad-out"

/* Prints the library's last error after `context` to stderr and returns 1,
 * for `return ex_fail("...")` in main. */
int ex_fail(const char *context);

/* Creates the directory and its missing parents (mkdir -p). Returns 0, or -1
 * after printing the failing path and reason to stderr. */
int ex_make_dir(const char *path);

/* Writes dir/name into buf (size bytes) and returns buf. */
char *ex_join(char *buf, size_t size, const char *dir, const char *name);

/* Returns seconds from a monotonic clock. */
double ex_now(void);

/* Draws a progress bar on stderr: `label`, a bar for done/total and `status`.
 * On a terminal the bar is redrawn in place; otherwise only the finished bar
 * is printed, so logs get one line per bar. Call with done == total last. */
void ex_progress(const char *label, size_t done, size_t total, const char *status);

/* Returns the column of the largest entry in row r of `logits` (2-D, f32
 * or f64); the first one on ties. */
size_t ex_argmax_row(ag_tensor *logits, size_t r);

/* Adds the number of rows of `logits` whose largest entry is at the label's
 * index to *correct. */
void ex_count_correct(ag_tensor *logits, ag_tensor *labels, size_t *correct);

/* Returns whether an executable named `gnuplot` is on PATH. */
bool ex_have_gnuplot(void);

/* Writes `script` to dir/name.gp, then runs it through gnuplot (popen) when
 * gnuplot is on PATH, which makes the PNG the script names, and prints the
 * PNG's path on stdout. Without gnuplot it prints on stderr how to make the
 * plot later. Returns 0, or -1 after printing the problem. */
int ex_plot(const char *dir, const char *name, const char *script);

/* Sets the number of OpenBLAS threads when the library uses OpenBLAS; a
 * no-op otherwise. n <= 0 keeps OpenBLAS's default. */
void ex_set_threads(int n);

#endif
