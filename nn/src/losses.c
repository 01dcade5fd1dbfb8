/*
 * Losses. Most are compositions of autograd ops, so their gradients come
 * from the ops' backward rules. Three are custom ops registered through the
 * public API, exactly as a user's op would be: binary cross-entropy, whose
 * clamped logs would give 0 * inf = NaN in a composed backward pass, binary
 * cross-entropy on logits, whose composed form is inf - inf at infinite
 * logits, and the fused softmax cross-entropy, the hot path of
 * classification training. Each also has a backward_graph rule built from
 * ops, so ag_grad with create_graph differentiates through it.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <threads.h>

#include "tapegrad/nn.h"

/* ---- argument checks ------------------------------------------------------ */

/* Checks that pred and target are present, of one dtype and of exactly one
 * shape. `loss_name` starts the message. */
static int check_pair(const char *loss_name, ag_tensor *pred, ag_tensor *target)
{
    char sp[64];
    char st[64];

    if (pred == NULL || target == NULL)
        return -1; /* an earlier failure; keep its message */
    if (ag_tensor_dtype(pred) != ag_tensor_dtype(target)) {
        ag_set_error("%s: prediction is %s and target is %s; convert one with "
                     "ag_tensor_copy",
                     loss_name, ag_tensor_dtype(pred) == AG_F32 ? "f32" : "f64",
                     ag_tensor_dtype(target) == AG_F32 ? "f32" : "f64");
        return -1;
    }
    if (!ag_tensor_same_shape(pred, target)) {
        ag_set_error("%s: prediction of shape %s and target of shape %s differ; "
                     "losses do not broadcast, so reshape the target to the "
                     "prediction's shape",
                     loss_name, ag_shape_str(pred, sp, sizeof sp),
                     ag_shape_str(target, st, sizeof st));
        return -1;
    }
    return 0;
}

/* Rejects an empty prediction for a loss that averages: its mean would be
 * 0 / 0. */
static int check_nonempty(const char *loss_name, const ag_tensor *pred)
{
    char sp[64];

    if (ag_tensor_numel(pred) > 0)
        return 0;
    ag_set_error("%s: prediction of shape %s has no elements, so the mean over "
                 "them is undefined; skip empty batches (or use "
                 "nn_sum_of_squares_loss, which is 0 for them)",
                 loss_name, ag_shape_str(pred, sp, sizeof sp));
    return -1;
}

/* Registers `op` once per process, then checks that its name finds this
 * definition and not a user's op registered under the same name. */
static int ensure_registered(const ag_op *op, once_flag *once, void (*register_once)(void))
{
    call_once(once, register_once);
    if (ag_op_find(op->name) != op) {
        ag_set_error("%s: another op is registered under the name \"%s\"; "
                     "register user ops under other names",
                     op->name, op->name);
        return -1;
    }
    return 0;
}

/* ---- squared errors ------------------------------------------------------- */

ag_tensor *nn_mse_loss(ag_tape *tape, ag_tensor *pred, ag_tensor *target)
{
    if (check_pair("nn_mse_loss", pred, target) != 0 ||
        check_nonempty("nn_mse_loss", pred) != 0)
        return NULL;

    ag_tensor *diff = ag_sub(tape, pred, target);
    return ag_mean(tape, ag_mul(tape, diff, diff));
}

ag_tensor *nn_sum_of_squares_loss(ag_tape *tape, ag_tensor *pred, ag_tensor *target)
{
    if (check_pair("nn_sum_of_squares_loss", pred, target) != 0)
        return NULL;

    ag_tensor *diff = ag_sub(tape, target, pred);
    return ag_mul_scalar(tape, ag_sum(tape, ag_mul(tape, diff, diff)), 0.5);
}

/* ---- binary cross-entropy on probabilities -------------------------------- */

/* PyTorch's bounds: logs clamped at -100, and the gradient's denominator
 * p (1 - p) kept at least 1e-12. */
#define BCE_LOG_MIN (-100.0)
#define BCE_GRAD_EPS 1e-12

