/* Losses: each value and gradient against its formula written out with
 * loops in f64, through the gradient checker, at the extremes where naive
 * forms overflow, and the error for each invalid argument. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check_helpers.h"
#include "tapegrad/nn.h"

#define ROWS 3
#define COLS 4
#define N (ROWS * COLS)

static const double pi = 3.14159265358979323846;

/* A (ROWS x COLS) f64 tensor of uniform values in [low, high) that requires
 * a gradient. */
static ag_tensor *random_input(ag_tape *tape, double low, double high, ag_rng *rng)
{
    ag_tensor *t = ag_rand_uniform(tape, AG_F64, AG_SHAPE(ROWS, COLS), low, high, rng);

    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(ag_tensor_set_requires_grad(t, true), 0);
    return t;
}

/* Runs the backward pass from `loss` and checks it is one element. */
static double backward_value(ag_tape *tape, ag_tensor *loss)
{
    ck_assert_msg(loss != NULL, "loss failed: %s", ag_error() ? ag_error() : "");
    ck_assert_int_eq(ag_tensor_ndim(loss), 1);
    ck_assert_uint_eq(ag_tensor_dim(loss, 0), 1);
    ck_assert_int_eq(ag_backward(tape, loss, NULL), 0);
    return ag_tensor_item(loss);
}

static double grad_at(const ag_tensor *t, size_t i)
{
    return ag_tensor_get(ag_tensor_grad(t), i);
}

/* ---- values and gradients against loops ----------------------------------- */

START_TEST(mse_matches_formula)
{
    ag_tape *tape = ag_tape_new();
    ag_rng rng = ag_rng_new(1);
    ag_tensor *f = random_input(tape, -2, 2, &rng);
    ag_tensor *y = random_input(tape, -2, 2, &rng);
    double expected = 0.0;

    /* L = (1/N) sum (f - y)^2, dL/df = 2 (f - y) / N = -dL/dy */
    double value = backward_value(tape, nn_mse_loss(tape, f, y));
    for (size_t i = 0; i < N; i++) {
        double d = ag_tensor_get(f, i) - ag_tensor_get(y, i);
        expected += d * d / N;
        ck_assert_close(grad_at(f, i), 2.0 * d / N, 1e-12, "dL/df");
        ck_assert_close(grad_at(y, i), -2.0 * d / N, 1e-12, "dL/dy");
    }
    ck_assert_close(value, expected, 1e-12, "mse");
    ag_tape_free(tape);
}
END_TEST

START_TEST(sum_of_squares_matches_formula)
{
    ag_tape *tape = ag_tape_new();
    ag_rng rng = ag_rng_new(2);
    ag_tensor *f = random_input(tape, -2, 2, &rng);
    ag_tensor *y = random_input(tape, -2, 2, &rng);
    double expected = 0.0;

    /* L = 1/2 sum (y - f)^2, dL/df = f - y */
    double value = backward_value(tape, nn_sum_of_squares_loss(tape, f, y));
    for (size_t i = 0; i < N; i++) {
        double d = ag_tensor_get(y, i) - ag_tensor_get(f, i);
        expected += 0.5 * d * d;
        ck_assert_close(grad_at(f, i), -d, 1e-12, "dL/df");
        ck_assert_close(grad_at(y, i), d, 1e-12, "dL/dy");
    }
    ck_assert_close(value, expected, 1e-12, "sum of squares");
    ag_tape_free(tape);
}
END_TEST

START_TEST(bce_matches_formula)
{
    ag_tape *tape = ag_tape_new();
    ag_rng rng = ag_rng_new(3);
    ag_tensor *p = random_input(tape, 0.02, 0.98, &rng);
    ag_tensor *y = random_input(tape, 0, 1, &rng); /* soft labels */
    double expected = 0.0;

    /* L = -(1/N) sum [y log p + (1 - y) log(1 - p)] */
    double value = backward_value(tape, nn_bce_loss(tape, p, y));
    for (size_t i = 0; i < N; i++) {
        double pi_ = ag_tensor_get(p, i);
        double yi = ag_tensor_get(y, i);
        expected -= (yi * log(pi_) + (1 - yi) * log(1 - pi_)) / N;
        ck_assert_close(grad_at(p, i), (pi_ - yi) / (pi_ * (1 - pi_)) / N, 1e-12, "dL/dp");
        ck_assert_close(grad_at(y, i), (log(1 - pi_) - log(pi_)) / N, 1e-12, "dL/dy");
    }
    ck_assert_close(value, expected, 1e-12, "bce");
    ag_tape_free(tape);
}
END_TEST

START_TEST(bce_with_logits_matches_formula)
{
    ag_tape *tape = ag_tape_new();
    ag_rng rng = ag_rng_new(4);
    ag_tensor *a = random_input(tape, -6, 6, &rng);
    ag_tensor *y = random_input(tape, 0, 1, &rng);
    double expected = 0.0;

    /* The cross-entropy of sigmoid(a): -(1/N) sum [y log s + (1 - y) log(1 - s)],
     * dL/da = (s - y) / N, dL/dy = -a / N. */
    double value = backward_value(tape, nn_bce_with_logits_loss(tape, a, y));
    for (size_t i = 0; i < N; i++) {
        double ai = ag_tensor_get(a, i);
        double yi = ag_tensor_get(y, i);
        double s = 1.0 / (1.0 + exp(-ai));
        expected -= (yi * log(s) + (1 - yi) * log(1 - s)) / N;
        ck_assert_close(grad_at(a, i), (s - yi) / N, 1e-12, "dL/da");
        ck_assert_close(grad_at(y, i), -ai / N, 1e-12, "dL/dy");
    }
    ck_assert_close(value, expected, 1e-12, "bce with logits");
    ag_tape_free(tape);
}
END_TEST

