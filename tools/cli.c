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

void cli_report_eval_error(const char *expression, int column)
{
    const char *message = ag_error() != NULL ? ag_error() : "evaluation failed";

    cli_error("%s", message);
    cli_show_column(expression, column);

    /* ag_matmul suggests ag_reshape, which expressions cannot call. */
    if (strncmp(message, "ag_matmul: operands must be 2-D", 31) == 0)
        fputs("  hint: expressions cannot reshape, so bind matrices: a row as "
              "x=[[1,2]] and a column as y=[[3],[4]]\n",
              stderr);
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

/* Writes the first kink of a check, when there is one. */
static void print_kink_text(FILE *out, const ag_gradcheck_result *result,
                            const char *kink_label, const ag_tensor *kink_input)
{
    char position[128] = "";

    if (result->n_kinks == 0)
        return;
    if (kink_input != NULL)
        cli_format_position(position, sizeof position, kink_input, result->kink_index);
    fprintf(out, "  at a kink: %zu partial derivative%s, left out of the verdict\n",
            result->n_kinks, result->n_kinks == 1 ? "" : "s");
    fprintf(out, "  first kink: %s%s, output element %zu: one-sided derivatives %.10g and "
            "%.10g, analytic %.10g\n",
            kink_label != NULL ? kink_label : "", position, result->kink_output,
            result->kink_left, result->kink_right, result->kink_analytic);
}

void cli_print_check_text(FILE *out, const ag_gradcheck_result *result,
                          const ag_gradcheck_options *options, const char *input_label,
                          const ag_tensor *input, const char *kink_label,
                          const ag_tensor *kink_input)
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
    print_kink_text(out, result, kink_label, kink_input);
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

/* Writes the "kink" member's value: the first kink, or null. */
static void print_kink_json(FILE *out, const ag_gradcheck_result *result,
                            const char *kink_label, const ag_tensor *kink_input,
                            const char *indent)
{
    char position[128];

    if (result->n_kinks == 0 || kink_input == NULL) {
        fputs("null", out);
        return;
    }
    cli_format_position(position, sizeof position, kink_input, result->kink_index);
    fprintf(out, "{\n%s    \"input\": ", indent);
    print_json_string(out, kink_label != NULL ? kink_label : "");
    fprintf(out, ",\n%s    \"index\": %zu,\n%s    \"position\": %s,\n%s    "
            "\"output_index\": %zu", indent, result->kink_index, indent, position, indent,
            result->kink_output);
    fprintf(out, ",\n%s    \"left\": ", indent);
    print_json_number(out, result->kink_left, AG_F64);
    fprintf(out, ",\n%s    \"right\": ", indent);
    print_json_number(out, result->kink_right, AG_F64);
    fprintf(out, ",\n%s    \"analytic\": ", indent);
    print_json_number(out, result->kink_analytic, AG_F64);
    fprintf(out, "\n%s  }", indent);
}

void cli_print_check_json(FILE *out, const ag_gradcheck_result *result,
                          const ag_gradcheck_options *options, const char *input_label,
                          const ag_tensor *input, const char *kink_label,
                          const ag_tensor *kink_input, const char *indent)
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
    fprintf(out, ",\n%s  \"checked\": %zu,\n%s  \"kinks\": %zu,\n%s  \"kink\": ", indent,
            result->n_checked, indent, result->n_kinks, indent);
    print_kink_json(out, result, kink_label, kink_input, indent);
    fprintf(out, ",\n%s  \"message\": ", indent);
    print_json_string(out, result->message);
    fprintf(out, "\n%s}", indent);
}

/* ---- record checks and the Taylor test ------------------------------------ */

/* Writes how record `record` refers to its input k: the tensor's name, the
 * "#index" of the record that produced it, or "input k". */
