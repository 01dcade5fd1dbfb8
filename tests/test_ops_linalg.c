/* Matrix product, the fused layer, transpose and reshape: values and
 * gradients against explicit loops, the BLAS path against the portable
 * kernel, central finite differences, and every error path. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "check_helpers.h"
#include "matmul_kernel.h"

/* ---- references written out as loops -------------------------------------- */

/* C = op(A) op(B) + beta C with op(X)[i][j] read through explicit indexing. */
static void naive_gemm(bool trans_a, bool trans_b, size_t m, size_t n, size_t k,
                       const double *a, const double *b, double beta, double *c)
{
    for (size_t i = 0; i < m; i++) {
        for (size_t j = 0; j < n; j++) {
            double sum = 0.0;

            for (size_t p = 0; p < k; p++) {
                double av = trans_a ? a[p * m + i] : a[i * k + p];
                double bv = trans_b ? b[j * k + p] : b[p * n + j];
                sum += av * bv;
            }
            c[i * n + j] = (beta == 0 ? 0.0 : beta * c[i * n + j]) + sum;
        }
    }
}

static ag_tensor *random_leaf(ag_tape *tape, ag_dtype dtype, int ndim,
                              const size_t *shape, ag_rng *rng)
{
    ag_tensor *t = ag_rand_uniform(tape, dtype, ndim, shape, -1, 1, rng);

    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(ag_tensor_set_requires_grad(t, true), 0);
    return t;
}

static void assert_tensor_close(const ag_tensor *actual, const double *expected,
                                double tol, const char *label)
{
    for (size_t i = 0; i < ag_tensor_numel(actual); i++) {
        char what[128];

        snprintf(what, sizeof what, "%s at %zu", label, i);
        ck_assert_close(ag_tensor_get(actual, i), expected[i], tol, what);
    }
}

static void assert_tensors_close(const ag_tensor *actual, const ag_tensor *expected,
                                 double tol, const char *label)
{
    ck_assert(ag_tensor_same_shape(actual, expected));
    for (size_t i = 0; i < ag_tensor_numel(actual); i++) {
        char what[128];

        snprintf(what, sizeof what, "%s at %zu", label, i);
        ck_assert_close(ag_tensor_get(actual, i), ag_tensor_get(expected, i), tol, what);
    }
}

/* Copies a tensor's elements into doubles. */
static void read_all(const ag_tensor *t, double *out)
{
    for (size_t i = 0; i < ag_tensor_numel(t); i++)
        out[i] = ag_tensor_get(t, i);
}

/* ---- matmul values and gradients ------------------------------------------ */

static void check_matmul(ag_dtype dtype, size_t m, size_t k, size_t n, double tol)
{
    ag_tape *tape = ag_tape_new();
    ag_rng rng = ag_rng_new(3);
    ag_tensor *a = random_leaf(tape, dtype, AG_SHAPE(m, k), &rng);
    ag_tensor *b = random_leaf(tape, dtype, AG_SHAPE(k, n), &rng);
    ag_tensor *g = ag_rand_uniform(tape, dtype, AG_SHAPE(m, n), -1, 1, &rng);
    double av[64 * 64];
    double bv[64 * 64];
    double gv[64 * 64];
    double expected[64 * 64];

    ck_assert_uint_le(m * k, 64 * 64);
    ck_assert_uint_le(k * n, 64 * 64);
    ck_assert_uint_le(m * n, 64 * 64);
    read_all(a, av);
    read_all(b, bv);
    read_all(g, gv);

    ag_tensor *c = ag_matmul(tape, a, b);
    ck_assert_msg(c != NULL, "%s", ag_error());
    ck_assert_uint_eq(ag_tensor_dim(c, 0), m);
    ck_assert_uint_eq(ag_tensor_dim(c, 1), n);
    naive_gemm(false, false, m, n, k, av, bv, 0.0, expected);
    assert_tensor_close(c, expected, tol, "C = AB");

    ck_assert_int_eq(ag_backward(tape, c, g), 0);

    /* dA = G B^T and dB = A^T G. */
    naive_gemm(false, true, m, k, n, gv, bv, 0.0, expected);
    assert_tensor_close(ag_tensor_grad(a), expected, tol, "dA = G B^T");
    naive_gemm(true, false, k, n, m, av, gv, 0.0, expected);
    assert_tensor_close(ag_tensor_grad(b), expected, tol, "dB = A^T G");
    ag_tape_free(tape);
}

