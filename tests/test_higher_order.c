/*
 * Higher-order gradients: ag_grad with and without create_graph, the
 * backward_graph rule of every op, Jacobians, Hessians, Hessian-vector
 * products and the second-order check.
 *
 * References are computed independently of the library's derivative code:
 * second derivatives written out in closed form, and Hessians by central
 * differences of the gradient that the backward kernels (ag_backward) give,
 * in f64. The lecture's network x -> S1 = xW1 + b1 -> Z1 = h(S1) ->
 * S2 = Z1W2 + b2 -> Z2 = h(S2) -> f = Z2W3 + b3, L = (y - f)^2 is checked
 * the same way for h = sigmoid and h = tanh.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_helpers.h"

typedef ag_tensor *(*unary_fn)(ag_tape *, ag_tensor *);
typedef ag_tensor *(*binary_fn)(ag_tape *, ag_tensor *, ag_tensor *);

/* Step of the central differences of the gradient. Their truncation error
 * is about eps^2 |f''''| ~ 1e-10 and their rounding error about
 * 1e-16 / eps ~ 1e-11, so 1e-6 leaves a wide margin while still catching
 * any wrong rule. */
#define FD_EPS 1e-5
#define FD_TOL 1e-6

/* Values computed twice by the library on one path (the built gradient
 * against the kernels' gradient) differ only by rounding. */
#define SAME_TOL 1e-12

/* ---- helpers -------------------------------------------------------------- */

static ag_tensor *vector_f64(ag_tape *tape, size_t n, const double *values)
{
    return ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(n), values);
}

/* A heap f64 tensor of the given shape that requires a gradient. */
static ag_tensor *variable(int ndim, const size_t *shape, const double *values)
{
    ag_tensor *t = ag_tensor_from_doubles(NULL, AG_F64, ndim, shape, values);

    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(ag_tensor_set_requires_grad(t, true), 0);
    return t;
}

static void free_all(ag_tensor **tensors, int n)
{
    for (int i = 0; i < n; i++)
        ag_tensor_free(tensors[i]);
}

static size_t count_variables(int n_inputs, ag_tensor *const *inputs)
{
    size_t n = 0;

    for (int i = 0; i < n_inputs; i++) {
        if (ag_tensor_requires_grad(inputs[i]))
            n += ag_tensor_numel(inputs[i]);
    }
    return n;
}

/* The gradient of f at the inputs by the backward kernels: f runs on copies
 * on a fresh tape and ag_backward fills their gradients. */
static void kernel_gradient(ag_function f, void *user, int n_inputs,
                            ag_tensor *const *inputs, double *gradient)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *copies[8];
    size_t k = 0;

    ck_assert_int_le(n_inputs, 8);
    for (int i = 0; i < n_inputs; i++) {
        copies[i] = ag_tensor_copy(tape, inputs[i], AG_F64);
        ck_assert_int_eq(ag_tensor_set_requires_grad(copies[i],
                                                     ag_tensor_requires_grad(inputs[i])), 0);
    }
    ag_tensor *output = f(tape, copies, n_inputs, user);
    ck_assert_ptr_nonnull(output);
    ck_assert_int_eq(ag_backward(tape, output, NULL), 0);
    for (int i = 0; i < n_inputs; i++) {
        if (!ag_tensor_requires_grad(inputs[i]))
            continue;
        for (size_t e = 0; e < ag_tensor_numel(copies[i]); e++)
            gradient[k++] = ag_tensor_get(ag_tensor_grad(copies[i]), e);
    }
    ag_tape_free(tape);
}

/* Column c of the Hessian is (grad(x + eps u_c) - grad(x - eps u_c)) / 2eps.
 * The inputs are f64 heap tensors; each element is moved and put back. */
static double *numeric_hessian(ag_function f, void *user, int n_inputs,
                               ag_tensor *const *inputs)
{
    size_t n = count_variables(n_inputs, inputs);
    double *hessian = malloc(n * n * sizeof *hessian);
    double *plus = malloc(n * sizeof *plus);
    double *minus = malloc(n * sizeof *minus);
    size_t c = 0;

    for (int i = 0; i < n_inputs; i++) {
        if (!ag_tensor_requires_grad(inputs[i]))
            continue;
        double *x = ag_tensor_f64(inputs[i]);
        for (size_t e = 0; e < ag_tensor_numel(inputs[i]); e++, c++) {
            const double center = x[e];

            x[e] = center + FD_EPS;
            kernel_gradient(f, user, n_inputs, inputs, plus);
            x[e] = center - FD_EPS;
            kernel_gradient(f, user, n_inputs, inputs, minus);
            x[e] = center;
            for (size_t r = 0; r < n; r++)
                hessian[r * n + c] = (plus[r] - minus[r]) / (2 * FD_EPS);
        }
    }
    free(plus);
    free(minus);
    return hessian;
}

/* Compares ag_hessian with central differences of the kernels' gradient. */
static void check_hessian_fd(const char *name, ag_function f, void *user, int n_inputs,
                             ag_tensor *const *inputs)
{
    size_t n = count_variables(n_inputs, inputs);
    ag_tensor *hessian = ag_hessian(f, user, n_inputs, inputs);

    ck_assert_msg(hessian != NULL, "%s: ag_hessian failed: %s", name, ag_error());
    ck_assert_int_eq(ag_tensor_numel(hessian), n * n);

    double *reference = numeric_hessian(f, user, n_inputs, inputs);
    for (size_t r = 0; r < n; r++) {
        for (size_t c = 0; c < n; c++) {
            char what[96];

            snprintf(what, sizeof what, "%s: H[%zu][%zu]", name, r, c);
            ck_assert_close(ag_tensor_get(hessian, r * n + c), reference[r * n + c],
                            FD_TOL, what);
        }
    }
    free(reference);
    ag_tensor_free(hessian);
}

/* Returns d(sum of `of`)/d(wrt) without a graph, or zeros when `of` is a
 * constant (its gradient was built from values that need none). */
static ag_tensor *gradient_of_sum(ag_tape *tape, ag_tensor *of, ag_tensor *wrt)
{
    ag_tensor *total = ag_sum(tape, of);
    ag_tensor *grad = NULL;

    ck_assert_ptr_nonnull(total);
    if (!ag_tensor_requires_grad(total))
        return ag_zeros(tape, AG_F64, ag_tensor_ndim(wrt), ag_tensor_shape(wrt));
    ck_assert_int_eq(ag_grad(tape, total, NULL, 1, &wrt, &grad, false), 0);
    return grad;
}

/* ---- unary ops: first and second derivatives in closed form --------------- */

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

static double d1_zero(double x) { (void)x; return 0.0; }
static double d1_neg(double x) { (void)x; return -1.0; }
static double d1_log(double x) { return 1.0 / x; }
static double d2_log(double x) { return -1.0 / (x * x); }
static double d1_sqrt(double x) { return 0.5 / sqrt(x); }
static double d2_sqrt(double x) { return -0.25 / (x * sqrt(x)); }
static double d1_abs(double x) { return x > 0 ? 1.0 : -1.0; }
static double d1_tanh(double x) { return 1.0 - tanh(x) * tanh(x); }
static double d2_tanh(double x) { return -2.0 * tanh(x) * (1.0 - tanh(x) * tanh(x)); }
static double d1_sigmoid(double x) { return sigmoid(x) * (1.0 - sigmoid(x)); }
static double d2_sigmoid(double x)
{
    double s = sigmoid(x);
    return s * (1.0 - s) * (1.0 - 2.0 * s);
}
static double d1_relu(double x) { return x > 0 ? 1.0 : 0.0; }
static double d1_log_sigmoid(double x) { return 1.0 - sigmoid(x); }
static double d2_log_sigmoid(double x) { return -d1_sigmoid(x); }
static double d1_clamp(double x) { return fabs(x) <= 1.0 ? 1.0 : 0.0; }
static double d1_one(double x) { (void)x; return 1.0; }
static double d1_times3(double x) { (void)x; return 3.0; }
static double d1_pow25(double x) { return 2.5 * pow(x, 1.5); }
static double d2_pow25(double x) { return 3.75 * sqrt(x); }
static double d1_cube(double x) { return 3.0 * x * x; }
static double d2_cube(double x) { return 6.0 * x; }

static ag_tensor *clamp_unit(ag_tape *tape, ag_tensor *x) { return ag_clamp(tape, x, -1.0, 1.0); }
static ag_tensor *add_two(ag_tape *tape, ag_tensor *x) { return ag_add_scalar(tape, x, 2.0); }
static ag_tensor *times_three(ag_tape *tape, ag_tensor *x) { return ag_mul_scalar(tape, x, 3.0); }
static ag_tensor *pow_25(ag_tape *tape, ag_tensor *x) { return ag_pow_scalar(tape, x, 2.5); }
static ag_tensor *cube(ag_tape *tape, ag_tensor *x) { return ag_pow_scalar(tape, x, 3.0); }

typedef struct unary_case {
    const char *name;
    unary_fn op;
    double (*first)(double);
    double (*second)(double);
    double low, high; /* domain sampled, away from kinks */
} unary_case;

static const unary_case unary_cases[] = {
    {"neg", ag_neg, d1_neg, d1_zero, -3, 3},
    {"exp", ag_exp, exp, exp, -3, 3},
    {"log", ag_log, d1_log, d2_log, 0.2, 5},
    {"sqrt", ag_sqrt, d1_sqrt, d2_sqrt, 0.2, 5},
    {"abs", ag_abs, d1_abs, d1_zero, -3, 3},
    {"tanh", ag_tanh, d1_tanh, d2_tanh, -3, 3},
    {"sigmoid", ag_sigmoid, d1_sigmoid, d2_sigmoid, -6, 6},
    {"relu", ag_relu, d1_relu, d1_zero, -3, 3},
    {"softplus", ag_softplus, sigmoid, d1_sigmoid, -6, 6},
    {"log_sigmoid", ag_log_sigmoid, d1_log_sigmoid, d2_log_sigmoid, -6, 6},
    {"clamp", clamp_unit, d1_clamp, d1_zero, -3, 3},
    {"add_scalar", add_two, d1_one, d1_zero, -3, 3},
    {"mul_scalar", times_three, d1_times3, d1_zero, -3, 3},
    {"pow_scalar", pow_25, d1_pow25, d2_pow25, 0.2, 4},
    {"pow_scalar_int", cube, d1_cube, d2_cube, -3, 3},
};

#define N_POINTS 12

/* f'(x) by ag_grad with create_graph, then f''(x) as the gradient of
 * sum(f'(x)), since f' acts elementwise. */
