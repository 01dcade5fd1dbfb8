/* `tapegrad grad`: evaluate an expression and its gradient with respect to
 * every bound name, optionally checked against finite differences. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bindings.h"
#include "cli.h"
#include "expr.h"
#include "print.h"

void print_grad_help(FILE *out)
{
    fputs(
        "Usage: tapegrad grad [OPTIONS] EXPR NAME=VALUE...\n"
        "\n"
        "Evaluates EXPR with each NAME bound to VALUE and, when the result has one\n"
        "element, prints its gradient with respect to every bound name.\n"
        "\n"
        "Options:\n"
        "  --dtype f32|f64     element type of the values and of the computation\n"
        "                      (default f64)\n"
        "  --format text|json  output format (default text); json prints one object:\n"
        "                      {\"value\": ..., \"grad\": {NAME: ... or null},\n"
        "                      \"labels_held_constant\": [NAME...], \"check\": ...,\n"
        "                      \"check2\": ..., \"records\": ..., \"taylor\": ...}\n"
        "  --check             compare the gradient with central finite differences\n"
        "                      (ag_gradcheck) for every bound name, holding the labels\n"
        "                      of cross_entropy constant (every check does, and moves\n"
        "                      a name also used elsewhere only there); exit status 1\n"
        "                      when they disagree, and then --check-records names the\n"
        "                      first wrong record. Elements at a kink (relu or abs at\n"
        "                      0, tied maxima, clamp at a bound) are reported and left\n"
        "                      out of the verdict\n"
        "  --check-records     check each record's backward rule on its own against\n"
        "                      central differences of its op (ag_check_records) and\n"
        "                      name the first wrong record by index and op; exit\n"
        "                      status 1 when one is wrong\n"
        "  --taylor            Taylor-remainder test (ag_taylor_test): print\n"
        "                      r(h) = |f(x + h v) - f(x) - h <grad f, v>| for\n"
        "                      h = 2^-1 ... 2^-20 along a random direction v (seed 1)\n"
        "                      and the fitted order, 2 for a right gradient and 1 for\n"
        "                      a wrong one; exit status 1 outside [1.8, 2.2]\n"
        "  --check2            check second derivatives (ag_gradgradcheck): the\n"
        "                      gradient built from differentiable backward rules\n"
        "                      against the backward kernels' gradient, and its\n"
        "                      derivatives against central differences of it; exit\n"
        "                      status 1 when they disagree\n"
        "  --eps H             finite-difference step for --check, --check2 and\n"
        "                      --check-records (default 1e-6)\n"
        "  --atol A            absolute tolerance for the same checks (default 1e-5)\n"
        "  --rtol R            relative tolerance for the same checks (default 1e-3);\n"
        "                      an element passes when\n"
        "                      |analytic - numeric| <= A + R * |numeric|\n"
        "  --trace             print the tape: every record's value, its adjoint and\n"
        "                      what it sent to each input (to stderr with\n"
        "                      --format json)\n"
        "  --anomaly           stop at the first op or backward rule that makes a NaN\n"
        "                      or an infinity and report it: the op, its record, and\n"
        "                      each input's shape, min, max and non-finite count\n"
        "                      (exit status 2)\n"
        "  --dot FILE          write the graph in Graphviz DOT to FILE; with '-' the\n"
        "                      graph goes to stdout and the text output to stderr\n"
        "                      (not with --format json)\n"
        "  -h, --help          show this help\n"
        "  --                  end of options; later arguments are EXPR and bindings\n"
        "\n"
        "Bindings:\n"
        "  NAME=VALUE binds NAME (letters, digits, '_') to a number, which is a tensor\n"
        "  of shape (1), or to a bracketed, nested list: x=[1,2,3] has shape (3) and\n"
        "  W=[[1,2],[3,4]] shape (2x2). Every list at one depth has the same length.\n"
        "\n"
        "Expressions, loosest binding first:\n"
        "  a + b, a - b        elementwise, broadcasting as NumPy does\n"
        "  a * b, a / b        elementwise product and quotient\n"
        "  a @ b               matrix product of 2-D tensors; * / @ group left to right\n"
        "  -a                  negation\n"
        "  a ^ b               power, right-associative and tighter than unary minus:\n"
        "                      -x^2 is -(x^2) and 2^3^2 is 2^9\n"
        "  (a), numbers (2, 0.5, 1e-3), bound names, and the functions:\n"
        "    exp log sqrt abs tanh sigmoid relu softplus (x)   elementwise\n"
        "    transpose(x)                  of a 2-D tensor\n"
        "    sum mean max logsumexp (x[, axis])\n"
        "                                  over all elements, giving shape (1), or\n"
        "                                  over one axis, which is dropped\n"
        "    softmax(x, axis), log_softmax(x, axis)\n"
        "    mse(pred, target)             mean((pred - target)^2)\n"
        "    bce(prob, target)             -mean(t log p + (1 - t) log(1 - p)), logs\n"
        "                                  clamped at -100 as in PyTorch\n"
        "    bce_logits(logits, target)    bce(sigmoid(logits), target), computed\n"
        "                                  without overflow\n"
        "    cross_entropy(logits, labels) mean over rows of\n"
        "                                  -log_softmax(logits)[label]; logits are\n"
        "                                  (rows x classes) or (classes), labels a\n"
        "                                  bound name or a number holding class\n"
        "                                  indices, and labels take no gradient\n"
        "  An axis is a constant integer; -1 is the last axis. The two arguments of a\n"
        "  loss have the same shape, because losses do not broadcast.\n"
        "\n"
        "Examples:\n"
        "  tapegrad grad 'x*y + x' x=3 y=4\n"
        "  tapegrad grad --check 'sum(tanh(x @ W + b))' \\\n"
        "      x=[[1,2]] W=[[0.5,-1],[2,0]] b=[[0,1]]\n"
        "  tapegrad grad --check-records --taylor 'sum(relu(x) * exp(x))' \\\n"
        "      x=[0.5,1,-2]\n"
        "\n"
        "Exit status: 0 on success, 1 when --check, --check2, --check-records or\n"
        "--taylor fails, 2 on invalid options, bindings or expressions, on --check,\n"
        "--check2 or --taylor of a value with more than one element, on a check\n"
        "that cannot run (the value is not finite at or within --eps of the\n"
        "bindings, or --eps does not change them), and on errors the library\n"
        "reports (such as mismatched shapes, or an op without a differentiable\n"
        "backward rule under --check2).\n",
        out);
}

typedef struct grad_request {
    ag_dtype dtype;
    bool json;
    bool check;
    bool check2; /* second-order check */
    bool check_records;
    bool taylor;
    bool trace;
    bool anomaly;
    const char *dot_path;
    ag_gradcheck_options tolerances;
    cli_expression_arguments args; /* the expression and its bindings */
} grad_request;

