/* Anomaly mode: the first op or backward rule that makes a NaN or an
 * infinity is reported with its record, inputs and a value summary. */
#include <math.h>
#include <string.h>

#include "check_helpers.h"

/* Asserts that the current error message contains `fragment`. */
static void assert_error_mentions(const char *fragment)
{
    ck_assert_ptr_nonnull(ag_error());
    ck_assert_msg(strstr(ag_error(), fragment) != NULL, "error \"%s\" does not mention \"%s\"",
                  ag_error(), fragment);
}

static ag_tensor *leaf(ag_tape *tape, ag_dtype dtype, int ndim, const size_t *shape,
                       const double *values)
{
    ag_tensor *t = ag_tensor_from_doubles(tape, dtype, ndim, shape, values);

    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(ag_tensor_set_requires_grad(t, true), 0);
    return t;
}

START_TEST(anomaly_off_by_default)
{
    const double values[2] = {-1.0, 4.0};
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = leaf(tape, AG_F64, AG_SHAPE(2), values);

    ck_assert(!ag_tape_anomaly_mode(tape));
    ag_error_clear();
    ag_tensor *y = ag_log(tape, x);
    ck_assert_ptr_nonnull(y);
    ck_assert(isnan(ag_tensor_get(y, 0)));
    ck_assert_ptr_null(ag_error());
    ag_tape_free(tape);
}
END_TEST

START_TEST(anomaly_setter_returns_previous)
{
    ag_tape *tape = ag_tape_new();

    ck_assert(!ag_tape_set_anomaly_mode(tape, true));
    ck_assert(ag_tape_anomaly_mode(tape));
    ck_assert(ag_tape_set_anomaly_mode(tape, false));
    ck_assert(!ag_tape_anomaly_mode(tape));
    ag_tape_free(tape);
}
END_TEST

START_TEST(anomaly_forward_names_first_record)
{
    /* exp is record 0 and finite; log(x - 1) at x = 1 is -inf in record 2. */
    const double values[3] = {2.0, 1.0, 3.0};
    ag_tape *tape = ag_tape_new();
    ag_tape_set_anomaly_mode(tape, true);
    ag_tensor *x = leaf(tape, AG_F64, AG_SHAPE(3), values);

    ck_assert_ptr_nonnull(ag_exp(tape, x));
    ag_tensor *shifted = ag_add_scalar(tape, x, -1.0);
    ck_assert_ptr_nonnull(shifted);
    ck_assert_ptr_null(ag_log(tape, shifted));
    assert_error_mentions("ag_log");
    assert_error_mentions("record 2");
    assert_error_mentions("0 NaN and 1 inf");
    assert_error_mentions("element 1");
    assert_error_mentions("input 0 (3) f64 min 0 max 2, 0 NaN, 0 inf");

    /* The failed op appended no record. */
    ck_assert_uint_eq(ag_tape_size(tape), 2);
    ag_tape_free(tape);
}
END_TEST

START_TEST(anomaly_forward_summarises_inputs)
{
    /* An inf already in the input is counted in the summary. */
    const double values[4] = {INFINITY, -2.0, 0.5, NAN};
    const double others[4] = {1.0, 1.0, 1.0, 1.0};
    ag_tape *tape = ag_tape_new();
    ag_tape_set_anomaly_mode(tape, true);
    ag_tensor *a = leaf(tape, AG_F32, AG_SHAPE(2, 2), values);
    ag_tensor *b = leaf(tape, AG_F32, AG_SHAPE(2, 2), others);

    ck_assert_ptr_null(ag_mul(tape, a, b));
    assert_error_mentions("ag_mul");
    assert_error_mentions("1 NaN and 1 inf");
    assert_error_mentions("the first at element 0");
    assert_error_mentions("input 0 (2x2) f32 min -2 max inf, 1 NaN, 1 inf");
    assert_error_mentions("input 1 (2x2) f32 min 1 max 1, 0 NaN, 0 inf");
    ag_tape_free(tape);
}
END_TEST

START_TEST(anomaly_unrecorded_op)
{
    /* Without a gradient to record, the op is still checked. */
    const double values[2] = {1.0, -1.0};
    ag_tape *tape = ag_tape_new();
    ag_tape_set_anomaly_mode(tape, true);
    ag_tensor *x = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(2), values);

    ck_assert_ptr_null(ag_sqrt(tape, x));
    assert_error_mentions("ag_sqrt");
    assert_error_mentions("unrecorded op");
    assert_error_mentions("1 NaN and 0 inf");
    ag_tape_free(tape);
}
END_TEST

