/* The gradient checker: passes correct ops at both dtypes, catches a wrong
 * and a missing backward rule, names the worst input and element with the
 * right errors, and leaves its inputs alone. Uses only public API. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_helpers.h"

/* ---- custom ops with known faults ----------------------------------------- */

static int same_shape_rule(const ag_record *rec, ag_dtype *dtype, int *ndim, size_t *shape)
{
    const ag_tensor *a = rec->inputs[0];

    if (rec->n_inputs == 2 && !ag_tensor_same_shape(a, rec->inputs[1])) {
        ag_set_error("ag_%s: inputs differ in shape", rec->op->name);
        return -1;
    }
    *dtype = ag_tensor_dtype(a);
    *ndim = ag_tensor_ndim(a);
    memcpy(shape, ag_tensor_shape(a), (size_t)*ndim * sizeof *shape);
    return 0;
}

/* y = a * b elementwise. */
static int mul_forward(ag_tape *tape, ag_record *rec)
{
    (void)tape;
    for (size_t i = 0; i < ag_tensor_numel(rec->output); i++)
        ag_tensor_set(rec->output, i,
                      ag_tensor_get(rec->inputs[0], i) * ag_tensor_get(rec->inputs[1], i));
    return 0;
}

/* da = dy * b is right, but db = 1.5 * dy * a is off by a factor of 1.5. */
static int mul_wrong_b_backward(ag_tape *tape, ag_record *rec)
{
    ag_tensor *dy = ag_tensor_grad(rec->output);
    ag_tensor *da = ag_input_grad(tape, rec, 0);
    ag_tensor *db = ag_input_grad(tape, rec, 1);

    for (size_t i = 0; i < ag_tensor_numel(dy); i++) {
        double g = ag_tensor_get(dy, i);
        double a = ag_tensor_get(rec->inputs[0], i);
        double b = ag_tensor_get(rec->inputs[1], i);

        if (da != NULL)
            ag_tensor_set(da, i, ag_tensor_get(da, i) + g * b);
        if (db != NULL)
            ag_tensor_set(db, i, ag_tensor_get(db, i) + 1.5 * g * a);
    }
    return 0;
}

static const ag_op mul_wrong_b_op = {
    .name = "test_mul_wrong_b",
    .n_inputs = 2,
    .shape = same_shape_rule,
    .forward = mul_forward,
    .backward = mul_wrong_b_backward,
};

/* y = p * x, with a backward rule that adds nothing. */
static int scale_forward(ag_tape *tape, ag_record *rec)
{
    (void)tape;
    for (size_t i = 0; i < ag_tensor_numel(rec->output); i++)
        ag_tensor_set(rec->output, i, rec->params[0] * ag_tensor_get(rec->inputs[0], i));
    return 0;
}

static int backward_adding_nothing(ag_tape *tape, ag_record *rec)
{
    (void)tape;
    (void)rec;
    return 0;
}

static const ag_op scale_no_grad_op = {
    .name = "test_scale_no_grad",
    .n_inputs = 1,
    .shape = same_shape_rule,
    .forward = scale_forward,
    .backward = backward_adding_nothing,
};

/* The same op without any backward rule: it is never recorded. */
static const ag_op scale_untracked_op = {
    .name = "test_scale_untracked",
    .n_inputs = 1,
    .shape = same_shape_rule,
    .forward = scale_forward,
    .backward = NULL,
};

/* ---- functions to check --------------------------------------------------- */

/* Counts the dtypes f was called with. */
typedef struct call_log {
    int f32_calls;
    int f64_calls;
} call_log;

static void log_call(void *user, ag_tensor *const *inputs)
{
    call_log *log = user;

    if (log == NULL)
        return;
    if (ag_tensor_dtype(inputs[0]) == AG_F32)
        log->f32_calls++;
    else
        log->f64_calls++;
}

static ag_tensor *f_log_softmax(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)n;
    log_call(user, inputs);
    return ag_log_softmax(tape, inputs[0], 1);
}

/* sum(exp(tanh(x))) */
static ag_tensor *f_sum_exp_tanh(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)n;
    (void)user;
    return ag_sum(tape, ag_exp(tape, ag_tanh(tape, inputs[0])));
}

static ag_tensor *f_mul_wrong_b(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)user;
    return ag_apply(tape, ag_op_find("test_mul_wrong_b"), n, inputs, 0, NULL);
}

