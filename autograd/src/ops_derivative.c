/*
 * Ops that the differentiable backward rules (backward_graph) are built from.
 *  - expand_as broadcasts a tensor to a shape and sum_to sums it back. Each
 *    is the other's adjoint, and sum_to gives a broadcast operand's gradient
 *    the operand's shape.
 *  - masked keeps x where a mask is nonzero and gives 0 elsewhere, so a
 *    derivative taken as 0 by convention stays 0 even where the formula is
 *    inf or NaN.
 *  - The derivative masks of kinked ops (abs, relu, clamp, maximum, max,
 *    pow) are piecewise constant, so their derivative is zero wherever it
 *    exists. They have no backward rule, so ag_apply returns their result as
 *    a constant that is never recorded.
 * The second input of expand_as and sum_to only gives the target shape, and
 * the public functions pass a detached view of it so it is never recorded.
 */
#include <math.h>
#include <string.h>

#include "internal.h"

/* ---- walking a broadcast -------------------------------------------------- */

/* Walks the elements of a full tensor in row-major order and keeps the
 * element offsets of up to two operands broadcast to its shape (stride 0
 * along each stretched or missing dimension). */
typedef struct broadcast_walk {
    int ndim;
    const size_t *shape;
    size_t stride_a[AG_MAX_DIMS];
    size_t stride_b[AG_MAX_DIMS];
    size_t index[AG_MAX_DIMS];
    size_t a; /* offset of the current element in operand a */
    size_t b; /* offset of the current element in operand b */
} broadcast_walk;

/* b may be NULL when only one operand is walked. */
static broadcast_walk walk_start(const ag_tensor *full, const ag_tensor *a,
                                 const ag_tensor *b)
{
    broadcast_walk w;

    memset(&w, 0, sizeof w);
    w.ndim = full->ndim;
    w.shape = full->shape;
    ag_broadcast_strides(a, full->ndim, full->shape, w.stride_a);
    if (b != NULL)
        ag_broadcast_strides(b, full->ndim, full->shape, w.stride_b);
    return w;
}

/* Moves to the next element, advancing the index like an odometer. */
static inline void walk_next(broadcast_walk *w)
{
    for (int d = w->ndim - 1; d >= 0; d--) {
        w->a += w->stride_a[d];
        w->b += w->stride_b[d];
        if (++w->index[d] < w->shape[d])
            return;
        w->a -= w->stride_a[d] * w->shape[d];
        w->b -= w->stride_b[d] * w->shape[d];
        w->index[d] = 0;
    }
}

/* ---- kernels, written once for float and double --------------------------- */

/* expand: full[i] = small[offset] (or += when accumulating).
 * sum_into: small[offset] += full[i], the adjoint of expand.
 * masked: full[i] = mask != 0 ? x[i] : 0, or += into an adjoint. */
#define BROADCAST_KERNELS(T)                                                   \
    static void expand_##T(const T *small, T *full, broadcast_walk w,          \
                           size_t numel, bool accumulate)                      \
    {                                                                          \
        for (size_t i = 0; i < numel; i++) {                                   \
            full[i] = accumulate ? full[i] + small[w.a] : small[w.a];          \
            walk_next(&w);                                                     \
        }                                                                      \
    }                                                                          \
                                                                               \
    static void sum_into_##T(const T *full, T *small, broadcast_walk w,        \
                             size_t numel)                                     \
    {                                                                          \
        for (size_t i = 0; i < numel; i++) {                                   \
            small[w.a] += full[i];                                             \
            walk_next(&w);                                                     \
        }                                                                      \
    }                                                                          \
                                                                               \
    static void masked_##T(const T *x, const T *mask, T *y, broadcast_walk w,  \
                           size_t numel, bool accumulate)                      \
    {                                                                          \
        for (size_t i = 0; i < numel; i++) {                                   \
            const T selected = mask[w.a] != 0 ? x[i] : (T)0;                   \
            y[i] = accumulate ? y[i] + selected : selected;                    \
            walk_next(&w);                                                     \
        }                                                                      \
    }

BROADCAST_KERNELS(float)
BROADCAST_KERNELS(double)

