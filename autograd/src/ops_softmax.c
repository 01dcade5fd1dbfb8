/* STUB: placeholder until the real kernels land; every op here fails. */
#include "internal.h"

static int pending_forward(ag_tape *tape, ag_record *rec)
{
    (void)tape;
    ag_set_error("ag_%s: not implemented yet", rec->op->name);
    return -1;
}

const ag_op ag_op_logsumexp = {.name = "logsumexp", .n_inputs = 1, .shape = ag_shape_like_input, .forward = pending_forward};
const ag_op ag_op_logsumexp_axis = {.name = "logsumexp_axis", .n_inputs = 1, .shape = ag_shape_like_input, .forward = pending_forward};
const ag_op ag_op_softmax = {.name = "softmax", .n_inputs = 1, .shape = ag_shape_like_input, .forward = pending_forward};
const ag_op ag_op_log_softmax = {.name = "log_softmax", .n_inputs = 1, .shape = ag_shape_like_input, .forward = pending_forward};

ag_tensor *ag_logsumexp(ag_tape *t, ag_tensor *x) { return ag_apply1(t, &ag_op_logsumexp, x, 0, NULL); }
ag_tensor *ag_logsumexp_axis(ag_tape *t, ag_tensor *x, int axis, bool k) { (void)axis; (void)k; return ag_apply1(t, &ag_op_logsumexp_axis, x, 0, NULL); }
ag_tensor *ag_softmax(ag_tape *t, ag_tensor *x, int axis) { (void)axis; return ag_apply1(t, &ag_op_softmax, x, 0, NULL); }
ag_tensor *ag_log_softmax(ag_tape *t, ag_tensor *x, int axis) { (void)axis; return ag_apply1(t, &ag_op_log_softmax, x, 0, NULL); }
