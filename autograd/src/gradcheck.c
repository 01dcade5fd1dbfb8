/*
 * The gradient checker: the tape's Jacobian of f against central differences.
 *
 * The analytic Jacobian J[j][e] = d output_j / d input element e comes from
 * the tape at the inputs' own dtypes, one row per backward pass seeded with
 * the one-hot vector of output element j. The numeric Jacobian comes one
 * column at a time from f evaluated in f64:
 *   J[:, e] ~ (f(x + eps u_e) - f(x - eps u_e)) / (2 eps),
 * whose truncation error is O(eps^2). All work happens on copies, so the
 * caller's inputs and their gradients stay untouched. f(x) itself gives the
 * one-sided differences that tell a kink from a wrong gradient.
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "kink.h"

typedef struct gradcheck_run {
    ag_function f;
    void *user;
    int n_inputs;
    ag_tensor *const *inputs;
    ag_gradcheck_options options;

    ag_tensor **work;  /* copies of the inputs handed to f, one per input */
    size_t n_wrt;      /* elements of the inputs that require a gradient */
    size_t n_out;      /* elements of f's output */
    double *jacobian;  /* analytic Jacobian, n_out x n_wrt, row-major */
    double *center;    /* f(x), n_out values */
    double *plus;      /* f(x + eps u_e), n_out values */
    double *minus;     /* f(x - eps u_e) */
    double *plus_half; /* f(x + eps/2 u_e), evaluated at candidate kinks */
    double *minus_half;

    /* The first element of f(x) that is not finite at the inputs' own dtype
     * (SIZE_MAX when none is), its value and that dtype. It is reported only
     * once f(x) in f64 proved finite. */
    size_t first_nonfinite;
    double nonfinite_value;
    ag_dtype own_dtype;

    bool any_analytic_nonzero;
    bool any_numeric_nonzero;
    bool any_failed;
    double worst_ratio; /* largest error / tolerance seen so far */
} gradcheck_run;

ag_gradcheck_options ag_gradcheck_defaults(void)
{
    return (ag_gradcheck_options){.eps = 1e-6, .atol = 1e-5, .rtol = 1e-3};
}

/* ---- arguments ------------------------------------------------------------ */

static int check_arguments(ag_function f, int n_inputs, ag_tensor *const *inputs,
                           const ag_gradcheck_options *options,
                           ag_gradcheck_result *result)
{
    if (f == NULL) {
        ag_set_error("ag_gradcheck: the function is NULL");
        return -1;
    }
    if (inputs == NULL) {
        ag_set_error("ag_gradcheck: inputs is NULL; pass an array of n_inputs tensors");
        return -1;
    }
    if (result == NULL) {
        ag_set_error("ag_gradcheck: result is NULL; pass a result to fill");
        return -1;
    }
    if (n_inputs < 1) {
        ag_set_error("ag_gradcheck: n_inputs is %d; pass at least one input", n_inputs);
        return -1;
    }

    bool any_requires_grad = false;
    for (int i = 0; i < n_inputs; i++) {
        if (inputs[i] == NULL) {
            ag_set_error("ag_gradcheck: input %d is NULL", i);
            return -1;
        }
        any_requires_grad = any_requires_grad || inputs[i]->requires_grad;
    }
    if (!any_requires_grad) {
        ag_set_error("ag_gradcheck: no input requires a gradient, so there is "
                     "nothing to check; mark the inputs to check with "
                     "ag_tensor_set_requires_grad");
        return -1;
    }

    if (options != NULL &&
        !(options->eps > 0 && isfinite(options->eps) && options->atol >= 0 &&
          options->rtol >= 0)) {
        ag_set_error("ag_gradcheck: invalid options eps %g, atol %g, rtol %g; eps "
                     "must be positive and finite, atol and rtol nonnegative",
                     options->eps, options->atol, options->rtol);
        return -1;
    }
    return 0;
}

/* Copies text into result->message, cut to fit. */
static void set_message(ag_gradcheck_result *result, const char *text)
{
    size_t length = strlen(text);

    if (length >= sizeof result->message)
        length = sizeof result->message - 1;
    memcpy(result->message, text, length);
    result->message[length] = '\0';
}