static void record_input_label(char *buf, size_t size, const ag_tape *tape, size_t record,
                               int k)
{
    const ag_record *rec = ag_tape_record(tape, record);
    const ag_tensor *t = rec != NULL && k >= 0 && k < rec->n_inputs ? rec->inputs[k] : NULL;
    const ag_record *producer = t != NULL ? ag_tensor_record(t) : NULL;

    if (t != NULL && ag_tensor_name(t)[0] != '\0')
        snprintf(buf, size, "%s", ag_tensor_name(t));
    else if (producer != NULL && ag_tape_record(tape, producer->index) == producer)
        snprintf(buf, size, "#%zu", producer->index);
    else
        snprintf(buf, size, "input %d", k);
}

/* Writes "[1, 2]" for element `index` of input k of a record, or "" when
 * the record or input does not exist. */
static void record_input_position(char *buf, size_t size, const ag_tape *tape,
                                  size_t record, int k, size_t index)
{
    const ag_record *rec = ag_tape_record(tape, record);

    buf[0] = '\0';
    if (rec != NULL && k >= 0 && k < rec->n_inputs)
        cli_format_position(buf, size, rec->inputs[k], index);
}

static const char *record_op_name(const ag_tape *tape, size_t record)
{
    const ag_record *rec = ag_tape_record(tape, record);

    return rec != NULL ? rec->op->name : "";
}

void cli_print_records_text(FILE *out, const ag_record_check_result *result,
                            const ag_tape *tape)
{
    char label[64];
    char position[128];

    if (result->passed)
        fprintf(out, "record check: passed (%zu record%s, %zu partial derivative%s compared)\n",
                result->n_records, result->n_records == 1 ? "" : "s", result->n_checked,
                result->n_checked == 1 ? "" : "s");
    else
        fprintf(out, "record check: FAILED at record #%zu %s (%zu of %zu record%s wrong)\n",
                result->record, result->op, result->n_failed, result->n_records,
                result->n_records == 1 ? "" : "s");

    if (!result->passed) {
        char output[48];

        record_input_label(label, sizeof label, tape, result->record, result->input);
        record_input_position(position, sizeof position, tape, result->record,
                              result->input, result->element);
        if (result->projected)
            snprintf(output, sizeof output, "a random projection of the output");
        else
            snprintf(output, sizeof output, "output element %zu", result->output_element);
        fprintf(out, "  worst element: %s%s, %s\n", label, position, output);
        fprintf(out, "  analytic %.10g, numeric %.10g, abs error %.2e\n", result->analytic,
                result->numeric, result->abs_error);
    }
    if (result->n_kinks > 0) {
        record_input_label(label, sizeof label, tape, result->kink_record, result->kink_input);
        record_input_position(position, sizeof position, tape, result->kink_record,
                              result->kink_input, result->kink_element);
        fprintf(out, "  at a kink: %zu partial derivative%s, left out of the verdict\n",
                result->n_kinks, result->n_kinks == 1 ? "" : "s");
        fprintf(out, "  first kink: record #%zu %s, %s%s\n", result->kink_record,
                record_op_name(tape, result->kink_record), label, position);
    }
}

/* Writes {"record": ..., "op": ..., "input": ..., "index": ..., "position":
 * ...} and leaves the object open for more members. */
static void print_record_site_json(FILE *out, const ag_tape *tape, size_t record, int k,
                                   size_t index, const char *indent)
{
    char label[64];
    char position[128];

    record_input_label(label, sizeof label, tape, record, k);
    record_input_position(position, sizeof position, tape, record, k, index);
    fprintf(out, "{\n%s    \"record\": %zu,\n%s    \"op\": ", indent, record, indent);
    print_json_string(out, record_op_name(tape, record));
    fprintf(out, ",\n%s    \"input\": ", indent);
    print_json_string(out, label);
    fprintf(out, ",\n%s    \"input_index\": %d,\n%s    \"index\": %zu,\n%s    \"position\": %s",
            indent, k, indent, index, indent, position[0] != '\0' ? position : "null");
}