static double clamped_log(double x)
{
    double l = log(x);
    return l < BCE_LOG_MIN ? BCE_LOG_MIN : l;
}

/* Elementwise l_i = -(y log p + (1 - y) log(1 - p)), logs clamped. A
 * probability outside [0, 1] (or NaN) is rejected, as PyTorch does. */
static int bce_forward(ag_tape *tape, ag_record *rec)
{
    (void)tape;
    ag_tensor *p = rec->inputs[0];
    ag_tensor *y = rec->inputs[1];
    ag_tensor *out = rec->output;
    size_t n = ag_tensor_numel(p);

    for (size_t i = 0; i < n; i++) {
        double pi = ag_tensor_get(p, i);
        double yi = ag_tensor_get(y, i);

        if (!(pi >= 0.0 && pi <= 1.0)) {
            ag_set_error("nn_bce_loss: probability %.17g at element %zu is outside "
                         "[0, 1]; pass sigmoid outputs, or logits to "
                         "nn_bce_with_logits_loss",
                         pi, i);
            return -1;
        }
        double loss = -(yi * clamped_log(pi) + (1.0 - yi) * clamped_log(1.0 - pi));
        ag_tensor_set(out, i, loss);
    }
    return 0;
}

/* dl/dp = (p - y) / max(p (1 - p), eps) and dl/dy = log(1 - p) - log(p),
 * both with PyTorch's clamps, so they stay finite at p = 0 and p = 1. */
static int bce_backward(ag_tape *tape, ag_record *rec)
{
    ag_tensor *p = rec->inputs[0];
    ag_tensor *y = rec->inputs[1];
    ag_tensor *gout = ag_tensor_grad(rec->output);
    ag_tensor *gp = ag_input_grad(tape, rec, 0);
    ag_tensor *gy = ag_input_grad(tape, rec, 1);
    size_t n = ag_tensor_numel(p);

    for (size_t i = 0; i < n; i++) {
        double pi = ag_tensor_get(p, i);
        double yi = ag_tensor_get(y, i);
        double g = ag_tensor_get(gout, i);

        if (gp != NULL) {
            double denom = fmax(pi * (1.0 - pi), BCE_GRAD_EPS);
            ag_tensor_set(gp, i, ag_tensor_get(gp, i) + g * (pi - yi) / denom);
        }
        if (gy != NULL) {
            double d = clamped_log(1.0 - pi) - clamped_log(pi);
            ag_tensor_set(gy, i, ag_tensor_get(gy, i) + g * d);
        }
    }
    return 0;
}

static int same_shape_rule(const ag_record *rec, ag_dtype *dtype, int *ndim, size_t *shape)
{
    const ag_tensor *x = rec->inputs[0];

    *dtype = ag_tensor_dtype(x);
    *ndim = ag_tensor_ndim(x);
    memcpy(shape, ag_tensor_shape(x), (size_t)*ndim * sizeof(size_t));
    return 0;
}

/* max(log x, -100) from ops, for x in [0, 1]: log x where it is at least
 * -100, and the constant -100 elsewhere. There x is replaced by the
 * constant 1 in the log, so the derivative is 0 and not 0 * (1/x), which
 * is NaN at x = 0 and overflows f32 for x below about 3e-39. */
static ag_tensor *clamped_log_graph(ag_tape *tape, ag_tensor *x)
{
    ag_dtype dtype = ag_tensor_dtype(x);
    int ndim = ag_tensor_ndim(x);
    const size_t *shape = ag_tensor_shape(x);
    ag_tensor *keep = ag_zeros(tape, dtype, ndim, shape);   /* 1 where log x >= -100 */
    ag_tensor *offset = ag_zeros(tape, dtype, ndim, shape); /* -100 elsewhere */

    if (keep == NULL || offset == NULL)
        return NULL;
    for (size_t i = 0; i < ag_tensor_numel(x); i++) {
        if (log(ag_tensor_get(x, i)) >= BCE_LOG_MIN)
            ag_tensor_set(keep, i, 1.0);
        else
            ag_tensor_set(offset, i, BCE_LOG_MIN);
    }

    /* x where kept, 1 elsewhere */
    ag_tensor *safe = ag_add(tape, ag_mul(tape, x, keep),
                             ag_add_scalar(tape, ag_neg(tape, keep), 1.0));
    return ag_add(tape, ag_log(tape, safe), offset);
}

