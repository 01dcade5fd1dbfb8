/*
 * tapegrad autograd: tensors, a tape, and reverse-mode differentiation.
 *
 * Conventions used throughout:
 *  - Tensors are dense, contiguous and row-major, of dtype f32 or f64, with
 *    1 to AG_MAX_DIMS dimensions. A scalar is a tensor with one element.
 *  - Layers follow the row-vector convention S = xW + b: x is batch x in,
 *    W is in x out, b is 1 x out.
 *  - Every op takes the tape first. Its result lives in the tape's arena and
 *    stays valid until ag_tape_reset or ag_tape_free.
 *  - Errors are values. A function that fails returns NULL (or -1) and sets
 *    a message readable with ag_error(). An op given a NULL input returns NULL
 *    without touching the message, so a whole expression can be built and
 *    checked once at the end.
 *  - The library never prints and never aborts on caller input.
 */
#ifndef TAPEGRAD_AUTOGRAD_H
#define TAPEGRAD_AUTOGRAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AG_MAX_DIMS 6   /* most dimensions a tensor can have */
#define AG_MAX_INPUTS 4 /* most inputs an op can take */
#define AG_MAX_PARAMS 4 /* most scalar attributes an op record stores */

typedef enum ag_dtype { AG_F32 = 0, AG_F64 = 1 } ag_dtype;

typedef struct ag_tensor ag_tensor;
typedef struct ag_tape ag_tape;

/* Expands to the two arguments `ndim, shape` from a list of dimensions:
 * ag_zeros(tp, AG_F64, AG_SHAPE(2, 3)). */
#define AG_SHAPE(...)                                                        \
    (int)(sizeof((size_t[]){__VA_ARGS__}) / sizeof(size_t)),                 \
        (const size_t[]){__VA_ARGS__}

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

/* Returns the message of the most recent error on this thread, or NULL when
 * none is set. The message names the function, the offending shapes or values
 * and the fix. It stays set until ag_error_clear or the next failing call. */
const char *ag_error(void);

/* Clears this thread's error message. */
void ag_error_clear(void);

/* Sets this thread's error message (printf format). For custom ops and
 * layers built on the library, so their failures read like built-in ones. */