START_TEST(matmul_f64)
{
    check_matmul(AG_F64, 3, 4, 5, 1e-12);
    check_matmul(AG_F64, 1, 1, 1, 1e-12);
    check_matmul(AG_F64, 64, 1, 20, 1e-12);
    check_matmul(AG_F64, 17, 33, 5, 1e-12);
    check_matmul(AG_F64, 40, 50, 60, 1e-12);
}
END_TEST

START_TEST(matmul_f32)
{
    check_matmul(AG_F32, 3, 4, 5, 1e-5);
    check_matmul(AG_F32, 17, 33, 5, 1e-5);
    check_matmul(AG_F32, 40, 50, 60, 1e-5);
}
END_TEST

/* ---- the kernels side by side --------------------------------------------- */

typedef struct gemm_size {
    size_t m, n, k;
} gemm_size;

/* Odd sizes, sizes that cross the block edges, one-column products and
 * zero-size dimensions. */
static const gemm_size kernel_sizes[] = {
    {17, 5, 33}, {1, 1, 1}, {64, 20, 1}, {3, 1, 7}, {1, 3, 7},   {2, 300, 150},
    {70, 40, 130}, {5, 37, 3}, {0, 4, 3}, {4, 0, 3}, {4, 3, 0},  {0, 0, 0},
};
#define N_KERNEL_SIZES ((int)(sizeof kernel_sizes / sizeof kernel_sizes[0]))

#define KERNEL_MAX (300 * 150)

/* Fills the operands and C with random values. When beta is 0, C contains
 * NaN, which the kernel must overwrite without reading it. */
static void fill_operands(ag_rng *rng, double *a, double *b, double *c, size_t n_c,
                          double beta)
{
    for (size_t i = 0; i < KERNEL_MAX; i++) {
        a[i] = 2 * ag_rng_uniform(rng) - 1;
        b[i] = 2 * ag_rng_uniform(rng) - 1;
    }
    for (size_t i = 0; i < n_c; i++)
        c[i] = beta == 0 ? NAN : 2 * ag_rng_uniform(rng) - 1;
}

typedef void (*gemm_f64_fn)(bool, bool, size_t, size_t, size_t, const double *,
                            size_t, const double *, size_t, double, double *, size_t);
typedef void (*gemm_f32_fn)(bool, bool, size_t, size_t, size_t, const float *,
                            size_t, const float *, size_t, float, float *, size_t);

/* Runs an f64 kernel against the naive loop for every size, transpose case
 * and beta in {0, 1}. */
static void check_kernel_f64(gemm_f64_fn gemm, const char *label, double tol)
{
    static double a[KERNEL_MAX];
    static double b[KERNEL_MAX];
    static double c[KERNEL_MAX];
    static double expected[KERNEL_MAX];
    ag_rng rng = ag_rng_new(5);

    for (int s = 0; s < N_KERNEL_SIZES; s++) {
        const gemm_size *z = &kernel_sizes[s];

        for (int t = 0; t < 8; t++) {
            bool trans_a = t & 1;
            bool trans_b = t & 2;
            double beta = t & 4 ? 1.0 : 0.0;
            char what[128];

            fill_operands(&rng, a, b, c, z->m * z->n, beta);
            memcpy(expected, c, z->m * z->n * sizeof(double));
            naive_gemm(trans_a, trans_b, z->m, z->n, z->k, a, b, beta, expected);
            gemm(trans_a, trans_b, z->m, z->n, z->k, a, trans_a ? z->m : z->k, b,
                 trans_b ? z->k : z->n, beta, c, z->n);
            for (size_t i = 0; i < z->m * z->n; i++) {
                snprintf(what, sizeof what, "%s %zux%zux%zu ta=%d tb=%d beta=%g at %zu",
                         label, z->m, z->k, z->n, trans_a, trans_b, beta, i);
                ck_assert_close(c[i], expected[i], tol, what);
            }
        }
    }
}