/* Sets the error and the result's message to "ag_gradcheck: <context>: <cause>",
 * where the cause is the current error (often the function's own message). */
static int fail_keeping_cause(ag_gradcheck_result *result, const char *context)
{
    char cause[256];
    char full[512];

    /* Copy the cause first: ag_set_error overwrites the buffer it lives in. */
    snprintf(cause, sizeof cause, "%s", ag_error() != NULL ? ag_error() : "no message set");
    snprintf(full, sizeof full, "ag_gradcheck: %s: %s", context, cause);
    ag_set_error("%s", full);
    set_message(result, full);
    return -1;
}

/* Writes "input 1" or, for a named tensor, "input 1 \"w\"". */
static const char *input_label(const gradcheck_run *run, int i, char *buf, size_t size)
{
    const char *name = run->inputs[i]->name;

    if (name[0] != '\0')
        snprintf(buf, size, "input %d \"%s\"", i, name);
    else
        snprintf(buf, size, "input %d", i);
    return buf;
}

/* ---- the analytic Jacobian ------------------------------------------------ */

/* Copies the gradient of one input copy into its stretch of a Jacobian row. */
static void read_gradient(gradcheck_run *run, const ag_tensor *copy, double *row)
{
    const ag_tensor *grad = ag_tensor_grad(copy);

    for (size_t e = 0; e < copy->numel; e++) {
        row[e] = grad == NULL ? 0.0 : ag_tensor_get(grad, e);
        run->any_analytic_nonzero = run->any_analytic_nonzero || row[e] != 0.0;
    }
}

/* Fills one Jacobian row per output element. An output that does not require
 * a gradient (no recorded op reached an input) has an all-zero Jacobian. */
static int backward_rows(gradcheck_run *run, ag_tape *tape, ag_tensor *output,
                         ag_gradcheck_result *result)
{
    ag_tensor *seed = ag_zeros(tape, output->dtype, output->ndim, output->shape);

    if (seed == NULL)
        return fail_keeping_cause(result, "cannot allocate the seed");

    for (size_t j = 0; j < run->n_out; j++) {
        double *row = run->jacobian + j * run->n_wrt;

        if (!output->requires_grad) {
            memset(row, 0, run->n_wrt * sizeof *row);
            continue;
        }
        for (int i = 0; i < run->n_inputs; i++)
            ag_tensor_zero_grad(run->work[i]);

        ag_tensor_set(seed, j, 1.0);
        int status = ag_backward(tape, output, seed);
        ag_tensor_set(seed, j, 0.0);
        if (status != 0) {
            char context[64];
            snprintf(context, sizeof context, "backward failed for output element %zu", j);
            return fail_keeping_cause(result, context);
        }

        for (int i = 0; i < run->n_inputs; i++) {
            if (run->inputs[i]->requires_grad) {
                read_gradient(run, run->work[i], row);
                row += run->work[i]->numel;
            }
        }
    }
    return 0;
}

/* Runs f on a fresh tape at the inputs' own dtypes and builds the analytic
 * Jacobian. Sets run->n_out and allocates run->jacobian. */
