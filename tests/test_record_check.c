/* Per-record checking (ag_check_records), kinks in ag_gradcheck and in the
 * record check, and the Taylor-remainder test (ag_taylor_test). The
 * expected values are closed forms written out here: d/dx x^3 = 3 x^2 for
 * the wrong cube op, the one-sided derivatives of relu, abs, maximum, max
 * and clamp at their kinks, and r(h) = h^2 |v|^2 for sum(x^2). Uses only
 * public API. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "check_helpers.h"

/* ---- custom ops ----------------------------------------------------------- */

static int same_shape_rule(const ag_record *rec, ag_dtype *dtype, int *ndim, size_t *shape)
{
    const ag_tensor *x = rec->inputs[0];

    *dtype = ag_tensor_dtype(x);
    *ndim = ag_tensor_ndim(x);
    memcpy(shape, ag_tensor_shape(x), (size_t)*ndim * sizeof *shape);
    return 0;
}

/* y = x^3 elementwise. */
static int cube_forward(ag_tape *tape, ag_record *rec)
{
    (void)tape;
    for (size_t i = 0; i < ag_tensor_numel(rec->output); i++) {
        double x = ag_tensor_get(rec->inputs[0], i);

        ag_tensor_set(rec->output, i, x * x * x);
    }
    return 0;
}

/* Adds dy * factor * x^2 into the input's adjoint; factor 3 is right. */
static int cube_backward_with(ag_tape *tape, ag_record *rec, double factor)
{
    ag_tensor *gx = ag_input_grad(tape, rec, 0);
    const ag_tensor *gy = ag_tensor_grad(rec->output);

    if (gx == NULL)
        return 0;
    for (size_t i = 0; i < ag_tensor_numel(gx); i++) {
        double x = ag_tensor_get(rec->inputs[0], i);

        ag_tensor_set(gx, i, ag_tensor_get(gx, i) + ag_tensor_get(gy, i) * factor * x * x);
    }
    return 0;
}

static int cube_backward_wrong(ag_tape *tape, ag_record *rec)
{
    return cube_backward_with(tape, rec, 2.0);
}

static int cube_backward_right(ag_tape *tape, ag_record *rec)
{
    return cube_backward_with(tape, rec, 3.0);
}

static const ag_op wrong_cube_op = {
    .name = "test_wrong_cube",
    .n_inputs = 1,
    .shape = same_shape_rule,
    .forward = cube_forward,
    .backward = cube_backward_wrong,
};

static const ag_op right_cube_op = {
    .name = "test_right_cube",
    .n_inputs = 1,
    .shape = same_shape_rule,
    .forward = cube_forward,
    .backward = cube_backward_right,
};

/* relu whose derivative at 0 is 2, outside the one-sided derivatives 0
 * and 1: wrong even by the rules of a kink. */
static int relu_forward(ag_tape *tape, ag_record *rec)
{
    (void)tape;
    for (size_t i = 0; i < ag_tensor_numel(rec->output); i++)
        ag_tensor_set(rec->output, i, fmax(ag_tensor_get(rec->inputs[0], i), 0.0));
    return 0;
}

static int relu_backward_two_at_zero(ag_tape *tape, ag_record *rec)
{
    ag_tensor *gx = ag_input_grad(tape, rec, 0);

    if (gx == NULL)
        return 0;
    for (size_t i = 0; i < ag_tensor_numel(gx); i++) {
        double x = ag_tensor_get(rec->inputs[0], i);
        double slope = x > 0 ? 1.0 : (x == 0 ? 2.0 : 0.0);
        double g = ag_tensor_get(ag_tensor_grad(rec->output), i);

        ag_tensor_set(gx, i, ag_tensor_get(gx, i) + g * slope);
    }
    return 0;
}

static const ag_op relu_two_at_zero_op = {
    .name = "test_relu_two_at_zero",
    .n_inputs = 1,
    .shape = same_shape_rule,
    .forward = relu_forward,
    .backward = relu_backward_two_at_zero,
};

/* An op written for f32 alone: its forward rejects f64. */
static int f32_only_forward(ag_tape *tape, ag_record *rec)
{
    (void)tape;
    if (ag_tensor_dtype(rec->inputs[0]) != AG_F32) {
        ag_set_error("test_f32_only: expected f32");
        return -1;
    }
    return cube_forward(tape, rec);
}

static const ag_op f32_only_op = {
    .name = "test_f32_only",
    .n_inputs = 1,
    .shape = same_shape_rule,
    .forward = f32_only_forward,
    .backward = cube_backward_right,
};

static ag_tensor *apply1(ag_tape *tape, const ag_op *op, ag_tensor *x)
{
    return ag_apply(tape, op, 1, &x, 0, NULL);
}

/* ---- helpers -------------------------------------------------------------- */

