/*
 * logsumexp, softmax and log_softmax along an axis.
 *
 * Each op works on the slices of a (outer, n, inner) view of its input, as
 * the reductions do: slice (o, i) has n elements `inner` apart, starting at
 * o*n*inner + i. Every slice is shifted by its max m first, so no argument
 * of exp is positive and exp cannot overflow:
 *   logsumexp(x) = m + log(sum_k exp(x_k - m))
 *   softmax(x)_k = exp(x_k - m) / sum_j exp(x_j - m)
 *   log_softmax(x)_k = (x_k - m) - log(sum_j exp(x_j - m))
 * Sums of exponentials accumulate in double for both dtypes.
 */
#include <limits.h>
#include <math.h>
#include <tgmath.h>

#include "internal.h"

typedef struct slice_view {
    size_t outer; /* product of the dimensions before the axis */
    size_t n;     /* length of each slice */
    size_t inner; /* product of the dimensions after the axis, also the slice stride */
} slice_view;

/* ---- views and shape rules ------------------------------------------------ */

static slice_view view_all(const ag_record *rec)
{
    return (slice_view){.outer = 1, .n = rec->inputs[0]->numel, .inner = 1};
}

/* Only called after the shape rule accepted the axis. */
static slice_view view_axis(const ag_record *rec)
{
    slice_view v;

    ag_axis_split(rec->inputs[0], ag_axis_param(rec), &v.outer, &v.n, &v.inner);
    return v;
}

/* logsumexp reduces exactly as sum does, so it shares sum's shape rules:
 * shape (1) over all elements, and params [0] axis, [1] keepdims. */
static int logsumexp_shape(const ag_record *rec, ag_dtype *dtype, int *ndim,
                           size_t *shape)
{
    return ag_op_sum.shape(rec, dtype, ndim, shape);
}

static int logsumexp_axis_shape(const ag_record *rec, ag_dtype *dtype, int *ndim,
                                size_t *shape)
{
    return ag_op_sum_axis.shape(rec, dtype, ndim, shape);
}

/* softmax and log_softmax keep the input's shape. params: [0] axis. */
static int softmax_shape(const ag_record *rec, ag_dtype *dtype, int *ndim, size_t *shape)
{
    if (ag_axis_param(rec) < 0)
        return -1;
    return ag_shape_like_input(rec, dtype, ndim, shape);
}

/* ---- kernels, written once for float and double --------------------------- */

/*
 * Each kernel handles one slice of n >= 1 elements spaced `stride` apart.
 * The loops over slices call them with a literal stride of 1 for the last
 * axis, so the inlined copy for the common (batch x classes) case walks
 * contiguous memory.
 *
 * Infinities: a slice of all -inf has logsumexp -inf, and its gradient is
 * zero because no element contributes. A slice holding +inf has logsumexp
 * +inf, and its gradient, the limit of softmax, is shared evenly by the +inf
 * elements. softmax and log_softmax of such a slice take that limit too
 * (1/k and -log k on its k +inf elements, 0 and -inf elsewhere), where the
 * shifted inputs inf - inf would give NaN. A slice of all -inf has no limit
 * and gives NaN (-inf - (-inf)), as in PyTorch.
 */