START_TEST(cross_entropy_matches_formula)
{
    const double labels[ROWS] = {2, 0, 3};
    ag_tape *tape = ag_tape_new();
    ag_rng rng = ag_rng_new(5);
    ag_tensor *a = random_input(tape, -3, 3, &rng);
    ag_tensor *c = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(ROWS), labels);
    double expected = 0.0;

    /* L = (1/B) sum_r [log sum_k exp(a_rk) - a_r,c_r],
     * dL/da_rk = (exp(a_rk) / sum_j exp(a_rj) - [k == c_r]) / B */
    double value = backward_value(tape, nn_cross_entropy_loss(tape, a, c));
    for (size_t r = 0; r < ROWS; r++) {
        double sum = 0.0;
        for (size_t k = 0; k < COLS; k++)
            sum += exp(ag_tensor_get(a, r * COLS + k));
        expected += (log(sum) - ag_tensor_get(a, r * COLS + (size_t)labels[r])) / ROWS;
        for (size_t k = 0; k < COLS; k++) {
            double softmax = exp(ag_tensor_get(a, r * COLS + k)) / sum;
            double onehot = k == (size_t)labels[r] ? 1.0 : 0.0;
            ck_assert_close(grad_at(a, r * COLS + k), (softmax - onehot) / ROWS, 1e-12,
                            "dL/da");
        }
    }
    ck_assert_close(value, expected, 1e-12, "cross-entropy");
    ag_tape_free(tape);
}
END_TEST

START_TEST(cross_entropy_f32)
{
    const double labels[ROWS] = {1, 1, 0};
    ag_tape *tape = ag_tape_new();
    ag_rng rng = ag_rng_new(6);
    ag_tensor *a = ag_rand_uniform(tape, AG_F32, AG_SHAPE(ROWS, COLS), -3, 3, &rng);
    ag_tensor *c = ag_tensor_from_doubles(tape, AG_F32, AG_SHAPE(ROWS), labels);
    double expected = 0.0;

    ag_tensor_set_requires_grad(a, true);
    double value = backward_value(tape, nn_cross_entropy_loss(tape, a, c));
    for (size_t r = 0; r < ROWS; r++) {
        double sum = 0.0;
        for (size_t k = 0; k < COLS; k++)
            sum += exp(ag_tensor_get(a, r * COLS + k));
        expected += (log(sum) - ag_tensor_get(a, r * COLS + (size_t)labels[r])) / ROWS;
        double softmax = exp(ag_tensor_get(a, r * COLS)) / sum;
        ck_assert_close(grad_at(a, r * COLS), (softmax - (labels[r] == 0)) / ROWS, 2e-6,
                        "dL/da f32");
    }
    ck_assert_int_eq(ag_tensor_dtype(ag_tensor_grad(a)), AG_F32);
    ck_assert_close(value, expected, 2e-6, "cross-entropy f32");
    ag_tape_free(tape);
}
END_TEST

START_TEST(gaussian_nll_matches_formula)
{
    ag_tape *tape = ag_tape_new();
    ag_rng rng = ag_rng_new(7);
    ag_tensor *f = random_input(tape, -2, 2, &rng);
    ag_tensor *y = random_input(tape, -2, 2, &rng);
    ag_tensor *sigma = ag_scalar(tape, AG_F64, 0.7);
    double s = 0.7;
    double squares = 0.0;

    ag_tensor_set_requires_grad(sigma, true);
    /* L = sum (y - f)^2 / (2 s^2) + (N/2) log(2 pi s^2),
     * dL/df = -(y - f) / s^2, dL/ds = -sum (y - f)^2 / s^3 + N / s */
    double value = backward_value(tape, nn_gaussian_nll_loss(tape, f, y, sigma));
    for (size_t i = 0; i < N; i++) {
        double d = ag_tensor_get(y, i) - ag_tensor_get(f, i);
        squares += d * d;
        ck_assert_close(grad_at(f, i), -d / (s * s), 1e-12, "dL/df");
        ck_assert_close(grad_at(y, i), d / (s * s), 1e-12, "dL/dy");
    }
    ck_assert_close(value, squares / (2 * s * s) + N / 2.0 * log(2 * pi * s * s), 1e-12,
                    "gaussian nll");
    ck_assert_close(ag_tensor_item(ag_tensor_grad(sigma)), -squares / (s * s * s) + N / s,
                    1e-12, "dL/dsigma");
    ag_tape_free(tape);
}
END_TEST

/* ---- gradient checker ----------------------------------------------------- */

static ag_tensor *mse_fn(ag_tape *tape, ag_tensor *const *in, int n, void *user)
{
    (void)n;
    (void)user;
    return nn_mse_loss(tape, in[0], in[1]);
}

static ag_tensor *sum_of_squares_fn(ag_tape *tape, ag_tensor *const *in, int n, void *user)
{
    (void)n;
    (void)user;
    return nn_sum_of_squares_loss(tape, in[0], in[1]);
}

static ag_tensor *bce_fn(ag_tape *tape, ag_tensor *const *in, int n, void *user)
{
    (void)n;
    (void)user;
    return nn_bce_loss(tape, in[0], in[1]);
}

static ag_tensor *bce_logits_fn(ag_tape *tape, ag_tensor *const *in, int n, void *user)
{
    (void)n;
    (void)user;
    return nn_bce_with_logits_loss(tape, in[0], in[1]);
}

static ag_tensor *cross_entropy_fn(ag_tape *tape, ag_tensor *const *in, int n, void *user)
{
    (void)n;
    (void)user;
    return nn_cross_entropy_loss(tape, in[0], in[1]);
}

static ag_tensor *gaussian_nll_fn(ag_tape *tape, ag_tensor *const *in, int n, void *user)
{
    (void)n;
    (void)user;
    return nn_gaussian_nll_loss(tape, in[0], in[1], in[2]);
}

/* Runs ag_gradcheck on f with its inputs and asserts it passed. */
static void assert_gradcheck(const char *name, ag_function f, int n_inputs,
                             ag_tensor *const *inputs)
{
    ag_gradcheck_result result;

    ck_assert_msg(ag_gradcheck(f, NULL, n_inputs, inputs, NULL, &result) == 0,
                  "%s: gradcheck failed to run: %s", name, ag_error());
    ck_assert_msg(result.passed, "%s: %s", name, result.message);
    ck_assert_uint_gt(result.n_checked, 0);
}

