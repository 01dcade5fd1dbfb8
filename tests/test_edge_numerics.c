/*
 * Numerics at the edges. Values and gradients at 0, +-1e4, +-inf and NaN
 * are compared with PyTorch 1.13 (tests/data/edge_reference.h, written by
 * edge_reference.py). Where the library deliberately differs from PyTorch,
 * its limits are compared with closed forms. The suite also covers reused
 * values, repeated backward passes, bad and empty inputs to every op and
 * loss, and replays the fuzz targets' seeds and regressions.
 */
#define _GNU_SOURCE /* memfd_create, for the replayed fuzz targets */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_helpers.h"
#include "data/edge_reference.h"
#include "tapegrad/nn.h"

#define N_REFS(array) (sizeof(array) / sizeof((array)[0]))

static const ag_dtype dtypes[2] = {AG_F32, AG_F64};

/* f64 results agree with PyTorch's float64 to about 1e-12 relative; f32
 * results are compared with the same float64 reference. */
static double tolerance(ag_dtype dtype)
{
    return dtype == AG_F64 ? 1e-12 : 2e-6;
}

static const char *dtype_name(ag_dtype dtype)
{
    return dtype == AG_F64 ? "f64" : "f32";
}

/* Asserts that `actual` matches `expected`: NaN for NaN, the same infinity
 * for an infinity, otherwise within tol * max(1, |expected|). */
static void check_value(double actual, double expected, double tol, const char *what)
{
    if (isnan(expected)) {
        ck_assert_msg(isnan(actual), "%s: got %.17g, expected NaN", what, actual);
        return;
    }
    if (isinf(expected)) {
        ck_assert_msg(actual == expected, "%s: got %.17g, expected %g", what, actual,
                      expected);
        return;
    }
    ck_assert_close(actual, expected, tol, what);
}

/* Whether every value is exactly representable in f32, so an f32 run
 * computes the same function as the float64 reference. */
static bool exact_in_f32(const double *values, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!isnan(values[i]) && (double)(float)values[i] != values[i])
            return false;
    }
    return true;
}

static double grad_at(const ag_tensor *t, size_t i)
{
    ag_tensor *g = ag_tensor_grad(t);

    ck_assert_msg(g != NULL, "no gradient reached the tensor");
    return ag_tensor_get(g, i);
}

/* Makes a leaf that requires a gradient. */
static ag_tensor *leaf(ag_tape *tape, ag_dtype dtype, int ndim, const size_t *shape,
                       const double *values)
{
    ag_tensor *t = ag_tensor_from_doubles(tape, dtype, ndim, shape, values);

    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(ag_tensor_set_requires_grad(t, true), 0);
    return t;
}

/* Returns sum(w * y) for a weight tensor of y's shape. */
static ag_tensor *weighted_sum(ag_tape *tape, ag_tensor *y, const double *w)
{
    ag_tensor *weights = ag_tensor_from_doubles(tape, ag_tensor_dtype(y), ag_tensor_ndim(y),
                                                ag_tensor_shape(y), w);
    return ag_sum(tape, ag_mul(tape, y, weights));
}

/* ---- references from PyTorch ---------------------------------------------- */

static ag_tensor *apply_unary(ag_tape *tape, const char *op, ag_tensor *x, double p)
{
    static const struct {
        const char *name;
        ag_tensor *(*fn)(ag_tape *, ag_tensor *);
    } table[] = {
        {"sqrt", ag_sqrt},       {"log", ag_log},         {"exp", ag_exp},
        {"abs", ag_abs},         {"relu", ag_relu},       {"tanh", ag_tanh},
        {"sigmoid", ag_sigmoid}, {"softplus", ag_softplus}, {"log_sigmoid", ag_log_sigmoid},
    };

    if (strcmp(op, "pow_scalar") == 0)
        return ag_pow_scalar(tape, x, p);
    if (strcmp(op, "clamp01") == 0)
        return ag_clamp(tape, x, 0.0, 1.0);
    for (size_t i = 0; i < N_REFS(table); i++) {
        if (strcmp(op, table[i].name) == 0)
            return table[i].fn(tape, x);
    }
    ck_abort_msg("no unary op named %s", op);
    return NULL;
}

START_TEST(unary_matches_torch)
{
    for (size_t c = 0; c < N_REFS(edge_unary); c++) {
        const edge_unary_ref *ref = &edge_unary[c];

        for (int d = 0; d < 2; d++) {
            if (dtypes[d] == AG_F32 && !exact_in_f32(&ref->x, 1))
                continue;

            ag_tape *tape = ag_tape_new();
            ag_tensor *x = leaf(tape, dtypes[d], AG_SHAPE(1), &ref->x);
            ag_tensor *y = apply_unary(tape, ref->op, x, ref->p);
            char what[96];

            ck_assert_ptr_nonnull(y);
            ck_assert_int_eq(ag_backward(tape, y, NULL), 0);
            snprintf(what, sizeof what, "%s(%g; p = %g) %s value", ref->op, ref->x, ref->p,
                     dtype_name(dtypes[d]));
            check_value(ag_tensor_item(y), ref->value, tolerance(dtypes[d]), what);
            snprintf(what, sizeof what, "%s'(%g; p = %g) %s", ref->op, ref->x, ref->p,
                     dtype_name(dtypes[d]));
            check_value(grad_at(x, 0), ref->grad, tolerance(dtypes[d]), what);
            ag_tape_free(tape);
        }
    }
}
END_TEST

static ag_tensor *apply_binary(ag_tape *tape, const char *op, ag_tensor *a, ag_tensor *b)
{
    static const struct {
        const char *name;
        ag_tensor *(*fn)(ag_tape *, ag_tensor *, ag_tensor *);
    } table[] = {
        {"add", ag_add}, {"sub", ag_sub},         {"mul", ag_mul},         {"div", ag_div},
        {"pow", ag_pow}, {"maximum", ag_maximum}, {"minimum", ag_minimum},
    };

    for (size_t i = 0; i < N_REFS(table); i++) {
        if (strcmp(op, table[i].name) == 0)
            return table[i].fn(tape, a, b);
    }
    ck_abort_msg("no binary op named %s", op);
    return NULL;
}

START_TEST(binary_matches_torch)
{
    for (size_t c = 0; c < N_REFS(edge_binary); c++) {
        const edge_binary_ref *ref = &edge_binary[c];

        for (int d = 0; d < 2; d++) {
            ag_tape *tape = ag_tape_new();
            ag_tensor *a = leaf(tape, dtypes[d], AG_SHAPE(1), &ref->a);
            ag_tensor *b = leaf(tape, dtypes[d], AG_SHAPE(1), &ref->b);
            ag_tensor *y = apply_binary(tape, ref->op, a, b);
            char what[96];

            ck_assert_ptr_nonnull(y);
            ck_assert_int_eq(ag_backward(tape, y, NULL), 0);
            snprintf(what, sizeof what, "%s(%g, %g) %s value", ref->op, ref->a, ref->b,
                     dtype_name(dtypes[d]));
            check_value(ag_tensor_item(y), ref->value, tolerance(dtypes[d]), what);
            snprintf(what, sizeof what, "d%s(%g, %g)/da %s", ref->op, ref->a, ref->b,
                     dtype_name(dtypes[d]));
            check_value(grad_at(a, 0), ref->grad_a, tolerance(dtypes[d]), what);
            snprintf(what, sizeof what, "d%s(%g, %g)/db %s", ref->op, ref->a, ref->b,
                     dtype_name(dtypes[d]));
            check_value(grad_at(b, 0), ref->grad_b, tolerance(dtypes[d]), what);
            ag_tape_free(tape);
        }
    }
}
END_TEST