/* bce_backward's rule built from ops, so ag_grad can differentiate it again.
 * Each clamp has derivative 0 where it holds.
 * NOTE: where p (1 - p) < 1e-12 the clamped dl/dp and dl/dy are not the
 * gradient of one function, so d2l/dp dy and d2l/dy dp differ there. */
static int bce_backward_graph(ag_tape *tape, const ag_record *rec, ag_tensor *grad_output,
                              const bool *needs_grad, ag_tensor **grad_inputs)
{
    ag_tensor *p = rec->inputs[0];
    ag_tensor *y = rec->inputs[1];
    ag_tensor *one_minus_p = ag_add_scalar(tape, ag_neg(tape, p), 1.0);

    if (needs_grad[0]) {
        ag_tensor *variance = ag_mul(tape, p, one_minus_p);
        ag_tensor *denom = ag_clamp(tape, variance, BCE_GRAD_EPS, 0.25);
        ag_tensor *numerator = ag_mul(tape, grad_output, ag_sub(tape, p, y));

        grad_inputs[0] = ag_div(tape, numerator, denom);
        if (grad_inputs[0] == NULL)
            return -1;
    }
    if (needs_grad[1]) {
        ag_tensor *d = ag_sub(tape, clamped_log_graph(tape, one_minus_p),
                              clamped_log_graph(tape, p));

        grad_inputs[1] = ag_mul(tape, grad_output, d);
        if (grad_inputs[1] == NULL)
            return -1;
    }
    return 0;
}

static const ag_op bce_op = {
    .name = "nn_binary_cross_entropy",
    .n_inputs = 2,
    .shape = same_shape_rule,
    .forward = bce_forward,
    .backward = bce_backward,
    .backward_graph = bce_backward_graph,
};

static once_flag bce_once = ONCE_FLAG_INIT;
static void register_bce(void) { ag_op_register(&bce_op); }

ag_tensor *nn_bce_loss(ag_tape *tape, ag_tensor *prob, ag_tensor *target)
{
    if (check_pair("nn_bce_loss", prob, target) != 0 ||
        check_nonempty("nn_bce_loss", prob) != 0)
        return NULL;
    if (ensure_registered(&bce_op, &bce_once, register_bce) != 0)
        return NULL;

    ag_tensor *inputs[2] = {prob, target};
    ag_tensor *terms = ag_apply(tape, &bce_op, 2, inputs, 0, NULL);
    return ag_mean(tape, terms);
}

/* ---- binary cross-entropy on logits --------------------------------------- */

/* l = max(a, 0) - a y + log(1 + exp(-|a|)), which never overflows. At
 * a = +-inf the finite form gives inf - inf, so the limit is taken instead:
 * l = w inf with w = 1 - y at +inf and w = y at -inf, and l = 0 when w = 0
 * (a certain, correct prediction). */
static double bce_logits_term(double a, double y)
{
    if (isinf(a)) {
        double weight = a > 0 ? 1.0 - y : y;
        return weight == 0.0 ? 0.0 : weight * INFINITY;
    }
    return fmax(a, 0.0) - a * y + log1p(exp(-fabs(a)));
}