static int analytic_jacobian(gradcheck_run *run, ag_gradcheck_result *result)
{
    ag_tape *tape = ag_tape_new();
    int status = -1;

    if (tape == NULL)
        return fail_keeping_cause(result, "cannot create a tape");

    for (int i = 0; i < run->n_inputs; i++) {
        const ag_tensor *input = run->inputs[i];

        run->work[i] = ag_tensor_copy(tape, input, input->dtype);
        if (run->work[i] == NULL ||
            ag_tensor_set_requires_grad(run->work[i], input->requires_grad) != 0) {
            fail_keeping_cause(result, "cannot copy the inputs");
            goto done;
        }
        ag_tensor_set_name(run->work[i], input->name);
    }

    /* Cleared so that a failure of f reports f's message and no older one. */
    ag_error_clear();
    ag_tensor *output = run->f(tape, run->work, run->n_inputs, run->user);
    if (output == NULL) {
        fail_keeping_cause(result, "the function failed at the inputs' dtype");
        goto done;
    }
    run->n_out = output->numel;
    if (run->n_out == 0 || run->n_wrt == 0) {
        snprintf(result->message, sizeof result->message,
                 "ag_gradcheck: nothing to check: the output has %zu elements and "
                 "the inputs that require a gradient have %zu; use nonempty tensors",
                 run->n_out, run->n_wrt);
        ag_set_error("%s", result->message);
        goto done;
    }
    /* f can overflow in f32 where the f64 differences stay finite, so this
     * is judged once f(x) is known in f64 (require_finite_own). */
    run->first_nonfinite = SIZE_MAX;
    run->own_dtype = output->dtype;
    for (size_t j = 0; j < run->n_out; j++) {
        double value = ag_tensor_get(output, j);

        if (!isfinite(value)) {
            run->first_nonfinite = j;
            run->nonfinite_value = isnan(value) ? NAN : value;
            break;
        }
    }
    if (run->n_out > SIZE_MAX / sizeof(double) / run->n_wrt) {
        ag_set_error("%zu x %zu partials overflow the address space", run->n_out,
                     run->n_wrt);
        fail_keeping_cause(result, "the Jacobian is too large; check fewer elements");
        goto done;
    }
    run->jacobian = ag_heap_alloc(run->n_out * run->n_wrt * sizeof(double));
    /* One block for f(x) and the four moved points. */
    run->center = ag_calloc(run->n_out, 5 * sizeof(double));
    if (run->jacobian == NULL || run->center == NULL) {
        ag_set_error("out of memory for a %zu x %zu Jacobian", run->n_out, run->n_wrt);
        fail_keeping_cause(result, "cannot allocate the Jacobian");
        goto done;
    }
    run->plus = run->center + run->n_out;
    run->minus = run->plus + run->n_out;
    run->plus_half = run->minus + run->n_out;
    run->minus_half = run->plus_half + run->n_out;
    status = backward_rows(run, tape, output, result);

done:
    ag_tape_free(tape);
    return status;
}

/* ---- the numeric Jacobian ------------------------------------------------- */

/* Evaluates f on the f64 copies in run->work, on a tape just reset (which
 * is as good as a fresh one), checks that the output size matches, and
 * copies the output into `values`. `point` names where f was evaluated, for
 * the error message. */
static int evaluate_f64(gradcheck_run *run, ag_tape *tape, const char *point,
                        double *values, ag_gradcheck_result *result)
{
    char context[192];

    ag_tape_reset(tape);
    ag_error_clear();
    ag_tensor *output = run->f(tape, run->work, run->n_inputs, run->user);

    if (output == NULL) {
        snprintf(context, sizeof context, "the function failed in f64 %s", point);
        return fail_keeping_cause(result, context);
    }
    if (output->numel != run->n_out) {
        snprintf(result->message, sizeof result->message,
                 "ag_gradcheck: the output has %zu elements in f64 but %zu at the "
                 "inputs' dtype; the function must give one shape for both",
                 output->numel, run->n_out);
        ag_set_error("%s", result->message);
        return -1;
    }

    /* Copy before x is restored: f may return its input unchanged, so the
     * output can share x's data. */
    for (size_t j = 0; j < run->n_out; j++)
        values[j] = ag_tensor_get(output, j);
    return 0;
}

/* Sets the error and result->message to text formatted as for printf. */
static int fail_with(ag_gradcheck_result *result, const char *format, ...)
{
    va_list args;

    va_start(args, format);
    vsnprintf(result->message, sizeof result->message, format, args);
    va_end(args);
    ag_set_error("%s", result->message);
    return -1;
}

/* Rejects a non-finite f(x): every difference quotient through a NaN or an
 * infinity is NaN, which would blame a correct backward rule. */
static int require_finite_center(const gradcheck_run *run, ag_gradcheck_result *result)
{
    for (size_t j = 0; j < run->n_out; j++) {
        if (!isfinite(run->center[j]))
            return fail_with(result,
                             "ag_gradcheck: f(x) is %g at output element %zu, but central "
                             "differences need a finite f; check the gradient at a point "
                             "where f is finite",
                             isnan(run->center[j]) ? NAN : run->center[j], j);
    }
    return 0;
}

/* Rejects a non-finite f(x) at the inputs' own dtype when f(x) is finite in
 * f64, because the analytic partials then come from an overflowed f. */
