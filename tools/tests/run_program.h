/* Runs the tapegrad program as a child process for the CLI tests. */
#ifndef TAPEGRAD_TOOLS_TESTS_RUN_PROGRAM_H
#define TAPEGRAD_TOOLS_TESTS_RUN_PROGRAM_H

#include <stddef.h>

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

#endif
