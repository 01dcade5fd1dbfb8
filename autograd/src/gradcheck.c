/* STUB: placeholder until the gradient checker lands. */
#include "internal.h"

ag_gradcheck_options ag_gradcheck_defaults(void)
{
    return (ag_gradcheck_options){.eps = 1e-6, .atol = 1e-5, .rtol = 1e-3};
}

int ag_gradcheck(ag_function f, void *user, int n_inputs, ag_tensor *const *inputs,
                 const ag_gradcheck_options *options, ag_gradcheck_result *result)
{
    (void)f; (void)user; (void)n_inputs; (void)inputs; (void)options; (void)result;
    ag_set_error("ag_gradcheck: not implemented yet");
    return -1;
}