static int require_finite_own(const gradcheck_run *run, ag_gradcheck_result *result)
{
    if (run->first_nonfinite == SIZE_MAX)
        return 0;
    return fail_with(result,
                     "ag_gradcheck: f(x) is %g at output element %zu in %s but "
                     "finite in f64, and the check needs a finite f; pass f64 "
                     "inputs, or check at a point where f is finite in %s",
                     run->nonfinite_value, run->first_nonfinite,
                     ag_dtype_name(run->own_dtype), ag_dtype_name(run->own_dtype));
}

/* Rejects a non-finite f at a moved point. There f is not finite within the
 * step of x, so its difference quotients carry no information about the
 * gradient. */
static int require_finite_moved(const gradcheck_run *run, int input, size_t element,
                                double step, const double *values,
                                ag_gradcheck_result *result)
{
    char label[64];

    for (size_t j = 0; j < run->n_out; j++) {
        if (!isfinite(values[j]))
            return fail_with(result,
                             "ag_gradcheck: f is %g at output element %zu with %s element "
                             "%zu moved by %g, so the numeric derivative is not finite; "
                             "move the input away from where f is not finite, or use an "
                             "eps smaller than the distance to it",
                             isnan(values[j]) ? NAN : values[j], j,
                             input_label(run, input, label, sizeof label), element, step);
    }
    return 0;
}

/* Evaluates f with one element of the f64 copy of `input` moved by `step`,
 * then puts the element back. A step below the spacing of doubles at x
 * would leave x unchanged and give a numeric derivative of 0, so it is an
 * error. */
static int evaluate_moved(gradcheck_run *run, ag_tape *tape, int input, size_t element,
                          double step, double *values, ag_gradcheck_result *result)
{
    double *x = run->work[input]->data;
    const double center = x[element];
    char label[64];
    char point[128];

    input_label(run, input, label, sizeof label);
    if (center + step == center)
        return fail_with(result,
                         "ag_gradcheck: the step %g does not move %s element %zu (value "
                         "%.17g) in f64, so the numeric derivative would be 0; use an "
                         "eps well above |x| * 2.2e-16, such as 1e-6 * max(1, |x|)",
                         step, label, element, center);

    snprintf(point, sizeof point, "with %s element %zu moved by %g", label, element, step);
    x[element] = center + step;
    int status = evaluate_f64(run, tape, point, values, result);
    x[element] = center;
    if (status != 0)
        return -1;
    return require_finite_moved(run, input, element, step, values, result);
}

/* Keeps the first kink in result; kinks stay out of the verdict. */
static void note_kink(int input, size_t element, size_t output_index, double analytic,
                      const ag_quotients *q, ag_gradcheck_result *result)
{
    result->n_checked++;
    if (result->n_kinks++ > 0)
        return;
    result->kink_input = input;
    result->kink_index = element;
    result->kink_output = output_index;
    result->kink_analytic = analytic;
    result->kink_left = q->left;
    result->kink_right = q->right;
}

/* Compares the numeric column of one input element with the analytic one and
 * keeps the worst element in result. Passes when
 * |analytic - numeric| <= atol + rtol * |numeric|, or when the element sits
 * at a kink. */
static void compare(gradcheck_run *run, int input, size_t element, size_t column,
                    size_t output_index, const ag_quotients *q,
                    ag_gradcheck_result *result)
{
    double analytic = run->jacobian[output_index * run->n_wrt + column];
    double numeric = q->central;

    if (ag_kink_candidate(&run->options, analytic, q) && ag_kink_confirmed(&run->options, q)) {
        note_kink(input, element, output_index, analytic, q, result);
        return;
    }

    double abs_error = fabs(analytic - numeric);
    double tolerance = run->options.atol + run->options.rtol * fabs(numeric);
    bool ok = abs_error <= tolerance; /* false when either value is NaN */
    double ratio = ok ? 0.0 : INFINITY;

    if (tolerance > 0 && isfinite(abs_error))
        ratio = abs_error / tolerance;

    run->any_numeric_nonzero = run->any_numeric_nonzero || numeric != 0.0;
    run->any_failed = run->any_failed || !ok;
    result->n_checked++;
    if (!(ratio > run->worst_ratio))
        return;

    run->worst_ratio = ratio;
    result->worst_input = input;
    result->worst_index = element;
    result->worst_output = output_index;
    result->analytic = analytic;
    result->numeric = numeric;
    result->abs_error = abs_error;
    if (numeric != 0.0)
        result->rel_error = abs_error / fabs(numeric);
    else
        result->rel_error = abs_error == 0.0 ? 0.0 : INFINITY;
}

