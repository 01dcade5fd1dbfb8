/* Private definitions shared by the autograd sources. Not installed. */
#ifndef TAPEGRAD_AUTOGRAD_INTERNAL_H
#define TAPEGRAD_AUTOGRAD_INTERNAL_H

#include "tapegrad/autograd.h"

#include <stdint.h>
#include <string.h>

#define AG_NAME_SIZE 32

/* Alignment of arena tensor data of AG_ALIGN bytes or more (a cache line,
 * and the widest vector load) and of ag_tape_alloc. Smaller data, tensor
 * headers and records are aligned to AG_SMALL_ALIGN only, so a scalar op
 * takes about two thirds of the arena memory it would otherwise. */
#define AG_ALIGN 64
#define AG_SMALL_ALIGN 16

/* AG_COLD marks an error path, which GCC and Clang then keep out of the hot
 * code. AG_NOINLINE keeps a rarely taken branch's stack frame out of its
 * caller. */
#if defined(__GNUC__)
#define AG_COLD __attribute__((cold, noinline))
#define AG_NOINLINE __attribute__((noinline))
#else
#define AG_COLD
#define AG_NOINLINE
#endif

struct ag_tensor {
    ag_dtype dtype;
    int ndim;
    size_t shape[AG_MAX_DIMS]; /* entries past ndim are 0 */
    size_t numel;
    void *data;
    ag_tensor *grad;     /* adjoint, same shape and dtype; NULL until needed */
    ag_record *record;   /* record that produced it, NULL for leaves */
    ag_tape *tape;       /* owning tape, NULL for heap tensors */
    bool requires_grad;
    bool owns_data;      /* heap tensor whose data was allocated with it */
    char name[AG_NAME_SIZE];
};

/* ---- heap allocation through the user's allocator ---- */

void *ag_heap_alloc(size_t size);
void *ag_heap_realloc(void *ptr, size_t size);
void ag_heap_free(void *ptr);

/* ---- arena: chunks of memory released all at once ---- */

typedef struct ag_chunk ag_chunk;

typedef struct ag_arena {
    unsigned char *cursor; /* next free byte of the newest chunk */
    unsigned char *limit;  /* end of the newest chunk */
    ag_chunk *head;        /* newest chunk, followed by the older ones */
    size_t capacity;       /* bytes in all chunks */
} ag_arena;

/* Allocates `size` bytes aligned to `align` (a power of two, at most
 * AG_ALIGN) from a new chunk when the newest one is full. Returns NULL when
 * out of memory. */
void *ag_arena_alloc_slow(ag_arena *arena, size_t size, size_t align);

/* Allocates `size` bytes aligned to `align` (a power of two, at most
 * AG_ALIGN). The common case is a bump of the cursor, inlined into the
 * callers. Returns NULL when out of memory. */
static inline void *ag_arena_alloc_aligned(ag_arena *arena, size_t size, size_t align)
{
    uintptr_t start = ((uintptr_t)arena->cursor + (align - 1)) & ~(uintptr_t)(align - 1);

    /* Without a chunk, cursor and limit are NULL and only size 0 would fit,
     * which the slow path handles. */
    if (size != 0 && start <= (uintptr_t)arena->limit &&
        size <= (uintptr_t)arena->limit - start) {
        arena->cursor = (unsigned char *)start + size;
        return (void *)start;
    }
    return ag_arena_alloc_slow(arena, size, align);
}

/* Allocates `size` bytes aligned to AG_ALIGN. */
void *ag_arena_alloc(ag_arena *arena, size_t size);
void ag_arena_reset(ag_arena *arena);
void ag_arena_free(ag_arena *arena);

/* ---- the tape ---- */

struct ag_tape {
    ag_arena arena;
    ag_record **records;  /* records in the order they were applied */
    size_t n_records;
    size_t cap_records;
    bool recording;
    bool anomaly;         /* check every value and adjoint for NaN and inf */
    bool has_adjoints;    /* an arena tensor got an adjoint since the last reset */
};

/* ---- tensor helpers ---- */

/* Size in bytes of one element. */
static inline size_t ag_dtype_size(ag_dtype dtype)
{
    return dtype == AG_F32 ? sizeof(float) : sizeof(double);
}

static inline const char *ag_dtype_name(ag_dtype dtype)
{
    return dtype == AG_F32 ? "f32" : "f64";
}

/* Dimensions and partial counts below this bound multiply without
 * overflow (2^26 * 2^26 * sizeof(double) < 2^56), so the common case skips
 * the division of the exact check. */
#define AG_SMALL_DIM ((size_t)1 << 26)

/* Returns true when dtype is valid and the shape has 1 to AG_MAX_DIMS dimensions
 * below AG_SMALL_DIM; sets *numel then. False means "check the slow way",
 * not "invalid": ag_tensor_alloc gives the verdict and the message. */