/* p * x through an op given as user data, with p = 3 or 1e-7 (below atol). */
typedef struct scale_call {
    const ag_op *op;
    double factor;
} scale_call;

static ag_tensor *f_scale(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    const scale_call *call = user;

    (void)n;
    return ag_apply(tape, call->op, 1, inputs, 1, &call->factor);
}

/* mean(log_softmax(x W + b) * c), shaped like a cross-entropy loss. The
 * inputs are x, W, b and c, and the tests hold x and c constant. */
static ag_tensor *f_linear_log_softmax(ag_tape *tape, ag_tensor *const *inputs, int n,
                                       void *user)
{
    (void)n;
    (void)user;
    ag_tensor *logits = ag_linear(tape, inputs[0], inputs[1], inputs[2]);
    ag_tensor *log_probs = ag_log_softmax(tape, logits, -1);
    return ag_mean(tape, ag_mul(tape, log_probs, inputs[3]));
}

/* Applies reduction or softmax-family op number which[0] along axis
 * which[1]. The checker compares the op's full Jacobian. */
static ag_tensor *f_each_op(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    const int *which = user;
    ag_tensor *x = inputs[0];
    int axis = which[1];
    ag_tensor *y;

    (void)n;
    switch (which[0]) {
    case 0: y = ag_sum_axis(tape, x, axis, true); break;
    case 1: y = ag_mean_axis(tape, x, axis, false); break;
    case 2: y = ag_max_axis(tape, x, axis, false); break;
    case 3: y = ag_logsumexp_axis(tape, x, axis, true); break;
    case 4: y = ag_softmax(tape, x, axis); break;
    case 5: y = ag_log_softmax(tape, x, axis); break;
    case 6: y = ag_logsumexp(tape, x); break;
    default: y = ag_max(tape, x); break;
    }
    return y;
}

/* 0 * x: a constant function, whose zero gradient is right. */
static ag_tensor *f_zero(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)n;
    (void)user;
    return ag_mul_scalar(tape, inputs[0], 0.0);
}

static ag_tensor *f_failing(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)tape;
    (void)inputs;
    (void)n;
    (void)user;
    ag_set_error("f_failing: the model is not ready");
    return NULL;
}

/* Fails only for f64 inputs, as a function written for f32 alone would. */
static ag_tensor *f_f32_only(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)n;
    (void)user;
    if (ag_tensor_dtype(inputs[0]) != AG_F32) {
        ag_set_error("f_f32_only: expected f32 input");
        return NULL;
    }
    return ag_exp(tape, inputs[0]);
}

/* ---- helpers -------------------------------------------------------------- */

static ag_tensor *heap_input(ag_dtype dtype, int ndim, const size_t *shape,
                             const double *values, bool requires_grad)
{
    ag_tensor *t = ag_tensor_from_doubles(NULL, dtype, ndim, shape, values);

    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(ag_tensor_set_requires_grad(t, requires_grad), 0);
    return t;
}

static const double a_values[] = {0.5, -2.0, 1.0};
static const double b_values[] = {1.5, 0.25, -1.0};
static const double matrix_values[] = {0.3, -1.2, 2.0, 0.7, 0.0, -0.4};

/* ---- correct ops pass ----------------------------------------------------- */

START_TEST(passes_log_softmax_f64)
{
    ag_tensor *x = heap_input(AG_F64, AG_SHAPE(2, 3), matrix_values, true);
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradcheck(f_log_softmax, NULL, 1, &x, NULL, &result), 0);
    ck_assert_msg(result.passed, "%s", result.message);
    ck_assert_uint_eq(result.n_checked, 36); /* 6 outputs x 6 inputs */
    ck_assert(result.abs_error <= 1e-5 + 1e-3 * fabs(result.numeric));
    ck_assert_ptr_nonnull(strstr(result.message, "passed"));
    ag_tensor_free(x);
}
END_TEST

START_TEST(passes_through_f32_inputs)
{
    ag_tensor *x = heap_input(AG_F32, AG_SHAPE(2, 3), matrix_values, true);
    call_log log = {0, 0};
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradcheck(f_log_softmax, &log, 1, &x, NULL, &result), 0);
    ck_assert_msg(result.passed, "%s", result.message);

    /* One analytic run in f32. The reference runs in f64 once at x, for the
     * one-sided differences, and twice per element (no kinks here). */
    ck_assert_int_eq(log.f32_calls, 1);
    ck_assert_int_eq(log.f64_calls, 13);
    ag_tensor_free(x);
}
END_TEST