START_TEST(unary_second_derivative)
{
    const unary_case *c = &unary_cases[_i];
    ag_tape *tape = ag_tape_new();
    ag_rng rng = ag_rng_new(7);
    ag_tensor *x = ag_rand_uniform(tape, AG_F64, AG_SHAPE(N_POINTS), c->low, c->high, &rng);
    ag_tensor *g = NULL;

    ck_assert_int_eq(ag_tensor_set_requires_grad(x, true), 0);
    ag_tensor *loss = ag_sum(tape, c->op(tape, x));
    ck_assert_int_eq(ag_grad(tape, loss, NULL, 1, &x, &g, true), 0);
    ag_tensor *h = gradient_of_sum(tape, g, x);

    for (size_t i = 0; i < N_POINTS; i++) {
        double xi = ag_tensor_get(x, i);
        char what[64];

        snprintf(what, sizeof what, "%s'(%g)", c->name, xi);
        ck_assert_close(ag_tensor_get(g, i), c->first(xi), SAME_TOL, what);
        snprintf(what, sizeof what, "%s''(%g)", c->name, xi);
        ck_assert_close(ag_tensor_get(h, i), c->second(xi), 1e-11, what);
    }
    ag_tape_free(tape);
}
END_TEST

/* The same second derivatives, as the Hessian of sum(w * f(x)), against
 * central differences of the kernels' gradient. */
typedef struct unary_call {
    unary_fn op;
} unary_call;

static ag_tensor *f_weighted_unary(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    const unary_call *call = user;
    static const double weights[5] = {0.7, -1.3, 0.4, 2.1, -0.6};
    ag_tensor *w = vector_f64(tape, 5, weights);

    (void)n;
    return ag_sum(tape, ag_mul(tape, w, call->op(tape, inputs[0])));
}

START_TEST(unary_hessian_fd)
{
    const unary_case *c = &unary_cases[_i];
    unary_call call = {c->op};
    double values[5];
    ag_rng rng = ag_rng_new(11);

    for (int i = 0; i < 5; i++)
        values[i] = c->low + (c->high - c->low) * ag_rng_uniform(&rng);
    ag_tensor *x = variable(AG_SHAPE(5), values);
    check_hessian_fd(c->name, f_weighted_unary, &call, 1, &x);
    ag_tensor_free(x);
}
END_TEST

/* ---- binary ops with broadcasting ----------------------------------------- */

/* Partial derivatives of y(a, b) at one pair of elements. */
typedef struct partials {
    double a, b;       /* dy/da, dy/db */
    double aa, ab, bb; /* second partials */
} partials;

static partials p_add(double a, double b) { (void)a; (void)b; return (partials){1, 1, 0, 0, 0}; }
static partials p_sub(double a, double b) { (void)a; (void)b; return (partials){1, -1, 0, 0, 0}; }
static partials p_mul(double a, double b) { return (partials){b, a, 0, 1, 0}; }
static partials p_div(double a, double b)
{
    return (partials){1 / b, -a / (b * b), 0, -1 / (b * b), 2 * a / (b * b * b)};
}
static partials p_pow(double a, double b)
{
    double l = log(a);
    return (partials){b * pow(a, b - 1), pow(a, b) * l, b * (b - 1) * pow(a, b - 2),
                      pow(a, b - 1) * (1 + b * l), pow(a, b) * l * l};
}
static partials p_maximum(double a, double b)
{
    return (partials){a > b ? 1 : 0, a > b ? 0 : 1, 0, 0, 0};
}
static partials p_minimum(double a, double b)
{
    return (partials){a < b ? 1 : 0, a < b ? 0 : 1, 0, 0, 0};
}

typedef struct binary_case {
    const char *name;
    binary_fn op;
    partials (*expected)(double, double);
    double low, high;
} binary_case;

static const binary_case binary_cases[] = {
    {"add", ag_add, p_add, -2, 2},
    {"sub", ag_sub, p_sub, -2, 2},
    {"mul", ag_mul, p_mul, -2, 2},
    {"div", ag_div, p_div, 0.5, 2},
    {"pow", ag_pow, p_pow, 0.5, 2},
    {"maximum", ag_maximum, p_maximum, -2, 2},
    {"minimum", ag_minimum, p_minimum, -2, 2},
};

#define ROWS 3
#define COLS 4

/* a is (ROWS x COLS) and b (1 x COLS), broadcast down the rows. With
 * L = sum y(a, b) and g = dL/d(a, b), each second derivative is the
 * gradient of sum(g_a) or sum(g_b), and a broadcast b collects the sum of
 * its column:
 *   d sum(g_a)/da_ij = y_aa(a_ij, b_j)    d sum(g_a)/db_j = sum_i y_ab
 *   d sum(g_b)/da_ij = y_ab(a_ij, b_j)    d sum(g_b)/db_j = sum_i y_bb */
START_TEST(binary_second_derivative)
{
    const binary_case *c = &binary_cases[_i];
    ag_tape *tape = ag_tape_new();
    ag_rng rng = ag_rng_new(3);
    ag_tensor *a = ag_rand_uniform(tape, AG_F64, AG_SHAPE(ROWS, COLS), c->low, c->high, &rng);
    ag_tensor *b = ag_rand_uniform(tape, AG_F64, AG_SHAPE(1, COLS), c->low, c->high, &rng);
    ag_tensor *inputs[2] = {a, b};
    ag_tensor *g[2];

    ck_assert_int_eq(ag_tensor_set_requires_grad(a, true), 0);
    ck_assert_int_eq(ag_tensor_set_requires_grad(b, true), 0);
    ag_tensor *loss = ag_sum(tape, c->op(tape, a, b));
    ck_assert_int_eq(ag_grad(tape, loss, NULL, 2, inputs, g, true), 0);
    ag_tensor *h_aa = gradient_of_sum(tape, g[0], a);
    ag_tensor *h_ab = gradient_of_sum(tape, g[0], b);
    ag_tensor *h_ba = gradient_of_sum(tape, g[1], a);
    ag_tensor *h_bb = gradient_of_sum(tape, g[1], b);

    for (size_t j = 0; j < COLS; j++) {
        double sum_ab = 0;
        double sum_bb = 0;
        double sum_b = 0;
        char what[64];

        for (size_t i = 0; i < ROWS; i++) {
            size_t k = i * COLS + j;
            partials p = c->expected(ag_tensor_get(a, k), ag_tensor_get(b, j));

            snprintf(what, sizeof what, "%s: dy/da[%zu]", c->name, k);
            ck_assert_close(ag_tensor_get(g[0], k), p.a, SAME_TOL, what);
            snprintf(what, sizeof what, "%s: d2y/da2[%zu]", c->name, k);
            ck_assert_close(ag_tensor_get(h_aa, k), p.aa, 1e-11, what);
            snprintf(what, sizeof what, "%s: d2y/dbda[%zu]", c->name, k);
            ck_assert_close(ag_tensor_get(h_ba, k), p.ab, 1e-11, what);
            sum_ab += p.ab;
            sum_bb += p.bb;
            sum_b += p.b;
        }
        snprintf(what, sizeof what, "%s: dy/db[%zu]", c->name, j);
        ck_assert_close(ag_tensor_get(g[1], j), sum_b, SAME_TOL, what);
        snprintf(what, sizeof what, "%s: d2y/dadb[%zu]", c->name, j);
        ck_assert_close(ag_tensor_get(h_ab, j), sum_ab, 1e-11, what);
        snprintf(what, sizeof what, "%s: d2y/db2[%zu]", c->name, j);
        ck_assert_close(ag_tensor_get(h_bb, j), sum_bb, 1e-11, what);
    }
    ag_tape_free(tape);
}
END_TEST

/* The full Hessian of sum(w * tanh(y(a, b))) with b of shape (3) broadcast
 * over a (2x3): tanh makes every block nonzero. */
typedef struct binary_call {
    binary_fn op;
} binary_call;

static ag_tensor *f_weighted_binary(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    const binary_call *call = user;
    static const double weights[6] = {0.7, -1.3, 0.4, 2.1, -0.6, 1.1};
    ag_tensor *w = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(2, 3), weights);

    (void)n;
    return ag_sum(tape, ag_mul(tape, w, ag_tanh(tape, call->op(tape, inputs[0], inputs[1]))));
}

START_TEST(binary_hessian_fd)
{
    const binary_case *c = &binary_cases[_i];
    binary_call call = {c->op};
    double a_values[6];
    double b_values[3];
    ag_rng rng = ag_rng_new(5);

    for (int i = 0; i < 6; i++)
        a_values[i] = c->low + (c->high - c->low) * ag_rng_uniform(&rng);
    for (int i = 0; i < 3; i++)
        b_values[i] = c->low + (c->high - c->low) * ag_rng_uniform(&rng);
    ag_tensor *inputs[2] = {variable(AG_SHAPE(2, 3), a_values), variable(AG_SHAPE(3), b_values)};
    check_hessian_fd(c->name, f_weighted_binary, &call, 2, inputs);
    ag_tensor_free(inputs[0]);
    ag_tensor_free(inputs[1]);
}
END_TEST

/* ---- shape ops, matrix products, reductions and the softmax family -------- */

/* sum(tanh(w * y + 0.1)) with w_k = 0.5 + 0.3 k over y's elements: a
 * scalar whose Hessian in y is diagonal and nonzero, with weights that
 * differ per element so a rule that mixes elements up cannot pass. */
static ag_tensor *warp(ag_tape *tape, ag_tensor *y)
{
    double weights[64];
    size_t n = y == NULL ? 0 : ag_tensor_numel(y);

    if (y == NULL)
        return NULL;
    ck_assert_uint_le(n, 64);
    for (size_t k = 0; k < n; k++)
        weights[k] = 0.5 + 0.3 * (double)k;
    ag_tensor *w = ag_tensor_from_doubles(tape, AG_F64, ag_tensor_ndim(y), ag_tensor_shape(y),
                                          weights);
    return ag_sum(tape, ag_tanh(tape, ag_add_scalar(tape, ag_mul(tape, w, y), 0.1)));
}

typedef enum {
    OP_SUM, OP_MEAN, OP_MAX, OP_SUM_AXIS0_KEEP, OP_SUM_AXIS1, OP_MEAN_AXIS0,
    OP_MEAN_AXIS_LAST_KEEP, OP_MAX_AXIS1, OP_MAX_AXIS0_KEEP, OP_LOGSUMEXP,
    OP_LOGSUMEXP_AXIS1_KEEP, OP_LOGSUMEXP_AXIS0, OP_SOFTMAX1, OP_SOFTMAX0,
    OP_LOG_SOFTMAX1, OP_LOG_SOFTMAX0, OP_TRANSPOSE, OP_RESHAPE, OP_SUM_TO,
    OP_COUNT
} shape_op;