static ag_tensor *leaf(ag_tape *tape, ag_dtype dtype, int ndim, const size_t *shape,
                       const double *values)
{
    ag_tensor *t = ag_tensor_from_doubles(tape, dtype, ndim, shape, values);

    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(ag_tensor_set_requires_grad(t, true), 0);
    return t;
}

static const double x_values[6] = {0.3, -1.2, 0.8, 0.5, -0.4, 1.1};
static const double w_values[6] = {0.7, -0.2, 0.1, 0.9, -0.5, 0.4};
static const double b_values[4] = {0.6, -0.9, 1.3, -0.7};

/* sum(tanh(x @ W) * cube(b) + exp(x @ W)): the cube op is record 2 of 6. */
static ag_tensor *expression_with_cube(ag_tape *tape, const ag_op *cube, ag_tensor *x,
                                       ag_tensor *w, ag_tensor *b)
{
    ag_tensor *s = ag_matmul(tape, x, w);
    ag_tensor *h = ag_tanh(tape, s);
    ag_tensor *c = apply1(tape, cube, b);
    ag_tensor *p = ag_mul(tape, h, c);
    return ag_sum(tape, ag_add(tape, p, ag_exp(tape, s)));
}

/* ---- ag_check_records: naming the wrong record ---------------------------- */

START_TEST(records_name_wrong_op)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = leaf(tape, AG_F64, AG_SHAPE(2, 3), x_values);
    ag_tensor *w = leaf(tape, AG_F64, AG_SHAPE(3, 2), w_values);
    ag_tensor *b = leaf(tape, AG_F64, AG_SHAPE(2, 2), b_values);
    ag_tensor *loss = expression_with_cube(tape, &wrong_cube_op, x, w, b);
    ag_record_check_result result;

    ck_assert_ptr_nonnull(loss);
    ck_assert_int_eq(ag_check_records(tape, NULL, &result), 0);
    ck_assert(!result.passed);
    ck_assert_uint_eq(result.record, 2);
    ck_assert_str_eq(result.op, "test_wrong_cube");
    ck_assert_int_eq(result.input, 0);
    ck_assert_uint_eq(result.n_failed, 1);
    ck_assert_uint_eq(result.n_records, ag_tape_size(tape));

    /* Four outputs: the whole Jacobian is checked, which is diagonal with
     * 3 b^2 where the rule gives 2 b^2. */
    ck_assert(!result.projected);
    ck_assert_uint_eq(result.output_element, result.element);
    double bi = b_values[result.element];
    ck_assert_close(result.analytic, 2.0 * bi * bi, 1e-12, "analytic");
    ck_assert_close(result.numeric, 3.0 * bi * bi, 1e-7, "numeric");
    ck_assert_ptr_nonnull(strstr(result.message, "record 2 (test_wrong_cube)"));
    ag_tape_free(tape);
}
END_TEST

START_TEST(records_first_of_two_wrong)
{
    /* The wrong op is records 1 and 3; record 1 is named, both fail. */
    const double values[3] = {0.5, -1.5, 2.0};
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = leaf(tape, AG_F64, AG_SHAPE(3), values);
    ag_tensor *once = apply1(tape, &wrong_cube_op, ag_tanh(tape, x));
    ag_tensor *twice = apply1(tape, &wrong_cube_op, ag_mul_scalar(tape, once, 2.0));
    ag_record_check_result result;

    ck_assert_ptr_nonnull(ag_sum(tape, twice));
    ck_assert_int_eq(ag_check_records(tape, NULL, &result), 0);
    ck_assert(!result.passed);
    ck_assert_uint_eq(result.record, 1);
    ck_assert_uint_eq(result.n_failed, 2);
    ag_tape_free(tape);
}
END_TEST

START_TEST(records_projection_names_op)
{
    /* A (5x5) output has more than AG_RECORD_CHECK_FULL elements, so one
     * random projection is checked. */
    double values[25];
    for (int i = 0; i < 25; i++)
        values[i] = 0.1 * (i - 12);
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = leaf(tape, AG_F64, AG_SHAPE(5, 5), values);
    ag_tensor *y = apply1(tape, &wrong_cube_op, ag_sigmoid(tape, x));
    ag_record_check_result result;

    ck_assert_ptr_nonnull(ag_mean(tape, y));
    ck_assert_int_eq(ag_check_records(tape, NULL, &result), 0);
    ck_assert(!result.passed);
    ck_assert_uint_eq(result.record, 1);
    ck_assert(result.projected);
    /* With u the projection, analytic = 2 u_e s_e^2 and numeric 3 u_e s_e^2. */
    ck_assert_close(result.analytic / result.numeric, 2.0 / 3.0, 1e-6, "ratio");
    ck_assert_ptr_nonnull(strstr(result.message, "random projection"));
    ag_tape_free(tape);
}
END_TEST