START_TEST(anomaly_backward_inf)
{
    /* sqrt is finite at 0, but its derivative 1 / (2 sqrt(x)) is inf. */
    const double values[2] = {0.0, 4.0};
    ag_tape *tape = ag_tape_new();
    ag_tape_set_anomaly_mode(tape, true);
    ag_tensor *x = leaf(tape, AG_F64, AG_SHAPE(2), values);
    ag_tensor *loss = ag_sum(tape, ag_sqrt(tape, x));

    ck_assert_ptr_nonnull(loss);
    ck_assert_int_eq(ag_backward(tape, loss, NULL), -1);
    assert_error_mentions("ag_backward");
    assert_error_mentions("record 0 (sqrt)");
    assert_error_mentions("0 NaN and 1 inf in the adjoint of input 0");
    assert_error_mentions("element 0");
    assert_error_mentions("input 0 (2) f64 min 0 max 4");
    ag_tape_free(tape);
}
END_TEST

START_TEST(anomaly_backward_nan)
{
    /* sqrt(x) * 0 is finite, but its backward pass computes 0 * inf = NaN
     * (as PyTorch does); anomaly mode stops there, before it reaches x. */
    const double values[2] = {0.0, 4.0};
    const double zeros[2] = {0.0, 0.0};
    ag_tape *tape = ag_tape_new();
    ag_tape_set_anomaly_mode(tape, true);
    ag_tensor *x = leaf(tape, AG_F64, AG_SHAPE(2), values);
    ag_tensor *mask = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(2), zeros);
    ag_tensor *loss = ag_sum(tape, ag_mul(tape, ag_sqrt(tape, x), mask));

    ck_assert_ptr_nonnull(loss);
    ck_assert_int_eq(ag_backward(tape, loss, NULL), -1);
    assert_error_mentions("record 0 (sqrt)");
    assert_error_mentions("1 NaN and 0 inf");
    assert_error_mentions("output adjoint min 0 max 0, 0 non-finite");
    ag_tape_free(tape);
}
END_TEST

START_TEST(anomaly_seed_checked)
{
    const double values[2] = {1.0, 2.0};
    const double seed_values[2] = {1.0, NAN};
    ag_tape *tape = ag_tape_new();
    ag_tape_set_anomaly_mode(tape, true);
    ag_tensor *x = leaf(tape, AG_F64, AG_SHAPE(2), values);
    ag_tensor *y = ag_exp(tape, x);
    ag_tensor *seed = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(2), seed_values);

    ck_assert_int_eq(ag_backward(tape, y, seed), -1);
    assert_error_mentions("seed");
    assert_error_mentions("1 NaN and 0 inf");
    assert_error_mentions("element 1");
    ag_tape_free(tape);
}
END_TEST

/* Returns sum(sqrt(x)) at x = (0, 4) on a tape in anomaly mode: finite,
 * but the derivative at 0 is inf. */
static ag_tensor *sqrt_at_zero(ag_tape *tape, ag_tensor **x)
{
    const double values[2] = {0.0, 4.0};

    ag_tape_set_anomaly_mode(tape, true);
    *x = leaf(tape, AG_F64, AG_SHAPE(2), values);

    ag_tensor *loss = ag_sum(tape, ag_sqrt(tape, *x));
    ck_assert_ptr_nonnull(loss);
    return loss;
}

/* ag_grad runs the same backward rules as ag_backward, so anomaly mode
 * stops it at the same record, with its own name in the message. */
START_TEST(anomaly_grad_without_graph)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = NULL;
    ag_tensor *loss = sqrt_at_zero(tape, &x);
    ag_tensor *grad = NULL;

    ck_assert_int_eq(ag_grad(tape, loss, NULL, 1, &x, &grad, false), -1);
    assert_error_mentions("ag_grad: anomaly mode: the backward rule of record 0 (sqrt)");
    assert_error_mentions("0 NaN and 1 inf in the adjoint of input 0");
    ag_tape_free(tape);
}
END_TEST

START_TEST(anomaly_grad_seed_checked)
{
    const double values[2] = {1.0, 2.0};
    const double seed_values[2] = {INFINITY, 1.0};
    ag_tape *tape = ag_tape_new();
    ag_tape_set_anomaly_mode(tape, true);
    ag_tensor *x = leaf(tape, AG_F64, AG_SHAPE(2), values);
    ag_tensor *y = ag_exp(tape, x);
    ag_tensor *seed = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(2), seed_values);
    ag_tensor *grad = NULL;

    ck_assert_int_eq(ag_grad(tape, y, seed, 1, &x, &grad, false), -1);
    assert_error_mentions("ag_grad: anomaly mode: the seed gradient holds 0 NaN and 1 inf");
    ck_assert_int_eq(ag_grad(tape, y, seed, 1, &x, &grad, true), -1);
    assert_error_mentions("ag_grad: anomaly mode: the seed");
    ag_tape_free(tape);
}
END_TEST