static const char *const shape_op_names[OP_COUNT] = {
    "sum", "mean", "max", "sum_axis(0, keep)", "sum_axis(1)", "mean_axis(0)",
    "mean_axis(-1, keep)", "max_axis(1)", "max_axis(0, keep)", "logsumexp",
    "logsumexp_axis(1, keep)", "logsumexp_axis(0)", "softmax(1)", "softmax(0)",
    "log_softmax(1)", "log_softmax(0)", "transpose", "reshape", "sum_to",
};

static ag_tensor *apply_shape_op(ag_tape *tape, shape_op op, ag_tensor *x)
{
    switch (op) {
    case OP_SUM: return ag_sum(tape, x);
    case OP_MEAN: return ag_mean(tape, x);
    case OP_MAX: return ag_max(tape, x);
    case OP_SUM_AXIS0_KEEP: return ag_sum_axis(tape, x, 0, true);
    case OP_SUM_AXIS1: return ag_sum_axis(tape, x, 1, false);
    case OP_MEAN_AXIS0: return ag_mean_axis(tape, x, 0, false);
    case OP_MEAN_AXIS_LAST_KEEP: return ag_mean_axis(tape, x, -1, true);
    case OP_MAX_AXIS1: return ag_max_axis(tape, x, 1, false);
    case OP_MAX_AXIS0_KEEP: return ag_max_axis(tape, x, 0, true);
    case OP_LOGSUMEXP: return ag_logsumexp(tape, x);
    case OP_LOGSUMEXP_AXIS1_KEEP: return ag_logsumexp_axis(tape, x, 1, true);
    case OP_LOGSUMEXP_AXIS0: return ag_logsumexp_axis(tape, x, 0, false);
    case OP_SOFTMAX1: return ag_softmax(tape, x, 1);
    case OP_SOFTMAX0: return ag_softmax(tape, x, 0);
    case OP_LOG_SOFTMAX1: return ag_log_softmax(tape, x, 1);
    case OP_LOG_SOFTMAX0: return ag_log_softmax(tape, x, 0);
    case OP_TRANSPOSE: return ag_transpose(tape, x);
    case OP_RESHAPE: return ag_reshape(tape, x, AG_SHAPE(3, 2));
    case OP_SUM_TO: return ag_sum_to(tape, x, ag_zeros(tape, AG_F64, AG_SHAPE(3)));
    default: return NULL;
    }
}

static ag_tensor *f_shape_op(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    const shape_op *op = user;

    (void)n;
    return warp(tape, apply_shape_op(tape, *op, inputs[0]));
}

/* x is (2x3) with distinct elements, so max has no ties within FD_EPS. */
START_TEST(shape_op_hessian_fd)
{
    shape_op op = (shape_op)_i;
    static const double values[6] = {0.3, -1.2, 0.8, 1.5, -0.4, 0.1};
    ag_tensor *x = variable(AG_SHAPE(2, 3), values);

    check_hessian_fd(shape_op_names[op], f_shape_op, &op, 1, &x);
    ag_tensor_free(x);
}
END_TEST

/* warp(expand_as(x, (2x3))) for x of shape (1x3). */
static ag_tensor *f_expand_as(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)n;
    (void)user;
    ag_tensor *like = ag_zeros(tape, AG_F64, AG_SHAPE(2, 3));
    return warp(tape, ag_expand_as(tape, inputs[0], like));
}

START_TEST(expand_as_hessian_fd)
{
    static const double values[3] = {0.3, -1.2, 0.8};
    ag_tensor *x = variable(AG_SHAPE(1, 3), values);

    check_hessian_fd("expand_as", f_expand_as, NULL, 1, &x);
    ag_tensor_free(x);
}
END_TEST

/* warp(A @ B) with A (2x3) and B (3x2). */
static ag_tensor *f_matmul(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)n;
    (void)user;
    return warp(tape, ag_matmul(tape, inputs[0], inputs[1]));
}

START_TEST(matmul_hessian_fd)
{
    static const double a[6] = {0.3, -1.2, 0.8, 1.5, -0.4, 0.1};
    static const double b[6] = {-0.7, 0.2, 0.9, -0.5, 0.6, 1.1};
    ag_tensor *inputs[2] = {variable(AG_SHAPE(2, 3), a), variable(AG_SHAPE(3, 2), b)};

    check_hessian_fd("matmul", f_matmul, NULL, 2, inputs);
    ag_tensor_free(inputs[0]);
    ag_tensor_free(inputs[1]);
}
END_TEST

/* warp(x W + b) with x (2x3), W (3x2) and b of shape (2) or (1x2). */
static ag_tensor *f_linear(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)n;
    (void)user;
    return warp(tape, ag_linear(tape, inputs[0], inputs[1], inputs[2]));
}

START_TEST(linear_hessian_fd)
{
    static const double x[6] = {0.3, -1.2, 0.8, 1.5, -0.4, 0.1};
    static const double w[6] = {-0.7, 0.2, 0.9, -0.5, 0.6, 1.1};
    static const double b[2] = {0.25, -0.35};
    ag_tensor *inputs[3] = {variable(AG_SHAPE(2, 3), x), variable(AG_SHAPE(3, 2), w),
                            _i == 0 ? variable(AG_SHAPE(2), b) : variable(AG_SHAPE(1, 2), b)};

    check_hessian_fd(_i == 0 ? "linear, b (2)" : "linear, b (1x2)", f_linear, NULL, 3, inputs);
    for (int i = 0; i < 3; i++)
        ag_tensor_free(inputs[i]);
}
END_TEST

/* ---- Hessians in closed form ---------------------------------------------- */

static ag_tensor *f_logsumexp(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)n;
    (void)user;
    return ag_logsumexp(tape, inputs[0]);
}

/* The Hessian of logsumexp is diag(p) - p p^T with p = softmax(x). */
START_TEST(logsumexp_hessian_closed_form)
{
    static const double values[4] = {0.5, -1.0, 2.0, 0.25};
    ag_tensor *x = variable(AG_SHAPE(4), values);
    ag_tensor *hessian = ag_hessian(f_logsumexp, NULL, 1, &x);
    double p[4];
    double total = 0;

    ck_assert_ptr_nonnull(hessian);
    for (int i = 0; i < 4; i++)
        total += exp(values[i]);
    for (int i = 0; i < 4; i++)
        p[i] = exp(values[i]) / total;
    for (int r = 0; r < 4; r++) {
        for (int c = 0; c < 4; c++) {
            char what[32];

            snprintf(what, sizeof what, "H[%d][%d]", r, c);
            ck_assert_close(ag_tensor_get(hessian, (size_t)(r * 4 + c)),
                            (r == c ? p[r] : 0.0) - p[r] * p[c], 1e-13, what);
        }
    }
    ag_tensor_free(hessian);
    ag_tensor_free(x);
}
END_TEST

static const double square_norm_w[6] = {0.4, -1.1, 0.7, 0.3, 1.2, -0.5};

/* ||x W||^2 for a row x (1x2) and W (2x3). */
static ag_tensor *f_square_norm(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)n;
    (void)user;
    ag_tensor *w = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(2, 3), square_norm_w);
    ag_tensor *s = ag_matmul(tape, inputs[0], w);
    return ag_sum(tape, ag_mul(tape, s, s));
}

/* d^2 ||x W||^2 / dx^2 = 2 W W^T. */
START_TEST(square_norm_hessian_closed_form)
{
    static const double values[2] = {0.9, -0.3};
    ag_tensor *x = variable(AG_SHAPE(1, 2), values);
    ag_tensor *hessian = ag_hessian(f_square_norm, NULL, 1, &x);

    ck_assert_ptr_nonnull(hessian);
    for (int r = 0; r < 2; r++) {
        for (int c = 0; c < 2; c++) {
            double expected = 0;
            char what[32];

            for (int k = 0; k < 3; k++)
                expected += 2 * square_norm_w[r * 3 + k] * square_norm_w[c * 3 + k];
            snprintf(what, sizeof what, "H[%d][%d]", r, c);
            ck_assert_close(ag_tensor_get(hessian, (size_t)(r * 2 + c)), expected, 1e-14, what);
        }
    }
    ag_tensor_free(hessian);
    ag_tensor_free(x);
}
END_TEST

/* Closed-form Hessians of reductions, the softmax family and the shape
 * ops, for x of 4 elements with p = softmax(x), weights w and W = sum(w):
 *   sum(x)^2                 2 everywhere
 *   mean(x)^2                2 / 16 everywhere
 *   max(x)^2                 2 at (m, m) for the argmax m, else 0
 *   sum(w * log_softmax(x))  -W (diag(p) - p p^T)
 *   sum(w * softmax(x))      sum_k w_k p_k [(d_kj - p_j)(d_ki - p_i) - p_i (d_ij - p_j)]
 *   sum(w * t(x)^2)          2 w on the diagonal, for t = transpose or reshape,
 *                            w laid out in t's output order */
static const double closed_x[4] = {0.4, -1.1, 0.9, 0.2};
static const double closed_w[4] = {0.5, -1.5, 2.0, 0.75};

enum { C_SUM, C_MEAN, C_MAX, C_LOG_SOFTMAX, C_SOFTMAX, C_TRANSPOSE, C_RESHAPE, C_COUNT };

static ag_tensor *f_closed(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    const int *op_case = user;
    ag_tensor *x = inputs[0];
    ag_tensor *w = vector_f64(tape, 4, closed_w);
    ag_tensor *square;

    (void)n;
    switch (*op_case) {
    case C_SUM: square = ag_sum(tape, x); return ag_mul(tape, square, square);
    case C_MEAN: square = ag_mean(tape, x); return ag_mul(tape, square, square);
    case C_MAX: square = ag_max(tape, x); return ag_mul(tape, square, square);
    case C_LOG_SOFTMAX: return ag_sum(tape, ag_mul(tape, w, ag_log_softmax(tape, x, 0)));
    case C_SOFTMAX: return ag_sum(tape, ag_mul(tape, w, ag_softmax(tape, x, 0)));
    case C_TRANSPOSE:
        square = ag_transpose(tape, ag_reshape(tape, x, AG_SHAPE(2, 2)));
        return ag_sum(tape, ag_mul(tape, ag_reshape(tape, w, AG_SHAPE(2, 2)),
                                   ag_mul(tape, square, square)));
    default:
        square = ag_reshape(tape, x, AG_SHAPE(2, 2));
        return ag_sum(tape, ag_mul(tape, ag_reshape(tape, w, AG_SHAPE(2, 2)),
                                   ag_mul(tape, square, square)));
    }
}

