/* STUB: placeholder until the real kernels land; every op here fails. */
#include "internal.h"

static int pending_forward(ag_tape *tape, ag_record *rec)
{
    (void)tape;
    ag_set_error("ag_%s: not implemented yet", rec->op->name);
    return -1;
}

const ag_op ag_op_add = {.name = "add", .n_inputs = 2, .shape = ag_shape_like_input, .forward = pending_forward};
const ag_op ag_op_sub = {.name = "sub", .n_inputs = 2, .shape = ag_shape_like_input, .forward = pending_forward};
const ag_op ag_op_mul = {.name = "mul", .n_inputs = 2, .shape = ag_shape_like_input, .forward = pending_forward};
const ag_op ag_op_div = {.name = "div", .n_inputs = 2, .shape = ag_shape_like_input, .forward = pending_forward};
const ag_op ag_op_pow = {.name = "pow", .n_inputs = 2, .shape = ag_shape_like_input, .forward = pending_forward};
const ag_op ag_op_maximum = {.name = "maximum", .n_inputs = 2, .shape = ag_shape_like_input, .forward = pending_forward};
const ag_op ag_op_minimum = {.name = "minimum", .n_inputs = 2, .shape = ag_shape_like_input, .forward = pending_forward};

ag_tensor *ag_add(ag_tape *t, ag_tensor *a, ag_tensor *b) { return ag_apply2(t, &ag_op_add, a, b); }
ag_tensor *ag_sub(ag_tape *t, ag_tensor *a, ag_tensor *b) { return ag_apply2(t, &ag_op_sub, a, b); }
ag_tensor *ag_mul(ag_tape *t, ag_tensor *a, ag_tensor *b) { return ag_apply2(t, &ag_op_mul, a, b); }
ag_tensor *ag_div(ag_tape *t, ag_tensor *a, ag_tensor *b) { return ag_apply2(t, &ag_op_div, a, b); }
ag_tensor *ag_pow(ag_tape *t, ag_tensor *a, ag_tensor *b) { return ag_apply2(t, &ag_op_pow, a, b); }
ag_tensor *ag_maximum(ag_tape *t, ag_tensor *a, ag_tensor *b) { return ag_apply2(t, &ag_op_maximum, a, b); }
ag_tensor *ag_minimum(ag_tape *t, ag_tensor *a, ag_tensor *b) { return ag_apply2(t, &ag_op_minimum, a, b); }
