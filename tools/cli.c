/* Pieces shared by the tapegrad program's commands: errors, options and
 * gradient check reports. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "print.h"

void cli_error(const char *format, ...)
{
    va_list args;

    fputs("tapegrad: ", stderr);
    va_start(args, format);
    vfprintf(stderr, format, args);
    va_end(args);
    fputc('\n', stderr);
}

void cli_show_column(const char *text, int column)
{
    if (column < 0)
        return;

    /* Tabs become spaces and UTF-8 continuation bytes take no column, so
     * the caret lines up in a terminal. */
    int caret = 0;
    fputs("  ", stderr);
    for (int i = 0; text[i] != '\0'; i++) {
        unsigned char c = (unsigned char)text[i];
        bool continuation = (c & 0xC0) == 0x80;

        fputc(c == '\t' ? ' ' : c, stderr);
        if (i < column && !continuation)
            caret++;
    }
    fprintf(stderr, "\n  %*s^\n", caret, "");
}

int cli_option_value(int argc, char **argv, int *i, const char *name, const char **value)
{
    const char *arg = argv[*i];
    size_t length = strlen(name);

    if (strncmp(arg, name, length) != 0)
        return 0;
    if (arg[length] == '=') {
        *value = arg + length + 1;
        return 1;
    }
    if (arg[length] != '\0')
        return 0;
    if (*i + 1 >= argc) {
        cli_error("option %s needs a value", name);
        return -1;
    }
    *i += 1;
    *value = argv[*i];
    return 1;
}

int cli_parse_double(const char *option, const char *text, double minimum, bool strict,
                     double *value)
{
    char *end;
    double parsed = strtod(text, &end);
    bool in_range = strict ? parsed > minimum : parsed >= minimum;

    if (end == text || *end != '\0' || !isfinite(parsed) || !in_range) {
        cli_error("invalid value '%s' for %s: expected a number %s %g", text, option,
                  strict ? "greater than" : "of at least", minimum);
        return -1;
    }
    *value = parsed;
    return 0;
}

int cli_tolerance_option(int argc, char **argv, int *i, ag_gradcheck_options *options)
{
    static const struct {
        const char *name;
        bool strict;
    } tolerances[] = {{"--eps", true}, {"--atol", false}, {"--rtol", false}};
    double *fields[] = {&options->eps, &options->atol, &options->rtol};

    for (int k = 0; k < 3; k++) {
        const char *value;
        int found = cli_option_value(argc, argv, i, tolerances[k].name, &value);

        if (found == 0)
            continue;
        if (found < 0)
            return -1;
        if (cli_parse_double(tolerances[k].name, value, 0.0, tolerances[k].strict,
                             fields[k]) != 0)
            return -1;
        return 1;
    }
    return 0;
}

void cli_format_position(char *buf, size_t size, const ag_tensor *t, size_t index)
{
    int ndim = ag_tensor_ndim(t);
    size_t coordinates[AG_MAX_DIMS];
    size_t used = 0;

    /* Row-major: the last dimension varies fastest. */
    for (int d = ndim; d-- > 0;) {
        size_t size_d = ag_tensor_dim(t, d);

        coordinates[d] = size_d == 0 ? 0 : index % size_d;
        index = size_d == 0 ? 0 : index / size_d;
    }
    buf[0] = '\0';
    for (int d = 0; d < ndim && used < size; d++)
        used += (size_t)snprintf(buf + used, size - used, "%s%zu", d == 0 ? "[" : ", ",
                                 coordinates[d]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

void cli_print_check_text(FILE *out, const ag_gradcheck_result *result,
                          const ag_gradcheck_options *options, const char *input_label,
                          const ag_tensor *input)
{
    fprintf(out, "gradient check: %s (%zu partial derivative%s compared)\n",
            result->passed ? "passed" : "FAILED", result->n_checked,
            result->n_checked == 1 ? "" : "s");
    fprintf(out, "  criterion: |analytic - numeric| <= %g + %g * |numeric|, step %g\n",
            options->atol, options->rtol, options->eps);
    if (input != NULL) {
        char position[128];

        cli_format_position(position, sizeof position, input, result->worst_index);
        fprintf(out, "  worst element: %s%s, output element %zu\n", input_label, position,
                result->worst_output);
        fprintf(out, "  analytic %.10g, numeric %.10g, abs error %.2e, rel error %.2e\n",
                result->analytic, result->numeric, result->abs_error, result->rel_error);
    }
    /* The library's one-line verdict adds nothing to a pass. */
    if (!result->passed && result->message[0] != '\0')
        fprintf(out, "  %s\n", result->message);
}

void cli_print_check2_text(FILE *out, const ag_gradcheck_result *result,
                           const ag_gradcheck_options *options, const char *gradient_label,
                           const char *input_label, const ag_tensor *input)
{
    fprintf(out, "second-order check: %s (%zu comparison%s)\n",
            result->passed ? "passed" : "FAILED", result->n_checked,
            result->n_checked == 1 ? "" : "s");
    fprintf(out, "  criterion: |analytic - numeric| <= %g + %g * |numeric|, step %g\n",
            options->atol, options->rtol, options->eps);
    if (input != NULL) {
        char position[128];

        cli_format_position(position, sizeof position, input, result->worst_index);
        fprintf(out, "  worst element: %s by %s%s\n", gradient_label, input_label, position);
        fprintf(out, "  analytic %.10g, numeric %.10g, abs error %.2e, rel error %.2e\n",
                result->analytic, result->numeric, result->abs_error, result->rel_error);
    }
    if (!result->passed && result->message[0] != '\0')
        fprintf(out, "  %s\n", result->message);
}

void cli_print_check_json(FILE *out, const ag_gradcheck_result *result,
                          const ag_gradcheck_options *options, const char *input_label,
                          const ag_tensor *input, const char *indent)
{
    fprintf(out, "{\n%s  \"passed\": %s,\n", indent, result->passed ? "true" : "false");
    fprintf(out, "%s  \"input\": ", indent);
    if (input != NULL)
        print_json_string(out, input_label);
    else
        fputs("null", out);
    fprintf(out, ",\n%s  \"index\": ", indent);
    if (input != NULL)
        fprintf(out, "%zu", result->worst_index);
    else
        fputs("null", out);
    fprintf(out, ",\n%s  \"position\": ", indent);
    if (input != NULL) {
        char position[128];

        cli_format_position(position, sizeof position, input, result->worst_index);
        fputs(position, out);
    } else {
        fputs("null", out);
    }
    fprintf(out, ",\n%s  \"output_index\": %zu", indent, result->worst_output);

    const struct {
        const char *key;
        double value;
    } numbers[] = {
        {"analytic", result->analytic},   {"numeric", result->numeric},
        {"abs_error", result->abs_error}, {"rel_error", result->rel_error},
        {"eps", options->eps},            {"atol", options->atol},
        {"rtol", options->rtol},
    };
    for (size_t k = 0; k < sizeof numbers / sizeof numbers[0]; k++) {
        fprintf(out, ",\n%s  \"%s\": ", indent, numbers[k].key);
        print_json_number(out, numbers[k].value, AG_F64);
    }
    fprintf(out, ",\n%s  \"checked\": %zu,\n%s  \"message\": ", indent, result->n_checked,
            indent);
    print_json_string(out, result->message);
    fprintf(out, "\n%s}", indent);
}