START_TEST(broadcast_matches_torch)
{
    for (size_t c = 0; c < N_REFS(edge_broadcast); c++) {
        const edge_broadcast_ref *ref = &edge_broadcast[c];

        for (int d = 0; d < 2; d++) {
            ag_tape *tape = ag_tape_new();
            ag_tensor *a = leaf(tape, dtypes[d], ref->ndim_a, ref->shape_a, ref->a);
            ag_tensor *b = leaf(tape, dtypes[d], ref->ndim_b, ref->shape_b, ref->b);
            ag_tensor *y = apply_binary(tape, ref->op, a, b);
            char what[96];

            ck_assert_ptr_nonnull(y);
            ck_assert_int_eq(ag_tensor_ndim(y), ref->ndim_y);
            for (int i = 0; i < ref->ndim_y; i++)
                ck_assert_uint_eq(ag_tensor_dim(y, i), ref->shape_y[i]);
            ck_assert_int_eq(ag_backward(tape, weighted_sum(tape, y, ref->w), NULL), 0);

            /* Each gradient has its operand's shape. */
            ck_assert(ag_tensor_same_shape(ag_tensor_grad(a), a));
            ck_assert(ag_tensor_same_shape(ag_tensor_grad(b), b));
            for (size_t i = 0; i < ag_tensor_numel(y); i++) {
                snprintf(what, sizeof what, "%s case %zu %s y[%zu]", ref->op, c,
                         dtype_name(dtypes[d]), i);
                check_value(ag_tensor_get(y, i), ref->y[i], tolerance(dtypes[d]), what);
            }
            for (size_t i = 0; i < ag_tensor_numel(a); i++) {
                snprintf(what, sizeof what, "%s case %zu %s grad_a[%zu]", ref->op, c,
                         dtype_name(dtypes[d]), i);
                check_value(grad_at(a, i), ref->grad_a[i], tolerance(dtypes[d]), what);
            }
            for (size_t i = 0; i < ag_tensor_numel(b); i++) {
                snprintf(what, sizeof what, "%s case %zu %s grad_b[%zu]", ref->op, c,
                         dtype_name(dtypes[d]), i);
                check_value(grad_at(b, i), ref->grad_b[i], tolerance(dtypes[d]), what);
            }
            ag_tape_free(tape);
        }
    }
}
END_TEST

START_TEST(max_ties_match_torch)
{
    static const double weights[3] = {1, 2, 3};

    for (size_t c = 0; c < N_REFS(edge_max); c++) {
        const edge_max_ref *ref = &edge_max[c];

        for (int d = 0; d < 2; d++) {
            ag_tape *tape = ag_tape_new();
            ag_tensor *x = leaf(tape, dtypes[d], AG_SHAPE(2, 3), ref->x);
            ag_tensor *y = ref->axis < 0 ? ag_max(tape, x) : ag_max_axis(tape, x, ref->axis, false);
            char what[96];

            ck_assert_ptr_nonnull(y);
            ck_assert_int_eq(ag_backward(tape, weighted_sum(tape, y, weights), NULL), 0);
            for (size_t i = 0; i < ag_tensor_numel(y); i++) {
                snprintf(what, sizeof what, "max case %zu axis %d %s value[%zu]", c, ref->axis,
                         dtype_name(dtypes[d]), i);
                check_value(ag_tensor_get(y, i), ref->value[i], tolerance(dtypes[d]), what);
            }
            for (size_t i = 0; i < 6; i++) {
                snprintf(what, sizeof what, "max case %zu axis %d %s grad[%zu]", c, ref->axis,
                         dtype_name(dtypes[d]), i);
                check_value(grad_at(x, i), ref->grad[i], tolerance(dtypes[d]), what);
            }
            ag_tape_free(tape);
        }
    }
}
END_TEST

/* Builds the row op of a reference case on a (1 x 3) row of logits. */
static ag_tensor *apply_row(ag_tape *tape, const edge_row_ref *ref, ag_tensor *x)
{
    if (strcmp(ref->op, "softmax") == 0)
        return ag_softmax(tape, x, 1);
    if (strcmp(ref->op, "log_softmax") == 0)
        return ag_log_softmax(tape, x, 1);
    if (strcmp(ref->op, "logsumexp") == 0)
        return ag_logsumexp(tape, x);

    double label = ref->label;
    ag_tensor *labels = ag_tensor_from_doubles(tape, ag_tensor_dtype(x), AG_SHAPE(1), &label);
    return nn_cross_entropy_loss(tape, x, labels);
}

START_TEST(softmax_rows_match_torch)
{
    for (size_t c = 0; c < N_REFS(edge_rows); c++) {
        const edge_row_ref *ref = &edge_rows[c];

        for (int d = 0; d < 2; d++) {
            ag_tape *tape = ag_tape_new();
            ag_tensor *x = leaf(tape, dtypes[d], AG_SHAPE(1, 3), ref->x);
            ag_tensor *y = apply_row(tape, ref, x);
            char what[128];

            ck_assert_ptr_nonnull(y);
            ck_assert_int_eq(ag_backward(tape, weighted_sum(tape, y, ref->w), NULL), 0);
            for (size_t i = 0; i < ag_tensor_numel(y); i++) {
                snprintf(what, sizeof what, "%s [%g %g %g] label %d %s value[%zu]", ref->op,
                         ref->x[0], ref->x[1], ref->x[2], ref->label, dtype_name(dtypes[d]), i);
                check_value(ag_tensor_get(y, i), ref->value[i], tolerance(dtypes[d]), what);
            }
            for (size_t i = 0; i < 3; i++) {
                snprintf(what, sizeof what, "%s [%g %g %g] label %d %s grad[%zu]", ref->op,
                         ref->x[0], ref->x[1], ref->x[2], ref->label, dtype_name(dtypes[d]), i);
                check_value(grad_at(x, i), ref->grad[i], tolerance(dtypes[d]), what);
            }
            ag_tape_free(tape);
        }
    }
}
END_TEST