START_TEST(records_pass_correct_network)
{
    /* Every built-in op of a small classifier, and the right cube. */
    const double labels[2] = {1.0, 0.0};
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = leaf(tape, AG_F64, AG_SHAPE(2, 3), x_values);
    ag_tensor *w = leaf(tape, AG_F64, AG_SHAPE(3, 2), w_values);
    ag_tensor *b = leaf(tape, AG_F64, AG_SHAPE(2), b_values);
    ag_tensor *t = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(2, 1), labels);
    ag_tensor *s = ag_linear(tape, x, w, b);
    ag_tensor *z = ag_sigmoid(tape, apply1(tape, &right_cube_op, s));
    ag_tensor *logp = ag_log_softmax(tape, ag_add(tape, z, ag_softplus(tape, s)), 1);
    ag_tensor *mixed = ag_mul(tape, logp, t);
    ag_tensor *loss = ag_add(tape, ag_mean(tape, mixed),
                             ag_logsumexp(tape, ag_div(tape, s, ag_add_scalar(tape, z, 1.0))));
    ag_record_check_result result;

    ck_assert_ptr_nonnull(loss);
    ck_assert_int_eq(ag_check_records(tape, NULL, &result), 0);
    ck_assert_msg(result.passed, "%s", result.message);
    ck_assert_uint_eq(result.n_records, ag_tape_size(tape));
    ck_assert_uint_eq(result.n_failed, 0);
    ck_assert_uint_eq(result.n_kinks, 0);
    ck_assert_int_eq(result.input, -1);
    ck_assert_uint_gt(result.n_checked, 0);
    ag_tape_free(tape);
}
END_TEST

START_TEST(records_pass_f32)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = leaf(tape, AG_F32, AG_SHAPE(2, 3), x_values);
    ag_tensor *w = leaf(tape, AG_F32, AG_SHAPE(3, 2), w_values);
    ag_tensor *b = leaf(tape, AG_F32, AG_SHAPE(2, 2), b_values);
    ag_record_check_result result;

    ck_assert_ptr_nonnull(expression_with_cube(tape, &right_cube_op, x, w, b));
    ck_assert_int_eq(ag_check_records(tape, NULL, &result), 0);
    ck_assert_msg(result.passed, "%s", result.message);
    ag_tape_free(tape);
}
END_TEST

START_TEST(records_pass_create_graph)
{
    /* The records that ag_grad builds for a gradient penalty are ops like
     * any other: the derivative ops of relu, abs, max and broadcasting. */
    const double values[6] = {0.3, -1.2, 0.8, 0.5, -0.4, 1.1};
    const double bias_values[3] = {0.2, -0.1, 0.4};
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = leaf(tape, AG_F64, AG_SHAPE(2, 3), values);
    ag_tensor *b = leaf(tape, AG_F64, AG_SHAPE(3), bias_values);
    ag_tensor *s = ag_add(tape, x, b);
    ag_tensor *y = ag_add(tape, ag_mul(tape, ag_relu(tape, s), ag_abs(tape, s)),
                          ag_tanh(tape, s));
    ag_tensor *f = ag_add(tape, ag_sum(tape, y), ag_max(tape, s));
    ag_tensor *grads[2];
    ag_tensor *inputs[2] = {x, b};
    ag_record_check_result result;

    ck_assert_int_eq(ag_grad(tape, f, NULL, 2, inputs, grads, true), 0);
    ag_tensor *penalty = ag_sum(tape, ag_mul(tape, grads[0], grads[0]));
    ck_assert_ptr_nonnull(penalty);
    ck_assert_int_eq(ag_check_records(tape, NULL, &result), 0);
    ck_assert_msg(result.passed, "%s", result.message);
    ck_assert_uint_eq(result.n_records, ag_tape_size(tape));
    ck_assert_uint_gt(result.n_records, 10);
    ag_tape_free(tape);
}
END_TEST

START_TEST(records_shared_input)
{
    /* x * x: one tensor in both slots gets both shares, 2x. */
    const double values[2] = {1.5, -0.5};
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = leaf(tape, AG_F64, AG_SHAPE(2), values);
    ag_record_check_result result;

    ck_assert_ptr_nonnull(ag_sum(tape, ag_mul(tape, x, x)));
    ck_assert_int_eq(ag_check_records(tape, NULL, &result), 0);
    ck_assert_msg(result.passed, "%s", result.message);
    /* mul: 2 outputs x 2 elements; sum: 1 output x 2 elements. */
    ck_assert_uint_eq(result.n_checked, 6);
    ag_tape_free(tape);
}
END_TEST

