/*
 * The second-order check. With a fixed seed u of f's output shape, let
 * g(x) = ag_grad(f(x), u, create_graph), the gradient built by the
 * backward_graph rules. Two comparisons cover the two ways such a rule can be
 * wrong:
 *  1. g against the gradient of the backward kernels at the same point: a
 *     rule that computes a wrong value;
 *  2. ag_gradcheck of x -> g(x), one input's gradient at a time: the tape's
 *     derivatives of g (a reverse sweep through the recorded rules) against
 *     central differences of g. A rule that gets the value right but records
 *     the wrong graph, or none, fails here.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* Everything the gradient function needs besides its inputs. */
typedef struct gradient_function {
    ag_function f;
    void *user;
    int n_inputs;
    const bool *differentiate; /* per input: its original requires a gradient */
    const double *seed;        /* u, one value per output element */
    size_t n_out;
    int gradient_input;        /* the input whose gradient is returned */
} gradient_function;

/* Seed of the pseudo-random u, fixed so that a check is repeatable. */
#define SEED_U 0x5eedu

/* ---- the gradient as a function ------------------------------------------- */

/* Runs f on the inputs and makes the seed u in the output's dtype. Inputs
 * that ag_gradcheck hands over without a gradient (its numeric evaluations)
 * and that are differentiated by are replaced by leaf copies that require
 * one, which changes no value. work receives the inputs f was given. */
static ag_tensor *evaluate(const gradient_function *gf, ag_tape *tape,
                           ag_tensor *const *inputs, ag_tensor **work,
                           ag_tensor **seed)
{
    for (int i = 0; i < gf->n_inputs; i++) {
        work[i] = inputs[i];
        if (gf->differentiate[i] && !ag_tensor_requires_grad(inputs[i])) {
            work[i] = ag_tensor_copy(tape, inputs[i], ag_tensor_dtype(inputs[i]));
            if (work[i] == NULL || ag_tensor_set_requires_grad(work[i], true) != 0)
                return NULL;
        }
    }

    ag_tensor *output = gf->f(tape, work, gf->n_inputs, gf->user);
    if (output == NULL)
        return NULL;
    if (ag_tensor_numel(output) != gf->n_out) {
        ag_set_error("the function's output has %zu elements here but %zu at the "
                     "first evaluation; it must give one shape for every input",
                     ag_tensor_numel(output), gf->n_out);
        return NULL;
    }

    *seed = ag_tensor_from_doubles(tape, ag_tensor_dtype(output), ag_tensor_ndim(output),
                                   ag_tensor_shape(output), gf->seed);
    return *seed == NULL ? NULL : output;
}

/* The ag_function checked in step 2: g(x) for input `gradient_input`. */
static ag_tensor *gradient_of_input(ag_tape *tape, ag_tensor *const *inputs,
                                    int n_inputs, void *user)
{
    const gradient_function *gf = user;
    ag_tensor **work = ag_tape_alloc(tape, (size_t)n_inputs * sizeof *work);
    ag_tensor *seed = NULL;
    ag_tensor *grad = NULL;

    if (work == NULL)
        return NULL;
    ag_tensor *output = evaluate(gf, tape, inputs, work, &seed);
    if (output == NULL ||
        ag_grad(tape, output, seed, 1, &work[gf->gradient_input], &grad, true) != 0)
        return NULL;
    return grad;
}

/* ---- comparisons ---------------------------------------------------------- */

typedef struct check_state {
    ag_gradcheck_options options;
    bool failed;
    double worst_ratio;  /* largest error / tolerance so far */
    int worst_step;      /* 1 or 2: the step of the worst comparison */
    int worst_gradient;  /* step 2: the input whose gradient contains the worst */
    char cause[256];     /* step 2: ag_gradcheck's verdict on that gradient */
} check_state;

/* Error relative to the tolerance atol + rtol |reference|: at most 1 passes.
 * NaN against NaN, or an infinity against the same infinity, agrees, because
 * the two computations of one gradient met the same singularity. Any other
 * NaN counts as infinitely far. */