static inline bool ag_shape_is_small(ag_dtype dtype, int ndim, const size_t *shape,
                                     size_t *numel)
{
    if ((dtype != AG_F32 && dtype != AG_F64) || ndim < 1 || ndim > AG_MAX_DIMS)
        return false;

    size_t count = 1;
    bool small = true;
    for (int i = 0; i < ndim; i++) {
        small &= count < AG_SMALL_DIM && shape[i] < AG_SMALL_DIM;
        count *= shape[i];
    }
    *numel = count;
    return small;
}

/* Sets the fields of a new tensor that do not depend on its shape: no
 * gradient, no record, and an empty name (only the first byte is written,
 * because this runs once per op). */
static inline void ag_tensor_init_fresh(ag_tensor *t, ag_tape *tape, void *data)
{
    t->data = data;
    t->grad = NULL;
    t->record = NULL;
    t->tape = tape;
    t->requires_grad = false;
    t->owns_data = tape == NULL;
    t->name[0] = '\0';
}

/* Sets every field of a new tensor from a shape of `ndim` dimensions. */
static inline void ag_tensor_init(ag_tensor *t, ag_tape *tape, ag_dtype dtype,
                                  int ndim, const size_t *shape, size_t numel,
                                  void *data)
{
    t->dtype = dtype;
    t->ndim = ndim;
    memset(t->shape, 0, sizeof t->shape); /* a fixed-size clear compiles to stores */
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    t->numel = numel;
    ag_tensor_init_fresh(t, tape, data);
}

/* Bytes from the start of an arena tensor to its data: the header, rounded
 * up to the data's alignment. Data of AG_ALIGN bytes or more starts on a
 * cache line; smaller data only on AG_SMALL_ALIGN. */
static inline size_t ag_arena_align(size_t bytes)
{
    return bytes < AG_ALIGN ? AG_SMALL_ALIGN : AG_ALIGN;
}

static inline size_t ag_arena_header(size_t align)
{
    return (sizeof(ag_tensor) + (align - 1)) & ~(align - 1);
}

/* Allocates an arena tensor of a shape known to be valid, header and data
 * in one bump. Returns NULL when out of memory, without a message. */
static inline ag_tensor *ag_arena_tensor(ag_tape *tape, ag_dtype dtype, int ndim,
                                         const size_t *shape, size_t numel)
{
    size_t bytes = numel * ag_dtype_size(dtype);
    size_t align = ag_arena_align(bytes);
    size_t header = ag_arena_header(align);

    if (bytes > SIZE_MAX - header)
        return NULL;

    ag_tensor *t = ag_arena_alloc_aligned(&tape->arena, header + bytes, align);
    if (t != NULL)
        ag_tensor_init(t, tape, dtype, ndim, shape, numel, (unsigned char *)t + header);
    return t;
}

/* Sets every field of a new tensor with the dtype and shape of `like`. The
 * shape entries past ndim are 0 in every tensor, so the whole array is
 * copied, which takes a few fixed-size moves instead of a loop. */
static inline void ag_tensor_init_like(ag_tensor *t, ag_tape *tape,
                                       const ag_tensor *like, void *data)
{
    t->dtype = like->dtype;
    t->ndim = like->ndim;
    memcpy(t->shape, like->shape, sizeof t->shape);
    t->numel = like->numel;
    ag_tensor_init_fresh(t, tape, data);
}

/* Gives the arena tensor t a zeroed adjoint in the arena and returns it, or
 * NULL when out of memory (without a message). t->grad must be NULL. */
static inline ag_tensor *ag_arena_adjoint(ag_tensor *t)
{
    size_t bytes = t->numel * ag_dtype_size(t->dtype);
    size_t align = ag_arena_align(bytes);
    size_t header = ag_arena_header(align);
    ag_tensor *grad = ag_arena_alloc_aligned(&t->tape->arena, header + bytes, align);

    if (grad == NULL)
        return NULL;
    ag_tensor_init_like(grad, t->tape, t, (unsigned char *)grad + header);
    /* A memset of a constant 8 bytes (one f64 or two f32) is one store,
     * where the call for a variable size costs more than it clears. */
    if (bytes == 8)
        memset(grad->data, 0, 8);
    else
        memset(grad->data, 0, bytes);
    t->grad = grad;
    /* ag_backward must zero this adjoint before its next sweep. */
    t->tape->has_adjoints = true;
    return grad;
}

/* Creates an uninitialised tensor on the tape (or the heap when tape is
 * NULL). Validates the shape; sets an error naming `who` on failure. */
ag_tensor *ag_tensor_alloc(ag_tape *tape, ag_dtype dtype, int ndim,
                           const size_t *shape, const char *who);

/* Sets the error for an op whose inputs have different dtypes. */
int ag_error_dtype_mismatch(const char *op, const ag_tensor *a, const ag_tensor *b);

/* Normalises an axis (negative counts from the end). Returns -1 and sets an
 * error naming `op` and the shape when it is out of range. */
int ag_normalize_axis(const char *op, const ag_tensor *t, int axis);