/* What one run computed; the tensors live on the tape. */
typedef struct grad_result {
    ag_tape *tape;
    ag_tensor **values; /* one per binding */
    bool *used;
    bool *differentiable;
    /* Names used as the labels of cross_entropy and elsewhere too. Their
     * labels are a constant copy of the bound value, so a check that moves
     * the name leaves the labels at integer class indices. */
    bool *held_constant;
    bool any_held_constant;
    ag_tensor *output;
    bool has_gradients;
    bool checked;
    ag_gradcheck_result check;
    bool checked2;
    ag_gradcheck_result check2;
    bool records_checked;
    ag_record_check_result records;
    bool taylor_done;
    ag_taylor_result taylor;
} grad_result;

/* Seed of the Taylor test's random direction. */
#define TAYLOR_SEED 1

/* ---- arguments ---------------------------------------------------------------- */

/* Handles one option at argv[*i]. Returns 1 when handled, 0 when argv[*i] is
 * not an option, -1 on error. */
static int parse_option(int argc, char **argv, int *i, void *context)
{
    grad_request *request = context;
    const char *value;
    int found;

    if ((found = cli_dtype_format_option(argc, argv, i, &request->dtype, &request->json)) != 0)
        return found;
    if ((found = cli_option_value(argc, argv, i, "--dot", &value)) != 0) {
        if (found < 0)
            return -1;
        request->dot_path = value;
        return 1;
    }
    if ((found = cli_tolerance_option(argc, argv, i, &request->tolerances)) != 0)
        return found;
    if (strcmp(argv[*i], "--check") == 0) {
        request->check = true;
        return 1;
    }
    if (strcmp(argv[*i], "--check2") == 0) {
        request->check2 = true;
        return 1;
    }
    if (strcmp(argv[*i], "--check-records") == 0) {
        request->check_records = true;
        return 1;
    }
    if (strcmp(argv[*i], "--taylor") == 0) {
        request->taylor = true;
        return 1;
    }
    if (strcmp(argv[*i], "--trace") == 0) {
        request->trace = true;
        return 1;
    }
    if (strcmp(argv[*i], "--anomaly") == 0) {
        request->anomaly = true;
        return 1;
    }
    return 0;
}

