/*
 * Fuzz target: random op sequences. The input is decoded into leaves of
 * random shapes and values (including 0, +-inf, NaN and subnormals) and
 * into a sequence of ops, losses and tape switches applied to them. Then
 * the last value that requires a gradient is differentiated twice.
 *
 * Besides the sanitizers, the target checks the library's contracts:
 *  - an op that returns NULL has set an error message;
 *  - a tensor's element count is the product of its shape;
 *  - a gradient has its tensor's shape and dtype;
 *  - a second backward pass, after zeroing the leaf gradients, gives the
 *    same gradients bit for bit (intermediate adjoints are not carried over);
 *  - ag_grad, with or without create_graph, gives gradients of the inputs'
 *    shapes, and a gradient built from ops can be differentiated again.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad/nn.h"

#define POOL_SIZE 48
#define MAX_STEPS 40
#define MAX_LEAF_ELEMENTS 64

typedef struct reader {
    const uint8_t *data;
    size_t size;
    size_t pos;
} reader;

/* Returns the next input byte, or 0 once the input is used up. */
static unsigned take(reader *r)
{
    return r->pos < r->size ? r->data[r->pos++] : 0;
}

/* Values chosen to hit the edges of every op's domain. */
static double take_value(reader *r)
{
    static const double special[] = {
        0.0,   -0.0,  1.0,     -1.0,     0.5,       -0.5,      2.0,  -2.0,
        3.0,   1e-3,  1e4,     -1e4,     1e30,      -1e30,     88.8, -104.0,
        1e-310, 1e-45, INFINITY, -INFINITY, NAN,    1e308,     -1e308, 0.25,
    };
    unsigned b = take(r);

    if (b < 2 * sizeof special / sizeof special[0])
        return special[b / 2];
    return ((double)take(r) - 128.0) / 16.0;
}

typedef struct pool {
    ag_tensor *items[POOL_SIZE];
    size_t count;
    ag_tensor *heap[POOL_SIZE]; /* heap leaves, freed at the end */
    size_t heap_count;
} pool;

/* Aborts, so the fuzzer keeps the input, when a contract is broken. */
#define die_unless(condition)                                                  \
    do {                                                                       \
        if (!(condition)) {                                                    \
            fprintf(stderr, "fuzz_ops: broken contract at line %d: %s (%s)\n", \
                    __LINE__, #condition,                                      \
                    ag_error() != NULL ? ag_error() : "no error message");     \
            abort();                                                           \
        }                                                                      \
    } while (0)

/* Checks a result's contract and adds it to the pool. */
static void keep(pool *p, ag_tensor *t)
{
    if (t == NULL) {
        die_unless(ag_error() != NULL);
        return;
    }
    int ndim = ag_tensor_ndim(t);
    die_unless(ndim >= 1 && ndim <= AG_MAX_DIMS);

    size_t numel = 1;
    for (int i = 0; i < ndim; i++)
        numel *= ag_tensor_dim(t, i);
    die_unless(numel == ag_tensor_numel(t));
    if (p->count < POOL_SIZE)
        p->items[p->count++] = t;
}

static ag_tensor *pick(pool *p, reader *r)
{
    return p->items[take(r) % p->count];
}

/* Makes a leaf of 1 to 3 dimensions of size 0 to 4 each. */
static ag_tensor *make_leaf(pool *p, ag_tape *tape, reader *r, ag_dtype dtype)
{
    size_t shape[3];
    int ndim = 1 + (int)(take(r) % 3);
    size_t numel = 1;

    for (int i = 0; i < ndim; i++) {
        shape[i] = take(r) % 5;
        numel *= shape[i];
    }

    unsigned flags = take(r);
    bool on_heap = flags & 1;
    ag_tensor *t = ag_zeros(on_heap ? NULL : tape, dtype, ndim, shape);
    die_unless(t != NULL && numel <= MAX_LEAF_ELEMENTS);
    for (size_t i = 0; i < numel; i++)
        ag_tensor_set(t, i, take_value(r));
    if (flags & 2)
        die_unless(ag_tensor_set_requires_grad(t, true) == 0);
    if (on_heap)
        p->heap[p->heap_count++] = t;
    return t;
}