static double closed_hessian(int op_case, const double *p, int i, int j)
{
    double w_total = closed_w[0] + closed_w[1] + closed_w[2] + closed_w[3];
    double kronecker = i == j ? 1.0 : 0.0;
    double h = 0;

    switch (op_case) {
    case C_SUM: return 2.0;
    case C_MEAN: return 2.0 / 16.0;
    case C_MAX: return i == 2 && j == 2 ? 2.0 : 0.0; /* x[2] = 0.9 is the max */
    case C_LOG_SOFTMAX: return -w_total * (kronecker * p[i] - p[i] * p[j]);
    case C_SOFTMAX:
        for (int k = 0; k < 4; k++) {
            double dki = k == i ? 1.0 : 0.0;
            double dkj = k == j ? 1.0 : 0.0;
            h += closed_w[k] * p[k] * ((dkj - p[j]) * (dki - p[i]) - p[i] * (kronecker - p[j]));
        }
        return h;
    case C_TRANSPOSE: {
        /* x[i] = X[r][c] lands at T[c][r], element 2c + r of T. */
        int r = i / 2;
        int c = i % 2;
        return 2.0 * kronecker * closed_w[2 * c + r];
    }
    default: return 2.0 * kronecker * closed_w[i];
    }
}

START_TEST(reduction_hessian_closed_form)
{
    static const char *const names[C_COUNT] = {"sum", "mean", "max", "log_softmax", "softmax",
                                               "transpose", "reshape"};
    int op_case = _i;
    ag_tensor *x = variable(AG_SHAPE(4), closed_x);
    ag_tensor *hessian = ag_hessian(f_closed, &op_case, 1, &x);
    double p[4];
    double total = 0;

    ck_assert_ptr_nonnull(hessian);
    for (int k = 0; k < 4; k++)
        total += exp(closed_x[k]);
    for (int k = 0; k < 4; k++)
        p[k] = exp(closed_x[k]) / total;
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 4; j++) {
            char what[48];

            snprintf(what, sizeof what, "%s: H[%d][%d]", names[op_case], i, j);
            ck_assert_close(ag_tensor_get(hessian, (size_t)(i * 4 + j)),
                            closed_hessian(op_case, p, i, j), 1e-14, what);
        }
    }
    ag_tensor_free(hessian);
    ag_tensor_free(x);
}
END_TEST

static const double linear_w[6] = {0.4, -1.1, 0.7, 0.3, 1.2, -0.5};

/* ||x W + b||^2 for x (1x2), W (2x3) and b (3). */
static ag_tensor *f_linear_norm(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)n;
    (void)user;
    ag_tensor *w = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(2, 3), linear_w);
    ag_tensor *s = ag_linear(tape, inputs[0], w, inputs[1]);
    return ag_sum(tape, ag_mul(tape, s, s));
}

/* With variables (x, b): H_xx = 2 W W^T, H_xb = 2 W, H_bb = 2 I. */
START_TEST(linear_hessian_closed_form)
{
    static const double x_values[2] = {0.9, -0.3};
    static const double b_values[3] = {0.1, -0.2, 0.3};
    ag_tensor *inputs[2] = {variable(AG_SHAPE(1, 2), x_values), variable(AG_SHAPE(3), b_values)};
    ag_tensor *hessian = ag_hessian(f_linear_norm, NULL, 2, inputs);

    ck_assert_ptr_nonnull(hessian);
    for (int r = 0; r < 5; r++) {
        for (int c = 0; c < 5; c++) {
            double expected = 0;
            char what[32];

            if (r < 2 && c < 2) {
                for (int k = 0; k < 3; k++)
                    expected += 2 * linear_w[r * 3 + k] * linear_w[c * 3 + k];
            } else if (r < 2) {
                expected = 2 * linear_w[r * 3 + (c - 2)];
            } else if (c < 2) {
                expected = 2 * linear_w[c * 3 + (r - 2)];
            } else {
                expected = r == c ? 2.0 : 0.0;
            }
            snprintf(what, sizeof what, "H[%d][%d]", r, c);
            ck_assert_close(ag_tensor_get(hessian, (size_t)(r * 5 + c)), expected, 1e-14, what);
        }
    }
    ag_tensor_free(hessian);
    free_all(inputs, 2);
}
END_TEST

/* Third derivatives: ag_grad with create_graph twice, then once more
 * without. d^3 x^4 = 24 x, and tanh''' = (1 - t^2)(6 t^2 - 2). */
START_TEST(third_derivative)
{
    static const double values[4] = {-1.5, -0.2, 0.7, 1.3};
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = vector_f64(tape, 4, values);
    ag_tensor *g1[2];
    ag_tensor *g2[2];

    ck_assert_int_eq(ag_tensor_set_requires_grad(x, true), 0);
    ag_tensor *quartic = ag_sum(tape, ag_pow_scalar(tape, x, 4.0));
    ag_tensor *hyperbolic = ag_sum(tape, ag_tanh(tape, x));
    ck_assert_int_eq(ag_grad(tape, quartic, NULL, 1, &x, &g1[0], true), 0);
    ck_assert_int_eq(ag_grad(tape, hyperbolic, NULL, 1, &x, &g1[1], true), 0);
    ck_assert_int_eq(ag_grad(tape, ag_sum(tape, g1[0]), NULL, 1, &x, &g2[0], true), 0);
    ck_assert_int_eq(ag_grad(tape, ag_sum(tape, g1[1]), NULL, 1, &x, &g2[1], true), 0);
    ag_tensor *g3_quartic = gradient_of_sum(tape, g2[0], x);
    ag_tensor *g3_tanh = gradient_of_sum(tape, g2[1], x);

    for (size_t i = 0; i < 4; i++) {
        double t = tanh(values[i]);
        char what[48];

        snprintf(what, sizeof what, "(x^4)''' at %g", values[i]);
        ck_assert_close(ag_tensor_get(g3_quartic, i), 24 * values[i], 1e-12, what);
        snprintf(what, sizeof what, "tanh''' at %g", values[i]);
        ck_assert_close(ag_tensor_get(g3_tanh, i), (1 - t * t) * (6 * t * t - 2), 1e-12, what);
    }
    ag_tape_free(tape);
}
END_TEST

/* ---- the lecture's network ------------------------------------------------ */

/* Inputs: x (1x2), W1 (2x3), b1 (1x3), W2 (3x2), b2 (1x2), W3 (2x1),
 * b3 (1x1) and the target y (1x1), held constant. */
enum { L_X, L_W1, L_B1, L_W2, L_B2, L_W3, L_B3, L_Y, L_COUNT };

static ag_tensor *f_lecture(ag_tape *tape, ag_tensor *const *in, int n, void *user)
{
    unary_fn h = *(const unary_fn *)user;

    (void)n;
    ag_tensor *z1 = h(tape, ag_linear(tape, in[L_X], in[L_W1], in[L_B1]));
    ag_tensor *z2 = h(tape, ag_linear(tape, z1, in[L_W2], in[L_B2]));
    ag_tensor *f = ag_linear(tape, z2, in[L_W3], in[L_B3]);
    ag_tensor *residual = ag_sub(tape, in[L_Y], f);
    return ag_sum(tape, ag_mul(tape, residual, residual));
}

/* Makes the network's inputs from a seeded generator; all but y require a
 * gradient, so the Hessian covers x and every parameter (22 variables). */
static void lecture_inputs(ag_tensor **in)
{
    static const size_t shapes[L_COUNT][2] = {{1, 2}, {2, 3}, {1, 3}, {3, 2},
                                              {1, 2}, {2, 1}, {1, 1}, {1, 1}};
    ag_rng rng = ag_rng_new(2024);

    for (int i = 0; i < L_COUNT; i++) {
        in[i] = ag_rand_normal(NULL, AG_F64, AG_SHAPE(shapes[i][0], shapes[i][1]), 0.0, 1.0,
                               &rng);
        ck_assert_ptr_nonnull(in[i]);
        ck_assert_int_eq(ag_tensor_set_requires_grad(in[i], i != L_Y), 0);
    }
}

static const unary_fn lecture_activations[2] = {ag_sigmoid, ag_tanh};

START_TEST(lecture_hessian_fd)
{
    ag_tensor *in[L_COUNT];

    lecture_inputs(in);
    check_hessian_fd(_i == 0 ? "lecture, sigmoid" : "lecture, tanh", f_lecture,
                     (void *)&lecture_activations[_i], L_COUNT, in);
    free_all(in, L_COUNT);
}
END_TEST

START_TEST(lecture_hessian_symmetric)
{
    ag_tensor *in[L_COUNT];

    lecture_inputs(in);
    size_t n = count_variables(L_COUNT, in);
    ag_tensor *hessian = ag_hessian(f_lecture, (void *)&lecture_activations[_i], L_COUNT, in);
    ck_assert_ptr_nonnull(hessian);
    ck_assert_uint_eq(n, 22);
    for (size_t r = 0; r < n; r++) {
        for (size_t c = r + 1; c < n; c++) {
            char what[48];

            snprintf(what, sizeof what, "H[%zu][%zu] against H[%zu][%zu]", r, c, c, r);
            ck_assert_close(ag_tensor_get(hessian, r * n + c), ag_tensor_get(hessian, c * n + r),
                            SAME_TOL, what);
        }
    }
    ag_tensor_free(hessian);
    free_all(in, L_COUNT);
}
END_TEST

/* ag_hvp gives H v without forming H; the test forms H v from ag_hessian. */
START_TEST(lecture_hvp_matches_hessian)
{
    ag_tensor *in[L_COUNT];
    ag_tensor *vectors[L_COUNT];
    ag_tensor *products[L_COUNT];
    ag_rng rng = ag_rng_new(99);
    double v[22];
    size_t k = 0;

    lecture_inputs(in);
    for (int i = 0; i < L_COUNT; i++) {
        vectors[i] = ag_rand_normal(NULL, AG_F64, ag_tensor_ndim(in[i]), ag_tensor_shape(in[i]),
                                    0.0, 1.0, &rng);
        if (i != L_Y) {
            for (size_t e = 0; e < ag_tensor_numel(in[i]); e++)
                v[k++] = ag_tensor_get(vectors[i], e);
        }
    }
    ck_assert_uint_eq(k, 22);

    const void *h = &lecture_activations[_i];
    ag_tensor *hessian = ag_hessian(f_lecture, (void *)h, L_COUNT, in);
    ck_assert_ptr_nonnull(hessian);
    ck_assert_int_eq(ag_hvp(f_lecture, (void *)h, L_COUNT, in, vectors, products), 0);
    ck_assert_ptr_null(products[L_Y]);

    size_t r = 0;
    for (int i = 0; i < L_COUNT; i++) {
        if (i == L_Y)
            continue;
        ck_assert(ag_tensor_same_shape(products[i], in[i]));
        for (size_t e = 0; e < ag_tensor_numel(in[i]); e++, r++) {
            double expected = 0;
            char what[48];

            for (size_t c = 0; c < 22; c++)
                expected += ag_tensor_get(hessian, r * 22 + c) * v[c];
            snprintf(what, sizeof what, "(H v)[%zu]", r);
            ck_assert_close(ag_tensor_get(products[i], e), expected, SAME_TOL, what);
        }
    }
    ag_tensor_free(hessian);
    free_all(products, L_COUNT);
    free_all(vectors, L_COUNT);
    free_all(in, L_COUNT);
}
END_TEST

