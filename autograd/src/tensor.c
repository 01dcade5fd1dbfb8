/* Tensor creation, access and gradient buffers. */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* ---- creation ------------------------------------------------------------- */

static bool shape_is_valid(const char *who, int ndim, const size_t *shape, size_t *numel)
{
    if (ndim < 1 || ndim > AG_MAX_DIMS) {
        ag_set_error("%s: invalid number of dimensions %d; a tensor has 1 to %d "
                     "dimensions (use shape (1) for a scalar)",
                     who, ndim, AG_MAX_DIMS);
        return false;
    }
    if (shape == NULL) {
        ag_set_error("%s: shape is NULL; pass an array of %d dimensions", who, ndim);
        return false;
    }

    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        bool small = count < AG_SMALL_DIM && shape[i] < AG_SMALL_DIM;

        if (!small && shape[i] != 0 && count > SIZE_MAX / shape[i] / sizeof(double)) {
            ag_set_error("%s: shape is too large: dimension %d of size %zu "
                         "overflows the element count",
                         who, i, shape[i]);
            return false;
        }
        count *= shape[i];
    }
    *numel = count;
    return true;
}

ag_tensor *ag_tensor_alloc(ag_tape *tape, ag_dtype dtype, int ndim,
                           const size_t *shape, const char *who)
{
    size_t numel;

    if (dtype != AG_F32 && dtype != AG_F64) {
        ag_set_error("%s: invalid dtype %d; use AG_F32 or AG_F64", who, (int)dtype);
        return NULL;
    }
    if (!shape_is_valid(who, ndim, shape, &numel))
        return NULL;

    /* One allocation holds the header and the data, so an op makes one
     * arena bump for its output and a heap tensor is released by one free. */
    size_t bytes = numel * ag_dtype_size(dtype);
    ag_tensor *t = NULL;

    if (tape != NULL) {
        t = ag_arena_tensor(tape, dtype, ndim, shape, numel);
    } else {
        /* The allocator aligns only as malloc does, so the block has room to
         * move the data up to the next AG_ALIGN boundary after the header. */
        size_t header = sizeof(ag_tensor) + (AG_ALIGN - 1);

        if (bytes <= SIZE_MAX - header)
            t = ag_heap_alloc(header + bytes);
        if (t != NULL) {
            uintptr_t data = ((uintptr_t)(t + 1) + (AG_ALIGN - 1)) & ~(uintptr_t)(AG_ALIGN - 1);
            ag_tensor_init(t, NULL, dtype, ndim, shape, numel, (void *)data);
        }
    }
    if (t == NULL)
        ag_set_error("%s: out of memory for a tensor of %zu bytes", who, bytes);
    return t;
}

ag_tensor *ag_full(ag_tape *tape, ag_dtype dtype, int ndim, const size_t *shape,
                   double value)
{
    ag_tensor *t = ag_tensor_alloc(tape, dtype, ndim, shape, "ag_full");

    if (t == NULL)
        return NULL;
    if (dtype == AG_F32) {
        float *data = t->data;
        for (size_t i = 0; i < t->numel; i++)
            data[i] = (float)value;
    } else {
        double *data = t->data;
        for (size_t i = 0; i < t->numel; i++)
            data[i] = value;
    }
    return t;
}

ag_tensor *ag_zeros(ag_tape *tape, ag_dtype dtype, int ndim, const size_t *shape)
{
    ag_tensor *t = ag_tensor_alloc(tape, dtype, ndim, shape, "ag_zeros");

    if (t != NULL)
        memset(t->data, 0, t->numel * ag_dtype_size(dtype));
    return t;
}

ag_tensor *ag_ones(ag_tape *tape, ag_dtype dtype, int ndim, const size_t *shape)
{
    return ag_full(tape, dtype, ndim, shape, 1.0);
}

ag_tensor *ag_scalar(ag_tape *tape, ag_dtype dtype, double value)
{
    return ag_full(tape, dtype, AG_SHAPE(1), value);
}

ag_tensor *ag_tensor_from_data(ag_tape *tape, ag_dtype dtype, int ndim,
                               const size_t *shape, const void *data)
{
    if (data == NULL) {
        ag_set_error("ag_tensor_from_data: data is NULL; pass the elements to copy");
        return NULL;
    }

    ag_tensor *t = ag_tensor_alloc(tape, dtype, ndim, shape, "ag_tensor_from_data");
    if (t != NULL && t->numel > 0)
        memcpy(t->data, data, t->numel * ag_dtype_size(dtype));
    return t;
}