START_TEST(records_leave_tape_unchanged)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = leaf(tape, AG_F64, AG_SHAPE(2, 3), x_values);
    ag_tensor *w = leaf(tape, AG_F64, AG_SHAPE(3, 2), w_values);
    ag_tensor *b = leaf(tape, AG_F64, AG_SHAPE(2, 2), b_values);
    ag_tensor *loss = expression_with_cube(tape, &wrong_cube_op, x, w, b);
    ck_assert_int_eq(ag_backward(tape, loss, NULL), 0);

    double before[4];
    for (size_t i = 0; i < 4; i++)
        before[i] = ag_tensor_get(ag_tensor_grad(b), i);
    const ag_tensor *loss_adjoint = ag_tensor_grad(loss);
    size_t records = ag_tape_size(tape);
    ag_record_check_result result;

    ck_assert_int_eq(ag_check_records(tape, NULL, &result), 0);
    ck_assert_uint_eq(ag_tape_size(tape), records);
    ck_assert_ptr_eq(ag_tensor_grad(loss), loss_adjoint);
    ck_assert_double_eq(ag_tensor_item(ag_tensor_grad(loss)), 1.0);
    for (size_t i = 0; i < 4; i++)
        ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(b), i), before[i]);
    ck_assert(ag_tape_is_recording(tape));
    ag_tape_free(tape);
}
END_TEST

START_TEST(records_empty_tape_passes)
{
    ag_tape *tape = ag_tape_new();
    ag_record_check_result result;

    ck_assert_int_eq(ag_check_records(tape, NULL, &result), 0);
    ck_assert(result.passed);
    ck_assert_uint_eq(result.n_records, 0);
    ag_tape_free(tape);
}
END_TEST

START_TEST(records_empty_input)
{
    /* sum of an empty tensor is 0 with nothing to differentiate by. */
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_zeros(tape, AG_F64, AG_SHAPE(0));
    ag_record_check_result result;

    ck_assert_int_eq(ag_tensor_set_requires_grad(x, true), 0);
    ck_assert_ptr_nonnull(ag_sum(tape, x));
    ck_assert_int_eq(ag_check_records(tape, NULL, &result), 0);
    ck_assert_msg(result.passed, "%s", result.message);
    ck_assert_uint_eq(result.n_records, 1);
    ck_assert_uint_eq(result.n_checked, 0);
    ag_tape_free(tape);
}
END_TEST

START_TEST(records_reject_invalid_arguments)
{
    ag_tape *tape = ag_tape_new();
    ag_record_check_result result;
    ag_gradcheck_options bad = {.eps = 0.0, .atol = 1e-5, .rtol = 1e-3};

    ck_assert_int_eq(ag_check_records(NULL, NULL, &result), -1);
    ck_assert_ptr_nonnull(strstr(ag_error(), "tape is NULL"));
    ck_assert_int_eq(ag_check_records(tape, NULL, NULL), -1);
    ck_assert_ptr_nonnull(strstr(ag_error(), "result is NULL"));
    ck_assert_int_eq(ag_check_records(tape, &bad, &result), -1);
    ck_assert_ptr_nonnull(strstr(ag_error(), "invalid options"));
    ag_tape_free(tape);
}
END_TEST

START_TEST(records_f64_failure_names_record)
{
    const double values[2] = {0.5, 1.5};
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = leaf(tape, AG_F32, AG_SHAPE(2), values);
    ag_record_check_result result;

    ck_assert_ptr_nonnull(ag_sum(tape, apply1(tape, &f32_only_op, ag_exp(tape, x))));
    ck_assert_int_eq(ag_check_records(tape, NULL, &result), -1);
    ck_assert_ptr_nonnull(strstr(ag_error(), "record 1 (test_f32_only)"));
    ck_assert_ptr_nonnull(strstr(ag_error(), "expected f32"));
    ck_assert_ptr_nonnull(strstr(result.message, "record 1"));
    ag_tape_free(tape);
}
END_TEST

START_TEST(records_nan_output_is_error)
{
    /* sum's backward rule is right; a NaN in its input must not blame it. */
    const double values[2] = {1.0, NAN};
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = leaf(tape, AG_F64, AG_SHAPE(2), values);
    ag_record_check_result result;

    ck_assert_ptr_nonnull(ag_sum(tape, x));
    ck_assert_int_eq(ag_check_records(tape, NULL, &result), -1);
    ck_assert(!result.passed);
    ck_assert_uint_eq(result.n_failed, 0);
    ck_assert_msg(strstr(ag_error(), "record 0 (sum): non-finite output") != NULL,
                  "error: %s", ag_error());
    ck_assert_ptr_nonnull(strstr(ag_error(), "nan at output element 0 at the recorded inputs"));
    ck_assert_ptr_nonnull(strstr(result.message, "non-finite output"));
    ag_tape_free(tape);
}
END_TEST