/* sigmoid(a) from exp(-|a|), which lies in (0, 1], so nothing overflows. */
static double stable_sigmoid(double a)
{
    double e = exp(-fabs(a));
    return a >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

static int bce_logits_forward(ag_tape *tape, ag_record *rec)
{
    (void)tape;
    ag_tensor *a = rec->inputs[0];
    ag_tensor *y = rec->inputs[1];
    size_t n = ag_tensor_numel(a);

    for (size_t i = 0; i < n; i++)
        ag_tensor_set(rec->output, i, bce_logits_term(ag_tensor_get(a, i), ag_tensor_get(y, i)));
    return 0;
}

/* dl/da = sigmoid(a) - y, finite at a = +-inf too, and dl/dy = -a. */
static int bce_logits_backward(ag_tape *tape, ag_record *rec)
{
    ag_tensor *a = rec->inputs[0];
    ag_tensor *y = rec->inputs[1];
    ag_tensor *gout = ag_tensor_grad(rec->output);
    ag_tensor *ga = ag_input_grad(tape, rec, 0);
    ag_tensor *gy = ag_input_grad(tape, rec, 1);
    size_t n = ag_tensor_numel(a);

    for (size_t i = 0; i < n; i++) {
        double ai = ag_tensor_get(a, i);
        double g = ag_tensor_get(gout, i);

        if (ga != NULL) {
            double d = stable_sigmoid(ai) - ag_tensor_get(y, i);
            ag_tensor_set(ga, i, ag_tensor_get(ga, i) + g * d);
        }
        if (gy != NULL)
            ag_tensor_set(gy, i, ag_tensor_get(gy, i) - g * ai);
    }
    return 0;
}

/* The same rule built from ops, so ag_grad can differentiate it again. */
static int bce_logits_backward_graph(ag_tape *tape, const ag_record *rec,
                                     ag_tensor *grad_output, const bool *needs_grad,
                                     ag_tensor **grad_inputs)
{
    ag_tensor *a = rec->inputs[0];
    ag_tensor *y = rec->inputs[1];

    if (needs_grad[0]) {
        grad_inputs[0] = ag_mul(tape, grad_output, ag_sub(tape, ag_sigmoid(tape, a), y));
        if (grad_inputs[0] == NULL)
            return -1;
    }
    if (needs_grad[1]) {
        grad_inputs[1] = ag_mul(tape, grad_output, ag_neg(tape, a));
        if (grad_inputs[1] == NULL)
            return -1;
    }
    return 0;
}

static const ag_op bce_logits_op = {
    .name = "nn_binary_cross_entropy_with_logits",
    .n_inputs = 2,
    .shape = same_shape_rule,
    .forward = bce_logits_forward,
    .backward = bce_logits_backward,
    .backward_graph = bce_logits_backward_graph,
};

static once_flag bce_logits_once = ONCE_FLAG_INIT;
static void register_bce_logits(void) { ag_op_register(&bce_logits_op); }

ag_tensor *nn_bce_with_logits_loss(ag_tape *tape, ag_tensor *logits, ag_tensor *target)
{
    if (check_pair("nn_bce_with_logits_loss", logits, target) != 0 ||
        check_nonempty("nn_bce_with_logits_loss", logits) != 0)
        return NULL;
    if (ensure_registered(&bce_logits_op, &bce_logits_once, register_bce_logits) != 0)
        return NULL;

    ag_tensor *inputs[2] = {logits, target};
    return ag_mean(tape, ag_apply(tape, &bce_logits_op, 2, inputs, 0, NULL));
}

/* ---- fused softmax cross-entropy ------------------------------------------ */

/* Checks that label r is an integer in [0, classes) and returns it. */
static int read_label(const ag_tensor *labels, size_t r, size_t classes, size_t *label)
{
    double value = ag_tensor_get(labels, r);

    if (!(value == floor(value))) {
        ag_set_error("nn_cross_entropy_loss: label %.17g in row %zu is not an "
                     "integer; labels are class indices in [0, %zu)",
                     value, r, classes);
        return -1;
    }
    if (value < 0 || value >= (double)classes) {
        ag_set_error("nn_cross_entropy_loss: label %.17g in row %zu is out of "
                     "range; labels are class indices in [0, %zu)",
                     value, r, classes);
        return -1;
    }
    *label = (size_t)value;
    return 0;
}

static int cross_entropy_shape(const ag_record *rec, ag_dtype *dtype, int *ndim,
                               size_t *shape)
{
    const ag_tensor *logits = rec->inputs[0];
    const ag_tensor *labels = rec->inputs[1];
    char sa[64];
    char sc[64];

    if (ag_tensor_ndim(logits) != 2 || ag_tensor_ndim(labels) != 1 ||
        ag_tensor_dim(labels, 0) != ag_tensor_dim(logits, 0)) {
        ag_set_error("nn_cross_entropy_loss: logits of shape %s and labels of "
                     "shape %s do not fit; pass logits (batch x classes) and "
                     "labels (batch)",
                     ag_shape_str(logits, sa, sizeof sa),
                     ag_shape_str(labels, sc, sizeof sc));
        return -1;
    }
    *dtype = ag_tensor_dtype(logits);
    *ndim = 1;
    shape[0] = 1;
    return 0;
}

/* Values kept for backward: each row's log-sum-exp and its label. */
typedef struct cross_entropy_saved {
    double *logsumexp;
    size_t *labels;
} cross_entropy_saved;

/*
 * Kernels for one element type T, written once for float and double. The
 * forward pass sums -log_softmax(a_r)[c_r] = logsumexp(a_r) - a_r,c_r over
 * rows in double. The log-sum-exp is m + log(sum_c exp(a_r,c - m)) with m
 * the row maximum, so no exp overflows; a row of -inf gives -inf.
 * The backward pass adds g (softmax(a_r)_c - [c == c_r]) / B, with the
 * softmax taken as exp(a_r,c - logsumexp(a_r)).
 *
 * A row holding +inf takes the limit in which its k infinite logits grow
 * together, as ag_logsumexp does. The softmax is then 1/k on them and 0
 * elsewhere. The row's loss is log k when the label's logit is +inf, and
 * inf otherwise. The plain formulas would give inf - inf = NaN.
 */
#define CROSS_ENTROPY_KERNELS(T)                                                \
    static size_t count_pos_inf_##T(const T *row, size_t classes)               \
    {                                                                           \
        size_t k = 0;                                                           \
        for (size_t c = 0; c < classes; c++)                                    \
            k += row[c] == (T)INFINITY;                                         \
        return k;                                                               \
    }                                                                           \
    static double cross_entropy_forward_##T(const T *logits, size_t batch,      \
                                            size_t classes,                     \
                                            cross_entropy_saved *saved)         \
    {                                                                           \
        double total = 0.0;                                                     \
                                                                                \
        for (size_t r = 0; r < batch; r++) {                                    \
            const T *row = logits + r * classes;                                \
            const double label_logit = (double)row[saved->labels[r]];           \
            double m = -INFINITY;                                               \
            double sum = 0.0;                                                   \
                                                                                \
            for (size_t c = 0; c < classes; c++)                                \
                m = fmax(m, (double)row[c]);                                    \
            if (m == INFINITY) {                                                \
                saved->logsumexp[r] = m;                                        \
                total += label_logit == m                                       \
                             ? log((double)count_pos_inf_##T(row, classes))     \
                             : INFINITY;                                        \
                continue;                                                       \
            }                                                                   \
            for (size_t c = 0; c < classes && !isinf(m); c++)                   \
                sum += exp((double)row[c] - m);                                 \
            saved->logsumexp[r] = isinf(m) ? m : m + log(sum);                  \
            total += saved->logsumexp[r] - label_logit;                         \
        }                                                                       \
        return total;                                                           \
    }                                                                           \
    static void cross_entropy_backward_##T(const T *logits, T *grad,            \
                                           size_t batch, size_t classes,        \
                                           double scale,                        \
                                           const cross_entropy_saved *saved)    \
    {                                                                           \
        for (size_t r = 0; r < batch; r++) {                                    \
            const T *row = logits + r * classes;                                \
            T *grad_row = grad + r * classes;                                   \
            const double lse = saved->logsumexp[r];                             \
            const double share =                                                \
                lse == INFINITY ? 1.0 / (double)count_pos_inf_##T(row, classes) \
                                : 0.0;                                          \
                                                                                \
            for (size_t c = 0; c < classes; c++) {                              \
                double softmax = lse == INFINITY                                \
                                     ? (row[c] == (T)INFINITY ? share : 0.0)    \
                                     : exp((double)row[c] - lse);               \
                double onehot = c == saved->labels[r] ? 1.0 : 0.0;              \
                grad_row[c] += (T)(scale * (softmax - onehot));                 \
            }                                                                   \
        }                                                                       \
    }

