/*
 * Reductions: sum, mean and max, over all elements or along one axis.
 *
 * Every reduction views its input as an (outer, n, inner) block and reduces
 * the n elements of each slice (o, i), which sit `inner` apart starting at
 * o*n*inner + i, into output element o*inner + i. A reduction over all
 * elements is the view (1, numel, 1), so one kernel serves both forms.
 * Dropping or keeping the reduced axis of size 1 does not move any element,
 * so keepdims only changes the shape rule.
 */
#include <limits.h>
#include <math.h>
#include <tgmath.h>

#include "internal.h"

typedef struct reduce_view {
    int axis;     /* the reduced axis, or -1 for all elements */
    size_t outer; /* product of the dimensions before the axis */
    size_t n;     /* length of each reduced slice */
    size_t inner; /* product of the dimensions after the axis, also the slice stride */
} reduce_view;

/* Columns per block when an inner (non-last) axis is summed: the partial
 * sums live on the stack, and each input row is read once, in order. */
#define COLUMN_BLOCK 64

/* Elements below which pairwise summation adds directly. */
#define PAIRWISE_BLOCK 128

/* ---- views and shape rules ------------------------------------------------ */

static reduce_view view_all(const ag_record *rec)
{
    return (reduce_view){.axis = -1, .outer = 1, .n = rec->inputs[0]->numel, .inner = 1};
}

/* Only called after the shape rule accepted the axis. */
static reduce_view view_axis(const ag_record *rec)
{
    reduce_view v;

    v.axis = ag_axis_param(rec);
    ag_axis_split(rec->inputs[0], v.axis, &v.outer, &v.n, &v.inner);
    return v;
}

/* A reduction over all elements gives shape (1). */
static int all_shape(const ag_record *rec, ag_dtype *dtype, int *ndim, size_t *shape)
{
    *dtype = rec->inputs[0]->dtype;
    *ndim = 1;
    shape[0] = 1;
    return 0;
}

/* params: [0] axis (negative counts from the end), [1] keepdims (nonzero
 * keeps the axis with size 1). Removing the only axis gives shape (1). */
static int axis_shape(const ag_record *rec, ag_dtype *dtype, int *ndim, size_t *shape)
{
    const ag_tensor *x = rec->inputs[0];
    int axis = ag_axis_param(rec);
    bool keepdims = rec->params[1] != 0;
    int out = 0;

    if (axis < 0)
        return -1;
    for (int i = 0; i < x->ndim; i++) {
        if (i != axis)
            shape[out++] = x->shape[i];
        else if (keepdims)
            shape[out++] = 1;
    }
    if (out == 0)
        shape[out++] = 1;
    *dtype = x->dtype;
    *ndim = out;
    return 0;
}

/* max has no identity element, so an empty slice has no max. */
static int check_max_nonempty(const ag_record *rec, reduce_view v)
{
    char shape[64];
    const ag_tensor *x = rec->inputs[0];

    if (v.n > 0)
        return 0;
    if (v.axis < 0) {
        ag_set_error("ag_%s: the input of shape %s is empty and an empty tensor "
                     "has no max; pass at least one element",
                     rec->op->name, ag_shape_str(x, shape, sizeof shape));
    } else {
        ag_set_error("ag_%s: axis %d of shape %s has size 0 and an empty axis "
                     "has no max; reduce over a nonempty axis",
                     rec->op->name, v.axis, ag_shape_str(x, shape, sizeof shape));
    }
    return -1;
}

/* ---- kernels, written once for float and double --------------------------- */

/*
 * sum: y = (sum_k x_k) / divisor, accumulated in double for both dtypes
 * (divisor 1 for sum, n for mean). dx_k += dy * scale (scale 1 or 1/n).
 * Contiguous slices use pairwise summation, whose rounding error grows with
 * log n instead of n. Its eight partial sums per block also vectorize.
 *
 * max: NaN wins, as in PyTorch. In backward, the elements equal to the max
 * share dy evenly (PyTorch's rule for max over all elements), and when the
 * max is NaN the NaN elements share it, so no 0/0 appears.
 */