void cli_print_records_json(FILE *out, const ag_record_check_result *result,
                            const ag_tape *tape, const char *indent)
{
    fprintf(out, "{\n%s  \"passed\": %s,\n", indent, result->passed ? "true" : "false");
    fprintf(out, "%s  \"records\": %zu,\n%s  \"failed\": %zu,\n%s  \"checked\": %zu,\n"
            "%s  \"kinks\": %zu,\n%s  \"first_wrong\": ", indent, result->n_records, indent,
            result->n_failed, indent, result->n_checked, indent, result->n_kinks, indent);
    if (result->passed) {
        fputs("null", out);
    } else {
        print_record_site_json(out, tape, result->record, result->input, result->element,
                               indent);
        fprintf(out, ",\n%s    \"output_index\": ", indent);
        if (result->projected)
            fputs("null", out);
        else
            fprintf(out, "%zu", result->output_element);
        fprintf(out, ",\n%s    \"projected\": %s", indent,
                result->projected ? "true" : "false");
        fprintf(out, ",\n%s    \"analytic\": ", indent);
        print_json_number(out, result->analytic, AG_F64);
        fprintf(out, ",\n%s    \"numeric\": ", indent);
        print_json_number(out, result->numeric, AG_F64);
        fprintf(out, ",\n%s    \"abs_error\": ", indent);
        print_json_number(out, result->abs_error, AG_F64);
        fprintf(out, "\n%s  }", indent);
    }
    fprintf(out, ",\n%s  \"kink\": ", indent);
    if (result->n_kinks == 0) {
        fputs("null", out);
    } else {
        print_record_site_json(out, tape, result->kink_record, result->kink_input,
                               result->kink_element, indent);
        fprintf(out, "\n%s  }", indent);
    }
    fprintf(out, ",\n%s  \"message\": ", indent);
    print_json_string(out, result->message);
    fprintf(out, "\n%s}", indent);
}

void cli_print_taylor_text(FILE *out, const ag_taylor_result *result, unsigned long long seed)
{
    if (isnan(result->order))
        fprintf(out, "taylor test: %s, no order measured\n",
                result->passed ? "passed" : "FAILED");
    else
        fprintf(out, "taylor test: %s, order %.3f (fitted over h = 2^-%d ... 2^-%d)\n",
                result->passed ? "passed" : "FAILED", result->order, result->fit_first + 1,
                result->fit_last + 1);
    fprintf(out, "  r(h) = |f(x + h v) - f(x) - h <grad f(x), v>|, v a random unit "
            "direction (seed %llu); a right gradient gives order 2, a wrong one 1\n", seed);
    fprintf(out, "  %7s  %12s  %11s\n", "h", "r(h)", "local order");
    for (int k = 0; k < result->n_steps; k++) {
        bool fitted = k >= result->fit_first && k <= result->fit_last;
        double previous = k > 0 ? result->remainder[k - 1] : NAN;
        double r = result->remainder[k];

        fprintf(out, "  2^-%-4d  %12.4e", k + 1, r);
        if (previous > 0 && r > 0)
            fprintf(out, "  %11.3f", log2(previous / r));
        else
            fprintf(out, "  %11s", "");
        fputs(fitted ? "  fitted\n" : "\n", out);
    }
    fprintf(out, "  %s\n", result->message);
}

void cli_print_taylor_json(FILE *out, const ag_taylor_result *result, unsigned long long seed,
                           const char *indent)
{
    fprintf(out, "{\n%s  \"passed\": %s,\n%s  \"order\": ", indent,
            result->passed ? "true" : "false", indent);
    print_json_number(out, result->order, AG_F64);
    fprintf(out, ",\n%s  \"fit\": ", indent);
    if (result->fit_first < 0)
        fputs("null", out);
    else
        fprintf(out, "[%d, %d]", result->fit_first, result->fit_last);
    fprintf(out, ",\n%s  \"seed\": %llu,\n%s  \"value\": ", indent, seed, indent);
    print_json_number(out, result->value, AG_F64);
    fprintf(out, ",\n%s  \"directional\": ", indent);
    print_json_number(out, result->directional, AG_F64);

    const char *keys[2] = {"h", "r"};
    const double *columns[2] = {result->h, result->remainder};
    for (int c = 0; c < 2; c++) {
        fprintf(out, ",\n%s  \"%s\": [", indent, keys[c]);
        for (int k = 0; k < result->n_steps; k++) {
            fputs(k == 0 ? "" : ", ", out);
            print_json_number(out, columns[c][k], AG_F64);
        }
        fputs("]", out);
    }
    fprintf(out, ",\n%s  \"message\": ", indent);
    print_json_string(out, result->message);
    fprintf(out, "\n%s}", indent);
}