/* The f32 kernels against the naive loop in double on the same f32 inputs. */
static void check_kernel_f32(gemm_f32_fn gemm, const char *label, double tol)
{
    static double a[KERNEL_MAX];
    static double b[KERNEL_MAX];
    static double c[KERNEL_MAX];
    static double expected[KERNEL_MAX];
    static float af[KERNEL_MAX];
    static float bf[KERNEL_MAX];
    static float cf[KERNEL_MAX];
    ag_rng rng = ag_rng_new(6);

    for (int s = 0; s < N_KERNEL_SIZES; s++) {
        const gemm_size *z = &kernel_sizes[s];

        for (int t = 0; t < 8; t++) {
            bool trans_a = t & 1;
            bool trans_b = t & 2;
            double beta = t & 4 ? 1.0 : 0.0;
            char what[128];

            fill_operands(&rng, a, b, c, z->m * z->n, beta);
            for (size_t i = 0; i < KERNEL_MAX; i++) {
                af[i] = (float)a[i];
                bf[i] = (float)b[i];
                a[i] = af[i];
                b[i] = bf[i];
            }
            for (size_t i = 0; i < z->m * z->n; i++) {
                cf[i] = (float)c[i];
                expected[i] = cf[i];
            }
            naive_gemm(trans_a, trans_b, z->m, z->n, z->k, a, b, beta, expected);
            gemm(trans_a, trans_b, z->m, z->n, z->k, af, trans_a ? z->m : z->k, bf,
                 trans_b ? z->k : z->n, (float)beta, cf, z->n);
            for (size_t i = 0; i < z->m * z->n; i++) {
                snprintf(what, sizeof what, "%s %zux%zux%zu ta=%d tb=%d beta=%g at %zu",
                         label, z->m, z->k, z->n, trans_a, trans_b, beta, i);
                /* f32 sums of up to 150 products, each at most 1 in size. */
                ck_assert_close(cf[i], expected[i], tol, what);
            }
        }
    }
}

START_TEST(portable_kernel)
{
    check_kernel_f64(ag_gemm_portable_f64, "portable f64", 1e-13);
    check_kernel_f32(ag_gemm_portable_f32, "portable f32", 2e-5);
}
END_TEST

START_TEST(dispatching_kernel)
{
    check_kernel_f64(ag_gemm_f64, "dispatch f64", 1e-13);
    check_kernel_f32(ag_gemm_f32, "dispatch f32", 2e-5);
}
END_TEST

#ifdef AG_HAVE_CBLAS
START_TEST(blas_kernel)
{
    check_kernel_f64(ag_gemm_blas_f64, "blas f64", 1e-13);
    check_kernel_f32(ag_gemm_blas_f32, "blas f32", 2e-5);
}
END_TEST

START_TEST(blas_matches_portable)
{
    /* 17x33 @ 33x5 and its transposed layouts, in both precisions. */
    double a[17 * 33];
    double b[33 * 5];
    double c_blas[17 * 5];
    double c_portable[17 * 5];
    float af[17 * 33];
    float bf[33 * 5];
    float cf_blas[17 * 5];
    float cf_portable[17 * 5];
    ag_rng rng = ag_rng_new(9);

    for (size_t i = 0; i < 17 * 33; i++) {
        a[i] = ag_rng_normal(&rng);
        af[i] = (float)a[i];
    }
    for (size_t i = 0; i < 33 * 5; i++) {
        b[i] = ag_rng_normal(&rng);
        bf[i] = (float)b[i];
    }
    for (int t = 0; t < 4; t++) {
        bool trans_a = t & 1;
        bool trans_b = t & 2;
        size_t lda = trans_a ? 17 : 33;
        size_t ldb = trans_b ? 33 : 5;

        ag_gemm_blas_f64(trans_a, trans_b, 17, 5, 33, a, lda, b, ldb, 0.0, c_blas, 5);
        ag_gemm_portable_f64(trans_a, trans_b, 17, 5, 33, a, lda, b, ldb, 0.0,
                             c_portable, 5);
        ag_gemm_blas_f32(trans_a, trans_b, 17, 5, 33, af, lda, bf, ldb, 0.0f, cf_blas, 5);
        ag_gemm_portable_f32(trans_a, trans_b, 17, 5, 33, af, lda, bf, ldb, 0.0f,
                             cf_portable, 5);
        for (size_t i = 0; i < 17 * 5; i++) {
            ck_assert_close(c_blas[i], c_portable[i], 1e-13, "f64 blas vs portable");
            ck_assert_close(cf_blas[i], cf_portable[i], 1e-5, "f32 blas vs portable");
        }
    }
}
END_TEST
#endif

/* ---- zero-size products through the op ------------------------------------ */

