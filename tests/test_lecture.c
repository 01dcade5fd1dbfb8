/*
 * The lecture's network x -> S1 = xW1 + b1 -> Z1 = h(S1) -> S2 = Z1W2 + b2
 * -> Z2 = h(S2) -> f = Z2W3 + b3 with L = (y - f)^2, for h = ReLU and
 * h = sigmoid. Every derivative the lecture derives by hand is computed here
 * from its formula, in plain C doubles, and compared with the tape's
 * adjoint to 1e-12:
 *   dL/df  = -2(y - f)          dL/dW3 = Z2^T dL/df     dL/db3 = dL/df
 *   dL/dZ2 = dL/df W3^T         dL/dS2 = dL/dZ2 * h'(S2)
 *   dL/dW2 = Z1^T dL/dS2        dL/db2 = dL/dS2         dL/dZ1 = dL/dS2 W2^T
 *   and the exercise: dL/dS1 = dL/dZ1 * h'(S1), dL/dW1 = x^T dL/dS1,
 *   dL/db1 = dL/dS1.
 * With row vectors the lecture's products "dL/df Z2" become Z2^T dL/df. For a
 * batch of rows, L sums (y - f)^2 over the rows and each bias gradient sums
 * its rows.
 */
#include <math.h>
#include <string.h>

#include "check_helpers.h"

#define MAX_UNITS 8
#define MAX_ROWS 4

typedef enum { H_RELU, H_SIGMOID } activation;

static double h(activation act, double s)
{
    if (act == H_SIGMOID)
        return 1.0 / (1.0 + exp(-s));
    return s > 0 ? s : 0;
}

static double h_prime(activation act, double s)
{
    if (act == H_RELU)
        return s > 0 ? 1.0 : 0.0;
    double z = 1.0 / (1.0 + exp(-s));
    return z * (1 - z);
}

/* Sizes: x is rows x n_in, W1 n_in x n_hidden, W2 n_hidden x n_hidden,
 * W3 n_hidden x 1. */
typedef struct network {
    int rows, n_in, n_hidden;
    double x[MAX_ROWS][MAX_UNITS], y[MAX_ROWS];
    double w1[MAX_UNITS][MAX_UNITS], b1[MAX_UNITS];
    double w2[MAX_UNITS][MAX_UNITS], b2[MAX_UNITS];
    double w3[MAX_UNITS], b3;
} network;

/* Hand-derived forward and backward values, following the lecture. */
typedef struct derivation {
    double s1[MAX_ROWS][MAX_UNITS], z1[MAX_ROWS][MAX_UNITS];
    double s2[MAX_ROWS][MAX_UNITS], z2[MAX_ROWS][MAX_UNITS], f[MAX_ROWS];
    double loss;
    double df[MAX_ROWS], dw3[MAX_UNITS], db3;
    double dz2[MAX_ROWS][MAX_UNITS], ds2[MAX_ROWS][MAX_UNITS];
    double dw2[MAX_UNITS][MAX_UNITS], db2[MAX_UNITS], dz1[MAX_ROWS][MAX_UNITS];
    double ds1[MAX_ROWS][MAX_UNITS], dw1[MAX_UNITS][MAX_UNITS], db1[MAX_UNITS];
} derivation;

static void derive(const network *n, activation act, derivation *d)
{
    memset(d, 0, sizeof *d);

    /* Forward pass. */
    for (int r = 0; r < n->rows; r++) {
        for (int j = 0; j < n->n_hidden; j++) {
            d->s1[r][j] = n->b1[j];
            for (int i = 0; i < n->n_in; i++)
                d->s1[r][j] += n->x[r][i] * n->w1[i][j];
            d->z1[r][j] = h(act, d->s1[r][j]);
        }
        for (int j = 0; j < n->n_hidden; j++) {
            d->s2[r][j] = n->b2[j];
            for (int i = 0; i < n->n_hidden; i++)
                d->s2[r][j] += d->z1[r][i] * n->w2[i][j];
            d->z2[r][j] = h(act, d->s2[r][j]);
        }
        d->f[r] = n->b3;
        for (int i = 0; i < n->n_hidden; i++)
            d->f[r] += d->z2[r][i] * n->w3[i];
        d->loss += (n->y[r] - d->f[r]) * (n->y[r] - d->f[r]);
    }

    /* Output layer: dL/df = -2(y - f), dL/dW3 = dL/df Z2, dL/db3 = dL/df. */
    for (int r = 0; r < n->rows; r++) {
        d->df[r] = -2 * (n->y[r] - d->f[r]);
        d->db3 += d->df[r];
        for (int i = 0; i < n->n_hidden; i++) {
            d->dw3[i] += d->z2[r][i] * d->df[r];
            d->dz2[r][i] = d->df[r] * n->w3[i];
            d->ds2[r][i] = d->dz2[r][i] * h_prime(act, d->s2[r][i]);
        }
    }

    /* Second layer: dL/dW2 = dL/dS2 Z1, dL/db2 = dL/dS2, dL/dZ1 = dL/dS2 W2. */
    for (int r = 0; r < n->rows; r++) {
        for (int j = 0; j < n->n_hidden; j++) {
            d->db2[j] += d->ds2[r][j];
            for (int i = 0; i < n->n_hidden; i++) {
                d->dw2[i][j] += d->z1[r][i] * d->ds2[r][j];
                d->dz1[r][i] += d->ds2[r][j] * n->w2[i][j];
            }
        }
    }

    /* The exercise: dL/dS1 = dL/dZ1 h'(S1), dL/dW1 = dL/dS1 x, dL/db1 = dL/dS1. */
    for (int r = 0; r < n->rows; r++) {
        for (int j = 0; j < n->n_hidden; j++) {
            d->ds1[r][j] = d->dz1[r][j] * h_prime(act, d->s1[r][j]);
            d->db1[j] += d->ds1[r][j];
            for (int i = 0; i < n->n_in; i++)
                d->dw1[i][j] += n->x[r][i] * d->ds1[r][j];
        }
    }
}

