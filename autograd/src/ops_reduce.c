/* STUB: placeholder until the real kernels land; every op here fails. */
#include "internal.h"

static int pending_forward(ag_tape *tape, ag_record *rec)
{
    (void)tape;
    ag_set_error("ag_%s: not implemented yet", rec->op->name);
    return -1;
}

const ag_op ag_op_sum = {.name = "sum", .n_inputs = 1, .shape = ag_shape_like_input, .forward = pending_forward};
const ag_op ag_op_mean = {.name = "mean", .n_inputs = 1, .shape = ag_shape_like_input, .forward = pending_forward};
const ag_op ag_op_max = {.name = "max", .n_inputs = 1, .shape = ag_shape_like_input, .forward = pending_forward};
const ag_op ag_op_sum_axis = {.name = "sum_axis", .n_inputs = 1, .shape = ag_shape_like_input, .forward = pending_forward};
const ag_op ag_op_mean_axis = {.name = "mean_axis", .n_inputs = 1, .shape = ag_shape_like_input, .forward = pending_forward};
const ag_op ag_op_max_axis = {.name = "max_axis", .n_inputs = 1, .shape = ag_shape_like_input, .forward = pending_forward};

ag_tensor *ag_sum(ag_tape *t, ag_tensor *x) { return ag_apply1(t, &ag_op_sum, x, 0, NULL); }
ag_tensor *ag_mean(ag_tape *t, ag_tensor *x) { return ag_apply1(t, &ag_op_mean, x, 0, NULL); }
ag_tensor *ag_max(ag_tape *t, ag_tensor *x) { return ag_apply1(t, &ag_op_max, x, 0, NULL); }
ag_tensor *ag_sum_axis(ag_tape *t, ag_tensor *x, int axis, bool k) { (void)axis; (void)k; return ag_apply1(t, &ag_op_sum_axis, x, 0, NULL); }
ag_tensor *ag_mean_axis(ag_tape *t, ag_tensor *x, int axis, bool k) { (void)axis; (void)k; return ag_apply1(t, &ag_op_mean_axis, x, 0, NULL); }
ag_tensor *ag_max_axis(ag_tape *t, ag_tensor *x, int axis, bool k) { (void)axis; (void)k; return ag_apply1(t, &ag_op_max_axis, x, 0, NULL); }