START_TEST(matmul_zero_inner)
{
    /* (2x0) @ (0x3) is a 2x3 matrix of zeros, and the empty operands get
     * empty gradients. */
    ag_tape *tape = ag_tape_new();
    ag_tensor *a = ag_zeros(tape, AG_F64, AG_SHAPE(2, 0));
    ag_tensor *b = ag_zeros(tape, AG_F64, AG_SHAPE(0, 3));

    ck_assert_int_eq(ag_tensor_set_requires_grad(a, true), 0);
    ck_assert_int_eq(ag_tensor_set_requires_grad(b, true), 0);
    ag_tensor *c = ag_matmul(tape, a, b);
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq(ag_tensor_numel(c), 6);
    for (size_t i = 0; i < 6; i++)
        ck_assert_double_eq(ag_tensor_get(c, i), 0.0);
    ck_assert_int_eq(ag_backward(tape, c, ag_ones(tape, AG_F64, AG_SHAPE(2, 3))), 0);
    ck_assert_uint_eq(ag_tensor_numel(ag_tensor_grad(a)), 0);
    ag_tape_free(tape);
}
END_TEST

START_TEST(matmul_zero_rows)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *a = ag_zeros(tape, AG_F32, AG_SHAPE(0, 3));
    ag_tensor *b = ag_ones(tape, AG_F32, AG_SHAPE(3, 4));

    ck_assert_int_eq(ag_tensor_set_requires_grad(b, true), 0);
    ag_tensor *c = ag_matmul(tape, a, b);
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq(ag_tensor_dim(c, 0), 0);
    ck_assert_uint_eq(ag_tensor_dim(c, 1), 4);
    ck_assert_int_eq(ag_backward(tape, c, ag_zeros(tape, AG_F32, AG_SHAPE(0, 4))), 0);
    for (size_t i = 0; i < 12; i++)
        ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(b), i), 0.0);
    ag_tape_free(tape);
}
END_TEST

/* ---- linear, transpose, reshape ------------------------------------------- */

/* ag_linear against ag_add(ag_matmul(x, W), b) on a second tape. */
static void check_linear(ag_dtype dtype, int b_ndim, double tol)
{
    const size_t m = 6;
    const size_t k = 5;
    const size_t n = 4;
    const size_t b_shape[2] = {b_ndim == 1 ? n : 1, n};
    ag_rng rng = ag_rng_new(13);
    ag_tensor *x = random_leaf(NULL, dtype, AG_SHAPE(m, k), &rng);
    ag_tensor *w = random_leaf(NULL, dtype, AG_SHAPE(k, n), &rng);
    ag_tensor *b = random_leaf(NULL, dtype, b_ndim, b_ndim == 1 ? &b_shape[0] : b_shape,
                               &rng);
    ag_tensor *g = ag_rand_uniform(NULL, dtype, AG_SHAPE(m, n), -1, 1, &rng);

    ag_tape *fused_tape = ag_tape_new();
    ag_tensor *fused = ag_linear(fused_tape, x, w, b);
    ck_assert_msg(fused != NULL, "%s", ag_error());
    ck_assert_int_eq(ag_backward(fused_tape, fused, g), 0);
    ag_tensor *gx = ag_tensor_copy(NULL, ag_tensor_grad(x), dtype);
    ag_tensor *gw = ag_tensor_copy(NULL, ag_tensor_grad(w), dtype);
    ag_tensor *gb = ag_tensor_copy(NULL, ag_tensor_grad(b), dtype);
    ag_tensor_zero_grad(x);
    ag_tensor_zero_grad(w);
    ag_tensor_zero_grad(b);

    ag_tape *tape = ag_tape_new();
    ag_tensor *composed = ag_add(tape, ag_matmul(tape, x, w), b);
    ck_assert_msg(composed != NULL, "%s", ag_error());
    ck_assert_int_eq(ag_backward(tape, composed, g), 0);

    assert_tensors_close(fused, composed, tol, "linear value");
    assert_tensors_close(gx, ag_tensor_grad(x), tol, "linear dx");
    assert_tensors_close(gw, ag_tensor_grad(w), tol, "linear dW");
    assert_tensors_close(gb, ag_tensor_grad(b), tol, "linear db");

    ag_tape_free(fused_tape);
    ag_tape_free(tape);
    ag_tensor_free(gx);
    ag_tensor_free(gw);
    ag_tensor_free(gb);
    ag_tensor_free(g);
    ag_tensor_free(x);
    ag_tensor_free(w);
    ag_tensor_free(b);
}

START_TEST(linear_equals_matmul_add)
{
    check_linear(AG_F64, 1, 1e-12);
    check_linear(AG_F64, 2, 1e-12);
    check_linear(AG_F32, 1, 1e-5);
    check_linear(AG_F32, 2, 1e-5);
}
END_TEST