START_TEST(records_nan_near_input_is_error)
{
    /* sqrt is finite at 0 but NaN at -eps. */
    const double values[2] = {1.0, 0.0};
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = leaf(tape, AG_F64, AG_SHAPE(2), values);
    ag_record_check_result result;

    ck_assert_ptr_nonnull(ag_sqrt(tape, x));
    ck_assert_int_eq(ag_check_records(tape, NULL, &result), -1);
    ck_assert_msg(strstr(ag_error(), "with input 0 element 1 moved by -1e-06") != NULL,
                  "error: %s", ag_error());
    ag_tape_free(tape);
}
END_TEST

START_TEST(records_eps_too_small_is_error)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = leaf(tape, AG_F64, AG_SHAPE(2, 3), x_values);
    ag_gradcheck_options options = {.eps = 1e-300, .atol = 1e-5, .rtol = 1e-3};
    ag_record_check_result result;

    ck_assert_ptr_nonnull(ag_sum(tape, x));
    ck_assert_int_eq(ag_check_records(tape, &options, &result), -1);
    ck_assert_uint_eq(result.n_failed, 0);
    ck_assert_msg(strstr(ag_error(), "the step 1e-300 does not move input 0 element 0") !=
                      NULL,
                  "error: %s", ag_error());
    ag_tape_free(tape);
}
END_TEST

START_TEST(records_message_singular_record)
{
    const double values[2] = {0.5, 1.5};
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = leaf(tape, AG_F64, AG_SHAPE(2), values);
    ag_record_check_result result;

    ck_assert_ptr_nonnull(ag_sum(tape, x));
    ck_assert_int_eq(ag_check_records(tape, NULL, &result), 0);
    ck_assert_msg(strstr(result.message, "passed: 1 record, 2 partials") != NULL,
                  "message: %s", result.message);
    ag_tape_free(tape);
}
END_TEST

/* ---- kinks ---------------------------------------------------------------- */

/* A function with one kink at the given inputs, and its one-sided
 * derivatives with respect to the element at the kink. */
typedef struct kink_case {
    const char *name;
    int n_inputs;
    double values[2][3];
    int kink_input;
    size_t kink_index;
    double left;
    double right;
    double analytic; /* PyTorch's convention */
} kink_case;

static ag_tensor *kink_function(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    const kink_case *c = user;

    (void)n;
    if (strcmp(c->name, "relu") == 0)
        return ag_sum(tape, ag_relu(tape, inputs[0]));
    if (strcmp(c->name, "abs") == 0)
        return ag_sum(tape, ag_abs(tape, inputs[0]));
    if (strcmp(c->name, "maximum") == 0)
        return ag_sum(tape, ag_maximum(tape, inputs[0], inputs[1]));
    if (strcmp(c->name, "max") == 0)
        return ag_max(tape, inputs[0]);
    return ag_sum(tape, ag_clamp(tape, inputs[0], -1.0, 2.0));
}

/* Each case has its kink at element kink_index of input kink_input; the
 * other elements are smooth points. */
static const kink_case kink_cases[] = {
    /* relu at 0: slope 0 on the left, 1 on the right, relu'(0) = 0. */
    {"relu", 1, {{0.0, 1.5, -2.0}}, 0, 0, 0.0, 1.0, 0.0},
    /* abs at 0: -1 and 1, abs'(0) = 0. */
    {"abs", 1, {{0.7, 0.0, -0.3}}, 0, 1, -1.0, 1.0, 0.0},
    /* maximum(a, b) at a = b: a wins to the right, so 0 and 1; half each. */
    {"maximum", 2, {{0.5, 2.0, -1.0}, {0.5, 1.0, 0.0}}, 0, 0, 0.0, 1.0, 0.5},
    /* max of a tie of two: 0 and 1, shared evenly. */
    {"max", 1, {{1.0, 2.0, 2.0}}, 0, 1, 0.0, 1.0, 0.5},
    /* clamp at its upper bound 2: 1 on the left, 0 on the right, and the
     * gradient passes at the bound. */
    {"clamp", 1, {{2.0, 0.0, 3.0}}, 0, 0, 1.0, 0.0, 1.0},
};

static void make_kink_inputs(const kink_case *c, ag_tensor **inputs)
{
    for (int i = 0; i < c->n_inputs; i++)
        inputs[i] = leaf(NULL, AG_F64, AG_SHAPE(3), c->values[i]);
}