START_TEST(passes_scalar_output)
{
    ag_tensor *x = heap_input(AG_F64, AG_SHAPE(2, 3), matrix_values, true);
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradcheck(f_sum_exp_tanh, NULL, 1, &x, NULL, &result), 0);
    ck_assert_msg(result.passed, "%s", result.message);
    ck_assert_uint_eq(result.n_checked, 6);
    ck_assert_uint_eq(result.worst_output, 0);
    ag_tensor_free(x);
}
END_TEST

/* f(x) = x: the output is the input tensor itself, so the checker must read
 * f(x - eps) before it restores x. */
static ag_tensor *f_identity(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)tape;
    (void)n;
    (void)user;
    return inputs[0];
}

START_TEST(identity_function_passes)
{
    ag_tensor *x = heap_input(AG_F64, AG_SHAPE(3), a_values, true);
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradcheck(f_identity, NULL, 1, &x, NULL, &result), 0);
    ck_assert_msg(result.passed, "%s", result.message);
    ck_assert_double_eq_tol(result.numeric, 1.0, 1e-9);
    ag_tensor_free(x);
}
END_TEST

START_TEST(passes_composite_function)
{
    const double x_values[] = {0.5, -1.0, 2.0, 0.25, 1.5, -0.75};
    const double w_values[] = {0.1, -0.2, 0.3, 0.4, 0.0, -0.5};
    const double bias_values[] = {0.05, -0.1, 0.2};
    const double c_values[] = {1.0, 2.0, -1.0, 0.5, 0.0, 3.0, -2.0, 1.0, 0.25};
    const ag_dtype dtypes[] = {AG_F64, AG_F32};

    for (int d = 0; d < 2; d++) {
        ag_tensor *inputs[4] = {
            heap_input(dtypes[d], AG_SHAPE(3, 2), x_values, false),
            heap_input(dtypes[d], AG_SHAPE(2, 3), w_values, true),
            heap_input(dtypes[d], AG_SHAPE(3), bias_values, true),
            heap_input(dtypes[d], AG_SHAPE(3, 3), c_values, false),
        };
        ag_gradcheck_result result;

        ck_assert_int_eq(ag_gradcheck(f_linear_log_softmax, NULL, 4, inputs, NULL, &result), 0);
        ck_assert_msg(result.passed, "%s", result.message);
        ck_assert_uint_eq(result.n_checked, 9); /* W and b, one output */
        for (int i = 0; i < 4; i++)
            ag_tensor_free(inputs[i]);
    }
}
END_TEST

START_TEST(passes_each_reduction)
{
    ag_rng rng = ag_rng_new(31);
    ag_tensor *x = ag_rand_uniform(NULL, AG_F64, AG_SHAPE(3, 4), -2.0, 2.0, &rng);
    const int axes[] = {0, -1};

    ag_tensor_set_requires_grad(x, true);
    for (int op = 0; op < 8; op++) {
        for (int a = 0; a < 2; a++) {
            int which[2] = {op, axes[a]};
            ag_gradcheck_result result;

            ck_assert_int_eq(ag_gradcheck(f_each_op, which, 1, &x, NULL, &result), 0);
            ck_assert_msg(result.passed, "op %d axis %d: %s", op, axes[a], result.message);
        }
    }
    ag_tensor_free(x);
}
END_TEST

START_TEST(constant_function_passes)
{
    /* The function does not change, so an all-zero gradient is right. */
    ag_tensor *x = heap_input(AG_F64, AG_SHAPE(3), a_values, true);
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradcheck(f_zero, NULL, 1, &x, NULL, &result), 0);
    ck_assert_msg(result.passed, "%s", result.message);
    ck_assert_double_eq(result.numeric, 0.0);
    ck_assert_double_eq(result.rel_error, 0.0);
    ag_tensor_free(x);
}
END_TEST

/* ---- faults are caught ---------------------------------------------------- */