static double tolerance_ratio(const ag_gradcheck_options *o, double value,
                              double reference)
{
    if ((isnan(value) && isnan(reference)) || (isinf(value) && value == reference))
        return 0.0;

    double error = fabs(value - reference);
    double tolerance = o->atol + o->rtol * fabs(reference);

    if (!(error <= tolerance))
        return tolerance > 0 && isfinite(error) ? error / tolerance : INFINITY;
    return tolerance > 0 ? error / tolerance : 0.0;
}

/* Keeps the comparison in result when it is the worst so far, and returns
 * whether it was. */
static bool keep_worst(check_state *state, ag_gradcheck_result *result, double ratio,
                       int input, size_t element, size_t output, double analytic,
                       double numeric)
{
    if (!(ratio > state->worst_ratio))
        return false;
    state->worst_ratio = ratio;
    result->worst_input = input;
    result->worst_index = element;
    result->worst_output = output;
    result->analytic = analytic;
    result->numeric = numeric;
    result->abs_error = fabs(analytic - numeric);
    if (numeric != 0.0)
        result->rel_error = result->abs_error / fabs(numeric);
    else
        result->rel_error = result->abs_error == 0.0 ? 0.0 : INFINITY;
    return true;
}

/* Step 1: g from the backward_graph rules against the kernels' gradient of
 * u . f at the inputs, on a private tape, element by element. */
static int compare_first_order(gradient_function *gf, ag_tensor *const *inputs,
                               check_state *state, ag_gradcheck_result *result)
{
    ag_tape *tape = ag_tape_new();
    const int n = gf->n_inputs;
    int status = -1;

    if (tape == NULL)
        return -1;

    /* Copies with the inputs' gradient marks, as ag_gradcheck makes. */
    ag_tensor **copies = ag_tape_alloc(tape, 4 * (size_t)n * sizeof *copies);
    if (copies == NULL)
        goto done;
    ag_tensor **work = copies + n;
    ag_tensor **built = copies + 2 * n;
    ag_tensor **kernel = copies + 3 * n;
    for (int i = 0; i < n; i++) {
        copies[i] = ag_tensor_copy(tape, inputs[i], ag_tensor_dtype(inputs[i]));
        if (copies[i] == NULL ||
            ag_tensor_set_requires_grad(copies[i], gf->differentiate[i]) != 0)
            goto done;
    }

    ag_tensor *seed = NULL;
    ag_tensor *output = evaluate(gf, tape, copies, work, &seed);
    if (output == NULL)
        goto done;

    /* work is free again: it now lists the differentiated inputs. */
    int n_wrt = 0;
    for (int i = 0; i < n; i++) {
        if (gf->differentiate[i])
            work[n_wrt++] = copies[i];
    }
    if (ag_grad(tape, output, seed, n_wrt, work, built, true) != 0 ||
        ag_grad(tape, output, seed, n_wrt, work, kernel, false) != 0)
        goto done;

    size_t offset = 0;
    int w = 0;
    for (int i = 0; i < n; i++) {
        if (!gf->differentiate[i])
            continue;
        for (size_t e = 0; e < ag_tensor_numel(built[w]); e++) {
            double value = ag_tensor_get(built[w], e);
            double reference = ag_tensor_get(kernel[w], e);
            double ratio = tolerance_ratio(&state->options, value, reference);

            state->failed = state->failed || ratio > 1.0;
            if (keep_worst(state, result, ratio, i, e, offset + e, value, reference))
                state->worst_step = 1;
            result->n_checked++;
        }
        offset += ag_tensor_numel(built[w]);
        w++;
    }
    status = 0;

done:
    ag_tape_free(tape);
    return status;
}

/* Step 2 for one input's gradient: ag_gradcheck of x -> g(x)[gradient_input].
 * offset is where that gradient starts in the concatenated gradient. */
