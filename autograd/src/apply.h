/*
 * The body of ag_apply, inline. tape.c builds the public ag_apply from it.
 * The elementwise ops call it with their own op definition, a constant, so
 * the compiler drops the checks of the definition and calls the forward
 * kernel directly. Private; not installed.
 */
#ifndef TAPEGRAD_AUTOGRAD_APPLY_H
#define TAPEGRAD_AUTOGRAD_APPLY_H

#include <string.h>

#include "internal.h"

/* Reports why ag_apply cannot run `op` on these arguments and returns NULL.
 * Called only when one of ag_apply's checks failed. */
AG_COLD ag_tensor *ag_apply_reject(ag_tape *tape, const ag_op *op, int n_inputs,
                                   ag_tensor *const *inputs, int n_params,
                                   const double *params);

/* Runs the rest of ag_apply for an op whose shape rule decides the output
 * shape, once the arguments passed the checks. */
ag_tensor *ag_apply_shaped(ag_tape *tape, const ag_op *op, int n_inputs,
                           ag_tensor *const *inputs, int n_params, const double *params,
                           bool needs_grad);

/* Returns -1 with an error naming the op and its inputs when the output of
 * `rec` contains a NaN or an infinity (anomaly mode), and 0 otherwise. The
 * record index is the one the op has, or would have had, on the tape. */
int ag_anomaly_check_output(const ag_tape *tape, const ag_record *rec, bool recorded);

/* Doubles the tape's list of records. Returns 0, or -1 when out of memory. */
int ag_tape_grow_records(ag_tape *tape);

/* Sets the fields of a new record but its output; unused inputs and params
 * are zero. */
static inline void ag_record_init(ag_record *rec, const ag_op *op, int n_inputs,
                                  ag_tensor *const *inputs, int n_params,
                                  const double *params)
{
    rec->op = op;
    rec->n_inputs = n_inputs;
    /* Clearing the whole arrays first takes a few fixed-size stores,
     * whereas GCC turns a loop over the unused tail into a call to memset. */
    memset(rec->inputs, 0, sizeof rec->inputs);
    memset(rec->params, 0, sizeof rec->params);
    for (int i = 0; i < n_inputs; i++)
        rec->inputs[i] = inputs[i];
    for (int i = 0; i < n_params; i++)
        rec->params[i] = params[i];
    rec->saved = NULL;
    rec->index = 0;
}

/* Finishes ag_apply once the forward kernel has run: checks the output in
 * anomaly mode, and records the op when the tape records and an input
 * requires a gradient. Returns the output, or NULL with an error. */
static inline ag_tensor *ag_apply_finish(ag_tape *tape, ag_record *rec, bool needs_grad)
{
    ag_tensor *out = rec->output;
    bool record = tape->recording && needs_grad && rec->op->backward != NULL;

    if (tape->anomaly && ag_anomaly_check_output(tape, rec, record) != 0)
        return NULL;
    if (!record)
        return out;

    if (tape->n_records == tape->cap_records && ag_tape_grow_records(tape) != 0) {
        ag_set_error("ag_%s: out of memory for the tape's record list", rec->op->name);
        return NULL;
    }
    rec->index = tape->n_records;
    tape->records[tape->n_records++] = rec;
    out->record = rec;
    out->requires_grad = true;
    return out;
}

/* Returns true when the output of `op` has the dtype and shape of input 0,
 * so its shape rule need not run: a unary elementwise op, or a binary one
 * whose inputs have one shape. The built-in elementwise ops share these two
 * shape rules, so the rule itself marks an op as elementwise, and the public
 * ag_op needs no flag that a custom op could set wrongly. */
static inline bool ag_keeps_input_shape(const ag_op *op, int n_inputs,
                                        ag_tensor *const *inputs)
{
    if (op->shape == ag_shape_like_input)
        return true;
    if (op->shape != ag_shape_broadcast || n_inputs != 2)
        return false;

    const ag_tensor *a = inputs[0];
    const ag_tensor *b = inputs[1];
    if (a->ndim != b->ndim || a->numel != b->numel)
        return false;
    /* One element in the same rank: every dimension is 1. */
    return a->numel == 1 || memcmp(a->shape, b->shape, sizeof a->shape) == 0;
}

/* Allocates a record and an output shaped like `like` in one arena bump:
 * the record, then the tensor header, then the data. Returns the record
 * with rec->output set and the other fields unset, or NULL when out of
 * memory (without a message). */
static inline ag_record *ag_record_with_output_like(ag_tape *tape, const ag_tensor *like)
{
    /* The sizes are multiples of AG_SMALL_ALIGN, so the header stays
     * aligned after the record. */
    enum { REC_SIZE = (sizeof(ag_record) + AG_SMALL_ALIGN - 1) & ~(AG_SMALL_ALIGN - 1) };
    size_t bytes = like->numel * ag_dtype_size(like->dtype);
    size_t align = ag_arena_align(bytes);
    size_t data_offset = (REC_SIZE + sizeof(ag_tensor) + (align - 1)) & ~(align - 1);
    unsigned char *block = ag_arena_alloc_aligned(&tape->arena, data_offset + bytes, align);

    if (block == NULL)
        return NULL;

    ag_record *rec = (ag_record *)block;
    ag_tensor *out = (ag_tensor *)(block + REC_SIZE);
    ag_tensor_init_like(out, tape, like, block + data_offset);
    rec->output = out;
    return rec;
}

/* Applies an op; see ag_apply in autograd.h. */
static inline ag_tensor *ag_apply_inline(ag_tape *tape, const ag_op *op, int n_inputs,
                                         ag_tensor *const *inputs, int n_params,
                                         const double *params)
{
    /* One test covers every argument, and ag_apply_reject reports which one
     * failed. */
    if (tape == NULL || op == NULL || inputs == NULL || n_inputs != op->n_inputs ||
        n_inputs < 1 || n_inputs > AG_MAX_INPUTS || op->name == NULL ||
        op->name[0] == '\0' || op->shape == NULL || op->forward == NULL ||
        (unsigned)n_params > AG_MAX_PARAMS || (n_params > 0 && params == NULL))
        return ag_apply_reject(tape, op, n_inputs, inputs, n_params, params);

    bool needs_grad = false;
    for (int i = 0; i < n_inputs; i++) {
        const ag_tensor *t = inputs[i];

        if (t == NULL || (t->tape != NULL && t->tape != tape) ||
            t->dtype != inputs[0]->dtype)
            return ag_apply_reject(tape, op, n_inputs, inputs, n_params, params);
        needs_grad |= t->requires_grad;
    }

    if (!ag_keeps_input_shape(op, n_inputs, inputs))
        return ag_apply_shaped(tape, op, n_inputs, inputs, n_params, params, needs_grad);

    /* Elementwise ops, the most frequent, skip the shape rule and allocate
     * once. */
    ag_record *rec = ag_record_with_output_like(tape, inputs[0]);
    if (rec == NULL) {
        ag_set_error("ag_%s: out of memory for its output of %zu elements", op->name,
                     inputs[0]->numel);
        return NULL;
    }
    ag_record_init(rec, op, n_inputs, inputs, n_params, params);
    if (op->forward(tape, rec) != 0)
        return NULL;
    return ag_apply_finish(tape, rec, needs_grad);
}

#endif /* TAPEGRAD_AUTOGRAD_APPLY_H */