START_TEST(wrong_backward_names_input_and_element)
{
    /* db is 1.5 a instead of a, so the error 0.5 |a_k| is worst where |a_k|
     * is largest: b's element 1 (a = -2), seen by output 1. */
    ag_tensor *a = heap_input(AG_F64, AG_SHAPE(3), a_values, true);
    ag_tensor *b = heap_input(AG_F64, AG_SHAPE(3), b_values, true);
    ag_tensor *inputs[2] = {a, b};
    ag_gradcheck_result result;

    ag_tensor_set_name(b, "b");
    ck_assert_int_eq(ag_gradcheck(f_mul_wrong_b, NULL, 2, inputs, NULL, &result), 0);
    ck_assert(!result.passed);
    ck_assert_int_eq(result.worst_input, 1);
    ck_assert_uint_eq(result.worst_index, 1);
    ck_assert_uint_eq(result.worst_output, 1);
    ck_assert_uint_eq(result.n_checked, 18); /* 3 outputs x 6 input elements */

    ck_assert_double_eq_tol(result.analytic, -3.0, 1e-15);
    ck_assert_double_eq_tol(result.numeric, -2.0, 1e-8);
    ck_assert_double_eq_tol(result.abs_error, 1.0, 1e-8);
    ck_assert_double_eq_tol(result.rel_error, 0.5, 1e-8);
    ck_assert_msg(strstr(result.message, "input 1 \"b\" element 1") != NULL, "message: %s",
                  result.message);
    ag_tensor_free(a);
    ag_tensor_free(b);
}
END_TEST

START_TEST(tolerance_rule_is_atol_plus_rtol)
{
    /* The wrong rule's error is 0.5 |numeric|: within rtol 0.6, not 0.4. */
    ag_tensor *a = heap_input(AG_F64, AG_SHAPE(3), a_values, true);
    ag_tensor *b = heap_input(AG_F64, AG_SHAPE(3), b_values, true);
    ag_tensor *inputs[2] = {a, b};
    ag_gradcheck_options loose = {.eps = 1e-6, .atol = 1e-5, .rtol = 0.6};
    ag_gradcheck_options tight = {.eps = 1e-6, .atol = 1e-5, .rtol = 0.4};
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradcheck(f_mul_wrong_b, NULL, 2, inputs, &loose, &result), 0);
    ck_assert_msg(result.passed, "%s", result.message);
    ck_assert_int_eq(ag_gradcheck(f_mul_wrong_b, NULL, 2, inputs, &tight, &result), 0);
    ck_assert(!result.passed);
    ag_tensor_free(a);
    ag_tensor_free(b);
}
END_TEST

START_TEST(missing_backward_fails)
{
    /* factor 1e-7 keeps every numeric partial below atol, so only the
     * all-zero rule can catch it. */
    const double factors[] = {3.0, 1e-7};
    const ag_op *ops[] = {&scale_no_grad_op, &scale_untracked_op};
    ag_tensor *x = heap_input(AG_F64, AG_SHAPE(3), a_values, true);
    ag_gradcheck_result result;

    for (int o = 0; o < 2; o++) {
        for (int f = 0; f < 2; f++) {
            scale_call call = {ops[o], factors[f]};

            ck_assert_int_eq(ag_gradcheck(f_scale, &call, 1, &x, NULL, &result), 0);
            ck_assert_msg(!result.passed, "%s with factor %g passed", ops[o]->name,
                          factors[f]);
            ck_assert_msg(strstr(result.message, "every analytic partial is zero") != NULL,
                          "message: %s", result.message);
        }
    }
    ag_tensor_free(x);
}
END_TEST

/* ---- inputs --------------------------------------------------------------- */

START_TEST(constant_input_not_checked)
{
    /* b does not require a gradient, so its wrong rule is never compared. */
    ag_tensor *a = heap_input(AG_F64, AG_SHAPE(3), a_values, true);
    ag_tensor *b = heap_input(AG_F64, AG_SHAPE(3), b_values, false);
    ag_tensor *inputs[2] = {a, b};
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradcheck(f_mul_wrong_b, NULL, 2, inputs, NULL, &result), 0);
    ck_assert_msg(result.passed, "%s", result.message);
    ck_assert_uint_eq(result.n_checked, 9);
    ck_assert_int_eq(result.worst_input, 0);
    ag_tensor_free(a);
    ag_tensor_free(b);
}
END_TEST