/* Tensors of the taped network, kept to read their adjoints. */
typedef struct taped {
    ag_tensor *w1, *b1, *w2, *b2, *w3, *b3;
    ag_tensor *s1, *z1, *s2, *z2, *f, *loss;
} taped;

static ag_tensor *matrix(ag_tape *tape, int rows, int cols, const double *data, int stride)
{
    ag_tensor *t = ag_zeros(tape, AG_F64, AG_SHAPE((size_t)rows, (size_t)cols));

    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++)
            ag_tensor_set(t, (size_t)(r * cols + c), data[r * stride + c]);
    }
    return t;
}

static ag_tensor *param(ag_tape *tape, int rows, int cols, const double *data, int stride)
{
    ag_tensor *t = matrix(tape, rows, cols, data, stride);

    ck_assert_int_eq(ag_tensor_set_requires_grad(t, true), 0);
    return t;
}

static ag_tensor *apply_h(ag_tape *tape, activation act, ag_tensor *s)
{
    return act == H_RELU ? ag_relu(tape, s) : ag_sigmoid(tape, s);
}

static void run_tape(ag_tape *tape, const network *n, activation act, taped *t)
{
    ag_tensor *x = matrix(tape, n->rows, n->n_in, &n->x[0][0], MAX_UNITS);
    ag_tensor *y = matrix(tape, n->rows, 1, n->y, 1);

    t->w1 = param(tape, n->n_in, n->n_hidden, &n->w1[0][0], MAX_UNITS);
    t->b1 = param(tape, 1, n->n_hidden, n->b1, MAX_UNITS);
    t->w2 = param(tape, n->n_hidden, n->n_hidden, &n->w2[0][0], MAX_UNITS);
    t->b2 = param(tape, 1, n->n_hidden, n->b2, MAX_UNITS);
    t->w3 = param(tape, n->n_hidden, 1, n->w3, 1);
    t->b3 = param(tape, 1, 1, &n->b3, 1);

    t->s1 = ag_add(tape, ag_matmul(tape, x, t->w1), t->b1);
    t->z1 = apply_h(tape, act, t->s1);
    t->s2 = ag_add(tape, ag_matmul(tape, t->z1, t->w2), t->b2);
    t->z2 = apply_h(tape, act, t->s2);
    t->f = ag_add(tape, ag_matmul(tape, t->z2, t->w3), t->b3);
    ag_tensor *residual = ag_sub(tape, y, t->f);
    t->loss = ag_sum(tape, ag_mul(tape, residual, residual));
    ck_assert_ptr_nonnull(t->loss);
    ck_assert_int_eq(ag_backward(tape, t->loss, NULL), 0);
}

/* Compares the adjoint of t with expected (rows x cols, row stride). */
static void expect_grad(const char *what, const ag_tensor *t, int rows, int cols,
                        const double *expected, int stride)
{
    const ag_tensor *grad = ag_tensor_grad(t);

    ck_assert_msg(grad != NULL, "%s: no adjoint", what);
    ck_assert_uint_eq(ag_tensor_numel(grad), (size_t)(rows * cols));
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++) {
            char label[64];
            snprintf(label, sizeof label, "%s[%d,%d]", what, r, c);
            ck_assert_close(ag_tensor_get(grad, (size_t)(r * cols + c)),
                            expected[r * stride + c], 1e-12, label);
        }
    }
}

