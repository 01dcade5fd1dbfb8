/*
 * The Taylor-remainder test. For a direction v,
 *   f(x + h v) = f(x) + h <grad f(x), v> + O(h^2),
 * so r(h) = |f(x + h v) - f(x) - h <g, v>| falls as h^2 when g is the
 * gradient and only as h when it is not. The slope of log r against log h
 * over small steps measures which, without any tolerance on g itself.
 * Roundoff puts a floor under r at tiny h, so the slope is fitted over the
 * steps just above it.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define FIRST_EXPONENT 1 /* the first step is h = 2^-1 */
#define MAX_FIT_STEPS 8  /* the fit spans at most a factor 2^7 in h */
#define MIN_FIT_STEPS 3
/* A remainder counts as measured when it is this many times the estimated
 * roundoff of f(x + h v) - f(x), so that noise moves the fitted slope by
 * under 1%. The roundoff of h <g, v> grows with h like an O(h) error, so a
 * smaller margin already bounds its pull on the slope to about 0.1. */
#define ABOVE_ROUNDING 100.0
#define ABOVE_GRADIENT_ROUNDING 10.0
/* r falling by more than this factor in one halving of h follows no power
 * law of interest: the steps have reached a region where f is linear. */
#define ABRUPT_DROP 1024.0
#define ORDER_LOW 1.8
#define ORDER_HIGH 2.2

typedef struct taylor_run {
    ag_function f;
    void *user;
    int n_inputs;
    ag_tensor *const *inputs;
    ag_rng *rng;

    size_t n_wrt;       /* input elements that require a gradient */
    size_t n_out;       /* output elements */
    double *gradient;   /* n_wrt values from the tape */
    double *direction;  /* v, unit length */
    double *projection; /* u, n_out values, or NULL for a one-element output */
    double gradient_rounding; /* unit roundoff of the gradient's dtype */
    double abs_directional;   /* sum |g_i v_i|, for the rounding level */
    ag_tensor **work;   /* f64 copies of the inputs */
} taylor_run;

/* ---- arguments ------------------------------------------------------------ */

static int check_arguments(ag_function f, int n_inputs, ag_tensor *const *inputs,
                           const ag_taylor_result *result)
{
    if (f == NULL) {
        ag_set_error("ag_taylor_test: the function is NULL");
        return -1;
    }
    if (inputs == NULL) {
        ag_set_error("ag_taylor_test: inputs is NULL");
        return -1;
    }
    if (result == NULL) {
        ag_set_error("ag_taylor_test: result is NULL");
        return -1;
    }
    if (n_inputs < 1) {
        ag_set_error("ag_taylor_test: n_inputs is %d; pass at least one input", n_inputs);
        return -1;
    }
    for (int i = 0; i < n_inputs; i++) {
        if (inputs[i] == NULL) {
            ag_set_error("ag_taylor_test: input %d is NULL", i);
            return -1;
        }
    }
    return 0;
}

/* Copies text into result->message, cut to fit. */
static void set_message(ag_taylor_result *result, const char *text)
{
    size_t length = strlen(text);

    if (length >= sizeof result->message)
        length = sizeof result->message - 1;
    memcpy(result->message, text, length);
    result->message[length] = '\0';
}

/* Sets the error and the message to "ag_taylor_test: <context>: <cause>",
 * the cause being the current error. */
static int fail_keeping_cause(ag_taylor_result *result, const char *context)
{
    char cause[256];
    char full[512];

    /* Copy the cause first: ag_set_error overwrites the buffer it lives in. */
    snprintf(cause, sizeof cause, "%s", ag_error() != NULL ? ag_error() : "no message set");
    snprintf(full, sizeof full, "ag_taylor_test: %s: %s", context, cause);
    ag_set_error("%s", full);
    set_message(result, full);
    return -1;
}

/* ---- the gradient --------------------------------------------------------- */

/* Reads the gradient of each input that requires one into run->gradient. */
static void read_gradient(taylor_run *run, ag_tensor *const *copies)
{
    size_t offset = 0;

    for (int i = 0; i < run->n_inputs; i++) {
        if (!run->inputs[i]->requires_grad)
            continue;

        const ag_tensor *grad = ag_tensor_grad(copies[i]);
        for (size_t e = 0; e < copies[i]->numel; e++)
            run->gradient[offset + e] = grad == NULL ? 0.0 : ag_tensor_get(grad, e);
        offset += copies[i]->numel;

        double rounding = copies[i]->dtype == AG_F32 ? FLT_EPSILON : DBL_EPSILON;
        run->gradient_rounding = fmax(run->gradient_rounding, rounding);
    }
}