/* Calls the float or double kernel NAME; the data pointers are void *. */
#define BY_DTYPE(dtype, NAME, ...)                                             \
    ((dtype) == AG_F32 ? NAME##_float(__VA_ARGS__) : NAME##_double(__VA_ARGS__))

/* ---- shape rules ---------------------------------------------------------- */

/* Checks that `from` broadcasts to exactly the shape of `to`, naming the op. */
static int check_broadcasts_to(const ag_record *rec, const ag_tensor *from,
                               const ag_tensor *to, const char *from_name,
                               const char *to_name)
{
    int ndim;
    size_t shape[AG_MAX_DIMS];
    char sf[64];
    char st[64];

    if (ag_broadcast_shape(rec->op->name, from, to, &ndim, shape) != 0)
        return -1;
    if (ndim != to->ndim || memcmp(shape, to->shape, (size_t)ndim * sizeof *shape) != 0) {
        ag_set_error("ag_%s: %s of shape %s does not broadcast to %s of shape %s; "
                     "each of its dimensions, aligned at the last, must be 1 or "
                     "equal to the target's, and it cannot have more dimensions",
                     rec->op->name, from_name, ag_shape_str(from, sf, sizeof sf),
                     to_name, ag_shape_str(to, st, sizeof st));
        return -1;
    }
    return 0;
}

/* The output has the shape of `like`, input 1. */
static int shape_of_like(const ag_record *rec, ag_dtype *dtype, int *ndim, size_t *shape)
{
    const ag_tensor *like = rec->inputs[1];

    *dtype = like->dtype;
    *ndim = like->ndim;
    memcpy(shape, like->shape, (size_t)like->ndim * sizeof *shape);
    return 0;
}

static int expand_as_shape(const ag_record *rec, ag_dtype *dtype, int *ndim, size_t *shape)
{
    if (check_broadcasts_to(rec, rec->inputs[0], rec->inputs[1], "x", "the target") != 0)
        return -1;
    return shape_of_like(rec, dtype, ndim, shape);
}

static int sum_to_shape(const ag_record *rec, ag_dtype *dtype, int *ndim, size_t *shape)
{
    if (check_broadcasts_to(rec, rec->inputs[1], rec->inputs[0], "the target", "x") != 0)
        return -1;
    return shape_of_like(rec, dtype, ndim, shape);
}

static int masked_shape(const ag_record *rec, ag_dtype *dtype, int *ndim, size_t *shape)
{
    if (check_broadcasts_to(rec, rec->inputs[1], rec->inputs[0], "the mask", "x") != 0)
        return -1;
    return ag_shape_like_input(rec, dtype, ndim, shape);
}

/* ---- expand_as: broadcast x to like's shape ------------------------------- */

static int expand_as_forward(ag_tape *tape, ag_record *rec)
{
    (void)tape;
    const ag_tensor *x = rec->inputs[0];
    ag_tensor *y = rec->output;

    BY_DTYPE(y->dtype, expand, x->data, y->data, walk_start(y, x, NULL), y->numel,
             false);
    return 0;
}

/* Each element of x fed every output element it was copied to. */
static int expand_as_backward(ag_tape *tape, ag_record *rec)
{
    const ag_tensor *y = rec->output;
    ag_tensor *gx = ag_input_grad(tape, rec, 0);

    if (gx != NULL)
        BY_DTYPE(y->dtype, sum_into, y->grad->data, gx->data,
                 walk_start(y, rec->inputs[0], NULL), y->numel);
    return 0;
}

static int expand_as_backward_graph(ag_tape *tape, const ag_record *rec,
                                    ag_tensor *grad_output, const bool *needs_grad,
                                    ag_tensor **grad_inputs)
{
    if (needs_grad[0]) {
        grad_inputs[0] = ag_sum_to(tape, grad_output, rec->inputs[0]);
        if (grad_inputs[0] == NULL)
            return -1;
    }
    return 0;
}

const ag_op ag_op_expand_as = {
    .name = "expand_as",
    .n_inputs = 2,
    .shape = expand_as_shape,
    .forward = expand_as_forward,
    .backward = expand_as_backward,
    .backward_graph = expand_as_backward_graph,
};

/* ---- sum_to: sum x down to like's shape ----------------------------------- */

static int sum_to_forward(ag_tape *tape, ag_record *rec)
{
    (void)tape;
    const ag_tensor *x = rec->inputs[0];
    ag_tensor *y = rec->output;

    memset(y->data, 0, y->numel * ag_dtype_size(y->dtype));
    BY_DTYPE(y->dtype, sum_into, x->data, y->data, walk_start(x, y, NULL), x->numel);
    return 0;
}

/* Every element of x was added into one output element. */
static int sum_to_backward(ag_tape *tape, ag_record *rec)
{
    const ag_tensor *y = rec->output;
    ag_tensor *gx = ag_input_grad(tape, rec, 0);

    if (gx != NULL)
        BY_DTYPE(y->dtype, expand, y->grad->data, gx->data, walk_start(gx, y, NULL),
                 gx->numel, true);
    return 0;
}

static int sum_to_backward_graph(ag_tape *tape, const ag_record *rec,
                                 ag_tensor *grad_output, const bool *needs_grad,
                                 ag_tensor **grad_inputs)
{
    if (needs_grad[0]) {
        grad_inputs[0] = ag_expand_as(tape, grad_output, rec->inputs[0]);
        if (grad_inputs[0] == NULL)
            return -1;
    }
    return 0;
}

const ag_op ag_op_sum_to = {
    .name = "sum_to",
    .n_inputs = 2,
    .shape = sum_to_shape,
    .forward = sum_to_forward,
    .backward = sum_to_backward,
    .backward_graph = sum_to_backward_graph,
};

/* ---- masked: x where the mask is nonzero, else 0 -------------------------- */

static int masked_forward(ag_tape *tape, ag_record *rec)
{
    (void)tape;
    const ag_tensor *x = rec->inputs[0];
    const ag_tensor *mask = rec->inputs[1];
    ag_tensor *y = rec->output;

    BY_DTYPE(y->dtype, masked, x->data, mask->data, y->data, walk_start(y, mask, NULL),
             y->numel, false);
    return 0;
}

/* The gradient passes where the mask is nonzero; the mask gets none, as a
 * selector. */
static int masked_backward(ag_tape *tape, ag_record *rec)
{
    const ag_tensor *y = rec->output;
    const ag_tensor *mask = rec->inputs[1];
    ag_tensor *gx = ag_input_grad(tape, rec, 0);

    if (gx != NULL)
        BY_DTYPE(y->dtype, masked, y->grad->data, mask->data, gx->data,
                 walk_start(y, mask, NULL), y->numel, true);
    return 0;
}

static int masked_backward_graph(ag_tape *tape, const ag_record *rec,
                                 ag_tensor *grad_output, const bool *needs_grad,
                                 ag_tensor **grad_inputs)
{
    if (needs_grad[0]) {
        grad_inputs[0] = ag_masked(tape, grad_output, rec->inputs[1]);
        if (grad_inputs[0] == NULL)
            return -1;
    }
    return 0;
}

const ag_op ag_op_masked = {
    .name = "masked",
    .n_inputs = 2,
    .shape = masked_shape,
    .forward = masked_forward,
    .backward = masked_backward,
    .backward_graph = masked_backward_graph,
};

/* ---- derivative masks ----------------------------------------------------- */

/* The kernel of a gradient-free elementwise op of one input for one type:
 * y = VALUE(x, p, q), with p and q the op's first two scalar attributes. */
#define MASK_KERNEL1(NAME, TYPE, VALUE)                                        \
    static void NAME##_kernel_##TYPE(const TYPE *xs, TYPE *ys, size_t n,       \
                                     const double *params)                     \
    {                                                                          \
        typedef TYPE T;                                                        \
        const T p = (T)params[0];                                              \
        const T q = (T)params[1];                                              \
        (void)p;                                                               \
        (void)q;                                                               \
        for (size_t i = 0; i < n; i++) {                                       \
            const T x = xs[i];                                                 \
            ys[i] = (T)(VALUE);                                                \
        }                                                                      \
    }