START_TEST(gradcheck_reports_kink)
{
    const kink_case *c = &kink_cases[_i];
    ag_tensor *inputs[2];
    ag_gradcheck_result result;

    make_kink_inputs(c, inputs);
    ck_assert_int_eq(ag_gradcheck(kink_function, (void *)c, c->n_inputs, inputs, NULL,
                                  &result), 0);
    ck_assert_msg(result.passed, "%s: %s", c->name, result.message);
    ck_assert_uint_ge(result.n_kinks, 1);
    ck_assert_int_eq(result.kink_input, c->kink_input);
    ck_assert_uint_eq(result.kink_index, c->kink_index);
    ck_assert_close(result.kink_left, c->left, 1e-8, "left derivative");
    ck_assert_close(result.kink_right, c->right, 1e-8, "right derivative");
    ck_assert_double_eq(result.kink_analytic, c->analytic);
    ck_assert_ptr_nonnull(strstr(result.message, "Kinks left out"));
    for (int i = 0; i < c->n_inputs; i++)
        ag_tensor_free(inputs[i]);
}
END_TEST

START_TEST(records_report_kink)
{
    const kink_case *c = &kink_cases[_i];
    ag_tensor *inputs[2];
    ag_record_check_result result;
    ag_tape *tape = ag_tape_new();

    make_kink_inputs(c, inputs);
    ck_assert_ptr_nonnull(kink_function(tape, inputs, c->n_inputs, (void *)c));
    ck_assert_int_eq(ag_check_records(tape, NULL, &result), 0);
    ck_assert_msg(result.passed, "%s: %s", c->name, result.message);
    ck_assert_uint_ge(result.n_kinks, 1);
    ck_assert_uint_eq(result.kink_record, 0);
    ck_assert_int_eq(result.kink_input, c->kink_input);
    ck_assert_uint_eq(result.kink_element, c->kink_index);
    ag_tape_free(tape);
    for (int i = 0; i < c->n_inputs; i++)
        ag_tensor_free(inputs[i]);
}
END_TEST

static ag_tensor *f_relu_two_at_zero(ag_tape *tape, ag_tensor *const *inputs, int n,
                                     void *user)
{
    (void)n;
    (void)user;
    return ag_sum(tape, apply1(tape, &relu_two_at_zero_op, inputs[0]));
}

START_TEST(kink_outside_one_sided_fails)
{
    /* At 0 the rule gives 2, outside [0, 1]: a failure, not a kink. */
    const double values[2] = {0.0, 1.0};
    ag_tensor *x = leaf(NULL, AG_F64, AG_SHAPE(2), values);
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradcheck(f_relu_two_at_zero, NULL, 1, &x, NULL, &result), 0);
    ck_assert(!result.passed);
    ck_assert_uint_eq(result.n_kinks, 0);
    ck_assert_uint_eq(result.worst_index, 0);
    ck_assert_double_eq(result.analytic, 2.0);

    ag_tape *tape = ag_tape_new();
    ag_record_check_result records;
    ck_assert_ptr_nonnull(f_relu_two_at_zero(tape, &x, 1, NULL));
    ck_assert_int_eq(ag_check_records(tape, NULL, &records), 0);
    ck_assert(!records.passed);
    ck_assert_str_eq(records.op, "test_relu_two_at_zero");
    ag_tape_free(tape);
    ag_tensor_free(x);
}
END_TEST

static ag_tensor *f_sum_exp(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)n;
    (void)user;
    return ag_sum(tape, ag_exp(tape, inputs[0]));
}

START_TEST(curvature_is_not_kink)
{
    /* With eps 1e-2 at x = 5, the one-sided differences of exp differ by
     * about eps e^5 = 1.5, far above the tolerance, but the gap halves
     * with the step, so it is curvature and the element is compared. */
    const double values[1] = {5.0};
    ag_tensor *x = leaf(NULL, AG_F64, AG_SHAPE(1), values);
    ag_gradcheck_options options = {.eps = 1e-2, .atol = 1e-5, .rtol = 1e-3};
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradcheck(f_sum_exp, NULL, 1, &x, &options, &result), 0);
    ck_assert_msg(result.passed, "%s", result.message);
    ck_assert_uint_eq(result.n_kinks, 0);
    ck_assert_close(result.analytic, exp(5.0), 1e-12, "analytic");
    ag_tensor_free(x);
}
END_TEST

START_TEST(zero_tolerance_finds_no_kinks)
{
    /* With atol = rtol = 0 every smooth partial differs from its finite
     * difference by rounding, and each must fail, not pass as a kink. */
    const double values[2] = {1.0, -0.5};
    ag_tensor *x = leaf(NULL, AG_F64, AG_SHAPE(2), values);
    ag_gradcheck_options exact = {.eps = 1e-6, .atol = 0.0, .rtol = 0.0};
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradcheck(f_sum_exp, NULL, 1, &x, &exact, &result), 0);
    ck_assert(!result.passed);
    ck_assert_uint_eq(result.n_kinks, 0);

    ag_tape *tape = ag_tape_new();
    ag_record_check_result records;
    ck_assert_ptr_nonnull(f_sum_exp(tape, &x, 1, NULL));
    ck_assert_int_eq(ag_check_records(tape, &exact, &records), 0);
    ck_assert(!records.passed);
    ck_assert_uint_eq(records.n_kinks, 0);
    ag_tape_free(tape);
    ag_tensor_free(x);
}
END_TEST