START_TEST(bce_matches_torch)
{
    for (size_t c = 0; c < N_REFS(edge_losses); c++) {
        const edge_loss_ref *ref = &edge_losses[c];

        for (int d = 0; d < 2; d++) {
            double values[2] = {ref->x, ref->y};
            if (dtypes[d] == AG_F32 && !exact_in_f32(values, 2))
                continue;

            ag_tape *tape = ag_tape_new();
            ag_tensor *x = leaf(tape, dtypes[d], AG_SHAPE(1), &ref->x);
            ag_tensor *y = ag_tensor_from_doubles(tape, dtypes[d], AG_SHAPE(1), &ref->y);
            ag_tensor *loss = strcmp(ref->op, "bce") == 0 ? nn_bce_loss(tape, x, y)
                                                         : nn_bce_with_logits_loss(tape, x, y);
            char what[96];

            ck_assert_ptr_nonnull(loss);
            ck_assert_int_eq(ag_backward(tape, loss, NULL), 0);
            snprintf(what, sizeof what, "%s(%g, %g) %s value", ref->op, ref->x, ref->y,
                     dtype_name(dtypes[d]));
            check_value(ag_tensor_item(loss), ref->value, tolerance(dtypes[d]), what);
            snprintf(what, sizeof what, "%s(%g, %g) %s gradient", ref->op, ref->x, ref->y,
                     dtype_name(dtypes[d]));
            /* PyTorch's f64 BCE gradient at p = 0 or 1 is (p - y) / 1e-12
             * computed with its eps in f32; the closed form with eps = 1e-12
             * differs by 4e-9 relative. */
            double tol = strcmp(ref->op, "bce") == 0 ? 1e-8 : tolerance(dtypes[d]);
            check_value(grad_at(x, 0), ref->grad, dtypes[d] == AG_F32 ? 2e-6 : tol, what);
            ag_tape_free(tape);
        }
    }
}
END_TEST

/* Builds the composite named in the reference on a two-element leaf x. */
static ag_tensor *apply_composite(ag_tape *tape, const char *name, ag_tensor *x)
{
    ag_dtype dtype = ag_tensor_dtype(x);
    ag_tensor *mask = ag_tensor_from_doubles(tape, dtype, AG_SHAPE(2), (const double[]){1, 0});
    ag_tensor *flipped = ag_tensor_from_doubles(tape, dtype, AG_SHAPE(2), (const double[]){0, 1});

    if (strcmp(name, "norm_mul") == 0)
        return ag_sqrt(tape, ag_sum(tape, ag_mul(tape, x, x)));
    if (strcmp(name, "norm_pow") == 0)
        return ag_sqrt(tape, ag_sum(tape, ag_pow_scalar(tape, x, 2.0)));
    if (strcmp(name, "mask_log") == 0)
        return ag_sum(tape, ag_mul(tape, ag_log(tape, x), mask));
    if (strcmp(name, "mask_inf") == 0)
        return ag_sum(tape, ag_mul(tape, x, mask));
    if (strcmp(name, "sqrt_zero_weight") == 0)
        return ag_sum(tape, ag_mul(tape, ag_sqrt(tape, x), flipped));
    if (strcmp(name, "max_neg_inf") == 0)
        return ag_max(tape, x);
    if (strcmp(name, "relu_neg_inf") == 0)
        return ag_sum(tape, ag_relu(tape, x));
    if (strcmp(name, "clamp_inf") == 0)
        return ag_sum(tape, ag_clamp(tape, x, 0.0, 1.0));
    if (strcmp(name, "maximum_zero") == 0)
        return ag_sum(tape, ag_maximum(tape, x, ag_zeros(tape, dtype, AG_SHAPE(2))));
    if (strcmp(name, "logsumexp_neg_inf") == 0)
        return ag_logsumexp(tape, x);
    if (strcmp(name, "softmax_neg_inf") == 0)
        return weighted_sum(tape, ag_softmax(tape, x, 0), (const double[]){1, 2});
    if (strcmp(name, "broadcast_sum") == 0)
        return ag_sum(tape, ag_add(tape, x, ag_sum(tape, x)));
    if (strcmp(name, "reuse") == 0)
        return ag_sum(tape, ag_add(tape, ag_add(tape, ag_mul(tape, x, x),
                                                ag_mul(tape, ag_exp(tape, x), x)),
                                   x));
    ck_abort_msg("no composite named %s", name);
    return NULL;
}

START_TEST(composites_match_torch)
{
    for (size_t c = 0; c < N_REFS(edge_composites); c++) {
        const edge_composite_ref *ref = &edge_composites[c];

        for (int d = 0; d < 2; d++) {
            ag_tape *tape = ag_tape_new();
            ag_tensor *x = leaf(tape, dtypes[d], AG_SHAPE(2), ref->x);
            ag_tensor *loss = apply_composite(tape, ref->name, x);
            char what[96];

            ck_assert_ptr_nonnull(loss);
            ck_assert_int_eq(ag_backward(tape, loss, NULL), 0);
            snprintf(what, sizeof what, "%s %s value", ref->name, dtype_name(dtypes[d]));
            check_value(ag_tensor_item(loss), ref->value, tolerance(dtypes[d]), what);
            for (size_t i = 0; i < 2; i++) {
                snprintf(what, sizeof what, "%s %s grad[%zu]", ref->name,
                         dtype_name(dtypes[d]), i);
                check_value(grad_at(x, i), ref->grad[i], tolerance(dtypes[d]), what);
            }
            ag_tape_free(tape);
        }
    }
}
END_TEST

/* ---- limits where the library differs from PyTorch ------------------------ */

START_TEST(bce_logits_infinite_limits)
{
    /* l(a, y) = softplus(a) - a y and dl/da = sigmoid(a) - y. PyTorch 1.13
     * gives NaN for the first three values, whose limits are finite or
     * +inf. */
    static const struct {
        double a, y, value, grad;
    } cases[] = {
        {INFINITY, 1.0, 0.0, 0.0},
        {-INFINITY, 0.0, 0.0, 0.0},
        {-INFINITY, 1.0, INFINITY, -1.0},
        {-INFINITY, 0.25, INFINITY, -0.25},
        {INFINITY, 0.0, INFINITY, 1.0},
    };

    for (size_t c = 0; c < N_REFS(cases); c++) {
        for (int d = 0; d < 2; d++) {
            ag_tape *tape = ag_tape_new();
            ag_tensor *a = leaf(tape, dtypes[d], AG_SHAPE(1), &cases[c].a);
            ag_tensor *y = ag_tensor_from_doubles(tape, dtypes[d], AG_SHAPE(1), &cases[c].y);
            ag_tensor *loss = nn_bce_with_logits_loss(tape, a, y);
            char what[96];

            ck_assert_ptr_nonnull(loss);
            ck_assert_int_eq(ag_backward(tape, loss, NULL), 0);
            snprintf(what, sizeof what, "bce_logits(%g, %g) %s", cases[c].a, cases[c].y,
                     dtype_name(dtypes[d]));
            check_value(ag_tensor_item(loss), cases[c].value, 0, what);
            check_value(grad_at(a, 0), cases[c].grad, 0, what);
            ag_tape_free(tape);
        }
    }
}
END_TEST

