/*
 * Linear algebra: matrix product, the fused layer S = xW + b, transpose and
 * reshape. Products go through one gemm entry point that picks CBLAS or the
 * portable blocked kernel, and backward rules pass transposes to it as flags.
 */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#ifdef AG_HAVE_CBLAS
#include <cblas.h>
#endif

#include "internal.h"
#include "matmul_kernel.h"

/* ---- the portable kernel -------------------------------------------------- */

/* Block sizes, in elements. A block of op(B) (GEMM_KC x GEMM_NC) is reused
 * for every row of op(A) while it sits in the L2 cache, and one row of C
 * (GEMM_NC elements) stays in L1 while the block's rows are added into it.
 * When op(B) = B^T, a smaller block is copied (packed) into a stack buffer
 * of GEMM_KC x GEMM_NC_PACKED elements, 32 KiB for f64, so its rows become
 * contiguous. */
#define GEMM_KC 128
#define GEMM_NC 256
#define GEMM_NC_PACKED 32

/* Products with fewer than GEMM_DOTS_MAX_N columns, whose rows of C are too
 * short to vectorise, take the dot-product loop. So do products against B^T
 * with fewer than GEMM_PACK_MIN_M rows, where packing costs about as much as
 * the arithmetic. */
#define GEMM_DOTS_MAX_N 8
#define GEMM_PACK_MIN_M 4

static size_t min_size(size_t x, size_t y)
{
    return x < y ? x : y;
}

/* The portable kernel for one type. gemm_row adds op(A)[i, p0:p0+kc] times a
 * kc x nc block of op(B) into one row of C. It takes four rows of the block
 * per pass over the C row, which quarters the loads and stores of C, and
 * still adds the products in increasing order of p. */
