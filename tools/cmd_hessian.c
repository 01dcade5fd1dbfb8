/* `tapegrad hessian`: evaluate a one-element expression and print its
 * Hessian with respect to every element of the bound names. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bindings.h"
#include "cli.h"
#include "expr.h"
#include "print.h"

/* Room for a row label: a name of BINDING_NAME_MAX characters and the
 * position of an element in up to AG_MAX_DIMS dimensions. */
#define LABEL_SIZE 160

void print_hessian_help(FILE *out)
{
    fputs(
        "Usage: tapegrad hessian [OPTIONS] EXPR NAME=VALUE...\n"
        "\n"
        "Evaluates EXPR, whose value must have one element, with each NAME bound to\n"
        "VALUE, and prints its Hessian: the matrix of second derivatives with respect\n"
        "to every element of the bound names. The elements are taken name by name in\n"
        "the order given, each name's elements row-major, and entry (r, c) is\n"
        "d2 EXPR / dv_r dv_c. A name used only as the class labels of cross_entropy\n"
        "takes no gradient and is left out of the Hessian. A name the expression does\n"
        "not use gets rows and columns of zeros.\n"
        "\n"
        "Options:\n"
        "  --dtype f32|f64     element type of the values and of the computation\n"
        "                      (default f64)\n"
        "  --format text|json  output format (default text); json prints one object:\n"
        "                      {\"value\": {\"shape\": [1], \"data\": [...]},\n"
        "                      \"hessian\": {\"shape\": [n, n], \"data\": [...]},\n"
        "                      \"names\": [...]}, with the n x n entries row-major and\n"
        "                      names[r] labelling row and column r, as \"W[0, 1]\"\n"
        "  -h, --help          show this help\n"
        "  --                  end of options; later arguments are EXPR and bindings\n"
        "\n"
        "EXPR and the bindings are written as for tapegrad grad: see\n"
        "tapegrad grad --help. Each row of the Hessian costs one reverse sweep, so\n"
        "the command suits inputs of up to a few thousand elements.\n"
        "\n"
        "Examples:\n"
        "  tapegrad hessian 'x^2*y + y^3' x=1 y=2\n"
        "  tapegrad hessian --format json 'cross_entropy(z, c)' z=[[1,2,0.5]] c=[2]\n"
        "\n"
        "Exit status: 0 on success, 2 on invalid options, bindings or expressions, on\n"
        "a value with more than one element, and on errors the library reports (such\n"
        "as mismatched shapes).\n",
        out);
}

typedef struct hessian_request {
    ag_dtype dtype;
    bool json;
    cli_expression_arguments args; /* the expression and its bindings */
} hessian_request;

/* The results of one run. The value lives on the tape, and the Hessian is a
 * heap tensor owned by the result. */
typedef struct hessian_result {
    ag_tape *tape;
    ag_tensor **values;   /* one per binding */
    bool *used;
    bool *differentiable;
    ag_tensor *output;
    ag_tensor *hessian;   /* (n x n) */
    size_t n;             /* elements of the names in the Hessian */
    char (*labels)[LABEL_SIZE]; /* n row labels, such as "W[0, 1]" */
} hessian_result;

/* ---- arguments ---------------------------------------------------------------- */

/* Handles one option at argv[*i]. Returns 1 when handled, 0 when argv[*i] is
 * not an option of this command, -1 on error. */
static int parse_option(int argc, char **argv, int *i, void *context)
{
    hessian_request *request = context;

    return cli_dtype_format_option(argc, argv, i, &request->dtype, &request->json);
}

/* Returns 0, -1 after an error, or 1 after printing the help. */
static int parse_arguments(int argc, char **argv, hessian_request *request)
{
    return cli_parse_expression_arguments(argc, argv, "hessian", parse_option, request,
                                          print_hessian_help, &request->args);
}

static void free_request(hessian_request *request)
{
    for (int k = 0; k < request->args.n_bindings; k++)
        binding_free(&request->args.bindings[k]);
    free(request->args.bindings);
    free(request->args.names);
}

/* ---- computing -------------------------------------------------------------- */

/* Returns whether binding k is a variable of the Hessian. Every name is,
 * except one used only as class labels, through which no gradient flows. */