/* Makes labels for nn_cross_entropy_loss: mostly valid class indices. */
static ag_tensor *make_labels(ag_tape *tape, reader *r, ag_tensor *logits)
{
    size_t rows = ag_tensor_dim(logits, 0);
    size_t classes = ag_tensor_ndim(logits) == 2 ? ag_tensor_dim(logits, 1) : 1;
    ag_tensor *labels = ag_zeros(tape, ag_tensor_dtype(logits), AG_SHAPE(rows));

    for (size_t i = 0; labels != NULL && i < rows; i++) {
        unsigned b = take(r);
        double value = b < 200 && classes > 0 ? (double)(b % classes) : take_value(r);
        ag_tensor_set(labels, i, value);
    }
    return labels;
}

/* Applies a registered op by name through ag_apply, with inputs from the
 * pool and scalar params from the input, as a custom caller could. That
 * reaches axes that are NaN or huge, clamp bounds in the wrong order and
 * wrong input counts. */
static void apply_by_name(pool *p, ag_tape *tape, reader *r)
{
    static const char *const names[] = {
        "add", "sub", "mul", "div", "pow", "maximum", "minimum", "add_scalar",
        "mul_scalar", "pow_scalar", "neg", "exp", "log", "sqrt", "abs", "tanh",
        "sigmoid", "relu", "softplus", "log_sigmoid", "clamp", "matmul", "linear",
        "transpose", "reshape", "sum", "mean", "max", "sum_axis", "mean_axis",
        "max_axis", "logsumexp", "logsumexp_axis", "softmax", "log_softmax",
        "nn_binary_cross_entropy", "nn_binary_cross_entropy_with_logits",
        "nn_softmax_cross_entropy",
    };
    const ag_op *op = ag_op_find(names[take(r) % (sizeof names / sizeof names[0])]);
    ag_tensor *inputs[AG_MAX_INPUTS];
    double params[AG_MAX_PARAMS];

    if (op == NULL)
        return; /* an nn op not registered yet */
    int n_inputs = op->n_inputs;
    if (take(r) % 16 == 0)
        n_inputs = (int)(take(r) % (AG_MAX_INPUTS + 1));
    for (int i = 0; i < n_inputs; i++)
        inputs[i] = pick(p, r);

    int n_params = (int)(take(r) % (AG_MAX_PARAMS + 1));
    for (int i = 0; i < n_params; i++) {
        unsigned b = take(r);
        params[i] = b < 128 ? (double)(b % 8) - 4.0 : take_value(r);
    }
    keep(p, ag_apply(tape, op, n_inputs, inputs, n_params, params));
}