START_TEST(linear_bias_gradient)
{
    /* db is the column sums of the seed, written out. */
    const double seed[] = {1, 2, 3, 4, 5, 6};
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_ones(tape, AG_F64, AG_SHAPE(2, 2));
    ag_tensor *w = ag_ones(tape, AG_F64, AG_SHAPE(2, 3));
    ag_tensor *b = ag_zeros(tape, AG_F64, AG_SHAPE(3));

    ck_assert_int_eq(ag_tensor_set_requires_grad(b, true), 0);
    ag_tensor *s = ag_linear(tape, x, w, b);
    ck_assert_int_eq(ag_backward(tape, s, ag_tensor_from_doubles(tape, AG_F64,
                                                                 AG_SHAPE(2, 3), seed)),
                     0);
    ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(b), 0), 1.0 + 4.0);
    ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(b), 1), 2.0 + 5.0);
    ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(b), 2), 3.0 + 6.0);
    ck_assert_ptr_null(ag_tensor_grad(x));
    ag_tape_free(tape);
}
END_TEST

START_TEST(transpose_value_and_gradient)
{
    ag_tape *tape = ag_tape_new();
    ag_rng rng = ag_rng_new(17);
    const size_t rows = 37;
    const size_t cols = 45; /* both cross the tile edge */
    ag_tensor *x = random_leaf(tape, AG_F64, AG_SHAPE(rows, cols), &rng);
    ag_tensor *g = ag_rand_uniform(tape, AG_F64, AG_SHAPE(cols, rows), -1, 1, &rng);

    ag_tensor *y = ag_transpose(tape, x);
    ck_assert_ptr_nonnull(y);
    ck_assert_uint_eq(ag_tensor_dim(y, 0), cols);
    ck_assert_uint_eq(ag_tensor_dim(y, 1), rows);
    ck_assert_int_eq(ag_backward(tape, y, g), 0);
    for (size_t i = 0; i < rows; i++) {
        for (size_t j = 0; j < cols; j++) {
            ck_assert_double_eq(ag_tensor_get(y, j * rows + i), ag_tensor_get(x, i * cols + j));
            ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(x), i * cols + j),
                                ag_tensor_get(g, j * rows + i));
        }
    }
    ag_tape_free(tape);
}
END_TEST

START_TEST(reshape_value_and_gradient)
{
    ag_tape *tape = ag_tape_new();
    ag_rng rng = ag_rng_new(19);
    ag_tensor *x = random_leaf(tape, AG_F32, AG_SHAPE(2, 6), &rng);
    ag_tensor *g = ag_rand_uniform(tape, AG_F32, AG_SHAPE(3, 1, 4), -1, 1, &rng);

    ag_tensor *y = ag_reshape(tape, x, AG_SHAPE(3, 1, 4));
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(ag_tensor_ndim(y), 3);
    ck_assert_uint_eq(ag_tensor_dim(y, 0), 3);
    ck_assert_uint_eq(ag_tensor_dim(y, 1), 1);
    ck_assert_uint_eq(ag_tensor_dim(y, 2), 4);
    ck_assert_int_eq(ag_backward(tape, y, g), 0);
    for (size_t i = 0; i < 12; i++) {
        ck_assert_float_eq(ag_tensor_get(y, i), ag_tensor_get(x, i));
        ck_assert_float_eq(ag_tensor_get(ag_tensor_grad(x), i), ag_tensor_get(g, i));
    }

    /* A second call adds to the leaf's gradient. */
    ck_assert_int_eq(ag_backward(tape, y, g), 0);
    for (size_t i = 0; i < 12; i++)
        ck_assert_float_eq(ag_tensor_get(ag_tensor_grad(x), i), 2 * ag_tensor_get(g, i));
    ag_tape_free(tape);
}
END_TEST

START_TEST(reshape_six_dims)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_ones(tape, AG_F64, AG_SHAPE(64));

    ag_tensor *y = ag_reshape(tape, x, AG_SHAPE(2, 2, 2, 2, 2, 2));
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(ag_tensor_ndim(y), 6);
    for (int d = 0; d < 6; d++)
        ck_assert_uint_eq(ag_tensor_dim(y, d), 2);
    ag_tape_free(tape);
}
END_TEST

/* ---- central finite differences ------------------------------------------- */

typedef ag_tensor *(*build_fn)(ag_tape *tape, ag_tensor *const *inputs);

