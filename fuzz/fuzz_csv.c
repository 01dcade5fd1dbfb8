/* Fuzz target: the CSV loader. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_file.h"
#include "tapegrad/nn.h"

/* Loads the input as CSV in both dtypes and checks the table's invariants:
 * a (rows x cols) tensor, one name per column, each column found by name. */
int fuzz_csv_one(const uint8_t *data, size_t size);
int fuzz_csv_one(const uint8_t *data, size_t size)
{
    char path[64];

    if (fuzz_file_write(data, size, path, sizeof path) != 0)
        return 0;
    for (int d = 0; d < 2; d++) {
        ag_error_clear();
        nn_csv *csv = nn_csv_load(path, d == 0 ? AG_F32 : AG_F64);

        if (csv == NULL) {
            if (ag_error() == NULL)
                abort(); /* a failure without a message */
            continue;
        }
        if (ag_tensor_ndim(csv->data) != 2 || ag_tensor_dim(csv->data, 0) != csv->n_rows ||
            ag_tensor_dim(csv->data, 1) != csv->n_cols)
            abort();
        for (size_t c = 0; c < csv->n_cols; c++) {
            int found = nn_csv_column(csv, csv->column_names[c]);
            /* Duplicate names find the first column with that name. */
            if (found < 0 || strcmp(csv->column_names[found], csv->column_names[c]) != 0)
                abort();
        }
        nn_csv_free(csv);
    }
    return 0;
}

#ifndef FUZZ_NO_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_csv_one(data, size);
}
#endif