START_TEST(bce_logits_target_gradient)
{
    /* dl/dy = -a, also at a = +-inf. */
    const double logits[3] = {2.5, INFINITY, -INFINITY};
    const double targets[3] = {0.5, 1.0, 0.0};
    const double expected[3] = {-2.5 / 3, -INFINITY, INFINITY};

    for (int d = 0; d < 2; d++) {
        ag_tape *tape = ag_tape_new();
        ag_tensor *a = ag_tensor_from_doubles(tape, dtypes[d], AG_SHAPE(3), logits);
        ag_tensor *y = leaf(tape, dtypes[d], AG_SHAPE(3), targets);

        ck_assert_int_eq(ag_backward(tape, nn_bce_with_logits_loss(tape, a, y), NULL), 0);
        for (size_t i = 0; i < 3; i++)
            check_value(grad_at(y, i), expected[i], tolerance(dtypes[d]), "dl/dy");
        ag_tape_free(tape);
    }
}
END_TEST

/* bce_with_logits(a, y) for the targets in `user`, as an ag_function. */
static ag_tensor *bce_logits_of(ag_tape *tape, ag_tensor *const *inputs, int n_inputs,
                                void *user)
{
    (void)n_inputs;
    ag_tensor *a = inputs[0];
    ag_tensor *y = ag_tensor_from_doubles(tape, ag_tensor_dtype(a), ag_tensor_ndim(a),
                                          ag_tensor_shape(a), user);
    return nn_bce_with_logits_loss(tape, a, y);
}

START_TEST(bce_logits_second_derivative)
{
    /* d^2 l / da_i da_j = [i == j] s_i (1 - s_i) / N with s = sigmoid(a);
     * the fused op's graph rule must give it. */
    double logits[3] = {0.5, -2.0, 30.0};
    double targets[3] = {1.0, 0.25, 0.0};
    ag_tensor *a = ag_tensor_from_doubles(NULL, AG_F64, AG_SHAPE(3), logits);

    ck_assert_int_eq(ag_tensor_set_requires_grad(a, true), 0);
    ag_tensor *hessian = ag_hessian(bce_logits_of, targets, 1, &a);
    ck_assert_msg(hessian != NULL, "ag_hessian failed: %s", ag_error());
    for (size_t i = 0; i < 3; i++) {
        for (size_t j = 0; j < 3; j++) {
            double s = 1.0 / (1.0 + exp(-logits[i]));
            double expected = i == j ? s * (1.0 - s) / 3.0 : 0.0;
            ck_assert_close(ag_tensor_get(hessian, i * 3 + j), expected, 1e-12, "hessian");
        }
    }
    ag_tensor_free(hessian);
    ag_tensor_free(a);
}
END_TEST

START_TEST(cross_entropy_infinite_logits)
{
    /* The limit in which the +inf logits grow together: softmax is 1/k on
     * the k infinite logits. PyTorch 1.13 gives NaN for all of these. */
    static const struct {
        double x[3];
        double label;
        double value;
        double grad[3];
    } cases[] = {
        {{INFINITY, 0.0, 0.0}, 0, 0.0, {0.0, 0.0, 0.0}},
        {{INFINITY, 0.0, 0.0}, 1, INFINITY, {1.0, -1.0, 0.0}},
        {{INFINITY, INFINITY, -1.0}, 1, 0.69314718055994531, {0.5, -0.5, 0.0}},
        {{INFINITY, -INFINITY, INFINITY}, 1, INFINITY, {0.5, -1.0, 0.5}},
    };

    for (size_t c = 0; c < N_REFS(cases); c++) {
        for (int d = 0; d < 2; d++) {
            ag_tape *tape = ag_tape_new();
            ag_tensor *x = leaf(tape, dtypes[d], AG_SHAPE(1, 3), cases[c].x);
            ag_tensor *labels = ag_tensor_from_doubles(tape, dtypes[d], AG_SHAPE(1),
                                                       &cases[c].label);
            ag_tensor *loss = nn_cross_entropy_loss(tape, x, labels);
            char what[96];

            ck_assert_ptr_nonnull(loss);
            ck_assert_int_eq(ag_backward(tape, loss, NULL), 0);
            snprintf(what, sizeof what, "cross_entropy case %zu %s value", c,
                     dtype_name(dtypes[d]));
            check_value(ag_tensor_item(loss), cases[c].value, tolerance(dtypes[d]), what);
            for (size_t i = 0; i < 3; i++) {
                snprintf(what, sizeof what, "cross_entropy case %zu %s grad[%zu]", c,
                         dtype_name(dtypes[d]), i);
                check_value(grad_at(x, i), cases[c].grad[i], 0, what);
            }
            ag_tape_free(tape);
        }
    }
}
END_TEST

START_TEST(cross_entropy_neg_inf_label)
{
    /* A -inf logit at the label: the loss is +inf and the gradient is the
     * finite softmax - onehot, as in PyTorch. softmax of [-inf, 0, 1] is
     * [0, 1, e] / (1 + e). */
    const double x_values[3] = {-INFINITY, 0.0, 1.0};
    const double label = 0;
    const double e = exp(1.0);
    const double expected[3] = {-1.0, 1.0 / (1.0 + e), e / (1.0 + e)};

    for (int d = 0; d < 2; d++) {
        ag_tape *tape = ag_tape_new();
        ag_tensor *x = leaf(tape, dtypes[d], AG_SHAPE(1, 3), x_values);
        ag_tensor *labels = ag_tensor_from_doubles(tape, dtypes[d], AG_SHAPE(1), &label);
        ag_tensor *loss = nn_cross_entropy_loss(tape, x, labels);

        ck_assert_int_eq(ag_backward(tape, loss, NULL), 0);
        check_value(ag_tensor_item(loss), INFINITY, 0, "loss");
        for (size_t i = 0; i < 3; i++)
            check_value(grad_at(x, i), expected[i], tolerance(dtypes[d]), "gradient");
        ag_tape_free(tape);
    }
}
END_TEST

START_TEST(logsumexp_infinite_limits)
{
    /* +inf entries share the gradient (PyTorch 1.13: NaN); a row of -inf
     * gives -inf with a zero gradient (PyTorch 1.13: NaN). */
    const double with_inf[3] = {INFINITY, 1.0, INFINITY};
    const double all_neg_inf[3] = {-INFINITY, -INFINITY, -INFINITY};

    for (int d = 0; d < 2; d++) {
        ag_tape *tape = ag_tape_new();
        ag_tensor *x = leaf(tape, dtypes[d], AG_SHAPE(3), with_inf);
        ag_tensor *y = ag_logsumexp(tape, x);

        ck_assert_int_eq(ag_backward(tape, y, NULL), 0);
        check_value(ag_tensor_item(y), INFINITY, 0, "logsumexp with +inf");
        check_value(grad_at(x, 0), 0.5, 0, "share of the first +inf");
        check_value(grad_at(x, 1), 0.0, 0, "finite entry");
        check_value(grad_at(x, 2), 0.5, 0, "share of the second +inf");

        ag_tensor *z = leaf(tape, dtypes[d], AG_SHAPE(3), all_neg_inf);
        ag_tensor *w = ag_logsumexp(tape, z);
        ck_assert_int_eq(ag_backward(tape, w, NULL), 0);
        check_value(ag_tensor_item(w), -INFINITY, 0, "logsumexp of -inf");
        for (size_t i = 0; i < 3; i++)
            check_value(grad_at(z, i), 0.0, 0, "gradient at -inf");
        ag_tape_free(tape);
    }
}
END_TEST

