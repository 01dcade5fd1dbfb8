/*
 * Binary elementwise ops with NumPy broadcasting. Each op is one BINARY_OP
 * line: its value y(a, b) beside the local derivatives dy/da and dy/db,
 * written once with <tgmath.h> functions so the same text gives the f32 and
 * f64 kernels. In the expressions, a and b are the input elements and y the
 * output element, all of the kernel's type T.
 *
 * Backward adds g * dy/da into a's adjoint at the element of a that fed each
 * output element, so a broadcast operand receives the sum over the
 * dimensions it was stretched along and its gradient keeps its own shape.
 */
#include <string.h>
#include <tgmath.h>

#include "apply.h"

/* ---- broadcast layout ----------------------------------------------------- */

/* How the output's elements map to the elements of a and b: the output shape
 * with each operand's element strides (0 along a broadcast dimension).
 * Dimensions of size 1 are dropped and neighbours that both operands step
 * through contiguously are merged, so a row bias becomes (rows x n) with b's
 * strides (0, 1) and equal shapes become one flat run. The output itself is
 * contiguous, and the innermost dimension is always a run of stride 0 or 1. */
typedef struct bcast_layout {
    int ndim;
    size_t shape[AG_MAX_DIMS];
    size_t stride_a[AG_MAX_DIMS];
    size_t stride_b[AG_MAX_DIMS];
} bcast_layout;

static void layout_flat(bcast_layout *lay, size_t numel, size_t stride_a, size_t stride_b)
{
    lay->ndim = 1;
    lay->shape[0] = numel;
    lay->stride_a[0] = stride_a;
    lay->stride_b[0] = stride_b;
}

static void layout_init(bcast_layout *lay, const ag_tensor *a, const ag_tensor *b,
                        const ag_tensor *y)
{
    /* Fast paths: equal shapes, or one operand with one element. */
    if (ag_tensor_same_shape(a, b)) {
        layout_flat(lay, y->numel, 1, 1);
        return;
    }
    if (b->numel == 1 && a->numel == y->numel) {
        layout_flat(lay, y->numel, 1, 0);
        return;
    }
    if (a->numel == 1 && b->numel == y->numel) {
        layout_flat(lay, y->numel, 0, 1);
        return;
    }

    size_t stride_a[AG_MAX_DIMS];
    size_t stride_b[AG_MAX_DIMS];
    ag_broadcast_strides(a, y->ndim, y->shape, stride_a);
    ag_broadcast_strides(b, y->ndim, y->shape, stride_b);

    int n = 0;
    for (int d = 0; d < y->ndim; d++) {
        size_t dim = y->shape[d];

        if (dim == 1)
            continue;

        /* The outer neighbour (n - 1) and dimension d form one dimension when
         * each operand's outer stride equals its inner stride times dim. */
        if (n > 0 && lay->stride_a[n - 1] == stride_a[d] * dim &&
            lay->stride_b[n - 1] == stride_b[d] * dim) {
            lay->shape[n - 1] *= dim;
            lay->stride_a[n - 1] = stride_a[d];
            lay->stride_b[n - 1] = stride_b[d];
            continue;
        }
        lay->shape[n] = dim;
        lay->stride_a[n] = stride_a[d];
        lay->stride_b[n] = stride_b[d];
        n++;
    }
    if (n == 0) {
        layout_flat(lay, 1, 0, 0);
        return;
    }
    lay->ndim = n;
}

/* Runs RUN once per innermost run of the layout. RUN can use the element
 * offsets off_a, off_b and off_y of the run's first element, the run's length
 * run_length, and the operands' strides inside the run, run_stride_a and
 * run_stride_b (each 0 or 1). The outer dimensions advance like an odometer.
 * The output must have at least one element. */