#define SOFTMAX_KERNELS(T)                                                     \
    /* The max of the slice; NaN wins, so a NaN input gives a NaN result. */   \
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
    /* sum_k exp(x_k - m), written into y as well when y is not NULL. */       \
    static inline double sum_exp_##T(const T *x, T *y, size_t n, size_t stride, \
                                     T m)                                      \
    {                                                                          \
        double total = 0.0;                                                    \
        for (size_t k = 0; k < n; k++) {                                       \
            const T e = exp(x[k * stride] - m);                                \
            if (y != NULL)                                                     \
                y[k * stride] = e;                                             \
            total += e;                                                        \
        }                                                                      \
        return total;                                                          \
    }                                                                          \
                                                                               \
    static inline T logsumexp_slice_##T(const T *x, size_t n, size_t stride)   \
    {                                                                          \
        if (n == 0)                                                            \
            return (T)-INFINITY; /* log of an empty sum */                     \
        const T m = max_slice_##T(x, n, stride);                               \
        if (isinf(m))                                                          \
            return m;                                                          \
        return (T)((double)m + log(sum_exp_##T(x, NULL, n, stride, m)));       \
    }                                                                          \
                                                                               \
    /* dx_k += dy * softmax(x)_k. softmax comes from the shifted inputs again \
     * rather than as exp(x_k - y): y = m + log s is rounded at the scale of   \
     * m, which would cost f32 three digits at |x| = 1e4. */                   \
    static inline void logsumexp_slice_backward_##T(const T *x, T dy, T *dx,   \
                                                    size_t n, size_t stride)   \
    {                                                                          \
        if (n == 0)                                                            \
            return;                                                            \
        const T m = max_slice_##T(x, n, stride);                               \
        if (m == (T)-INFINITY)                                                 \
            return;                                                            \
        if (m == (T)INFINITY) {                                                \
            size_t count = 0;                                                  \
            for (size_t k = 0; k < n; k++)                                     \
                count += x[k * stride] == m;                                   \
            for (size_t k = 0; k < n; k++) {                                   \
                if (x[k * stride] == m)                                        \
                    dx[k * stride] += dy / (T)count;                           \
            }                                                                  \
            return;                                                            \
        }                                                                      \
        const T scale = (T)(dy / sum_exp_##T(x, NULL, n, stride, m));          \
        for (size_t k = 0; k < n; k++)                                         \
            dx[k * stride] += scale * exp(x[k * stride] - m);                  \
    }                                                                          \
                                                                               \
    /* The number of +inf elements of a slice whose max is +inf. */          \
    static inline size_t count_pos_inf_##T(const T *x, size_t n, size_t stride) \
    {                                                                          \
        size_t count = 0;                                                      \
        for (size_t k = 0; k < n; k++)                                         \
            count += x[k * stride] == (T)INFINITY;                             \
        return count;                                                          \
    }                                                                          \
                                                                               \
    static inline void softmax_slice_##T(const T *x, T *y, size_t n,           \
                                         size_t stride)                        \
    {                                                                          \
        const T m = max_slice_##T(x, n, stride);                               \
        if (m == (T)INFINITY) {                                                \
            const T share = (T)1 / (T)count_pos_inf_##T(x, n, stride);         \
            for (size_t k = 0; k < n; k++)                                     \
                y[k * stride] = x[k * stride] == m ? share : (T)0;             \
            return;                                                            \
        }                                                                      \
        const T inverse = (T)(1.0 / sum_exp_##T(x, y, n, stride, m));          \
        for (size_t k = 0; k < n; k++)                                         \
            y[k * stride] *= inverse;                                          \
    }                                                                          \
                                                                               \
    /* dx = y * (dy - sum_j dy_j y_j): the softmax Jacobian diag(y) - y y^T    \
     * applied to dy. */                                                      \
    static inline void softmax_slice_backward_##T(const T *y, const T *dy,     \
                                                  T *dx, size_t n,             \
                                                  size_t stride)               \
    {                                                                          \
        double dot = 0.0;                                                      \
        for (size_t k = 0; k < n; k++)                                         \
            dot += (double)dy[k * stride] * y[k * stride];                     \
        const T dot_t = (T)dot;                                                \
        for (size_t k = 0; k < n; k++)                                         \
            dx[k * stride] += y[k * stride] * (dy[k * stride] - dot_t);        \
    }                                                                          \
                                                                               \
    static inline void log_softmax_slice_##T(const T *x, T *y, size_t n,       \
                                             size_t stride)                    \
    {                                                                          \
        const T m = max_slice_##T(x, n, stride);                               \
        if (m == (T)INFINITY) {                                                \
            const T log_share = -log((T)count_pos_inf_##T(x, n, stride));      \
            for (size_t k = 0; k < n; k++)                                     \
                y[k * stride] = x[k * stride] == m ? log_share : (T)-INFINITY; \
            return;                                                            \
        }                                                                      \
        const T log_total = (T)log(sum_exp_##T(x, NULL, n, stride, m));        \
        for (size_t k = 0; k < n; k++)                                         \
            y[k * stride] = (x[k * stride] - m) - log_total;                   \
    }                                                                          \
                                                                               \
    /* dx = dy - softmax * sum_j dy_j, with softmax = exp(y). */               \
    static inline void log_softmax_slice_backward_##T(const T *y, const T *dy, \
                                                      T *dx, size_t n,         \
                                                      size_t stride)           \
    {                                                                          \
        double total = 0.0;                                                    \
        for (size_t k = 0; k < n; k++)                                         \
            total += dy[k * stride];                                           \
        const T total_t = (T)total;                                            \
        for (size_t k = 0; k < n; k++)                                         \
            dx[k * stride] += dy[k * stride] - exp(y[k * stride]) * total_t;   \
    }                                                                          \
                                                                               \
    /* ---- loops over the slices of a view ---- */                           \
                                                                               \
    static void logsumexp_forward_##T(const T *x, T *y, slice_view v)          \
    {                                                                          \
        for (size_t o = 0; o < v.outer; o++) {                                 \
            const T *xo = x + o * v.n * v.inner;                               \
            if (v.inner == 1) {                                                \
                y[o] = logsumexp_slice_##T(xo, v.n, 1);                        \
                continue;                                                      \
            }                                                                  \
            for (size_t i = 0; i < v.inner; i++)                               \
                y[o * v.inner + i] = logsumexp_slice_##T(xo + i, v.n, v.inner); \
        }                                                                      \
    }                                                                          \
                                                                               \
    static void logsumexp_backward_##T(const T *x, const T *gy, T *gx,         \
                                       slice_view v)                           \
    {                                                                          \
        for (size_t o = 0; o < v.outer; o++) {                                 \
            const size_t start = o * v.n * v.inner;                            \
            if (v.inner == 1) {                                                \
                logsumexp_slice_backward_##T(x + start, gy[o], gx + start,     \
                                             v.n, 1);                          \
                continue;                                                      \
            }                                                                  \
            for (size_t i = 0; i < v.inner; i++) {                             \
                logsumexp_slice_backward_##T(x + start + i, gy[o * v.inner + i], \
                                             gx + start + i, v.n, v.inner);    \
            }                                                                  \
        }                                                                      \
    }                                                                          \
                                                                               \
    static void softmax_forward_##T(const T *x, T *y, slice_view v)            \
    {                                                                          \
        for (size_t o = 0; o < v.outer; o++) {                                 \
            const size_t start = o * v.n * v.inner;                            \
            if (v.inner == 1) {                                                \
                softmax_slice_##T(x + start, y + start, v.n, 1);               \
                continue;                                                      \
            }                                                                  \
            for (size_t i = 0; i < v.inner; i++)                               \
                softmax_slice_##T(x + start + i, y + start + i, v.n, v.inner); \
        }                                                                      \
    }                                                                          \
                                                                               \
    static void softmax_backward_##T(const T *y, const T *gy, T *gx,           \
                                     slice_view v)                             \
    {                                                                          \
        for (size_t o = 0; o < v.outer; o++) {                                 \
            const size_t s = o * v.n * v.inner;                                \
            if (v.inner == 1) {                                                \
                softmax_slice_backward_##T(y + s, gy + s, gx + s, v.n, 1);     \
                continue;                                                      \
            }                                                                  \
            for (size_t i = 0; i < v.inner; i++)                               \
                softmax_slice_backward_##T(y + s + i, gy + s + i, gx + s + i,  \
                                           v.n, v.inner);                      \
        }                                                                      \
    }                                                                          \
                                                                               \
    static void log_softmax_forward_##T(const T *x, T *y, slice_view v)        \
    {                                                                          \
        for (size_t o = 0; o < v.outer; o++) {                                 \
            const size_t start = o * v.n * v.inner;                            \
            if (v.inner == 1) {                                                \
                log_softmax_slice_##T(x + start, y + start, v.n, 1);           \
                continue;                                                      \
            }                                                                  \
            for (size_t i = 0; i < v.inner; i++)                               \
                log_softmax_slice_##T(x + start + i, y + start + i, v.n,       \
                                      v.inner);                                \
        }                                                                      \
    }                                                                          \
                                                                               \
    static void log_softmax_backward_##T(const T *y, const T *gy, T *gx,       \
                                         slice_view v)                         \
    {                                                                          \
        for (size_t o = 0; o < v.outer; o++) {                                 \
            const size_t s = o * v.n * v.inner;                                \
            if (v.inner == 1) {                                                \
                log_softmax_slice_backward_##T(y + s, gy + s, gx + s, v.n, 1); \
                continue;                                                      \
            }                                                                  \
            for (size_t i = 0; i < v.inner; i++)                               \
                log_softmax_slice_backward_##T(y + s + i, gy + s + i,          \
                                               gx + s + i, v.n, v.inner);      \
        }                                                                      \
    }