/* Returns 0, -1 after an error, or 1 after printing the help. */
static int parse_arguments(int argc, char **argv, grad_request *request)
{
    int status = cli_parse_expression_arguments(argc, argv, "grad", parse_option,
                                                request, print_grad_help, &request->args);

    if (status != 0)
        return status;
    if (request->json && request->dot_path != NULL && strcmp(request->dot_path, "-") == 0) {
        cli_error("--dot - writes to stdout, which --format json keeps for the JSON "
                  "object; give --dot a file name");
        return -1;
    }
    return 0;
}

static void free_request(grad_request *request)
{
    for (int k = 0; k < request->args.n_bindings; k++)
        binding_free(&request->args.bindings[k]);
    free(request->args.bindings);
    free(request->args.names);
}

/* ---- computing -------------------------------------------------------------- */

typedef struct check_job {
    const expr_tree *tree;
    ag_dtype dtype;
    const grad_request *request;
    const grad_result *result;
} check_job;

/* Makes, on the tape, a constant tensor of the bound value of each name in
 * result->held_constant, for the labels of cross_entropy to use; the other
 * entries are NULL. Returns NULL when no name is held constant, or with an
 * error in ag_error() when the tensors cannot be made. */
static ag_tensor **make_constant_labels(const grad_request *request,
                                        const grad_result *result, ag_tape *tape,
                                        ag_dtype dtype, bool *failed)
{
    int n = request->args.n_bindings;

    *failed = false;
    if (!result->any_held_constant)
        return NULL;
    ag_tensor **labels = ag_tape_alloc(tape, (size_t)n * sizeof *labels);
    if (labels == NULL) {
        *failed = true;
        return NULL;
    }
    for (int k = 0; k < n; k++) {
        const binding *b = &request->args.bindings[k];

        labels[k] = NULL;
        if (!result->held_constant[k])
            continue;
        /* An empty list has no data, but the library wants a pointer. */
        static const double no_elements[1];
        const double *data = b->numel > 0 ? b->data : no_elements;

        labels[k] = ag_tensor_from_doubles(tape, dtype, b->ndim, b->shape, data);
        if (labels[k] == NULL) {
            *failed = true;
            return NULL;
        }
        ag_tensor_set_name(labels[k], b->name);
    }
    return labels;
}

/* The expression as an ag_function: inputs are the bound names in order. */
static ag_tensor *evaluate_for_check(ag_tape *tape, ag_tensor *const *inputs, int n_inputs,
                                     void *user)
{
    const check_job *job = user;
    ag_dtype dtype = n_inputs > 0 ? ag_tensor_dtype(inputs[0]) : job->dtype;
    bool failed;
    expr_context context = {
        .tape = tape,
        .dtype = dtype,
        .values = inputs,
        .label_values = make_constant_labels(job->request, job->result, tape, dtype,
                                             &failed),
    };

    if (failed)
        return NULL;
    return expr_eval(job->tree, &context);
}

/* Creates one tensor per binding: a leaf that requires a gradient when the
 * expression differentiates through it. Tape NULL makes heap tensors. */
static int make_inputs(const grad_request *request, const grad_result *result,
                       ag_tape *tape, ag_tensor **tensors)
{
    for (int k = 0; k < request->args.n_bindings; k++) {
        const binding *b = &request->args.bindings[k];

        /* An empty list has no data, but the library wants a pointer. */
        static const double no_elements[1];
        const double *data = b->numel > 0 ? b->data : no_elements;

        tensors[k] = ag_tensor_from_doubles(tape, request->dtype, b->ndim, b->shape, data);
        if (tensors[k] == NULL)
            return -1;
        ag_tensor_set_name(tensors[k], b->name);
        if (result->differentiable[k] &&
            ag_tensor_set_requires_grad(tensors[k], true) != 0)
            return -1;
    }
    return 0;
}