#define GEMM_PORTABLE(TYPE, SUFFIX)                                               \
    static void gemm_row_##SUFFIX(const TYPE *a_row, size_t a_step,               \
                                  const TYPE *block, size_t ld_block, size_t kc,  \
                                  size_t nc, TYPE *restrict c_row)                \
    {                                                                             \
        size_t p = 0;                                                             \
                                                                                  \
        for (; p + 4 <= kc; p += 4) {                                             \
            const TYPE a0 = a_row[p * a_step];                                    \
            const TYPE a1 = a_row[(p + 1) * a_step];                              \
            const TYPE a2 = a_row[(p + 2) * a_step];                              \
            const TYPE a3 = a_row[(p + 3) * a_step];                              \
            const TYPE *restrict b0 = block + p * ld_block;                       \
            const TYPE *restrict b1 = b0 + ld_block;                              \
            const TYPE *restrict b2 = b1 + ld_block;                              \
            const TYPE *restrict b3 = b2 + ld_block;                              \
                                                                                  \
            for (size_t j = 0; j < nc; j++)                                       \
                c_row[j] = c_row[j] + a0 * b0[j] + a1 * b1[j] + a2 * b2[j] +      \
                           a3 * b3[j];                                            \
        }                                                                         \
        for (; p < kc; p++) {                                                     \
            const TYPE a0 = a_row[p * a_step];                                    \
            const TYPE *restrict b0 = block + p * ld_block;                       \
                                                                                  \
            for (size_t j = 0; j < nc; j++)                                       \
                c_row[j] = c_row[j] + a0 * b0[j];                                 \
        }                                                                         \
    }                                                                             \
                                                                                  \
    /* C[i, j] += sum over p of op(A)[i, p] op(B)[p, j], each a dot product    \
     * with every operand read through (row, column) strides, for shapes where \
     * blocking does not pay. Four columns at a time keep four independent     \
     * chains of additions in flight. */                                       \
    static void gemm_dots_##SUFFIX(size_t m, size_t n, size_t k,                  \
                                   const TYPE *a, size_t a_row, size_t a_col,     \
                                   const TYPE *b, size_t b_row, size_t b_col,     \
                                   TYPE *c, size_t c_row, size_t c_col)           \
    {                                                                             \
        for (size_t i = 0; i < m; i++) {                                          \
            const TYPE *ai = a + i * a_row;                                       \
            TYPE *ci = c + i * c_row;                                             \
            size_t j = 0;                                                         \
                                                                                  \
            for (; j + 4 <= n; j += 4) {                                          \
                const TYPE *bj = b + j * b_col;                                   \
                TYPE s0 = ci[j * c_col];                                          \
                TYPE s1 = ci[(j + 1) * c_col];                                    \
                TYPE s2 = ci[(j + 2) * c_col];                                    \
                TYPE s3 = ci[(j + 3) * c_col];                                    \
                                                                                  \
                for (size_t p = 0; p < k; p++) {                                  \
                    const TYPE ap = ai[p * a_col];                                \
                    const TYPE *bp = bj + p * b_row;                              \
                                                                                  \
                    s0 = s0 + ap * bp[0];                                         \
                    s1 = s1 + ap * bp[b_col];                                     \
                    s2 = s2 + ap * bp[2 * b_col];                                 \
                    s3 = s3 + ap * bp[3 * b_col];                                 \
                }                                                                 \
                ci[j * c_col] = s0;                                               \
                ci[(j + 1) * c_col] = s1;                                         \
                ci[(j + 2) * c_col] = s2;                                         \
                ci[(j + 3) * c_col] = s3;                                         \
            }                                                                     \
            for (; j < n; j++) {                                                  \
                const TYPE *bj = b + j * b_col;                                   \
                TYPE s0 = ci[j * c_col];                                          \
                                                                                  \
                for (size_t p = 0; p < k; p++)                                    \
                    s0 = s0 + ai[p * a_col] * bj[p * b_row];                      \
                ci[j * c_col] = s0;                                               \
            }                                                                     \
        }                                                                         \
    }                                                                             \
                                                                                  \
    void ag_gemm_portable_##SUFFIX(bool trans_a, bool trans_b, size_t m,          \
                                   size_t n, size_t k, const TYPE *a, size_t lda, \
                                   const TYPE *b, size_t ldb, TYPE beta, TYPE *c, \
                                   size_t ldc)                                    \
    {                                                                             \
        TYPE packed[GEMM_KC * GEMM_NC_PACKED];                                    \
        const size_t nc_max = trans_b ? GEMM_NC_PACKED : GEMM_NC;                 \
                                                                                  \
        /* C = beta C first. beta == 0 overwrites, so NaN in C is dropped. */     \
        if (beta != 1) {                                                          \
            for (size_t i = 0; i < m; i++) {                                      \
                for (size_t j = 0; j < n; j++)                                    \
                    c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j];       \
            }                                                                     \
        }                                                                         \
                                                                                  \
        /* op(A)[i, p] is a[i * a_rs + p * a_cs] and op(B)[p, j] is               \
         * b[p * b_rs + j * b_cs], transposed or not. */                          \
        const size_t a_rs = trans_a ? 1 : lda;                                    \
        const size_t a_cs = trans_a ? lda : 1;                                    \
        const size_t b_rs = trans_b ? 1 : ldb;                                    \
        const size_t b_cs = trans_b ? ldb : 1;                                    \
                                                                                  \
        if (n < GEMM_DOTS_MAX_N && n < m) {                                       \
            /* Run the chains along the longer side: C^T = op(B)^T op(A)^T. */    \
            gemm_dots_##SUFFIX(n, m, k, b, b_cs, b_rs, a, a_cs, a_rs, c, 1, ldc); \
            return;                                                               \
        }                                                                         \
        if (n < GEMM_DOTS_MAX_N || (trans_b && m < GEMM_PACK_MIN_M)) {            \
            gemm_dots_##SUFFIX(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, c, ldc, 1); \
            return;                                                               \
        }                                                                         \
                                                                                  \
        for (size_t j0 = 0; j0 < n; j0 += nc_max) {                               \
            const size_t nc = min_size(nc_max, n - j0);                           \
                                                                                  \
            for (size_t p0 = 0; p0 < k; p0 += GEMM_KC) {                          \
                const size_t kc = min_size(GEMM_KC, k - p0);                      \
                const TYPE *block;                                                \
                size_t ld_block;                                                  \
                                                                                  \
                /* op(B) = B^T: copy the block so its rows are contiguous. */     \
                if (trans_b) {                                                    \
                    for (size_t p = 0; p < kc; p++) {                             \
                        for (size_t j = 0; j < nc; j++)                           \
                            packed[p * nc + j] = b[(p0 + p) + (j0 + j) * ldb];    \
                    }                                                             \
                    block = packed;                                               \
                    ld_block = nc;                                                \
                } else {                                                          \
                    block = b + p0 * ldb + j0;                                    \
                    ld_block = ldb;                                               \
                }                                                                 \
                                                                                  \
                for (size_t i = 0; i < m; i++)                                    \
                    gemm_row_##SUFFIX(a + i * a_rs + p0 * a_cs, a_cs, block,      \
                                      ld_block, kc, nc, c + i * ldc + j0);        \
            }                                                                     \
        }                                                                         \
    }