static ag_tensor *build_matmul(ag_tape *tape, ag_tensor *const *in)
{
    return ag_matmul(tape, in[0], in[1]);
}

static ag_tensor *build_linear(ag_tape *tape, ag_tensor *const *in)
{
    return ag_linear(tape, in[0], in[1], in[2]);
}

static ag_tensor *build_reshape(ag_tape *tape, ag_tensor *const *in)
{
    return ag_reshape(tape, in[0], AG_SHAPE(3, 1, 2));
}

/* x^T reshaped to a column, times a row: exercises both shape ops. */
static ag_tensor *build_shape_ops(ag_tape *tape, ag_tensor *const *in)
{
    ag_tensor *column = ag_reshape(tape, ag_transpose(tape, in[0]), AG_SHAPE(6, 1));
    return ag_matmul(tape, column, in[1]);
}

static double weighted_output(build_fn f, ag_tensor *const *inputs, const ag_tensor *seed)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *y = f(tape, inputs);
    double total = 0.0;

    ck_assert_ptr_nonnull(y);
    for (size_t i = 0; i < ag_tensor_numel(y); i++)
        total += ag_tensor_get(seed, i) * ag_tensor_get(y, i);
    ag_tape_free(tape);
    return total;
}

/* Compares every input's gradient of sum(seed * f) with central differences. */
static void check_fd(build_fn f, int n_inputs, ag_tensor *const *inputs, const char *label)
{
    const double h = 1e-6;
    ag_rng rng = ag_rng_new(23);
    ag_tape *tape = ag_tape_new();
    ag_tensor *y = f(tape, inputs);

    ck_assert_msg(y != NULL, "%s", ag_error());
    ag_tensor *seed = ag_rand_uniform(NULL, AG_F64, ag_tensor_ndim(y), ag_tensor_shape(y),
                                      -1, 1, &rng);
    ck_assert_int_eq(ag_backward(tape, y, seed), 0);

    for (int k = 0; k < n_inputs; k++) {
        ag_tensor *x = inputs[k];

        for (size_t i = 0; i < ag_tensor_numel(x); i++) {
            double x0 = ag_tensor_get(x, i);
            char what[128];

            ag_tensor_set(x, i, x0 + h);
            double plus = weighted_output(f, inputs, seed);
            ag_tensor_set(x, i, x0 - h);
            double minus = weighted_output(f, inputs, seed);
            ag_tensor_set(x, i, x0);

            snprintf(what, sizeof what, "%s input %d at %zu", label, k, i);
            ck_assert_close(ag_tensor_get(ag_tensor_grad(x), i), (plus - minus) / (2 * h),
                            1e-6, what);
        }
    }
    ag_tape_free(tape);
    ag_tensor_free(seed);
}

START_TEST(finite_differences)
{
    ag_rng rng = ag_rng_new(29);
    ag_tensor *a = random_leaf(NULL, AG_F64, AG_SHAPE(3, 4), &rng);
    ag_tensor *b = random_leaf(NULL, AG_F64, AG_SHAPE(4, 5), &rng);
    ag_tensor *bias = random_leaf(NULL, AG_F64, AG_SHAPE(1, 5), &rng);
    ag_tensor *x = random_leaf(NULL, AG_F64, AG_SHAPE(2, 3), &rng);
    ag_tensor *row = random_leaf(NULL, AG_F64, AG_SHAPE(1, 4), &rng);

    ag_tensor *matmul_inputs[2] = {a, b};
    check_fd(build_matmul, 2, matmul_inputs, "matmul");
    ag_tensor_zero_grad(a);
    ag_tensor_zero_grad(b);

    ag_tensor *linear_inputs[3] = {a, b, bias};
    check_fd(build_linear, 3, linear_inputs, "linear");

    ag_tensor *shape_inputs[2] = {x, row};
    check_fd(build_shape_ops, 2, shape_inputs, "transpose and reshape");

    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_tensor_free(bias);
    ag_tensor_free(x);
    ag_tensor_free(row);
}
END_TEST

/* Runs backward twice and checks that every input's gradient doubled, so no
 * backward rule overwrites an adjoint that already contains a contribution. */