#define BCAST_FOR_EACH_RUN(lay, RUN)                                              \
    do {                                                                          \
        const bcast_layout *lay_ = (lay);                                         \
        const int inner_ = lay_->ndim - 1;                                        \
        const size_t run_length = lay_->shape[inner_];                           \
        const size_t run_stride_a = lay_->stride_a[inner_];                      \
        const size_t run_stride_b = lay_->stride_b[inner_];                      \
        size_t index_[AG_MAX_DIMS] = {0};                                         \
        size_t off_a = 0;                                                         \
        size_t off_b = 0;                                                         \
        size_t off_y = 0;                                                         \
        for (;;) {                                                                \
            RUN;                                                                  \
            off_y += run_length;                                                  \
            int d_ = inner_ - 1;                                                  \
            for (; d_ >= 0; d_--) {                                               \
                off_a += lay_->stride_a[d_];                                      \
                off_b += lay_->stride_b[d_];                                      \
                if (++index_[d_] < lay_->shape[d_])                               \
                    break;                                                        \
                off_a -= lay_->stride_a[d_] * lay_->shape[d_];                    \
                off_b -= lay_->stride_b[d_] * lay_->shape[d_];                    \
                index_[d_] = 0;                                                   \
            }                                                                     \
            if (d_ < 0)                                                           \
                break;                                                            \
        }                                                                         \
    } while (0)

/* Runs STATEMENT for i in [0, n) with the elements a and b bound, one loop
 * per combination of run strides so each loop is a plain vectorisable one. */
#define FOR_EACH_PAIR(T, as, sa, bs, sb, n, STATEMENT)                            \
    do {                                                                          \
        if ((sa) != 0 && (sb) != 0) {                                             \
            for (size_t i = 0; i < (n); i++) {                                    \
                const T a = (as)[i];                                              \
                const T b = (bs)[i];                                              \
                (void)a;                                                          \
                (void)b;                                                          \
                STATEMENT;                                                        \
            }                                                                     \
        } else if ((sa) != 0) {                                                   \
            const T b = (bs)[0];                                                  \
            for (size_t i = 0; i < (n); i++) {                                    \
                const T a = (as)[i];                                              \
                (void)a;                                                          \
                (void)b;                                                          \
                STATEMENT;                                                        \
            }                                                                     \
        } else if ((sb) != 0) {                                                   \
            const T a = (as)[0];                                                  \
            for (size_t i = 0; i < (n); i++) {                                    \
                const T b = (bs)[i];                                              \
                (void)a;                                                          \
                (void)b;                                                          \
                STATEMENT;                                                        \
            }                                                                     \
        } else {                                                                  \
            const T a = (as)[0];                                                  \
            const T b = (bs)[0];                                                  \
            (void)a;                                                              \
            (void)b;                                                              \
            for (size_t i = 0; i < (n); i++) {                                    \
                STATEMENT;                                                        \
            }                                                                     \
        }                                                                         \
    } while (0)

/* The run kernels of one op for one type: the forward value, and the adjoint
 * of a and of b. An operand with stride 0 in the run gets the run's sum. */