CROSS_ENTROPY_KERNELS(float)
CROSS_ENTROPY_KERNELS(double)

static int cross_entropy_forward(ag_tape *tape, ag_record *rec)
{
    ag_tensor *logits = rec->inputs[0];
    ag_tensor *labels = rec->inputs[1];
    size_t batch = ag_tensor_dim(logits, 0);
    size_t classes = ag_tensor_dim(logits, 1);

    cross_entropy_saved *saved = ag_tape_alloc(tape, sizeof *saved);
    if (saved == NULL)
        return -1;
    saved->logsumexp = ag_tape_alloc(tape, (batch + 1) * sizeof(double));
    saved->labels = ag_tape_alloc(tape, (batch + 1) * sizeof(size_t));
    if (saved->logsumexp == NULL || saved->labels == NULL)
        return -1;
    for (size_t r = 0; r < batch; r++) {
        if (read_label(labels, r, classes, &saved->labels[r]) != 0)
            return -1;
    }

    double total;
    if (ag_tensor_dtype(logits) == AG_F32)
        total = cross_entropy_forward_float(ag_tensor_data(logits), batch, classes, saved);
    else
        total = cross_entropy_forward_double(ag_tensor_data(logits), batch, classes, saved);
    rec->saved = saved;
    ag_tensor_set(rec->output, 0, total / (double)batch);
    return 0;
}