START_TEST(inputs_unchanged)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *a = heap_input(AG_F32, AG_SHAPE(3), a_values, true);
    ag_tensor *b = ag_tensor_from_doubles(tape, AG_F32, AG_SHAPE(3), b_values);
    ag_tensor *inputs[2] = {a, b};
    float a_before[3];
    float b_before[3];
    ag_gradcheck_result result;

    ag_tensor_set_requires_grad(b, true);
    ag_tensor_set(ag_tensor_grad(a), 0, 7.0); /* an accumulated gradient to keep */
    memcpy(a_before, ag_tensor_data(a), sizeof a_before);
    memcpy(b_before, ag_tensor_data(b), sizeof b_before);

    ck_assert_int_eq(ag_gradcheck(f_mul_wrong_b, NULL, 2, inputs, NULL, &result), 0);
    ck_assert_int_eq(memcmp(a_before, ag_tensor_data(a), sizeof a_before), 0);
    ck_assert_int_eq(memcmp(b_before, ag_tensor_data(b), sizeof b_before), 0);
    ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(a), 0), 7.0);
    ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(a), 1), 0.0);
    ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(b), 1), 0.0);
    ck_assert_uint_eq(ag_tape_size(tape), 0);
    ck_assert_int_eq(ag_tensor_dtype(a), AG_F32);
    ag_tensor_free(a);
    ag_tape_free(tape);
}
END_TEST

START_TEST(no_input_requires_grad_is_error)
{
    ag_tensor *x = heap_input(AG_F64, AG_SHAPE(3), a_values, false);
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradcheck(f_zero, NULL, 1, &x, NULL, &result), -1);
    ck_assert(!result.passed);
    ck_assert_ptr_nonnull(strstr(ag_error(), "no input requires a gradient"));
    ck_assert_ptr_nonnull(strstr(result.message, "no input requires a gradient"));
    ag_tensor_free(x);
}
END_TEST

START_TEST(failing_function_keeps_its_message)
{
    ag_tensor *x = heap_input(AG_F64, AG_SHAPE(3), a_values, true);
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradcheck(f_failing, NULL, 1, &x, NULL, &result), -1);
    ck_assert(!result.passed);
    ck_assert_ptr_nonnull(strstr(ag_error(), "ag_gradcheck: "));
    ck_assert_ptr_nonnull(strstr(ag_error(), "f_failing: the model is not ready"));
    ck_assert_ptr_nonnull(strstr(result.message, "f_failing: the model is not ready"));
    ag_tensor_free(x);
}
END_TEST

START_TEST(function_failing_in_f64_is_error)
{
    ag_tensor *x = heap_input(AG_F32, AG_SHAPE(3), a_values, true);
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradcheck(f_f32_only, NULL, 1, &x, NULL, &result), -1);
    ck_assert_ptr_nonnull(strstr(ag_error(), "in f64"));
    ck_assert_ptr_nonnull(strstr(ag_error(), "f_f32_only: expected f32 input"));
    ag_tensor_free(x);
}
END_TEST

START_TEST(invalid_arguments_are_errors)
{
    ag_tensor *x = heap_input(AG_F64, AG_SHAPE(3), a_values, true);
    ag_tensor *null_input = NULL;
    ag_gradcheck_options negative_eps = {.eps = -1e-6, .atol = 1e-5, .rtol = 1e-3};
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradcheck(NULL, NULL, 1, &x, NULL, &result), -1);
    ck_assert_int_eq(ag_gradcheck(f_zero, NULL, 0, &x, NULL, &result), -1);
    ck_assert_int_eq(ag_gradcheck(f_zero, NULL, 1, &null_input, NULL, &result), -1);
    ck_assert_int_eq(ag_gradcheck(f_zero, NULL, 1, &x, NULL, NULL), -1);
    ck_assert_int_eq(ag_gradcheck(f_zero, NULL, 1, &x, &negative_eps, &result), -1);
    ck_assert_ptr_nonnull(strstr(ag_error(), "eps"));
    ag_tensor_free(x);
}
END_TEST

START_TEST(empty_input_is_error)
{
    ag_tensor *x = ag_zeros(NULL, AG_F64, AG_SHAPE(0));
    ag_gradcheck_result result;

    ag_tensor_set_requires_grad(x, true);
    ck_assert_int_eq(ag_gradcheck(f_zero, NULL, 1, &x, NULL, &result), -1);
    ck_assert_ptr_nonnull(strstr(ag_error(), "nothing to check"));
    ag_tensor_free(x);
}
END_TEST