START_TEST(softmax_infinite_limits)
{
    /* Rows with +inf: softmax is 1/k on the k infinite logits and 0
     * elsewhere, and log_softmax is -log k and -inf. The Jacobians are those
     * at that softmax y, so the gradient of sum(w * softmax) is y (w - y.w)
     * and the vector-Jacobian product of log_softmax with w is w - y sum(w).
     * PyTorch 1.13 gives NaN for all of these. A row of all -inf stays
     * NaN. */
    const double rows[6] = {INFINITY, 0.0, INFINITY, INFINITY, -1.0, 2.0};
    const double w[6] = {1, 2, 3, 1, 2, 3};
    const double softmax[6] = {0.5, 0.0, 0.5, 1.0, 0.0, 0.0};
    const double log_softmax[6] = {-log(2.0), -INFINITY, -log(2.0), 0.0, -INFINITY, -INFINITY};
    const double softmax_grad[6] = {0.5 * (1 - 2.0), 0, 0.5 * (3 - 2.0), 0, 0, 0};
    const double log_softmax_grad[6] = {1 - 3.0, 2, 3 - 3.0, 1 - 6.0, 2, 3};
    const double neg_inf[3] = {-INFINITY, -INFINITY, -INFINITY};

    for (int d = 0; d < 2; d++) {
        ag_tape *tape = ag_tape_new();
        ag_tensor *x = leaf(tape, dtypes[d], AG_SHAPE(2, 3), rows);
        ag_tensor *s = ag_softmax(tape, x, 1);
        ag_tensor *ls = ag_log_softmax(tape, x, 1);
        char what[64];

        ck_assert_int_eq(ag_backward(tape, weighted_sum(tape, s, w), NULL), 0);
        for (size_t i = 0; i < 6; i++) {
            snprintf(what, sizeof what, "softmax[%zu] %s", i, dtype_name(dtypes[d]));
            check_value(ag_tensor_get(s, i), softmax[i], tolerance(dtypes[d]), what);
            check_value(grad_at(x, i), softmax_grad[i], tolerance(dtypes[d]), what);
        }

        /* A seed, because the loss sum(w * log_softmax) would be -inf. */
        ag_tensor_zero_grad(x);
        ag_tensor *seed = ag_tensor_from_doubles(tape, dtypes[d], AG_SHAPE(2, 3), w);
        ck_assert_int_eq(ag_backward(tape, ls, seed), 0);
        for (size_t i = 0; i < 6; i++) {
            snprintf(what, sizeof what, "log_softmax[%zu] %s", i, dtype_name(dtypes[d]));
            check_value(ag_tensor_get(ls, i), log_softmax[i], tolerance(dtypes[d]), what);
            check_value(grad_at(x, i), log_softmax_grad[i], tolerance(dtypes[d]), what);
        }

        ag_tensor *z = ag_tensor_from_doubles(tape, dtypes[d], AG_SHAPE(3), neg_inf);
        ck_assert(isnan(ag_tensor_get(ag_softmax(tape, z, 0), 0)));
        ck_assert(isnan(ag_tensor_get(ag_log_softmax(tape, z, 0), 0)));
        ag_tape_free(tape);
    }
}
END_TEST

START_TEST(max_axis_nan_shares)
{
    /* A NaN in a slice makes its max NaN, and the NaN elements share the
     * gradient, as x.max() does over all elements. PyTorch 1.13's amax(dim)
     * gives NaN gradients to the whole slice there (0 / 0). */
    const double values[6] = {1.0, NAN, NAN, 4.0, 2.0, 4.0};

    for (int d = 0; d < 2; d++) {
        ag_tape *tape = ag_tape_new();
        ag_tensor *x = leaf(tape, dtypes[d], AG_SHAPE(2, 3), values);
        ag_tensor *y = ag_max_axis(tape, x, 1, false);

        ck_assert_int_eq(ag_backward(tape, ag_sum(tape, y), NULL), 0);
        ck_assert(isnan(ag_tensor_get(y, 0)));
        check_value(ag_tensor_get(y, 1), 4.0, 0, "max of the finite row");
        check_value(grad_at(x, 0), 0.0, 0, "finite element beside NaN");
        check_value(grad_at(x, 1), 0.5, 0, "first NaN");
        check_value(grad_at(x, 2), 0.5, 0, "second NaN");
        check_value(grad_at(x, 3), 0.5, 0, "first tied max");
        check_value(grad_at(x, 4), 0.0, 0, "smaller element");
        check_value(grad_at(x, 5), 0.5, 0, "second tied max");
        ag_tape_free(tape);
    }
}
END_TEST

/* Takes three optimizer steps from a zero gradient and checks that each
 * element is its start value times expected_factor (the closed form) and
 * not NaN. */
static void check_zero_grad_steps(nn_adam_options options, ag_dtype dtype, double expected_factor)
{
    const double start[3] = {1.0, -2.0, 0.0};
    nn_params *params = nn_params_new();
    ag_tensor *p = ag_tensor_from_doubles(NULL, dtype, AG_SHAPE(3), start);

    ck_assert_int_eq(nn_params_add(params, "p", p), 0);
    nn_optimizer *opt = nn_adam_new(params, options);
    ck_assert_ptr_nonnull(opt);
    for (int step = 0; step < 3; step++) {
        nn_optimizer_zero_grad(opt);
        ck_assert_int_eq(nn_optimizer_step(opt), 0);
    }
    for (size_t i = 0; i < 3; i++) {
        double value = ag_tensor_get(p, i);
        double expected = start[i] * expected_factor;

        ck_assert_msg(!isnan(value), "eps %g decoupled %d: element %zu is NaN", options.eps,
                      options.decoupled, i);
        ck_assert_close(value, expected, dtype == AG_F64 ? 1e-15 : 1e-7, "parameter");
    }
    nn_optimizer_free(opt);
    nn_params_free(params);
}

START_TEST(adam_zero_grad_no_nan)
{
    for (int d = 0; d < 2; d++) {
        nn_adam_options adam = nn_adam_defaults();
        nn_adam_options adamw = nn_adamw_defaults();

        /* Adam: m = v = 0, so the parameter stays, also with eps = 0 (where
         * PyTorch 1.13 gives 0 / 0 = NaN). */
        check_zero_grad_steps(adam, dtypes[d], 1.0);
        adam.eps = 0.0;
        check_zero_grad_steps(adam, dtypes[d], 1.0);

        /* AdamW: only the decay p (1 - lr wd) acts, three times. */
        double decay = 1.0 - adamw.lr * adamw.weight_decay;
        check_zero_grad_steps(adamw, dtypes[d], decay * decay * decay);
        adamw.eps = 0.0;
        check_zero_grad_steps(adamw, dtypes[d], decay * decay * decay);
    }
}
END_TEST