/* ---- ag_grad -------------------------------------------------------------- */

/* L = sum(tanh(x W) * x W) + sum(W^2), used for the tests of ag_grad. */
static ag_tensor *small_loss(ag_tape *tape, ag_tensor *x, ag_tensor *w)
{
    ag_tensor *s = ag_matmul(tape, x, w);
    ag_tensor *terms = ag_mul(tape, ag_tanh(tape, s), s);
    return ag_add(tape, ag_sum(tape, terms), ag_sum(tape, ag_mul(tape, w, w)));
}

static const double small_x[6] = {0.5, -1.0, 0.25, 1.5, 0.75, -0.5};
static const double small_w[6] = {0.3, -0.2, 0.8, 0.1, -0.6, 0.4};

/* Both modes give ag_backward's gradients, and leave .grad untouched. */
START_TEST(grad_matches_backward)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_tensor_from_doubles(NULL, AG_F64, AG_SHAPE(2, 3), small_x);
    ag_tensor *w = ag_tensor_from_doubles(NULL, AG_F64, AG_SHAPE(3, 2), small_w);
    ag_tensor *inputs[2] = {x, w};
    ag_tensor *built[2];
    ag_tensor *plain[2];

    ck_assert_int_eq(ag_tensor_set_requires_grad(x, true), 0);
    ck_assert_int_eq(ag_tensor_set_requires_grad(w, true), 0);
    ag_tensor *loss = small_loss(tape, x, w);
    ck_assert_int_eq(ag_grad(tape, loss, NULL, 2, inputs, built, true), 0);
    ck_assert_int_eq(ag_grad(tape, loss, NULL, 2, inputs, plain, false), 0);
    for (int i = 0; i < 2; i++) {
        for (size_t e = 0; e < 6; e++)
            ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(inputs[i]), e), 0.0);
    }

    ck_assert_int_eq(ag_backward(tape, loss, NULL), 0);
    for (int i = 0; i < 2; i++) {
        ck_assert(ag_tensor_same_shape(built[i], inputs[i]));
        for (size_t e = 0; e < 6; e++) {
            double expected = ag_tensor_get(ag_tensor_grad(inputs[i]), e);
            char what[48];

            snprintf(what, sizeof what, "input %d element %zu, create_graph", i, e);
            ck_assert_close(ag_tensor_get(built[i], e), expected, SAME_TOL, what);
            snprintf(what, sizeof what, "input %d element %zu, no graph", i, e);
            ck_assert_close(ag_tensor_get(plain[i], e), expected, 0.0, what);
        }
    }
    ag_tensor_free(x);
    ag_tensor_free(w);
    ag_tape_free(tape);
}
END_TEST

/* Only create_graph records, and only its gradients require a gradient. */
START_TEST(grad_records_only_with_graph)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(2, 3), small_x);
    ag_tensor *w = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(3, 2), small_w);
    ag_tensor *g;

    ck_assert_int_eq(ag_tensor_set_requires_grad(w, true), 0);
    ag_tensor *loss = small_loss(tape, x, w);
    size_t forward_records = ag_tape_size(tape);

    ck_assert_int_eq(ag_grad(tape, loss, NULL, 1, &w, &g, false), 0);
    ck_assert_uint_eq(ag_tape_size(tape), forward_records);
    ck_assert(!ag_tensor_requires_grad(g));

    ag_tape_set_recording(tape, false);
    ck_assert_int_eq(ag_grad(tape, loss, NULL, 1, &w, &g, true), 0);
    ck_assert(!ag_tape_is_recording(tape));
    ck_assert_uint_gt(ag_tape_size(tape), forward_records);
    ck_assert(ag_tensor_requires_grad(g));
    ag_tape_free(tape);
}
END_TEST

/* An intermediate value as input: dL/dh for L = sum(h^2) is 2h. */
START_TEST(grad_of_intermediate)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = vector_f64(tape, 3, small_x);
    ag_tensor *g;

    ck_assert_int_eq(ag_tensor_set_requires_grad(x, true), 0);
    ag_tensor *h = ag_tanh(tape, x);
    ag_tensor *loss = ag_sum(tape, ag_mul(tape, h, h));
    for (int graph = 0; graph < 2; graph++) {
        ck_assert_int_eq(ag_grad(tape, loss, NULL, 1, &h, &g, graph), 0);
        for (size_t i = 0; i < 3; i++)
            ck_assert_close(ag_tensor_get(g, i), 2 * tanh(small_x[i]), SAME_TOL, "dL/dh");
    }
    ag_tape_free(tape);
}
END_TEST

/* An input that the output does not depend on gets zeros. */
START_TEST(grad_unused_input_is_zero)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = vector_f64(tape, 3, small_x);
    ag_tensor *unused = vector_f64(tape, 2, small_w);
    ag_tensor *inputs[2] = {x, unused};
    ag_tensor *g[2];

    ck_assert_int_eq(ag_tensor_set_requires_grad(x, true), 0);
    ck_assert_int_eq(ag_tensor_set_requires_grad(unused, true), 0);
    ag_tensor *loss = ag_sum(tape, ag_exp(tape, x));
    for (int graph = 0; graph < 2; graph++) {
        ck_assert_int_eq(ag_grad(tape, loss, NULL, 2, inputs, g, graph), 0);
        ck_assert(ag_tensor_same_shape(g[1], unused));
        ck_assert_double_eq(ag_tensor_get(g[1], 0), 0.0);
        ck_assert_double_eq(ag_tensor_get(g[1], 1), 0.0);
        ck_assert_close(ag_tensor_get(g[0], 2), exp(small_x[2]), SAME_TOL, "d/dx");
    }
    ag_tape_free(tape);
}
END_TEST

/* With a seed, the result is the vector-Jacobian product seed^T J; here
 * J = diag(exp(x)). */
START_TEST(grad_with_seed)
{
    static const double seed_values[3] = {2.0, -1.0, 0.5};
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = vector_f64(tape, 3, small_x);
    ag_tensor *seed = vector_f64(tape, 3, seed_values);
    ag_tensor *g;

    ck_assert_int_eq(ag_tensor_set_requires_grad(x, true), 0);
    ag_tensor *y = ag_exp(tape, x);
    for (int graph = 0; graph < 2; graph++) {
        ck_assert_int_eq(ag_grad(tape, y, seed, 1, &x, &g, graph), 0);
        for (size_t i = 0; i < 3; i++)
            ck_assert_close(ag_tensor_get(g, i), seed_values[i] * exp(small_x[i]), SAME_TOL,
                            "seed * exp(x)");
    }
    ag_tape_free(tape);
}
END_TEST

/* A seed that requires a gradient is differentiated through: for
 * g = u * exp(x), d sum(g)/du = exp(x). */
START_TEST(grad_through_seed)
{
    static const double seed_values[3] = {2.0, -1.0, 0.5};
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = vector_f64(tape, 3, small_x);
    ag_tensor *u = vector_f64(tape, 3, seed_values);
    ag_tensor *g;

    ck_assert_int_eq(ag_tensor_set_requires_grad(x, true), 0);
    ck_assert_int_eq(ag_tensor_set_requires_grad(u, true), 0);
    ag_tensor *y = ag_exp(tape, x);
    ck_assert_int_eq(ag_grad(tape, y, u, 1, &x, &g, true), 0);
    ag_tensor *d = gradient_of_sum(tape, g, u);
    for (size_t i = 0; i < 3; i++)
        ck_assert_close(ag_tensor_get(d, i), exp(small_x[i]), SAME_TOL, "d g / d u");
    ag_tape_free(tape);
}
END_TEST

/* f32 works in both modes: d^2 (x^3) = 6x. */
START_TEST(grad_f32)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_tensor_from_doubles(tape, AG_F32, AG_SHAPE(3), small_x);
    ag_tensor *g;
    ag_tensor *h;

    ck_assert_int_eq(ag_tensor_set_requires_grad(x, true), 0);
    ag_tensor *loss = ag_sum(tape, ag_pow_scalar(tape, x, 3.0));
    ck_assert_int_eq(ag_grad(tape, loss, NULL, 1, &x, &g, true), 0);
    ck_assert_int_eq(ag_tensor_dtype(g), AG_F32);
    ck_assert_int_eq(ag_grad(tape, ag_sum(tape, g), NULL, 1, &x, &h, false), 0);
    for (size_t i = 0; i < 3; i++) {
        double xi = (float)small_x[i];
        ck_assert_close(ag_tensor_get(g, i), 3 * xi * xi, 1e-6, "3x^2 in f32");
        ck_assert_close(ag_tensor_get(h, i), 6 * xi, 1e-6, "6x in f32");
    }
    ag_tape_free(tape);
}
END_TEST

START_TEST(grad_rejects_bad_arguments)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = vector_f64(tape, 3, small_x);
    ag_tensor *constant = vector_f64(tape, 3, small_x);
    ag_tensor *wrong_seed = vector_f64(tape, 2, small_x);
    ag_tensor *g = x;

    ck_assert_int_eq(ag_tensor_set_requires_grad(x, true), 0);
    ag_tensor *y = ag_exp(tape, x);

    ck_assert_int_eq(ag_grad(tape, y, NULL, 1, &x, &g, false), -1);
    ck_assert_ptr_null(g);
    ck_assert_ptr_nonnull(strstr(ag_error(), "has 3 elements; pass a seed"));

    ck_assert_int_eq(ag_grad(tape, y, wrong_seed, 1, &x, &g, true), -1);
    ck_assert_ptr_nonnull(strstr(ag_error(), "does not match output"));

    ck_assert_int_eq(ag_grad(tape, ag_sum(tape, y), NULL, 1, &constant, &g, true), -1);
    ck_assert_ptr_nonnull(strstr(ag_error(), "input 0 does not require a gradient"));

    ck_assert_int_eq(ag_grad(tape, ag_sum(tape, constant), NULL, 1, &x, &g, true), -1);
    ck_assert_ptr_nonnull(strstr(ag_error(), "output does not require a gradient"));

    /* A failed op upstream: its message stays. */
    ag_set_error("earlier failure");
    ck_assert_int_eq(ag_grad(tape, NULL, NULL, 1, &x, &g, true), -1);
    ck_assert_str_eq(ag_error(), "earlier failure");
    ag_tape_free(tape);
}
END_TEST