/* sum(x): its backward rule is right even where x contains a NaN. */
static ag_tensor *f_sum(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)n;
    (void)user;
    return ag_sum(tape, inputs[0]);
}

/* sum(sqrt(x)): finite at x = 0, but NaN just below it. */
static ag_tensor *f_sum_sqrt(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)n;
    (void)user;
    return ag_sum(tape, ag_sqrt(tape, inputs[0]));
}

START_TEST(nan_output_is_error)
{
    ag_tensor *x = heap_input(AG_F64, AG_SHAPE(2), (const double[]){1.0, NAN}, true);
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradcheck(f_sum, NULL, 1, &x, NULL, &result), -1);
    ck_assert(!result.passed);
    ck_assert_msg(strstr(ag_error(), "f(x) is nan at output element 0") != NULL,
                  "error: %s", ag_error());
    ck_assert_ptr_nonnull(strstr(ag_error(), "central differences need a finite f"));
    ck_assert_ptr_nonnull(strstr(result.message, "f(x) is nan"));
    ck_assert_ptr_null(strstr(result.message, "failed at"));
    ag_tensor_free(x);
}
END_TEST

static ag_tensor *f_exp_sum(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)n;
    (void)user;
    return ag_sum(tape, ag_exp(tape, inputs[0]));
}

/* exp(100) overflows f32 but not f64: the f32 partials are inf, which is
 * not a wrong backward rule, so the check reports that it cannot run. */
START_TEST(f32_overflow_is_error)
{
    ag_tensor *x = heap_input(AG_F32, AG_SHAPE(2), (const double[]){1.0, 100.0}, true);
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradcheck(f_exp_sum, NULL, 1, &x, NULL, &result), -1);
    ck_assert(!result.passed);
    ck_assert_msg(strstr(ag_error(), "f(x) is inf at output element 0 in f32") != NULL,
                  "error: %s", ag_error());
    ck_assert_ptr_nonnull(strstr(result.message, "pass f64 inputs"));
    ag_tensor_free(x);
}
END_TEST

static ag_tensor *f_log_sum(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)n;
    (void)user;
    return ag_sum(tape, ag_log(tape, inputs[0]));
}

/* log(0) is -inf and log(-1) is NaN in f64 too, so f64 inputs do not help.
 * The f32 check must leave these cases to the f64 check of f(x), which
 * prints a NaN as "nan". */
START_TEST(f32_nonfinite_in_f64_keeps_message)
{
    const double at_zero[2] = {0.0, 1.0};
    const double negative[2] = {-1.0, 1.0};
    ag_gradcheck_result result;
    ag_tensor *x = heap_input(AG_F32, AG_SHAPE(2), at_zero, true);

    ck_assert_int_eq(ag_gradcheck(f_log_sum, NULL, 1, &x, NULL, &result), -1);
    ck_assert_msg(strstr(ag_error(), "central differences need a finite f") != NULL,
                  "error: %s", ag_error());
    ck_assert_ptr_null(strstr(result.message, "pass f64 inputs"));
    ag_tensor_free(x);

    x = heap_input(AG_F32, AG_SHAPE(2), negative, true);
    ck_assert_int_eq(ag_gradcheck(f_log_sum, NULL, 1, &x, NULL, &result), -1);
    ck_assert_msg(strstr(ag_error(), "f(x) is nan at output element 0") != NULL,
                  "error: %s", ag_error());
    ck_assert_ptr_null(strstr(result.message, "-nan"));
    ag_tensor_free(x);
}
END_TEST

START_TEST(infinite_output_is_error)
{
    ag_tensor *x = heap_input(AG_F64, AG_SHAPE(2), (const double[]){1.0, INFINITY}, true);
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradcheck(f_sum, NULL, 1, &x, NULL, &result), -1);
    ck_assert_msg(strstr(ag_error(), "f(x) is inf at output element 0") != NULL,
                  "error: %s", ag_error());
    ag_tensor_free(x);
}
END_TEST