#define MASK_OP1(NAME, VALUE)                                                  \
    MASK_KERNEL1(NAME, float, VALUE)                                           \
    MASK_KERNEL1(NAME, double, VALUE)                                          \
    static int NAME##_forward(ag_tape *tape, ag_record *rec)                   \
    {                                                                          \
        (void)tape;                                                            \
        const ag_tensor *x = rec->inputs[0];                                   \
        BY_DTYPE(x->dtype, NAME##_kernel, x->data, rec->output->data,          \
                 x->numel, rec->params);                                       \
        return 0;                                                              \
    }                                                                          \
    const ag_op ag_op_##NAME = {                                               \
        .name = #NAME,                                                         \
        .n_inputs = 1,                                                         \
        .shape = ag_shape_like_input,                                          \
        .forward = NAME##_forward,                                             \
    };

/* The kernel of a gradient-free elementwise op of two inputs with
 * broadcasting for one type: y = VALUE(a, b). */
#define MASK_KERNEL2(NAME, TYPE, VALUE)                                        \
    static void NAME##_kernel_##TYPE(const TYPE *as, const TYPE *bs, TYPE *ys, \
                                     broadcast_walk w, size_t n)               \
    {                                                                          \
        typedef TYPE T;                                                        \
        for (size_t i = 0; i < n; i++) {                                       \
            const T a = as[w.a];                                               \
            const T b = bs[w.b];                                               \
            ys[i] = (T)(VALUE);                                                \
            walk_next(&w);                                                     \
        }                                                                      \
    }

