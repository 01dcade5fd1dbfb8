/* Fuzz target: the IDX loaders (plain and gzip-compressed files). */
#include <stdlib.h>

#include "fuzz_file.h"
#include "tapegrad/nn.h"

/* Loads the input with every IDX loader in both dtypes. A loader must
 * return a tensor whose element count matches its shape, or NULL with a
 * message; anything else is a bug. */
int fuzz_idx_one(const uint8_t *data, size_t size);
int fuzz_idx_one(const uint8_t *data, size_t size)
{
    typedef ag_tensor *(*idx_loader)(const char *, ag_dtype);
    static const idx_loader loaders[] = {nn_idx_load, nn_idx_load_images,
                                         nn_idx_load_labels};
    char path[64];

    if (fuzz_file_write(data, size, path, sizeof path) != 0)
        return 0;
    for (size_t k = 0; k < sizeof loaders / sizeof loaders[0]; k++) {
        for (int d = 0; d < 2; d++) {
            ag_error_clear();
            ag_tensor *t = loaders[k](path, d == 0 ? AG_F32 : AG_F64);

            if (t == NULL) {
                if (ag_error() == NULL)
                    abort(); /* a failure without a message */
                continue;
            }
            size_t numel = 1;
            for (int i = 0; i < ag_tensor_ndim(t); i++)
                numel *= ag_tensor_dim(t, i);
            if (numel != ag_tensor_numel(t))
                abort();
            ag_tensor_free(t);
        }
    }
    return 0;
}

#ifndef FUZZ_NO_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_idx_one(data, size);
}
#endif
