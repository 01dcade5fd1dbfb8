/*
 * Tests of `tapegrad hessian` and `tapegrad grad --check2`, each run as a
 * child process:
 *  - golden text of small Hessians with integer entries;
 *  - JSON read back and compared with Hessians written out by hand, for
 *    polynomials, a layer, the CLI's losses and the lecture's network
 *    (against central differences of its hand-derived gradient);
 *  - the second-order check passing, failing and unable to run;
 *  - one test per class of error.
 *
 * The environment names the program (TAPEGRAD) and the golden files
 * (GOLDEN_DIR); meson sets them. Golden files were checked by hand: their
 * expressions have exact values.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "json.h"
#include "run_program.h"

static void assert_golden(const char *name, const char *actual)
{
    char path[512];

    snprintf(path, sizeof path, "%s/%s", env("GOLDEN_DIR"), name);
    char *golden = read_file(path);
    ck_assert_msg(strcmp(golden, actual) == 0,
                  "output differs from %s\n--- expected:\n%s--- got:\n%s", name, golden,
                  actual);
    free(golden);
}

/* ---- JSON --------------------------------------------------------------------- */

static double number_in(const json_value *array, size_t i, const char *what)
{
    const json_value *v = json_at(array, i);

    ck_assert_msg(v != NULL && v->type == JSON_NUMBER, "no number at %s[%zu]", what, i);
    return v->number;
}

/* Returns Hessian entry (r, c) of a `hessian --format json` document. */
static double hessian_at(const json_value *doc, size_t r, size_t c)
{
    const json_value *hessian = json_get(doc, "hessian");
    size_t n = (size_t)number_in(json_get(hessian, "shape"), 0, "hessian.shape");

    ck_assert_uint_lt(r, n);
    ck_assert_uint_lt(c, n);
    return number_in(json_get(hessian, "data"), r * n + c, "hessian.data");
}

/* Asserts that the Hessian is (n x n) and its rows are labelled `names`. */
static void assert_layout(const json_value *doc, size_t n, const char *const *names)
{
    const json_value *shape = json_get(json_get(doc, "hessian"), "shape");
    const json_value *labels = json_get(doc, "names");

    ck_assert_ptr_nonnull(shape);
    ck_assert_uint_eq(shape->count, 2);
    ck_assert_double_eq(number_in(shape, 0, "hessian.shape"), (double)n);
    ck_assert_double_eq(number_in(shape, 1, "hessian.shape"), (double)n);
    ck_assert_ptr_nonnull(labels);
    ck_assert_int_eq(labels->type, JSON_ARRAY);
    ck_assert_uint_eq(labels->count, n);
    for (size_t i = 0; i < n; i++) {
        const json_value *label = json_at(labels, i);

        ck_assert_int_eq(label->type, JSON_STRING);
        ck_assert_str_eq(label->string, names[i]);
    }
}

static double value_of(const json_value *doc)
{
    return number_in(json_get(json_get(doc, "value"), "data"), 0, "value.data");
}

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

/* Runs `tapegrad hessian --format json` with the arguments. */
#define HESSIAN_JSON(...) run_argv((const char *const[]){"hessian", "--format", "json", \
                                                          __VA_ARGS__, NULL})

/* ================================================================================ */
/* hessian: golden text                                                              */
/* ================================================================================ */

START_TEST(text_polynomial)
{
    /* f = x^2 y + y^3 at (1, 2) is 10; f_xx = 2y = 4, f_xy = 2x = 2,
     * f_yy = 6y = 12. */
    run_result r = RUN("hessian", "x^2*y + y^3", "x=1", "y=2");

    ck_assert_int_eq(r.status, 0);
    assert_golden("hessian_polynomial.txt", r.out);
    ck_assert_str_eq(r.err, "");
    run_free(&r);
}
END_TEST

START_TEST(text_matrix_labels)
{
    /* f = x sum(W^2) at x = 0.5 is 15; d2f/dW2 = 2x I = I,
     * d2f/dW dx = 2W, d2f/dx2 = 0. Rows are W row-major, then x. */
    run_result r = RUN("hessian", "sum(W*W*x)", "W=[[1,2],[3,4]]", "x=0.5");

    ck_assert_int_eq(r.status, 0);
    assert_golden("hessian_matrix.txt", r.out);
    run_free(&r);
}
END_TEST

START_TEST(text_labels_left_out)
{
    /* cross_entropy of logits (0, 0) with label 1 is log 2; its Hessian is
     * diag(s) - s s^T with s = (1/2, 1/2). The labels are named as left
     * out. */
    run_result r = RUN("hessian", "cross_entropy(z, c)", "z=[[0,0]]", "c=[1]");

    ck_assert_int_eq(r.status, 0);
    assert_golden("hessian_labels.txt", r.out);
    run_free(&r);
}
END_TEST