/* Runs f at the inputs' own dtype and one backward pass, seeded with a random
 * u when the output has several elements. Fills run->gradient and
 * run->projection. */
static int tape_gradient(taylor_run *run, ag_taylor_result *result)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor **copies = ag_calloc((size_t)run->n_inputs, sizeof *copies);
    int status = -1;

    if (tape == NULL || copies == NULL) {
        ag_set_error("out of memory");
        fail_keeping_cause(result, "cannot set up the gradient");
        goto done;
    }
    for (int i = 0; i < run->n_inputs; i++) {
        const ag_tensor *input = run->inputs[i];

        copies[i] = ag_tensor_copy(tape, input, input->dtype);
        if (copies[i] == NULL ||
            ag_tensor_set_requires_grad(copies[i], input->requires_grad) != 0) {
            fail_keeping_cause(result, "cannot copy the inputs");
            goto done;
        }
        ag_tensor_set_name(copies[i], input->name);
    }

    ag_error_clear();
    ag_tensor *output = run->f(tape, copies, run->n_inputs, run->user);
    if (output == NULL) {
        fail_keeping_cause(result, "the function failed at the inputs' dtype");
        goto done;
    }
    run->n_out = output->numel;
    if (run->n_out == 0) {
        ag_set_error("the output is empty");
        fail_keeping_cause(result, "nothing to test");
        goto done;
    }

    ag_tensor *seed = NULL;
    if (run->n_out > 1) {
        run->projection = ag_calloc(run->n_out, sizeof(double));
        seed = ag_zeros(tape, output->dtype, output->ndim, output->shape);
        if (run->projection == NULL || seed == NULL) {
            fail_keeping_cause(result, "cannot allocate the projection");
            goto done;
        }
        /* Rounded to the output's dtype, so both sides use the same u. */
        for (size_t j = 0; j < run->n_out; j++) {
            ag_tensor_set(seed, j, ag_rng_normal(run->rng));
            run->projection[j] = ag_tensor_get(seed, j);
        }
    }
    if (output->requires_grad && ag_backward(tape, output, seed) != 0) {
        fail_keeping_cause(result, "backward failed");
        goto done;
    }
    read_gradient(run, copies);
    status = 0;

done:
    ag_heap_free(copies);
    ag_tape_free(tape);
    return status;
}

/* Draws v from the normal distribution and scales it to unit length. */
static void draw_direction(taylor_run *run)
{
    double norm = 0.0;

    for (size_t k = 0; k < run->n_wrt; k++) {
        run->direction[k] = ag_rng_normal(run->rng);
        norm += run->direction[k] * run->direction[k];
    }
    norm = sqrt(norm);
    for (size_t k = 0; k < run->n_wrt; k++)
        run->direction[k] /= norm;
}

/* ---- evaluating f in f64 --------------------------------------------------- */

/* Sets the f64 copies to x + h v and evaluates <u, f>, or f for a
 * one-element output. */
static int evaluate_at(taylor_run *run, ag_tape *tape, double h, double *value,
                       ag_taylor_result *result)
{
    size_t offset = 0;

    for (int i = 0; i < run->n_inputs; i++) {
        const ag_tensor *input = run->inputs[i];
        double *x = run->work[i]->data;

        if (!input->requires_grad)
            continue;
        for (size_t e = 0; e < input->numel; e++)
            x[e] = ag_tensor_get(input, e) + h * run->direction[offset + e];
        offset += input->numel;
    }

    ag_tape_reset(tape);
    ag_error_clear();
    ag_tensor *output = run->f(tape, run->work, run->n_inputs, run->user);
    if (output == NULL) {
        char context[96];

        snprintf(context, sizeof context, "the function failed in f64 at step h = %g", h);
        return fail_keeping_cause(result, context);
    }
    if (output->numel != run->n_out) {
        ag_set_error("the output has %zu elements in f64 but %zu at the inputs' dtype",
                     output->numel, run->n_out);
        return fail_keeping_cause(result, "the function must give one shape for both");
    }

    double sum = 0.0;
    for (size_t j = 0; j < run->n_out; j++) {
        double y = ag_tensor_get(output, j);

        sum += run->projection == NULL ? y : run->projection[j] * y;
    }
    *value = sum;
    return 0;
}