ag_tensor *ag_tensor_from_doubles(ag_tape *tape, ag_dtype dtype, int ndim,
                                  const size_t *shape, const double *data)
{
    if (data == NULL) {
        ag_set_error("ag_tensor_from_doubles: data is NULL; pass the elements to copy");
        return NULL;
    }

    ag_tensor *t = ag_tensor_alloc(tape, dtype, ndim, shape, "ag_tensor_from_doubles");
    if (t == NULL)
        return NULL;
    for (size_t i = 0; i < t->numel; i++)
        ag_tensor_set(t, i, data[i]);
    return t;
}

ag_tensor *ag_tensor_copy(ag_tape *tape, const ag_tensor *t, ag_dtype dtype)
{
    if (t == NULL)
        return NULL;

    ag_tensor *copy = ag_tensor_alloc(tape, dtype, t->ndim, t->shape, "ag_tensor_copy");
    if (copy == NULL)
        return NULL;

    if (dtype == t->dtype) {
        memcpy(copy->data, t->data, t->numel * ag_dtype_size(dtype));
    } else {
        for (size_t i = 0; i < t->numel; i++)
            ag_tensor_set(copy, i, ag_tensor_get(t, i));
    }
    return copy;
}

void ag_tensor_free(ag_tensor *t)
{
    if (t == NULL || t->tape != NULL)
        return;
    if (t->grad != NULL)
        ag_heap_free(t->grad);
    ag_heap_free(t);
}

ag_tensor *ag_detach(ag_tape *tape, ag_tensor *t)
{
    if (t == NULL)
        return NULL;
    if (tape == NULL) {
        ag_set_error("ag_detach: tape is NULL; the detached tensor lives on a tape");
        return NULL;
    }

    ag_tensor *view = ag_arena_alloc(&tape->arena, sizeof(ag_tensor));
    if (view == NULL) {
        ag_set_error("ag_detach: out of memory");
        return NULL;
    }
    *view = *t;
    view->grad = NULL;
    view->record = NULL;
    view->tape = tape;
    view->requires_grad = false;
    view->owns_data = false;
    return view;
}

/* ---- access --------------------------------------------------------------- */

/* Returns false for NULL. A NULL tensor is usually an earlier failure, whose
 * message stays; when no message is set, this sets one naming `who`. */
static bool tensor_present(const ag_tensor *t, const char *who)
{
    if (t != NULL)
        return true;
    if (ag_error() == NULL)
        ag_set_error("%s: tensor is NULL; check the call that made it", who);
    return false;
}

ag_dtype ag_tensor_dtype(const ag_tensor *t)
{
    return tensor_present(t, "ag_tensor_dtype") ? t->dtype : AG_F32;
}

int ag_tensor_ndim(const ag_tensor *t)
{
    return tensor_present(t, "ag_tensor_ndim") ? t->ndim : 0;
}

const size_t *ag_tensor_shape(const ag_tensor *t)
{
    return tensor_present(t, "ag_tensor_shape") ? t->shape : NULL;
}

size_t ag_tensor_numel(const ag_tensor *t)
{
    return tensor_present(t, "ag_tensor_numel") ? t->numel : 0;
}

void *ag_tensor_data(ag_tensor *t)
{
    return tensor_present(t, "ag_tensor_data") ? t->data : NULL;
}

ag_tape *ag_tensor_tape(const ag_tensor *t)
{
    return tensor_present(t, "ag_tensor_tape") ? t->tape : NULL;
}

size_t ag_tensor_dim(const ag_tensor *t, int axis)
{
    if (!tensor_present(t, "ag_tensor_dim"))
        return 0;
    if (axis < 0)
        axis += t->ndim;
    if (axis < 0 || axis >= t->ndim)
        return 0;
    return t->shape[axis];
}

float *ag_tensor_f32(ag_tensor *t)
{
    if (!tensor_present(t, "ag_tensor_f32"))
        return NULL;
    if (t->dtype != AG_F32) {
        ag_set_error("ag_tensor_f32: tensor is %s, not f32; use ag_tensor_f64",
                     ag_dtype_name(t->dtype));
        return NULL;
    }
    return t->data;
}

double *ag_tensor_f64(ag_tensor *t)
{
    if (!tensor_present(t, "ag_tensor_f64"))
        return NULL;
    if (t->dtype != AG_F64) {
        ag_set_error("ag_tensor_f64: tensor is %s, not f64; use ag_tensor_f32",
                     ag_dtype_name(t->dtype));
        return NULL;
    }
    return t->data;
}

