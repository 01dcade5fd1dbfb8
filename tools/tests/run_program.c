/* Runs the tapegrad program as a child process for the CLI tests. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "run_program.h"

const char *env(const char *name)
{
    const char *value = getenv(name);

    ck_assert_msg(value != NULL, "environment variable %s is not set; run the tests "
                  "with meson test", name);
    return value;
}

char *read_file(const char *path)
{
    FILE *file = fopen(path, "rb");

    ck_assert_msg(file != NULL, "cannot open %s", path);
    fseek(file, 0, SEEK_END);
    long size = ftell(file);
    fseek(file, 0, SEEK_SET);
    char *text = malloc((size_t)size + 1);
    ck_assert_ptr_nonnull(text);
    size_t got = fread(text, 1, (size_t)size, file);
    text[got] = '\0';
    fclose(file);
    return text;
}

int temporary_file(char *path, size_t size, const char *tag)
{
    const char *dir = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";

    snprintf(path, size, "%s/tapegrad-test-%s-XXXXXX", dir, tag);
    int fd = mkstemp(path);
    ck_assert_msg(fd >= 0, "cannot create a temporary file in %s", dir);
    return fd;
}

/* Runs tapegrad with the arguments (a NULL-terminated list) and captures
 * its exit status, stdout and stderr. */
run_result run_argv(const char *const *args)
{
    const char *argv[MAX_ARGS + 2] = {env("TAPEGRAD")};
    char out_path[256];
    char err_path[256];
    int n = 1;

    for (; args[n - 1] != NULL; n++) {
        ck_assert_int_lt(n, MAX_ARGS);
        argv[n] = args[n - 1];
    }
    argv[n] = NULL;

    int out_fd = temporary_file(out_path, sizeof out_path, "out");
    int err_fd = temporary_file(err_path, sizeof err_path, "err");
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(out_fd, STDOUT_FILENO);
        dup2(err_fd, STDERR_FILENO);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }

    int wait_status;
    ck_assert_int_eq(waitpid(pid, &wait_status, 0), pid);
    close(out_fd);
    close(err_fd);

    run_result result = {
        .status = WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : -1,
        .out = read_file(out_path),
        .err = read_file(err_path),
    };
    unlink(out_path);
    unlink(err_path);
    return result;
}


void run_free(run_result *r)
{
    free(r->out);
    free(r->err);
}

void assert_usage_error(run_result *r, const char *fragment)
{
    ck_assert_msg(r->status == 2, "exit status %d, expected 2; stderr: %s", r->status,
                  r->err);
    ck_assert_msg(strstr(r->err, fragment) != NULL, "stderr does not mention \"%s\": %s",
                  fragment, r->err);
    ck_assert_str_eq(r->out, "");
}

json_value *parse_output(const run_result *r)
{
    char error[256];
    json_value *doc = json_parse(r->out, error, sizeof error);

    ck_assert_msg(doc != NULL, "%s in:\n%s", error, r->out);
    return doc;
}