#define REDUCE_KERNELS(T)                                                      \
    static double sum_contiguous_##T(const T *x, size_t n)                     \
    {                                                                          \
        if (n > PAIRWISE_BLOCK) {                                              \
            size_t half = n / 2 - (n / 2) % 8;                                 \
            return sum_contiguous_##T(x, half) +                               \
                   sum_contiguous_##T(x + half, n - half);                     \
        }                                                                      \
                                                                               \
        double partial[8] = {0};                                               \
        size_t k = 0;                                                          \
        for (; k + 8 <= n; k += 8) {                                           \
            for (int j = 0; j < 8; j++)                                        \
                partial[j] += x[k + j];                                        \
        }                                                                      \
        double total = ((partial[0] + partial[1]) + (partial[2] + partial[3])) + \
                       ((partial[4] + partial[5]) + (partial[6] + partial[7])); \
        for (; k < n; k++)                                                     \
            total += x[k];                                                     \
        return total;                                                          \
    }                                                                          \
                                                                               \
    static void sum_forward_##T(const T *x, T *y, reduce_view v, double divisor) \
    {                                                                          \
        for (size_t o = 0; o < v.outer; o++) {                                 \
            const T *xo = x + o * v.n * v.inner;                               \
            T *yo = y + o * v.inner;                                           \
                                                                               \
            if (v.inner == 1) {                                                \
                yo[0] = (T)(sum_contiguous_##T(xo, v.n) / divisor);            \
                continue;                                                      \
            }                                                                  \
            for (size_t i0 = 0; i0 < v.inner; i0 += COLUMN_BLOCK) {            \
                size_t width = v.inner - i0 < COLUMN_BLOCK ? v.inner - i0      \
                                                           : COLUMN_BLOCK;     \
                double acc[COLUMN_BLOCK] = {0};                                \
                for (size_t k = 0; k < v.n; k++) {                             \
                    const T *row = xo + k * v.inner + i0;                      \
                    for (size_t i = 0; i < width; i++)                         \
                        acc[i] += row[i];                                      \
                }                                                              \
                for (size_t i = 0; i < width; i++)                             \
                    yo[i0 + i] = (T)(acc[i] / divisor);                        \
            }                                                                  \
        }                                                                      \
    }                                                                          \
                                                                               \
    static void sum_backward_##T(const T *gy, T *gx, reduce_view v, double scale) \
    {                                                                          \
        const T s = (T)scale;                                                  \
        for (size_t o = 0; o < v.outer; o++) {                                 \
            const T *gyo = gy + o * v.inner;                                   \
            T *gxo = gx + o * v.n * v.inner;                                   \
                                                                               \
            if (v.inner == 1) {                                                \
                const T g = gyo[0] * s;                                        \
                for (size_t k = 0; k < v.n; k++)                               \
                    gxo[k] += g;                                               \
                continue;                                                      \
            }                                                                  \
            for (size_t k = 0; k < v.n; k++) {                                 \
                T *row = gxo + k * v.inner;                                    \
                for (size_t i = 0; i < v.inner; i++)                           \
                    row[i] += gyo[i] * s;                                      \
            }                                                                  \
        }                                                                      \
    }                                                                          \
                                                                               \
    static inline T max_slice_##T(const T *x, size_t n, size_t stride)         \
    {                                                                          \
        T m = x[0];                                                            \
        bool seen_nan = false;                                                 \
        for (size_t k = 1; k < n; k++) {                                       \
            const T value = x[k * stride];                                     \
            m = value > m ? value : m;                                         \
            seen_nan = seen_nan | isnan(value);                                \
        }                                                                      \
        return seen_nan ? (T)NAN : m;                                          \
    }                                                                          \
                                                                               \
    static void max_forward_##T(const T *x, T *y, reduce_view v)               \
    {                                                                          \
        for (size_t o = 0; o < v.outer; o++) {                                 \
            const T *xo = x + o * v.n * v.inner;                               \
            if (v.inner == 1) {                                                \
                y[o] = max_slice_##T(xo, v.n, 1);                              \
                continue;                                                      \
            }                                                                  \
            for (size_t i = 0; i < v.inner; i++)                               \
                y[o * v.inner + i] = max_slice_##T(xo + i, v.n, v.inner);      \
        }                                                                      \
    }                                                                          \
                                                                               \
    static void max_backward_##T(const T *x, const T *y, const T *gy, T *gx,   \
                                 reduce_view v)                                \
    {                                                                          \
        for (size_t o = 0; o < v.outer; o++) {                                 \
            for (size_t i = 0; i < v.inner; i++) {                             \
                const size_t start = o * v.n * v.inner + i;                    \
                const T m = y[o * v.inner + i];                                \
                const bool m_is_nan = isnan(m);                                \
                size_t count = 0;                                              \
                                                                               \
                for (size_t k = 0; k < v.n; k++) {                             \
                    const T value = x[start + k * v.inner];                    \
                    count += m_is_nan ? isnan(value) : value == m;             \
                }                                                              \
                const T g = gy[o * v.inner + i] / (T)count;                    \
                for (size_t k = 0; k < v.n; k++) {                             \
                    const T value = x[start + k * v.inner];                    \
                    if (m_is_nan ? isnan(value) : value == m)                  \
                        gx[start + k * v.inner] += g;                          \
                }                                                              \
            }                                                                  \
        }                                                                      \
    }