/* ---- the Taylor test ------------------------------------------------------ */

static ag_tensor *f_sum_squares(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)n;
    (void)user;
    return ag_sum(tape, ag_mul(tape, inputs[0], inputs[0]));
}

static ag_tensor *f_network(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    const ag_op *cube = user;

    (void)n;
    return expression_with_cube(tape, cube, inputs[0], inputs[1], inputs[2]);
}

static ag_tensor *f_linear(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)n;
    (void)user;
    return ag_sum(tape, ag_mul_scalar(tape, inputs[0], 4.0));
}

static ag_tensor *f_sum_relu(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)n;
    (void)user;
    return ag_sum(tape, ag_relu(tape, inputs[0]));
}

START_TEST(taylor_remainder_is_h_squared)
{
    /* For sum(x^2), r(h) = h^2 |v|^2 = h^2 with v of unit length. */
    const double values[3] = {0.5, -1.0, 2.0};
    ag_tensor *x = leaf(NULL, AG_F64, AG_SHAPE(3), values);
    ag_rng rng = ag_rng_new(3);
    ag_taylor_result result;

    ck_assert_int_eq(ag_taylor_test(f_sum_squares, NULL, 1, &x, &rng, &result), 0);
    ck_assert_msg(result.passed, "%s", result.message);
    ck_assert_int_eq(result.n_steps, AG_TAYLOR_STEPS);
    ck_assert_close(result.value, 5.25, 1e-15, "f(x)");
    for (int k = 0; k < 8; k++) {
        double h = ldexp(1.0, -(k + 1));

        ck_assert_double_eq(result.h[k], h);
        ck_assert_close(result.remainder[k] / (h * h), 1.0, 1e-9, "r(h) / h^2");
    }
    ck_assert_close(result.order, 2.0, 1e-6, "order");
    ck_assert_int_ge(result.fit_first, 0);
    ck_assert_int_ge(result.fit_last, result.fit_first + 2);
    ag_tensor_free(x);
}
END_TEST

static void network_inputs(ag_dtype dtype, ag_tensor **inputs)
{
    inputs[0] = leaf(NULL, dtype, AG_SHAPE(2, 3), x_values);
    inputs[1] = leaf(NULL, dtype, AG_SHAPE(3, 2), w_values);
    inputs[2] = leaf(NULL, dtype, AG_SHAPE(2, 2), b_values);
}

START_TEST(taylor_order_two_correct)
{
    ag_tensor *inputs[3];
    ag_taylor_result result;

    network_inputs(AG_F64, inputs);
    ck_assert_int_eq(ag_taylor_test(f_network, (void *)&right_cube_op, 3, inputs, NULL,
                                    &result), 0);
    ck_assert_msg(result.passed, "%s", result.message);
    ck_assert_msg(fabs(result.order - 2.0) < 0.1, "order %g", result.order);
    for (int i = 0; i < 3; i++)
        ag_tensor_free(inputs[i]);
}
END_TEST

START_TEST(taylor_order_one_wrong)
{
    ag_tensor *inputs[3];
    ag_taylor_result result;

    network_inputs(AG_F64, inputs);
    ck_assert_int_eq(ag_taylor_test(f_network, (void *)&wrong_cube_op, 3, inputs, NULL,
                                    &result), 0);
    ck_assert(!result.passed);
    ck_assert_msg(fabs(result.order - 1.0) < 0.1, "order %g", result.order);
    ck_assert_ptr_nonnull(strstr(result.message, "failed"));
    for (int i = 0; i < 3; i++)
        ag_tensor_free(inputs[i]);
}
END_TEST

START_TEST(taylor_f32_gradient)
{
    ag_tensor *inputs[3];
    ag_taylor_result result;

    network_inputs(AG_F32, inputs);
    ck_assert_int_eq(ag_taylor_test(f_network, (void *)&right_cube_op, 3, inputs, NULL,
                                    &result), 0);
    ck_assert_msg(result.passed, "%s", result.message);
    ck_assert_msg(fabs(result.order - 2.0) < 0.1, "order %g", result.order);
    for (int i = 0; i < 3; i++)
        ag_tensor_free(inputs[i]);
}
END_TEST

static ag_tensor *f_tanh(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)n;
    (void)user;
    return ag_tanh(tape, inputs[0]);
}

START_TEST(taylor_vector_output)
{
    /* tanh(x) elementwise, reduced with a random projection. */
    ag_tensor *x = leaf(NULL, AG_F64, AG_SHAPE(2, 3), x_values);
    ag_taylor_result result;

    ck_assert_int_eq(ag_taylor_test(f_tanh, NULL, 1, &x, NULL, &result), 0);
    ck_assert_msg(result.passed, "%s", result.message);
    ag_tensor_free(x);
}
END_TEST