/* Moves one element of the f64 copy of `input` by +-eps, evaluates f at both
 * points and compares the difference quotients with the analytic column.
 * Where a partial looks like a kink, f is also evaluated at +-eps/2 to tell
 * a kink from curvature. */
static int check_element(gradcheck_run *run, ag_tape *tape, int input,
                         size_t element, size_t column, ag_gradcheck_result *result)
{
    const double eps = run->options.eps;

    if (evaluate_moved(run, tape, input, element, eps, run->plus, result) != 0 ||
        evaluate_moved(run, tape, input, element, -eps, run->minus, result) != 0)
        return -1;

    bool any_candidate = false;
    for (size_t j = 0; j < run->n_out && !any_candidate; j++) {
        ag_quotients q;

        ag_quotients_fill(&q, run->plus[j], run->center[j], run->minus[j], eps);
        any_candidate = ag_kink_candidate(&run->options,
                                          run->jacobian[j * run->n_wrt + column], &q);
    }
    if (any_candidate &&
        (evaluate_moved(run, tape, input, element, eps / 2, run->plus_half, result) != 0 ||
         evaluate_moved(run, tape, input, element, -eps / 2, run->minus_half, result) != 0))
        return -1;

    for (size_t j = 0; j < run->n_out; j++) {
        ag_quotients q;

        ag_quotients_fill(&q, run->plus[j], run->center[j], run->minus[j], eps);
        if (!isfinite(q.central)) {
            char label[64];

            /* f is finite at both points, but their difference overflows. */
            return fail_with(result,
                             "ag_gradcheck: the numeric derivative of output element %zu "
                             "by %s element %zu is %g, because f changes by more than a "
                             "double holds across the step; use a smaller eps",
                             j, input_label(run, input, label, sizeof label), element,
                             q.central);
        }
        if (any_candidate)
            ag_quotients_fill_half(&q, run->plus_half[j], run->center[j],
                                   run->minus_half[j], eps);
        compare(run, input, element, column, j, &q, result);
    }
    return 0;
}

/* Replaces run->work by f64 heap copies of the inputs, none requiring a
 * gradient, evaluates f(x) and checks every column of the Jacobian. */
static int numeric_columns(gradcheck_run *run, ag_gradcheck_result *result)
{
    ag_tape *tape = ag_tape_new();
    int status = -1;
    size_t column = 0;

    for (int i = 0; i < run->n_inputs; i++)
        run->work[i] = NULL;
    if (tape == NULL)
        return fail_keeping_cause(result, "cannot create a tape");

    for (int i = 0; i < run->n_inputs; i++) {
        run->work[i] = ag_tensor_copy(NULL, run->inputs[i], AG_F64);
        if (run->work[i] == NULL) {
            fail_keeping_cause(result, "cannot copy the inputs to f64");
            goto done;
        }
        ag_tensor_set_name(run->work[i], run->inputs[i]->name);
    }
    if (evaluate_f64(run, tape, "at the inputs", run->center, result) != 0 ||
        require_finite_center(run, result) != 0 || require_finite_own(run, result) != 0)
        goto done;

    for (int i = 0; i < run->n_inputs; i++) {
        if (!run->inputs[i]->requires_grad)
            continue;
        for (size_t e = 0; e < run->work[i]->numel; e++) {
            if (check_element(run, tape, i, e, column, result) != 0)
                goto done;
            column++;
        }
    }
    status = 0;

done:
    for (int i = 0; i < run->n_inputs; i++)
        ag_tensor_free(run->work[i]);
    ag_tape_free(tape);
    return status;
}

/* ---- the verdict ---------------------------------------------------------- */