static int check_second_order(gradient_function *gf, int gradient_input, size_t offset,
                              ag_tensor *const *inputs, check_state *state,
                              ag_gradcheck_result *result)
{
    ag_gradcheck_result sub;

    gf->gradient_input = gradient_input;
    if (ag_gradcheck(gradient_of_input, gf, gf->n_inputs, inputs, &state->options,
                     &sub) != 0)
        return -1;
    result->n_checked += sub.n_checked;
    if (sub.worst_input < 0)
        return 0; /* nothing compared */

    /* A failure within tolerance is ag_gradcheck's all-zero verdict (no
     * recorded derivative at all), which ranks above every other. */
    double ratio = tolerance_ratio(&state->options, sub.analytic, sub.numeric);
    if (!sub.passed && !(ratio > 1.0))
        ratio = INFINITY;

    state->failed = state->failed || !sub.passed;
    if (keep_worst(state, result, ratio, sub.worst_input, sub.worst_index,
                   offset + sub.worst_output, sub.analytic, sub.numeric)) {
        const char *text = sub.message;

        if (strncmp(text, "ag_gradcheck: ", 14) == 0)
            text += 14;
        state->worst_step = 2;
        state->worst_gradient = gradient_input;
        snprintf(state->cause, sizeof state->cause, "%.*s",
                 (int)sizeof state->cause - 1, text);
    }
    return 0;
}

/* ---- arguments and verdict ------------------------------------------------- */

static int check_arguments(ag_function f, int n_inputs, ag_tensor *const *inputs,
                           const ag_gradcheck_options *options,
                           ag_gradcheck_result *result)
{
    if (f == NULL) {
        ag_set_error("ag_gradgradcheck: the function is NULL");
        return -1;
    }
    if (inputs == NULL || result == NULL) {
        ag_set_error("ag_gradgradcheck: %s is NULL",
                     inputs == NULL ? "inputs; pass an array of n_inputs tensors"
                                    : "result; pass a result to fill");
        return -1;
    }
    if (n_inputs < 1) {
        ag_set_error("ag_gradgradcheck: n_inputs is %d; pass at least one input",
                     n_inputs);
        return -1;
    }

    bool any_requires_grad = false;
    for (int i = 0; i < n_inputs; i++) {
        if (inputs[i] == NULL) {
            ag_set_error("ag_gradgradcheck: input %d is NULL", i);
            return -1;
        }
        any_requires_grad = any_requires_grad || ag_tensor_requires_grad(inputs[i]);
    }
    if (!any_requires_grad) {
        ag_set_error("ag_gradgradcheck: no input requires a gradient, so there is "
                     "nothing to check; mark the inputs to check with "
                     "ag_tensor_set_requires_grad");
        return -1;
    }

    if (options != NULL &&
        !(options->eps > 0 && isfinite(options->eps) && options->atol >= 0 &&
          options->rtol >= 0)) {
        ag_set_error("ag_gradgradcheck: invalid options eps %g, atol %g, rtol %g; "
                     "eps must be positive and finite, atol and rtol nonnegative",
                     options->eps, options->atol, options->rtol);
        return -1;
    }
    return 0;
}

/* Runs f once on copies to learn the number of output elements, and
 * rejects a non-finite f(x). */
static int count_outputs(ag_function f, void *user, int n_inputs,
                         ag_tensor *const *inputs, size_t *n_out)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor **copies = tape == NULL ? NULL
                                      : ag_tape_alloc(tape, (size_t)n_inputs * sizeof *copies);
    int status = -1;

    if (copies == NULL)
        goto done;
    for (int i = 0; i < n_inputs; i++) {
        copies[i] = ag_tensor_copy(tape, inputs[i], ag_tensor_dtype(inputs[i]));
        if (copies[i] == NULL)
            goto done;
    }
    ag_error_clear();
    ag_tensor *output = f(tape, copies, n_inputs, user);
    if (output == NULL)
        goto done;

    /* Every derivative through a NaN or an infinity is NaN, which would
     * blame a correct rule. */
    for (size_t j = 0; j < ag_tensor_numel(output); j++) {
        double value = ag_tensor_get(output, j);

        if (!isfinite(value)) {
            ag_set_error("f(x) is %g at output element %zu, but the check needs a "
                         "finite f; check the second derivatives at a point where f is "
                         "finite",
                         isnan(value) ? NAN : value, j);
            goto done;
        }
    }
    *n_out = ag_tensor_numel(output);
    status = 0;

done:
    ag_tape_free(tape);
    return status;
}

