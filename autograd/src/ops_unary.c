/*
 * Elementwise functions of one tensor. Each op is one UNARY_OP line: its
 * forward value y(x) beside its local derivative dy/dx, written once with
 * <tgmath.h> functions so the same text gives the f32 and f64 kernels.
 * In the expressions, x is the input element, y the output element and p
 * the op's first scalar attribute, all of the kernel's type T.
 */
#include <tgmath.h>

#include "apply.h"

#define UNARY_KERNELS(NAME, TYPE, FORWARD, DERIVATIVE)                            \
    static void NAME##_forward_##TYPE(const TYPE *restrict xs,                \
                                      TYPE *restrict ys, size_t n,            \
                                      const double *params)                   \
    {                                                                          \
        typedef TYPE T;                                                        \
        const T p = (T)params[0];                                              \
        const T q = (T)params[1];                                              \
        (void)p;                                                               \
        (void)q;                                                               \
        for (size_t i = 0; i < n; i++) {                                       \
            const T x = xs[i];                                                 \
            ys[i] = (FORWARD);                                                 \
        }                                                                      \
    }                                                                          \
    static void NAME##_backward_##TYPE(const TYPE *restrict xs,               \
                                       const TYPE *restrict ys,               \
                                       const TYPE *restrict gys,              \
                                       TYPE *restrict gxs, size_t n,          \
                                       const double *params)                  \
    {                                                                          \
        typedef TYPE T;                                                        \
        const T p = (T)params[0];                                              \
        const T q = (T)params[1];                                              \
        (void)p;                                                               \
        (void)q;                                                               \
        for (size_t i = 0; i < n; i++) {                                       \
            const T x = xs[i];                                                 \
            const T y = ys[i];                                                 \
            (void)x;                                                           \
            (void)y;                                                           \
            gxs[i] += gys[i] * (DERIVATIVE);                                   \
        }                                                                      \
    }

#define UNARY_OP(NAME, FORWARD, DERIVATIVE)                          \
    UNARY_KERNELS(NAME, float, FORWARD, DERIVATIVE)                            \
    UNARY_KERNELS(NAME, double, FORWARD, DERIVATIVE)                           \
    static int NAME##_forward(ag_tape *tape, ag_record *rec)                   \
    {                                                                          \
        (void)tape;                                                            \
        ag_tensor *x = rec->inputs[0];                                         \
        ag_tensor *y = rec->output;                                            \
        if (x->dtype == AG_F32)                                                \
            NAME##_forward_float(x->data, y->data, x->numel, rec->params);     \
        else                                                                   \
            NAME##_forward_double(x->data, y->data, x->numel, rec->params);    \
        return 0;                                                              \
    }                                                                          \
    static int NAME##_backward(ag_tape *tape, ag_record *rec)                  \
    {                                                                          \
        ag_tensor *gx = ag_adjoint_of(rec, 0);                                 \
        ag_tensor *x = rec->inputs[0];                                         \
        ag_tensor *y = rec->output;                                            \
        if (gx == NULL)                                                        \
            return 0;                                                          \
        if (x->dtype == AG_F32)                                                \
            NAME##_backward_float(x->data, y->data, y->grad->data, gx->data,   \
                                  x->numel, rec->params);                      \
        else                                                                   \
            NAME##_backward_double(x->data, y->data, y->grad->data, gx->data,  \
                                   x->numel, rec->params);                     \
        return 0;                                                              \
    }                                                                          \
    static int NAME##_backward_graph(ag_tape *tape, const ag_record *rec,      \
                                     ag_tensor *g, const bool *needs_grad,     \
                                     ag_tensor **grad_inputs);                 \
    const ag_op ag_op_##NAME = {                                               \
        .name = #NAME,                                                         \
        .n_inputs = 1,                                                         \
        .shape = ag_shape_like_input,                                          \
        .forward = NAME##_forward,                                             \
        .backward = NAME##_backward,                                           \
        .backward_graph = NAME##_backward_graph,                               \
    };

/* The ops. Overflow-free forms: sigmoid, softplus and log_sigmoid only take
 * exp of -|x|, which lies in (0, 1], so no intermediate overflows. */