START_TEST(taylor_linear_passes)
{
    const double values[2] = {1.0, -3.0};
    ag_tensor *x = leaf(NULL, AG_F64, AG_SHAPE(2), values);
    ag_taylor_result result;

    ck_assert_int_eq(ag_taylor_test(f_linear, NULL, 1, &x, NULL, &result), 0);
    ck_assert_msg(result.passed, "%s", result.message);
    ck_assert(isnan(result.order));
    ck_assert_ptr_nonnull(strstr(result.message, "linear along v"));
    ck_assert_int_eq(result.fit_first, -1);
    ag_tensor_free(x);
}
END_TEST

START_TEST(taylor_piecewise_linear_passes)
{
    /* Steps of 2^-1 and 2^-2 cross relu's kink at 0 from x = 0.3; smaller
     * steps stay on the linear piece, where r is 0 up to rounding. */
    const double values[3] = {0.3, -1.0, 2.0};
    ag_tensor *x = leaf(NULL, AG_F64, AG_SHAPE(3), values);
    ag_taylor_result result;

    ck_assert_int_eq(ag_taylor_test(f_sum_relu, NULL, 1, &x, NULL, &result), 0);
    ck_assert_msg(result.passed, "%s", result.message);
    ck_assert_ptr_nonnull(strstr(result.message, "linear along v"));
    ag_tensor_free(x);
}
END_TEST

START_TEST(taylor_rejects_no_gradient)
{
    const double values[2] = {1.0, 2.0};
    ag_tensor *x = ag_tensor_from_doubles(NULL, AG_F64, AG_SHAPE(2), values);
    ag_taylor_result result;

    ck_assert_int_eq(ag_taylor_test(f_linear, NULL, 1, &x, NULL, &result), -1);
    ck_assert_ptr_nonnull(strstr(ag_error(), "requires a gradient"));
    ck_assert_int_eq(ag_taylor_test(NULL, NULL, 1, &x, NULL, &result), -1);
    ck_assert_int_eq(ag_taylor_test(f_linear, NULL, 1, &x, NULL, NULL), -1);
    ag_tensor_free(x);
}
END_TEST

/* ---- the suite ------------------------------------------------------------ */

static Suite *record_check_suite(void)
{
    Suite *suite = suite_create("record_check");
    TCase *records = tcase_create("records");
    TCase *kinks = tcase_create("kinks");
    TCase *taylor = tcase_create("taylor");
    int n_kink_cases = (int)(sizeof kink_cases / sizeof kink_cases[0]);

    tcase_add_test(records, records_name_wrong_op);
    tcase_add_test(records, records_first_of_two_wrong);
    tcase_add_test(records, records_projection_names_op);
    tcase_add_test(records, records_pass_correct_network);
    tcase_add_test(records, records_pass_f32);
    tcase_add_test(records, records_pass_create_graph);
    tcase_add_test(records, records_shared_input);
    tcase_add_test(records, records_leave_tape_unchanged);
    tcase_add_test(records, records_empty_tape_passes);
    tcase_add_test(records, records_empty_input);
    tcase_add_test(records, records_reject_invalid_arguments);
    tcase_add_test(records, records_f64_failure_names_record);
    tcase_add_test(records, records_nan_output_is_error);
    tcase_add_test(records, records_nan_near_input_is_error);
    tcase_add_test(records, records_eps_too_small_is_error);
    tcase_add_test(records, records_message_singular_record);
    suite_add_tcase(suite, records);

    tcase_add_loop_test(kinks, gradcheck_reports_kink, 0, n_kink_cases);
    tcase_add_loop_test(kinks, records_report_kink, 0, n_kink_cases);
    tcase_add_test(kinks, kink_outside_one_sided_fails);
    tcase_add_test(kinks, curvature_is_not_kink);
    tcase_add_test(kinks, zero_tolerance_finds_no_kinks);
    suite_add_tcase(suite, kinks);

    tcase_add_test(taylor, taylor_remainder_is_h_squared);
    tcase_add_test(taylor, taylor_order_two_correct);
    tcase_add_test(taylor, taylor_order_one_wrong);
    tcase_add_test(taylor, taylor_f32_gradient);
    tcase_add_test(taylor, taylor_vector_output);
    tcase_add_test(taylor, taylor_linear_passes);
    tcase_add_test(taylor, taylor_piecewise_linear_passes);
    tcase_add_test(taylor, taylor_rejects_no_gradient);
    suite_add_tcase(suite, taylor);
    return suite;
}

int main(void)
{
    return run_suite(record_check_suite());
}
