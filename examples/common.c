/* Helpers shared by the examples. */
#include "common.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef AG_HAVE_CBLAS
void openblas_set_num_threads(int num_threads);
#endif

int ex_fail(const char *context)
{
    const char *message = ag_error();

    fprintf(stderr, "%s: %s\n", context, message != NULL ? message : "unknown error");
    return 1;
}

int ex_make_dir(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);

    if (n == 0 || n >= sizeof buf) {
        fprintf(stderr, "invalid output directory \"%s\"\n", path);
        return -1;
    }
    memcpy(buf, path, n + 1);

    /* Create each prefix that ends at a slash, then the whole path. */
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;

        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
            fprintf(stderr, "cannot create directory %s: %s\n", buf, strerror(errno));
            return -1;
        }
        buf[i] = saved;
    }

    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "%s exists and is not a directory; pass another --out\n", path);
        return -1;
    }
    return 0;
}

char *ex_join(char *buf, size_t size, const char *dir, const char *name)
{
    snprintf(buf, size, "%s/%s", dir, name);
    return buf;
}

double ex_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void ex_progress(const char *label, size_t done, size_t total, const char *status)
{
    enum { WIDTH = 30 };
    static int is_terminal = -1;
    char bar[WIDTH + 1];
    size_t filled = total == 0 ? WIDTH : done * WIDTH / total;

    if (is_terminal < 0)
        is_terminal = isatty(fileno(stderr));
    if (!is_terminal && done < total)
        return;

    for (size_t i = 0; i < WIDTH; i++)
        bar[i] = i < filled ? '=' : (i == filled ? '>' : ' ');
    bar[WIDTH] = '\0';

    fprintf(stderr, "%s%s [%s] %3zu%% %s%s", is_terminal ? "\r\033[K" : "", label, bar,
            total == 0 ? (size_t)100 : done * 100 / total, status,
            done >= total ? "\n" : "");
    fflush(stderr);
}

size_t ex_argmax_row(ag_tensor *logits, size_t r)
{
    size_t classes = ag_tensor_dim(logits, 1);
    size_t best = 0;
    double best_value = ag_tensor_get(logits, r * classes);

    for (size_t c = 1; c < classes; c++) {
        double value = ag_tensor_get(logits, r * classes + c);
        if (value > best_value) {
            best = c;
            best_value = value;
        }
    }
    return best;
}

void ex_count_correct(ag_tensor *logits, ag_tensor *labels, size_t *correct)
{
    size_t rows = ag_tensor_dim(logits, 0);

    for (size_t r = 0; r < rows; r++) {
        if ((double)ex_argmax_row(logits, r) == ag_tensor_get(labels, r))
            (*correct)++;
    }
}

bool ex_have_gnuplot(void)
{
    const char *path = getenv("PATH");
    char candidate[4096];

    if (path == NULL)
        return false;

    /* Try each PATH entry; an empty entry means the current directory. */
    while (*path != '\0') {
        const char *end = strchr(path, ':');
        size_t len = end != NULL ? (size_t)(end - path) : strlen(path);

        snprintf(candidate, sizeof candidate, "%.*s/gnuplot", (int)len,
                 len == 0 ? "." : path);
        if (access(candidate, X_OK) == 0)
            return true;
        if (end == NULL)
            break;
        path = end + 1;
    }
    return false;
}

int ex_plot(const char *dir, const char *name, const char *script)
{
    char gp_path[4096];
    char file_name[256];

    snprintf(file_name, sizeof file_name, "%s.gp", name);
    ex_join(gp_path, sizeof gp_path, dir, file_name);

    FILE *gp = fopen(gp_path, "w");
    if (gp == NULL || fputs(script, gp) == EOF || fclose(gp) != 0) {
        fprintf(stderr, "cannot write %s: %s\n", gp_path, strerror(errno));
        return -1;
    }

    if (!ex_have_gnuplot()) {
        fprintf(stderr, "gnuplot not found: install it (sudo apt-get install gnuplot-nox) "
                        "and run `gnuplot %s` to draw %s/%s.png\n",
                gp_path, dir, name);
        printf("plot script: %s (gnuplot not found, no PNG drawn)\n", gp_path);
        return 0;
    }

    FILE *pipe = popen("gnuplot", "w");
    if (pipe == NULL) {
        fprintf(stderr, "cannot start gnuplot: %s\n", strerror(errno));
        return -1;
    }
    fputs(script, pipe);
    int status = pclose(pipe);
    if (status != 0) {
        fprintf(stderr, "gnuplot failed (status %d) on %s\n", status, gp_path);
        return -1;
    }
    printf("plot: %s/%s.png\n", dir, name);
    return 0;
}

void ex_set_threads(int n)
{
#ifdef AG_HAVE_CBLAS
    if (n > 0)
        openblas_set_num_threads(n);
#else
    (void)n;
#endif
}