START_TEST(nan_near_input_is_error)
{
    ag_tensor *x = heap_input(AG_F64, AG_SHAPE(2), (const double[]){1.0, 0.0}, true);
    ag_gradcheck_result result;

    /* f(x) is finite, but f(x - eps u_1) is NaN. */
    ck_assert_int_eq(ag_gradcheck(f_sum_sqrt, NULL, 1, &x, NULL, &result), -1);
    ck_assert(!result.passed);
    ck_assert_msg(strstr(ag_error(), "input 0 element 1 moved by -1e-06") != NULL,
                  "error: %s", ag_error());
    ck_assert_ptr_nonnull(strstr(ag_error(), "numeric derivative is not finite"));
    ag_tensor_free(x);
}
END_TEST

START_TEST(eps_too_small_is_error)
{
    ag_tensor *x = heap_input(AG_F64, AG_SHAPE(3), a_values, true);
    ag_gradcheck_options options = {.eps = 1e-300, .atol = 1e-5, .rtol = 1e-3};
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradcheck(f_sum, NULL, 1, &x, &options, &result), -1);
    ck_assert(!result.passed);
    ck_assert_msg(strstr(ag_error(), "the step 1e-300 does not move input 0 element 0") !=
                      NULL,
                  "error: %s", ag_error());
    ck_assert_ptr_nonnull(strstr(result.message, "does not move"));
    ag_tensor_free(x);
}
END_TEST

START_TEST(eps_too_small_for_large_x)
{
    /* 1e-6 moves 1 but not 1e12, where doubles are about 1.2e-4 apart. */
    ag_tensor *x = heap_input(AG_F64, AG_SHAPE(2), (const double[]){1.0, 1e12}, true);
    ag_gradcheck_options options = {.eps = 1e-6, .atol = 1e-5, .rtol = 1e-3};
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradcheck(f_sum, NULL, 1, &x, &options, &result), -1);
    ck_assert_msg(strstr(ag_error(), "does not move input 0 element 1") != NULL,
                  "error: %s", ag_error());
    ag_tensor_free(x);
}
END_TEST

START_TEST(defaults_match_pytorch)
{
    ag_gradcheck_options options = ag_gradcheck_defaults();

    ck_assert_double_eq(options.eps, 1e-6);
    ck_assert_double_eq(options.atol, 1e-5);
    ck_assert_double_eq(options.rtol, 1e-3);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("gradcheck");
    TCase *tc = tcase_create("core");

    if (ag_op_register(&mul_wrong_b_op) != 0 || ag_op_register(&scale_no_grad_op) != 0 ||
        ag_op_register(&scale_untracked_op) != 0) {
        fprintf(stderr, "registering the test ops failed: %s\n", ag_error());
        return EXIT_FAILURE;
    }

    tcase_add_test(tc, passes_log_softmax_f64);
    tcase_add_test(tc, passes_through_f32_inputs);
    tcase_add_test(tc, passes_scalar_output);
    tcase_add_test(tc, identity_function_passes);
    tcase_add_test(tc, passes_composite_function);
    tcase_add_test(tc, passes_each_reduction);
    tcase_add_test(tc, constant_function_passes);
    tcase_add_test(tc, wrong_backward_names_input_and_element);
    tcase_add_test(tc, tolerance_rule_is_atol_plus_rtol);
    tcase_add_test(tc, missing_backward_fails);
    tcase_add_test(tc, constant_input_not_checked);
    tcase_add_test(tc, inputs_unchanged);
    tcase_add_test(tc, no_input_requires_grad_is_error);
    tcase_add_test(tc, failing_function_keeps_its_message);
    tcase_add_test(tc, function_failing_in_f64_is_error);
    tcase_add_test(tc, invalid_arguments_are_errors);
    tcase_add_test(tc, empty_input_is_error);
    tcase_add_test(tc, defaults_match_pytorch);
    tcase_add_test(tc, nan_output_is_error);
    tcase_add_test(tc, infinite_output_is_error);
    tcase_add_test(tc, f32_overflow_is_error);
    tcase_add_test(tc, f32_nonfinite_in_f64_keeps_message);
    tcase_add_test(tc, nan_near_input_is_error);
    tcase_add_test(tc, eps_too_small_is_error);
    tcase_add_test(tc, eps_too_small_for_large_x);
    suite_add_tcase(suite, tc);
    return run_suite(suite);
}