/* The checks that evaluate the whole expression as a function. */
typedef enum function_check {
    FIRST_ORDER_CHECK,  /* --check: ag_gradcheck */
    SECOND_ORDER_CHECK, /* --check2: ag_gradgradcheck */
    TAYLOR_TEST,        /* --taylor: ag_taylor_test */
} function_check;

/* Runs one check of the expression on heap copies of the bound values. A -1
 * from the library (such as an op without a differentiable backward rule,
 * or a non-finite value) is an error, not a failed check. */
static int run_function_check(const grad_request *request, const expr_tree *tree,
                              grad_result *result, function_check kind)
{
    int n = request->args.n_bindings;
    ag_tensor **inputs = calloc((size_t)(n > 0 ? n : 1), sizeof *inputs);
    int status = -1;

    if (inputs == NULL) {
        cli_error("out of memory");
        return -1;
    }
    if (make_inputs(request, result, NULL, inputs) != 0) {
        cli_error("%s", ag_error());
    } else {
        check_job job = {.tree = tree, .dtype = request->dtype, .request = request,
                         .result = result};
        const char *what = NULL;

        switch (kind) {
        case FIRST_ORDER_CHECK:
            what = "the gradient check";
            status = ag_gradcheck(evaluate_for_check, &job, n, inputs,
                                  &request->tolerances, &result->check);
            result->checked = status == 0;
            break;
        case SECOND_ORDER_CHECK:
            what = "the second-order check";
            status = ag_gradgradcheck(evaluate_for_check, &job, n, inputs,
                                      &request->tolerances, &result->check2);
            result->checked2 = status == 0;
            break;
        case TAYLOR_TEST: {
            ag_rng rng = ag_rng_new(TAYLOR_SEED);

            what = "the Taylor test";
            status = ag_taylor_test(evaluate_for_check, &job, n, inputs, &rng,
                                    &result->taylor);
            result->taylor_done = status == 0;
            break;
        }
        }
        if (status != 0)
            cli_error("%s could not run: %s", what, ag_error());
    }

    for (int k = 0; k < n; k++)
        ag_tensor_free(inputs[k]);
    free(inputs);
    return status;
}

/* Checks each record of the expression's tape on its own. */
static int run_record_check(const grad_request *request, grad_result *result)
{
    if (ag_check_records(result->tape, &request->tolerances, &result->records) != 0) {
        cli_error("the record check could not run: %s", ag_error());
        return -1;
    }
    result->records_checked = true;
    return 0;
}

/* Rejects an option that needs a one-element value on a larger one. */
static int require_one_element(const char *option, bool requested, const ag_tensor *output)
{
    char shape[64];

    if (!requested || ag_tensor_numel(output) == 1)
        return 0;
    cli_error("%s needs a one-element value, but the value has shape %s; reduce it with "
              "sum(...) or mean(...)",
              option, ag_shape_str(output, shape, sizeof shape));
    return -1;
}