static void check_accumulates(build_fn f, int n_inputs, ag_tensor *const *inputs,
                              const char *label)
{
    ag_rng rng = ag_rng_new(37);
    ag_tape *tape = ag_tape_new();
    ag_tensor *y = f(tape, inputs);
    double first[AG_MAX_INPUTS][64];

    for (int k = 0; k < n_inputs; k++)
        ag_tensor_zero_grad(inputs[k]);

    ck_assert_msg(y != NULL, "%s", ag_error());
    ag_tensor *seed = ag_rand_uniform(tape, AG_F64, ag_tensor_ndim(y), ag_tensor_shape(y),
                                      -1, 1, &rng);
    ck_assert_int_eq(ag_backward(tape, y, seed), 0);
    for (int k = 0; k < n_inputs; k++) {
        ck_assert_uint_le(ag_tensor_numel(inputs[k]), 64);
        for (size_t i = 0; i < ag_tensor_numel(inputs[k]); i++)
            first[k][i] = ag_tensor_get(ag_tensor_grad(inputs[k]), i);
    }

    ck_assert_int_eq(ag_backward(tape, y, seed), 0);
    for (int k = 0; k < n_inputs; k++) {
        for (size_t i = 0; i < ag_tensor_numel(inputs[k]); i++) {
            char what[128];

            snprintf(what, sizeof what, "%s input %d at %zu after two calls", label, k, i);
            ck_assert_close(ag_tensor_get(ag_tensor_grad(inputs[k]), i), 2 * first[k][i],
                            1e-14, what);
        }
    }
    ag_tape_free(tape);
}

START_TEST(grad_accumulates)
{
    ag_rng rng = ag_rng_new(41);
    ag_tensor *a = random_leaf(NULL, AG_F64, AG_SHAPE(3, 4), &rng);
    ag_tensor *b = random_leaf(NULL, AG_F64, AG_SHAPE(4, 5), &rng);
    ag_tensor *bias = random_leaf(NULL, AG_F64, AG_SHAPE(5), &rng);
    ag_tensor *x = random_leaf(NULL, AG_F64, AG_SHAPE(2, 3), &rng);
    ag_tensor *row = random_leaf(NULL, AG_F64, AG_SHAPE(1, 4), &rng);

    ag_tensor *matmul_inputs[2] = {a, b};
    check_accumulates(build_matmul, 2, matmul_inputs, "matmul");
    ag_tensor *linear_inputs[3] = {a, b, bias};
    check_accumulates(build_linear, 3, linear_inputs, "linear");
    ag_tensor *shape_inputs[2] = {x, row};
    check_accumulates(build_shape_ops, 2, shape_inputs, "transpose and reshape");
    check_accumulates(build_reshape, 1, shape_inputs, "reshape");

    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_tensor_free(bias);
    ag_tensor_free(x);
    ag_tensor_free(row);
}
END_TEST

/* ---- errors --------------------------------------------------------------- */

START_TEST(matmul_inner_mismatch)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *a = ag_zeros(tape, AG_F64, AG_SHAPE(4, 3));
    ag_tensor *b = ag_zeros(tape, AG_F64, AG_SHAPE(4, 4));

    ck_assert_error_contains(ag_matmul(tape, a, b),
                             "ag_matmul: inner dimensions differ: (4x3) @ (4x4); the "
                             "first operand's columns must equal the second's rows");
    ag_tape_free(tape);
}
END_TEST

START_TEST(matmul_not_2d)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *a = ag_zeros(tape, AG_F64, AG_SHAPE(2, 3, 4));
    ag_tensor *b = ag_zeros(tape, AG_F64, AG_SHAPE(4, 5));
    ag_tensor *v = ag_zeros(tape, AG_F64, AG_SHAPE(4));

    ck_assert_error_contains(ag_matmul(tape, a, b), "ag_matmul: operands must be 2-D, "
                                                    "got (2x3x4) @ (4x5)");
    ck_assert_error_contains(ag_matmul(tape, b, v), "got (4x5) @ (4)");
    ag_tape_free(tape);
}
END_TEST

START_TEST(matmul_dtype_mismatch)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *a = ag_zeros(tape, AG_F32, AG_SHAPE(2, 2));
    ag_tensor *b = ag_zeros(tape, AG_F64, AG_SHAPE(2, 2));

    ck_assert_error_contains(ag_matmul(tape, a, b), "ag_matmul: dtypes differ: f32 and f64");
    ck_assert_error_contains(ag_linear(tape, b, b, a), "ag_linear: dtypes differ: f64 and f32");
    ag_tape_free(tape);
}
END_TEST