/* Fills the table of r(h) and marks the rows whose r is above the rounding
 * level. The level adds the roundoff of f(x + h v) - f(x) in f64 to that
 * of h <g, v> at the gradient's dtype. */
static int fill_table(taylor_run *run, bool *measured, ag_taylor_result *result)
{
    ag_tape *tape = ag_tape_new();
    int status = -1;

    if (tape == NULL) {
        ag_set_error("out of memory");
        return fail_keeping_cause(result, "cannot create a tape");
    }
    if (evaluate_at(run, tape, 0.0, &result->value, result) != 0)
        goto done;
    if (!isfinite(result->value)) {
        snprintf(result->message, sizeof result->message,
                 "ag_taylor_test: f(x) is %g; the test needs a finite value at the inputs",
                 result->value);
        ag_set_error("%s", result->message);
        goto done;
    }

    for (int k = 0; k < AG_TAYLOR_STEPS; k++) {
        double h = ldexp(1.0, -(k + FIRST_EXPONENT));
        double moved;

        if (evaluate_at(run, tape, h, &moved, result) != 0)
            goto done;
        double r = fabs(moved - result->value - h * result->directional);
        double value_rounding = 64.0 * DBL_EPSILON * (fabs(result->value) + fabs(moved));
        double gradient_rounding = 4.0 * h * run->abs_directional * run->gradient_rounding;

        result->h[k] = h;
        result->remainder[k] = isfinite(r) ? r : NAN;
        measured[k] = isfinite(r) && r > ABOVE_ROUNDING * value_rounding +
                                             ABOVE_GRADIENT_ROUNDING * gradient_rounding;
    }
    result->n_steps = AG_TAYLOR_STEPS;
    status = 0;

done:
    ag_tape_free(tape);
    return status;
}

/* ---- the verdict ----------------------------------------------------------- */

/* Least-squares slope of log2 r against log2 h over rows first..last. */
static double fit_order(const ag_taylor_result *result, int first, int last)
{
    double n = 0.0;
    double sx = 0.0;
    double sy = 0.0;
    double sxx = 0.0;
    double sxy = 0.0;

    for (int k = first; k <= last; k++) {
        double x = log2(result->h[k]);
        double y = log2(result->remainder[k]);

        n += 1.0;
        sx += x;
        sy += y;
        sxx += x * x;
        sxy += x * y;
    }
    return (n * sxy - sx * sy) / (n * sxx - sx * sx);
}

static int exponent(int row) { return row + FIRST_EXPONENT; }

static void write_verdict(const bool *measured, ag_taylor_result *result)
{
    int last = AG_TAYLOR_STEPS - 1;

    while (last >= 0 && !measured[last])
        last--;

    if (last < 0) {
        bool all_zero = true;
        for (int k = 0; k < AG_TAYLOR_STEPS; k++)
            all_zero = all_zero && result->remainder[k] == 0.0;
        result->passed = true;
        snprintf(result->message, sizeof result->message,
                 "ag_taylor_test: passed: r(h) is %s for every h, so f is linear along v: "
                 "the gradient term is exact and no order can be measured.",
                 all_zero ? "exactly 0" : "at the rounding level");
        return;
    }

    /* Below a kink's distance a piecewise-linear f is linear along v. */
    if (last + 1 < AG_TAYLOR_STEPS &&
        result->remainder[last + 1] < result->remainder[last] / ABRUPT_DROP) {
        result->passed = true;
        snprintf(result->message, sizeof result->message,
                 "ag_taylor_test: passed: r(h) drops from %.3g to %.3g between h = 2^-%d "
                 "and 2^-%d, so f is linear along v below that step (piecewise linear, "
                 "as relu): the gradient term is exact there.",
                 result->remainder[last], result->remainder[last + 1], exponent(last),
                 exponent(last + 1));
        return;
    }

    int first = last;
    while (first > 0 && measured[first - 1] && last - first + 1 < MAX_FIT_STEPS)
        first--;
    if (last - first + 1 < MIN_FIT_STEPS) {
        result->passed = false;
        snprintf(result->message, sizeof result->message,
                 "ag_taylor_test: inconclusive: only %d consecutive steps down to h = "
                 "2^-%d have r above the rounding level; %d are needed to fit an order",
                 last - first + 1, exponent(last), MIN_FIT_STEPS);
        return;
    }

    result->fit_first = first;
    result->fit_last = last;
    result->order = fit_order(result, first, last);
    result->passed = result->order >= ORDER_LOW && result->order <= ORDER_HIGH;

    double first_order_error = result->remainder[last] / result->h[last];
    if (result->passed)
        snprintf(result->message, sizeof result->message,
                 "ag_taylor_test: passed: r(h) falls as h^%.3f over h = 2^-%d ... 2^-%d, "
                 "as it does when the gradient is right (order 2).",
                 result->order, exponent(first), exponent(last));
    else if (result->order > ORDER_HIGH)
        snprintf(result->message, sizeof result->message,
                 "ag_taylor_test: failed: r(h) falls as h^%.3f over h = 2^-%d ... 2^-%d, "
                 "above 2.2: f's second derivative along v may vanish at x; try another "
                 "point or direction.",
                 result->order, exponent(first), exponent(last));
    else
        snprintf(result->message, sizeof result->message,
                 "ag_taylor_test: failed: r(h) falls as h^%.3f over h = 2^-%d ... 2^-%d, "
                 "where a right gradient gives h^2: <grad f, v> is off by about %.3g "
                 "(r/h at the smallest step), or f has a kink at x.",
                 result->order, exponent(first), exponent(last), first_order_error);
}

