/* Seeded shuffling and mini-batches gathered onto the tape. */
#include <stdlib.h>
#include <string.h>

#include "tapegrad/nn_data.h"

struct nn_loader {
    ag_tensor *inputs;  /* borrowed */
    ag_tensor *targets; /* borrowed, may be NULL */
    size_t n_samples;
    size_t batch_size;
    bool shuffle;
    bool drop_last;
    ag_rng rng;
    size_t *order;      /* sample indices in this epoch's order */
    size_t position;    /* first sample of the next batch in `order` */
};

int nn_shuffle(size_t *indices, size_t n, ag_rng *rng)
{
    if (rng == NULL || (indices == NULL && n > 0)) {
        ag_set_error("nn_shuffle: %s is NULL; pass %s", rng == NULL ? "rng" : "indices",
                     rng == NULL ? "a generator from ag_rng_new" : "an array of n indices");
        return -1;
    }

    /* Fisher-Yates: position i takes a uniform pick among 0..i, which gives
     * every permutation the same probability. */
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)ag_rng_below(rng, i);
        size_t tmp = indices[i - 1];

        indices[i - 1] = indices[j];
        indices[j] = tmp;
    }
    return 0;
}

/* ---- gathering rows ------------------------------------------------------- */

static size_t dtype_size(ag_dtype dtype)
{
    return dtype == AG_F32 ? sizeof(float) : sizeof(double);
}

ag_tensor *nn_gather_rows(ag_tape *tape, ag_tensor *source, const size_t *rows,
                          size_t n_rows)
{
    /* A NULL source keeps the earlier message, as ops do. */
    if (source == NULL)
        return NULL;
    if (rows == NULL && n_rows > 0) {
        ag_set_error("nn_gather_rows: rows is NULL; pass %zu row indices", n_rows);
        return NULL;
    }

    int ndim = ag_tensor_ndim(source);
    size_t shape[AG_MAX_DIMS];
    size_t n_source_rows = ag_tensor_dim(source, 0);

    memcpy(shape, ag_tensor_shape(source), (size_t)ndim * sizeof(size_t));
    for (size_t i = 0; i < n_rows; i++) {
        if (rows[i] >= n_source_rows) {
            char buf[64];
            ag_set_error("nn_gather_rows: row index %zu at position %zu is out of "
                         "range for a source of shape %s",
                         rows[i], i, ag_shape_str(source, buf, sizeof buf));
            return NULL;
        }
    }

    shape[0] = n_rows;
    ag_tensor *batch = ag_zeros(tape, ag_tensor_dtype(source), ndim, shape);
    if (batch == NULL)
        return NULL;

    size_t row_bytes = n_source_rows == 0 ? 0
                                          : ag_tensor_numel(source) / n_source_rows *
                                                dtype_size(ag_tensor_dtype(source));
    const unsigned char *from = ag_tensor_data(source);
    unsigned char *to = ag_tensor_data(batch);

    for (size_t i = 0; i < n_rows; i++)
        memcpy(to + i * row_bytes, from + rows[i] * row_bytes, row_bytes);
    return batch;
}

/* ---- loader --------------------------------------------------------------- */

nn_loader_options nn_loader_defaults(void)
{
    nn_loader_options options = {
        .batch_size = 64,
        .shuffle = true,
        .drop_last = false,
        .seed = 0,
    };
    return options;
}

nn_loader *nn_loader_new(ag_tensor *inputs, ag_tensor *targets,
                         const nn_loader_options *options)
{
    nn_loader_options opts = options != NULL ? *options : nn_loader_defaults();

    if (inputs == NULL) {
        ag_set_error("nn_loader_new: inputs is NULL; pass the input tensor "
                     "(first dimension: samples)");
        return NULL;
    }
    if (opts.batch_size == 0) {
        ag_set_error("nn_loader_new: batch_size is 0; use 1 or more samples per batch");
        return NULL;
    }

    size_t n_samples = ag_tensor_dim(inputs, 0);
    if (targets != NULL && ag_tensor_dim(targets, 0) != n_samples) {
        char in_buf[64];
        char target_buf[64];
        ag_set_error("nn_loader_new: inputs %s and targets %s have different "
                     "sample counts; their first dimensions must be equal",
                     ag_shape_str(inputs, in_buf, sizeof in_buf),
                     ag_shape_str(targets, target_buf, sizeof target_buf));
        return NULL;
    }

    nn_loader *loader = ag_calloc(1, sizeof *loader);
    size_t *order = ag_alloc((n_samples > 0 ? n_samples : 1) * sizeof *order);
    if (loader == NULL || order == NULL) {
        ag_set_error("nn_loader_new: out of memory for %zu sample indices", n_samples);
        ag_free(loader);
        ag_free(order);
        return NULL;
    }

    loader->inputs = inputs;
    loader->targets = targets;
    loader->n_samples = n_samples;
    loader->batch_size = opts.batch_size;
    loader->shuffle = opts.shuffle;
    loader->drop_last = opts.drop_last;
    loader->rng = ag_rng_new(opts.seed);
    loader->order = order;
    for (size_t i = 0; i < n_samples; i++)
        order[i] = i;
    nn_loader_reset(loader);
    return loader;
}

void nn_loader_free(nn_loader *loader)
{
    if (loader == NULL)
        return;
    ag_free(loader->order);
    ag_free(loader);
}

size_t nn_loader_sample_count(const nn_loader *loader)
{
    if (loader == NULL)
        return 0;
    if (loader->drop_last)
        return loader->n_samples - loader->n_samples % loader->batch_size;
    return loader->n_samples;
}

size_t nn_loader_batch_count(const nn_loader *loader)
{
    if (loader == NULL)
        return 0;

    size_t samples = nn_loader_sample_count(loader);
    return (samples + loader->batch_size - 1) / loader->batch_size;
}

void nn_loader_reset(nn_loader *loader)
{
    if (loader == NULL)
        return;

    /* Shuffling the previous order is as uniform as shuffling 0..n-1, and
     * each epoch's order still follows from the seed alone. */
    if (loader->shuffle)
        nn_shuffle(loader->order, loader->n_samples, &loader->rng);
    loader->position = 0;
}

int nn_loader_next(nn_loader *loader, ag_tape *tape, ag_tensor **inputs,
                   ag_tensor **targets)
{
    if (loader == NULL || tape == NULL || inputs == NULL ||
        (loader->targets != NULL && targets == NULL)) {
        ag_set_error("nn_loader_next: loader, tape and inputs must not be NULL, "
                     "nor targets when the loader has targets");
        return -1;
    }

    size_t end = nn_loader_sample_count(loader);
    if (loader->position >= end)
        return 0;

    const size_t *rows = loader->order + loader->position;
    size_t count = end - loader->position < loader->batch_size ? end - loader->position
                                                               : loader->batch_size;

    *inputs = nn_gather_rows(tape, loader->inputs, rows, count);
    if (*inputs == NULL)
        return -1;
    if (loader->targets != NULL) {
        *targets = nn_gather_rows(tape, loader->targets, rows, count);
        if (*targets == NULL)
            return -1;
    } else if (targets != NULL) {
        *targets = NULL;
    }

    loader->position += count;
    return 1;
}