#define BINARY_RUNS(NAME, TYPE, VALUE, GRAD_A, GRAD_B)                            \
    static void NAME##_run_##TYPE(const TYPE *restrict as, size_t sa,             \
                                  const TYPE *restrict bs, size_t sb,             \
                                  TYPE *restrict ys, size_t n)                    \
    {                                                                             \
        typedef TYPE T;                                                           \
        FOR_EACH_PAIR(T, as, sa, bs, sb, n, ys[i] = (VALUE));                     \
    }                                                                             \
    static void NAME##_run_grad_a_##TYPE(const TYPE *restrict as, size_t sa,      \
                                         const TYPE *restrict bs, size_t sb,      \
                                         const TYPE *restrict ys,                 \
                                         const TYPE *restrict gys,                \
                                         TYPE *restrict gas, size_t n)            \
    {                                                                             \
        typedef TYPE T;                                                           \
        if (sa != 0) {                                                            \
            FOR_EACH_PAIR(T, as, sa, bs, sb, n, const T y = ys[i]; (void)y;       \
                          gas[i] += gys[i] * (GRAD_A));                           \
        } else {                                                                  \
            T sum = 0;                                                            \
            FOR_EACH_PAIR(T, as, sa, bs, sb, n, const T y = ys[i]; (void)y;       \
                          sum += gys[i] * (GRAD_A));                              \
            gas[0] += sum;                                                        \
        }                                                                         \
    }                                                                             \
    static void NAME##_run_grad_b_##TYPE(const TYPE *restrict as, size_t sa,      \
                                         const TYPE *restrict bs, size_t sb,      \
                                         const TYPE *restrict ys,                 \
                                         const TYPE *restrict gys,                \
                                         TYPE *restrict gbs, size_t n)            \
    {                                                                             \
        typedef TYPE T;                                                           \
        if (sb != 0) {                                                            \
            FOR_EACH_PAIR(T, as, sa, bs, sb, n, const T y = ys[i]; (void)y;       \
                          gbs[i] += gys[i] * (GRAD_B));                           \
        } else {                                                                  \
            T sum = 0;                                                            \
            FOR_EACH_PAIR(T, as, sa, bs, sb, n, const T y = ys[i]; (void)y;       \
                          sum += gys[i] * (GRAD_B));                              \
            gbs[0] += sum;                                                        \
        }                                                                         \
    }

/* Walks the layout with one op's run kernels for one type. One-element
 * outputs skip the layout, whose setup would cost more than the arithmetic,
 * and the layout walk is a separate function, so the one-element path does
 * not pay for its stack frame. NAME##_one computes the value when gys is NULL, and otherwise
 * adds the adjoints into gas and gbs (each may be NULL). */
#define BINARY_KERNELS(NAME, TYPE, VALUE, GRAD_A, GRAD_B)                         \
    BINARY_RUNS(NAME, TYPE, VALUE, GRAD_A, GRAD_B)                                \
    static void NAME##_one_##TYPE(const TYPE *as, const TYPE *bs, TYPE *ys,       \
                                  const TYPE *gys, TYPE *gas, TYPE *gbs)          \
    {                                                                             \
        typedef TYPE T;                                                           \
        const T a = as[0];                                                        \
        const T b = bs[0];                                                        \
        (void)a;                                                                  \
        (void)b;                                                                  \
        if (gys == NULL) {                                                        \
            ys[0] = (VALUE);                                                      \
            return;                                                               \
        }                                                                         \
        const T y = ys[0];                                                        \
        (void)y;                                                                  \
        if (gas != NULL)                                                          \
            gas[0] += gys[0] * (GRAD_A);                                          \
        if (gbs != NULL)                                                          \
            gbs[0] += gys[0] * (GRAD_B);                                          \
    }                                                                             \
    static void NAME##_forward_##TYPE(const bcast_layout *lay, const TYPE *as,    \
                                      const TYPE *bs, TYPE *ys)                   \
    {                                                                             \
        BCAST_FOR_EACH_RUN(lay, NAME##_run_##TYPE(as + off_a, run_stride_a,       \
                                                  bs + off_b, run_stride_b,       \
                                                  ys + off_y, run_length));       \
    }                                                                             \
    static void NAME##_grad_a_##TYPE(const bcast_layout *lay, const TYPE *as,     \
                                     const TYPE *bs, const TYPE *ys,              \
                                     const TYPE *gys, TYPE *gas)                  \
    {                                                                             \
        BCAST_FOR_EACH_RUN(lay, NAME##_run_grad_a_##TYPE(                         \
                                    as + off_a, run_stride_a, bs + off_b,         \
                                    run_stride_b, ys + off_y, gys + off_y,        \
                                    gas + off_a, run_length));                    \
    }                                                                             \
    static void NAME##_grad_b_##TYPE(const bcast_layout *lay, const TYPE *as,     \
                                     const TYPE *bs, const TYPE *ys,              \
                                     const TYPE *gys, TYPE *gbs)                  \
    {                                                                             \
        BCAST_FOR_EACH_RUN(lay, NAME##_run_grad_b_##TYPE(                         \
                                    as + off_a, run_stride_a, bs + off_b,         \
                                    run_stride_b, ys + off_y, gys + off_y,        \
                                    gbs + off_b, run_length));                    \
    }

