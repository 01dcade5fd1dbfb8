/* Number and tensor output of the tapegrad program: text and JSON. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "print.h"

#define NUMBER_SIZE 40

void format_number(char *buf, size_t size, double value, ag_dtype dtype)
{
    if (isnan(value)) {
        snprintf(buf, size, "nan");
        return;
    }
    if (isinf(value)) {
        snprintf(buf, size, value > 0 ? "inf" : "-inf");
        return;
    }

    /* 9 significant digits always round-trip a float, 17 a double; the
     * first precision that reads back exactly gives the shortest form. */
    int max_digits = dtype == AG_F32 ? 9 : 17;
    int digits = 1;
    for (; digits < max_digits; digits++) {
        snprintf(buf, size, "%.*e", digits - 1, value);
        bool exact = dtype == AG_F32 ? strtof(buf, NULL) == (float)value
                                     : strtod(buf, NULL) == value;
        if (exact)
            break;
    }
    snprintf(buf, size, "%.*e", digits - 1, value);

    /* Plain notation for moderate exponents (120, not 1.2e+02), as Python's
     * repr does; rounding at the same digit keeps the value exact. */
    int exponent = atoi(strchr(buf, 'e') + 1);
    if (exponent >= -4 && exponent < 16) {
        int decimals = digits - 1 - exponent;

        snprintf(buf, size, "%.*f", decimals > 0 ? decimals : 0, value);
    }
}

void print_shape_text(FILE *out, const ag_tensor *t)
{
    char shape[64];

    fputs(ag_shape_str(t, shape, sizeof shape), out);
}

/* ---- text ---------------------------------------------------------------------- */

typedef struct text_layout {
    FILE *out;
    const ag_tensor *t;
    const char *indent;
    int width; /* of the widest number, for right alignment */
    size_t offset;
} text_layout;

static void print_text_dim(text_layout *layout, int dim)
{
    const ag_tensor *t = layout->t;
    int ndim = ag_tensor_ndim(t);
    char number[NUMBER_SIZE];

    fputc('[', layout->out);
    for (size_t i = 0; i < ag_tensor_dim(t, dim); i++) {
        if (dim == ndim - 1) {
            format_number(number, sizeof number, ag_tensor_get(t, layout->offset++),
                          ag_tensor_dtype(t));
            fprintf(layout->out, "%s%*s", i > 0 ? ", " : "", layout->width, number);
            continue;
        }
        if (i > 0) {
            /* A blank line between blocks of three or more dimensions, as
             * NumPy prints them. */
            fputc(',', layout->out);
            for (int k = dim; k < ndim - 2; k++)
                fputc('\n', layout->out);
            fprintf(layout->out, "\n%s%*s", layout->indent, dim + 1, "");
        }
        print_text_dim(layout, dim + 1);
    }
    fputc(']', layout->out);
}

void print_tensor_text(FILE *out, const ag_tensor *t, const char *indent)
{
    char number[NUMBER_SIZE];
    size_t numel = ag_tensor_numel(t);
    int width = 0;

    if (ag_tensor_ndim(t) == 1 && numel == 1) {
        format_number(number, sizeof number, ag_tensor_get(t, 0), ag_tensor_dtype(t));
        fputs(number, out);
        return;
    }
    for (size_t i = 0; i < numel; i++) {
        format_number(number, sizeof number, ag_tensor_get(t, i), ag_tensor_dtype(t));
        if ((int)strlen(number) > width)
            width = (int)strlen(number);
    }

    text_layout layout = {.out = out, .t = t, .indent = indent, .width = width};
    print_text_dim(&layout, 0);
}

/* ---- JSON ---------------------------------------------------------------------- */

void print_json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", out);
        else if (c < 0x20)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

void print_json_number(FILE *out, double value, ag_dtype dtype)
{
    char number[NUMBER_SIZE];

    format_number(number, sizeof number, value, dtype);
    if (isfinite(value))
        fputs(number, out);
    else
        print_json_string(out, number);
}

void print_tensor_json(FILE *out, const ag_tensor *t)
{
    fputs("{\"shape\": [", out);
    for (int d = 0; d < ag_tensor_ndim(t); d++)
        fprintf(out, "%s%zu", d > 0 ? ", " : "", ag_tensor_dim(t, d));
    fputs("], \"data\": [", out);
    for (size_t i = 0; i < ag_tensor_numel(t); i++) {
        if (i > 0)
            fputs(", ", out);
        print_json_number(out, ag_tensor_get(t, i), ag_tensor_dtype(t));
    }
    fputs("]}", out);
}