GEMM_PORTABLE(float, f32)
GEMM_PORTABLE(double, f64)

/* ---- the CBLAS path ------------------------------------------------------- */

#ifdef AG_HAVE_CBLAS

/* Whether BLAS can take the product: no dimension is 0 and all fit in its
 * int arguments. The BLAS interface requires leading dimensions of at least
 * 1, which a zero-size operand would not have. */
static bool blas_can_take(size_t m, size_t n, size_t k, size_t lda, size_t ldb,
                          size_t ldc)
{
    const size_t limit = INT_MAX;

    return m > 0 && n > 0 && k > 0 && m <= limit && n <= limit && k <= limit &&
           lda <= limit && ldb <= limit && ldc <= limit;
}

/* A product with one column (n == 1) or one row (m == 1) is a matrix-vector
 * product, which OpenBLAS 0.3.21 computes several times faster with gemv
 * than with gemm. On the machine of docs/benchmarks.md, 64x20 times 20x1
 * takes about 190 ns against 760 ns. Returns false for other shapes. For
 * beta == 0, C is cleared first, so NaN in C never propagates. */
#define GEMV_PATH(TYPE, PREFIX)                                                   \
    static bool gemv_##PREFIX(bool trans_a, bool trans_b, size_t m, size_t n,    \
                              size_t k, const TYPE *a, size_t lda,                \
                              const TYPE *b, size_t ldb, TYPE beta, TYPE *c,      \
                              size_t ldc)                                         \
    {                                                                             \
        if (n != 1 && m != 1)                                                     \
            return false;                                                         \
        if (beta == 0) {                                                          \
            for (size_t i = 0; i < m; i++) {                                      \
                for (size_t j = 0; j < n; j++)                                    \
                    c[i * ldc + j] = 0;                                           \
            }                                                                     \
            beta = 1;                                                             \
        }                                                                         \
        if (n == 1) {                                                             \
            /* C[:, 0] = op(A) op(B)[:, 0] */                                     \
            cblas_##PREFIX##gemv(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, \
                                 (int)(trans_a ? k : m), (int)(trans_a ? m : k),  \
                                 1, a, (int)lda, b, (int)(trans_b ? 1 : ldb),     \
                                 beta, c, (int)ldc);                              \
        } else {                                                                  \
            /* C[0, :]^T = op(B)^T op(A)[0, :]^T */                               \
            cblas_##PREFIX##gemv(CblasRowMajor, trans_b ? CblasNoTrans : CblasTrans, \
                                 (int)(trans_b ? n : k), (int)(trans_b ? k : n),  \
                                 1, b, (int)ldb, a, (int)(trans_a ? lda : 1),     \
                                 beta, c, 1);                                     \
        }                                                                         \
        return true;                                                              \
    }

GEMV_PATH(float, s)
GEMV_PATH(double, d)