SOFTMAX_KERNELS(float)
SOFTMAX_KERNELS(double)

/* Calls the float or double kernel NAME; the data pointers are void *. */
#define BY_DTYPE(dtype, NAME, ...)                                             \
    ((dtype) == AG_F32 ? NAME##_float(__VA_ARGS__) : NAME##_double(__VA_ARGS__))

/* ---- forward and backward rules ------------------------------------------- */

static int logsumexp_forward(ag_record *rec, slice_view v)
{
    ag_tensor *x = rec->inputs[0];

    BY_DTYPE(x->dtype, logsumexp_forward, x->data, rec->output->data, v);
    return 0;
}

static int logsumexp_backward(ag_tape *tape, ag_record *rec, slice_view v)
{
    ag_tensor *gx = ag_input_grad(tape, rec, 0);
    ag_tensor *y = rec->output;

    if (gx != NULL)
        BY_DTYPE(gx->dtype, logsumexp_backward, rec->inputs[0]->data, y->grad->data,
                 gx->data, v);
    return 0;
}

/* An empty view has no slice to visit, and the slice kernels need n >= 1. */
static int softmax_forward(ag_tape *tape, ag_record *rec)
{
    ag_tensor *x = rec->inputs[0];
    slice_view v = view_axis(rec);

    (void)tape;
    if (v.n > 0)
        BY_DTYPE(x->dtype, softmax_forward, x->data, rec->output->data, v);
    return 0;
}

static int softmax_backward(ag_tape *tape, ag_record *rec)
{
    ag_tensor *gx = ag_input_grad(tape, rec, 0);
    ag_tensor *y = rec->output;
    slice_view v = view_axis(rec);

    if (gx != NULL && v.n > 0)
        BY_DTYPE(gx->dtype, softmax_backward, y->data, y->grad->data, gx->data, v);
    return 0;
}

static int log_softmax_forward(ag_tape *tape, ag_record *rec)
{
    ag_tensor *x = rec->inputs[0];
    slice_view v = view_axis(rec);

    (void)tape;
    if (v.n > 0)
        BY_DTYPE(x->dtype, log_softmax_forward, x->data, rec->output->data, v);
    return 0;
}

static int log_softmax_backward(ag_tape *tape, ag_record *rec)
{
    ag_tensor *gx = ag_input_grad(tape, rec, 0);
    ag_tensor *y = rec->output;
    slice_view v = view_axis(rec);

    if (gx != NULL && v.n > 0)
        BY_DTYPE(gx->dtype, log_softmax_backward, y->data, y->grad->data, gx->data, v);
    return 0;
}

static int logsumexp_all_forward(ag_tape *tape, ag_record *rec)
{
    (void)tape;
    return logsumexp_forward(rec, view_all(rec));
}

static int logsumexp_all_backward(ag_tape *tape, ag_record *rec)
{
    return logsumexp_backward(tape, rec, view_all(rec));
}

static int logsumexp_axis_forward(ag_tape *tape, ag_record *rec)
{
    (void)tape;
    return logsumexp_forward(rec, view_axis(rec));
}

static int logsumexp_axis_backward(ag_tape *tape, ag_record *rec)
{
    return logsumexp_backward(tape, rec, view_axis(rec));
}

/* ---- differentiable backward rules ---------------------------------------- */

/* Reshapes t to x's shape with `axis` kept at size 1, so it broadcasts
 * against x along the slices. */
static ag_tensor *with_kept_axis(ag_tape *tape, const ag_record *rec, int axis,
                                 ag_tensor *t)
{
    const ag_tensor *x = rec->inputs[0];
    size_t shape[AG_MAX_DIMS];

    for (int i = 0; i < x->ndim; i++)
        shape[i] = i == axis ? 1 : x->shape[i];
    return ag_reshape(tape, t, x->ndim, shape);
}

/* d logsumexp(x)/dx = softmax(x) along the reduced slices, so dx = g *
 * softmax(x) with g broadcast over each slice. Over all elements, softmax
 * runs on x flattened.
 * A slice holding +inf gets the share of its +inf elements, as from the
 * kernel, because softmax takes that limit too.
 * NOTE: a slice of all -inf gives NaN here (softmax has no limit there),
 * where the kernel returns 0. */
static int logsumexp_all_backward_graph(ag_tape *tape, const ag_record *rec,
                                        ag_tensor *g, const bool *needs_grad,
                                        ag_tensor **grad_inputs)
{
    ag_tensor *x = rec->inputs[0];

    if (!needs_grad[0])
        return 0;
    ag_tensor *flat = ag_reshape(tape, x, AG_SHAPE(x->numel));
    ag_tensor *p = ag_reshape(tape, ag_softmax(tape, flat, 0), x->ndim, x->shape);
    grad_inputs[0] = ag_mul(tape, p, g);
    return grad_inputs[0] == NULL ? -1 : 0;
}

static int logsumexp_axis_backward_graph(ag_tape *tape, const ag_record *rec,
                                         ag_tensor *g, const bool *needs_grad,
                                         ag_tensor **grad_inputs)
{
    int axis = ag_axis_param(rec);

    if (!needs_grad[0])
        return 0;
    ag_tensor *p = ag_softmax(tape, rec->inputs[0], axis);
    grad_inputs[0] = ag_mul(tape, p, with_kept_axis(tape, rec, axis, g));
    return grad_inputs[0] == NULL ? -1 : 0;
}

/* dx = y * (g - sum_j g_j y_j), from the output y. */
static int softmax_backward_graph(ag_tape *tape, const ag_record *rec, ag_tensor *g,
                                  const bool *needs_grad, ag_tensor **grad_inputs)
{
    ag_tensor *y = rec->output;
    int axis = ag_axis_param(rec);

    if (!needs_grad[0])
        return 0;
    ag_tensor *dot = ag_sum_axis(tape, ag_mul(tape, g, y), axis, true);
    grad_inputs[0] = ag_mul(tape, y, ag_sub(tape, g, dot));
    return grad_inputs[0] == NULL ? -1 : 0;
}

/* dx = g - exp(y) * sum_j g_j, with exp(y) = softmax(x). */
static int log_softmax_backward_graph(ag_tape *tape, const ag_record *rec,
                                      ag_tensor *g, const bool *needs_grad,
                                      ag_tensor **grad_inputs)
{
    ag_tensor *y = rec->output;
    int axis = ag_axis_param(rec);

    if (!needs_grad[0])
        return 0;
    ag_tensor *total = ag_sum_axis(tape, g, axis, true);
    grad_inputs[0] = ag_sub(tape, g, ag_mul(tape, ag_exp(tape, y), total));
    return grad_inputs[0] == NULL ? -1 : 0;
}

/* ---- op definitions ------------------------------------------------------- */

const ag_op ag_op_logsumexp = {
    .name = "logsumexp",
    .n_inputs = 1,
    .shape = logsumexp_shape,
    .forward = logsumexp_all_forward,
    .backward = logsumexp_all_backward,
    .backward_graph = logsumexp_all_backward_graph,
};

const ag_op ag_op_logsumexp_axis = {
    .name = "logsumexp_axis",
    .n_inputs = 1,
    .shape = logsumexp_axis_shape,
    .forward = logsumexp_axis_forward,
    .backward = logsumexp_axis_backward,
    .backward_graph = logsumexp_axis_backward_graph,
};

const ag_op ag_op_softmax = {
    .name = "softmax",
    .n_inputs = 1,
    .shape = softmax_shape,
    .forward = softmax_forward,
    .backward = softmax_backward,
    .backward_graph = softmax_backward_graph,
};

const ag_op ag_op_log_softmax = {
    .name = "log_softmax",
    .n_inputs = 1,
    .shape = softmax_shape,
    .forward = log_softmax_forward,
    .backward = log_softmax_backward,
    .backward_graph = log_softmax_backward_graph,
};

/* ---- public entry points -------------------------------------------------- */

ag_tensor *ag_logsumexp(ag_tape *tape, ag_tensor *x)
{
    return ag_apply1(tape, &ag_op_logsumexp, x, 0, NULL);
}

ag_tensor *ag_logsumexp_axis(ag_tape *tape, ag_tensor *x, int axis, bool keepdims)
{
    double params[2] = {axis, keepdims};
    return ag_apply1(tape, &ag_op_logsumexp_axis, x, 2, params);
}

ag_tensor *ag_softmax(ag_tape *tape, ag_tensor *x, int axis)
{
    double params[1] = {axis};
    return ag_apply1(tape, &ag_op_softmax, x, 1, params);
}

ag_tensor *ag_log_softmax(ag_tape *tape, ag_tensor *x, int axis)
{
    double params[1] = {axis};
    return ag_apply1(tape, &ag_op_log_softmax, x, 1, params);
}
