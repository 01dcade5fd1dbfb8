/* CSV reader for numeric tables with a header row. */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad/nn_data.h"

static const char who[] = "nn_csv_load";

/* State of one read, so every step can name the file and line. */
typedef struct csv_reader {
    const char *path;
    FILE *file;
    char *line;
    size_t line_cap;
    size_t line_no;
    ag_dtype dtype;

    char **names;
    size_t n_cols;
    double *values;
    size_t n_values;
    size_t values_cap;
} csv_reader;

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Reads the next non-empty line without its LF or CRLF ending. Returns 1 for
 * a line, 0 at the end of the file, -1 with an error. */
static int csv_next_line(csv_reader *r)
{
    for (;;) {
        errno = 0;
        ssize_t len = getline(&r->line, &r->line_cap, r->file);

        if (len < 0) {
            if (ferror(r->file)) {
                ag_set_error("%s: %s: read failed after line %zu: %s", who, r->path,
                             r->line_no, strerror(errno));
                return -1;
            }
            return 0;
        }
        r->line_no++;

        if (len > 0 && r->line[len - 1] == '\n')
            r->line[--len] = '\0';
        if (len > 0 && r->line[len - 1] == '\r')
            r->line[--len] = '\0';
        if (strlen(r->line) != (size_t)len) {
            ag_set_error("%s: %s:%zu: the line contains a NUL byte; is this a "
                         "text file?",
                         who, r->path, r->line_no);
            return -1;
        }
        if (len > 0)
            return 1;
    }
}

/* Parses a field as a number. The field runs from `start` to `end`
 * (exclusive); surrounding blanks are allowed. */
static bool parse_number(const char *start, const char *end, double *value)
{
    while (start < end && is_blank(*start))
        start++;
    while (end > start && is_blank(end[-1]))
        end--;
    if (start == end)
        return false;

    char *stop;
    errno = 0;
    *value = strtod(start, &stop);
    return stop == end;
}

/* ---- header --------------------------------------------------------------- */

/* Copies one header field starting at *cursor into a new string and moves
 * the cursor past the field and its comma, or sets it to NULL after the last
 * field. Returns NULL with an error. */
static char *parse_name(csv_reader *r, const char **cursor, size_t column)
{
    const char *p = *cursor;
    size_t cap = strlen(p) + 1;
    char *name = ag_alloc(cap);
    size_t n = 0;

    if (name == NULL) {
        ag_set_error("%s: %s: out of memory reading the header", who, r->path);
        return NULL;
    }

    while (is_blank(*p))
        p++;
    if (*p == '"') {
        /* Quoted name: a doubled quote stands for one quote. */
        for (p++;; p++) {
            if (*p == '\0') {
                ag_set_error("%s: %s:%zu: column %zu: the quoted name has no "
                             "closing quote",
                             who, r->path, r->line_no, column);
                ag_free(name);
                return NULL;
            }
            if (*p == '"' && p[1] == '"') {
                name[n++] = '"';
                p++;
            } else if (*p == '"') {
                p++;
                break;
            } else {
                name[n++] = *p;
            }
        }
        while (is_blank(*p))
            p++;
        if (*p != ',' && *p != '\0') {
            ag_set_error("%s: %s:%zu: column %zu: unexpected text after the "
                         "closing quote",
                         who, r->path, r->line_no, column);
            ag_free(name);
            return NULL;
        }
    } else {
        while (*p != ',' && *p != '\0')
            name[n++] = *p++;
        while (n > 0 && is_blank(name[n - 1]))
            n--;
    }
    name[n] = '\0';

    *cursor = *p == ',' ? p + 1 : NULL;
    return name;
}

/* Returns whether every comma-separated field of the line is a number. */
static bool line_is_numeric(const char *line)
{
    const char *start = line;

    for (;;) {
        const char *end = strchr(start, ',');
        double value;

        if (end == NULL)
            end = start + strlen(start);
        if (!parse_number(start, end, &value))
            return false;
        if (*end == '\0')
            return true;
        start = end + 1;
    }
}

static int csv_read_header(csv_reader *r)
{
    int status = csv_next_line(r);

    if (status < 0)
        return -1;
    if (status == 0) {
        ag_set_error("%s: %s: empty file; expected a header row of column names "
                     "and rows of numbers",
                     who, r->path);
        return -1;
    }
    if (line_is_numeric(r->line)) {
        ag_set_error("%s: %s:%zu: missing header: the first line holds only "
                     "numbers; add a header row of column names",
                     who, r->path, r->line_no);
        return -1;
    }

    const char *cursor = r->line;
    size_t cap = 0;

    while (cursor != NULL) {
        if (r->n_cols == cap) {
            size_t new_cap = cap == 0 ? 8 : 2 * cap;
            char **grown = ag_realloc(r->names, new_cap * sizeof *grown);
            if (grown == NULL) {
                ag_set_error("%s: %s: out of memory reading the header", who, r->path);
                return -1;
            }
            r->names = grown;
            cap = new_cap;
        }

        char *name = parse_name(r, &cursor, r->n_cols + 1);
        if (name == NULL)
            return -1;
        r->names[r->n_cols++] = name;
        if (name[0] == '\0') {
            ag_set_error("%s: %s:%zu: column %zu has an empty name; give every "
                         "column a name in the header",
                         who, r->path, r->line_no, r->n_cols);
            return -1;
        }
    }
    return 0;
}