/* At kinks the built gradients follow the kernels' (PyTorch's) conventions:
 * relu'(0) = 0, abs'(0) = 0, clamp passes the gradient at its bounds, and
 * ties share it: maximum(a, a) gives each side 1/2, max gives each tied
 * element 1/count. */
typedef struct kink_case {
    const char *name;
    unary_fn op;
    double expected[4];
} kink_case;

static ag_tensor *maximum_with_ties(ag_tape *tape, ag_tensor *x)
{
    static const double other[4] = {-1.0, 0.0, 2.0, 2.0};
    return ag_maximum(tape, x, vector_f64(tape, 4, other));
}

static ag_tensor *max_all(ag_tape *tape, ag_tensor *x) { return ag_max(tape, x); }

static ag_tensor *max_rows(ag_tape *tape, ag_tensor *x)
{
    return ag_max_axis(tape, ag_reshape(tape, x, AG_SHAPE(2, 2)), 1, false);
}

/* The points are x = (-1, 0, 1, 2); maximum compares with (-1, 0, 2, 2). */
static const kink_case kink_cases[] = {
    {"relu", ag_relu, {0, 0, 1, 1}},
    {"abs", ag_abs, {-1, 0, 1, 1}},
    {"clamp", clamp_unit, {1, 1, 1, 0}},
    {"maximum", maximum_with_ties, {0.5, 0.5, 0, 0.5}},
    {"max", max_all, {0, 0, 0, 1}},
    {"max_axis", max_rows, {0, 1, 0, 1}},
};

START_TEST(grad_at_kinks)
{
    static const double points[4] = {-1.0, 0.0, 1.0, 2.0};
    const kink_case *c = &kink_cases[_i];
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = vector_f64(tape, 4, points);
    ag_tensor *g;

    ck_assert_int_eq(ag_tensor_set_requires_grad(x, true), 0);
    ag_tensor *loss = ag_sum(tape, c->op(tape, x));
    for (int graph = 0; graph < 2; graph++) {
        ck_assert_int_eq(ag_grad(tape, loss, NULL, 1, &x, &g, graph), 0);
        for (size_t i = 0; i < 4; i++) {
            char what[64];

            snprintf(what, sizeof what, "%s' at %g, create_graph %d", c->name, points[i], graph);
            ck_assert_close(ag_tensor_get(g, i), c->expected[i], 0.0, what);
        }
    }
    ag_tape_free(tape);
}
END_TEST

/* Ties of max along an axis share the gradient: two tied maxima get 1/2
 * each, three get 1/3 each. */
START_TEST(grad_max_shares_ties)
{
    static const double points[6] = {3.0, 1.0, 3.0, 2.0, 2.0, 2.0};
    static const double expected[6] = {0.5, 0.0, 0.5, 1.0 / 3, 1.0 / 3, 1.0 / 3};
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(2, 3), points);
    ag_tensor *g;

    ck_assert_int_eq(ag_tensor_set_requires_grad(x, true), 0);
    ag_tensor *loss = ag_sum(tape, ag_max_axis(tape, x, 1, true));
    ck_assert_int_eq(ag_grad(tape, loss, NULL, 1, &x, &g, true), 0);
    for (size_t i = 0; i < 6; i++)
        ck_assert_close(ag_tensor_get(g, i), expected[i], 1e-16, "share of a tied max");
    ag_tape_free(tape);
}
END_TEST

/* ---- custom ops ----------------------------------------------------------- */

static int same_shape_rule(const ag_record *rec, ag_dtype *dtype, int *ndim, size_t *shape)
{
    const ag_tensor *x = rec->inputs[0];

    *dtype = ag_tensor_dtype(x);
    *ndim = ag_tensor_ndim(x);
    memcpy(shape, ag_tensor_shape(x), (size_t)*ndim * sizeof *shape);
    return 0;
}

/* y = x^2 elementwise, with the right backward kernel 2 x dy. */
static int square_forward(ag_tape *tape, ag_record *rec)
{
    (void)tape;
    for (size_t i = 0; i < ag_tensor_numel(rec->output); i++) {
        double x = ag_tensor_get(rec->inputs[0], i);
        ag_tensor_set(rec->output, i, x * x);
    }
    return 0;
}

static int square_backward(ag_tape *tape, ag_record *rec)
{
    ag_tensor *gx = ag_input_grad(tape, rec, 0);
    ag_tensor *gy = ag_tensor_grad(rec->output);

    for (size_t i = 0; gx != NULL && i < ag_tensor_numel(gx); i++) {
        double x = ag_tensor_get(rec->inputs[0], i);
        ag_tensor_set(gx, i, ag_tensor_get(gx, i) + 2 * x * ag_tensor_get(gy, i));
    }
    return 0;
}

/* The right differentiable rule: g * 2x from ops. */
static int square_graph(ag_tape *tape, const ag_record *rec, ag_tensor *g,
                        const bool *needs_grad, ag_tensor **grad_inputs)
{
    (void)needs_grad;
    grad_inputs[0] = ag_mul(tape, g, ag_mul_scalar(tape, rec->inputs[0], 2.0));
    return grad_inputs[0] == NULL ? -1 : 0;
}

/* A wrong value: g * 3x. */
static int square_graph_wrong_value(ag_tape *tape, const ag_record *rec, ag_tensor *g,
                                    const bool *needs_grad, ag_tensor **grad_inputs)
{
    (void)needs_grad;
    grad_inputs[0] = ag_mul(tape, g, ag_mul_scalar(tape, rec->inputs[0], 3.0));
    return grad_inputs[0] == NULL ? -1 : 0;
}

/* The right value from a detached x, so nothing records how it depends on x. */
static int square_graph_detached(ag_tape *tape, const ag_record *rec, ag_tensor *g,
                                 const bool *needs_grad, ag_tensor **grad_inputs)
{
    (void)needs_grad;
    ag_tensor *x = ag_detach(tape, rec->inputs[0]);
    grad_inputs[0] = ag_mul(tape, g, ag_mul_scalar(tape, x, 2.0));
    return grad_inputs[0] == NULL ? -1 : 0;
}

/* A gradient of the wrong shape: one element. */
static int square_graph_wrong_shape(ag_tape *tape, const ag_record *rec, ag_tensor *g,
                                    const bool *needs_grad, ag_tensor **grad_inputs)
{
    (void)rec;
    (void)needs_grad;
    grad_inputs[0] = ag_sum(tape, g);
    return grad_inputs[0] == NULL ? -1 : 0;
}

#define SQUARE_OP(NAME, RULE)                                                  \
    static const ag_op NAME = {                                                \
        .name = "test_" #NAME,                                                 \
        .n_inputs = 1,                                                         \
        .shape = same_shape_rule,                                              \
        .forward = square_forward,                                             \
        .backward = square_backward,                                           \
        .backward_graph = RULE,                                                \
    };

SQUARE_OP(square_no_graph, NULL)
SQUARE_OP(square_right, square_graph)
SQUARE_OP(square_wrong_value, square_graph_wrong_value)
SQUARE_OP(square_detached, square_graph_detached)
SQUARE_OP(square_wrong_shape, square_graph_wrong_shape)

static const ag_op *const square_ops[] = {&square_no_graph, &square_right,
                                          &square_wrong_value, &square_detached,
                                          &square_wrong_shape};

/* sum(tanh(op(x))), for the custom square ops given as user data. */
static ag_tensor *f_custom(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    const ag_op *op = user;

    (void)n;
    return ag_sum(tape, ag_tanh(tape, ag_apply(tape, op, 1, inputs, 0, NULL)));
}

START_TEST(custom_op_without_graph_rule)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = vector_f64(tape, 3, small_x);
    ag_tensor *g;

    ck_assert_int_eq(ag_tensor_set_requires_grad(x, true), 0);
    ag_tensor *loss = f_custom(tape, &x, 1, (void *)&square_no_graph);
    ck_assert_int_eq(ag_grad(tape, loss, NULL, 1, &x, &g, true), -1);
    ck_assert_str_eq(ag_error(), "ag_grad: op \"test_square_no_graph\" (record 0) has no "
                                 "differentiable backward rule; register it with "
                                 "backward_graph to use create_graph");

    /* Without create_graph the backward kernel serves. */
    ck_assert_int_eq(ag_grad(tape, loss, NULL, 1, &x, &g, false), 0);
    for (size_t i = 0; i < 3; i++) {
        double t = tanh(small_x[i] * small_x[i]);
        ck_assert_close(ag_tensor_get(g, i), (1 - t * t) * 2 * small_x[i], SAME_TOL,
                        "kernel gradient");
    }
    ag_tape_free(tape);
}
END_TEST

START_TEST(custom_op_with_graph_rule)
{
    static const double values[3] = {0.5, -1.0, 0.25};
    ag_tensor *x = variable(AG_SHAPE(3), values);

    check_hessian_fd("custom square", f_custom, (void *)&square_right, 1, &x);
    ag_tensor_free(x);
}
END_TEST

START_TEST(custom_op_wrong_shape_rule)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = vector_f64(tape, 3, small_x);
    ag_tensor *g;

    ck_assert_int_eq(ag_tensor_set_requires_grad(x, true), 0);
    ag_tensor *loss = f_custom(tape, &x, 1, (void *)&square_wrong_shape);
    ck_assert_int_eq(ag_grad(tape, loss, NULL, 1, &x, &g, true), -1);
    ck_assert_ptr_nonnull(strstr(ag_error(), "returned a gradient of shape (1) f64 for "
                                             "input 0 of shape (3) f64"));
    ag_tape_free(tape);
}
END_TEST

/* ---- the second-order check ----------------------------------------------- */