void ag_set_error(const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* ------------------------------------------------------------------------ */
/* Memory                                                                    */
/* ------------------------------------------------------------------------ */

/* Allocation functions the library uses for all of its heap memory. */
typedef struct ag_allocator {
    void *(*alloc)(size_t size, void *user);
    void *(*realloc)(void *ptr, size_t size, void *user);
    void (*free)(void *ptr, void *user);
    void *user;
} ag_allocator;

/* Replaces the allocator for all later allocations; NULL restores malloc,
 * realloc and free. Memory must be freed by the allocator that made it, so
 * call this before creating any tape or tensor. Not thread-safe. Tests and
 * benchmarks use it to count allocations. */
void ag_set_allocator(const ag_allocator *allocator);

/* Allocate, resize and free heap memory through the current allocator, with
 * the contracts of malloc, realloc and free (ag_alloc(0) may return NULL).
 * Code built on the library (nn, user layers) uses these so a replaced
 * allocator receives all of the library's allocations. */
void *ag_alloc(size_t size);
void *ag_realloc(void *ptr, size_t size);
void ag_free(void *ptr);

/* Allocates zeroed memory for n elements of `size` bytes, or returns NULL on
 * overflow or when out of memory. */
void *ag_calloc(size_t n, size_t size);

/* ------------------------------------------------------------------------ */
/* Tape                                                                      */
/* ------------------------------------------------------------------------ */

/* Creates an empty tape that records. Returns NULL when out of memory. The
 * caller frees it with ag_tape_free. */
ag_tape *ag_tape_new(void);

/* Frees the tape, its records and every tensor in its arena. NULL is a no-op.
 * Heap tensors (created with a NULL tape) are not touched. */
void ag_tape_free(ag_tape *tape);

/* Drops every record and every tensor made on the tape since the last reset,
 * keeping the memory for reuse, so a warm loop of reset, forward and backward
 * makes no heap allocation. Gradients of heap tensors are kept. */
void ag_tape_reset(ag_tape *tape);

/* Turns recording on or off and returns the previous setting. With recording
 * off, ops still compute their values on the arena but append no record and
 * their results do not require gradients (evaluation, optimizer updates). */
bool ag_tape_set_recording(ag_tape *tape, bool recording);

/* Returns whether ops applied on the tape are recorded. */
bool ag_tape_is_recording(const ag_tape *tape);

/* Turns anomaly mode on or off and returns the previous setting. Off by
 * default. In anomaly mode every op applied on the tape checks its output,
 * and ag_backward and ag_grad check the seed and, after each record's
 * backward rule, the adjoints that rule added into, for NaN and infinity
 * (with create_graph, the adjoints are built by ops, which check their
 * outputs). The first non-finite value stops the computation: the op
 * returns NULL, or ag_backward or ag_grad returns -1. The error names the op and its record index (the
 * tape size for an op that is not recorded). It also gives the count of NaN
 * and inf, the first bad element, and the shape, dtype, min, max and
 * non-finite count of each input. Values that are legitimately infinite
 * (log(0), the mean of an empty tensor) are reported too. The checks read
 * every element; with the mode off they cost one branch per op. A leaf
 * gradient that is already non-finite from an earlier backward call is
 * blamed on the first record that adds into it. */
bool ag_tape_set_anomaly_mode(ag_tape *tape, bool enabled);

/* Returns whether anomaly mode is on. */
bool ag_tape_anomaly_mode(const ag_tape *tape);

/* Returns the number of records on the tape. */
size_t ag_tape_size(const ag_tape *tape);

/* Returns the bytes of arena memory the tape has allocated (in use or not). */
size_t ag_tape_capacity(const ag_tape *tape);

/* Allocates `size` bytes, aligned to 64, from the tape's arena. The memory is
 * released by ag_tape_reset. For custom ops that save values for backward.
 * Returns NULL and sets an error when out of memory. */
void *ag_tape_alloc(ag_tape *tape, size_t size);

/* ------------------------------------------------------------------------ */
/* Tensors                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * Every creation function takes a tape. With a tape, the tensor lives in the
 * tape's arena until the next reset. With tape == NULL, the tensor is a heap
 * tensor owned by the caller, freed with ag_tensor_free: use that for
 * parameters and data that outlive a step.
 *
 * Shapes have 1 to AG_MAX_DIMS dimensions. A dimension may be 0 (an empty
 * tensor). Creation fails with NULL and a message on an invalid shape or
 * when out of memory.
 */

/* Creates a tensor of zeros. */
ag_tensor *ag_zeros(ag_tape *tape, ag_dtype dtype, int ndim, const size_t *shape);

/* Creates a tensor of ones. */
ag_tensor *ag_ones(ag_tape *tape, ag_dtype dtype, int ndim, const size_t *shape);

/* Creates a tensor with every element equal to `value` (rounded to f32 for
 * an f32 tensor). */
ag_tensor *ag_full(ag_tape *tape, ag_dtype dtype, int ndim, const size_t *shape,
                   double value);

/* Creates a one-element tensor of shape (1). */
ag_tensor *ag_scalar(ag_tape *tape, ag_dtype dtype, double value);

/* Creates a tensor holding a copy of `data`, which has numel elements of
 * type float (AG_F32) or double (AG_F64). The caller keeps ownership of
 * `data`. */
ag_tensor *ag_tensor_from_data(ag_tape *tape, ag_dtype dtype, int ndim,
                               const size_t *shape, const void *data);

/* Creates a tensor of the given dtype from an array of doubles (converted,
 * rounding to nearest for f32). The caller keeps ownership of `data`. */
ag_tensor *ag_tensor_from_doubles(ag_tape *tape, ag_dtype dtype, int ndim,
                                  const size_t *shape, const double *data);

/* Creates a copy of `t` with the given dtype, not connected to the tape's
 * graph (no record, no gradient). With tape == NULL the copy is a heap
 * tensor. */
ag_tensor *ag_tensor_copy(ag_tape *tape, const ag_tensor *t, ag_dtype dtype);

/* Frees a heap tensor and its gradient. NULL and tensors that live on a tape
 * are ignored (the tape frees those). */
void ag_tensor_free(ag_tensor *t);

/* The accessors below accept NULL (usually an earlier failure): they return
 * 0, NULL, "", false or NaN, keep an earlier error message, and otherwise
 * set one saying the tensor is NULL. */

/* Returns the dtype. */
ag_dtype ag_tensor_dtype(const ag_tensor *t);

/* Returns the number of dimensions. */
int ag_tensor_ndim(const ag_tensor *t);

/* Returns the size of dimension `axis`; a negative axis counts from the end.
 * Returns 0 for an axis out of range. */
size_t ag_tensor_dim(const ag_tensor *t, int axis);

/* Returns the shape array (ndim entries), valid as long as the tensor. */
const size_t *ag_tensor_shape(const ag_tensor *t);

/* Returns the number of elements. */
size_t ag_tensor_numel(const ag_tensor *t);

/* Returns the tape the tensor lives on, or NULL for a heap tensor (one the
 * caller owns and frees with ag_tensor_free). */
ag_tape *ag_tensor_tape(const ag_tensor *t);

/* Returns the element data: float * for f32, double * for f64. Writing to it
 * is allowed for heap tensors between steps (parameter updates) and for
 * inputs before they are used by an op. */
void *ag_tensor_data(ag_tensor *t);

/* Returns the element data as float *, or NULL with an error if the tensor
 * is not f32. */
float *ag_tensor_f32(ag_tensor *t);

/* Returns the element data as double *, or NULL with an error if the tensor
 * is not f64. */
double *ag_tensor_f64(ag_tensor *t);

/* Returns element `index` of the row-major data as a double. Returns NaN and
 * sets an error if the index is out of range. */
double ag_tensor_get(const ag_tensor *t, size_t index);

/* Sets element `index` from a double. Returns 0, or -1 with an error if the
 * index is out of range. */
int ag_tensor_set(ag_tensor *t, size_t index, double value);

/* Returns the value of a one-element tensor. Returns NaN and sets an error
 * if the tensor has more than one element. */
double ag_tensor_item(const ag_tensor *t);

/* Gives the tensor a name, shown by traces and error messages. The name is
 * copied (at most 31 bytes are kept). */
void ag_tensor_set_name(ag_tensor *t, const char *name);

/* Returns the tensor's name, or "" when it has none. */
const char *ag_tensor_name(const ag_tensor *t);

/* Marks the tensor as one whose gradient is wanted (a leaf: a parameter or
 * an input to differentiate by), or clears the mark. A leaf's gradient buffer
 * is allocated here, zeroed, on the heap for heap tensors and on the arena
 * for tape tensors. Returns 0, or -1 with an error when out of memory or when
 * `t` is the result of a recorded op (it already takes part in the graph). */
int ag_tensor_set_requires_grad(ag_tensor *t, bool requires_grad);

/* Returns whether gradients flow into the tensor. */
bool ag_tensor_requires_grad(const ag_tensor *t);

/* Returns the tensor's adjoint dL/dt after a backward pass, a tensor of the
 * same shape and dtype, or NULL when no gradient reached it. Leaf gradients
 * accumulate over backward calls until ag_tensor_zero_grad. The adjoints of
 * intermediate values stay readable until the tape is reset. */
ag_tensor *ag_tensor_grad(const ag_tensor *t);

/* Sets the tensor's gradient to zero (keeps the buffer). NULL is a no-op. */
void ag_tensor_zero_grad(ag_tensor *t);

/* Returns a tensor that shares `t`'s data but is cut off from the graph:
 * no record, no gradient. Lives on the tape. */
ag_tensor *ag_detach(ag_tape *tape, ag_tensor *t);

/* Returns whether two tensors have the same number of dimensions and sizes. */
bool ag_tensor_same_shape(const ag_tensor *a, const ag_tensor *b);

/* Writes the shape as "(2x3)" into buf (always NUL-terminated) and returns
 * buf. For error messages. */
char *ag_shape_str(const ag_tensor *t, char *buf, size_t size);

/* ------------------------------------------------------------------------ */
/* Seeded random numbers                                                     */
/* ------------------------------------------------------------------------ */

/* A random generator (xoshiro256**). For a given seed it gives the same
 * uniform numbers on every machine; normal numbers use the polar method and
 * libm's log and sqrt. */
typedef struct ag_rng {
    uint64_t state[4];
} ag_rng;

/* Returns a generator seeded with `seed` (expanded by splitmix64). */
ag_rng ag_rng_new(uint64_t seed);

/* Returns 64 random bits. */
uint64_t ag_rng_next(ag_rng *rng);

/* Returns a uniform double in [0, 1). */
double ag_rng_uniform(ag_rng *rng);

/* Returns a standard normal double. */
double ag_rng_normal(ag_rng *rng);

/* Returns a uniform integer in [0, n), without modulo bias. n must be > 0. */
uint64_t ag_rng_below(ag_rng *rng, uint64_t n);

/* Creates a tensor of uniform numbers in [low, high). */
ag_tensor *ag_rand_uniform(ag_tape *tape, ag_dtype dtype, int ndim,
                           const size_t *shape, double low, double high,
                           ag_rng *rng);

/* Creates a tensor of normal numbers with the given mean and standard
 * deviation. */
ag_tensor *ag_rand_normal(ag_tape *tape, ag_dtype dtype, int ndim,
                          const size_t *shape, double mean, double stddev,
                          ag_rng *rng);

/* ------------------------------------------------------------------------ */
/* Ops                                                                       */
/* ------------------------------------------------------------------------ */

/*
 * Every op returns a new tensor on the tape, or NULL with an error message
 * (shape or dtype mismatch, axis out of range, out of memory). Both inputs
 * of a binary op must have the same dtype. An op records itself when the tape
 * is recording and some input requires a gradient.
 *
 * Binary elementwise ops broadcast as NumPy does: shapes are aligned at the
 * last dimension, and a dimension of size 1 (or a missing one) stretches to
 * the other operand's size. Backward sums the gradient over the stretched
 * dimensions, so each operand's gradient has the operand's own shape.
 *
 * Derivatives at kinks follow PyTorch: relu'(0) = 0, abs'(0) = 0,
 * clamp passes the gradient where low <= x <= high, maximum/minimum of equal
 * elements give each side half the gradient, and max reductions share the
 * gradient evenly among tied maxima.
 *
 * Non-finite values: a NaN in a max reduction makes the max NaN, and the NaN
 * elements share its gradient. A +inf in a logsumexp slice gives +inf with
 * the gradient shared by the +inf entries, where PyTorch gives NaN. A slice
 * of all -inf gives -inf with a zero gradient. softmax and log_softmax of a
 * slice holding k +inf entries take the same limit: 1/k (log_softmax
 * -log k) on those entries and 0 (-inf) elsewhere, with the gradients of
 * that softmax, where PyTorch gives NaN. A slice of all -inf has no limit
 * and gives NaN, as in PyTorch.
 */

/* Elementwise arithmetic with broadcasting. */
ag_tensor *ag_add(ag_tape *tape, ag_tensor *a, ag_tensor *b); /* a + b */
ag_tensor *ag_sub(ag_tape *tape, ag_tensor *a, ag_tensor *b); /* a - b */
ag_tensor *ag_mul(ag_tape *tape, ag_tensor *a, ag_tensor *b); /* a * b */
ag_tensor *ag_div(ag_tape *tape, ag_tensor *a, ag_tensor *b); /* a / b */

/* a ^ b elementwise with broadcasting. d/db = a^b log a, taken as 0 where
 * a == 0 and b >= 0 (PyTorch's convention). */
ag_tensor *ag_pow(ag_tape *tape, ag_tensor *a, ag_tensor *b);

/* maximum(a, b) and minimum(a, b) elementwise with broadcasting; at equal
 * elements each input gets half the gradient. NaN propagates. */
ag_tensor *ag_maximum(ag_tape *tape, ag_tensor *a, ag_tensor *b);
ag_tensor *ag_minimum(ag_tape *tape, ag_tensor *a, ag_tensor *b);

/* Arithmetic with a constant (no gradient flows to the constant). */
ag_tensor *ag_add_scalar(ag_tape *tape, ag_tensor *a, double c); /* a + c */
ag_tensor *ag_mul_scalar(ag_tape *tape, ag_tensor *a, double c); /* a * c */
ag_tensor *ag_pow_scalar(ag_tape *tape, ag_tensor *a, double p); /* a ^ p */

/* Elementwise functions. */
ag_tensor *ag_neg(ag_tape *tape, ag_tensor *x);     /* -x */
ag_tensor *ag_exp(ag_tape *tape, ag_tensor *x);     /* e^x */
ag_tensor *ag_log(ag_tape *tape, ag_tensor *x);     /* natural log */
ag_tensor *ag_sqrt(ag_tape *tape, ag_tensor *x);    /* sqrt; d/dx at 0 is inf */
ag_tensor *ag_abs(ag_tape *tape, ag_tensor *x);     /* |x|; d/dx at 0 is 0 */
ag_tensor *ag_tanh(ag_tape *tape, ag_tensor *x);    /* tanh */
ag_tensor *ag_sigmoid(ag_tape *tape, ag_tensor *x); /* 1 / (1 + e^-x), stable */
ag_tensor *ag_relu(ag_tape *tape, ag_tensor *x);    /* max(x, 0); NaN passes */
ag_tensor *ag_softplus(ag_tape *tape, ag_tensor *x); /* log(1 + e^x), stable */
ag_tensor *ag_log_sigmoid(ag_tape *tape, ag_tensor *x); /* -softplus(-x) */

/* min(max(x, low), high). The gradient passes where low <= x <= high. */
ag_tensor *ag_clamp(ag_tape *tape, ag_tensor *x, double low, double high);

/* Matrix product of 2-D tensors: (m x k) @ (k x n) -> (m x n). Operands that
 * are not 2-D, or whose inner dimensions differ, are rejected with an error
 * naming both shapes. */
ag_tensor *ag_matmul(ag_tape *tape, ag_tensor *a, ag_tensor *b);

/* S = xW + b in one op: x (m x k), W (k x n), b (n) or (1 x n) -> (m x n).
 * Same values and gradients as ag_add(ag_matmul(x, W), b), one pass less. */
ag_tensor *ag_linear(ag_tape *tape, ag_tensor *x, ag_tensor *w, ag_tensor *b);

/* Transpose of a 2-D tensor (a copy); other ranks are rejected. */
ag_tensor *ag_transpose(ag_tape *tape, ag_tensor *x);

/* Same data with a new shape of the same number of elements. The result
 * shares x's data (no copy), so do not write to either while the other is in
 * use. */
ag_tensor *ag_reshape(ag_tape *tape, ag_tensor *x, int ndim, const size_t *shape);

/* Reductions over all elements, giving a tensor of shape (1). The mean of an
 * empty tensor is NaN, as in PyTorch; its sum is 0; its max is an error. */
ag_tensor *ag_sum(ag_tape *tape, ag_tensor *x);
ag_tensor *ag_mean(ag_tape *tape, ag_tensor *x);
ag_tensor *ag_max(ag_tape *tape, ag_tensor *x);

/* Reductions over one axis (negative counts from the end). With keepdims
 * the axis stays with size 1; otherwise it is removed (a 1-D input gives
 * shape (1)). */
ag_tensor *ag_sum_axis(ag_tape *tape, ag_tensor *x, int axis, bool keepdims);
ag_tensor *ag_mean_axis(ag_tape *tape, ag_tensor *x, int axis, bool keepdims);
ag_tensor *ag_max_axis(ag_tape *tape, ag_tensor *x, int axis, bool keepdims);

/* log(sum(exp(x))) computed as m + log(sum(exp(x - m))) with m the maximum,
 * so it is finite for large inputs. A row of -inf gives -inf with a zero
 * gradient; an empty tensor gives -inf. */
ag_tensor *ag_logsumexp(ag_tape *tape, ag_tensor *x);
ag_tensor *ag_logsumexp_axis(ag_tape *tape, ag_tensor *x, int axis, bool keepdims);

/* softmax and log_softmax along an axis, from the max-shifted inputs. */
ag_tensor *ag_softmax(ag_tape *tape, ag_tensor *x, int axis);
ag_tensor *ag_log_softmax(ag_tape *tape, ag_tensor *x, int axis);

/* ------------------------------------------------------------------------ */
/* Backward                                                                  */
/* ------------------------------------------------------------------------ */

/* Runs the reverse sweep from `output`. With seed == NULL the output must have
 * one element and its adjoint starts at 1. Otherwise `seed` (same shape and
 * dtype as output) is the starting adjoint, which computes the
 * vector-Jacobian product seed^T J.
 *
 * The sweep visits the records in reverse order and adds each local gradient
 * into the inputs' adjoints. Adjoints of intermediate values are recomputed
 * from zero by each call; leaf gradients accumulate across calls until
 * ag_tensor_zero_grad. Returns 0, or -1 with an error. */
int ag_backward(ag_tape *tape, ag_tensor *output, const ag_tensor *seed);

/* ------------------------------------------------------------------------ */
/* Custom ops                                                                */
/* ------------------------------------------------------------------------ */

/*
 * An op is one definition: a name, a shape rule, a forward kernel and a
 * backward rule. Built-in ops are defined the same way and live in the same
 * registry, so a user's op is recorded, replayed and checked like a built-in.
 */
typedef struct ag_op ag_op;

/* One application of an op, as the tape stores it. */
typedef struct ag_record {
    const ag_op *op;
    int n_inputs;
    ag_tensor *inputs[AG_MAX_INPUTS];
    ag_tensor *output;
    double params[AG_MAX_PARAMS]; /* scalar attributes (exponent, axis...) */
    void *saved;                  /* op-specific values kept for backward */
    size_t index;                 /* position on the tape */
} ag_record;

struct ag_op {
    const char *name;
    int n_inputs; /* 1..AG_MAX_INPUTS */

    /* Checks the inputs and params and sets the output's dtype and shape.
     * On invalid input, calls ag_set_error and returns -1. */
    int (*shape)(const ag_record *rec, ag_dtype *dtype, int *ndim, size_t *shape);

    /* Computes rec->output's data from the inputs. May store values for
     * backward in rec->saved (allocate with ag_tape_alloc). Returns 0 or -1. */
    int (*forward)(ag_tape *tape, ag_record *rec);

    /* Adds the vector-Jacobian product of rec->output's adjoint into the
     * adjoint of each input that needs one (see ag_input_grad). NULL for an
     * op without a gradient. Returns 0 or -1. */
    int (*backward)(ag_tape *tape, ag_record *rec);

    /* Optional differentiable backward rule, used by ag_grad with
     * create_graph. Builds each input's vector-Jacobian product of
     * grad_output (which has rec->output's shape) from ops, so the ops are
     * recorded and the result can be differentiated again. For each input i
     * with needs_grad[i], sets grad_inputs[i] to a tensor of that input's
     * shape and dtype, or leaves it NULL for a zero gradient. grad_inputs
     * arrives filled with NULL. Must not write to any tensor it is given.
     * Returns 0 or -1 with an error. NULL when the op has none. */
    int (*backward_graph)(ag_tape *tape, const ag_record *rec,
                          ag_tensor *grad_output, const bool *needs_grad,
                          ag_tensor **grad_inputs);
};

/* Adds the op to the registry under its name. The definition is not copied
 * and must outlive its use (a static definition is the usual way). Returns
 * 0, or -1 with an error if the name is taken or a field is missing.
 * Register ops before using tapes from several threads. */
int ag_op_register(const ag_op *op);

/* Returns the registered op with this name, or NULL. Built-in ops are found
 * by their short names ("add", "matmul", "log_softmax", ...). */
const ag_op *ag_op_find(const char *name);

/* Applies an op: runs its shape rule and forward kernel on a new output
 * tensor, and records it when the tape records and an input requires a
 * gradient. `params` may be NULL when n_params is 0. The op need not be
 * registered, but it needs a name, shape and forward functions and 1 to
 * AG_MAX_INPUTS inputs. Returns the output, or NULL with an error (a NULL
 * input keeps the earlier message). */
ag_tensor *ag_apply(ag_tape *tape, const ag_op *op, int n_inputs,
                    ag_tensor *const *inputs, int n_params, const double *params);

/* In a backward rule: returns the adjoint buffer of rec->inputs[i] to add
 * into, or NULL when that input needs no gradient. ag_backward allocates the
 * buffers before it calls the rule, so NULL never means a failure. */
ag_tensor *ag_input_grad(ag_tape *tape, ag_record *rec, int i);

/* Returns the record that produced t, or NULL for leaves and constants. */
const ag_record *ag_tensor_record(const ag_tensor *t);

/* Returns record `index` of the tape, or NULL if out of range. */
const ag_record *ag_tape_record(const ag_tape *tape, size_t index);

/* ------------------------------------------------------------------------ */
/* Seeing the backward pass                                                  */
/* ------------------------------------------------------------------------ */

/* Prints the tape as a table, one line per record in the order the reverse
 * sweep visits them. Each line shows the index, op, inputs, output shape and
 * value (small tensors in full, large ones summarised). After a backward
 * pass it also shows the output's adjoint and the adjoint each input
 * received. To show each record's own share, the printer runs the record's
 * backward rule again into scratch buffers with recording off. Values,
 * gradients, records and the error message stay unchanged, but custom
 * backward rules run once more and may take arena memory. Returns 0, or -1 with an error when writing fails. */
int ag_tape_print(const ag_tape *tape, FILE *out);

/* Writes the recorded graph as Graphviz DOT: one node per tensor with its
 * name, shape, a few values and its gradient, one node per record. Returns 0,
 * or -1 with an error when writing fails. */
int ag_tape_write_dot(const ag_tape *tape, FILE *out);

/* ------------------------------------------------------------------------ */
/* Gradient checking                                                         */
/* ------------------------------------------------------------------------ */

/* A function to check: builds its output on `tape` from `inputs`. Must work
 * for f64 inputs whatever the dtype it is checked at, because the
 * finite-difference reference is always evaluated in f64. */
typedef ag_tensor *(*ag_function)(ag_tape *tape, ag_tensor *const *inputs,
                                  int n_inputs, void *user);

typedef struct ag_gradcheck_options {
    double eps;  /* central-difference step; default 1e-6 */
    double atol; /* absolute tolerance; default 1e-5 */
    double rtol; /* relative tolerance; default 1e-3 */
} ag_gradcheck_options;

typedef struct ag_gradcheck_result {
    bool passed;
    int worst_input;    /* input with the largest error relative to tolerance */
    size_t worst_index; /* its element (row-major) */
    size_t worst_output; /* output element whose gradient was checked */
    double analytic;    /* tape gradient at the worst element */
    double numeric;     /* finite-difference gradient there */
    double abs_error;   /* |analytic - numeric| */
    double rel_error;   /* abs_error / |numeric|: inf when numeric is 0 and
                           abs_error > 0, 0 when both are 0 */
    size_t n_checked;   /* number of partial derivatives compared */
    char message[256];  /* a one-line verdict */

    /* Partials at a kink: the one-sided differences (f(x) - f(x - eps)) / eps
     * and (f(x + eps) - f(x)) / eps disagree, and the analytic value lies
     * between them. They count in n_checked but not in the verdict. */
    size_t n_kinks;
    int kink_input;       /* input of the first kink, or -1 when none */
    size_t kink_index;    /* its element (row-major) */
    size_t kink_output;   /* its output element */
    double kink_analytic; /* tape gradient there */
    double kink_left;     /* (f(x) - f(x - eps)) / eps there */
    double kink_right;    /* (f(x + eps) - f(x)) / eps there */
} ag_gradcheck_result;

/* Returns PyTorch's default tolerances: eps 1e-6, atol 1e-5, rtol 1e-3. */
ag_gradcheck_options ag_gradcheck_defaults(void);

/* Compares the tape's gradient of f with central differences, element by
 * element for every input of dtype f32 or f64 that requires a gradient, and
 * every output element (the full Jacobian). An element passes when
 * |analytic - numeric| <= atol + rtol * |numeric|. The check also fails when
 * every analytic partial is zero while the function changes, so a missing
 * backward cannot pass. `options` may be NULL for the defaults.
 *
 * A partial at a kink (relu or abs at 0, tied maxima, clamp at a bound, or
 * any point where f has two one-sided derivatives) is counted in
 * result->n_kinks and left out of the verdict, because the central
 * difference there is the mean of the two one-sided slopes and matches no
 * convention. A partial is at a kink when three things hold. The one-sided
 * differences with step eps differ by more than atol + rtol * (the larger
 * of their magnitudes) plus a bound on their roundoff, so zero tolerances
 * find no kinks in rounding noise. The gap does not halve with step
 * eps / 2, as it would for a smooth f, where it is about eps f'':
 * |gap(eps) - 2 gap(eps / 2)| exceeds the same tolerance. The analytic
 * value lies between the one-sided differences within that tolerance. An
 * analytic value outside them fails as usual. Elements within eps of a
 * kink are mostly reported as at it too.
 *
 * The inputs are not modified. Returns 0 when the check ran (see
 * result->passed), -1 with an error when f failed, the inputs are invalid,
 * no input requires a gradient, the output or every checked input is empty
 * (nothing to compare), f is not finite at or within eps of the inputs, or
 * eps is too small to move an element. */
int ag_gradcheck(ag_function f, void *user, int n_inputs,
                 ag_tensor *const *inputs, const ag_gradcheck_options *options,
                 ag_gradcheck_result *result);

/* ------------------------------------------------------------------------ */
/* Higher-order gradients                                                    */
/* ------------------------------------------------------------------------ */

/*
 * ag_grad returns gradients as new tensors instead of adding them into the
 * inputs' gradients, as torch.autograd.grad does. With create_graph the
 * gradients are built from ops recorded on the same tape (each op's
 * backward_graph rule), after the forward records. They can then be used in
 * further expressions and differentiated again, by ag_grad or by ag_backward
 * of a loss that contains them (a gradient penalty). Every built-in op has a
 * backward_graph rule. ag_backward itself is unchanged and never records.
 */

/* Computes the gradient of `output` with respect to each of `inputs` and
 * stores it in grads[i], a tensor of inputs[i]'s shape and dtype on the tape
 * (valid until reset). `seed` is as for ag_backward: NULL for a one-element
 * output, otherwise the starting adjoint of output's shape and dtype, which
 * gives the vector-Jacobian product seed^T J.
 *
 * Each input must require a gradient and may be a leaf or an intermediate
 * value; an input that output does not depend on gets zeros. No tensor's
 * gradient (ag_tensor_grad) is read or changed.
 *
 * With create_graph false, the ops' backward kernels run into buffers of
 * ag_grad's own (about the cost of ag_backward), nothing is recorded and the
 * gradients do not require a gradient. With create_graph true, recording is
 * switched on for the call (and restored), each record's backward_graph rule
 * builds its part of the gradient from ops, and gradients that depend on a
 * value requiring a gradient carry records. A seed that requires a gradient
 * is differentiated through too. A record on the way whose op has no
 * backward_graph rule fails the call.
 *
 * Returns 0, or -1 with an error and every grads[i] set to NULL. A NULL
 * output returns -1 and keeps the earlier message. */
int ag_grad(ag_tape *tape, ag_tensor *output, ag_tensor *seed, int n_inputs,
            ag_tensor *const *inputs, ag_tensor **grads, bool create_graph);

/* Sums x over the dimensions along which `like` is broadcast to x's shape,
 * which gives a tensor of like's shape: the adjoint of broadcasting, for
 * backward_graph rules of broadcasting ops. Only like's shape and dtype are
 * used and like gets no gradient. Returns x itself when it already has
 * like's shape. Fails when like's shape does not broadcast to x's shape. */
ag_tensor *ag_sum_to(ag_tape *tape, ag_tensor *x, ag_tensor *like);

/* Broadcasts x to like's shape (a copy), as NumPy's broadcast_to; the adjoint
 * of ag_sum_to. Only like's shape and dtype are used. Returns x itself when
 * it already has like's shape. Fails when x's shape does not broadcast to
 * like's shape. */
ag_tensor *ag_expand_as(ag_tape *tape, ag_tensor *x, ag_tensor *like);

/*
 * The functions below take an ag_function, as ag_gradcheck does, and run it
 * on a private tape on copies of the inputs, so the inputs and their
 * gradients are not touched. The variables are the elements of the inputs
 * that require a gradient, taken in order (input 0 row-major, then input 1,
 * ...): n of them in all. Results are heap tensors owned by the caller, freed
 * with ag_tensor_free, of the dtype of f's output. The Jacobian and Hessian
 * take one reverse sweep per row, so they suit small inputs.
 */

/* Returns the (m x n) Jacobian of f, m the number of output elements:
 * row j is the gradient of output element j. Returns NULL with an error when
 * the arguments are invalid, no input requires a gradient, or f fails. */
ag_tensor *ag_jacobian(ag_function f, void *user, int n_inputs,
                       ag_tensor *const *inputs);

/* Returns the (n x n) Hessian of f, whose output must have one element:
 * entry (r, c) is d^2 f / dv_r dv_c. The gradient is built with ag_grad
 * (create_graph), then each row is one reverse sweep of one gradient
 * element. Returns NULL with an error when the arguments are invalid, the
 * output has more than one element, or f fails. */
ag_tensor *ag_hessian(ag_function f, void *user, int n_inputs,
                      ag_tensor *const *inputs);

/* Computes the Hessian-vector product H v of f (one-element output) without
 * forming H: the gradient g is built with create_graph, then the gradient
 * of sum(g * v). vectors[i] has inputs[i]'s shape for each input that
 * requires a gradient (other entries are ignored and may be NULL). Stores
 * (H v)[i] in products[i] as a heap tensor owned by the caller, and NULL for
 * the other inputs. Returns 0, or -1 with an error and every products[i]
 * NULL. */
int ag_hvp(ag_function f, void *user, int n_inputs, ag_tensor *const *inputs,
           ag_tensor *const *vectors, ag_tensor **products);

/* Checks second derivatives, as PyTorch's gradgradcheck does. With a fixed
 * pseudo-random seed u of f's output shape, g(x) = ag_grad(f(x), u,
 * create_graph) is the gradient built by the backward_graph rules:
 *  1. g must equal the gradient of the backward kernels
 *     (|g - kernel| <= atol + rtol * |kernel|), so a backward_graph rule that
 *     computes a wrong value is caught;
 *  2. ag_gradcheck's comparison is run on x -> g(x), so the tape's
 *     derivatives of g are compared with central differences of g. A rule
 *     that computes the right value but records the wrong graph is caught.
 * Run ag_gradcheck first: this check assumes the first derivatives are right.
 * The result reads as ag_gradcheck's, with worst_input and worst_index naming
 * the input element differentiated by, and worst_output the element of g
 * (the gradients of the inputs that require one, concatenated). Returns 0
 * when the check ran (see result->passed), -1 with an error when f failed or
 * the arguments are invalid. */
int ag_gradgradcheck(ag_function f, void *user, int n_inputs,
                     ag_tensor *const *inputs, const ag_gradcheck_options *options,
                     ag_gradcheck_result *result);

/* ------------------------------------------------------------------------ */
/* Checking each record's backward rule                                      */
/* ------------------------------------------------------------------------ */

/* Outputs of at most this many elements are checked with their whole local
 * Jacobian; larger ones with one random projection. */
#define AG_RECORD_CHECK_FULL 16

typedef struct ag_record_check_result {
    bool passed;
    size_t n_records;   /* records checked */
    size_t n_failed;    /* records whose local gradient is wrong */
    size_t n_checked;   /* partials compared, over all records */
    size_t n_kinks;     /* partials at a kink, left out of the verdict */

    /* The first wrong record and its worst partial, when passed is false. */
    size_t record;      /* index on the tape */
    char op[48];        /* its op's name (cut to fit) */
    int input;          /* the input of that record, or -1 when none failed */
    size_t element;     /* the input's element (row-major) */
    bool projected;     /* partial of a random projection <u, output> */
    size_t output_element; /* the output element, when not projected */
    double analytic;    /* from the record's backward rule */
    double numeric;     /* central difference of the op's forward */
    double abs_error;   /* |analytic - numeric| */

    /* The first kink, when n_kinks > 0. */
    size_t kink_record;
    int kink_input;
    size_t kink_element;

    char message[256];  /* a one-line verdict */
} ag_record_check_result;

/* Checks the backward rule of every record on the tape, one record at a
 * time, at the values its inputs hold now (the recorded values, unless the
 * caller has written to them since). For a record y = op(x_1, ..., x_k) and
 * a seed u of y's shape, the backward rule is run with u as the output's
 * adjoint into zeroed scratch adjoints, which gives u^T dy/dx_i. The op is
 * re-run through its definition (shape rule and forward, with the record's
 * params) on f64 copies of the inputs on a private tape, and each element
 * of each input that requires a gradient is moved by +-eps, which gives the
 * central difference of <u, y>. Outputs of up to AG_RECORD_CHECK_FULL
 * elements use every one-hot u (the whole local Jacobian); larger ones use
 * one normal random u from a fixed seed. The criterion and the kink rule
 * are ag_gradcheck's; `options` may be NULL for its defaults.
 *
 * result names the first record, in tape order, with a partial out of
 * tolerance: its index, op, input and element, and the analytic and numeric
 * values of its worst partial. So a wrong custom op inside a large
 * expression is found by its record, where ag_gradcheck only reports that
 * the whole gradient is wrong.
 *
 * Costs two forward runs of the op per input element (four at a kink) and
 * one backward run per seed. The tape's values, adjoints, gradients and
 * records are left as they were, but the backward rules run once more with
 * recording off and may take arena memory, as for ag_tape_print. Every op
 * must work for f64 inputs. Returns 0 when the check ran (see
 * result->passed; a tape without records passes), -1 with an error when an
 * argument is invalid, an op fails in f64 or a backward rule fails (the
 * message names the record). */
int ag_check_records(ag_tape *tape, const ag_gradcheck_options *options,
                     ag_record_check_result *result);

/* ------------------------------------------------------------------------ */
/* Taylor-remainder test                                                     */
/* ------------------------------------------------------------------------ */

#define AG_TAYLOR_STEPS 20 /* rows of the table: h = 2^-1 ... 2^-20 */

typedef struct ag_taylor_result {
    bool passed;
    double order;          /* fitted slope of log r against log h; NaN when
                              it could not be measured */
    int n_steps;           /* rows filled in h and remainder */
    double h[AG_TAYLOR_STEPS];
    double remainder[AG_TAYLOR_STEPS]; /* r(h); NaN where f is not finite */
    int fit_first;         /* rows the slope was fitted over, or -1 */
    int fit_last;
    double value;          /* f(x), evaluated in f64 */
    double directional;    /* <grad f(x), v> from the tape */
    char message[256];     /* a one-line verdict */
} ag_taylor_result;

/* Checks the gradient of f by its Taylor remainder. With a random unit
 * direction v over the input elements that require a gradient,
 *   r(h) = |f(x + h v) - f(x) - h <grad f(x), v>|
 * is O(h^2) when the gradient is right and O(h) when it is wrong. The test
 * computes r for h = 2^-1 ... 2^-AG_TAYLOR_STEPS, with f in f64 and the
 * gradient from the tape at the inputs' own dtype. It fits the slope of
 * log r against log h over up to 8 consecutive steps, the smallest ones
 * whose r is above the rounding level, and passes when that order is within
 * [1.8, 2.2].
 *
 * Two special cases pass with a note in the message. The first is r at the
 * rounding level (or exactly 0) for every h, as for a function linear along
 * v. The second is r falling abruptly to that level below some h, as for a
 * piecewise-linear f (relu, abs) whose linear piece the small steps stay on. An order above
 * 2.2 fails: the second derivative along v vanishes there, so try another
 * point or direction. Fewer than 3 steps above the rounding level fail as
 * inconclusive. At a kink of f (relu at 0, tied maxima) r is O(h) whatever
 * the gradient, so the test fails there: move x off the kink.
 *
 * An output with more than one element is reduced to <u, f(x)> with a
 * random u. v (and u) come from `rng`, which advances; NULL uses a fixed
 * seed. The inputs are not modified. Returns 0 when the test ran (see
 * result->passed), -1 with an error when the arguments are invalid, no
 * input requires a gradient, f fails, or f(x) is not finite. */
int ag_taylor_test(ag_function f, void *user, int n_inputs,
                   ag_tensor *const *inputs, ag_rng *rng, ag_taylor_result *result);

#ifdef __cplusplus
}
#endif

#endif /* TAPEGRAD_AUTOGRAD_H */