/* ---- rows ----------------------------------------------------------------- */

static int csv_append(csv_reader *r, double value)
{
    if (r->n_values == r->values_cap) {
        size_t new_cap = r->values_cap == 0 ? 1024 : 2 * r->values_cap;
        double *grown = ag_realloc(r->values, new_cap * sizeof *grown);
        if (grown == NULL) {
            ag_set_error("%s: %s:%zu: out of memory for %zu values", who, r->path,
                         r->line_no, new_cap);
            return -1;
        }
        r->values = grown;
        r->values_cap = new_cap;
    }
    r->values[r->n_values++] = value;
    return 0;
}

/* Counts the fields of the current line (commas + 1). */
static size_t count_fields(const char *line)
{
    size_t n = 1;

    for (const char *p = line; *p != '\0'; p++)
        n += *p == ',';
    return n;
}

static int csv_read_row(csv_reader *r)
{
    size_t n_fields = count_fields(r->line);

    if (n_fields != r->n_cols) {
        ag_set_error("%s: %s:%zu: %zu field%s, but the header has %zu column%s; "
                     "every row needs one value per column",
                     who, r->path, r->line_no, n_fields, n_fields == 1 ? "" : "s",
                     r->n_cols, r->n_cols == 1 ? "" : "s");
        return -1;
    }

    const char *start = r->line;
    for (size_t col = 0; col < r->n_cols; col++) {
        const char *end = strchr(start, ',');
        double value;

        if (end == NULL)
            end = start + strlen(start);
        if (!parse_number(start, end, &value)) {
            ag_set_error("%s: %s:%zu: column %zu (\"%s\"): \"%.*s\" is not a number",
                         who, r->path, r->line_no, col + 1, r->names[col],
                         (int)(end - start), start);
            return -1;
        }
        if (isinf(value) && errno == ERANGE) {
            ag_set_error("%s: %s:%zu: column %zu (\"%s\"): \"%.*s\" is out of "
                         "range for a double",
                         who, r->path, r->line_no, col + 1, r->names[col],
                         (int)(end - start), start);
            return -1;
        }
        if (r->dtype == AG_F32 && isfinite(value) && fabs(value) > FLT_MAX) {
            ag_set_error("%s: %s:%zu: column %zu (\"%s\"): %g is out of range "
                         "for f32; load the table as AG_F64",
                         who, r->path, r->line_no, col + 1, r->names[col], value);
            return -1;
        }
        if (csv_append(r, value) != 0)
            return -1;
        start = end + 1;
    }
    return 0;
}

/* ---- loader --------------------------------------------------------------- */

static void free_names(char **names, size_t n)
{
    if (names == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        ag_free(names[i]);
    ag_free(names);
}

static nn_csv *csv_finish(csv_reader *r)
{
    nn_csv *csv = ag_alloc(sizeof *csv);

    if (csv == NULL) {
        ag_set_error("%s: %s: out of memory", who, r->path);
        return NULL;
    }

    size_t n_rows = r->n_values / r->n_cols;
    size_t shape[2] = {n_rows, r->n_cols};

    /* from_doubles needs a data pointer even for zero rows. */
    csv->data = n_rows == 0 ? ag_zeros(NULL, r->dtype, 2, shape)
                            : ag_tensor_from_doubles(NULL, r->dtype, 2, shape, r->values);
    if (csv->data == NULL) {
        ag_free(csv);
        return NULL;
    }
    csv->n_rows = n_rows;
    csv->n_cols = r->n_cols;
    csv->column_names = r->names;
    r->names = NULL;
    return csv;
}

nn_csv *nn_csv_load(const char *path, ag_dtype dtype)
{
    if (path == NULL) {
        ag_set_error("%s: path is NULL; pass the name of a CSV file", who);
        return NULL;
    }
    if (dtype != AG_F32 && dtype != AG_F64) {
        ag_set_error("%s: invalid dtype %d; use AG_F32 or AG_F64", who, (int)dtype);
        return NULL;
    }

    csv_reader r = {.path = path, .dtype = dtype};
    nn_csv *csv = NULL;

    r.file = fopen(path, "r");
    if (r.file == NULL) {
        ag_set_error("%s: %s: cannot open: %s", who, path, strerror(errno));
        return NULL;
    }

    if (csv_read_header(&r) != 0)
        goto done;

    int status;
    while ((status = csv_next_line(&r)) == 1) {
        if (csv_read_row(&r) != 0)
            break;
    }
    if (status == 0)
        csv = csv_finish(&r);

done:
    fclose(r.file);
    free(r.line); /* getline's buffer comes from malloc */
    ag_free(r.values);
    free_names(r.names, r.n_cols);
    return csv;
}

void nn_csv_free(nn_csv *csv)
{
    if (csv == NULL)
        return;
    ag_tensor_free(csv->data);
    free_names(csv->column_names, csv->n_cols);
    ag_free(csv);
}

int nn_csv_column(const nn_csv *csv, const char *name)
{
    if (csv == NULL || name == NULL)
        return -1;
    for (size_t i = 0; i < csv->n_cols; i++) {
        if (strcmp(csv->column_names[i], name) == 0)
            return (int)i;
    }
    return -1;
}