/* A function that uses most ops, of two inputs. */
static ag_tensor *f_composite(ag_tape *tape, ag_tensor *const *in, int n, void *user)
{
    (void)n;
    (void)user;
    ag_tensor *s = ag_linear(tape, in[0], in[1], ag_sum_axis(tape, in[1], 0, false));
    ag_tensor *a = ag_log_softmax(tape, ag_softplus(tape, s), 1);
    ag_tensor *b = ag_div(tape, ag_exp(tape, ag_neg(tape, s)), ag_add_scalar(tape, ag_abs(tape, s), 1.0));
    ag_tensor *c = ag_maximum(tape, ag_sigmoid(tape, s), ag_pow_scalar(tape, ag_relu(tape, s), 2.0));
    ag_tensor *d = ag_sqrt(tape, ag_add_scalar(tape, ag_mul(tape, s, s), 1.0));
    ag_tensor *e = ag_logsumexp_axis(tape, ag_transpose(tape, ag_sub(tape, a, b)), 1, true);
    ag_tensor *sum = ag_add(tape, ag_mean(tape, ag_add(tape, c, d)), ag_max(tape, e));
    return ag_mul(tape, sum, ag_log(tape, ag_mean(tape, ag_mul(tape, in[0], in[0]))));
}

static const double composite_x[6] = {0.5, -1.0, 0.25, 1.5, 0.75, -0.5};
static const double composite_w[6] = {0.3, -0.2, 0.8, 0.1, -0.6, 0.4};

START_TEST(gradgradcheck_passes_composite)
{
    ag_tensor *inputs[2] = {variable(AG_SHAPE(2, 3), composite_x),
                            variable(AG_SHAPE(3, 2), composite_w)};
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradgradcheck(f_composite, NULL, 2, inputs, NULL, &result), 0);
    ck_assert_msg(result.passed, "%s", result.message);
    /* 12 built gradient elements, then 12 x 12 second derivatives. */
    ck_assert_uint_eq(result.n_checked, 12 + 12 * 12);
    free_all(inputs, 2);
}
END_TEST

/* A vector output is checked through a seed of its shape. */
static ag_tensor *f_softmax_tanh(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)n;
    (void)user;
    return ag_softmax(tape, ag_tanh(tape, inputs[0]), 1);
}

START_TEST(gradgradcheck_passes_vector_output)
{
    ag_tensor *x = variable(AG_SHAPE(2, 3), composite_x);
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradgradcheck(f_softmax_tanh, NULL, 1, &x, NULL, &result), 0);
    ck_assert_msg(result.passed, "%s", result.message);
    ck_assert_uint_eq(result.n_checked, 6 + 6 * 6);
    ag_tensor_free(x);
}
END_TEST

START_TEST(gradgradcheck_passes_custom_op)
{
    ag_tensor *x = variable(AG_SHAPE(3), small_x);
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradgradcheck(f_custom, (void *)&square_right, 1, &x, NULL, &result), 0);
    ck_assert_msg(result.passed, "%s", result.message);
    ag_tensor_free(x);
}
END_TEST

/* A rule whose value is wrong fails step 1 and names the element. */
START_TEST(gradgradcheck_catches_wrong_value)
{
    ag_tensor *x = variable(AG_SHAPE(3), small_x);
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradgradcheck(f_custom, (void *)&square_wrong_value, 1, &x, NULL,
                                      &result), 0);
    ck_assert(!result.passed);
    ck_assert_int_eq(result.worst_input, 0);
    ck_assert_ptr_nonnull(strstr(result.message, "a backward_graph rule computes a wrong value"));

    /* The built gradient is 1.5 times the kernels' one. */
    ck_assert_close(result.analytic, 1.5 * result.numeric, 1e-12, "analytic / numeric");
    ag_tensor_free(x);
}
END_TEST

/* A rule with the right value but no recorded dependence on x fails step 2:
 * its second derivatives are all zero while the gradient changes. */
START_TEST(gradgradcheck_catches_detached_rule)
{
    ag_tensor *x = variable(AG_SHAPE(3), small_x);
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradgradcheck(f_custom, (void *)&square_detached, 1, &x, NULL,
                                      &result), 0);
    ck_assert(!result.passed);
    ck_assert_ptr_nonnull(strstr(result.message, "the derivatives of the gradient of input 0"));
    ag_tensor_free(x);
}
END_TEST

START_TEST(gradgradcheck_reports_missing_rule)
{
    ag_tensor *x = variable(AG_SHAPE(3), small_x);
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradgradcheck(f_custom, (void *)&square_no_graph, 1, &x, NULL,
                                      &result), -1);
    ck_assert_ptr_nonnull(strstr(ag_error(), "has no differentiable backward rule"));
    ck_assert_ptr_nonnull(strstr(result.message, "ag_gradgradcheck: "));
    ag_tensor_free(x);
}
END_TEST

static ag_tensor *f_sum_squares(ag_tape *tape, ag_tensor *const *inputs, int n,
                                    void *user)
{
    (void)n;
    (void)user;
    return ag_sum(tape, ag_mul(tape, inputs[0], inputs[0]));
}

/* sum(0 * sqrt(x)): 0 everywhere, but at x = 0 the gradient is 0 * inf,
 * NaN from both the built rules and the kernels. */
static ag_tensor *f_zero_times_sqrt(ag_tape *tape, ag_tensor *const *inputs, int n,
                                    void *user)
{
    (void)n;
    (void)user;
    return ag_sum(tape, ag_mul_scalar(tape, ag_sqrt(tape, inputs[0]), 0.0));
}

START_TEST(gradgradcheck_nan_output_is_error)
{
    ag_tensor *x = variable(AG_SHAPE(2), ((const double[]){1.0, NAN}));
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradgradcheck(f_sum_squares, NULL, 1, &x, NULL, &result), -1);
    ck_assert(!result.passed);
    ck_assert_msg(strstr(ag_error(), "f(x) is nan at output element 0") != NULL,
                  "error: %s", ag_error());
    ck_assert_ptr_null(strstr(result.message, "wrong value"));
    ag_tensor_free(x);
}
END_TEST

START_TEST(gradgradcheck_nan_gradient_blames_no_rule)
{
    ag_tensor *x = variable(AG_SHAPE(2), ((const double[]){1.0, 0.0}));
    ag_gradcheck_result result;

    ck_assert_int_eq(ag_gradgradcheck(f_zero_times_sqrt, NULL, 1, &x, NULL, &result), -1);
    ck_assert(!result.passed);
    ck_assert_msg(strstr(ag_error(), "checking the gradient of input 0") != NULL,
                  "error: %s", ag_error());
    ck_assert_ptr_nonnull(strstr(ag_error(), "is nan at output element 1"));
    ck_assert_ptr_null(strstr(result.message, "wrong value"));
    ag_tensor_free(x);
}
END_TEST

/* ---- Jacobians ------------------------------------------------------------ */

static ag_tensor *f_softmax(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)n;
    (void)user;
    return ag_softmax(tape, inputs[0], 0);
}

/* The Jacobian of softmax is diag(p) - p p^T. */
START_TEST(jacobian_of_softmax)
{
    static const double values[3] = {0.2, -0.7, 1.1};
    ag_tensor *x = variable(AG_SHAPE(3), values);
    ag_tensor *jacobian = ag_jacobian(f_softmax, NULL, 1, &x);
    double p[3];
    double total = exp(0.2) + exp(-0.7) + exp(1.1);

    ck_assert_ptr_nonnull(jacobian);
    ck_assert_int_eq(ag_tensor_ndim(jacobian), 2);
    ck_assert_uint_eq(ag_tensor_dim(jacobian, 0), 3);
    ck_assert_uint_eq(ag_tensor_dim(jacobian, 1), 3);
    for (int i = 0; i < 3; i++)
        p[i] = exp(values[i]) / total;
    for (int r = 0; r < 3; r++) {
        for (int c = 0; c < 3; c++) {
            char what[32];

            snprintf(what, sizeof what, "J[%d][%d]", r, c);
            ck_assert_close(ag_tensor_get(jacobian, (size_t)(r * 3 + c)),
                            (r == c ? p[r] : 0.0) - p[r] * p[c], 1e-15, what);
        }
    }
    ag_tensor_free(jacobian);
    ag_tensor_free(x);
}
END_TEST

static ag_tensor *f_product(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)n;
    (void)user;
    return ag_mul(tape, inputs[0], ag_mul(tape, inputs[1], inputs[2]));
}

/* y = a * (c * b) with c constant: J = [diag(b c) | diag(a c)], columns
 * only for the inputs that require a gradient. */
START_TEST(jacobian_skips_constant_inputs)
{
    static const double a[2] = {1.5, -2.0};
    static const double c[2] = {3.0, 0.5};
    static const double b[2] = {0.25, 4.0};
    ag_tensor *inputs[3] = {variable(AG_SHAPE(2), a),
                            ag_tensor_from_doubles(NULL, AG_F64, AG_SHAPE(2), c),
                            variable(AG_SHAPE(2), b)};
    ag_tensor *jacobian = ag_jacobian(f_product, NULL, 3, inputs);
    const double expected[2][4] = {{b[0] * c[0], 0, a[0] * c[0], 0},
                                   {0, b[1] * c[1], 0, a[1] * c[1]}};

    ck_assert_ptr_nonnull(jacobian);
    ck_assert_uint_eq(ag_tensor_dim(jacobian, 1), 4);
    for (size_t r = 0; r < 2; r++) {
        for (size_t k = 0; k < 4; k++)
            ck_assert_double_eq(ag_tensor_get(jacobian, r * 4 + k), expected[r][k]);
    }
    ag_tensor_free(jacobian);
    free_all(inputs, 3);
}
END_TEST

/* ---- errors of the function-based calls ----------------------------------- */

static ag_tensor *f_failing(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)user;
    (void)n;
    return ag_matmul(tape, inputs[0], inputs[0]);
}

START_TEST(hessian_rejects_vector_output)
{
    ag_tensor *x = variable(AG_SHAPE(3), small_x);

    ag_tensor *hessian = ag_hessian(f_softmax, NULL, 1, &x);
    ck_assert_error_contains(hessian, "ag_hessian: the function's output has shape (3)");
    ag_tensor_free(x);
}
END_TEST

START_TEST(function_errors_keep_cause)
{
    ag_tensor *x = variable(AG_SHAPE(3), small_x);
    ag_tensor *constant = ag_tensor_from_doubles(NULL, AG_F64, AG_SHAPE(3), small_x);

    ck_assert_error_contains(ag_jacobian(f_failing, NULL, 1, &x),
                             "ag_jacobian: the function failed: ag_matmul: operands must be 2-D");
    ck_assert_error_contains(ag_hessian(f_softmax, NULL, 1, &constant),
                             "ag_hessian: no input requires a gradient");
    ck_assert_error_contains(ag_jacobian(NULL, NULL, 1, &x), "ag_jacobian: the function is NULL");
    ag_tensor_free(x);
    ag_tensor_free(constant);
}
END_TEST