static int cross_entropy_backward(ag_tape *tape, ag_record *rec)
{
    ag_tensor *logits = rec->inputs[0];
    ag_tensor *grad = ag_input_grad(tape, rec, 0);

    if (grad == NULL)
        return 0;

    size_t batch = ag_tensor_dim(logits, 0);
    size_t classes = ag_tensor_dim(logits, 1);
    double scale = ag_tensor_item(ag_tensor_grad(rec->output)) / (double)batch;
    if (ag_tensor_dtype(logits) == AG_F32)
        cross_entropy_backward_float(ag_tensor_data(logits), ag_tensor_data(grad), batch,
                                     classes, scale, rec->saved);
    else
        cross_entropy_backward_double(ag_tensor_data(logits), ag_tensor_data(grad), batch,
                                      classes, scale, rec->saved);
    return 0;
}

/* Returns the one-hot (batch x classes) matrix of the saved labels, a
 * constant on the tape. */
static ag_tensor *one_hot_labels(ag_tape *tape, const ag_tensor *logits,
                                 const cross_entropy_saved *saved)
{
    size_t batch = ag_tensor_dim(logits, 0);
    size_t classes = ag_tensor_dim(logits, 1);
    ag_tensor *onehot = ag_zeros(tape, ag_tensor_dtype(logits), AG_SHAPE(batch, classes));

    for (size_t r = 0; onehot != NULL && r < batch; r++)
        ag_tensor_set(onehot, r * classes + saved->labels[r], 1.0);
    return onehot;
}

/* cross_entropy_backward's rule built from ops, so ag_grad can
 * differentiate it again: g (softmax(a) - onehot) / B. Labels get none. */
static int cross_entropy_backward_graph(ag_tape *tape, const ag_record *rec,
                                        ag_tensor *grad_output, const bool *needs_grad,
                                        ag_tensor **grad_inputs)
{
    ag_tensor *logits = rec->inputs[0];
    size_t batch = ag_tensor_dim(logits, 0);

    if (!needs_grad[0])
        return 0;

    /* ag_softmax takes the same limit as the kernel in a row holding +inf. */
    ag_tensor *onehot = one_hot_labels(tape, logits, rec->saved);
    ag_tensor *residual = ag_sub(tape, ag_softmax(tape, logits, 1), onehot);
    ag_tensor *scaled = ag_mul_scalar(tape, grad_output, 1.0 / (double)batch);

    grad_inputs[0] = ag_mul(tape, scaled, residual);
    return grad_inputs[0] == NULL ? -1 : 0;
}