#define BINARY_OP(NAME, VALUE, GRAD_A, GRAD_B)                                    \
    BINARY_KERNELS(NAME, float, VALUE, GRAD_A, GRAD_B)                            \
    BINARY_KERNELS(NAME, double, VALUE, GRAD_A, GRAD_B)                           \
    AG_NOINLINE static void NAME##_forward_layout(const ag_tensor *a,             \
                                                  const ag_tensor *b,             \
                                                  ag_tensor *y)                   \
    {                                                                             \
        bcast_layout lay;                                                         \
                                                                                  \
        layout_init(&lay, a, b, y);                                               \
        if (y->dtype == AG_F32)                                                   \
            NAME##_forward_float(&lay, a->data, b->data, y->data);                \
        else                                                                      \
            NAME##_forward_double(&lay, a->data, b->data, y->data);               \
    }                                                                             \
    static int NAME##_forward(ag_tape *tape, ag_record *rec)                      \
    {                                                                             \
        (void)tape;                                                               \
        const ag_tensor *a = rec->inputs[0];                                      \
        const ag_tensor *b = rec->inputs[1];                                      \
        ag_tensor *y = rec->output;                                               \
                                                                                  \
        if (y->numel == 1) {                                                      \
            if (y->dtype == AG_F32)                                               \
                NAME##_one_float(a->data, b->data, y->data, NULL, NULL, NULL);    \
            else                                                                  \
                NAME##_one_double(a->data, b->data, y->data, NULL, NULL, NULL);   \
        } else if (y->numel > 1) {                                                \
            NAME##_forward_layout(a, b, y);                                       \
        }                                                                         \
        return 0;                                                                 \
    }                                                                             \
    AG_NOINLINE static void NAME##_backward_layout(const ag_tensor *a,            \
                                                   const ag_tensor *b,            \
                                                   const ag_tensor *y,            \
                                                   ag_tensor *ga, ag_tensor *gb)  \
    {                                                                             \
        bcast_layout lay;                                                         \
                                                                                  \
        layout_init(&lay, a, b, y);                                               \
        if (y->dtype == AG_F32) {                                                 \
            if (ga != NULL)                                                       \
                NAME##_grad_a_float(&lay, a->data, b->data, y->data,              \
                                    y->grad->data, ga->data);                     \
            if (gb != NULL)                                                       \
                NAME##_grad_b_float(&lay, a->data, b->data, y->data,              \
                                    y->grad->data, gb->data);                     \
        } else {                                                                  \
            if (ga != NULL)                                                       \
                NAME##_grad_a_double(&lay, a->data, b->data, y->data,             \
                                     y->grad->data, ga->data);                    \
            if (gb != NULL)                                                       \
                NAME##_grad_b_double(&lay, a->data, b->data, y->data,             \
                                     y->grad->data, gb->data);                    \
        }                                                                         \
    }                                                                             \
    static int NAME##_backward(ag_tape *tape, ag_record *rec)                     \
    {                                                                             \
        (void)tape;                                                               \
        const ag_tensor *a = rec->inputs[0];                                      \
        const ag_tensor *b = rec->inputs[1];                                      \
        const ag_tensor *y = rec->output;                                         \
        ag_tensor *ga = ag_adjoint_of(rec, 0);                                    \
        ag_tensor *gb = ag_adjoint_of(rec, 1);                                    \
                                                                                  \
        if (y->numel == 1) {                                                      \
            if (y->dtype == AG_F32)                                               \
                NAME##_one_float(a->data, b->data, y->data, y->grad->data,        \
                                 ga == NULL ? NULL : ga->data,                    \
                                 gb == NULL ? NULL : gb->data);                   \
            else                                                                  \
                NAME##_one_double(a->data, b->data, y->data, y->grad->data,       \
                                  ga == NULL ? NULL : ga->data,                   \
                                  gb == NULL ? NULL : gb->data);                  \
        } else if (y->numel > 1 && (ga != NULL || gb != NULL)) {                  \
            NAME##_backward_layout(a, b, y, ga, gb);                              \
        }                                                                         \
        return 0;                                                                 \
    }                                                                             \
    static int NAME##_backward_graph(ag_tape *tape, const ag_record *rec,         \
                                     ag_tensor *g, const bool *needs_grad,        \
                                     ag_tensor **grad_inputs);                    \
    const ag_op ag_op_##NAME = {                                                  \
        .name = #NAME,                                                            \
        .n_inputs = 2,                                                            \
        .shape = ag_shape_broadcast,                                                 \
        .forward = NAME##_forward,                                                \
        .backward = NAME##_backward,                                              \
        .backward_graph = NAME##_backward_graph,                                  \
    };