#define MASK_OP2(NAME, VALUE)                                                  \
    MASK_KERNEL2(NAME, float, VALUE)                                           \
    MASK_KERNEL2(NAME, double, VALUE)                                          \
    static int NAME##_forward(ag_tape *tape, ag_record *rec)                   \
    {                                                                          \
        (void)tape;                                                            \
        const ag_tensor *a = rec->inputs[0];                                   \
        const ag_tensor *b = rec->inputs[1];                                   \
        ag_tensor *y = rec->output;                                            \
        BY_DTYPE(y->dtype, NAME##_kernel, a->data, b->data, y->data,           \
                 walk_start(y, a, b), y->numel);                               \
        return 0;                                                              \
    }                                                                          \
    const ag_op ag_op_##NAME = {                                               \
        .name = #NAME,                                                         \
        .n_inputs = 2,                                                         \
        .shape = ag_shape_broadcast,                                              \
        .forward = NAME##_forward,                                             \
    };


/* Each mask is the derivative its op's backward kernel uses, to the bit:
 * abs'(x) is sign(x) with 0 at 0 (and at NaN); relu'(x) is 1 unless x <= 0,
 * so NaN passes; clamp'(x) is 1 on [p, q]. */
MASK_OP1(abs_derivative, (x > 0) - (x < 0))
MASK_OP1(relu_derivative, x <= 0 ? 0 : 1)
MASK_OP1(clamp_derivative, x >= p && x <= q)
MASK_OP1(nonzero_mask, x != 0)

/* d maximum(a, b)/da = 1 - [a < b] - [a == b]/2: ties share the gradient, and
 * a NaN on either side gives 1. d/db is this op with a and b swapped, and
 * minimum's derivatives are the same two, exchanged. */
MASK_OP2(maximum_derivative, (T)1 - (T)(a < b) - (T)0.5 * (T)(a == b))
/* 1 where a is the max b of its slice; where b is NaN, the NaN elements. */
MASK_OP2(max_mask, b != b ? a != a : a == b)
/* 1 where pow's d/db = a^b log a applies: not at a == 0 with b >= 0, where
 * it is taken as 0 (PyTorch's convention). */
MASK_OP2(pow_exponent_mask, !(a == 0 && b >= 0))

/* ---- entry points --------------------------------------------------------- */

/* Detaches `like`, which only lends its shape, so the op is recorded only
 * when x requires a gradient. */
static ag_tensor *apply_with_shape_of(ag_tape *tape, const ag_op *op, ag_tensor *x,
                                      ag_tensor *like)
{
    if (x == NULL || like == NULL)
        return NULL;
    if (tape == NULL) {
        ag_set_error("ag_%s: tape is NULL", op->name);
        return NULL;
    }
    if (ag_tensor_same_shape(x, like) && x->dtype == like->dtype)
        return x;

    ag_tensor *shape_only = like->requires_grad ? ag_detach(tape, like) : like;
    return ag_apply2(tape, op, x, shape_only);
}

ag_tensor *ag_sum_to(ag_tape *tape, ag_tensor *x, ag_tensor *like)
{
    return apply_with_shape_of(tape, &ag_op_sum_to, x, like);
}

ag_tensor *ag_expand_as(ag_tape *tape, ag_tensor *x, ag_tensor *like)
{
    return apply_with_shape_of(tape, &ag_op_expand_as, x, like);
}

ag_tensor *ag_masked(ag_tape *tape, ag_tensor *x, ag_tensor *mask)
{
    return ag_apply2(tape, &ag_op_masked, x, mask);
}