double ag_tensor_get(const ag_tensor *t, size_t index)
{
    if (!tensor_present(t, "ag_tensor_get"))
        return NAN;
    if (index >= t->numel) {
        ag_set_error("ag_tensor_get: index %zu out of range for %zu elements",
                     index, t->numel);
        return NAN;
    }
    if (t->dtype == AG_F32)
        return ((const float *)t->data)[index];
    return ((const double *)t->data)[index];
}

int ag_tensor_set(ag_tensor *t, size_t index, double value)
{
    if (!tensor_present(t, "ag_tensor_set"))
        return -1;
    if (index >= t->numel) {
        ag_set_error("ag_tensor_set: index %zu out of range for %zu elements",
                     index, t->numel);
        return -1;
    }
    if (t->dtype == AG_F32)
        ((float *)t->data)[index] = (float)value;
    else
        ((double *)t->data)[index] = value;
    return 0;
}

double ag_tensor_item(const ag_tensor *t)
{
    if (!tensor_present(t, "ag_tensor_item"))
        return NAN;
    if (t->numel != 1) {
        char shape[64];
        ag_set_error("ag_tensor_item: tensor of shape %s has %zu elements, not 1; "
                     "use ag_tensor_get to read one element",
                     ag_shape_str(t, shape, sizeof shape), t->numel);
        return NAN;
    }
    return ag_tensor_get(t, 0);
}

void ag_tensor_set_name(ag_tensor *t, const char *name)
{
    if (!tensor_present(t, "ag_tensor_set_name"))
        return;
    snprintf(t->name, sizeof t->name, "%s", name == NULL ? "" : name);
}

const char *ag_tensor_name(const ag_tensor *t)
{
    return tensor_present(t, "ag_tensor_name") ? t->name : "";
}

bool ag_tensor_same_shape(const ag_tensor *a, const ag_tensor *b)
{
    if (!tensor_present(a, "ag_tensor_same_shape") ||
        !tensor_present(b, "ag_tensor_same_shape"))
        return false;
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++) {
        if (a->shape[i] != b->shape[i])
            return false;
    }
    return true;
}

char *ag_shape_str(const ag_tensor *t, char *buf, size_t size)
{
    size_t used = 0;

    if (size == 0)
        return buf;
    if (t == NULL) {
        snprintf(buf, size, "(NULL)");
        return buf;
    }
    buf[0] = '\0';
    used += (size_t)snprintf(buf, size, "(");
    for (int i = 0; i < t->ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, i == 0 ? "%zu" : "x%zu",
                                 t->shape[i]);
    if (used < size)
        snprintf(buf + used, size - used, ")");
    return buf;
}

/* ---- gradients ------------------------------------------------------------ */

ag_tensor *ag_grad_buffer(ag_tensor *t)
{
    if (t->grad != NULL)
        return t->grad;
    if (t->tape != NULL) {
        ag_tensor *grad = ag_arena_adjoint(t);

        if (grad == NULL)
            ag_set_error("ag_backward: out of memory for an adjoint of %zu elements",
                         t->numel);
        return grad;
    }

    ag_tensor *grad = ag_tensor_alloc(NULL, t->dtype, t->ndim, t->shape, "ag_backward");
    if (grad == NULL)
        return NULL;
    memset(grad->data, 0, grad->numel * ag_dtype_size(grad->dtype));
    t->grad = grad;
    return grad;
}

int ag_tensor_set_requires_grad(ag_tensor *t, bool requires_grad)
{
    if (!tensor_present(t, "ag_tensor_set_requires_grad"))
        return -1;
    if (t->record != NULL) {
        ag_set_error("ag_tensor_set_requires_grad: tensor is the result of a "
                     "recorded op; only leaves (created tensors) can be marked "
                     "or unmarked (use ag_detach to cut it from the graph)");
        return -1;
    }
    t->requires_grad = requires_grad;
    if (requires_grad && ag_grad_buffer(t) == NULL)
        return -1;
    return 0;
}

bool ag_tensor_requires_grad(const ag_tensor *t)
{
    return tensor_present(t, "ag_tensor_requires_grad") && t->requires_grad;
}

ag_tensor *ag_tensor_grad(const ag_tensor *t)
{
    return tensor_present(t, "ag_tensor_grad") ? t->grad : NULL;
}

void ag_tensor_zero_grad(ag_tensor *t)
{
    if (t != NULL && t->grad != NULL)
        memset(t->grad->data, 0, t->grad->numel * ag_dtype_size(t->grad->dtype));
}