/* With create_graph the adjoints are ops on the tape, and the op that makes
 * the infinity reports it. */
START_TEST(anomaly_grad_with_graph)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = NULL;
    ag_tensor *loss = sqrt_at_zero(tape, &x);
    ag_tensor *grad = NULL;

    ck_assert_int_eq(ag_grad(tape, loss, NULL, 1, &x, &grad, true), -1);
    assert_error_mentions("anomaly mode");
    assert_error_mentions("1 inf");
    ag_tape_free(tape);
}
END_TEST

/* ag_backward reports a non-finite seed even when no gradient flows from it,
 * so ag_grad must too when no requested input is on the output's path. */
START_TEST(anomaly_grad_seed_checked_off_path)
{
    const double values[2] = {1.0, 2.0};
    const double seed_values[2] = {NAN, 1.0};
    ag_tape *tape = ag_tape_new();
    ag_tape_set_anomaly_mode(tape, true);
    ag_tensor *x = leaf(tape, AG_F64, AG_SHAPE(2), values);
    ag_tensor *w = leaf(tape, AG_F64, AG_SHAPE(2), values);
    ag_tensor *y = ag_exp(tape, w); /* y does not depend on x. */
    ag_tensor *seed = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(2), seed_values);
    ag_tensor *grad = NULL;

    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(ag_grad(tape, y, seed, 1, &x, &grad, false), -1);
    assert_error_mentions("ag_grad: anomaly mode: the seed gradient holds 1 NaN");
    ag_tape_free(tape);
}
END_TEST

START_TEST(anomaly_finite_run_unchanged)
{
    /* With finite values the mode changes neither values nor gradients:
     * f = sum(tanh(x)^2 * x) has df/dx = 2 tanh(x)(1 - tanh(x)^2) x + tanh(x)^2. */
    const double values[3] = {0.5, -1.25, 2.0};

    for (int mode = 0; mode < 2; mode++) {
        ag_tape *tape = ag_tape_new();
        ag_tape_set_anomaly_mode(tape, mode == 1);
        ag_tensor *x = leaf(tape, AG_F64, AG_SHAPE(3), values);
        ag_tensor *t = ag_tanh(tape, x);
        ag_tensor *f = ag_sum(tape, ag_mul(tape, ag_mul(tape, t, t), x));

        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(ag_backward(tape, f, NULL), 0);
        ck_assert_uint_eq(ag_tape_size(tape), 4);
        for (size_t i = 0; i < 3; i++) {
            double xi = values[i];
            double ti = tanh(xi);
            double expected = 2 * ti * (1 - ti * ti) * xi + ti * ti;
            ck_assert_double_eq_tol(ag_tensor_get(ag_tensor_grad(x), i), expected, 1e-15);
        }
        ag_tape_free(tape);
    }
}
END_TEST

START_TEST(anomaly_relu_passes_nan_to_report)
{
    /* relu passes a NaN on, so anomaly mode reports it at relu. */
    const double values[2] = {NAN, -1.0};
    ag_tape *tape = ag_tape_new();
    ag_tape_set_anomaly_mode(tape, true);
    ag_tensor *x = leaf(tape, AG_F32, AG_SHAPE(2), values);

    ck_assert_ptr_null(ag_relu(tape, x));
    assert_error_mentions("ag_relu");
    assert_error_mentions("input 0 (2) f32 min -1 max -1, 1 NaN, 0 inf");
    ag_tape_free(tape);
}
END_TEST

static Suite *anomaly_suite(void)
{
    Suite *suite = suite_create("anomaly");
    TCase *tc = tcase_create("anomaly");

    tcase_add_test(tc, anomaly_off_by_default);
    tcase_add_test(tc, anomaly_setter_returns_previous);
    tcase_add_test(tc, anomaly_forward_names_first_record);
    tcase_add_test(tc, anomaly_forward_summarises_inputs);
    tcase_add_test(tc, anomaly_unrecorded_op);
    tcase_add_test(tc, anomaly_backward_inf);
    tcase_add_test(tc, anomaly_backward_nan);
    tcase_add_test(tc, anomaly_seed_checked);
    tcase_add_test(tc, anomaly_grad_without_graph);
    tcase_add_test(tc, anomaly_grad_seed_checked);
    tcase_add_test(tc, anomaly_grad_seed_checked_off_path);
    tcase_add_test(tc, anomaly_grad_with_graph);
    tcase_add_test(tc, anomaly_finite_run_unchanged);
    tcase_add_test(tc, anomaly_relu_passes_nan_to_report);
    suite_add_tcase(suite, tc);
    return suite;
}

int main(void)
{
    return run_suite(anomaly_suite());
}