/* ---- gradient flow --------------------------------------------------------- */

START_TEST(reused_handle_counts_each_use)
{
    /* f = sum(x * x + x + x) uses the same handle four times, so
     * df/dx = 2x + 2. */
    const double values[3] = {0.5, -1.25, 3.0};

    ag_tape *tape = ag_tape_new();
    ag_tensor *x = leaf(tape, AG_F64, AG_SHAPE(3), values);
    ag_tensor *f = ag_sum(tape, ag_add(tape, ag_add(tape, ag_mul(tape, x, x), x), x));

    ck_assert_int_eq(ag_backward(tape, f, NULL), 0);
    for (size_t i = 0; i < 3; i++)
        ck_assert_double_eq(grad_at(x, i), 2 * values[i] + 2);
    ag_tape_free(tape);
}
END_TEST

START_TEST(reassigned_handle_chain)
{
    /* h = x; h = h * x three times gives x^4, through one C variable that
     * names a new value each time: dh/dx = 4x^3. */
    const double values[2] = {0.5, -2.0};

    ag_tape *tape = ag_tape_new();
    ag_tensor *x = leaf(tape, AG_F64, AG_SHAPE(2), values);
    ag_tensor *h = x;
    for (int k = 0; k < 3; k++)
        h = ag_mul(tape, h, x);

    ck_assert_int_eq(ag_backward(tape, ag_sum(tape, h), NULL), 0);
    for (size_t i = 0; i < 2; i++)
        ck_assert_double_eq(grad_at(x, i), 4 * values[i] * values[i] * values[i]);
    ag_tape_free(tape);
}
END_TEST

START_TEST(backward_twice_counts_once)
{
    /* y = x * x, f = sum(y * y) = sum(x^4): dy = 2y and dx = 4x^3. A second
     * call adds 4x^3 to the leaf once more and recomputes dy from zero. */
    const double values[2] = {1.5, -0.5};

    ag_tape *tape = ag_tape_new();
    ag_tensor *x = leaf(tape, AG_F64, AG_SHAPE(2), values);
    ag_tensor *y = ag_mul(tape, x, x);
    ag_tensor *f = ag_sum(tape, ag_mul(tape, y, y));

    for (int call = 1; call <= 2; call++) {
        ck_assert_int_eq(ag_backward(tape, f, NULL), 0);
        for (size_t i = 0; i < 2; i++) {
            double xi = values[i];
            ck_assert_double_eq(grad_at(y, i), 2 * xi * xi);
            ck_assert_double_eq_tol(grad_at(x, i), call * 4 * xi * xi * xi, 1e-15);
        }
    }
    ag_tape_free(tape);
}
END_TEST

START_TEST(second_output_skips_other_branch)
{
    /* Two losses on one tape share x = [inf, 0]. The softmax branch is NaN;
     * a backward pass from the other loss must not run it, so its gradient
     * is [0, 1] as in PyTorch, on the first and on a later call. */
    const double values[2] = {INFINITY, 0.0};

    for (int order = 0; order < 2; order++) {
        ag_tape *tape = ag_tape_new();
        ag_tensor *x = leaf(tape, AG_F64, AG_SHAPE(2), values);
        ag_tensor *nan_branch = weighted_sum(tape, ag_softmax(tape, x, 0), (const double[]){1, 2});
        ag_tensor *mask = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(2), (const double[]){0, 1});
        ag_tensor *clean = ag_sum(tape, ag_mul(tape, x, mask));

        if (order == 1) {
            /* A backward pass over the NaN branch first leaves its adjoints
             * allocated, which is what a later pass must not run. */
            ck_assert_int_eq(ag_backward(tape, nan_branch, NULL), 0);
            ag_tensor_zero_grad(x);
        }
        ck_assert_int_eq(ag_backward(tape, clean, NULL), 0);
        ck_assert_double_eq(grad_at(x, 0), 0.0);
        ck_assert_double_eq(grad_at(x, 1), 1.0);
        ag_tape_free(tape);
    }
}
END_TEST

/* ---- bad input ------------------------------------------------------------- */

typedef ag_tensor *(*loss_fn)(ag_tape *, ag_tensor *, ag_tensor *);

static ag_tensor *gaussian_nll_unit(ag_tape *tape, ag_tensor *pred, ag_tensor *target)
{
    ag_tensor *sigma = pred == NULL ? NULL : ag_ones(tape, ag_tensor_dtype(pred), AG_SHAPE(1));
    return nn_gaussian_nll_loss(tape, pred, target, sigma);
}

static const struct {
    const char *name;
    loss_fn fn;
} pair_losses[] = {
    {"nn_mse_loss", nn_mse_loss},
    {"nn_sum_of_squares_loss", nn_sum_of_squares_loss},
    {"nn_bce_loss", nn_bce_loss},
    {"nn_bce_with_logits_loss", nn_bce_with_logits_loss},
    {"nn_gaussian_nll_loss", gaussian_nll_unit},
};

START_TEST(loss_shape_mismatch_rejected)
{
    /* (N x 1) against (N) would broadcast to (N x N); losses report it. */
    ag_tape *tape = ag_tape_new();
    ag_tensor *column = ag_full(tape, AG_F64, AG_SHAPE(4, 1), 0.5);
    ag_tensor *flat = ag_full(tape, AG_F64, AG_SHAPE(4), 0.5);

    for (size_t k = 0; k < N_REFS(pair_losses); k++) {
        ag_error_clear();
        ag_tensor *loss = pair_losses[k].fn(tape, column, flat);
        ck_assert_msg(loss == NULL, "%s accepted (4x1) against (4)", pair_losses[k].name);
        ck_assert_ptr_nonnull(strstr(ag_error(), pair_losses[k].name));
        ck_assert_ptr_nonnull(strstr(ag_error(), "(4x1)"));
        ck_assert_ptr_nonnull(strstr(ag_error(), "(4)"));
    }

    /* Cross-entropy takes labels of shape (N), not (N x 1). */
    ag_tensor *logits = ag_zeros(tape, AG_F64, AG_SHAPE(4, 3));
    ag_tensor *labels = ag_zeros(tape, AG_F64, AG_SHAPE(4, 1));
    ck_assert_error_contains(nn_cross_entropy_loss(tape, logits, labels), "(4x1)");
    ag_tape_free(tape);
}
END_TEST