START_TEST(losses_pass_gradcheck)
{
    const double labels[ROWS] = {3, 1, 0};
    ag_tape *tape = ag_tape_new();
    ag_rng rng = ag_rng_new(8);
    ag_tensor *f = random_input(tape, -2, 2, &rng);
    ag_tensor *y = random_input(tape, -2, 2, &rng);
    ag_tensor *p = random_input(tape, 0.1, 0.9, &rng);
    ag_tensor *q = random_input(tape, 0, 1, &rng);
    ag_tensor *c = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(ROWS), labels);
    ag_tensor *sigma = ag_scalar(tape, AG_F64, 1.3);

    ag_tensor_set_requires_grad(sigma, true);
    assert_gradcheck("mse", mse_fn, 2, (ag_tensor *[]){f, y});
    assert_gradcheck("sum of squares", sum_of_squares_fn, 2, (ag_tensor *[]){f, y});
    assert_gradcheck("bce", bce_fn, 2, (ag_tensor *[]){p, q});
    assert_gradcheck("bce with logits", bce_logits_fn, 2, (ag_tensor *[]){f, q});
    assert_gradcheck("cross-entropy", cross_entropy_fn, 2, (ag_tensor *[]){f, c});
    assert_gradcheck("gaussian nll", gaussian_nll_fn, 3, (ag_tensor *[]){f, y, sigma});
    ag_tape_free(tape);
}
END_TEST

/* ---- extremes ------------------------------------------------------------- */

START_TEST(bce_finite_at_0_and_1)
{
    /* Logs are clamped at -100, so a confident wrong prediction costs 100; the
     * gradient's denominator p (1 - p) is kept at least 1e-12. */
    const double probs[4] = {0, 0, 1, 1};
    const double targets[4] = {0, 1, 0, 1};
    const double losses[4] = {0, 100, 100, 0};
    const double grads[4] = {0, -1e12, 1e12, 0};
    ag_tape *tape = ag_tape_new();
    ag_tensor *p = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(4), probs);
    ag_tensor *y = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(4), targets);

    ag_tensor_set_requires_grad(p, true);
    double value = backward_value(tape, nn_bce_loss(tape, p, y));
    ck_assert_double_eq_tol(value, (losses[1] + losses[2]) / 4, 1e-12);
    for (size_t i = 0; i < 4; i++) {
        ck_assert(isfinite(grad_at(p, i)));
        ck_assert_close(grad_at(p, i), grads[i] / 4, 1e-12, "dL/dp at 0 and 1");
    }
    ag_tape_free(tape);
}
END_TEST

START_TEST(bce_with_logits_at_1000)
{
    /* softplus(1000) = 1000 and softplus(-1000) = 0 without overflow;
     * the gradient is (sigmoid(a) - y) / N. */
    const double logits[4] = {1000, 1000, -1000, -1000};
    const double targets[4] = {1, 0, 0, 1};
    const double grads[4] = {0, 1, 0, -1};
    const ag_dtype dtypes[2] = {AG_F32, AG_F64};

    for (int d = 0; d < 2; d++) {
        ag_tape *tape = ag_tape_new();
        ag_tensor *a = ag_tensor_from_doubles(tape, dtypes[d], AG_SHAPE(4), logits);
        ag_tensor *y = ag_tensor_from_doubles(tape, dtypes[d], AG_SHAPE(4), targets);

        ag_tensor_set_requires_grad(a, true);
        double value = backward_value(tape, nn_bce_with_logits_loss(tape, a, y));
        ck_assert_double_eq(value, 2000.0 / 4);
        for (size_t i = 0; i < 4; i++)
            ck_assert_double_eq(grad_at(a, i), grads[i] / 4);
        ag_tape_free(tape);
    }
}
END_TEST

START_TEST(cross_entropy_at_1e4)
{
    /* Row 0 is right with certainty (loss 0), row 1 wrong by 2e4. The
     * softmax is exactly onehot(0), since exp(-1e4) underflows to 0. */
    const double logits[6] = {1e4, -1e4, 0, 1e4, -1e4, 0};
    const double labels[2] = {0, 1};
    const double grads[6] = {0, 0, 0, 1, -1, 0};
    const ag_dtype dtypes[2] = {AG_F32, AG_F64};

    for (int d = 0; d < 2; d++) {
        ag_tape *tape = ag_tape_new();
        ag_tensor *a = ag_tensor_from_doubles(tape, dtypes[d], AG_SHAPE(2, 3), logits);
        ag_tensor *c = ag_tensor_from_doubles(tape, dtypes[d], AG_SHAPE(2), labels);

        ag_tensor_set_requires_grad(a, true);
        double value = backward_value(tape, nn_cross_entropy_loss(tape, a, c));
        ck_assert_double_eq(value, 2e4 / 2);
        for (size_t i = 0; i < 6; i++)
            ck_assert_double_eq(grad_at(a, i), grads[i] / 2);
        ag_tape_free(tape);
    }
}
END_TEST

START_TEST(cross_entropy_empty_batch_error)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *a = ag_zeros(tape, AG_F64, AG_SHAPE(0, 3));
    ag_tensor *c = ag_zeros(tape, AG_F64, AG_SHAPE(0));
    ag_tensor *loss = nn_cross_entropy_loss(tape, a, c);

    ck_assert_ptr_null(loss);
    ck_assert_ptr_nonnull(strstr(ag_error(), "no elements"));
    ag_tape_free(tape);
}
END_TEST

START_TEST(cross_entropy_no_classes_error)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *a = ag_zeros(tape, AG_F64, AG_SHAPE(2, 0));
    ag_tensor *c = ag_zeros(tape, AG_F64, AG_SHAPE(2));

    ck_assert_ptr_null(nn_cross_entropy_loss(tape, a, c));
    ck_assert_ptr_nonnull(strstr(ag_error(), "logits of shape (2x0) have no classes"));
    ag_tape_free(tape);
}
END_TEST

START_TEST(cross_entropy_is_registered_op)
{
    /* The fused loss is an ordinary registered op: found by name and
     * recorded on the tape like a built-in. */
    const double labels[1] = {0};
    ag_tape *tape = ag_tape_new();
    ag_tensor *a = ag_zeros(tape, AG_F64, AG_SHAPE(1, 2));
    ag_tensor *c = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(1), labels);

    ag_tensor_set_requires_grad(a, true);
    ag_tensor *loss = nn_cross_entropy_loss(tape, a, c);
    ck_assert_ptr_nonnull(loss);
    ck_assert_ptr_nonnull(ag_op_find("nn_softmax_cross_entropy"));
    ck_assert_ptr_eq(ag_tensor_record(loss)->op, ag_op_find("nn_softmax_cross_entropy"));
    ck_assert_double_eq_tol(ag_tensor_item(loss), log(2.0), 1e-15);
    ag_tape_free(tape);
}
END_TEST