/* Applies one op chosen by the input to operands from the pool. */
static void step(pool *p, ag_tape *tape, reader *r)
{
    typedef ag_tensor *(*unary_fn)(ag_tape *, ag_tensor *);
    typedef ag_tensor *(*binary_fn)(ag_tape *, ag_tensor *, ag_tensor *);
    typedef ag_tensor *(*axis_fn)(ag_tape *, ag_tensor *, int, bool);
    static const unary_fn unary[] = {
        ag_neg,  ag_exp,      ag_log,      ag_sqrt,    ag_abs,  ag_tanh,
        ag_sigmoid, ag_relu,  ag_softplus, ag_log_sigmoid, ag_sum, ag_mean,
        ag_max,  ag_logsumexp, ag_transpose,
    };
    static const binary_fn binary[] = {
        ag_add, ag_sub, ag_mul, ag_div, ag_pow, ag_maximum, ag_minimum, ag_matmul,
        nn_mse_loss, nn_sum_of_squares_loss, nn_bce_loss, nn_bce_with_logits_loss,
    };
    static const axis_fn axis_ops[] = {ag_sum_axis, ag_mean_axis, ag_max_axis,
                                       ag_logsumexp_axis};
    const size_t n_unary = sizeof unary / sizeof unary[0];
    const size_t n_binary = sizeof binary / sizeof binary[0];
    const size_t n_axis = sizeof axis_ops / sizeof axis_ops[0];

    ag_tensor *x = pick(p, r);
    ag_dtype dtype = ag_tensor_dtype(x);
    size_t op = take(r) % (n_unary + n_binary + n_axis + 15);

    if (op < n_unary) {
        keep(p, unary[op](tape, x));
        return;
    }
    op -= n_unary;
    if (op < n_binary) {
        keep(p, binary[op](tape, x, pick(p, r)));
        return;
    }
    op -= n_binary;
    if (op < n_axis) {
        unsigned b = take(r);
        keep(p, axis_ops[op](tape, x, (int)(b % 8) - 4, b & 8));
        return;
    }
    op -= n_axis;

    int axis = (int)(take(r) % 8) - 4;
    switch (op) {
    case 0:
        keep(p, ag_softmax(tape, x, axis));
        break;
    case 1:
        keep(p, ag_log_softmax(tape, x, axis));
        break;
    case 2:
        keep(p, ag_clamp(tape, x, take_value(r), take_value(r)));
        break;
    case 3:
        keep(p, ag_add_scalar(tape, x, take_value(r)));
        break;
    case 4:
        keep(p, ag_mul_scalar(tape, x, take_value(r)));
        break;
    case 5:
        keep(p, ag_pow_scalar(tape, x, take_value(r)));
        break;
    case 6: {
        /* x @ x^T is valid for any 2-D x, so products are reached often. */
        keep(p, ag_matmul(tape, x, ag_transpose(tape, x)));
        break;
    }
    case 7: {
        size_t in = ag_tensor_ndim(x) == 2 ? ag_tensor_dim(x, 1) : 1;
        size_t out = take(r) % 4;
        ag_tensor *w = ag_full(tape, dtype, AG_SHAPE(in, out), take_value(r));
        ag_tensor *b = ag_full(tape, dtype, AG_SHAPE(out), take_value(r));
        if (w != NULL && b != NULL && (take(r) & 1)) {
            ag_tensor_set_requires_grad(w, true);
            ag_tensor_set_requires_grad(b, true);
        }
        /* In the pool, their gradients are zeroed between the two passes. */
        keep(p, w);
        keep(p, b);
        keep(p, ag_linear(tape, x, w, b));
        break;
    }
    case 8: {
        /* Mostly a valid shape: x's elements as (n), (1 x n) or (n x 1). */
        size_t n = ag_tensor_numel(x);
        unsigned kind = take(r) % 4;
        size_t shape[2] = {kind == 1 ? 1 : n, kind == 2 ? 1 : n};
        if (kind == 3) {
            shape[0] = take(r) % 5;
            shape[1] = take(r) % 5;
        }
        keep(p, ag_reshape(tape, x, kind == 0 ? 1 : 2, kind == 0 ? &n : shape));
        break;
    }
    case 9:
        keep(p, ag_detach(tape, x));
        break;
    case 10:
        keep(p, nn_cross_entropy_loss(tape, x, make_labels(tape, r, x)));
        break;
    case 11:
        keep(p, nn_gaussian_nll_loss(tape, x, pick(p, r), pick(p, r)));
        break;
    case 12:
        ag_tape_set_recording(tape, !ag_tape_is_recording(tape));
        break;
    case 13:
        apply_by_name(p, tape, r);
        break;
    default:
        keep(p, ag_tensor_copy(tape, x, dtype == AG_F32 ? AG_F64 : AG_F32));
        break;
    }
}

/* Copies every gradient in the pool (NULL where there is none). */
static void snapshot_grads(pool *p, ag_tape *tape, ag_tensor **copies)
{
    for (size_t i = 0; i < p->count; i++) {
        ag_tensor *g = ag_tensor_grad(p->items[i]);
        copies[i] = g == NULL ? NULL : ag_tensor_copy(tape, g, ag_tensor_dtype(g));
    }
}

static bool same_bits(ag_tensor *a, ag_tensor *b)
{
    for (size_t k = 0; k < ag_tensor_numel(a); k++) {
        double x = ag_tensor_get(a, k);
        double y = ag_tensor_get(b, k);
        if (!(x == y || (isnan(x) && isnan(y))))
            return false;
    }
    return true;
}