/* ================================================================================ */
/* hessian: JSON against closed forms                                                */
/* ================================================================================ */

START_TEST(json_polynomial_vectors)
{
    /* f = sum(x^2 y) + sum(x) sum(y) = a^2 c + b^2 d + (a + b)(c + d) with
     * x = (a, b), y = (c, d). Second derivatives: f_aa = 2c, f_bb = 2d,
     * f_ac = 2a + 1, f_bd = 2b + 1, f_ad = f_bc = 1, and 0 elsewhere. */
    const double a = 1.5, b = -2, c = 0.25, d = 3;
    const double expected[4][4] = {
        {2 * c, 0, 2 * a + 1, 1},
        {0, 2 * d, 1, 2 * b + 1},
        {2 * a + 1, 1, 0, 0},
        {1, 2 * b + 1, 0, 0},
    };
    static const char *const names[4] = {"x[0]", "x[1]", "y[0]", "y[1]"};
    run_result r = HESSIAN_JSON("sum(x^2 * y) + sum(x) * sum(y)", "x=[1.5,-2]",
                                "y=[0.25,3]");
    ck_assert_msg(r.status == 0, "exit status %d: %s", r.status, r.err);
    json_value *doc = parse_output(&r);

    assert_layout(doc, 4, names);
    ck_assert_near(value_of(doc), a * a * c + b * b * d + (a + b) * (c + d), "value");
    for (size_t i = 0; i < 4; i++) {
        for (size_t j = 0; j < 4; j++)
            ck_assert_near(hessian_at(doc, i, j), expected[i][j], "hessian");
    }
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(json_keys_exactly)
{
    /* One object with the keys value, hessian and names, and nothing else
     * on stdout. */
    run_result r = HESSIAN_JSON("x^3", "x=2");
    ck_assert_int_eq(r.status, 0);
    json_value *doc = parse_output(&r);
    static const char *const names[1] = {"x[0]"};

    ck_assert_int_eq(doc->type, JSON_OBJECT);
    ck_assert_uint_eq(doc->count, 3);
    ck_assert_ptr_nonnull(json_get(doc, "value"));
    assert_layout(doc, 1, names);
    ck_assert_double_eq(value_of(doc), 8.0);
    ck_assert_double_eq(hessian_at(doc, 0, 0), 12.0); /* 6x */
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(json_layer_closed_form)
{
    /* f = sum((x W)^2) = sum_k s_k^2 with s_k = sum_j x_j W_jk:
     * d2f/dx_j dx_l = 2 sum_k W_jk W_lk,
     * d2f/dx_j dW_lm = 2 (x_l W_jm + [j == l] s_m),
     * d2f/dW_jk dW_lm = 2 x_j x_l [k == m].
     * The variables are x (1x2) then W (2x2), row-major. */
    const double x[2] = {0.5, -1.25};
    const double w[2][2] = {{2, -1}, {0.75, 3}};
    static const char *const names[6] = {"x[0, 0]", "x[0, 1]", "W[0, 0]",
                                         "W[0, 1]", "W[1, 0]", "W[1, 1]"};
    run_result r = HESSIAN_JSON("sum((x @ W)^2)", "x=[[0.5,-1.25]]", "W=[[2,-1],[0.75,3]]");
    ck_assert_msg(r.status == 0, "exit status %d: %s", r.status, r.err);
    json_value *doc = parse_output(&r);
    double s[2];

    assert_layout(doc, 6, names);
    for (int k = 0; k < 2; k++)
        s[k] = x[0] * w[0][k] + x[1] * w[1][k];
    for (int j = 0; j < 2; j++) {
        for (int l = 0; l < 2; l++) {
            double xx = 2 * (w[j][0] * w[l][0] + w[j][1] * w[l][1]);

            ck_assert_near(hessian_at(doc, (size_t)j, (size_t)l), xx, "d2f/dx dx");
            for (int m = 0; m < 2; m++) {
                double xw = 2 * (x[l] * w[j][m] + (j == l ? s[m] : 0.0));
                size_t col = (size_t)(2 + 2 * l + m);

                ck_assert_near(hessian_at(doc, (size_t)j, col), xw, "d2f/dx dW");
                ck_assert_near(hessian_at(doc, col, (size_t)j), xw, "d2f/dW dx");
            }
        }
    }
    for (int row = 0; row < 4; row++) {
        for (int col = 0; col < 4; col++) {
            int j = row / 2, k = row % 2, l = col / 2, m = col % 2;
            double ww = k == m ? 2 * x[j] * x[l] : 0.0;

            ck_assert_near(hessian_at(doc, (size_t)(2 + row), (size_t)(2 + col)), ww,
                           "d2f/dW dW");
        }
    }
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(json_unused_name_zero)
{
    /* z is bound but unused: its row and column are zero. */
    static const char *const names[2] = {"x[0]", "z[0]"};
    run_result r = HESSIAN_JSON("x^2", "x=3", "z=1");
    ck_assert_int_eq(r.status, 0);
    json_value *doc = parse_output(&r);

    assert_layout(doc, 2, names);
    ck_assert_double_eq(hessian_at(doc, 0, 0), 2.0);
    ck_assert_double_eq(hessian_at(doc, 0, 1), 0.0);
    ck_assert_double_eq(hessian_at(doc, 1, 0), 0.0);
    ck_assert_double_eq(hessian_at(doc, 1, 1), 0.0);
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(json_no_variables)
{
    run_result r = HESSIAN_JSON("2 * 3");
    ck_assert_int_eq(r.status, 0);
    json_value *doc = parse_output(&r);
    const json_value *data = json_get(json_get(doc, "hessian"), "data");

    assert_layout(doc, 0, NULL);
    ck_assert_uint_eq(data->count, 0);
    ck_assert_double_eq(value_of(doc), 6.0);
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(text_no_variables)
{
    /* An empty variable, and labels alone, leave nothing to differentiate. */
    run_result empty = RUN("hessian", "sum(e)", "e=[]");
    run_result labels = RUN("hessian", "cross_entropy(1, c)", "c=[0]");

    ck_assert_int_eq(empty.status, 0);
    ck_assert_str_eq(empty.out,
                     "value (1): 0\nhessian (0x0): no elements to differentiate by\n");
    ck_assert_int_eq(labels.status, 0);
    ck_assert_ptr_nonnull(strstr(labels.out, "hessian (0x0): no elements to differentiate by\n"
                                             "c: not in the Hessian"));
    run_free(&empty);
    run_free(&labels);
}
END_TEST

START_TEST(json_f32)
{
    /* d2/dx2 x^3 = 6x, computed in float at x = 0.1f. */
    run_result r = HESSIAN_JSON("x^3", "x=0.1", "--dtype", "f32");
    ck_assert_int_eq(r.status, 0);
    json_value *doc = parse_output(&r);
    float x = 0.1f;

    ck_assert_float_eq_tol((float)hessian_at(doc, 0, 0), 6.0f * x, 1e-6f);
    ck_assert_float_eq_tol((float)value_of(doc), x * x * x, 1e-9f);
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(json_numbers_round_trip)
{
    /* f = x y / 3 at (1, 1): the value and d2f/dx dy are both 1/3, which no
     * short decimal writes. The printed digits must read back as the same
     * double. */
    run_result r = HESSIAN_JSON("x*y/3", "x=1", "y=1");
    ck_assert_int_eq(r.status, 0);
    json_value *doc = parse_output(&r);

    ck_assert_double_eq(value_of(doc), 1.0 / 3.0);
    ck_assert_double_eq(hessian_at(doc, 0, 1), 1.0 / 3.0);
    ck_assert_double_eq(hessian_at(doc, 1, 0), 1.0 / 3.0);
    ck_assert_double_eq(hessian_at(doc, 0, 0), 0.0);
    json_free(doc);
    run_free(&r);
}
END_TEST

/* ================================================================================ */
/* hessian: the CLI's losses                                                         */
/* ================================================================================ */

/* A loss over p (3) and t (3), with its closed-form Hessian blocks, each
 * diagonal: d2l/dp_i2, d2l/dp_i dt_i and d2l/dt_i2. */
typedef struct loss_case {
    const char *name;
    const char *expression;
    double p[3];
    double t[3];
    double (*pp)(double p, double t);
    double (*pt)(double p, double t);
    double (*tt)(double p, double t);
} loss_case;

/* mse: (1/3) sum (p - t)^2 */
static double mse_pp(double p, double t) { (void)p; (void)t; return 2.0 / 3; }
static double mse_pt(double p, double t) { (void)p; (void)t; return -2.0 / 3; }

/* bce: -(1/3) sum [t log p + (1 - t) log(1 - p)] */
static double bce_pp(double p, double t)
{
    return (t / (p * p) + (1 - t) / ((1 - p) * (1 - p))) / 3;
}

static double bce_pt(double p, double t) { (void)t; return -1.0 / (3 * p * (1 - p)); }
static double zero(double p, double t) { (void)p; (void)t; return 0.0; }

/* bce_logits: (1/3) sum [softplus(p) - p t], so d2l/dp2 = s (1 - s) / 3 with
 * s = sigmoid(p), and d2l/dp dt = -1/3. */
static double bce_logits_pp(double p, double t)
{
    (void)t;
    return sigmoid(p) * (1 - sigmoid(p)) / 3;
}

static double bce_logits_pt(double p, double t) { (void)p; (void)t; return -1.0 / 3; }

static const loss_case loss_cases[] = {
    {"mse", "mse(p, t)", {0.5, -1, 2}, {1, 0.25, 2.5}, mse_pp, mse_pt, mse_pp},
    {"bce", "bce(p, t)", {0.2, 0.7, 0.9}, {0, 1, 0.4}, bce_pp, bce_pt, zero},
    {"bce_logits", "bce_logits(p, t)", {-1.5, 0.3, 4}, {0, 1, 0.5}, bce_logits_pp,
     bce_logits_pt, zero},
};

START_TEST(loss_closed_form)
{
    const loss_case *c = &loss_cases[_i];
    static const char *const names[6] = {"p[0]", "p[1]", "p[2]", "t[0]", "t[1]", "t[2]"};
    char p_arg[128];
    char t_arg[128];

    snprintf(p_arg, sizeof p_arg, "p=[%.17g,%.17g,%.17g]", c->p[0], c->p[1], c->p[2]);
    snprintf(t_arg, sizeof t_arg, "t=[%.17g,%.17g,%.17g]", c->t[0], c->t[1], c->t[2]);
    run_result r = HESSIAN_JSON(c->expression, p_arg, t_arg);
    ck_assert_msg(r.status == 0, "%s: exit status %d: %s", c->name, r.status, r.err);
    json_value *doc = parse_output(&r);

    assert_layout(doc, 6, names);
    for (size_t i = 0; i < 3; i++) {
        for (size_t j = 0; j < 3; j++) {
            double same = i == j ? 1.0 : 0.0;
            double pp = same * c->pp(c->p[i], c->t[i]);
            double pt = same * c->pt(c->p[i], c->t[i]);
            double tt = same * c->tt(c->p[i], c->t[i]);

            ck_assert_near(hessian_at(doc, i, j), pp, c->name);
            ck_assert_near(hessian_at(doc, i, 3 + j), pt, c->name);
            ck_assert_near(hessian_at(doc, 3 + i, j), pt, c->name);
            ck_assert_near(hessian_at(doc, 3 + i, 3 + j), tt, c->name);
        }
    }
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(loss_cross_entropy)
{
    /* Mean over B = 2 rows of logsumexp(z_r) - z_r,c_r: within row r the
     * Hessian is (diag(s) - s s^T) / B with s = softmax(z_r), 0 across
     * rows. The labels c are left out of the Hessian and of names. */
    const double z[2][3] = {{1, 2, 3}, {0.5, -1, 0}};
    static const char *const names[6] = {"z[0, 0]", "z[0, 1]", "z[0, 2]",
                                         "z[1, 0]", "z[1, 1]", "z[1, 2]"};
    run_result r = HESSIAN_JSON("cross_entropy(z, c)", "z=[[1,2,3],[0.5,-1,0]]", "c=[2,0]");
    ck_assert_msg(r.status == 0, "exit status %d: %s", r.status, r.err);
    json_value *doc = parse_output(&r);

    assert_layout(doc, 6, names);
    for (size_t row = 0; row < 2; row++) {
        double total = exp(z[row][0]) + exp(z[row][1]) + exp(z[row][2]);

        for (size_t i = 0; i < 3; i++) {
            double si = exp(z[row][i]) / total;

            for (size_t col = 0; col < 6; col++) {
                size_t j = col % 3;
                double sj = exp(z[row][j]) / total;
                double expected = col / 3 == row ? (si * (i == j) - si * sj) / 2 : 0.0;

                ck_assert_near(hessian_at(doc, 3 * row + i, col), expected, "d2l/dz2");
            }
        }
    }
    json_free(doc);
    run_free(&r);
}
END_TEST

/* ================================================================================ */
/* hessian: the lecture's network                                                    */
/* ================================================================================ */

/* The lecture's scalar network with h = tanh: S1 = x W1 + b1, Z1 = h(S1),
 * S2 = Z1 W2 + b2, Z2 = h(S2), f = Z2 W3 + b3, L = (y - f)^2. The
 * variables v = (x, W1, b1, W2, b2, W3, b3, y), in that order. */
#define LECTURE_EXPRESSION "(y - (tanh(tanh(x*W1 + b1)*W2 + b2)*W3 + b3))^2"
enum { LECTURE_VARS = 8 };

static const char *const lecture_names[LECTURE_VARS] = {"x", "W1", "b1", "W2",
                                                        "b2", "W3", "b3", "y"};

/* The gradient of L by the hand derivation, with h'(S) = 1 - h(S)^2. */
static void lecture_gradient(const double *v, double *grad)
{
    double x = v[0], w1 = v[1], b1 = v[2], w2 = v[3], b2 = v[4], w3 = v[5], b3 = v[6],
           y = v[7];
    double z1 = tanh(x * w1 + b1);
    double z2 = tanh(z1 * w2 + b2);
    double f = z2 * w3 + b3;

    double dl_df = -2.0 * (y - f);
    double dl_ds2 = dl_df * w3 * (1.0 - z2 * z2);
    double dl_ds1 = dl_ds2 * w2 * (1.0 - z1 * z1);
    grad[0] = dl_ds1 * w1;
    grad[1] = dl_ds1 * x;
    grad[2] = dl_ds1;
    grad[3] = dl_ds2 * z1;
    grad[4] = dl_ds2;
    grad[5] = dl_df * z2;
    grad[6] = dl_df;
    grad[7] = 2.0 * (y - f);
}

static const double lecture_point[LECTURE_VARS] = {0.8, -0.4, 0.3, 1.7, -0.2, 0.9, 0.05, 1.5};

static run_result run_lecture(const char *format)
{
    char bindings[LECTURE_VARS][64];

    for (int k = 0; k < LECTURE_VARS; k++)
        snprintf(bindings[k], sizeof bindings[k], "%s=%.17g", lecture_names[k],
                 lecture_point[k]);
    return RUN("hessian", "--format", format, LECTURE_EXPRESSION, bindings[0], bindings[1],
               bindings[2], bindings[3], bindings[4], bindings[5], bindings[6], bindings[7]);
}

START_TEST(lecture_against_differences)
{
    /* Column j against the central difference of the hand-derived gradient
     * along v_j. With step 1e-5 the truncation error is about 1e-10 and the
     * rounding error about 1e-11, so 1e-8 is a safe bound. */
    const double step = 1e-5;
    run_result r = run_lecture("json");
    ck_assert_msg(r.status == 0, "exit status %d: %s", r.status, r.err);
    json_value *doc = parse_output(&r);
    const char *names[LECTURE_VARS];
    char labels[LECTURE_VARS][16];

    for (int k = 0; k < LECTURE_VARS; k++) {
        snprintf(labels[k], sizeof labels[k], "%s[0]", lecture_names[k]);
        names[k] = labels[k];
    }
    assert_layout(doc, LECTURE_VARS, names);
    for (size_t j = 0; j < LECTURE_VARS; j++) {
        double plus[LECTURE_VARS];
        double minus[LECTURE_VARS];
        double up[LECTURE_VARS];
        double down[LECTURE_VARS];

        memcpy(plus, lecture_point, sizeof plus);
        memcpy(minus, lecture_point, sizeof minus);
        plus[j] += step;
        minus[j] -= step;
        lecture_gradient(plus, up);
        lecture_gradient(minus, down);
        for (size_t i = 0; i < LECTURE_VARS; i++) {
            double expected = (up[i] - down[i]) / (2 * step);
            double actual = hessian_at(doc, i, j);

            ck_assert_msg(fabs(actual - expected) <= 1e-8 * fmax(1.0, fabs(expected)),
                          "H[%s][%s]: got %.17g, central difference %.17g",
                          lecture_names[i], lecture_names[j], actual, expected);
        }
    }
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(lecture_symmetric)
{
    /* The same network with h = sigmoid: second derivatives commute, so the
     * Hessian equals its transpose up to rounding. */
    run_result r = RUN("hessian", "--format", "json",
                       "(y - (sigmoid(sigmoid(x*W1 + b1)*W2 + b2)*W3 + b3))^2", "x=0.8",
                       "W1=-0.4", "b1=0.3", "W2=1.7", "b2=-0.2", "W3=0.9", "b3=0.05",
                       "y=1.5");
    ck_assert_msg(r.status == 0, "exit status %d: %s", r.status, r.err);
    json_value *doc = parse_output(&r);

    for (size_t i = 0; i < LECTURE_VARS; i++) {
        for (size_t j = 0; j < i; j++)
            ck_assert_near(hessian_at(doc, i, j), hessian_at(doc, j, i), "symmetry");
    }
    /* d2L/db3^2 = 2, since L = (y - f)^2 and df/db3 = 1. */
    ck_assert_near(hessian_at(doc, 6, 6), 2.0, "d2L/db3^2");
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(lecture_text_rows)
{
    /* The text table has a header and one row per variable, each starting
     * with its label. */
    run_result r = run_lecture("text");
    ck_assert_int_eq(r.status, 0);
    ck_assert_ptr_nonnull(strstr(r.out, "hessian (8x8)"));
    for (int k = 0; k < LECTURE_VARS; k++) {
        char row[32];

        snprintf(row, sizeof row, "\n  %s[0] ", lecture_names[k]);
        ck_assert_msg(strstr(r.out, row) != NULL, "no row for %s in:\n%s",
                      lecture_names[k], r.out);
    }
    run_free(&r);
}
END_TEST

/* ================================================================================ */
/* grad --check2                                                                      */
/* ================================================================================ */

START_TEST(check2_json_passes)
{
    /* f = x^2 y + y^3: the second derivatives are 4, 2 and 12 at (1, 2).
     * Two built gradient elements plus two partials of each of them: 6
     * comparisons. */
    run_result r = RUN("grad", "--format", "json", "--check2", "x^2*y + y^3", "x=1", "y=2");
    ck_assert_msg(r.status == 0, "exit status %d: %s", r.status, r.err);
    json_value *doc = parse_output(&r);
    const json_value *check = json_get(doc, "check2");

    ck_assert_ptr_nonnull(check);
    ck_assert_ptr_null(json_get(doc, "check"));
    ck_assert_int_eq(json_get(check, "passed")->type, JSON_BOOL);
    ck_assert(json_get(check, "passed")->boolean);
    ck_assert_double_eq(json_get(check, "checked")->number, 6.0);

    double analytic = json_get(check, "analytic")->number;
    double numeric = json_get(check, "numeric")->number;
    /* The worst comparison is of a gradient (f_x = 2xy = 4, f_y = x^2 + 3y^2
     * = 13) or of a second derivative. */
    ck_assert_msg(analytic == 4.0 || analytic == 13.0 || analytic == 2.0 || analytic == 12.0,
                  "analytic %.17g is neither a gradient nor a second derivative",
                  analytic);
    ck_assert(fabs(analytic - numeric) <= 1e-5 + 1e-3 * fabs(numeric));
    ck_assert_double_eq(json_get(check, "abs_error")->number, fabs(analytic - numeric));
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(check2_with_check)
{
    /* Both checks run and both objects appear. */
    run_result r = RUN("grad", "--format", "json", "--check", "--check2", "sum(tanh(x) * y)",
                       "x=[0.5,-1]", "y=[2,3]");
    ck_assert_msg(r.status == 0, "exit status %d: %s", r.status, r.err);
    json_value *doc = parse_output(&r);

    ck_assert(json_get(json_get(doc, "check"), "passed")->boolean);
    ck_assert(json_get(json_get(doc, "check2"), "passed")->boolean);
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(check2_text_passes)
{
    run_result r = RUN("grad", "--check2", "x^2*y + y^3", "x=1", "y=2");

    ck_assert_int_eq(r.status, 0);
    ck_assert_ptr_nonnull(strstr(r.out, "d/dx (1): 4\n"));
    ck_assert_ptr_nonnull(strstr(r.out, "second-order check: passed (6 comparisons)\n"));
    ck_assert_ptr_nonnull(strstr(r.out, "  criterion: |analytic - numeric| <= 1e-05 + "
                                        "0.001 * |numeric|, step 1e-06\n"));
    ck_assert_ptr_nonnull(strstr(r.out, "  worst element: d/d"));
    run_free(&r);
}
END_TEST

START_TEST(check2_losses_pass)
{
    /* The fused losses differentiate twice; labels are held constant. */
    static const char *const cases[][3] = {
        {"bce(p, t)", "p=[0.2,0.7]", "t=[0,0.6]"},
        {"cross_entropy(p, t)", "p=[[1,2,0.5],[0,-1,1]]", "t=[2,0]"},
        {"bce_logits(p, t)", "p=[-1,2]", "t=[1,0.3]"},
        {"mse(p, t)", "p=[1,2]", "t=[0.5,-1]"},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        run_result r = RUN("grad", "--format", "json", "--check2", cases[k][0], cases[k][1],
                           cases[k][2]);
        ck_assert_msg(r.status == 0, "%s: exit status %d: %s", cases[k][0], r.status, r.err);
        json_value *doc = parse_output(&r);

        ck_assert_msg(json_get(json_get(doc, "check2"), "passed")->boolean, "%s: %s",
                      cases[k][0], r.out);
        json_free(doc);
        run_free(&r);
    }
}
END_TEST

START_TEST(check2_fails_large_step)
{
    /* With step h = 0.5, the central difference of g = 4x^3 at x = 1 is
     * (4 (1.5)^3 - 4 (0.5)^3) / 1 = 13, while g' = 12x^2 = 12. */
    run_result r = RUN("grad", "--format", "json", "--check2", "--eps", "0.5", "x^4", "x=1");
    ck_assert_msg(r.status == 1, "exit status %d: %s", r.status, r.err);
    json_value *doc = parse_output(&r);
    const json_value *check = json_get(doc, "check2");

    ck_assert(!json_get(check, "passed")->boolean);
    ck_assert_str_eq(json_get(check, "input")->string, "x");
    ck_assert_double_eq(json_get(check, "eps")->number, 0.5);
    ck_assert_near(json_get(check, "analytic")->number, 12.0, "analytic");
    ck_assert_near(json_get(check, "numeric")->number, 13.0, "numeric");
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(check2_fails_text)
{
    run_result r = RUN("grad", "--check2", "--eps", "0.5", "x^4", "x=1");

    ck_assert_int_eq(r.status, 1);
    ck_assert_ptr_nonnull(strstr(r.out, "second-order check: FAILED"));
    ck_assert_ptr_nonnull(strstr(r.out, "worst element: d/dx[0] by x[0]\n"));
    ck_assert_ptr_nonnull(strstr(r.out, "analytic 12, numeric 13,"));
    run_free(&r);
}
END_TEST

START_TEST(check2_cannot_run)
{
    /* Moving p = 1 by the step leaves [0, 1], so bce fails inside the check:
     * an error (status 2) with the library's message, not a failed check. */
    run_result r = RUN("grad", "--check2", "bce(p, t)", "p=[1]", "t=[1]");

    ck_assert_msg(r.status == 2, "exit status %d: %s", r.status, r.err);
    ck_assert_ptr_nonnull(strstr(r.err, "the second-order check could not run"));
    ck_assert_ptr_nonnull(strstr(r.err, "outside [0, 1]"));
    ck_assert_str_eq(r.out, "");
    run_free(&r);
}
END_TEST

START_TEST(check2_nan_value_could_not_run)
{
    /* The rules of sum(x*x) are right; a NaN in x must not blame them. */
    run_result r = RUN("grad", "--check2", "sum(x*x)", "x=[1,nan]");

    ck_assert_msg(r.status == 2, "exit status %d: %s%s", r.status, r.out, r.err);
    ck_assert_ptr_nonnull(strstr(r.err, "f(x) is nan at output element 0"));
    ck_assert_ptr_null(strstr(r.err, "wrong value"));
    ck_assert_str_eq(r.out, "");
    run_free(&r);
}
END_TEST

START_TEST(check2_labels_also_used_elsewhere)
{
    run_result r = RUN("grad", "--check2", "cross_entropy(z,c) + sum(c*c)", "z=[[1,2,3]]",
                       "c=[1]");

    ck_assert_msg(r.status == 0, "exit status %d: %s%s", r.status, r.out, r.err);
    ck_assert_ptr_nonnull(strstr(r.out, "second-order check: passed"));
    ck_assert_ptr_nonnull(strstr(r.out, "labels held constant"));
    run_free(&r);
}
END_TEST

START_TEST(check2_needs_one_element)
{
    run_result r = RUN("grad", "--check2", "x * 2", "x=[1,2]");

    ck_assert_int_eq(r.status, 2);
    ck_assert_ptr_nonnull(strstr(r.err, "--check2 needs a one-element value"));
    ck_assert_ptr_nonnull(strstr(r.err, "(2)"));
    ck_assert_str_eq(r.out, "");
    run_free(&r);
}
END_TEST

/* ================================================================================ */
/* hessian: errors exit with status 2 and a message that points at the cause        */
/* ================================================================================ */

START_TEST(error_vector_value)
{
    run_result r = RUN("hessian", "x * 2", "x=[1,2,3]");

    assert_usage_error(&r, "hessian needs a one-element value");
    assert_usage_error(&r, "shape (3)");
    assert_usage_error(&r, "sum(...) or mean(...)");
    run_free(&r);
}
END_TEST

START_TEST(error_syntax_caret)
{
    run_result r = RUN("hessian", "x * (y +", "x=1", "y=2");

    assert_usage_error(&r, "found the end of the expression");
    assert_usage_error(&r, "  x * (y +\n          ^\n");
    run_free(&r);
}
END_TEST

START_TEST(error_shape_mismatch)
{
    run_result r = RUN("hessian", "sum(x @ W)", "x=[[1,2,3]]", "W=[[1,2],[3,4]]");

    assert_usage_error(&r, "ag_matmul");
    assert_usage_error(&r, "  sum(x @ W)\n        ^\n");
    run_free(&r);
}
END_TEST

START_TEST(error_unknown_name)
{
    run_result r = RUN("hessian", "x + z", "x=1");

    assert_usage_error(&r, "unknown name 'z'");
    run_free(&r);
}
END_TEST

START_TEST(error_bad_binding)
{
    run_result r = RUN("hessian", "sum(W)", "W=[[1,2],[3]]");

    assert_usage_error(&r, "invalid binding: ragged list");
    run_free(&r);
}
END_TEST

START_TEST(error_bound_twice)
{
    run_result r = RUN("hessian", "x", "x=1", "x=2");

    assert_usage_error(&r, "x is bound twice");
    run_free(&r);
}
END_TEST

START_TEST(error_bad_label)
{
    run_result r = RUN("hessian", "cross_entropy(z, c)", "z=[[1,2]]", "c=[5]");

    assert_usage_error(&r, "label 5");
    run_free(&r);
}
END_TEST

START_TEST(error_bad_option_value)
{
    run_result r = RUN("hessian", "--format", "yaml", "x", "x=1");

    assert_usage_error(&r, "invalid value 'yaml' for --format");
    run_free(&r);
}
END_TEST

START_TEST(error_unknown_option)
{
    /* --check belongs to grad. */
    run_result r = RUN("hessian", "--check", "x^2", "x=1");

    assert_usage_error(&r, "unknown option '--check'; see tapegrad hessian --help");
    run_free(&r);
}
END_TEST

START_TEST(error_missing_expression)
{
    run_result r = RUN("hessian");

    assert_usage_error(&r, "missing expression");
    run_free(&r);
}
END_TEST

/* ================================================================================ */
/* Help                                                                               */
/* ================================================================================ */

START_TEST(help_hessian)
{
    static const char *const items[] = {
        "Usage: tapegrad hessian", "--dtype", "--format", "\"names\"", "cross_entropy",
        "left out of the Hessian", "tapegrad grad --help", "Exit status",
    };
    run_result r = RUN("hessian", "--help");

    ck_assert_int_eq(r.status, 0);
    for (size_t i = 0; i < sizeof items / sizeof items[0]; i++)
        ck_assert_msg(strstr(r.out, items[i]) != NULL, "hessian --help omits %s", items[i]);
    run_free(&r);
}
END_TEST

START_TEST(help_lists_hessian_and_check2)
{
    run_result r = RUN("--help");

    ck_assert_int_eq(r.status, 0);
    ck_assert_ptr_nonnull(strstr(r.out, "  hessian EXPR NAME=VALUE..."));
    ck_assert_ptr_nonnull(strstr(r.out, "Usage: tapegrad hessian"));
    ck_assert_ptr_nonnull(strstr(r.out, "--check2"));
    run_free(&r);
}
END_TEST

/* ================================================================================ */

static Suite *make_suite(const char *name, const TTest *const *tests, size_t n_tests)
{
    Suite *suite = suite_create(name);
    TCase *tc = tcase_create(name);

    tcase_set_timeout(tc, 60);
    for (size_t i = 0; i < n_tests; i++)
        tcase_add_test(tc, tests[i]);
    suite_add_tcase(suite, tc);
    return suite;
}

#define SUITE(name, ...)                                                              \
    make_suite(name, (const TTest *const[]){__VA_ARGS__},                            \
               sizeof((const TTest *const[]){__VA_ARGS__}) / sizeof(const TTest *))

int main(void)
{
    Suite *hessian = SUITE("hessian", text_polynomial, text_matrix_labels,
                           text_labels_left_out, text_no_variables, json_polynomial_vectors,
                           json_keys_exactly, json_layer_closed_form, json_unused_name_zero,
                           json_no_variables, json_f32, json_numbers_round_trip,
                           loss_cross_entropy, lecture_against_differences, lecture_symmetric,
                           lecture_text_rows, help_hessian, help_lists_hessian_and_check2);
    TCase *losses = tcase_create("losses");
    tcase_add_loop_test(losses, loss_closed_form, 0,
                        (int)(sizeof loss_cases / sizeof loss_cases[0]));
    suite_add_tcase(hessian, losses);

    SRunner *runner = srunner_create(hessian);
    srunner_add_suite(runner, SUITE("check2", check2_json_passes, check2_with_check,
                                    check2_text_passes, check2_losses_pass,
                                    check2_fails_large_step, check2_fails_text,
                                    check2_cannot_run, check2_nan_value_could_not_run,
                                    check2_labels_also_used_elsewhere,
                                    check2_needs_one_element));
    srunner_add_suite(runner, SUITE("hessian_errors", error_vector_value, error_syntax_caret,
                                    error_shape_mismatch, error_unknown_name,
                                    error_bad_binding, error_bound_twice, error_bad_label,
                                    error_bad_option_value, error_unknown_option,
                                    error_missing_expression));

    /* CK_RUN_SUITE picks one suite; meson runs each as its own test. */
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
