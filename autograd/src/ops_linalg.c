/* STUB: placeholder until the real kernels land; every op here fails. */
#include "internal.h"

static int pending_forward(ag_tape *tape, ag_record *rec)
{
    (void)tape;
    ag_set_error("ag_%s: not implemented yet", rec->op->name);
    return -1;
}

const ag_op ag_op_matmul = {.name = "matmul", .n_inputs = 2, .shape = ag_shape_like_input, .forward = pending_forward};
const ag_op ag_op_linear = {.name = "linear", .n_inputs = 3, .shape = ag_shape_like_input, .forward = pending_forward};
const ag_op ag_op_transpose = {.name = "transpose", .n_inputs = 1, .shape = ag_shape_like_input, .forward = pending_forward};
const ag_op ag_op_reshape = {.name = "reshape", .n_inputs = 1, .shape = ag_shape_like_input, .forward = pending_forward};

ag_tensor *ag_matmul(ag_tape *t, ag_tensor *a, ag_tensor *b) { return ag_apply2(t, &ag_op_matmul, a, b); }
ag_tensor *ag_linear(ag_tape *t, ag_tensor *x, ag_tensor *w, ag_tensor *b) { ag_tensor *in[3] = {x, w, b}; return ag_apply(t, &ag_op_linear, 3, in, 0, NULL); }
ag_tensor *ag_transpose(ag_tape *t, ag_tensor *x) { return ag_apply1(t, &ag_op_transpose, x, 0, NULL); }
ag_tensor *ag_reshape(ag_tape *t, ag_tensor *x, int ndim, const size_t *shape) { (void)ndim; (void)shape; return ag_apply1(t, &ag_op_reshape, x, 0, NULL); }