/* Reads an op's axis attribute from rec->params[0] and normalises it against
 * input 0. The public functions pass an int, but ag_apply callers pass a
 * double, which must be an integer before it is converted. Returns -1 with
 * an error naming the op for a fractional or out-of-range axis. */
int ag_axis_param(const ag_record *rec);

/* Views a tensor as (outer, n, inner) around `axis`: outer is the product of
 * the dimensions before it, inner of those after it. */
void ag_axis_split(const ag_tensor *t, int axis, size_t *outer, size_t *n,
                   size_t *inner);

/* Ensures t->grad exists (zeroed) and returns it; NULL when out of memory.
 * Arena tensors get an arena buffer, heap tensors a heap one. */
ag_tensor *ag_grad_buffer(ag_tensor *t);

/* Returns the adjoint of input i, or NULL when that input needs none: the
 * inline form of ag_input_grad for the built-in backward rules. */
static inline ag_tensor *ag_adjoint_of(const ag_record *rec, int i)
{
    ag_tensor *x = rec->inputs[i];

    return x->requires_grad ? x->grad : NULL;
}

/* ---- broadcasting ---- */

/* Computes the broadcast shape of a and b. Returns 0, or -1 with an error
 * naming `op` and both shapes. */
int ag_broadcast_shape(const char *op, const ag_tensor *a, const ag_tensor *b,
                       int *ndim, size_t *shape);

/* Element strides of `t` aligned to an output of `ndim` dimensions: 0 where
 * t's dimension is 1 or missing (broadcast), its row-major stride otherwise. */
void ag_broadcast_strides(const ag_tensor *t, int ndim, const size_t *shape,
                          size_t *strides);

/* ---- op registry ---- */

/* Registers the built-in ops once; called by ag_tape_new and ag_op_find. */
void ag_register_builtins(void);

/* Built-in op definitions, one per op, defined beside their kernels. */
extern const ag_op ag_op_add, ag_op_sub, ag_op_mul, ag_op_div, ag_op_pow,
    ag_op_maximum, ag_op_minimum, ag_op_add_scalar, ag_op_mul_scalar,
    ag_op_pow_scalar;
extern const ag_op ag_op_neg, ag_op_exp, ag_op_log, ag_op_sqrt, ag_op_abs,
    ag_op_tanh, ag_op_sigmoid, ag_op_relu, ag_op_softplus, ag_op_log_sigmoid,
    ag_op_clamp;
extern const ag_op ag_op_matmul, ag_op_linear, ag_op_transpose, ag_op_reshape;
extern const ag_op ag_op_sum, ag_op_mean, ag_op_max, ag_op_sum_axis,
    ag_op_mean_axis, ag_op_max_axis, ag_op_logsumexp, ag_op_logsumexp_axis,
    ag_op_softmax, ag_op_log_softmax;
/* Ops of the differentiable backward rules (ops_derivative.c). */
extern const ag_op ag_op_expand_as, ag_op_sum_to, ag_op_masked,
    ag_op_abs_derivative, ag_op_relu_derivative, ag_op_clamp_derivative,
    ag_op_nonzero_mask, ag_op_maximum_derivative, ag_op_max_mask,
    ag_op_pow_exponent_mask;

/* x where `mask` (broadcast to x's shape) is nonzero, and 0 elsewhere. */
ag_tensor *ag_masked(ag_tape *tape, ag_tensor *x, ag_tensor *mask);

/* ---- anomaly mode ---- */

/* Returns -1 with an error naming `caller` when the seed gradient contains a
 * NaN or an infinity, and 0 otherwise. */
int ag_anomaly_check_seed(const char *caller, const ag_tensor *seed);

/* Returns -1 with an error naming `caller`, the record and its inputs when the
 * backward rule of `rec`, which just ran, left a NaN or an infinity in the
 * adjoint of an input that requires a gradient; 0 otherwise. */
int ag_anomaly_check_adjoints(const char *caller, const ag_record *rec);

/* Shorthands for ops with one or two inputs. */
static inline ag_tensor *ag_apply1(ag_tape *tape, const ag_op *op, ag_tensor *x,
                                   int n_params, const double *params)
{
    ag_tensor *inputs[1] = {x};
    return ag_apply(tape, op, 1, inputs, n_params, params);
}

static inline ag_tensor *ag_apply2(ag_tape *tape, const ag_op *op, ag_tensor *a,
                                   ag_tensor *b)
{
    ag_tensor *inputs[2] = {a, b};
    return ag_apply(tape, op, 2, inputs, 0, NULL);
}

/* Shape rule shared by ops whose output has the shape and dtype of input 0. */
int ag_shape_like_input(const ag_record *rec, ag_dtype *dtype, int *ndim,
                        size_t *shape);

/* Shape rule of the binary elementwise ops: the broadcast of the shapes of
 * inputs 0 and 1, in the dtype of input 0. */
int ag_shape_broadcast(const ag_record *rec, ag_dtype *dtype, int *ndim,
                       size_t *shape);

#endif /* TAPEGRAD_AUTOGRAD_INTERNAL_H */