static bool in_hessian(const hessian_result *result, int k)
{
    return result->differentiable[k] || !result->used[k];
}

/* Evaluates the expression as an ag_function whose inputs are the bound
 * names in order. */
static ag_tensor *evaluate_expression(ag_tape *tape, ag_tensor *const *inputs,
                                      int n_inputs, void *user)
{
    const expr_tree *tree = user;
    expr_context context = {
        .tape = tape,
        .dtype = ag_tensor_dtype(inputs[0]),
        .values = inputs,
    };

    (void)n_inputs;
    return expr_eval(tree, &context);
}

/* Creates one tensor per binding on the tape, requiring a gradient when the
 * binding is a variable of the Hessian, and counts the variables' elements. */
static int make_inputs(const hessian_request *request, hessian_result *result)
{
    result->n = 0;
    for (int k = 0; k < request->args.n_bindings; k++) {
        const binding *b = &request->args.bindings[k];

        /* An empty list has no data, but the library wants a pointer. */
        static const double no_elements[1];
        const double *data = b->numel > 0 ? b->data : no_elements;
        ag_tensor *t = ag_tensor_from_doubles(result->tape, request->dtype, b->ndim,
                                              b->shape, data);

        if (t == NULL)
            return -1;
        ag_tensor_set_name(t, b->name);
        if (in_hessian(result, k)) {
            if (ag_tensor_set_requires_grad(t, true) != 0)
                return -1;
            result->n += b->numel;
        }
        result->values[k] = t;
    }
    return 0;
}

/* Labels each row of the Hessian with its name and element position. */
static int make_labels(const hessian_request *request, hessian_result *result)
{
    size_t row = 0;

    result->labels = calloc(result->n > 0 ? result->n : 1, sizeof *result->labels);
    if (result->labels == NULL) {
        cli_error("out of memory");
        return -1;
    }
    for (int k = 0; k < request->args.n_bindings; k++) {
        const ag_tensor *t = result->values[k];

        if (!in_hessian(result, k))
            continue;
        for (size_t e = 0; e < ag_tensor_numel(t); e++, row++) {
            char position[LABEL_SIZE - BINDING_NAME_MAX - 1];

            cli_format_position(position, sizeof position, t, e);
            snprintf(result->labels[row], LABEL_SIZE, "%s%s", request->args.bindings[k].name,
                     position);
        }
    }
    return 0;
}

/* Evaluates the expression once on the tape, for its value and for errors
 * that point into the expression, then takes the Hessian. */
static int compute(const hessian_request *request, const expr_tree *tree,
                   hessian_result *result)
{
    int n = request->args.n_bindings;
    size_t count = (size_t)(n > 0 ? n : 1);

    result->values = calloc(count, sizeof *result->values);
    result->used = calloc(count, sizeof *result->used);
    result->differentiable = calloc(count, sizeof *result->differentiable);
    result->tape = ag_tape_new();
    if (result->values == NULL || result->used == NULL || result->differentiable == NULL ||
        result->tape == NULL) {
        cli_error("out of memory");
        return -1;
    }
    expr_find_uses(tree, n, result->used, result->differentiable);

    if (make_inputs(request, result) != 0) {
        cli_error("%s", ag_error());
        return -1;
    }

    expr_context context = {.tape = result->tape, .dtype = request->dtype,
                            .values = result->values};
    result->output = expr_eval(tree, &context);
    if (result->output == NULL) {
        cli_report_eval_error(request->args.expression, context.error_column);
        return -1;
    }
    if (ag_tensor_numel(result->output) != 1) {
        char shape[64];

        cli_error("hessian needs a one-element value, but the value has shape %s; "
                  "reduce it with sum(...) or mean(...)",
                  ag_shape_str(result->output, shape, sizeof shape));
        return -1;
    }
    if (make_labels(request, result) != 0)
        return -1;

    /* ag_hessian needs at least one variable, so without any the Hessian is
     * the empty (0 x 0) matrix. */
    if (result->n == 0)
        result->hessian = ag_zeros(NULL, request->dtype, AG_SHAPE(0, 0));
    else
        result->hessian = ag_hessian(evaluate_expression, (void *)tree, n, result->values);
    if (result->hessian == NULL) {
        cli_error("%s", ag_error());
        return -1;
    }
    return 0;
}