/* Labels that require a gradient get none, and the per-record check leaves
 * them alone: moving a class index off an integer would make the loss
 * undefined, not show a wrong rule. */
START_TEST(cross_entropy_labels_requiring_grad)
{
    const double logits[4] = {0.5, -1.0, 2.0, 0.25};
    const double labels[2] = {1, 0};
    ag_tape *tape = ag_tape_new();
    ag_tensor *a = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(2, 2), logits);
    ag_tensor *c = ag_tensor_from_doubles(NULL, AG_F64, AG_SHAPE(2), labels);
    ag_record_check_result result;

    ck_assert_int_eq(ag_tensor_set_requires_grad(a, true), 0);
    ck_assert_int_eq(ag_tensor_set_requires_grad(c, true), 0);
    ag_tensor *loss = nn_cross_entropy_loss(tape, a, c);
    ck_assert_ptr_nonnull(loss);
    ck_assert_int_eq(ag_backward(tape, loss, NULL), 0);
    ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(c), 0), 0.0);
    ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(c), 1), 0.0);
    ck_assert_int_eq(ag_check_records(tape, NULL, &result), 0);
    ck_assert_msg(result.passed, "%s", result.message);
    ag_tensor_free(c);
    ag_tape_free(tape);
}
END_TEST

/* ---- invalid arguments ---------------------------------------------------- */

typedef ag_tensor *(*pair_loss)(ag_tape *, ag_tensor *, ag_tensor *);

static const struct {
    const char *name;
    pair_loss loss;
} pair_losses[] = {
    {"nn_mse_loss", nn_mse_loss},
    {"nn_sum_of_squares_loss", nn_sum_of_squares_loss},
    {"nn_bce_loss", nn_bce_loss},
    {"nn_bce_with_logits_loss", nn_bce_with_logits_loss},
};

START_TEST(shape_mismatch_rejected)
{
    /* (N x 1) against (N) would broadcast to (N x N) in an op; a loss
     * reports it instead. */
    ag_tape *tape = ag_tape_new();
    ag_tensor *column = ag_full(tape, AG_F64, AG_SHAPE(4, 1), 0.5);
    ag_tensor *flat = ag_full(tape, AG_F64, AG_SHAPE(4), 0.5);

    ag_error_clear();
    ck_assert_ptr_null(pair_losses[_i].loss(tape, column, flat));
    ck_assert_ptr_nonnull(ag_error());
    ck_assert_ptr_nonnull(strstr(ag_error(), pair_losses[_i].name));
    ck_assert_ptr_nonnull(strstr(ag_error(), "prediction of shape (4x1) and target of shape (4)"));
    ag_tape_free(tape);
}
END_TEST

START_TEST(dtype_mismatch_rejected)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *f = ag_full(tape, AG_F64, AG_SHAPE(4), 0.5);
    ag_tensor *y = ag_full(tape, AG_F32, AG_SHAPE(4), 0.5);

    ag_error_clear();
    ck_assert_ptr_null(pair_losses[_i].loss(tape, f, y));
    ck_assert_ptr_nonnull(strstr(ag_error(), "prediction is f64 and target is f32"));
    ag_tape_free(tape);
}
END_TEST

START_TEST(null_input_keeps_message)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *y = ag_full(tape, AG_F64, AG_SHAPE(4), 0.5);

    ag_set_error("earlier failure");
    ck_assert_ptr_null(pair_losses[_i].loss(tape, NULL, y));
    ck_assert_str_eq(ag_error(), "earlier failure");
    ag_tape_free(tape);
}
END_TEST

/* Asserts that cross-entropy of `logits` (2x3 of zeros) rejects `labels`
 * with a message containing `fragment`. */
static void assert_labels_rejected(const double labels[2], const char *fragment)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *a = ag_zeros(tape, AG_F64, AG_SHAPE(2, 3));
    ag_tensor *c = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(2), labels);

    ag_error_clear();
    ck_assert_error_contains(nn_cross_entropy_loss(tape, a, c), fragment);
    ag_tape_free(tape);
}

START_TEST(cross_entropy_bad_labels_rejected)
{
    assert_labels_rejected((const double[]){0, 2.5}, "label 2.5 in row 1 is not an integer");
    assert_labels_rejected((const double[]){3, 0}, "label 3 in row 0 is out of range");
    assert_labels_rejected((const double[]){0, -1}, "label -1 in row 1 is out of range");
    assert_labels_rejected((const double[]){NAN, 0}, "in row 0 is not an integer");
}
END_TEST

START_TEST(cross_entropy_bad_shapes_rejected)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *a = ag_zeros(tape, AG_F64, AG_SHAPE(2, 3));
    ag_tensor *flat = ag_zeros(tape, AG_F64, AG_SHAPE(6));
    ag_tensor *c = ag_zeros(tape, AG_F64, AG_SHAPE(2));
    ag_tensor *column = ag_zeros(tape, AG_F64, AG_SHAPE(2, 1));
    ag_tensor *short_labels = ag_zeros(tape, AG_F64, AG_SHAPE(1));

    ck_assert_error_contains(nn_cross_entropy_loss(tape, a, column),
                             "logits of shape (2x3) and labels of shape (2x1)");
    ck_assert_error_contains(nn_cross_entropy_loss(tape, flat, c),
                             "logits of shape (6) and labels of shape (2)");
    ck_assert_error_contains(nn_cross_entropy_loss(tape, a, short_labels),
                             "labels of shape (1) do not fit");
    ag_tape_free(tape);
}
END_TEST

