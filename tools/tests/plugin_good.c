/*
 * A function for `tapegrad check` whose gradients are right:
 * f(a, b) = sum(tanh(cube(a) @ b)), with cube a custom op registered here.
 * Build: cc -shared -fPIC plugin_good.c -ltapegrad
 */
#include <tapegrad/autograd.h>

/* The output has the input's dtype and shape. */
static int cube_shape(const ag_record *rec, ag_dtype *dtype, int *ndim, size_t *shape)
{
    const ag_tensor *x = rec->inputs[0];

    *dtype = ag_tensor_dtype(x);
    *ndim = ag_tensor_ndim(x);
    for (int d = 0; d < *ndim; d++)
        shape[d] = ag_tensor_dim(x, d);
    return 0;
}

/* y = x^3 */
static int cube_forward(ag_tape *tape, ag_record *rec)
{
    (void)tape;
    for (size_t i = 0; i < ag_tensor_numel(rec->output); i++) {
        double x = ag_tensor_get(rec->inputs[0], i);

        ag_tensor_set(rec->output, i, x * x * x);
    }
    return 0;
}

/* dy/dx = 3 x^2 */
static int cube_backward(ag_tape *tape, ag_record *rec)
{
    ag_tensor *gx = ag_input_grad(tape, rec, 0);
    const ag_tensor *gy = ag_tensor_grad(rec->output);

    if (gx == NULL)
        return 0;
    for (size_t i = 0; i < ag_tensor_numel(gx); i++) {
        double x = ag_tensor_get(rec->inputs[0], i);

        ag_tensor_set(gx, i, ag_tensor_get(gx, i) + ag_tensor_get(gy, i) * 3.0 * x * x);
    }
    return 0;
}

static const ag_op cube_op = {
    .name = "plugin_good_cube",
    .n_inputs = 1,
    .shape = cube_shape,
    .forward = cube_forward,
    .backward = cube_backward,
};

ag_tensor *good_function(ag_tape *tape, ag_tensor *const *inputs, int n_inputs,
                         void *user);

ag_tensor *good_function(ag_tape *tape, ag_tensor *const *inputs, int n_inputs,
                         void *user)
{
    (void)user;
    if (n_inputs != 2) {
        ag_set_error("good_function: expected 2 inputs (a, b), got %d", n_inputs);
        return NULL;
    }
    /* The registry outlives this call, so register the op once. */
    if (ag_op_find(cube_op.name) == NULL && ag_op_register(&cube_op) != 0)
        return NULL;

    ag_tensor *cube = ag_apply(tape, &cube_op, 1, inputs, 0, NULL);
    return ag_sum(tape, ag_tanh(tape, ag_matmul(tape, cube, inputs[1])));
}
