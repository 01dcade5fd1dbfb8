/*
 * tapegrad nn data loading: IDX files (the MNIST format), numeric CSV tables,
 * seeded shuffling and mini-batches.
 *
 * Loaders return heap tensors owned by the caller (free them with
 * ag_tensor_free). Batches are gathered into tensors on a tape, so a training
 * loop that resets the tape every step makes no heap allocation once warm.
 * Every function that fails returns NULL (or -1) and sets a message readable
 * with ag_error() that names the function, the file and the problem. A
 * loader that fails frees everything it made.
 */
#ifndef TAPEGRAD_NN_DATA_H
#define TAPEGRAD_NN_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tapegrad/autograd.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* IDX files                                                                 */
/* ------------------------------------------------------------------------ */

/*
 * An IDX file starts with a 4-byte magic number: two zero bytes, a type code
 * (0x08 unsigned byte, 0x09 signed byte, 0x0B int16, 0x0C int32, 0x0D float32,
 * 0x0E float64) and the number of dimensions. The sizes follow as big-endian
 * 32-bit integers, then the elements in row-major order, big-endian. The
 * loaders read plain files and gzip-compressed ones (such as the .gz files of
 * MNIST and Fashion-MNIST) alike.
 *
 * The loaders fail with a message naming the file on: a file that cannot be
 * opened or read, a bad magic number, an unsupported type code, a dimension
 * count out of range, and sizes whose product overflows. They also reject
 * data shorter than the sizes declare, bytes after the data, and corrupt
 * gzip data.
 */

/* Loads an IDX file of any type code as a heap tensor of the given dtype
 * with the file's shape (1 to AG_MAX_DIMS dimensions). Values are converted
 * unchanged (rounded to nearest for f32). The caller owns the result. */
ag_tensor *nn_idx_load(const char *path, ag_dtype dtype);

/* Loads images from an IDX file of unsigned bytes with 2 or more dimensions
 * (count x rows x cols for MNIST) as a heap tensor of shape
 * (count x rows*cols). Each row is one flattened image, and each pixel is
 * divided by 255 so it lies in [0, 1]. The caller owns the result. */
ag_tensor *nn_idx_load_images(const char *path, ag_dtype dtype);

/* Loads class labels from a one-dimensional IDX file of integers (type code
 * 0x08, 0x09, 0x0B or 0x0C) as a heap tensor of shape (count) holding the
 * class indices. Rejects a negative label, and for f32 a label above 2^24
 * (which f32 cannot hold exactly). The caller owns the result. */
ag_tensor *nn_idx_load_labels(const char *path, ag_dtype dtype);

/* ------------------------------------------------------------------------ */
/* CSV tables                                                                */
/* ------------------------------------------------------------------------ */

/* A numeric table read from a CSV file. */
typedef struct nn_csv {
    size_t n_rows;        /* data rows, not counting the header */
    size_t n_cols;        /* columns */
    char **column_names;  /* n_cols names from the header row */
    ag_tensor *data;      /* heap tensor of shape (n_rows x n_cols) */
} nn_csv;

/*
 * Reads a comma-separated file whose first line is a header of column names
 * and whose other lines hold one number per column. Fields are parsed with
 * strtod, which follows the C locale unless the program changed LC_NUMERIC;
 * spaces and tabs around a field are ignored. Header names may be quoted
 * with double quotes (a doubled quote inside stands for one). Lines may end
 * in LF or CRLF, the last line may lack its line ending, and empty lines are
 * skipped. A file with a header and no data rows gives a (0 x n_cols) tensor.
 *
 * Fails with a message naming the file, line and column on an empty file,
 * a missing header (a first line made only of numbers) or an empty column
 * name. It also rejects a row whose field count differs from the header's,
 * a field that is not a number, and a number out of range for the dtype.
 *
 * Returns a table the caller frees with nn_csv_free, or NULL with an error.
 */