static void free_result(hessian_result *result)
{
    ag_tensor_free(result->hessian);
    ag_tape_free(result->tape);
    free(result->values);
    free(result->used);
    free(result->differentiable);
    free(result->labels);
}

/* ---- output ---------------------------------------------------------------- */

/* Prints the Hessian as a table with a header row of labels and each row
 * starting with its label. Every column is as wide as its widest entry.
 * Returns 0, or -1 after an error. */
static int print_table(FILE *out, const hessian_result *result)
{
    size_t n = result->n;
    ag_dtype dtype = ag_tensor_dtype(result->hessian);
    int label_width = 0;
    int *widths = calloc(n, sizeof *widths);
    char number[40];

    if (widths == NULL) {
        cli_error("out of memory");
        return -1;
    }
    for (size_t c = 0; c < n; c++) {
        widths[c] = (int)strlen(result->labels[c]);
        if (widths[c] > label_width)
            label_width = widths[c];
        for (size_t r = 0; r < n; r++) {
            format_number(number, sizeof number, ag_tensor_get(result->hessian, r * n + c),
                          dtype);
            if ((int)strlen(number) > widths[c])
                widths[c] = (int)strlen(number);
        }
    }

    fprintf(out, "  %*s", label_width, "");
    for (size_t c = 0; c < n; c++)
        fprintf(out, "  %*s", widths[c], result->labels[c]);
    fputc('\n', out);
    for (size_t r = 0; r < n; r++) {
        fprintf(out, "  %-*s", label_width, result->labels[r]);
        for (size_t c = 0; c < n; c++) {
            format_number(number, sizeof number, ag_tensor_get(result->hessian, r * n + c),
                          dtype);
            fprintf(out, "  %*s", widths[c], number);
        }
        fputc('\n', out);
    }
    free(widths);
    return 0;
}

static int print_text(FILE *out, const hessian_request *request,
                      const hessian_result *result)
{
    fputs("value ", out);
    print_shape_text(out, result->output);
    fputs(": ", out);
    print_tensor_text(out, result->output, "");
    fputc('\n', out);

    if (result->n == 0) {
        fputs("hessian (0x0): no elements to differentiate by\n", out);
    } else {
        fprintf(out, "hessian (%zux%zu), entry = d2 value / d(row) d(column):\n",
                result->n, result->n);
        if (print_table(out, result) != 0)
            return -1;
    }

    for (int k = 0; k < request->args.n_bindings; k++) {
        if (!in_hessian(result, k))
            fprintf(out, "%s: not in the Hessian (class labels of cross_entropy take no "
                    "gradient)\n",
                    request->args.bindings[k].name);
    }
    return 0;
}

static void print_json(FILE *out, const hessian_result *result)
{
    fputs("{\n  \"value\": ", out);
    print_tensor_json(out, result->output);
    fputs(",\n  \"hessian\": ", out);
    print_tensor_json(out, result->hessian);
    fputs(",\n  \"names\": [", out);
    for (size_t r = 0; r < result->n; r++) {
        if (r > 0)
            fputs(", ", out);
        print_json_string(out, result->labels[r]);
    }
    fputs("]\n}\n", out);
}

int cmd_hessian(int argc, char **argv)
{
    hessian_request request = {.dtype = AG_F64};
    hessian_result result = {0};
    expr_tree tree = {0};
    int status = CLI_USAGE;

    int parsed = parse_arguments(argc, argv, &request);
    if (parsed != 0) {
        free_request(&request);
        return parsed > 0 ? CLI_OK : CLI_USAGE;
    }

    expr_error error;
    if (expr_parse(request.args.expression, request.args.names, request.args.n_bindings, &tree,
                   &error) != 0) {
        cli_error("%s", error.message);
        cli_show_column(request.args.expression, error.column);
    } else if (compute(&request, &tree, &result) == 0) {
        int printed = 0;

        if (request.json)
            print_json(stdout, &result);
        else
            printed = print_text(stdout, &request, &result);
        if (fflush(stdout) != 0 || ferror(stdout))
            cli_error("writing the output failed: %s", strerror(errno));
        else if (printed == 0)
            status = CLI_OK;
    }

    free_result(&result);
    expr_tree_free(&tree);
    free_request(&request);
    return status;
}