START_TEST(loss_dtype_mismatch_rejected)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *pred = ag_full(tape, AG_F32, AG_SHAPE(3), 0.5);
    ag_tensor *target = ag_full(tape, AG_F64, AG_SHAPE(3), 0.5);

    for (size_t k = 0; k < N_REFS(pair_losses); k++) {
        ag_error_clear();
        ag_tensor *loss = pair_losses[k].fn(tape, pred, target);
        ck_assert_msg(loss == NULL, "%s accepted f32 against f64", pair_losses[k].name);
        ck_assert_ptr_nonnull(strstr(ag_error(), "f32"));
    }
    ag_tape_free(tape);
}
END_TEST

START_TEST(empty_batch_losses)
{
    for (int d = 0; d < 2; d++) {
        ag_tape *tape = ag_tape_new();
        static const double no_elements[1];
        ag_tensor *pred = leaf(tape, dtypes[d], AG_SHAPE(0, 3), no_elements);
        ag_tensor *target = ag_zeros(tape, dtypes[d], AG_SHAPE(0, 3));

        /* The averaging losses report the empty prediction. */
        ck_assert_error_contains(nn_mse_loss(tape, pred, target), "no elements");
        ck_assert_error_contains(nn_bce_loss(tape, pred, target), "no elements");
        ck_assert_error_contains(nn_bce_with_logits_loss(tape, pred, target), "no elements");
        ck_assert_error_contains(
            nn_cross_entropy_loss(tape, pred, ag_zeros(tape, dtypes[d], AG_SHAPE(0))),
            "no elements");

        /* The sums are 0, with an empty gradient. */
        ag_tensor *sums[2] = {nn_sum_of_squares_loss(tape, pred, target),
                              gaussian_nll_unit(tape, pred, target)};
        for (int k = 0; k < 2; k++) {
            ck_assert_ptr_nonnull(sums[k]);
            ck_assert_double_eq(ag_tensor_item(sums[k]), 0.0);
            ck_assert_int_eq(ag_backward(tape, sums[k], NULL), 0);
            ck_assert(ag_tensor_same_shape(ag_tensor_grad(pred), pred));
        }
        ag_tape_free(tape);
    }
}
END_TEST

/* An op applied to an empty (0 x 3) input: the output shape it must give
 * (ndim 0 when the op must fail) and its value when that has one element. */
typedef struct empty_case {
    const char *name;
    ag_tensor *(*apply)(ag_tape *, ag_tensor *);
    int ndim;
    size_t shape[2];
    double value; /* checked for one-element outputs */
} empty_case;

static ag_tensor *empty_sum0(ag_tape *t, ag_tensor *x) { return ag_sum_axis(t, x, 0, false); }
static ag_tensor *empty_sum1(ag_tape *t, ag_tensor *x) { return ag_sum_axis(t, x, 1, false); }
static ag_tensor *empty_mean1(ag_tape *t, ag_tensor *x) { return ag_mean_axis(t, x, 1, true); }
static ag_tensor *empty_max0(ag_tape *t, ag_tensor *x) { return ag_max_axis(t, x, 0, false); }
static ag_tensor *empty_max1(ag_tape *t, ag_tensor *x) { return ag_max_axis(t, x, 1, false); }
static ag_tensor *empty_lse1(ag_tape *t, ag_tensor *x) { return ag_logsumexp_axis(t, x, 1, false); }
static ag_tensor *empty_softmax0(ag_tape *t, ag_tensor *x) { return ag_softmax(t, x, 0); }
static ag_tensor *empty_softmax1(ag_tape *t, ag_tensor *x) { return ag_softmax(t, x, 1); }
static ag_tensor *empty_log_softmax0(ag_tape *t, ag_tensor *x) { return ag_log_softmax(t, x, 0); }
static ag_tensor *empty_clamp(ag_tape *t, ag_tensor *x) { return ag_clamp(t, x, -1, 1); }
static ag_tensor *empty_pow(ag_tape *t, ag_tensor *x) { return ag_pow_scalar(t, x, 0.5); }
static ag_tensor *empty_add_self(ag_tape *t, ag_tensor *x) { return ag_add(t, x, x); }
static ag_tensor *empty_div_row(ag_tape *t, ag_tensor *x)
{
    return ag_div(t, x, ag_ones(t, ag_tensor_dtype(x), AG_SHAPE(1, 3)));
}
static ag_tensor *empty_maximum(ag_tape *t, ag_tensor *x) { return ag_maximum(t, x, x); }
static ag_tensor *empty_matmul(ag_tape *t, ag_tensor *x)
{
    return ag_matmul(t, x, ag_ones(t, ag_tensor_dtype(x), AG_SHAPE(3, 2)));
}
static ag_tensor *empty_gram(ag_tape *t, ag_tensor *x)
{
    return ag_matmul(t, ag_transpose(t, x), x);
}
static ag_tensor *empty_linear(ag_tape *t, ag_tensor *x)
{
    ag_dtype dtype = ag_tensor_dtype(x);
    return ag_linear(t, x, ag_ones(t, dtype, AG_SHAPE(3, 2)), ag_ones(t, dtype, AG_SHAPE(2)));
}
static ag_tensor *empty_reshape(ag_tape *t, ag_tensor *x) { return ag_reshape(t, x, AG_SHAPE(3, 0)); }

static const empty_case empty_cases[] = {
    {"neg", ag_neg, 2, {0, 3}, 0},
    {"exp", ag_exp, 2, {0, 3}, 0},
    {"log", ag_log, 2, {0, 3}, 0},
    {"sqrt", ag_sqrt, 2, {0, 3}, 0},
    {"abs", ag_abs, 2, {0, 3}, 0},
    {"tanh", ag_tanh, 2, {0, 3}, 0},
    {"sigmoid", ag_sigmoid, 2, {0, 3}, 0},
    {"relu", ag_relu, 2, {0, 3}, 0},
    {"softplus", ag_softplus, 2, {0, 3}, 0},
    {"log_sigmoid", ag_log_sigmoid, 2, {0, 3}, 0},
    {"clamp", empty_clamp, 2, {0, 3}, 0},
    {"pow_scalar", empty_pow, 2, {0, 3}, 0},
    {"add", empty_add_self, 2, {0, 3}, 0},
    {"div", empty_div_row, 2, {0, 3}, 0},
    {"maximum", empty_maximum, 2, {0, 3}, 0},
    {"transpose", ag_transpose, 2, {3, 0}, 0},
    {"reshape", empty_reshape, 2, {3, 0}, 0},
    {"matmul", empty_matmul, 2, {0, 2}, 0},
    {"matmul_gram", empty_gram, 2, {3, 3}, 0},
    {"linear", empty_linear, 2, {0, 2}, 0},
    {"sum", ag_sum, 1, {1}, 0.0},
    {"mean", ag_mean, 1, {1}, NAN}, /* documented: the mean of nothing */
    {"logsumexp", ag_logsumexp, 1, {1}, -INFINITY}, /* documented: log of 0 */
    {"max", ag_max, 0, {0}, 0},                     /* documented: an error */
    {"sum_axis0", empty_sum0, 1, {3}, 0},
    {"sum_axis1", empty_sum1, 1, {0}, 0},
    {"mean_axis1", empty_mean1, 2, {0, 1}, 0},
    {"max_axis0", empty_max0, 0, {0}, 0},
    {"max_axis1", empty_max1, 1, {0}, 0},
    {"logsumexp_axis1", empty_lse1, 1, {0}, 0},
    {"softmax_axis0", empty_softmax0, 2, {0, 3}, 0},
    {"softmax_axis1", empty_softmax1, 2, {0, 3}, 0},
    {"log_softmax_axis0", empty_log_softmax0, 2, {0, 3}, 0},
};