/* Writes " Kinks left out: 2, the first at input 0 "x" element 0 (output
 * 0), one-sided 0 and 1, analytic 0." (nothing without kinks), short so
 * that the verdict fits the message. */
static void describe_kinks(const gradcheck_run *run, const ag_gradcheck_result *result,
                           char *buf, size_t size)
{
    char label[64];

    buf[0] = '\0';
    if (result->n_kinks == 0)
        return;
    snprintf(buf, size,
             " Kinks left out: %zu, the first at %s element %zu (output %zu), one-sided "
             "%.4g and %.4g, analytic %.4g.",
             result->n_kinks, input_label(run, result->kink_input, label, sizeof label),
             result->kink_index, result->kink_output, result->kink_left,
             result->kink_right, result->kink_analytic);
}

static void write_verdict(const gradcheck_run *run, ag_gradcheck_result *result)
{
    char label[64] = "";
    char kinks[224];
    const ag_gradcheck_options *o = &run->options;
    size_t n_compared = result->n_checked - result->n_kinks;

    if (result->worst_input >= 0)
        input_label(run, result->worst_input, label, sizeof label);
    describe_kinks(run, result, kinks, sizeof kinks);

    if (!run->any_analytic_nonzero && run->any_numeric_nonzero) {
        result->passed = false;
        snprintf(result->message, sizeof result->message,
                 "ag_gradcheck: failed because every analytic partial is zero but "
                 "the function changes (numeric %.6g at %s element %zu, output "
                 "element %zu). A backward rule adds no gradient.",
                 result->numeric, label, result->worst_index, result->worst_output);
    } else if (run->any_failed) {
        result->passed = false;
        snprintf(result->message, sizeof result->message,
                 "ag_gradcheck: failed at %s element %zu, output element %zu: "
                 "analytic %.9g, numeric %.9g, abs error %.3g > atol %g + rtol %g * "
                 "|numeric|",
                 label, result->worst_index, result->worst_output, result->analytic,
                 result->numeric, result->abs_error, o->atol, o->rtol);
    } else if (n_compared == 0) {
        char text[512];

        result->passed = true;
        snprintf(text, sizeof text,
                 "ag_gradcheck: passed: every partial is at a kink, none to compare.%s",
                 kinks);
        set_message(result, text);
    } else {
        char text[512];

        result->passed = true;
        snprintf(text, sizeof text,
                 "ag_gradcheck: passed: %zu partial%s within atol %g + rtol %g * "
                 "|numeric|. The worst is %s element %zu, output element %zu, abs "
                 "error %.3g.%s",
                 n_compared, n_compared == 1 ? "" : "s", o->atol, o->rtol, label, result->worst_index,
                 result->worst_output, result->abs_error, kinks);
        set_message(result, text);
    }
}

/* ---- entry point ---------------------------------------------------------- */

int ag_gradcheck(ag_function f, void *user, int n_inputs, ag_tensor *const *inputs,
                 const ag_gradcheck_options *options, ag_gradcheck_result *result)
{
    if (result != NULL) {
        memset(result, 0, sizeof *result);
        result->worst_input = -1;
        result->kink_input = -1;
    }
    if (check_arguments(f, n_inputs, inputs, options, result) != 0) {
        if (result != NULL)
            set_message(result, ag_error());
        return -1;
    }

    gradcheck_run run = {
        .f = f,
        .user = user,
        .n_inputs = n_inputs,
        .inputs = inputs,
        .options = options != NULL ? *options : ag_gradcheck_defaults(),
        .worst_ratio = -1.0,
    };
    for (int i = 0; i < n_inputs; i++) {
        if (inputs[i]->requires_grad)
            run.n_wrt += inputs[i]->numel;
    }

    int status = -1;
    run.work = ag_heap_alloc((size_t)n_inputs * sizeof *run.work);
    if (run.work == NULL) {
        ag_set_error("out of memory");
        fail_keeping_cause(result, "cannot allocate the input list");
    } else if (analytic_jacobian(&run, result) == 0 &&
               numeric_columns(&run, result) == 0) {
        write_verdict(&run, result);
        status = 0;
    }

    ag_heap_free(run.work);
    ag_heap_free(run.jacobian);
    ag_heap_free(run.center);
    return status;
}