START_TEST(gaussian_nll_sigma_any_shape)
{
    /* A one-element sigma of shape (1x1) gives the loss and gradient of
     * one of shape (1). */
    ag_tape *tape = ag_tape_new();
    ag_tensor *f = ag_full(tape, AG_F64, AG_SHAPE(2), 0.25);
    ag_tensor *y = ag_full(tape, AG_F64, AG_SHAPE(2), 1.0);
    ag_tensor *sigma = ag_full(tape, AG_F64, AG_SHAPE(1, 1), 0.5);
    double s = 0.5;
    double squares = 2 * 0.75 * 0.75;

    ag_tensor_set_requires_grad(sigma, true);
    double value = backward_value(tape, nn_gaussian_nll_loss(tape, f, y, sigma));
    ck_assert_close(value, squares / (2 * s * s) + log(2 * pi * s * s), 1e-12, "value");
    ck_assert_close(ag_tensor_item(ag_tensor_grad(sigma)), -squares / (s * s * s) + 2 / s, 1e-12,
                    "dL/dsigma");
    ag_tape_free(tape);
}
END_TEST

START_TEST(bce_probability_outside_rejected)
{
    const double probs[3] = {0.5, 1.25, 0.5};
    ag_tape *tape = ag_tape_new();
    ag_tensor *p = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(3), probs);
    ag_tensor *y = ag_zeros(tape, AG_F64, AG_SHAPE(3));

    ck_assert_error_contains(nn_bce_loss(tape, p, y), "probability 1.25 at element 1");
    ag_tensor_set(p, 1, NAN);
    ck_assert_error_contains(nn_bce_loss(tape, p, y), "probability nan at element 1");
    ag_tape_free(tape);
}
END_TEST

START_TEST(cross_entropy_dtype_mismatch_rejected)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *a = ag_zeros(tape, AG_F32, AG_SHAPE(2, 3));
    ag_tensor *c = ag_zeros(tape, AG_F64, AG_SHAPE(2));

    ck_assert_error_contains(nn_cross_entropy_loss(tape, a, c), "logits are f32 and labels f64");
    ag_tape_free(tape);
}
END_TEST

START_TEST(gaussian_nll_bad_sigma_rejected)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *f = ag_zeros(tape, AG_F64, AG_SHAPE(3));
    ag_tensor *two = ag_ones(tape, AG_F64, AG_SHAPE(2));
    ag_tensor *f32 = ag_scalar(tape, AG_F32, 1.0);

    ck_assert_error_contains(nn_gaussian_nll_loss(tape, f, f, two),
                             "sigma of shape (2) and dtype f64 is not a one-element");
    ck_assert_error_contains(nn_gaussian_nll_loss(tape, f, f, f32), "dtype f32");
    ag_tape_free(tape);
}
END_TEST

/* ---- second derivatives ---------------------------------------------------- */

/* The Hessians below are computed in f64 from the losses' own rules, so they
 * agree with the closed forms up to rounding. */
#define HESSIAN_TOL 1e-12

/* A heap f64 tensor of shape (n) that requires a gradient. */
static ag_tensor *heap_variable(size_t n, const double *values)
{
    ag_tensor *t = ag_tensor_from_doubles(NULL, AG_F64, AG_SHAPE(n), values);

    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(ag_tensor_set_requires_grad(t, true), 0);
    return t;
}

/* Returns ag_hessian of f, asserting that it is (n x n). */
static ag_tensor *hessian_of(ag_function f, void *user, int n_inputs,
                             ag_tensor *const *inputs, size_t n)
{
    ag_tensor *h = ag_hessian(f, user, n_inputs, inputs);

    ck_assert_msg(h != NULL, "ag_hessian failed: %s", ag_error());
    ck_assert_int_eq(ag_tensor_ndim(h), 2);
    ck_assert_uint_eq(ag_tensor_dim(h, 0), n);
    ck_assert_uint_eq(ag_tensor_dim(h, 1), n);
    return h;
}

/* Cross-entropy of (2x3) logits passed flattened as (6), so the variables
 * are the six logits. `user` points to the two labels. */
static ag_tensor *cross_entropy_2x3_fn(ag_tape *tape, ag_tensor *const *in, int n,
                                       void *user)
{
    (void)n;
    ag_tensor *labels = ag_tensor_from_doubles(tape, ag_tensor_dtype(in[0]), AG_SHAPE(2),
                                               user);
    return nn_cross_entropy_loss(tape, ag_reshape(tape, in[0], AG_SHAPE(2, 3)), labels);
}

/* The same for one row of three logits. */
static ag_tensor *cross_entropy_1x3_fn(ag_tape *tape, ag_tensor *const *in, int n,
                                       void *user)
{
    (void)n;
    ag_tensor *labels = ag_tensor_from_doubles(tape, ag_tensor_dtype(in[0]), AG_SHAPE(1),
                                               user);
    return nn_cross_entropy_loss(tape, ag_reshape(tape, in[0], AG_SHAPE(1, 3)), labels);
}

START_TEST(bce_hessian_closed_form)
{
    /* l = -(1/N) sum [y log p + (1 - y) log(1 - p)]:
     * d2l/dp2 = (y / p^2 + (1 - y) / (1 - p)^2) / N,
     * d2l/dp dy = -1 / (N p (1 - p)), d2l/dy2 = 0, nothing across elements. */
    const double probs[3] = {0.2, 0.55, 0.9};
    const double targets[3] = {0.0, 0.3, 1.0};
    ag_tensor *inputs[2] = {heap_variable(3, probs), heap_variable(3, targets)};
    ag_tensor *h = hessian_of(bce_fn, NULL, 2, inputs, 6);

    for (size_t i = 0; i < 3; i++) {
        double p = probs[i];
        double y = targets[i];
        double pp = (y / (p * p) + (1 - y) / ((1 - p) * (1 - p))) / 3;
        double py = -1.0 / (3 * p * (1 - p));

        for (size_t j = 0; j < 3; j++) {
            double same = i == j ? 1.0 : 0.0;

            ck_assert_close(ag_tensor_get(h, i * 6 + j), same * pp, HESSIAN_TOL, "d2l/dp2");
            ck_assert_close(ag_tensor_get(h, i * 6 + 3 + j), same * py, HESSIAN_TOL,
                            "d2l/dp dy");
            ck_assert_close(ag_tensor_get(h, (3 + i) * 6 + j), same * py, HESSIAN_TOL,
                            "d2l/dy dp");
            ck_assert_close(ag_tensor_get(h, (3 + i) * 6 + 3 + j), 0.0, HESSIAN_TOL,
                            "d2l/dy2");
        }
    }
    ag_tensor_free(h);
    ag_tensor_free(inputs[0]);
    ag_tensor_free(inputs[1]);
}
END_TEST

