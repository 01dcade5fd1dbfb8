/* Elementwise functions: values and derivatives against closed forms in
 * double precision, stable forms at +-1000, and PyTorch's kink conventions. */
#include <math.h>
#include <string.h>

#include "check_helpers.h"

typedef ag_tensor *(*unary_fn)(ag_tape *, ag_tensor *);

typedef struct unary_case {
    const char *name;
    unary_fn op;
    double (*value)(double);
    double (*derivative)(double);
    double low, high; /* domain to sample */
} unary_case;

static double ref_neg(double x) { return -x; }
static double d_neg(double x) { (void)x; return -1.0; }
static double d_exp(double x) { return exp(x); }
static double d_log(double x) { return 1.0 / x; }
static double d_sqrt(double x) { return 0.5 / sqrt(x); }
static double d_abs(double x) { return x > 0 ? 1.0 : -1.0; }
static double d_tanh(double x) { return 1.0 / (cosh(x) * cosh(x)); }
static double ref_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
static double d_sigmoid(double x) { return exp(-x) / ((1.0 + exp(-x)) * (1.0 + exp(-x))); }
static double ref_relu(double x) { return x > 0 ? x : 0.0; }
static double d_relu(double x) { return x > 0 ? 1.0 : 0.0; }
static double ref_softplus(double x) { return log(1.0 + exp(x)); }
static double ref_log_sigmoid(double x) { return -log(1.0 + exp(-x)); }
static double d_log_sigmoid(double x) { return 1.0 / (1.0 + exp(x)); }

static const unary_case cases[] = {
    {"neg", ag_neg, ref_neg, d_neg, -3, 3},
    {"exp", ag_exp, exp, d_exp, -3, 3},
    {"log", ag_log, log, d_log, 0.1, 5},
    {"sqrt", ag_sqrt, sqrt, d_sqrt, 0.1, 5},
    {"abs", ag_abs, fabs, d_abs, -3, 3},
    {"tanh", ag_tanh, tanh, d_tanh, -3, 3},
    {"sigmoid", ag_sigmoid, ref_sigmoid, d_sigmoid, -6, 6},
    {"relu", ag_relu, ref_relu, d_relu, -3, 3},
    {"softplus", ag_softplus, ref_softplus, ref_sigmoid, -6, 6},
    {"log_sigmoid", ag_log_sigmoid, ref_log_sigmoid, d_log_sigmoid, -6, 6},
};

#define N_POINTS 16

/* Runs op on N_POINTS random points of its domain and compares each value
 * and derivative with the closed form. */
static void check_case(const unary_case *c, ag_dtype dtype, double tol)
{
    ag_tape *tape = ag_tape_new();
    ag_rng rng = ag_rng_new(42);
    ag_tensor *x = ag_rand_uniform(tape, dtype, AG_SHAPE(N_POINTS), c->low, c->high, &rng);

    ck_assert_int_eq(ag_tensor_set_requires_grad(x, true), 0);
    ag_tensor *y = c->op(tape, x);
    ck_assert_ptr_nonnull(y);
    ag_tensor *loss = ag_sum(tape, y);
    if (loss == NULL) {
        /* Until reductions exist, seed the backward pass with ones. */
        ag_error_clear();
        ck_assert_int_eq(ag_backward(tape, y, ag_ones(tape, dtype, AG_SHAPE(N_POINTS))), 0);
    } else {
        ck_assert_int_eq(ag_backward(tape, loss, NULL), 0);
    }

    for (size_t i = 0; i < N_POINTS; i++) {
        double xi = ag_tensor_get(x, i);
        char what[96];

        snprintf(what, sizeof what, "%s(%g) %s value", c->name, xi,
                 dtype == AG_F32 ? "f32" : "f64");
        ck_assert_close(ag_tensor_get(y, i), c->value(xi), tol, what);
        snprintf(what, sizeof what, "%s'(%g) %s", c->name, xi,
                 dtype == AG_F32 ? "f32" : "f64");
        ck_assert_close(ag_tensor_get(ag_tensor_grad(x), i), c->derivative(xi), tol, what);
    }
    ag_tape_free(tape);
}

START_TEST(unary_f64_matches_closed_form)
{
    check_case(&cases[_i], AG_F64, 1e-13);
}
END_TEST

START_TEST(unary_f32_matches_closed_form)
{
    check_case(&cases[_i], AG_F32, 2e-6);
}
END_TEST

/* Value and derivative of op at one point, in the given dtype. */
static void eval_at(unary_fn op, ag_dtype dtype, double x0, double *value, double *grad)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_scalar(tape, dtype, x0);

    ag_tensor_set_requires_grad(x, true);
    ag_tensor *y = op(tape, x);
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(ag_backward(tape, y, NULL), 0);
    *value = ag_tensor_item(y);
    *grad = ag_tensor_item(ag_tensor_grad(x));
    ag_tape_free(tape);
}

START_TEST(stable_forms_at_1000)
{
    const ag_dtype dtypes[] = {AG_F32, AG_F64};

    for (int d = 0; d < 2; d++) {
        double v;
        double g;

        eval_at(ag_sigmoid, dtypes[d], 1000, &v, &g);
        ck_assert_double_eq(v, 1.0);
        ck_assert_double_eq(g, 0.0);
        eval_at(ag_sigmoid, dtypes[d], -1000, &v, &g);
        ck_assert_double_eq(v, 0.0);
        ck_assert_double_eq(g, 0.0);

        eval_at(ag_softplus, dtypes[d], 1000, &v, &g);
        ck_assert_double_eq(v, 1000.0);
        ck_assert_double_eq(g, 1.0);
        eval_at(ag_softplus, dtypes[d], -1000, &v, &g);
        ck_assert_double_eq(v, 0.0);
        ck_assert_double_eq(g, 0.0);

        eval_at(ag_log_sigmoid, dtypes[d], -1000, &v, &g);
        ck_assert_double_eq(v, -1000.0);
        ck_assert_double_eq(g, 1.0);
        eval_at(ag_log_sigmoid, dtypes[d], 1000, &v, &g);
        ck_assert_double_eq(v, 0.0);
        ck_assert_double_eq(g, 0.0);
    }
}
END_TEST