START_TEST(empty_rows_every_op)
{
    for (size_t c = 0; c < N_REFS(empty_cases); c++) {
        const empty_case *ec = &empty_cases[c];

        for (int d = 0; d < 2; d++) {
            ag_tape *tape = ag_tape_new();
            ag_tensor *x = ag_zeros(tape, dtypes[d], AG_SHAPE(0, 3));
            ck_assert_int_eq(ag_tensor_set_requires_grad(x, true), 0);

            ag_error_clear();
            ag_tensor *y = ec->apply(tape, x);
            if (ec->ndim == 0) {
                ck_assert_msg(y == NULL, "%s of (0x3) should fail", ec->name);
                ck_assert_ptr_nonnull(strstr(ag_error(), "empty"));
                ag_tape_free(tape);
                continue;
            }

            ck_assert_msg(y != NULL, "%s of (0x3) failed: %s", ec->name, ag_error());
            ck_assert_int_eq(ag_tensor_ndim(y), ec->ndim);
            for (int i = 0; i < ec->ndim; i++)
                ck_assert_uint_eq(ag_tensor_dim(y, i), ec->shape[i]);
            for (size_t i = 0; i < ag_tensor_numel(y); i++) {
                char what[64];
                snprintf(what, sizeof what, "%s of (0x3) [%zu]", ec->name, i);
                check_value(ag_tensor_get(y, i), ag_tensor_numel(y) == 1 ? ec->value : 0.0, 0,
                            what);
            }

            /* Backward gives x an empty gradient of its own shape. */
            ag_tensor *seed = ag_ones(tape, dtypes[d], ag_tensor_ndim(y), ag_tensor_shape(y));
            ck_assert_int_eq(ag_backward(tape, y, seed), 0);
            ck_assert(ag_tensor_same_shape(ag_tensor_grad(x), x));
            ag_tape_free(tape);
        }
    }
}
END_TEST

/* ---- fuzz seeds and regressions -------------------------------------------- */

#define FUZZ_NO_ENTRY
#include "../fuzz/fuzz_csv.c"
#include "../fuzz/fuzz_idx.c"
#include "../fuzz/fuzz_ops.c"
#include "../fuzz/fuzz_safetensors.c"

#define FUZZ_DIR TEST_DATA_DIR "/../../fuzz"

/* Runs `one` on every file of FUZZ_DIR/SUBDIR/TARGET and returns how many
 * it read. A target aborts on a broken contract, which fails the test. */
static size_t replay_directory(const char *subdir, const char *target,
                               int (*one)(const uint8_t *, size_t))
{
    char dir_path[1024];
    size_t count = 0;

    snprintf(dir_path, sizeof dir_path, "%s/%s/%s", FUZZ_DIR, subdir, target);
    DIR *dir = opendir(dir_path);
    if (dir == NULL)
        return 0;
    for (struct dirent *entry; (entry = readdir(dir)) != NULL;) {
        char path[2048];
        if (entry->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir_path, entry->d_name);

        FILE *f = fopen(path, "rb");
        ck_assert_msg(f != NULL, "cannot open %s", path);
        uint8_t *data = malloc(1 << 20);
        size_t size = fread(data, 1, 1 << 20, f);
        fclose(f);
        one(data, size);
        free(data);
        count++;
    }
    closedir(dir);
    return count;
}

START_TEST(fuzz_inputs_replay)
{
    static const struct {
        const char *target;
        int (*one)(const uint8_t *, size_t);
    } targets[] = {
        {"fuzz_idx", fuzz_idx_one},
        {"fuzz_csv", fuzz_csv_one},
        {"fuzz_safetensors", fuzz_safetensors_one},
        {"fuzz_ops", fuzz_ops_one},
    };

    for (size_t k = 0; k < N_REFS(targets); k++) {
        size_t seeds = replay_directory("corpus", targets[k].target, targets[k].one);
        replay_directory("regressions", targets[k].target, targets[k].one);
        ck_assert_msg(seeds > 0, "no seed corpus for %s under %s", targets[k].target,
                      FUZZ_DIR);
    }
}
END_TEST

/* ---- the suite ------------------------------------------------------------- */

static Suite *edge_numerics_suite(void)
{
    Suite *suite = suite_create("edge_numerics");

    TCase *reference = tcase_create("reference");
    tcase_add_test(reference, unary_matches_torch);
    tcase_add_test(reference, binary_matches_torch);
    tcase_add_test(reference, broadcast_matches_torch);
    tcase_add_test(reference, max_ties_match_torch);
    tcase_add_test(reference, softmax_rows_match_torch);
    tcase_add_test(reference, bce_matches_torch);
    tcase_add_test(reference, composites_match_torch);
    suite_add_tcase(suite, reference);

    TCase *limits = tcase_create("limits");
    tcase_add_test(limits, bce_logits_infinite_limits);
    tcase_add_test(limits, bce_logits_target_gradient);
    tcase_add_test(limits, bce_logits_second_derivative);
    tcase_add_test(limits, cross_entropy_infinite_logits);
    tcase_add_test(limits, cross_entropy_neg_inf_label);
    tcase_add_test(limits, logsumexp_infinite_limits);
    tcase_add_test(limits, softmax_infinite_limits);
    tcase_add_test(limits, max_axis_nan_shares);
    tcase_add_test(limits, adam_zero_grad_no_nan);
    suite_add_tcase(suite, limits);

    TCase *flow = tcase_create("flow");
    tcase_add_test(flow, reused_handle_counts_each_use);
    tcase_add_test(flow, reassigned_handle_chain);
    tcase_add_test(flow, backward_twice_counts_once);
    tcase_add_test(flow, second_output_skips_other_branch);
    suite_add_tcase(suite, flow);

    TCase *bad_input = tcase_create("bad_input");
    tcase_add_test(bad_input, loss_shape_mismatch_rejected);
    tcase_add_test(bad_input, loss_dtype_mismatch_rejected);
    tcase_add_test(bad_input, empty_batch_losses);
    tcase_add_test(bad_input, empty_rows_every_op);
    suite_add_tcase(suite, bad_input);

    TCase *fuzz = tcase_create("fuzz");
    tcase_set_timeout(fuzz, 120);
    tcase_add_test(fuzz, fuzz_inputs_replay);
    suite_add_tcase(suite, fuzz);
    return suite;
}

int main(void)
{
    return run_suite(edge_numerics_suite());
}