START_TEST(linear_shape_errors)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_zeros(tape, AG_F64, AG_SHAPE(2, 3));
    ag_tensor *w = ag_zeros(tape, AG_F64, AG_SHAPE(3, 4));
    ag_tensor *b = ag_zeros(tape, AG_F64, AG_SHAPE(4));
    ag_tensor *v = ag_zeros(tape, AG_F64, AG_SHAPE(3));
    ag_tensor *w_wrong = ag_zeros(tape, AG_F64, AG_SHAPE(5, 4));
    ag_tensor *b_column = ag_zeros(tape, AG_F64, AG_SHAPE(4, 1));

    ck_assert_error_contains(ag_linear(tape, v, w, b), "ag_linear: x must be 2-D (batch x "
                                                       "in), got shape (3)");
    ck_assert_error_contains(ag_linear(tape, x, v, b), "ag_linear: W must be 2-D (in x "
                                                       "out), got shape (3)");
    ck_assert_error_contains(ag_linear(tape, x, w_wrong, b),
                             "ag_linear: inner dimensions differ: x (2x3) @ W (5x4)");
    ck_assert_error_contains(ag_linear(tape, x, w, v),
                             "ag_linear: b of shape (3) does not match W of shape (3x4); "
                             "b must have shape (4) or (1x4)");
    ck_assert_error_contains(ag_linear(tape, x, w, b_column), "b of shape (4x1)");
    ag_tape_free(tape);
}
END_TEST

START_TEST(transpose_not_2d)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *v = ag_zeros(tape, AG_F64, AG_SHAPE(3));

    ck_assert_error_contains(ag_transpose(tape, v), "ag_transpose: expects a 2-D tensor, "
                                                    "got shape (3)");
    ag_tape_free(tape);
}
END_TEST

START_TEST(reshape_count_mismatch)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_zeros(tape, AG_F64, AG_SHAPE(2, 3));

    ck_assert_error_contains(ag_reshape(tape, x, AG_SHAPE(4, 2)),
                             "ag_reshape: cannot reshape (2x3) (6 elements) to (4x2) "
                             "(8 elements)");
    ck_assert_error_contains(ag_reshape(tape, x, AG_SHAPE(SIZE_MAX, 2, 3)),
                             "(more than SIZE_MAX elements)");
    ck_assert_error_contains(ag_reshape(tape, x, 0, NULL),
                             "ag_reshape: invalid target shape: 0 dimensions");
    ag_tape_free(tape);
}
END_TEST

START_TEST(null_keeps_error)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *m = ag_zeros(tape, AG_F64, AG_SHAPE(2, 2));

    ag_set_error("first failure");
    ck_assert_ptr_null(ag_matmul(tape, m, NULL));
    ck_assert_ptr_null(ag_matmul(tape, NULL, m));
    ck_assert_ptr_null(ag_linear(tape, m, m, NULL));
    ck_assert_ptr_null(ag_linear(tape, NULL, m, m));
    ck_assert_ptr_null(ag_transpose(tape, NULL));
    ck_assert_ptr_null(ag_reshape(tape, NULL, AG_SHAPE(4)));
    ck_assert_str_eq(ag_error(), "first failure");
    ag_tape_free(tape);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("ops_linalg");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, matmul_f64);
    tcase_add_test(tc, matmul_f32);
    tcase_add_test(tc, portable_kernel);
    tcase_add_test(tc, dispatching_kernel);
#ifdef AG_HAVE_CBLAS
    tcase_add_test(tc, blas_kernel);
    tcase_add_test(tc, blas_matches_portable);
#endif
    tcase_add_test(tc, matmul_zero_inner);
    tcase_add_test(tc, matmul_zero_rows);
    tcase_add_test(tc, linear_equals_matmul_add);
    tcase_add_test(tc, linear_bias_gradient);
    tcase_add_test(tc, transpose_value_and_gradient);
    tcase_add_test(tc, reshape_value_and_gradient);
    tcase_add_test(tc, reshape_six_dims);
    tcase_add_test(tc, finite_differences);
    tcase_add_test(tc, grad_accumulates);
    tcase_add_test(tc, matmul_inner_mismatch);
    tcase_add_test(tc, matmul_not_2d);
    tcase_add_test(tc, matmul_dtype_mismatch);
    tcase_add_test(tc, linear_shape_errors);
    tcase_add_test(tc, transpose_not_2d);
    tcase_add_test(tc, reshape_count_mismatch);
    tcase_add_test(tc, null_keeps_error);
    suite_add_tcase(suite, tc);
    return run_suite(suite);
}