/* ---- the ops -------------------------------------------------------------- */

BINARY_OP(add, a + b, (T)1, (T)1)
BINARY_OP(sub, a - b, (T)1, (T)-1)
BINARY_OP(mul, a * b, b, a)
/* d(a/b)/db = -a/b^2 = -y/b, which reuses the output and cannot overflow
 * through b^2. */
BINARY_OP(div, a / b, (T)1 / b, -y / b)
/* d/da = b a^(b-1), taken as 0 for b == 0 even at a == 0. d/db = a^b log a,
 * taken as 0 where a == 0 and b >= 0. Both follow PyTorch. */
BINARY_OP(pow, pow(a, b), b == 0 ? (T)0 : b * pow(a, b - (T)1),
          a == 0 && b >= 0 ? (T)0 : y * log(a))
/* NaN propagates because a comparison with NaN is false: the first test keeps
 * a NaN a and the second chooses a NaN b. Equal elements split the gradient
 * in half, and where either side is NaN both receive all of it (as PyTorch).
 * The derivatives are written without branches, as 1 - [a < b] - [a == b]/2
 * for maximum, so the loops vectorise instead of mispredicting on random
 * data. */
BINARY_OP(maximum, a != a ? a : (a > b ? a : b),
          (T)1 - (T)(a < b) - (T)0.5 * (T)(a == b),
          (T)1 - (T)(a > b) - (T)0.5 * (T)(a == b))
BINARY_OP(minimum, a != a ? a : (a < b ? a : b),
          (T)1 - (T)(a > b) - (T)0.5 * (T)(a == b),
          (T)1 - (T)(a < b) - (T)0.5 * (T)(a == b))

/* ---- differentiable backward rules ---------------------------------------- */

/* GRAD_A and GRAD_B build g * dy/da and g * dy/db from ops, at the output's
 * shape. ag_sum_to then sums each over the dimensions along which its
 * operand was broadcast. */
#define BINARY_GRAPH_RULE(NAME, GRAD_A, GRAD_B)                                   \
    static int NAME##_backward_graph(ag_tape *tape, const ag_record *rec,         \
                                     ag_tensor *g, const bool *needs_grad,        \
                                     ag_tensor **grad_inputs)                     \
    {                                                                             \
        ag_tensor *a = rec->inputs[0];                                            \
        ag_tensor *b = rec->inputs[1];                                            \
        ag_tensor *y = rec->output;                                               \
        (void)y;                                                                  \
        if (needs_grad[0]) {                                                      \
            grad_inputs[0] = ag_sum_to(tape, (GRAD_A), a);                        \
            if (grad_inputs[0] == NULL)                                           \
                return -1;                                                        \
        }                                                                         \
        if (needs_grad[1]) {                                                      \
            grad_inputs[1] = ag_sum_to(tape, (GRAD_B), b);                        \
            if (grad_inputs[1] == NULL)                                           \
                return -1;                                                        \
        }                                                                         \
        return 0;                                                                 \
    }