/* ---- options and bindings shared by the commands ---------------------------- */

/* Stores 0 in *choice for `first` and 1 for `second`; anything else is an
 * error naming the option. */
static int parse_choice(const char *option, const char *value, const char *first,
                        const char *second, int *choice)
{
    if (strcmp(value, first) == 0) {
        *choice = 0;
        return 0;
    }
    if (strcmp(value, second) == 0) {
        *choice = 1;
        return 0;
    }
    cli_error("invalid value '%s' for %s: expected %s or %s", value, option, first, second);
    return -1;
}

int cli_dtype_format_option(int argc, char **argv, int *i, ag_dtype *dtype, bool *json)
{
    const char *value;
    int found;
    int choice;

    if ((found = cli_option_value(argc, argv, i, "--dtype", &value)) != 0) {
        if (found < 0 || parse_choice("--dtype", value, "f32", "f64", &choice) != 0)
            return -1;
        *dtype = choice == 0 ? AG_F32 : AG_F64;
        return 1;
    }
    if ((found = cli_option_value(argc, argv, i, "--format", &value)) != 0) {
        if (found < 0 || parse_choice("--format", value, "text", "json", &choice) != 0)
            return -1;
        *json = choice == 1;
        return 1;
    }
    return 0;
}

int cli_add_binding(binding *bindings, const char **names, int *n_bindings,
                    const char *argument)
{
    binding_error error;
    binding *b = &bindings[*n_bindings];

    if (binding_parse(argument, b, &error) != 0) {
        cli_error("invalid binding: %s", error.message);
        cli_show_column(argument, error.column);
        return -1;
    }
    for (int k = 0; k < *n_bindings; k++) {
        if (strcmp(bindings[k].name, b->name) == 0) {
            cli_error("%s is bound twice; bind each name once", b->name);
            binding_free(b);
            return -1;
        }
    }
    names[*n_bindings] = b->name;
    (*n_bindings)++;
    return 0;
}

int cli_parse_expression_arguments(int argc, char **argv, const char *command,
                                   cli_option_parser parse_option, void *request,
                                   void (*print_help)(FILE *out),
                                   cli_expression_arguments *args)
{
    bool options_done = false;

    args->bindings = calloc((size_t)argc, sizeof *args->bindings);
    args->names = calloc((size_t)argc, sizeof *args->names);
    if (args->bindings == NULL || args->names == NULL) {
        cli_error("out of memory");
        return -1;
    }

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];

        if (!options_done && (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)) {
            print_help(stdout);
            return 1;
        }
        if (!options_done && strcmp(arg, "--") == 0) {
            options_done = true;
            continue;
        }
        if (!options_done && strncmp(arg, "--", 2) == 0) {
            int handled = parse_option(argc, argv, &i, request);

            if (handled < 0)
                return -1;
            if (handled == 0) {
                cli_error("unknown option '%s'; see tapegrad %s --help", arg, command);
                return -1;
            }
            continue;
        }
        if (args->expression == NULL)
            args->expression = arg;
        else if (cli_add_binding(args->bindings, args->names, &args->n_bindings, arg) != 0)
            return -1;
    }

    if (args->expression == NULL) {
        cli_error("missing expression; usage: tapegrad %s [OPTIONS] EXPR NAME=VALUE... "
                  "(see tapegrad %s --help)",
                  command, command);
        return -1;
    }
    return 0;
}