const ag_record *ag_tensor_record(const ag_tensor *t)
{
    return tensor_present(t, "ag_tensor_record") ? t->record : NULL;
}

/* ---- shapes and axes ------------------------------------------------------ */

int ag_normalize_axis(const char *op, const ag_tensor *t, int axis)
{
    int normalized = axis < 0 ? axis + t->ndim : axis;

    if (normalized < 0 || normalized >= t->ndim) {
        char shape[64];
        ag_set_error("ag_%s: axis %d is out of range for a tensor of shape %s; "
                     "use an axis in [%d, %d]",
                     op, axis, ag_shape_str(t, shape, sizeof shape), -t->ndim,
                     t->ndim - 1);
        return -1;
    }
    return normalized;
}

int ag_axis_param(const ag_record *rec)
{
    double axis = rec->params[0];

    if (!(axis == trunc(axis) && fabs(axis) <= INT_MAX)) {
        ag_set_error("ag_%s: axis %g is not an integer; pass an integer axis",
                     rec->op->name, axis);
        return -1;
    }
    return ag_normalize_axis(rec->op->name, rec->inputs[0], (int)axis);
}

void ag_axis_split(const ag_tensor *t, int axis, size_t *outer, size_t *n, size_t *inner)
{
    *outer = 1;
    *inner = 1;
    for (int i = 0; i < axis; i++)
        *outer *= t->shape[i];
    for (int i = axis + 1; i < t->ndim; i++)
        *inner *= t->shape[i];
    *n = t->shape[axis];
}

int ag_shape_like_input(const ag_record *rec, ag_dtype *dtype, int *ndim, size_t *shape)
{
    const ag_tensor *x = rec->inputs[0];

    *dtype = x->dtype;
    *ndim = x->ndim;
    for (int i = 0; i < x->ndim; i++)
        shape[i] = x->shape[i]; /* a loop, because a call to memcpy costs more */
    return 0;
}

int ag_shape_broadcast(const ag_record *rec, ag_dtype *dtype, int *ndim, size_t *shape)
{
    *dtype = rec->inputs[0]->dtype;
    return ag_broadcast_shape(rec->op->name, rec->inputs[0], rec->inputs[1], ndim, shape);
}

/* ---- broadcasting --------------------------------------------------------- */

/* Sets the error for shapes that do not broadcast at dimension `dim`
 * (counted from the end, so -1 is the last). Out of line, so that the loop
 * of ag_broadcast_shape needs no stack buffers. */
AG_COLD static int broadcast_error(const char *op, const ag_tensor *a, const ag_tensor *b,
                                   int dim, size_t da, size_t db)
{
    char sa[64];
    char sb[64];

    ag_set_error("ag_%s: shapes %s and %s cannot be broadcast: dimension %d "
                 "is %zu against %zu; sizes must match or one must be 1",
                 op, ag_shape_str(a, sa, sizeof sa), ag_shape_str(b, sb, sizeof sb),
                 dim, da, db);
    return -1;
}

int ag_broadcast_shape(const char *op, const ag_tensor *a, const ag_tensor *b,
                       int *ndim, size_t *shape)
{
    int n = a->ndim > b->ndim ? a->ndim : b->ndim;

    /* Operands of one rank, the common case, need no alignment. */
    if (a->ndim == b->ndim) {
        for (int i = 0; i < n; i++) {
            size_t da = a->shape[i];
            size_t db = b->shape[i];

            if (da != db && da != 1 && db != 1)
                return broadcast_error(op, a, b, i - n, da, db);
            shape[i] = da == 1 ? db : da;
        }
        *ndim = n;
        return 0;
    }

    for (int i = 0; i < n; i++) {
        /* Align at the last dimension; a missing dimension acts as size 1. */
        int ia = i - (n - a->ndim);
        int ib = i - (n - b->ndim);
        size_t da = ia >= 0 ? a->shape[ia] : 1;
        size_t db = ib >= 0 ? b->shape[ib] : 1;

        if (da != db && da != 1 && db != 1)
            return broadcast_error(op, a, b, i - n, da, db);
        shape[i] = da == 1 ? db : da;
    }
    *ndim = n;
    return 0;
}

void ag_broadcast_strides(const ag_tensor *t, int ndim, const size_t *shape,
                          size_t *strides)
{
    size_t stride = 1;

    for (int i = ndim - 1; i >= 0; i--) {
        int it = i - (ndim - t->ndim);
        size_t dim = it >= 0 ? t->shape[it] : 1;

        (void)shape;
        strides[i] = dim == 1 ? 0 : stride;
        stride *= dim;
    }
}