static int compute(const grad_request *request, const expr_tree *tree, grad_result *result)
{
    int n = request->args.n_bindings;
    size_t count = (size_t)(n > 0 ? n : 1);

    result->values = calloc(count, sizeof *result->values);
    result->used = calloc(count, sizeof *result->used);
    result->differentiable = calloc(count, sizeof *result->differentiable);
    result->held_constant = calloc(count, sizeof *result->held_constant);
    result->tape = ag_tape_new();
    if (result->values == NULL || result->used == NULL || result->differentiable == NULL ||
        result->held_constant == NULL || result->tape == NULL) {
        cli_error("out of memory");
        return -1;
    }
    expr_find_uses(tree, n, result->used, result->differentiable);
    expr_find_label_uses(tree, n, result->held_constant);
    for (int k = 0; k < n; k++) {
        result->held_constant[k] = result->held_constant[k] && result->differentiable[k];
        result->any_held_constant = result->any_held_constant || result->held_constant[k];
    }
    ag_tape_set_anomaly_mode(result->tape, request->anomaly);

    bool failed;
    ag_tensor **labels = make_constant_labels(request, result, result->tape,
                                              request->dtype, &failed);
    if (failed || make_inputs(request, result, result->tape, result->values) != 0) {
        cli_error("%s", ag_error());
        return -1;
    }

    /* The labels are constant on this tape too, so the record check does
     * not move them. */
    expr_context context = {.tape = result->tape, .dtype = request->dtype,
                            .values = result->values, .label_values = labels};
    result->output = expr_eval(tree, &context);
    if (result->output == NULL) {
        cli_report_eval_error(request->args.expression, context.error_column);
        return -1;
    }

    bool one_element = ag_tensor_numel(result->output) == 1;
    if (request->check && !one_element) {
        char shape[64];

        cli_error("--check needs a one-element value, but the value has shape %s; "
                  "reduce it with sum(...) or mean(...)",
                  ag_shape_str(result->output, shape, sizeof shape));
        return -1;
    }
    if (request->check2 && !one_element) {
        char shape[64];

        cli_error("--check2 needs a one-element value, but the value has shape %s; "
                  "reduce it with sum(...) or mean(...)",
                  ag_shape_str(result->output, shape, sizeof shape));
        return -1;
    }
    if (require_one_element("--taylor", request->taylor, result->output) != 0)
        return -1;

    /* Gradients exist only for a one-element value. Without a recorded
     * input, every gradient stays zero and backward has nothing to do. */
    result->has_gradients = one_element;
    if (one_element && ag_tensor_requires_grad(result->output) &&
        ag_backward(result->tape, result->output, NULL) != 0) {
        cli_error("%s", ag_error());
        return -1;
    }

    if (request->check && run_function_check(request, tree, result, FIRST_ORDER_CHECK) != 0)
        return -1;
    if (request->check2 &&
        run_function_check(request, tree, result, SECOND_ORDER_CHECK) != 0)
        return -1;

    /* A failed check names the first wrong record even without the option. */
    bool check_failed = result->checked && !result->check.passed;
    if ((request->check_records || check_failed) && run_record_check(request, result) != 0)
        return -1;
    if (request->taylor && run_function_check(request, tree, result, TAYLOR_TEST) != 0)
        return -1;
    return 0;
}

static void free_result(grad_result *result)
{
    ag_tape_free(result->tape);
    free(result->values);
    free(result->used);
    free(result->differentiable);
    free(result->held_constant);
}

/* ---- output ---------------------------------------------------------------- */

/* Returns the reason binding k has no gradient, or NULL when it has one. */
static const char *no_gradient_reason(const grad_result *result, int k)
{
    if (!result->used[k])
        return "the expression does not use it";
    if (!result->differentiable[k])
        return "class labels of cross_entropy take no gradient";
    return NULL;
}

static void print_labelled_text(FILE *out, const char *label, const ag_tensor *t)
{
    fprintf(out, "%s ", label);
    print_shape_text(out, t);
    if (ag_tensor_ndim(t) == 1 && ag_tensor_numel(t) == 1) {
        fputs(": ", out);
        print_tensor_text(out, t, "");
    } else {
        fputs(":\n  ", out);
        print_tensor_text(out, t, "  ");
    }
    fputc('\n', out);
}

/* Return the bound name and the tensor of the check's first kink, or ""
 * and NULL without one. */
static const char *kink_name(const grad_request *request, const ag_gradcheck_result *c)
{
    return c->n_kinks > 0 && c->kink_input >= 0 && c->kink_input < request->args.n_bindings
               ? request->args.bindings[c->kink_input].name
               : "";
}

static const ag_tensor *kink_input(const grad_request *request, const grad_result *result,
                                   const ag_gradcheck_result *c)
{
    if (c->n_kinks == 0 || c->kink_input < 0 || c->kink_input >= request->args.n_bindings)
        return NULL;
    return result->values[c->kink_input];
}

static const ag_tensor *worst_input(const grad_request *request, const grad_result *result)
{
    int k = result->check.worst_input;

    if (result->check.n_checked == 0 || k < 0 || k >= request->args.n_bindings)
        return NULL;
    return result->values[k];
}

static const char *worst_name(const grad_request *request, const grad_result *result)
{
    int k = result->check.worst_input;

    return k >= 0 && k < request->args.n_bindings ? request->args.bindings[k].name : "";
}

/* Return the bound name and the tensor of a check's worst input element,
 * or "" and NULL when no element was compared. */