/* ---- entry point ------------------------------------------------------------ */

int ag_taylor_test(ag_function f, void *user, int n_inputs, ag_tensor *const *inputs,
                   ag_rng *rng, ag_taylor_result *result)
{
    if (result != NULL) {
        memset(result, 0, sizeof *result);
        result->order = NAN;
        result->fit_first = -1;
        result->fit_last = -1;
    }
    if (check_arguments(f, n_inputs, inputs, result) != 0) {
        if (result != NULL)
            set_message(result, ag_error());
        return -1;
    }

    ag_rng fixed = ag_rng_new(0);
    taylor_run run = {
        .f = f,
        .user = user,
        .n_inputs = n_inputs,
        .inputs = inputs,
        .rng = rng != NULL ? rng : &fixed,
    };
    for (int i = 0; i < n_inputs; i++) {
        if (inputs[i]->requires_grad)
            run.n_wrt += inputs[i]->numel;
    }
    if (run.n_wrt == 0) {
        snprintf(result->message, sizeof result->message,
                 "ag_taylor_test: no input element requires a gradient, so there is no "
                 "direction to test; mark the inputs with ag_tensor_set_requires_grad");
        ag_set_error("%s", result->message);
        return -1;
    }

    int status = -1;
    bool measured[AG_TAYLOR_STEPS] = {false};
    run.gradient = ag_calloc(run.n_wrt, sizeof(double));
    run.direction = ag_calloc(run.n_wrt, sizeof(double));
    run.work = ag_calloc((size_t)n_inputs, sizeof *run.work);
    if (run.gradient == NULL || run.direction == NULL || run.work == NULL) {
        ag_set_error("out of memory for %zu input elements", run.n_wrt);
        fail_keeping_cause(result, "cannot allocate the direction");
        goto done;
    }
    if (tape_gradient(&run, result) != 0)
        goto done;

    draw_direction(&run);
    for (size_t k = 0; k < run.n_wrt; k++) {
        result->directional += run.gradient[k] * run.direction[k];
        run.abs_directional += fabs(run.gradient[k] * run.direction[k]);
    }
    for (int i = 0; i < n_inputs; i++) {
        run.work[i] = ag_tensor_copy(NULL, inputs[i], AG_F64);
        if (run.work[i] == NULL) {
            fail_keeping_cause(result, "cannot copy the inputs to f64");
            goto done;
        }
        ag_tensor_set_name(run.work[i], inputs[i]->name);
    }
    if (fill_table(&run, measured, result) != 0)
        goto done;

    write_verdict(measured, result);
    status = 0;

done:
    for (int i = 0; run.work != NULL && i < n_inputs; i++)
        ag_tensor_free(run.work[i]);
    ag_heap_free(run.work);
    ag_heap_free(run.gradient);
    ag_heap_free(run.direction);
    ag_heap_free(run.projection);
    return status;
}