static void check_network(const network *n, activation act)
{
    derivation d;
    taped t;
    ag_tape *tape = ag_tape_new();
    int rows = n->rows;
    int hidden = n->n_hidden;

    derive(n, act, &d);
    run_tape(tape, n, act, &t);

    ck_assert_close(ag_tensor_item(t.loss), d.loss, 1e-12, "L");
    expect_grad("dL/df", t.f, rows, 1, d.df, 1);
    expect_grad("dL/dW3", t.w3, hidden, 1, d.dw3, 1);
    expect_grad("dL/db3", t.b3, 1, 1, &d.db3, 1);
    expect_grad("dL/dZ2", t.z2, rows, hidden, &d.dz2[0][0], MAX_UNITS);
    expect_grad("dL/dS2", t.s2, rows, hidden, &d.ds2[0][0], MAX_UNITS);
    expect_grad("dL/dW2", t.w2, hidden, hidden, &d.dw2[0][0], MAX_UNITS);
    expect_grad("dL/db2", t.b2, 1, hidden, d.db2, MAX_UNITS);
    expect_grad("dL/dZ1", t.z1, rows, hidden, &d.dz1[0][0], MAX_UNITS);
    expect_grad("dL/dS1", t.s1, rows, hidden, &d.ds1[0][0], MAX_UNITS);
    expect_grad("dL/dW1", t.w1, n->n_in, hidden, &d.dw1[0][0], MAX_UNITS);
    expect_grad("dL/db1", t.b1, 1, hidden, d.db1, MAX_UNITS);
    ag_tape_free(tape);
}

/* Fills a network with deterministic values. The scalar case below uses
 * values chosen so ReLU units are active, because a dead unit would make
 * half the comparisons trivially zero. */
static void fill_network(network *n, int rows, int n_in, int n_hidden, uint64_t seed)
{
    ag_rng rng = ag_rng_new(seed);

    memset(n, 0, sizeof *n);
    n->rows = rows;
    n->n_in = n_in;
    n->n_hidden = n_hidden;
    for (int r = 0; r < rows; r++) {
        n->y[r] = 2 * ag_rng_uniform(&rng) - 1;
        for (int i = 0; i < n_in; i++)
            n->x[r][i] = 2 * ag_rng_uniform(&rng) - 1;
    }
    for (int i = 0; i < MAX_UNITS; i++) {
        n->b1[i] = 0.1 * ag_rng_normal(&rng);
        n->b2[i] = 0.1 * ag_rng_normal(&rng);
        n->w3[i] = ag_rng_normal(&rng);
        for (int j = 0; j < MAX_UNITS; j++) {
            n->w1[i][j] = ag_rng_normal(&rng);
            n->w2[i][j] = ag_rng_normal(&rng);
        }
    }
    n->b3 = 0.05;
}

static void scalar_network(network *n)
{
    memset(n, 0, sizeof *n);
    n->rows = 1;
    n->n_in = 1;
    n->n_hidden = 1;
    n->x[0][0] = 0.8;
    n->y[0] = 1.5;
    n->w1[0][0] = 0.6;
    n->b1[0] = 0.1;
    n->w2[0][0] = -1.2;
    n->b2[0] = 1.0;
    n->w3[0] = 0.9;
    n->b3 = -0.3;
}

START_TEST(scalar_network_relu)
{
    network n;

    scalar_network(&n);
    check_network(&n, H_RELU);
}
END_TEST

START_TEST(scalar_network_sigmoid)
{
    network n;

    scalar_network(&n);
    check_network(&n, H_SIGMOID);
}
END_TEST

START_TEST(vector_layer_relu)
{
    /* The lecture's layer example: x is 1x3, W1 is 3x4, b1 is 1x4. */
    network n;

    fill_network(&n, 1, 3, 4, 11);
    check_network(&n, H_RELU);
}
END_TEST

START_TEST(vector_layer_sigmoid)
{
    network n;

    fill_network(&n, 1, 3, 4, 12);
    check_network(&n, H_SIGMOID);
}
END_TEST

START_TEST(batch_of_rows_relu)
{
    network n;

    fill_network(&n, 4, 3, 4, 13);
    check_network(&n, H_RELU);
}
END_TEST

START_TEST(batch_of_rows_sigmoid)
{
    network n;

    fill_network(&n, 4, 3, 4, 14);
    check_network(&n, H_SIGMOID);
}
END_TEST

START_TEST(scalar_relu_units_active)
{
    /* Guards the scalar case above against dead ReLU units. */
    network n;
    derivation d;

    scalar_network(&n);
    derive(&n, H_RELU, &d);
    ck_assert_double_gt(d.s1[0][0], 0);
    ck_assert_double_gt(d.s2[0][0], 0);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("lecture");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, scalar_network_relu);
    tcase_add_test(tc, scalar_network_sigmoid);
    tcase_add_test(tc, vector_layer_relu);
    tcase_add_test(tc, vector_layer_sigmoid);
    tcase_add_test(tc, batch_of_rows_relu);
    tcase_add_test(tc, batch_of_rows_sigmoid);
    tcase_add_test(tc, scalar_relu_units_active);
    suite_add_tcase(suite, tc);
    return run_suite(suite);
}