static const char *checked_name(const grad_request *request, const ag_gradcheck_result *c)
{
    return c->worst_input >= 0 && c->worst_input < request->args.n_bindings
               ? request->args.bindings[c->worst_input].name
               : "";
}

static const ag_tensor *checked_input(const grad_request *request, const grad_result *result,
                                      const ag_gradcheck_result *c)
{
    if (c->n_checked == 0 || c->worst_input < 0 || c->worst_input >= request->args.n_bindings)
        return NULL;
    return result->values[c->worst_input];
}

/* Writes "d/dNAME[i, j]" for element `index` of the gradients of the
 * differentiated names, concatenated in binding order, as
 * ag_gradgradcheck numbers them. */
static void gradient_label(char *buf, size_t size, const grad_request *request,
                           const grad_result *result, size_t index)
{
    snprintf(buf, size, "gradient element %zu", index);
    for (int k = 0; k < request->args.n_bindings; k++) {
        const ag_tensor *t = result->values[k];
        char position[128];

        if (!result->differentiable[k])
            continue;
        if (index < ag_tensor_numel(t)) {
            cli_format_position(position, sizeof position, t, index);
            snprintf(buf, size, "d/d%s%s", request->args.bindings[k].name, position);
            return;
        }
        index -= ag_tensor_numel(t);
    }
}

/* Returns whether a check ran that evaluates the expression again. */
static bool any_check(const grad_result *result)
{
    return result->checked || result->checked2 || result->records_checked ||
           result->taylor_done;
}

/* Writes "c, d": the names whose labels the checks hold constant. */
static void print_held_constant_text(FILE *out, const grad_request *request,
                                     const grad_result *result)
{
    bool first = true;

    for (int k = 0; k < request->args.n_bindings; k++) {
        if (!result->held_constant[k])
            continue;
        fprintf(out, "%s%s", first ? "" : ", ", request->args.bindings[k].name);
        first = false;
    }
}

static void print_text(FILE *out, const grad_request *request, const grad_result *result)
{
    print_labelled_text(out, "value", result->output);

    if (!result->has_gradients) {
        fprintf(out, "gradients: none, because the value has %zu elements; reduce it "
                "with sum(...) or mean(...) to get gradients\n",
                ag_tensor_numel(result->output));
    } else {
        for (int k = 0; k < request->args.n_bindings; k++) {
            const char *reason = no_gradient_reason(result, k);
            char label[64];

            snprintf(label, sizeof label, "d/d%s", request->args.bindings[k].name);
            if (reason != NULL)
                fprintf(out, "%s: none (%s)\n", label, reason);
            else
                print_labelled_text(out, label, ag_tensor_grad(result->values[k]));
        }
    }

    if (result->any_held_constant && any_check(result)) {
        fputs("labels held constant: the checks keep the labels of cross_entropy at the "
              "bound value of ", out);
        print_held_constant_text(out, request, result);
        fputs(" and move the name only where it is used elsewhere\n", out);
    }
    if (result->checked)
        cli_print_check_text(out, &result->check, &request->tolerances,
                             worst_name(request, result), worst_input(request, result),
                             kink_name(request, &result->check),
                             kink_input(request, result, &result->check));
    if (result->checked2) {
        char gradient[192];

        gradient_label(gradient, sizeof gradient, request, result,
                       result->check2.worst_output);
        cli_print_check2_text(out, &result->check2, &request->tolerances, gradient,
                              checked_name(request, &result->check2),
                              checked_input(request, result, &result->check2));
    }
    if (result->records_checked)
        cli_print_records_text(out, &result->records, result->tape);
    if (result->taylor_done)
        cli_print_taylor_text(out, &result->taylor, TAYLOR_SEED);
}

