/* Runs the tapegrad program as a child process for the CLI tests, and the
 * assertions those tests share. */
#ifndef TAPEGRAD_TOOLS_TESTS_RUN_PROGRAM_H
#define TAPEGRAD_TOOLS_TESTS_RUN_PROGRAM_H

#include <math.h>
#include <stddef.h>

#include "json.h"

/* Most arguments one run takes. */
#define MAX_ARGS 32

typedef struct run_result {
    int status; /* exit status, or -1 when the program did not exit normally */
    char *out;
    char *err;
} run_result;

/* Returns the environment variable `name`; fails the test when it is not
 * set (meson test sets the ones the tests read). */
const char *env(const char *name);

/* Returns the whole file as a NUL-terminated string; the caller frees it. */
char *read_file(const char *path);

/* Creates a temporary file named after `tag`, writes its path into `path`
 * and returns its descriptor. */
int temporary_file(char *path, size_t size, const char *tag);

/* Runs tapegrad (the TAPEGRAD environment variable) with the arguments, a
 * NULL-terminated list, and captures its exit status, stdout and stderr. */
run_result run_argv(const char *const *args);

/* Runs tapegrad with the listed arguments. */
#define RUN(...) run_argv((const char *const[]){__VA_ARGS__, NULL})

/* Frees the captured output. */
void run_free(run_result *r);

/* Asserts that the run failed with exit status 2, printed nothing on stdout
 * and mentioned `fragment` on stderr. */
void assert_usage_error(run_result *r, const char *fragment);

/* Parses the run's stdout as JSON; fails the test when it is not JSON. The
 * caller frees the result with json_free. */
json_value *parse_output(const run_result *r);

/* f64 results agree with the closed forms to about this relative error. */
#define TOLERANCE 1e-12

/* Asserts |actual - expected| <= TOLERANCE * max(1, |expected|), naming
 * `quantity` on failure. */
#define ck_assert_near(actual, expected, quantity)                                \
    do {                                                                          \
        double near_a_ = (actual);                                                \
        double near_e_ = (expected);                                              \
        double near_s_ = fabs(near_e_) > 1.0 ? fabs(near_e_) : 1.0;              \
        ck_assert_msg(fabs(near_a_ - near_e_) <= TOLERANCE * near_s_,            \
                      "%s: got %.17g, expected %.17g", (quantity), near_a_,       \
                      near_e_);                                                   \
    } while (0)

#endif