void ag_gemm_blas_f32(bool trans_a, bool trans_b, size_t m, size_t n, size_t k,
                      const float *a, size_t lda, const float *b, size_t ldb,
                      float beta, float *c, size_t ldc)
{
    if (!blas_can_take(m, n, k, lda, ldb, ldc)) {
        ag_gemm_portable_f32(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    if (gemv_s(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc))
        return;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, 1.0f,
                a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

void ag_gemm_blas_f64(bool trans_a, bool trans_b, size_t m, size_t n, size_t k,
                      const double *a, size_t lda, const double *b, size_t ldb,
                      double beta, double *c, size_t ldc)
{
    if (!blas_can_take(m, n, k, lda, ldb, ldc)) {
        ag_gemm_portable_f64(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    if (gemv_d(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc))
        return;
    cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, 1.0,
                a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

#endif /* AG_HAVE_CBLAS */

/* ---- choosing a kernel ---------------------------------------------------- */

/* Products of fewer multiply-adds (m n k) than this run the portable kernel
 * even when BLAS is available, because a CBLAS call costs about 20 to 60 ns
 * before any arithmetic. Measured by timing ag_gemm_portable_* against
 * ag_gemm_blas_* (best of 5) for every m, n, k in {1, 2, 3, 4, 6, 8, 12, 16,
 * 24, 32, 64} and the three transpose cases: the geometric mean of the time
 * ratio crosses 1 between 256 and 512 multiply-adds, for f32 and f64 alike
 * (2-core AMD EPYC VM, OpenBLAS 0.3.21 pthread, GCC 12 -O3). Above that BLAS
 * wins by up to 3x. */
#define GEMM_BLAS_MIN_MADDS 256.0

void ag_gemm_f32(bool trans_a, bool trans_b, size_t m, size_t n, size_t k,
                 const float *a, size_t lda, const float *b, size_t ldb,
                 float beta, float *c, size_t ldc)
{
#ifdef AG_HAVE_CBLAS
    if ((double)m * (double)n * (double)k >= GEMM_BLAS_MIN_MADDS) {
        ag_gemm_blas_f32(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc);
        return;
    }
#endif
    ag_gemm_portable_f32(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc);
}

void ag_gemm_f64(bool trans_a, bool trans_b, size_t m, size_t n, size_t k,
                 const double *a, size_t lda, const double *b, size_t ldb,
                 double beta, double *c, size_t ldc)
{
#ifdef AG_HAVE_CBLAS
    if ((double)m * (double)n * (double)k >= GEMM_BLAS_MIN_MADDS) {
        ag_gemm_blas_f64(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc);
        return;
    }
#endif
    ag_gemm_portable_f64(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc);
}

/* Dispatches on the dtype of the tensors whose data a, b and c point to. */
static void gemm(ag_dtype dtype, bool trans_a, bool trans_b, size_t m, size_t n,
                 size_t k, const void *a, size_t lda, const void *b, size_t ldb,
                 double beta, void *c, size_t ldc)
{
    if (dtype == AG_F32)
        ag_gemm_f32(trans_a, trans_b, m, n, k, a, lda, b, ldb, (float)beta, c, ldc);
    else
        ag_gemm_f64(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc);
}

/* ---- matmul: C = A B ------------------------------------------------------ */

static int matmul_shape(const ag_record *rec, ag_dtype *dtype, int *ndim, size_t *shape)
{
    const ag_tensor *a = rec->inputs[0];
    const ag_tensor *b = rec->inputs[1];
    char sa[64];
    char sb[64];

    if (a->ndim != 2 || b->ndim != 2) {
        ag_set_error("ag_matmul: operands must be 2-D, got %s @ %s; reshape them "
                     "to matrices first (ag_reshape)",
                     ag_shape_str(a, sa, sizeof sa), ag_shape_str(b, sb, sizeof sb));
        return -1;
    }
    if (a->shape[1] != b->shape[0]) {
        ag_set_error("ag_matmul: inner dimensions differ: %s @ %s; the first "
                     "operand's columns must equal the second's rows",
                     ag_shape_str(a, sa, sizeof sa), ag_shape_str(b, sb, sizeof sb));
        return -1;
    }

    *dtype = a->dtype;
    *ndim = 2;
    shape[0] = a->shape[0];
    shape[1] = b->shape[1];
    return 0;
}

static int matmul_forward(ag_tape *tape, ag_record *rec)
{
    (void)tape;
    const ag_tensor *a = rec->inputs[0];
    const ag_tensor *b = rec->inputs[1];
    ag_tensor *c = rec->output;
    const size_t m = a->shape[0];
    const size_t k = a->shape[1];
    const size_t n = b->shape[1];

    gemm(c->dtype, false, false, m, n, k, a->data, k, b->data, n, 0.0, c->data, n);
    return 0;
}

/* dA += dC B^T and dB += A^T dC, with beta = 1 into the existing adjoints. */
static int matmul_backward(ag_tape *tape, ag_record *rec)
{
    const ag_tensor *a = rec->inputs[0];
    const ag_tensor *b = rec->inputs[1];
    const ag_tensor *c = rec->output;
    ag_tensor *ga = ag_input_grad(tape, rec, 0);
    ag_tensor *gb = ag_input_grad(tape, rec, 1);
    const size_t m = a->shape[0];
    const size_t k = a->shape[1];
    const size_t n = b->shape[1];

    if (ga != NULL)
        gemm(c->dtype, false, true, m, k, n, c->grad->data, n, b->data, n, 1.0,
             ga->data, k);
    if (gb != NULL)
        gemm(c->dtype, true, false, k, n, m, a->data, k, c->grad->data, n, 1.0,
             gb->data, n);
    return 0;
}

/* dA = dC B^T and dB = A^T dC, built from ops. */
static int matmul_backward_graph(ag_tape *tape, const ag_record *rec, ag_tensor *g,
                                 const bool *needs_grad, ag_tensor **grad_inputs)
{
    ag_tensor *a = rec->inputs[0];
    ag_tensor *b = rec->inputs[1];

    if (needs_grad[0]) {
        grad_inputs[0] = ag_matmul(tape, g, ag_transpose(tape, b));
        if (grad_inputs[0] == NULL)
            return -1;
    }
    if (needs_grad[1]) {
        grad_inputs[1] = ag_matmul(tape, ag_transpose(tape, a), g);
        if (grad_inputs[1] == NULL)
            return -1;
    }
    return 0;
}

const ag_op ag_op_matmul = {
    .name = "matmul",
    .n_inputs = 2,
    .shape = matmul_shape,
    .forward = matmul_forward,
    .backward = matmul_backward,
    .backward_graph = matmul_backward_graph,
};

/* ---- linear: S = xW + b --------------------------------------------------- */

static int linear_shape(const ag_record *rec, ag_dtype *dtype, int *ndim, size_t *shape)
{
    const ag_tensor *x = rec->inputs[0];
    const ag_tensor *w = rec->inputs[1];
    const ag_tensor *b = rec->inputs[2];
    char sx[64];
    char sw[64];
    char sb[64];

    if (x->ndim != 2) {
        ag_set_error("ag_linear: x must be 2-D (batch x in), got shape %s; "
                     "reshape a single sample to (1xin)",
                     ag_shape_str(x, sx, sizeof sx));
        return -1;
    }
    if (w->ndim != 2) {
        ag_set_error("ag_linear: W must be 2-D (in x out), got shape %s",
                     ag_shape_str(w, sw, sizeof sw));
        return -1;
    }
    if (x->shape[1] != w->shape[0]) {
        ag_set_error("ag_linear: inner dimensions differ: x %s @ W %s; x's "
                     "columns must equal W's rows (W is in x out)",
                     ag_shape_str(x, sx, sizeof sx), ag_shape_str(w, sw, sizeof sw));
        return -1;
    }

    const size_t n = w->shape[1];
    bool b_is_row = (b->ndim == 1 && b->shape[0] == n) ||
                    (b->ndim == 2 && b->shape[0] == 1 && b->shape[1] == n);
    if (!b_is_row) {
        ag_set_error("ag_linear: b of shape %s does not match W of shape %s; b "
                     "must have shape (%zu) or (1x%zu), one bias per output",
                     ag_shape_str(b, sb, sizeof sb), ag_shape_str(w, sw, sizeof sw),
                     n, n);
        return -1;
    }

    *dtype = x->dtype;
    *ndim = 2;
    shape[0] = x->shape[0];
    shape[1] = n;
    return 0;
}

/* Copies b into every row of S, then adds xW with beta = 1. The rows are
 * filled by doubling: one row, then two, four and so on, in about log2(m)
 * calls to memcpy instead of one call per row. */
static int linear_forward(ag_tape *tape, ag_record *rec)
{
    (void)tape;
    const ag_tensor *x = rec->inputs[0];
    const ag_tensor *w = rec->inputs[1];
    const ag_tensor *b = rec->inputs[2];
    ag_tensor *s = rec->output;
    const size_t m = x->shape[0];
    const size_t k = x->shape[1];
    const size_t n = w->shape[1];
    const size_t row_bytes = n * ag_dtype_size(s->dtype);
    unsigned char *rows = s->data;

    if (m > 0)
        memcpy(rows, b->data, row_bytes);
    for (size_t filled = 1; filled < m;) {
        size_t count = filled < m - filled ? filled : m - filled;

        memcpy(rows + filled * row_bytes, rows, count * row_bytes);
        filled += count;
    }
    gemm(s->dtype, false, false, m, n, k, x->data, k, w->data, n, 1.0, s->data, n);
    return 0;
}

#define COLUMN_SUMS(TYPE)                                                         \
    static void add_column_sums_##TYPE(const TYPE *rows, size_t m, size_t n,      \
                                       TYPE *restrict sums)                       \
    {                                                                             \
        for (size_t i = 0; i < m; i++) {                                          \
            const TYPE *restrict row = rows + i * n;                              \
            for (size_t j = 0; j < n; j++)                                        \
                sums[j] += row[j];                                                \
        }                                                                         \
    }

COLUMN_SUMS(float)
COLUMN_SUMS(double)

/* dx += dS W^T, dW += x^T dS, db += the column sums of dS. */
static int linear_backward(ag_tape *tape, ag_record *rec)
{
    const ag_tensor *x = rec->inputs[0];
    const ag_tensor *w = rec->inputs[1];
    const ag_tensor *s = rec->output;
    ag_tensor *gx = ag_input_grad(tape, rec, 0);
    ag_tensor *gw = ag_input_grad(tape, rec, 1);
    ag_tensor *gb = ag_input_grad(tape, rec, 2);
    const size_t m = x->shape[0];
    const size_t k = x->shape[1];
    const size_t n = w->shape[1];

    if (gx != NULL)
        gemm(s->dtype, false, true, m, k, n, s->grad->data, n, w->data, n, 1.0,
             gx->data, k);
    if (gw != NULL)
        gemm(s->dtype, true, false, k, n, m, x->data, k, s->grad->data, n, 1.0,
             gw->data, n);
    if (gb != NULL) {
        if (s->dtype == AG_F32)
            add_column_sums_float(s->grad->data, m, n, gb->data);
        else
            add_column_sums_double(s->grad->data, m, n, gb->data);
    }
    return 0;
}

/* dx = dS W^T, dW = x^T dS and db = the column sums of dS in b's shape,
 * built from ops. */
static int linear_backward_graph(ag_tape *tape, const ag_record *rec, ag_tensor *g,
                                 const bool *needs_grad, ag_tensor **grad_inputs)
{
    ag_tensor *x = rec->inputs[0];
    ag_tensor *w = rec->inputs[1];

    if (needs_grad[0]) {
        grad_inputs[0] = ag_matmul(tape, g, ag_transpose(tape, w));
        if (grad_inputs[0] == NULL)
            return -1;
    }
    if (needs_grad[1]) {
        grad_inputs[1] = ag_matmul(tape, ag_transpose(tape, x), g);
        if (grad_inputs[1] == NULL)
            return -1;
    }
    if (needs_grad[2]) {
        grad_inputs[2] = ag_sum_to(tape, g, rec->inputs[2]);
        if (grad_inputs[2] == NULL)
            return -1;
    }
    return 0;
}

const ag_op ag_op_linear = {
    .name = "linear",
    .n_inputs = 3,
    .shape = linear_shape,
    .forward = linear_forward,
    .backward = linear_backward,
    .backward_graph = linear_backward_graph,
};

/* ---- transpose ------------------------------------------------------------ */

/* Tile edge of the blocked transpose: a tile of the source and one of the
 * destination fit in L1 together, so neither side is read column by column
 * from memory. */
#define TRANSPOSE_TILE 32

/* dst (cols x rows) = src^T, or dst += src^T when accumulating. */
#define TRANSPOSE_KERNEL(TYPE)                                                    \
    static void transpose_##TYPE(const TYPE *restrict src, size_t rows,           \
                                 size_t cols, TYPE *restrict dst,                 \
                                 bool accumulate)                                 \
    {                                                                             \
        for (size_t i0 = 0; i0 < rows; i0 += TRANSPOSE_TILE) {                    \
            const size_t i1 = min_size(rows, i0 + TRANSPOSE_TILE);                \
                                                                                  \
            for (size_t j0 = 0; j0 < cols; j0 += TRANSPOSE_TILE) {                \
                const size_t j1 = min_size(cols, j0 + TRANSPOSE_TILE);            \
                                                                                  \
                for (size_t i = i0; i < i1; i++) {                                \
                    for (size_t j = j0; j < j1; j++) {                            \
                        TYPE v = src[i * cols + j];                               \
                        if (accumulate)                                           \
                            v += dst[j * rows + i];                               \
                        dst[j * rows + i] = v;                                    \
                    }                                                             \
                }                                                                 \
            }                                                                     \
        }                                                                         \
    }

TRANSPOSE_KERNEL(float)
TRANSPOSE_KERNEL(double)

static int transpose_shape(const ag_record *rec, ag_dtype *dtype, int *ndim, size_t *shape)
{
    const ag_tensor *x = rec->inputs[0];
    char sx[64];

    if (x->ndim != 2) {
        ag_set_error("ag_transpose: expects a 2-D tensor, got shape %s; reshape "
                     "it to a matrix first (ag_reshape)",
                     ag_shape_str(x, sx, sizeof sx));
        return -1;
    }

    *dtype = x->dtype;
    *ndim = 2;
    shape[0] = x->shape[1];
    shape[1] = x->shape[0];
    return 0;
}

static int transpose_forward(ag_tape *tape, ag_record *rec)
{
    (void)tape;
    const ag_tensor *x = rec->inputs[0];
    ag_tensor *y = rec->output;

    if (x->dtype == AG_F32)
        transpose_float(x->data, x->shape[0], x->shape[1], y->data, false);
    else
        transpose_double(x->data, x->shape[0], x->shape[1], y->data, false);
    return 0;
}

/* The adjoint of a transpose is the transposed adjoint. */
static int transpose_backward(ag_tape *tape, ag_record *rec)
{
    const ag_tensor *y = rec->output;
    ag_tensor *gx = ag_input_grad(tape, rec, 0);

    if (gx == NULL)
        return 0;
    if (y->dtype == AG_F32)
        transpose_float(y->grad->data, y->shape[0], y->shape[1], gx->data, true);
    else
        transpose_double(y->grad->data, y->shape[0], y->shape[1], gx->data, true);
    return 0;
}

static int transpose_backward_graph(ag_tape *tape, const ag_record *rec,
                                    ag_tensor *g, const bool *needs_grad,
                                    ag_tensor **grad_inputs)
{
    (void)rec;
    if (!needs_grad[0])
        return 0;
    grad_inputs[0] = ag_transpose(tape, g);
    return grad_inputs[0] == NULL ? -1 : 0;
}

const ag_op ag_op_transpose = {
    .name = "transpose",
    .n_inputs = 1,
    .shape = transpose_shape,
    .forward = transpose_forward,
    .backward = transpose_backward,
    .backward_graph = transpose_backward_graph,
};

/* ---- reshape -------------------------------------------------------------- */

/* The record's params cannot hold AG_MAX_DIMS dimensions, so the op itself
 * produces the flat shape (numel), and ag_reshape sets the requested shape on
 * the output after ag_apply. Applied by name through ag_apply, the op
 * flattens. */
static int reshape_shape(const ag_record *rec, ag_dtype *dtype, int *ndim, size_t *shape)
{
    const ag_tensor *x = rec->inputs[0];

    *dtype = x->dtype;
    *ndim = 1;
    shape[0] = x->numel;
    return 0;
}

/* The output shares the input's data: tensors are not changed once made, and
 * the buffer ag_apply allocated for the output stays unused in the arena. */
static int reshape_forward(ag_tape *tape, ag_record *rec)
{
    (void)tape;
    rec->output->data = rec->inputs[0]->data;
    return 0;
}

/* The same elements in the same order, so the adjoint passes through. */
static int reshape_backward(ag_tape *tape, ag_record *rec)
{
    const ag_tensor *y = rec->output;
    ag_tensor *gx = ag_input_grad(tape, rec, 0);

    if (gx == NULL)
        return 0;
    if (y->dtype == AG_F32) {
        float *restrict dst = gx->data;
        const float *restrict src = y->grad->data;
        for (size_t i = 0; i < y->numel; i++)
            dst[i] += src[i];
    } else {
        double *restrict dst = gx->data;
        const double *restrict src = y->grad->data;
        for (size_t i = 0; i < y->numel; i++)
            dst[i] += src[i];
    }
    return 0;
}

static int reshape_backward_graph(ag_tape *tape, const ag_record *rec, ag_tensor *g,
                                  const bool *needs_grad, ag_tensor **grad_inputs)
{
    const ag_tensor *x = rec->inputs[0];

    if (!needs_grad[0])
        return 0;
    grad_inputs[0] = ag_reshape(tape, g, x->ndim, x->shape);
    return grad_inputs[0] == NULL ? -1 : 0;
}

const ag_op ag_op_reshape = {
    .name = "reshape",
    .n_inputs = 1,
    .shape = reshape_shape,
    .forward = reshape_forward,
    .backward = reshape_backward,
    .backward_graph = reshape_backward_graph,
};

/* Writes a shape given as an array as "(2x3)" into buf, like ag_shape_str. */
static char *dims_str(int ndim, const size_t *shape, char *buf, size_t size)
{
    size_t used = (size_t)snprintf(buf, size, "(");

    for (int i = 0; i < ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, i == 0 ? "%zu" : "x%zu",
                                 shape[i]);
    if (used < size)
        snprintf(buf + used, size - used, ")");
    return buf;
}

/* ---- public entry points -------------------------------------------------- */

ag_tensor *ag_matmul(ag_tape *tape, ag_tensor *a, ag_tensor *b)
{
    return ag_apply2(tape, &ag_op_matmul, a, b);
}

ag_tensor *ag_linear(ag_tape *tape, ag_tensor *x, ag_tensor *w, ag_tensor *b)
{
    ag_tensor *inputs[3] = {x, w, b};

    return ag_apply(tape, &ag_op_linear, 3, inputs, 0, NULL);
}

ag_tensor *ag_transpose(ag_tape *tape, ag_tensor *x)
{
    return ag_apply1(tape, &ag_op_transpose, x, 0, NULL);
}

ag_tensor *ag_reshape(ag_tape *tape, ag_tensor *x, int ndim, const size_t *shape)
{
    if (x == NULL)
        return NULL;
    if (ndim < 1 || ndim > AG_MAX_DIMS || shape == NULL) {
        ag_set_error("ag_reshape: invalid target shape: %d dimensions%s; pass 1 to "
                     "%d dimensions",
                     ndim, shape == NULL ? " and a NULL shape array" : "",
                     AG_MAX_DIMS);
        return NULL;
    }

    /* The product is checked for overflow, which could wrap to x's count. */
    size_t count = 1;
    bool overflow = false;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] != 0 && count > SIZE_MAX / shape[i])
            overflow = true;
        count *= shape[i];
    }
    if (overflow || count != x->numel) {
        char sx[64];
        char sy[160];
        char count_text[32];

        if (overflow)
            snprintf(count_text, sizeof count_text, "more than SIZE_MAX");
        else
            snprintf(count_text, sizeof count_text, "%zu", count);
        ag_set_error("ag_reshape: cannot reshape %s (%zu elements) to %s (%s "
                     "elements); the element count must stay the same",
                     ag_shape_str(x, sx, sizeof sx), x->numel,
                     dims_str(ndim, shape, sy, sizeof sy), count_text);
        return NULL;
    }

    ag_tensor *y = ag_apply1(tape, &ag_op_reshape, x, 0, NULL);
    if (y == NULL)
        return NULL;
    /* Entries past ndim stay 0, as in every tensor. */
    y->ndim = ndim;
    memset(y->shape, 0, sizeof y->shape);
    memcpy(y->shape, shape, (size_t)ndim * sizeof(size_t));
    return y;
}
