/* Fuzz target: the safetensors reader behind nn_params_load. */
#include <stdlib.h>

#include "fuzz_file.h"
#include "tapegrad/nn.h"

/* Adds a zeroed heap tensor to the set; returns -1 on failure. */
static int add_zeros(nn_params *params, const char *name, ag_dtype dtype, int ndim,
                     const size_t *shape)
{
    ag_tensor *t = ag_zeros(NULL, dtype, ndim, shape);

    if (nn_params_add(params, name, t) != 0) {
        ag_tensor_free(t);
        return -1;
    }
    return 0;
}

/* The tensors of tests/data/reference.safetensors, so that the seed file
 * loads and mutations of it reach every check of the reader. */
static nn_params *reference_params(void)
{
    nn_params *params = nn_params_new();

    if (params == NULL || add_zeros(params, "layer1.W", AG_F32, AG_SHAPE(2, 3)) != 0 ||
        add_zeros(params, "layer1.b", AG_F64, AG_SHAPE(1, 3)) != 0 ||
        add_zeros(params, "scale", AG_F64, AG_SHAPE(1)) != 0) {
        nn_params_free(params);
        return NULL;
    }
    return params;
}

/* Loads the input into the reference set. On failure no parameter may have
 * changed (the reader checks the whole file first). */
int fuzz_safetensors_one(const uint8_t *data, size_t size);
int fuzz_safetensors_one(const uint8_t *data, size_t size)
{
    char path[64];
    nn_params *params = reference_params();

    if (params == NULL || fuzz_file_write(data, size, path, sizeof path) != 0) {
        nn_params_free(params);
        return 0;
    }

    ag_error_clear();
    if (nn_params_load(params, path) != 0) {
        if (ag_error() == NULL)
            abort(); /* a failure without a message */
        for (size_t i = 0; i < nn_params_count(params); i++) {
            ag_tensor *t = nn_params_at(params, i, NULL);
            for (size_t k = 0; k < ag_tensor_numel(t); k++) {
                if (ag_tensor_get(t, k) != 0.0)
                    abort(); /* a failed load wrote a value */
            }
        }
    }
    nn_params_free(params);
    return 0;
}

#ifndef FUZZ_NO_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_safetensors_one(data, size);
}
#endif