START_TEST(bce_hessian_clamped_at_0_and_1)
{
    /* Where p (1 - p) < 1e-12, dl/dp = (p - y) / (N 1e-12), so
     * d2l/dp2 = 1e12 / N and d2l/dp dy = -1e12 / N. The clamped logs give
     * dl/dy = (log(1 - p) - max(log p, -100)) / N, whose derivative by p is
     * -1 / (N (1 - p)) = -1 / N at p = 0 and, by symmetry, -1 / N at p = 1.
     * Every entry stays finite, in f32 too, where 1/p overflows near 0. */
    const double probs[2] = {0.0, 1.0};
    const double targets[2] = {1.0, 0.0};
    const ag_dtype dtypes[2] = {AG_F64, AG_F32};
    const double tolerances[2] = {HESSIAN_TOL, 1e-6};

    for (int d = 0; d < 2; d++) {
        ag_tensor *inputs[2] = {
            ag_tensor_from_doubles(NULL, dtypes[d], AG_SHAPE(2), probs),
            ag_tensor_from_doubles(NULL, dtypes[d], AG_SHAPE(2), targets),
        };
        double tol = tolerances[d];

        ck_assert_int_eq(ag_tensor_set_requires_grad(inputs[0], true), 0);
        ck_assert_int_eq(ag_tensor_set_requires_grad(inputs[1], true), 0);
        ag_tensor *h = hessian_of(bce_fn, NULL, 2, inputs, 4);
        for (size_t k = 0; k < 16; k++)
            ck_assert_msg(isfinite(ag_tensor_get(h, k)), "entry %zu is %g", k,
                          ag_tensor_get(h, k));
        for (size_t i = 0; i < 2; i++) {
            ck_assert_close(ag_tensor_get(h, i * 4 + i), 1e12 / 2, tol, "d2l/dp2");
            ck_assert_close(ag_tensor_get(h, i * 4 + 2 + i), -1e12 / 2, tol, "d2l/dp dy");
            ck_assert_close(ag_tensor_get(h, (2 + i) * 4 + i), -1.0 / 2, tol, "d2l/dy dp");
            ck_assert_double_eq(ag_tensor_get(h, (2 + i) * 4 + 2 + i), 0.0);
        }
        ag_tensor_free(h);
        ag_tensor_free(inputs[0]);
        ag_tensor_free(inputs[1]);
    }
}
END_TEST

START_TEST(cross_entropy_hessian_closed_form)
{
    /* l = (1/B) sum_r [logsumexp(a_r) - a_r,c_r]: within row r,
     * d2l/da_ri da_rj = (s_i [i == j] - s_i s_j) / B with s = softmax(a_r),
     * and 0 across rows. The labels take no part. */
    double logits[6] = {0.5, -1.0, 2.0, 0.0, 0.25, -0.75};
    double labels[2] = {2, 0};
    ag_tensor *a = heap_variable(6, logits);
    ag_tensor *h = hessian_of(cross_entropy_2x3_fn, labels, 1, &a, 6);

    for (size_t r = 0; r < 2; r++) {
        double s[3];
        double total = 0.0;

        for (size_t k = 0; k < 3; k++)
            total += exp(logits[r * 3 + k]);
        for (size_t k = 0; k < 3; k++)
            s[k] = exp(logits[r * 3 + k]) / total;
        for (size_t i = 0; i < 3; i++) {
            for (size_t col = 0; col < 6; col++) {
                size_t j = col % 3;
                double expected = col / 3 == r ? (s[i] * (i == j) - s[i] * s[j]) / 2 : 0.0;

                ck_assert_close(ag_tensor_get(h, (r * 3 + i) * 6 + col), expected,
                                HESSIAN_TOL, "d2l/da2");
            }
        }
    }
    ag_tensor_free(h);
    ag_tensor_free(a);
}
END_TEST

/* The gradient of f by the backward kernels (ag_grad without create_graph)
 * at `values`, one f64 input of n elements. */
static void kernel_gradient(ag_function f, void *user, size_t n, const double *values,
                            double *gradient)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(n), values);
    ag_tensor *g = NULL;

    ck_assert_int_eq(ag_tensor_set_requires_grad(x, true), 0);
    ag_tensor *loss = f(tape, &x, 1, user);
    ck_assert_msg(loss != NULL, "loss failed: %s", ag_error());
    ck_assert_int_eq(ag_grad(tape, loss, NULL, 1, &x, &g, false), 0);
    for (size_t i = 0; i < n; i++)
        gradient[i] = ag_tensor_get(g, i);
    ag_tape_free(tape);
}

START_TEST(cross_entropy_hessian_matches_differences)
{
    /* Column j of the Hessian against the central difference of the
     * kernels' gradient along logit j. With step 1e-5 the truncation error
     * is about 1e-10 and the rounding error about 1e-11. */
    const double step = 1e-5;
    double logits[6] = {3.0, -2.0, 0.5, 1.0, 1.0, -4.0};
    double labels[2] = {0, 1};
    ag_tensor *a = heap_variable(6, logits);
    ag_tensor *h = hessian_of(cross_entropy_2x3_fn, labels, 1, &a, 6);

    for (size_t j = 0; j < 6; j++) {
        double plus[6];
        double minus[6];
        double up[6];
        double down[6];

        memcpy(plus, logits, sizeof plus);
        memcpy(minus, logits, sizeof minus);
        plus[j] += step;
        minus[j] -= step;
        kernel_gradient(cross_entropy_2x3_fn, labels, 6, plus, up);
        kernel_gradient(cross_entropy_2x3_fn, labels, 6, minus, down);
        for (size_t i = 0; i < 6; i++)
            ck_assert_close(ag_tensor_get(h, i * 6 + j), (up[i] - down[i]) / (2 * step),
                            1e-8, "Hessian column against differences");
    }
    ag_tensor_free(h);
    ag_tensor_free(a);
}
END_TEST