UNARY_OP(neg, -x, (T)-1)
UNARY_OP(exp, exp(x), y)
UNARY_OP(log, log(x), (T)1 / x)
UNARY_OP(sqrt, sqrt(x), (T)0.5 / y) /* inf at 0, as PyTorch */
UNARY_OP(abs, fabs(x), (T)((x > 0) - (x < 0))) /* 0 at 0 */
UNARY_OP(tanh, tanh(x), (T)1 - y * y)
UNARY_OP(sigmoid,
         x >= 0 ? (T)1 / ((T)1 + exp(-x)) : exp(x) / ((T)1 + exp(x)),
         y * ((T)1 - y))
/* relu passes NaN through (x <= 0 is false for NaN), in value and gradient.
 * The derivative is written as a negated test, not as `? 0 : 1`, because GCC
 * turns the latter into a conditional multiply it cannot vectorise. */
UNARY_OP(relu, x <= 0 ? (T)0 : x, (T)!(x <= 0))
/* softplus(x) = max(x, 0) + log1p(exp(-|x|)); its derivative is sigmoid(x). */
UNARY_OP(softplus, (x > 0 ? x : (T)0) + log1p(exp(-fabs(x))),
         x >= 0 ? (T)1 / ((T)1 + exp(-x)) : exp(x) / ((T)1 + exp(x)))
/* log_sigmoid(x) = min(x, 0) - log1p(exp(-|x|)); its derivative is sigmoid(-x). */
UNARY_OP(log_sigmoid, (x < 0 ? x : (T)0) - log1p(exp(-fabs(x))),
         x <= 0 ? (T)1 / ((T)1 + exp(x)) : exp(-x) / ((T)1 + exp(-x)))
/* clamp to [p, q]; NaN passes; the gradient flows where p <= x <= q. */
UNARY_OP(clamp, x < p ? p : (x > q ? q : x), (T)(x >= p && x <= q ? 1 : 0))
UNARY_OP(add_scalar, x + p, (T)1)
UNARY_OP(mul_scalar, x * p, p)
/* d/dx x^p = p x^(p-1), taken as 0 for p == 0 (also at x == 0, as PyTorch). */
UNARY_OP(pow_scalar, pow(x, p), p == 0 ? (T)0 : p * pow(x, p - (T)1))

/* ---- differentiable backward rules ---------------------------------------- */

/* Each rule builds g * dy/dx from ops, the same derivative as the kernel's,
 * so the rules of ops whose derivative uses the output y differentiate
 * through y's record. The kinks' derivative masks are constants. */
#define UNARY_GRAPH_RULE(NAME, GRADIENT)                                       \
    static int NAME##_backward_graph(ag_tape *tape, const ag_record *rec,      \
                                     ag_tensor *g, const bool *needs_grad,     \
                                     ag_tensor **grad_inputs)                  \
    {                                                                          \
        ag_tensor *x = rec->inputs[0];                                         \
        ag_tensor *y = rec->output;                                            \
        (void)tape;                                                            \
        (void)x;                                                               \
        (void)y;                                                               \
        if (!needs_grad[0])                                                    \
            return 0;                                                          \
        grad_inputs[0] = (GRADIENT);                                           \
        return grad_inputs[0] == NULL ? -1 : 0;                                \
    }

/* 1 - t, for the derivatives of tanh and sigmoid. */
static ag_tensor *one_minus(ag_tape *tape, ag_tensor *t)
{
    return ag_add_scalar(tape, ag_neg(tape, t), 1.0);
}

UNARY_GRAPH_RULE(neg, ag_neg(tape, g))
UNARY_GRAPH_RULE(exp, ag_mul(tape, g, y))
UNARY_GRAPH_RULE(log, ag_div(tape, g, x))
UNARY_GRAPH_RULE(sqrt, ag_div(tape, ag_mul_scalar(tape, g, 0.5), y))
UNARY_GRAPH_RULE(abs, ag_mul(tape, g, ag_apply1(tape, &ag_op_abs_derivative, x, 0, NULL)))
UNARY_GRAPH_RULE(tanh, ag_mul(tape, g, one_minus(tape, ag_mul(tape, y, y))))
UNARY_GRAPH_RULE(sigmoid, ag_mul(tape, g, ag_mul(tape, y, one_minus(tape, y))))
UNARY_GRAPH_RULE(relu, ag_mul(tape, g, ag_apply1(tape, &ag_op_relu_derivative, x, 0, NULL)))
UNARY_GRAPH_RULE(softplus, ag_mul(tape, g, ag_sigmoid(tape, x)))
UNARY_GRAPH_RULE(log_sigmoid, ag_mul(tape, g, ag_sigmoid(tape, ag_neg(tape, x))))
UNARY_GRAPH_RULE(clamp,
                 ag_mul(tape, g, ag_apply1(tape, &ag_op_clamp_derivative, x, 2, rec->params)))