START_TEST(hvp_rejects_wrong_vector)
{
    ag_tensor *x = variable(AG_SHAPE(3), small_x);
    ag_tensor *v = ag_zeros(NULL, AG_F64, AG_SHAPE(2));
    ag_tensor *product = x;

    ck_assert_int_eq(ag_hvp(f_logsumexp, NULL, 1, &x, &v, &product), -1);
    ck_assert_ptr_nonnull(strstr(ag_error(), "ag_hvp: vector 0 has shape (2) but input 0 has "
                                             "shape (3)"));
    ag_tensor_free(v);
    ag_tensor_free(x);
}
END_TEST

/* A linear function has a constant gradient, which carries no record, and
 * H v = 0. */
static ag_tensor *f_linear_sum(ag_tape *tape, ag_tensor *const *inputs, int n, void *user)
{
    (void)n;
    (void)user;
    return ag_sum(tape, ag_mul_scalar(tape, inputs[0], 3.0));
}

START_TEST(hvp_of_linear_function_is_zero)
{
    ag_tensor *x = variable(AG_SHAPE(3), small_x);
    ag_tensor *v = ag_ones(NULL, AG_F64, AG_SHAPE(3));
    ag_tensor *product = NULL;

    ck_assert_int_eq(ag_hvp(f_linear_sum, NULL, 1, &x, &v, &product), 0);
    ck_assert_ptr_nonnull(product);
    for (size_t i = 0; i < 3; i++)
        ck_assert_double_eq(ag_tensor_get(product, i), 0.0);

    ag_tensor *hessian = ag_hessian(f_linear_sum, NULL, 1, &x);
    ck_assert_ptr_nonnull(hessian);
    for (size_t i = 0; i < 9; i++)
        ck_assert_double_eq(ag_tensor_get(hessian, i), 0.0);
    ag_tensor_free(hessian);
    ag_tensor_free(product);
    ag_tensor_free(v);
    ag_tensor_free(x);
}
END_TEST

/* ---- sum_to and expand_as ------------------------------------------------- */

START_TEST(sum_to_and_expand_as_values)
{
    static const double values[6] = {1, 2, 3, 4, 5, 6};
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(2, 3), values);
    ag_tensor *column = ag_zeros(tape, AG_F64, AG_SHAPE(2, 1));
    ag_tensor *row = ag_zeros(tape, AG_F64, AG_SHAPE(3));

    ag_tensor *row_sums = ag_sum_to(tape, x, column);
    ck_assert_ptr_nonnull(row_sums);
    ck_assert(ag_tensor_same_shape(row_sums, column));
    ck_assert_double_eq(ag_tensor_get(row_sums, 0), 6.0);
    ck_assert_double_eq(ag_tensor_get(row_sums, 1), 15.0);

    ag_tensor *column_sums = ag_sum_to(tape, x, row);
    ck_assert(ag_tensor_same_shape(column_sums, row));
    ck_assert_double_eq(ag_tensor_get(column_sums, 0), 5.0);
    ck_assert_double_eq(ag_tensor_get(column_sums, 2), 9.0);

    ag_tensor *spread = ag_expand_as(tape, column_sums, x);
    ck_assert(ag_tensor_same_shape(spread, x));
    ck_assert_double_eq(ag_tensor_get(spread, 4), 7.0);

    ck_assert_error_contains(ag_sum_to(tape, x, ag_zeros(tape, AG_F64, AG_SHAPE(4))),
                             "ag_sum_to: shapes (4) and (2x3) cannot be broadcast");
    ck_assert_error_contains(ag_sum_to(tape, row, x),
                             "ag_sum_to: the target of shape (2x3) does not broadcast to x "
                             "of shape (3)");
    ck_assert_error_contains(ag_expand_as(tape, x, row),
                             "ag_expand_as: x of shape (2x3) does not broadcast to the target "
                             "of shape (3)");
    ag_tape_free(tape);
}
END_TEST

/* ---- a gradient penalty --------------------------------------------------- */

/* P(W) = sum over rows i and inputs j of (d/dx_ij sum tanh(x W))^2
 *      = sum_ij (sum_k (1 - tanh(s_ik)^2) W_jk)^2, with s = x W,
 * written out in plain C for the reference. */
static double penalty_by_hand(const double *x, const double *w)
{
    double total = 0;

    for (int i = 0; i < 2; i++) {
        double slope[2];

        for (int k = 0; k < 2; k++) {
            double s = x[i * 3] * w[k] + x[i * 3 + 1] * w[2 + k] + x[i * 3 + 2] * w[4 + k];
            slope[k] = 1 - tanh(s) * tanh(s);
        }
        for (int j = 0; j < 3; j++) {
            double d = slope[0] * w[j * 2] + slope[1] * w[j * 2 + 1];
            total += d * d;
        }
    }
    return total;
}

/* ag_backward through a loss made of a create_graph gradient reaches W
 * through the recorded backward pass. */
START_TEST(gradient_penalty_backward)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(2, 3), small_x);
    ag_tensor *w = ag_tensor_from_doubles(NULL, AG_F64, AG_SHAPE(3, 2), small_w);
    ag_tensor *dx;

    ck_assert_int_eq(ag_tensor_set_requires_grad(x, true), 0);
    ck_assert_int_eq(ag_tensor_set_requires_grad(w, true), 0);
    ag_tensor *out = ag_sum(tape, ag_tanh(tape, ag_matmul(tape, x, w)));
    ck_assert_int_eq(ag_grad(tape, out, NULL, 1, &x, &dx, true), 0);
    ag_tensor *penalty = ag_sum(tape, ag_mul(tape, dx, dx));
    ck_assert_close(ag_tensor_item(penalty), penalty_by_hand(small_x, small_w), 1e-14,
                    "penalty");
    ck_assert_int_eq(ag_backward(tape, penalty, NULL), 0);

    double moved[6];
    memcpy(moved, small_w, sizeof moved);
    for (size_t e = 0; e < 6; e++) {
        moved[e] = small_w[e] + FD_EPS;
        double plus = penalty_by_hand(small_x, moved);
        moved[e] = small_w[e] - FD_EPS;
        double minus = penalty_by_hand(small_x, moved);
        moved[e] = small_w[e];

        char what[32];
        snprintf(what, sizeof what, "dP/dW[%zu]", e);
        ck_assert_close(ag_tensor_get(ag_tensor_grad(w), e), (plus - minus) / (2 * FD_EPS),
                        FD_TOL, what);
    }
    ag_tensor_free(w);
    ag_tape_free(tape);
}
END_TEST

/* ---- the suite ------------------------------------------------------------ */

int main(void)
{
    Suite *suite = suite_create("higher_order");
    TCase *ops = tcase_create("ops");
    TCase *networks = tcase_create("networks");
    TCase *api = tcase_create("api");

    for (size_t i = 0; i < sizeof square_ops / sizeof square_ops[0]; i++) {
        if (ag_op_register(square_ops[i]) != 0) {
            fprintf(stderr, "registering the test ops failed: %s\n", ag_error());
            return EXIT_FAILURE;
        }
    }

    const int n_unary = (int)(sizeof unary_cases / sizeof unary_cases[0]);
    const int n_binary = (int)(sizeof binary_cases / sizeof binary_cases[0]);
    tcase_add_loop_test(ops, unary_second_derivative, 0, n_unary);
    tcase_add_loop_test(ops, unary_hessian_fd, 0, n_unary);
    tcase_add_loop_test(ops, binary_second_derivative, 0, n_binary);
    tcase_add_loop_test(ops, binary_hessian_fd, 0, n_binary);
    tcase_add_loop_test(ops, shape_op_hessian_fd, 0, OP_COUNT);
    tcase_add_test(ops, expand_as_hessian_fd);
    tcase_add_test(ops, matmul_hessian_fd);
    tcase_add_loop_test(ops, linear_hessian_fd, 0, 2);
    tcase_add_test(ops, logsumexp_hessian_closed_form);
    tcase_add_test(ops, square_norm_hessian_closed_form);
    tcase_add_loop_test(ops, reduction_hessian_closed_form, 0, C_COUNT);
    tcase_add_test(ops, linear_hessian_closed_form);
    tcase_add_test(ops, third_derivative);
    tcase_add_test(ops, sum_to_and_expand_as_values);
    suite_add_tcase(suite, ops);

    tcase_add_loop_test(networks, lecture_hessian_fd, 0, 2);
    tcase_add_loop_test(networks, lecture_hessian_symmetric, 0, 2);
    tcase_add_loop_test(networks, lecture_hvp_matches_hessian, 0, 2);
    tcase_add_test(networks, gradient_penalty_backward);
    suite_add_tcase(suite, networks);

    tcase_add_test(api, grad_matches_backward);
    tcase_add_test(api, grad_records_only_with_graph);
    tcase_add_test(api, grad_of_intermediate);
    tcase_add_test(api, grad_unused_input_is_zero);
    tcase_add_test(api, grad_with_seed);
    tcase_add_test(api, grad_through_seed);
    tcase_add_test(api, grad_f32);
    tcase_add_test(api, grad_rejects_bad_arguments);
    tcase_add_loop_test(api, grad_at_kinks, 0, (int)(sizeof kink_cases / sizeof kink_cases[0]));
    tcase_add_test(api, grad_max_shares_ties);
    tcase_add_test(api, custom_op_without_graph_rule);
    tcase_add_test(api, custom_op_with_graph_rule);
    tcase_add_test(api, custom_op_wrong_shape_rule);
    tcase_add_test(api, gradgradcheck_passes_composite);
    tcase_add_test(api, gradgradcheck_passes_vector_output);
    tcase_add_test(api, gradgradcheck_passes_custom_op);
    tcase_add_test(api, gradgradcheck_catches_wrong_value);
    tcase_add_test(api, gradgradcheck_catches_detached_rule);
    tcase_add_test(api, gradgradcheck_reports_missing_rule);
    tcase_add_test(api, gradgradcheck_nan_output_is_error);
    tcase_add_test(api, gradgradcheck_nan_gradient_blames_no_rule);
    tcase_add_test(api, jacobian_of_softmax);
    tcase_add_test(api, jacobian_skips_constant_inputs);
    tcase_add_test(api, hessian_rejects_vector_output);
    tcase_add_test(api, function_errors_keep_cause);
    tcase_add_test(api, hvp_rejects_wrong_vector);
    tcase_add_test(api, hvp_of_linear_function_is_zero);
    suite_add_tcase(suite, api);
    return run_suite(suite);
}