REDUCE_KERNELS(float)
REDUCE_KERNELS(double)

/* Calls the float or double kernel NAME; the data pointers are void *. */
#define BY_DTYPE(dtype, NAME, ...)                                             \
    ((dtype) == AG_F32 ? NAME##_float(__VA_ARGS__) : NAME##_double(__VA_ARGS__))

/* ---- forward and backward rules ------------------------------------------- */

static int sum_forward(ag_record *rec, reduce_view v)
{
    ag_tensor *x = rec->inputs[0];

    BY_DTYPE(x->dtype, sum_forward, x->data, rec->output->data, v, 1.0);
    return 0;
}

static int sum_backward(ag_tape *tape, ag_record *rec, reduce_view v)
{
    ag_tensor *gx = ag_input_grad(tape, rec, 0);

    if (gx != NULL)
        BY_DTYPE(gx->dtype, sum_backward, rec->output->grad->data, gx->data, v, 1.0);
    return 0;
}

/* The mean of nothing is NaN, as in PyTorch. Its gradient has no elements. */
static int mean_forward(ag_record *rec, reduce_view v)
{
    ag_tensor *x = rec->inputs[0];
    ag_tensor *y = rec->output;

    if (v.n == 0) {
        for (size_t i = 0; i < y->numel; i++)
            ag_tensor_set(y, i, NAN);
        return 0;
    }
    BY_DTYPE(x->dtype, sum_forward, x->data, y->data, v, (double)v.n);
    return 0;
}

static int mean_backward(ag_tape *tape, ag_record *rec, reduce_view v)
{
    ag_tensor *gx = ag_input_grad(tape, rec, 0);

    if (gx != NULL && v.n > 0)
        BY_DTYPE(gx->dtype, sum_backward, rec->output->grad->data, gx->data, v,
                 1.0 / (double)v.n);
    return 0;
}

static int max_forward(ag_record *rec, reduce_view v)
{
    ag_tensor *x = rec->inputs[0];

    if (check_max_nonempty(rec, v) != 0)
        return -1;
    BY_DTYPE(x->dtype, max_forward, x->data, rec->output->data, v);
    return 0;
}

static int max_backward(ag_tape *tape, ag_record *rec, reduce_view v)
{
    ag_tensor *gx = ag_input_grad(tape, rec, 0);
    ag_tensor *y = rec->output;

    if (gx != NULL)
        BY_DTYPE(gx->dtype, max_backward, rec->inputs[0]->data, y->data,
                 y->grad->data, gx->data, v);
    return 0;
}

/* ---- differentiable backward rules ---------------------------------------- */

/* Reshapes t, of the output's shape, to x's shape with the reduced axis kept
 * at size 1, so it broadcasts against x. A reduction over all elements has
 * output shape (1), which broadcasts already. */
static ag_tensor *with_kept_axis(ag_tape *tape, const ag_record *rec, reduce_view v,
                                 ag_tensor *t)
{
    const ag_tensor *x = rec->inputs[0];
    size_t shape[AG_MAX_DIMS];

    if (v.axis < 0)
        return t;
    for (int i = 0; i < x->ndim; i++)
        shape[i] = i == v.axis ? 1 : x->shape[i];
    return ag_reshape(tape, t, x->ndim, shape);
}

/* Every element of a slice gets the slice's gradient: dx = g broadcast. */
static int sum_backward_graph(ag_tape *tape, const ag_record *rec, ag_tensor *g,
                              const bool *needs_grad, ag_tensor **grad_inputs,
                              reduce_view v)
{
    if (!needs_grad[0])
        return 0;
    grad_inputs[0] = ag_expand_as(tape, with_kept_axis(tape, rec, v, g), rec->inputs[0]);
    return grad_inputs[0] == NULL ? -1 : 0;
}

/* dx = g / n broadcast; an empty slice has no elements to receive it. */
static int mean_backward_graph(ag_tape *tape, const ag_record *rec, ag_tensor *g,
                               const bool *needs_grad, ag_tensor **grad_inputs,
                               reduce_view v)
{
    if (!needs_grad[0] || v.n == 0)
        return 0;
    ag_tensor *spread = ag_expand_as(tape, with_kept_axis(tape, rec, v, g), rec->inputs[0]);
    grad_inputs[0] = ag_mul_scalar(tape, spread, 1.0 / (double)v.n);
    return grad_inputs[0] == NULL ? -1 : 0;
}

/* dx = g * [x == max] / (number of tied maxima), as the kernel shares it.
 * The weights are constants, so the second derivative is 0, as it is for
 * any piecewise linear function. */
static int max_backward_graph(ag_tape *tape, const ag_record *rec, ag_tensor *g,
                              const bool *needs_grad, ag_tensor **grad_inputs,
                              reduce_view v)
{
    ag_tensor *x = rec->inputs[0];

    if (!needs_grad[0])
        return 0;
    ag_tensor *y = with_kept_axis(tape, rec, v, rec->output);
    ag_tensor *is_max = ag_apply2(tape, &ag_op_max_mask, x, y);
    ag_tensor *count = v.axis < 0 ? ag_sum(tape, is_max) : ag_sum_axis(tape, is_max, v.axis, true);
    ag_tensor *share = ag_div(tape, is_max, count);
    grad_inputs[0] = ag_mul(tape, share, with_kept_axis(tape, rec, v, g));
    return grad_inputs[0] == NULL ? -1 : 0;
}

/* ---- op definitions ------------------------------------------------------- */

/* Defines ag_op_NAME (over all elements, shape (1)) and ag_op_NAME_axis
 * (params: axis, keepdims) from NAME's forward and backward rules. */
#define REDUCTION_OPS(NAME)                                                    \
    static int NAME##_all_forward(ag_tape *tape, ag_record *rec)               \
    {                                                                          \
        (void)tape;                                                            \
        return NAME##_forward(rec, view_all(rec));                             \
    }                                                                          \
    static int NAME##_all_backward(ag_tape *tape, ag_record *rec)              \
    {                                                                          \
        return NAME##_backward(tape, rec, view_all(rec));                      \
    }                                                                          \
    static int NAME##_axis_forward(ag_tape *tape, ag_record *rec)              \
    {                                                                          \
        (void)tape;                                                            \
        return NAME##_forward(rec, view_axis(rec));                            \
    }                                                                          \
    static int NAME##_axis_backward(ag_tape *tape, ag_record *rec)             \
    {                                                                          \
        return NAME##_backward(tape, rec, view_axis(rec));                     \
    }                                                                          \
    static int NAME##_all_backward_graph(ag_tape *tape, const ag_record *rec,  \
                                         ag_tensor *g, const bool *needs_grad, \
                                         ag_tensor **grad_inputs)              \
    {                                                                          \
        return NAME##_backward_graph(tape, rec, g, needs_grad, grad_inputs,    \
                                     view_all(rec));                           \
    }                                                                          \
    static int NAME##_axis_backward_graph(ag_tape *tape, const ag_record *rec, \
                                          ag_tensor *g, const bool *needs_grad, \
                                          ag_tensor **grad_inputs)             \
    {                                                                          \
        return NAME##_backward_graph(tape, rec, g, needs_grad, grad_inputs,    \
                                     view_axis(rec));                          \
    }                                                                          \
    const ag_op ag_op_##NAME = {                                               \
        .name = #NAME,                                                         \
        .n_inputs = 1,                                                         \
        .shape = all_shape,                                                    \
        .forward = NAME##_all_forward,                                         \
        .backward = NAME##_all_backward,                                       \
        .backward_graph = NAME##_all_backward_graph,                           \
    };                                                                         \
    const ag_op ag_op_##NAME##_axis = {                                        \
        .name = #NAME "_axis",                                                 \
        .n_inputs = 1,                                                         \
        .shape = axis_shape,                                                   \
        .forward = NAME##_axis_forward,                                        \
        .backward = NAME##_axis_backward,                                      \
        .backward_graph = NAME##_axis_backward_graph,                          \
    };