static void write_verdict(const check_state *state, ag_gradcheck_result *result)
{
    const ag_gradcheck_options *o = &state->options;

    result->passed = !state->failed;
    if (result->passed) {
        snprintf(result->message, sizeof result->message,
                 "ag_gradgradcheck: passed: the built gradient matches the backward "
                 "kernels, and its derivatives match central differences; %zu "
                 "comparisons within atol %g + rtol %g * |reference|, worst abs "
                 "error %.3g",
                 result->n_checked, o->atol, o->rtol, result->abs_error);
    } else if (state->worst_step == 1) {
        snprintf(result->message, sizeof result->message,
                 "ag_gradgradcheck: failed: element %zu of the gradient of input %d "
                 "is %.9g when built with create_graph but %.9g from the backward "
                 "kernels; a backward_graph rule computes a wrong value",
                 result->worst_index, result->worst_input, result->analytic,
                 result->numeric);
    } else {
        snprintf(result->message, sizeof result->message,
                 "ag_gradgradcheck: the derivatives of the gradient of input %d %.180s",
                 state->worst_gradient, state->cause);
    }
}

/* Sets the error and result->message to "ag_gradgradcheck: <context>: <cause>". */
static int fail_keeping_cause(ag_gradcheck_result *result, const char *context)
{
    char cause[256];

    snprintf(cause, sizeof cause, "%s", ag_error() != NULL ? ag_error() : "no message set");
    ag_set_error("ag_gradgradcheck: %s: %s", context, cause);
    snprintf(result->message, sizeof result->message, "%s", ag_error());
    return -1;
}

/* ---- entry point ---------------------------------------------------------- */

int ag_gradgradcheck(ag_function f, void *user, int n_inputs, ag_tensor *const *inputs,
                     const ag_gradcheck_options *options, ag_gradcheck_result *result)
{
    if (result != NULL) {
        memset(result, 0, sizeof *result);
        result->worst_input = -1;
    }
    if (check_arguments(f, n_inputs, inputs, options, result) != 0) {
        if (result != NULL)
            snprintf(result->message, sizeof result->message, "%s", ag_error());
        return -1;
    }

    check_state state = {
        .options = options != NULL ? *options : ag_gradcheck_defaults(),
        .worst_ratio = -1.0,
    };
    gradient_function gf = {.f = f, .user = user, .n_inputs = n_inputs};
    bool *differentiate = ag_heap_alloc((size_t)n_inputs * sizeof *differentiate);
    double *seed = NULL;
    int status = -1;

    if (differentiate == NULL) {
        ag_set_error("out of memory");
        fail_keeping_cause(result, "cannot allocate the input flags");
        goto done;
    }
    for (int i = 0; i < n_inputs; i++)
        differentiate[i] = ag_tensor_requires_grad(inputs[i]);
    gf.differentiate = differentiate;

    if (count_outputs(f, user, n_inputs, inputs, &gf.n_out) != 0) {
        fail_keeping_cause(result, "evaluating f at the inputs");
        goto done;
    }

    /* u: 1 for a one-element output; otherwise values in [0.5, 1.5), so that
     * every output element counts and none nearly vanishes. */
    seed = ag_heap_alloc((gf.n_out > 0 ? gf.n_out : 1) * sizeof *seed);
    if (seed == NULL) {
        ag_set_error("out of memory");
        fail_keeping_cause(result, "cannot allocate the seed");
        goto done;
    }
    ag_rng rng = ag_rng_new(SEED_U);
    for (size_t j = 0; j < gf.n_out; j++)
        seed[j] = gf.n_out == 1 ? 1.0 : 0.5 + ag_rng_uniform(&rng);
    gf.seed = seed;

    if (compare_first_order(&gf, inputs, &state, result) != 0) {
        fail_keeping_cause(result, "building the gradient failed");
        goto done;
    }

    size_t offset = 0;
    for (int i = 0; i < n_inputs; i++) {
        if (!differentiate[i])
            continue;
        if (check_second_order(&gf, i, offset, inputs, &state, result) != 0) {
            char context[64];

            snprintf(context, sizeof context, "checking the gradient of input %d", i);
            fail_keeping_cause(result, context);
            goto done;
        }
        offset += ag_tensor_numel(inputs[i]);
    }
    write_verdict(&state, result);
    status = 0;

done:
    ag_heap_free(differentiate);
    ag_heap_free(seed);
    return status;
}
