/* Private matrix-product kernels behind ag_matmul and ag_linear. Not
 * installed. Tests include it to compare the BLAS path with the portable
 * kernel in one build. */
#ifndef TAPEGRAD_MATMUL_KERNEL_H
#define TAPEGRAD_MATMUL_KERNEL_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Every kernel computes C = op(A) op(B) + beta C on row-major matrices, where
 * op(X) is X^T when trans_x is set. op(A) is m x k, op(B) is k x n and C is
 * m x n. lda, ldb and ldc are the row strides of A, B and C as stored, so a
 * transposed operand is read in place, never copied. With beta == 0, C is
 * overwritten without being read (NaN in C does not propagate), as in BLAS.
 * Any of m, n and k may be 0: then C is only scaled by beta.
 */

/* Chooses the kernel: CBLAS when the library was built with it and the
 * product is large enough to repay its call overhead, the portable kernel
 * otherwise. */
void ag_gemm_f32(bool trans_a, bool trans_b, size_t m, size_t n, size_t k,
                 const float *a, size_t lda, const float *b, size_t ldb,
                 float beta, float *c, size_t ldc);
void ag_gemm_f64(bool trans_a, bool trans_b, size_t m, size_t n, size_t k,
                 const double *a, size_t lda, const double *b, size_t ldb,
                 double beta, double *c, size_t ldc);

/* The portable cache-blocked kernel, compiled in every build. Each element
 * of C is summed over k in increasing order, as a naive triple loop does. */
void ag_gemm_portable_f32(bool trans_a, bool trans_b, size_t m, size_t n,
                          size_t k, const float *a, size_t lda, const float *b,
                          size_t ldb, float beta, float *c, size_t ldc);
void ag_gemm_portable_f64(bool trans_a, bool trans_b, size_t m, size_t n,
                          size_t k, const double *a, size_t lda,
                          const double *b, size_t ldb, double beta, double *c,
                          size_t ldc);

#ifdef AG_HAVE_CBLAS
/* The CBLAS path at every size. Zero-size products and dimensions beyond
 * INT_MAX are handled without calling BLAS. */
void ag_gemm_blas_f32(bool trans_a, bool trans_b, size_t m, size_t n, size_t k,
                      const float *a, size_t lda, const float *b, size_t ldb,
                      float beta, float *c, size_t ldc);
void ag_gemm_blas_f64(bool trans_a, bool trans_b, size_t m, size_t n, size_t k,
                      const double *a, size_t lda, const double *b, size_t ldb,
                      double beta, double *c, size_t ldc);
#endif

#endif /* TAPEGRAD_MATMUL_KERNEL_H */