static void print_json(FILE *out, const grad_request *request, const grad_result *result)
{
    fprintf(out, "{\n  \"dtype\": \"%s\",\n  \"value\": ",
            request->dtype == AG_F32 ? "f32" : "f64");
    print_tensor_json(out, result->output);

    fputs(",\n  \"grad\": ", out);
    if (!result->has_gradients) {
        fputs("null", out);
    } else {
        fputs("{", out);
        for (int k = 0; k < request->args.n_bindings; k++) {
            fprintf(out, "%s\n    ", k > 0 ? "," : "");
            print_json_string(out, request->args.bindings[k].name);
            fputs(": ", out);
            if (no_gradient_reason(result, k) != NULL)
                fputs("null", out);
            else
                print_tensor_json(out, ag_tensor_grad(result->values[k]));
        }
        fputs(request->args.n_bindings > 0 ? "\n  }" : "}", out);
    }

    if (result->any_held_constant && any_check(result)) {
        bool first = true;

        fputs(",\n  \"labels_held_constant\": [", out);
        for (int k = 0; k < request->args.n_bindings; k++) {
            if (!result->held_constant[k])
                continue;
            fputs(first ? "" : ", ", out);
            print_json_string(out, request->args.bindings[k].name);
            first = false;
        }
        fputs("]", out);
    }
    if (result->checked) {
        fputs(",\n  \"check\": ", out);
        cli_print_check_json(out, &result->check, &request->tolerances,
                             worst_name(request, result), worst_input(request, result),
                             kink_name(request, &result->check),
                             kink_input(request, result, &result->check), "  ");
    }
    if (result->checked2) {
        fputs(",\n  \"check2\": ", out);
        cli_print_check_json(out, &result->check2, &request->tolerances,
                             checked_name(request, &result->check2),
                             checked_input(request, result, &result->check2),
                             kink_name(request, &result->check2),
                             kink_input(request, result, &result->check2), "  ");
    }
    if (result->records_checked) {
        fputs(",\n  \"records\": ", out);
        cli_print_records_json(out, &result->records, result->tape, "  ");
    }
    if (result->taylor_done) {
        fputs(",\n  \"taylor\": ", out);
        cli_print_taylor_json(out, &result->taylor, TAYLOR_SEED, "  ");
    }
    fputs("\n}\n", out);
}

static int write_dot(const char *path, const ag_tape *tape)
{
    if (strcmp(path, "-") == 0) {
        if (ag_tape_write_dot(tape, stdout) != 0) {
            cli_error("%s", ag_error());
            return -1;
        }
        return 0;
    }

    FILE *file = fopen(path, "w");
    if (file == NULL) {
        cli_error("cannot open %s for writing: %s", path, strerror(errno));
        return -1;
    }
    int status = ag_tape_write_dot(tape, file);
    if (status != 0)
        cli_error("writing %s failed: %s", path, ag_error());
    if (fclose(file) != 0 && status == 0) {
        cli_error("writing %s failed: %s", path, strerror(errno));
        status = -1;
    }
    return status;
}

static int print_results(const grad_request *request, const grad_result *result)
{
    /* With --dot -, stdout carries the graph alone, so it can be piped to
     * Graphviz; the text goes to stderr. */
    bool dot_to_stdout = request->dot_path != NULL && strcmp(request->dot_path, "-") == 0;
    FILE *text_out = dot_to_stdout ? stderr : stdout;

    if (request->json)
        print_json(stdout, request, result);
    else
        print_text(text_out, request, result);

    /* stdout carries the JSON object alone, so the trace goes to stderr. */
    if (request->trace) {
        FILE *out = request->json ? stderr : text_out;

        if (!request->json)
            fputc('\n', out);
        if (ag_tape_print(result->tape, out) != 0) {
            cli_error("%s", ag_error());
            return -1;
        }
    }
    if (request->dot_path != NULL && write_dot(request->dot_path, result->tape) != 0)
        return -1;

    if (fflush(stdout) != 0 || ferror(stdout)) {
        cli_error("writing the output failed: %s", strerror(errno));
        return -1;
    }
    return 0;
}

int cmd_grad(int argc, char **argv)
{
    grad_request request = {.dtype = AG_F64, .tolerances = ag_gradcheck_defaults()};
    grad_result result = {0};
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
    } else if (compute(&request, &tree, &result) == 0 &&
               print_results(&request, &result) == 0) {
        bool failed = (result.checked && !result.check.passed) ||
                      (result.checked2 && !result.check2.passed) ||
                      (result.records_checked && !result.records.passed) ||
                      (result.taylor_done && !result.taylor.passed);

        status = failed ? CLI_CHECK_FAILED : CLI_OK;
    }

    free_result(&result);
    expr_tree_free(&tree);
    free_request(&request);
    return status;
}