START_TEST(cross_entropy_hessian_f32)
{
    /* The same closed form for one row, at f32's precision. */
    const double logits[3] = {1.5, -0.5, 0.25};
    const double label[1] = {1};
    ag_tensor *a = ag_tensor_from_doubles(NULL, AG_F32, AG_SHAPE(3), logits);
    double s[3];
    double total = exp(logits[0]) + exp(logits[1]) + exp(logits[2]);

    ck_assert_int_eq(ag_tensor_set_requires_grad(a, true), 0);
    ag_tensor *h = ag_hessian(cross_entropy_1x3_fn, (void *)label, 1, &a);
    ck_assert_msg(h != NULL, "ag_hessian failed: %s", ag_error());
    ck_assert_int_eq(ag_tensor_dtype(h), AG_F32);
    for (size_t k = 0; k < 3; k++)
        s[k] = exp(logits[k]) / total;
    for (size_t i = 0; i < 3; i++) {
        for (size_t j = 0; j < 3; j++)
            ck_assert_close(ag_tensor_get(h, i * 3 + j), s[i] * (i == j) - s[i] * s[j], 1e-6,
                            "d2l/da2 f32");
    }
    ag_tensor_free(h);
    ag_tensor_free(a);
}
END_TEST

START_TEST(cross_entropy_graph_rule_infinite_logit)
{
    /* Row 0 contains one +inf logit, the label's, so the kernel's limit
     * softmax there is onehot(0) and the row's gradient is 0. The built
     * gradient must give the same limit, not NaN. */
    const double logits[6] = {INFINITY, 0.0, -1.0, 0.5, 2.0, -1.0};
    const double labels[2] = {0, 2};
    ag_tape *tape = ag_tape_new();
    ag_tensor *a = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(2, 3), logits);
    ag_tensor *c = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(2), labels);
    ag_tensor *built = NULL;
    ag_tensor *kernel = NULL;

    ck_assert_int_eq(ag_tensor_set_requires_grad(a, true), 0);
    ag_tensor *loss = nn_cross_entropy_loss(tape, a, c);
    ck_assert_ptr_nonnull(loss);
    ck_assert_int_eq(ag_grad(tape, loss, NULL, 1, &a, &built, true), 0);
    ck_assert_int_eq(ag_grad(tape, loss, NULL, 1, &a, &kernel, false), 0);
    for (size_t i = 0; i < 3; i++)
        ck_assert_double_eq(ag_tensor_get(built, i), 0.0);
    for (size_t i = 0; i < 6; i++)
        ck_assert_close(ag_tensor_get(built, i), ag_tensor_get(kernel, i), HESSIAN_TOL,
                        "built gradient against the kernel's");
    ag_tape_free(tape);
}
END_TEST

START_TEST(cross_entropy_labels_get_no_gradient)
{
    /* Labels that require a gradient still get none from the graph rule:
     * ag_grad returns zeros for them. */
    const double labels[1] = {1};
    ag_tape *tape = ag_tape_new();
    ag_tensor *a = ag_full(tape, AG_F64, AG_SHAPE(1, 3), 0.5);
    ag_tensor *c = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(1), labels);
    ag_tensor *grads[2] = {NULL, NULL};

    ck_assert_int_eq(ag_tensor_set_requires_grad(a, true), 0);
    ck_assert_int_eq(ag_tensor_set_requires_grad(c, true), 0);
    ag_tensor *loss = nn_cross_entropy_loss(tape, a, c);
    ck_assert_int_eq(ag_grad(tape, loss, NULL, 2, (ag_tensor *[]){a, c}, grads, true), 0);
    ck_assert_double_eq(ag_tensor_get(grads[1], 0), 0.0);
    ck_assert_close(ag_tensor_get(grads[0], 1), 1.0 / 3 - 1.0, HESSIAN_TOL, "dl/da");
    ag_tape_free(tape);
}
END_TEST

START_TEST(composed_losses_hessian_closed_form)
{
    /* mse: l = (1/N) sum (f - y)^2, so d2l/df2 = d2l/dy2 = 2/N and
     * d2l/df dy = -2/N on the diagonal. sum of squares: 1/2 sum (y - f)^2
     * gives 1 and -1. Nothing across elements. */
    const double f_values[2] = {0.5, -1.5};
    const double y_values[2] = {2.0, 0.25};
    const struct {
        const char *name;
        ag_function f;
        double scale;
    } cases[2] = {{"mse", mse_fn, 2.0 / 2}, {"sum of squares", sum_of_squares_fn, 1.0}};

    for (int k = 0; k < 2; k++) {
        ag_tensor *inputs[2] = {heap_variable(2, f_values), heap_variable(2, y_values)};
        ag_tensor *h = hessian_of(cases[k].f, NULL, 2, inputs, 4);

        for (size_t i = 0; i < 4; i++) {
            for (size_t j = 0; j < 4; j++) {
                double sign = (i < 2) == (j < 2) ? 1.0 : -1.0;
                double expected = i % 2 == j % 2 ? sign * cases[k].scale : 0.0;

                ck_assert_close(ag_tensor_get(h, i * 4 + j), expected, HESSIAN_TOL,
                                cases[k].name);
            }
        }
        ag_tensor_free(h);
        ag_tensor_free(inputs[0]);
        ag_tensor_free(inputs[1]);
    }
}
END_TEST