REDUCTION_OPS(sum)
REDUCTION_OPS(mean)
REDUCTION_OPS(max)

/* ---- public entry points -------------------------------------------------- */

ag_tensor *ag_sum(ag_tape *tape, ag_tensor *x) { return ag_apply1(tape, &ag_op_sum, x, 0, NULL); }
ag_tensor *ag_mean(ag_tape *tape, ag_tensor *x) { return ag_apply1(tape, &ag_op_mean, x, 0, NULL); }
ag_tensor *ag_max(ag_tape *tape, ag_tensor *x) { return ag_apply1(tape, &ag_op_max, x, 0, NULL); }

ag_tensor *ag_sum_axis(ag_tape *tape, ag_tensor *x, int axis, bool keepdims)
{
    double params[2] = {axis, keepdims};
    return ag_apply1(tape, &ag_op_sum_axis, x, 2, params);
}

ag_tensor *ag_mean_axis(ag_tape *tape, ag_tensor *x, int axis, bool keepdims)
{
    double params[2] = {axis, keepdims};
    return ag_apply1(tape, &ag_op_mean_axis, x, 2, params);
}

ag_tensor *ag_max_axis(ag_tape *tape, ag_tensor *x, int axis, bool keepdims)
{
    double params[2] = {axis, keepdims};
    return ag_apply1(tape, &ag_op_max_axis, x, 2, params);
}
