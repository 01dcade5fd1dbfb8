/*
 * A function for `tapegrad check` with a deliberately wrong gradient:
 * f(a, b) = sum(cube(a) * b), where the custom op cube's backward rule uses
 * 2 x^2 in place of 3 x^2. The check must fail and name input 0.
 */
#include <tapegrad/autograd.h>

static int cube_shape(const ag_record *rec, ag_dtype *dtype, int *ndim, size_t *shape)
{
    const ag_tensor *x = rec->inputs[0];

    *dtype = ag_tensor_dtype(x);
    *ndim = ag_tensor_ndim(x);
    for (int d = 0; d < *ndim; d++)
        shape[d] = ag_tensor_dim(x, d);
    return 0;
}

static int cube_forward(ag_tape *tape, ag_record *rec)
{
    (void)tape;
    for (size_t i = 0; i < ag_tensor_numel(rec->output); i++) {
        double x = ag_tensor_get(rec->inputs[0], i);

        ag_tensor_set(rec->output, i, x * x * x);
    }
    return 0;
}

/* Wrong on purpose: the derivative of x^3 is 3 x^2. */
static int cube_backward_wrong(ag_tape *tape, ag_record *rec)
{
    ag_tensor *gx = ag_input_grad(tape, rec, 0);
    const ag_tensor *gy = ag_tensor_grad(rec->output);

    if (gx == NULL)
        return 0;
    for (size_t i = 0; i < ag_tensor_numel(gx); i++) {
        double x = ag_tensor_get(rec->inputs[0], i);

        ag_tensor_set(gx, i, ag_tensor_get(gx, i) + ag_tensor_get(gy, i) * 2.0 * x * x);
    }
    return 0;
}

static const ag_op wrong_cube_op = {
    .name = "plugin_wrong_cube",
    .n_inputs = 1,
    .shape = cube_shape,
    .forward = cube_forward,
    .backward = cube_backward_wrong,
};

ag_tensor *wrong_function(ag_tape *tape, ag_tensor *const *inputs, int n_inputs,
                          void *user);

ag_tensor *wrong_function(ag_tape *tape, ag_tensor *const *inputs, int n_inputs,
                          void *user)
{
    (void)user;
    if (n_inputs != 2) {
        ag_set_error("wrong_function: expected 2 inputs (a, b), got %d", n_inputs);
        return NULL;
    }
    if (ag_op_find(wrong_cube_op.name) == NULL && ag_op_register(&wrong_cube_op) != 0)
        return NULL;

    ag_tensor *cube = ag_apply(tape, &wrong_cube_op, 1, inputs, 0, NULL);
    return ag_sum(tape, ag_mul(tape, cube, inputs[1]));
}