static const ag_op cross_entropy_op = {
    .name = "nn_softmax_cross_entropy",
    .n_inputs = 2,
    .shape = cross_entropy_shape,
    .forward = cross_entropy_forward,
    .backward = cross_entropy_backward,
    .backward_graph = cross_entropy_backward_graph,
};

static once_flag cross_entropy_once = ONCE_FLAG_INIT;
static void register_cross_entropy(void) { ag_op_register(&cross_entropy_op); }

ag_tensor *nn_cross_entropy_loss(ag_tape *tape, ag_tensor *logits, ag_tensor *labels)
{
    if (logits == NULL || labels == NULL)
        return NULL;
    if (ag_tensor_dtype(logits) != ag_tensor_dtype(labels)) {
        ag_set_error("nn_cross_entropy_loss: logits are %s and labels %s; store "
                     "the class indices in a tensor of the logits' dtype",
                     ag_tensor_dtype(logits) == AG_F32 ? "f32" : "f64",
                     ag_tensor_dtype(labels) == AG_F32 ? "f32" : "f64");
        return NULL;
    }
    if (ag_tensor_ndim(logits) == 2 && ag_tensor_dim(logits, 0) > 0 &&
        ag_tensor_dim(logits, 1) == 0) {
        char sl[64];

        ag_set_error("nn_cross_entropy_loss: logits of shape %s have no classes; "
                     "the logits need one column per class",
                     ag_shape_str(logits, sl, sizeof sl));
        return NULL;
    }
    if (check_nonempty("nn_cross_entropy_loss", logits) != 0)
        return NULL;
    if (ensure_registered(&cross_entropy_op, &cross_entropy_once,
                          register_cross_entropy) != 0)
        return NULL;

    /* Labels get no gradient. Handing the op a detached view when they
     * require one keeps them out of the backward sweep and keeps
     * ag_check_records from moving class indices off the integers. */
    if (tape != NULL && ag_tensor_requires_grad(labels)) {
        labels = ag_detach(tape, labels);
        if (labels == NULL)
            return NULL;
    }

    ag_tensor *inputs[2] = {logits, labels};
    return ag_apply(tape, &cross_entropy_op, 2, inputs, 0, NULL);
}

/* ---- Gaussian negative log-likelihood ------------------------------------- */

ag_tensor *nn_gaussian_nll_loss(ag_tape *tape, ag_tensor *pred, ag_tensor *target,
                                ag_tensor *sigma)
{
    const double pi = 3.14159265358979323846;

    if (check_pair("nn_gaussian_nll_loss", pred, target) != 0 || sigma == NULL)
        return NULL;
    if (ag_tensor_numel(sigma) != 1 || ag_tensor_dtype(sigma) != ag_tensor_dtype(pred)) {
        char ss[64];
        ag_set_error("nn_gaussian_nll_loss: sigma of shape %s and dtype %s is "
                     "not a one-element tensor of the prediction's dtype (%s); "
                     "create it with ag_scalar",
                     ag_shape_str(sigma, ss, sizeof ss),
                     ag_tensor_dtype(sigma) == AG_F32 ? "f32" : "f64",
                     ag_tensor_dtype(pred) == AG_F32 ? "f32" : "f64");
        return NULL;
    }
    if (ag_tensor_ndim(sigma) != 1)
        sigma = ag_reshape(tape, sigma, AG_SHAPE(1));

    /* (1 / (2 sigma^2)) sum (y - f)^2 + (N / 2) log(2 pi sigma^2) */
    double n = (double)ag_tensor_numel(pred);
    ag_tensor *diff = ag_sub(tape, target, pred);
    ag_tensor *squares = ag_sum(tape, ag_mul(tape, diff, diff));
    ag_tensor *variance = ag_mul(tape, sigma, sigma);
    ag_tensor *fit = ag_div(tape, squares, ag_mul_scalar(tape, variance, 2.0));
    ag_tensor *norm = ag_mul_scalar(tape, ag_log(tape, ag_mul_scalar(tape, variance, 2.0 * pi)),
                                    n / 2.0);
    return ag_add(tape, fit, norm);
}