/* Differentiates `output` twice and checks the gradients' contracts. */
static void differentiate(pool *p, ag_tape *tape, ag_tensor *output)
{
    ag_tensor *seed = NULL;

    if (ag_tensor_numel(output) != 1)
        seed = ag_ones(tape, ag_tensor_dtype(output), ag_tensor_ndim(output),
                       ag_tensor_shape(output));
    if (ag_backward(tape, output, seed) != 0) {
        die_unless(ag_error() != NULL);
        return;
    }
    for (size_t i = 0; i < p->count; i++) {
        ag_tensor *t = p->items[i];
        ag_tensor *g = ag_tensor_grad(t);
        if (g != NULL)
            die_unless(ag_tensor_same_shape(g, t) && ag_tensor_dtype(g) == ag_tensor_dtype(t));
    }

    /* A second pass from zeroed leaves must give the same gradients. */
    ag_tensor *first[POOL_SIZE];
    snapshot_grads(p, tape, first);
    for (size_t i = 0; i < p->count; i++) {
        if (ag_tensor_record(p->items[i]) == NULL)
            ag_tensor_zero_grad(p->items[i]);
    }
    die_unless(ag_backward(tape, output, seed) == 0);
    for (size_t i = 0; i < p->count; i++) {
        ag_tensor *g = ag_tensor_grad(p->items[i]);
        if (first[i] != NULL)
            die_unless(g != NULL && same_bits(first[i], g));
    }
}

/* Takes the gradient of `output` with ag_grad, optionally building it from
 * recorded ops, and differentiates the sum of those gradients once more.
 * Checks the contracts only: NULL gradients and a message on failure,
 * gradients of the inputs' shapes on success. */
static void differentiate_twice(pool *p, ag_tape *tape, ag_tensor *output, bool create_graph)
{
    ag_tensor *inputs[POOL_SIZE];
    ag_tensor *grads[POOL_SIZE];
    int n = 0;

    for (size_t i = 0; i < p->count; i++) {
        if (ag_tensor_requires_grad(p->items[i]) && p->items[i] != output)
            inputs[n++] = p->items[i];
    }
    if (n == 0)
        return;

    ag_error_clear();
    if (ag_grad(tape, output, NULL, n, inputs, grads, create_graph) != 0) {
        die_unless(ag_error() != NULL);
        for (int i = 0; i < n; i++)
            die_unless(grads[i] == NULL);
        return;
    }
    ag_tensor *total = NULL;
    for (int i = 0; i < n; i++) {
        die_unless(grads[i] != NULL && ag_tensor_same_shape(grads[i], inputs[i]));
        if (create_graph && ag_tensor_requires_grad(grads[i]))
            total = total == NULL ? ag_sum(tape, grads[i])
                                  : ag_add(tape, total, ag_sum(tape, grads[i]));
    }
    if (total != NULL && ag_backward(tape, total, NULL) != 0)
        die_unless(ag_error() != NULL);
}

int fuzz_ops_one(const uint8_t *data, size_t size);
int fuzz_ops_one(const uint8_t *data, size_t size)
{
    static FILE *sink;
    reader r = {data, size, 0};
    pool p = {.count = 0};

    if (sink == NULL)
        sink = fopen("/dev/null", "w");

    ag_tape *tape = ag_tape_new();
    if (tape == NULL)
        return 0;
    ag_dtype dtype = (take(&r) & 1) ? AG_F64 : AG_F32;
    ag_tape_set_anomaly_mode(tape, take(&r) % 4 == 0);

    int leaves = 1 + (int)(take(&r) % 3);
    for (int i = 0; i < leaves; i++)
        keep(&p, make_leaf(&p, tape, &r, dtype));

    for (int s = 0; s < MAX_STEPS && r.pos < r.size; s++) {
        ag_error_clear();
        step(&p, tape, &r);
    }

    /* Differentiate the newest value that requires a gradient. */
    ag_tape_set_recording(tape, true);
    for (size_t i = p.count; i-- > 0;) {
        if (ag_tensor_requires_grad(p.items[i])) {
            differentiate(&p, tape, p.items[i]);
            if (ag_tensor_numel(p.items[i]) == 1)
                differentiate_twice(&p, tape, p.items[i], take(&r) & 1);
            break;
        }
    }
    if (sink != NULL) {
        ag_tape_print(tape, sink);
        ag_tape_write_dot(tape, sink);
    }

    ag_tape_free(tape);
    for (size_t i = 0; i < p.heap_count; i++)
        ag_tensor_free(p.heap[i]);
    return 0;
}

#ifndef FUZZ_NO_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_ops_one(data, size);
}
#endif