START_TEST(gaussian_nll_hessian_closed_form)
{
    /* L = S / (2 s^2) + (N/2) log(2 pi s^2) with S = sum (y - f)^2:
     * d2L/df_i df_j = [i == j] / s^2, d2L/df_i ds = 2 (y_i - f_i) / s^3,
     * d2L/ds2 = 3 S / s^4 - N / s^2. The target is held constant. */
    const double f_values[2] = {0.5, -1.5};
    const double y_values[2] = {2.0, 0.25};
    const double s = 0.8;
    ag_tensor *f = heap_variable(2, f_values);
    ag_tensor *y = ag_tensor_from_doubles(NULL, AG_F64, AG_SHAPE(2), y_values);
    ag_tensor *sigma = heap_variable(1, &s);
    ag_tensor *h = hessian_of(gaussian_nll_fn, NULL, 3, (ag_tensor *[]){f, y, sigma}, 3);
    double squares = 0.0;

    for (size_t i = 0; i < 2; i++) {
        double d = y_values[i] - f_values[i];

        squares += d * d;
        for (size_t j = 0; j < 2; j++)
            ck_assert_close(ag_tensor_get(h, i * 3 + j), i == j ? 1 / (s * s) : 0.0,
                            HESSIAN_TOL, "d2L/df2");
        ck_assert_close(ag_tensor_get(h, i * 3 + 2), 2 * d / (s * s * s), HESSIAN_TOL,
                        "d2L/df ds");
        ck_assert_close(ag_tensor_get(h, 2 * 3 + i), 2 * d / (s * s * s), HESSIAN_TOL,
                        "d2L/ds df");
    }
    ck_assert_close(ag_tensor_get(h, 8), 3 * squares / (s * s * s * s) - 2 / (s * s),
                    HESSIAN_TOL, "d2L/ds2");
    ag_tensor_free(h);
    ag_tensor_free(f);
    ag_tensor_free(y);
    ag_tensor_free(sigma);
}
END_TEST

/* Runs ag_gradgradcheck on f with its inputs and asserts it passed. */
static void assert_gradgradcheck(const char *name, ag_function f, int n_inputs,
                                 ag_tensor *const *inputs)
{
    ag_gradcheck_result result;

    ck_assert_msg(ag_gradgradcheck(f, NULL, n_inputs, inputs, NULL, &result) == 0,
                  "%s: gradgradcheck failed to run: %s", name, ag_error());
    ck_assert_msg(result.passed, "%s: %s", name, result.message);
    ck_assert_uint_gt(result.n_checked, 0);
}

START_TEST(losses_pass_gradgradcheck)
{
    /* Every loss, the fused ones included, builds a gradient that matches
     * its kernel and whose derivatives match central differences. */
    const double labels[ROWS] = {3, 1, 0};
    ag_tape *tape = ag_tape_new();
    ag_rng rng = ag_rng_new(9);
    ag_tensor *f = random_input(tape, -2, 2, &rng);
    ag_tensor *y = random_input(tape, -2, 2, &rng);
    ag_tensor *p = random_input(tape, 0.1, 0.9, &rng);
    ag_tensor *q = random_input(tape, 0, 1, &rng);
    ag_tensor *c = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(ROWS), labels);
    ag_tensor *sigma = ag_scalar(tape, AG_F64, 1.3);

    ag_tensor_set_requires_grad(sigma, true);
    assert_gradgradcheck("mse", mse_fn, 2, (ag_tensor *[]){f, y});
    assert_gradgradcheck("sum of squares", sum_of_squares_fn, 2, (ag_tensor *[]){f, y});
    assert_gradgradcheck("bce", bce_fn, 2, (ag_tensor *[]){p, q});
    assert_gradgradcheck("bce with logits", bce_logits_fn, 2, (ag_tensor *[]){f, q});
    assert_gradgradcheck("cross-entropy", cross_entropy_fn, 2, (ag_tensor *[]){f, c});
    assert_gradgradcheck("gaussian nll", gaussian_nll_fn, 3, (ag_tensor *[]){f, y, sigma});
    ag_tape_free(tape);
}
END_TEST

static Suite *losses_suite(void)
{
    Suite *s = suite_create("nn_losses");
    TCase *formulas = tcase_create("formulas");
    TCase *extremes = tcase_create("extremes");
    TCase *errors = tcase_create("errors");
    int n_pair = (int)(sizeof pair_losses / sizeof pair_losses[0]);

    tcase_add_test(formulas, mse_matches_formula);
    tcase_add_test(formulas, sum_of_squares_matches_formula);
    tcase_add_test(formulas, bce_matches_formula);
    tcase_add_test(formulas, bce_with_logits_matches_formula);
    tcase_add_test(formulas, cross_entropy_matches_formula);
    tcase_add_test(formulas, cross_entropy_f32);
    tcase_add_test(formulas, gaussian_nll_matches_formula);
    tcase_add_test(formulas, gaussian_nll_sigma_any_shape);
    tcase_add_test(formulas, losses_pass_gradcheck);
    suite_add_tcase(s, formulas);

    tcase_add_test(extremes, bce_finite_at_0_and_1);
    tcase_add_test(extremes, bce_with_logits_at_1000);
    tcase_add_test(extremes, cross_entropy_at_1e4);
    tcase_add_test(extremes, cross_entropy_empty_batch_error);
    tcase_add_test(extremes, cross_entropy_no_classes_error);
    tcase_add_test(extremes, cross_entropy_is_registered_op);
    tcase_add_test(extremes, cross_entropy_labels_requiring_grad);
    suite_add_tcase(s, extremes);

    TCase *second_order = tcase_create("second_order");
    tcase_add_test(second_order, bce_hessian_closed_form);
    tcase_add_test(second_order, bce_hessian_clamped_at_0_and_1);
    tcase_add_test(second_order, cross_entropy_hessian_closed_form);
    tcase_add_test(second_order, cross_entropy_hessian_matches_differences);
    tcase_add_test(second_order, cross_entropy_hessian_f32);
    tcase_add_test(second_order, cross_entropy_graph_rule_infinite_logit);
    tcase_add_test(second_order, cross_entropy_labels_get_no_gradient);
    tcase_add_test(second_order, composed_losses_hessian_closed_form);
    tcase_add_test(second_order, gaussian_nll_hessian_closed_form);
    tcase_add_test(second_order, losses_pass_gradgradcheck);
    suite_add_tcase(s, second_order);

    tcase_add_loop_test(errors, shape_mismatch_rejected, 0, n_pair);
    tcase_add_loop_test(errors, dtype_mismatch_rejected, 0, n_pair);
    tcase_add_loop_test(errors, null_input_keeps_message, 0, n_pair);
    tcase_add_test(errors, cross_entropy_bad_labels_rejected);
    tcase_add_test(errors, cross_entropy_bad_shapes_rejected);
    tcase_add_test(errors, bce_probability_outside_rejected);
    tcase_add_test(errors, cross_entropy_dtype_mismatch_rejected);
    tcase_add_test(errors, gaussian_nll_bad_sigma_rejected);
    suite_add_tcase(s, errors);
    return s;
}

int main(void)
{
    return run_suite(losses_suite());
}