/* d maximum(a, b)/da, a constant; called with (b, a) it gives d/db. */
static ag_tensor *maximum_share(ag_tape *tape, ag_tensor *a, ag_tensor *b)
{
    return ag_apply2(tape, &ag_op_maximum_derivative, a, b);
}

/* d(a^b)/da = b a^(b-1), kept at 0 where b == 0 even when a^(b-1) is inf. */
static ag_tensor *pow_base_slope(ag_tape *tape, ag_tensor *a, ag_tensor *b)
{
    ag_tensor *slope = ag_mul(tape, b, ag_pow(tape, a, ag_add_scalar(tape, b, -1.0)));

    return ag_masked(tape, slope, ag_apply1(tape, &ag_op_nonzero_mask, b, 0, NULL));
}

/* d(a^b)/db = a^b log a, kept at 0 where a == 0 and b >= 0 (log a = -inf).
 * NOTE: the mask stops the value, not the derivative of the masked-out
 * branch: where a == 0 exactly, second derivatives through log a are NaN, as
 * with where() in PyTorch. */
static ag_tensor *pow_exponent_slope(ag_tape *tape, ag_tensor *a, ag_tensor *b,
                                     ag_tensor *y)
{
    ag_tensor *slope = ag_mul(tape, y, ag_log(tape, a));

    return ag_masked(tape, slope, ag_apply2(tape, &ag_op_pow_exponent_mask, a, b));
}

BINARY_GRAPH_RULE(add, g, g)
BINARY_GRAPH_RULE(sub, g, ag_neg(tape, g))
BINARY_GRAPH_RULE(mul, ag_mul(tape, g, b), ag_mul(tape, g, a))
BINARY_GRAPH_RULE(div, ag_div(tape, g, b), ag_mul(tape, g, ag_div(tape, ag_neg(tape, y), b)))
BINARY_GRAPH_RULE(pow, ag_mul(tape, g, pow_base_slope(tape, a, b)),
                  ag_mul(tape, g, pow_exponent_slope(tape, a, b, y)))
BINARY_GRAPH_RULE(maximum, ag_mul(tape, g, maximum_share(tape, a, b)),
                  ag_mul(tape, g, maximum_share(tape, b, a)))
BINARY_GRAPH_RULE(minimum, ag_mul(tape, g, maximum_share(tape, b, a)),
                  ag_mul(tape, g, maximum_share(tape, a, b)))

/* ---- public entry points -------------------------------------------------- */

/* The entry points apply their op through the inline body of ag_apply. The
 * op is then a constant, and the compiler calls its forward kernel directly. */
static inline ag_tensor *apply_binary(ag_tape *tape, const ag_op *op, ag_tensor *a,
                                      ag_tensor *b)
{
    ag_tensor *inputs[2] = {a, b};
    return ag_apply_inline(tape, op, 2, inputs, 0, NULL);
}

ag_tensor *ag_add(ag_tape *tape, ag_tensor *a, ag_tensor *b) { return apply_binary(tape, &ag_op_add, a, b); }
ag_tensor *ag_sub(ag_tape *tape, ag_tensor *a, ag_tensor *b) { return apply_binary(tape, &ag_op_sub, a, b); }
ag_tensor *ag_mul(ag_tape *tape, ag_tensor *a, ag_tensor *b) { return apply_binary(tape, &ag_op_mul, a, b); }
ag_tensor *ag_div(ag_tape *tape, ag_tensor *a, ag_tensor *b) { return apply_binary(tape, &ag_op_div, a, b); }
ag_tensor *ag_pow(ag_tape *tape, ag_tensor *a, ag_tensor *b) { return apply_binary(tape, &ag_op_pow, a, b); }
ag_tensor *ag_maximum(ag_tape *tape, ag_tensor *a, ag_tensor *b) { return apply_binary(tape, &ag_op_maximum, a, b); }
ag_tensor *ag_minimum(ag_tape *tape, ag_tensor *a, ag_tensor *b) { return apply_binary(tape, &ag_op_minimum, a, b); }