nn_csv *nn_csv_load(const char *path, ag_dtype dtype);

/* Frees the table, its column names and its data tensor. To keep the tensor,
 * take csv->data and set the field to NULL before the call. NULL is a
 * no-op. */
void nn_csv_free(nn_csv *csv);

/* Returns the index of the column with this name, or -1 when there is none
 * (no error is set). */
int nn_csv_column(const nn_csv *csv, const char *name);

/* ------------------------------------------------------------------------ */
/* Shuffling and mini-batches                                                */
/* ------------------------------------------------------------------------ */

/* Puts indices[0..n) in a uniformly random order by Fisher-Yates, drawing
 * with ag_rng_below, so a given seed gives the same order on every
 * machine. Returns 0, or -1 with an error when rng or indices is NULL. */
int nn_shuffle(size_t *indices, size_t n, ag_rng *rng);

/* Gathers rows of `source` (its first dimension indexes the rows) into a
 * new tensor of shape (n_rows x the remaining dimensions of source) in the
 * order given by `rows`. A one-dimensional source such as labels gives shape
 * (n_rows). With a tape the result lives in the tape's arena (no heap
 * allocation once the tape is warm); with tape == NULL it is a heap tensor
 * owned by the caller. The result is a constant: no record, no gradient.
 * Returns NULL with an error when source is NULL, a row index is out of
 * range, or memory runs out. */
ag_tensor *nn_gather_rows(ag_tape *tape, ag_tensor *source,
                          const size_t *rows, size_t n_rows);

/* Options of a batch loader. */
typedef struct nn_loader_options {
    size_t batch_size; /* rows per batch; must be > 0 */
    bool shuffle;      /* draw a new row order at the start of each epoch */
    bool drop_last;    /* skip the last batch when it is smaller than batch_size */
    uint64_t seed;     /* seed of the shuffling generator */
} nn_loader_options;

/* Returns the defaults: batch_size 64, shuffle on, drop_last off, seed 0. */
nn_loader_options nn_loader_defaults(void);

/* Hands out mini-batches of a data set, one epoch at a time. */
typedef struct nn_loader nn_loader;

/*
 * Creates a loader over `inputs` (first dimension: samples) and, optionally,
 * `targets` with the same number of samples (NULL when there are none). The
 * loader borrows both tensors: they must outlive it and are not freed by it.
 * `options` may be NULL for the defaults. The first epoch starts at once.
 * Returns a loader the caller frees with nn_loader_free, or NULL with an
 * error (sample counts differ, batch_size 0, out of memory).
 */
nn_loader *nn_loader_new(ag_tensor *inputs, ag_tensor *targets,
                         const nn_loader_options *options);

/* Frees the loader (not the tensors it borrows). NULL is a no-op. */
void nn_loader_free(nn_loader *loader);

/* Returns the number of batches in one epoch (the last partial batch counts
 * unless drop_last is set). */
size_t nn_loader_batch_count(const nn_loader *loader);

/* Returns the number of samples the loader hands out per epoch. */
size_t nn_loader_sample_count(const nn_loader *loader);

/* Starts a new epoch: rewinds and, when shuffling, draws a new order. */
void nn_loader_reset(nn_loader *loader);

/*
 * Gathers the next batch of the epoch onto `tape`: *inputs gets the rows of
 * the input tensor and, when the loader has targets, *targets the matching
 * rows of the target tensor (targets may be NULL otherwise). The batch
 * tensors live on the tape until its next reset. Returns 1 when a batch was
 * produced, 0 at the end of the epoch (call nn_loader_reset for the next
 * one), or -1 with an error (out of memory, NULL argument).
 */
int nn_loader_next(nn_loader *loader, ag_tape *tape, ag_tensor **inputs,
                   ag_tensor **targets);

#ifdef __cplusplus
}
#endif

#endif /* TAPEGRAD_NN_DATA_H */