UNARY_GRAPH_RULE(add_scalar, g)
UNARY_GRAPH_RULE(mul_scalar, ag_mul_scalar(tape, g, rec->params[0]))

/* p x^(p-1); for p == 0 the derivative is 0 everywhere (a NULL gradient). */
static int pow_scalar_backward_graph(ag_tape *tape, const ag_record *rec, ag_tensor *g,
                                     const bool *needs_grad, ag_tensor **grad_inputs)
{
    const double p = rec->params[0];

    if (!needs_grad[0] || p == 0)
        return 0;
    ag_tensor *slope = ag_mul_scalar(tape, ag_pow_scalar(tape, rec->inputs[0], p - 1), p);
    grad_inputs[0] = ag_mul(tape, g, slope);
    return grad_inputs[0] == NULL ? -1 : 0;
}

/* ---- public entry points -------------------------------------------------- */

/* The entry points apply their op through the inline body of ag_apply. The
 * op is then a constant, and the compiler calls its forward kernel directly. */
static inline ag_tensor *apply_unary(ag_tape *tape, const ag_op *op, ag_tensor *x,
                                     int n_params, const double *params)
{
    ag_tensor *inputs[1] = {x};
    return ag_apply_inline(tape, op, 1, inputs, n_params, params);
}

ag_tensor *ag_neg(ag_tape *tape, ag_tensor *x) { return apply_unary(tape, &ag_op_neg, x, 0, NULL); }
ag_tensor *ag_exp(ag_tape *tape, ag_tensor *x) { return apply_unary(tape, &ag_op_exp, x, 0, NULL); }
ag_tensor *ag_log(ag_tape *tape, ag_tensor *x) { return apply_unary(tape, &ag_op_log, x, 0, NULL); }
ag_tensor *ag_sqrt(ag_tape *tape, ag_tensor *x) { return apply_unary(tape, &ag_op_sqrt, x, 0, NULL); }
ag_tensor *ag_abs(ag_tape *tape, ag_tensor *x) { return apply_unary(tape, &ag_op_abs, x, 0, NULL); }
ag_tensor *ag_tanh(ag_tape *tape, ag_tensor *x) { return apply_unary(tape, &ag_op_tanh, x, 0, NULL); }
ag_tensor *ag_sigmoid(ag_tape *tape, ag_tensor *x) { return apply_unary(tape, &ag_op_sigmoid, x, 0, NULL); }
ag_tensor *ag_relu(ag_tape *tape, ag_tensor *x) { return apply_unary(tape, &ag_op_relu, x, 0, NULL); }
ag_tensor *ag_softplus(ag_tape *tape, ag_tensor *x) { return apply_unary(tape, &ag_op_softplus, x, 0, NULL); }
ag_tensor *ag_log_sigmoid(ag_tape *tape, ag_tensor *x) { return apply_unary(tape, &ag_op_log_sigmoid, x, 0, NULL); }

ag_tensor *ag_clamp(ag_tape *tape, ag_tensor *x, double low, double high)
{
    if (x == NULL)
        return NULL;
    if (!(low <= high)) {
        ag_set_error("ag_clamp: low %g is greater than high %g (or NaN); pass "
                     "low <= high",
                     low, high);
        return NULL;
    }

    double bounds[2] = {low, high};
    return apply_unary(tape, &ag_op_clamp, x, 2, bounds);
}

ag_tensor *ag_add_scalar(ag_tape *tape, ag_tensor *x, double c)
{
    return apply_unary(tape, &ag_op_add_scalar, x, 1, &c);
}

ag_tensor *ag_mul_scalar(ag_tape *tape, ag_tensor *x, double c)
{
    return apply_unary(tape, &ag_op_mul_scalar, x, 1, &c);
}

ag_tensor *ag_pow_scalar(ag_tape *tape, ag_tensor *x, double p)
{
    return apply_unary(tape, &ag_op_pow_scalar, x, 1, &p);
}