START_TEST(kinks_follow_pytorch)
{
    double v;
    double g;

    eval_at(ag_relu, AG_F64, 0.0, &v, &g);
    ck_assert_double_eq(v, 0.0);
    ck_assert_double_eq(g, 0.0);

    eval_at(ag_abs, AG_F64, 0.0, &v, &g);
    ck_assert_double_eq(v, 0.0);
    ck_assert_double_eq(g, 0.0);

    /* sqrt'(0) is +inf in PyTorch. */
    eval_at(ag_sqrt, AG_F64, 0.0, &v, &g);
    ck_assert_double_eq(v, 0.0);
    ck_assert(isinf(g) && g > 0);
}
END_TEST

START_TEST(relu_passes_nan)
{
    double v;
    double g;

    eval_at(ag_relu, AG_F64, NAN, &v, &g);
    ck_assert(isnan(v));
}
END_TEST

/* clamp, add_scalar, mul_scalar and pow_scalar take attributes. */
START_TEST(clamp_gradient_inside_bounds)
{
    const double xs[] = {-2.0, -1.0, 0.5, 1.0, 2.0};
    const double expected_value[] = {-1.0, -1.0, 0.5, 1.0, 1.0};
    const double expected_grad[] = {0.0, 1.0, 1.0, 1.0, 0.0};
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(5), xs);

    ag_tensor_set_requires_grad(x, true);
    ag_tensor *y = ag_clamp(tape, x, -1.0, 1.0);
    ck_assert_int_eq(ag_backward(tape, y, ag_ones(tape, AG_F64, AG_SHAPE(5))), 0);
    for (int i = 0; i < 5; i++) {
        ck_assert_double_eq(ag_tensor_get(y, i), expected_value[i]);
        ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(x), i), expected_grad[i]);
    }
    ag_tape_free(tape);
}
END_TEST

START_TEST(clamp_rejects_inverted_bounds)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_scalar(tape, AG_F64, 0.0);

    ck_assert_error_contains(ag_clamp(tape, x, 1.0, -1.0), "ag_clamp: low 1");
    ag_tape_free(tape);
}
END_TEST

START_TEST(scalar_attribute_ops)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_scalar(tape, AG_F64, 1.5);

    ag_tensor_set_requires_grad(x, true);

    /* y = 3 * (x + 2)^2.5, dy/dx = 7.5 * (x + 2)^1.5 */
    ag_tensor *y = ag_mul_scalar(tape, ag_pow_scalar(tape, ag_add_scalar(tape, x, 2.0), 2.5), 3.0);
    ck_assert_int_eq(ag_backward(tape, y, NULL), 0);
    ck_assert_close(ag_tensor_item(y), 3.0 * pow(3.5, 2.5), 1e-15, "value");
    ck_assert_close(ag_tensor_item(ag_tensor_grad(x)), 7.5 * pow(3.5, 1.5), 1e-15, "gradient");
    ag_tape_free(tape);
}
END_TEST

START_TEST(pow_scalar_at_zero_base)
{
    /* PyTorch: d/dx x^0 = 0 everywhere; d/dx x^2 at 0 = 0; d/dx x^0.5 at 0 = inf. */
    const double exponents[] = {0.0, 2.0, 0.5};
    const double expected[] = {0.0, 0.0, INFINITY};

    for (int k = 0; k < 3; k++) {
        ag_tape *tape = ag_tape_new();
        ag_tensor *x = ag_scalar(tape, AG_F64, 0.0);

        ag_tensor_set_requires_grad(x, true);
        ag_tensor *y = ag_pow_scalar(tape, x, exponents[k]);
        ck_assert_int_eq(ag_backward(tape, y, NULL), 0);
        ck_assert_double_eq(ag_tensor_item(ag_tensor_grad(x)), expected[k]);
        ag_tape_free(tape);
    }
}
END_TEST

START_TEST(null_input_keeps_first_error)
{
    ag_tape *tape = ag_tape_new();

    ag_set_error("first failure");
    ck_assert_ptr_null(ag_exp(tape, NULL));
    ck_assert_ptr_null(ag_clamp(tape, NULL, 1.0, 0.0));
    ck_assert_str_eq(ag_error(), "first failure");
    ag_tape_free(tape);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("ops_unary");
    TCase *tc = tcase_create("core");
    int n_cases = (int)(sizeof cases / sizeof cases[0]);

    tcase_add_loop_test(tc, unary_f64_matches_closed_form, 0, n_cases);
    tcase_add_loop_test(tc, unary_f32_matches_closed_form, 0, n_cases);
    tcase_add_test(tc, stable_forms_at_1000);
    tcase_add_test(tc, kinks_follow_pytorch);
    tcase_add_test(tc, relu_passes_nan);
    tcase_add_test(tc, clamp_gradient_inside_bounds);
    tcase_add_test(tc, clamp_rejects_inverted_bounds);
    tcase_add_test(tc, scalar_attribute_ops);
    tcase_add_test(tc, pow_scalar_at_zero_base);
    tcase_add_test(tc, null_input_keeps_first_error);
    suite_add_tcase(suite, tc);
    return run_suite(suite);
}
