/* The tape: records appended by ops, and the reverse sweep over them. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "apply.h"

/* ---- lifetime ------------------------------------------------------------- */

ag_tape *ag_tape_new(void)
{
    ag_register_builtins();

    ag_tape *tape = ag_heap_alloc(sizeof *tape);
    if (tape == NULL) {
        ag_set_error("ag_tape_new: out of memory");
        return NULL;
    }
    memset(tape, 0, sizeof *tape);
    tape->recording = true;
    return tape;
}

void ag_tape_free(ag_tape *tape)
{
    if (tape == NULL)
        return;
    ag_arena_free(&tape->arena);
    ag_heap_free(tape->records);
    ag_heap_free(tape);
}

void ag_tape_reset(ag_tape *tape)
{
    if (tape == NULL)
        return;
    ag_arena_reset(&tape->arena);
    tape->n_records = 0;
    tape->has_adjoints = false;
}

bool ag_tape_set_recording(ag_tape *tape, bool recording)
{
    bool previous = tape->recording;

    tape->recording = recording;
    return previous;
}

bool ag_tape_is_recording(const ag_tape *tape) { return tape->recording; }
size_t ag_tape_size(const ag_tape *tape) { return tape->n_records; }
size_t ag_tape_capacity(const ag_tape *tape) { return tape->arena.capacity; }

void *ag_tape_alloc(ag_tape *tape, size_t size)
{
    void *ptr = ag_arena_alloc(&tape->arena, size);

    if (ptr == NULL)
        ag_set_error("ag_tape_alloc: out of memory for %zu bytes", size);
    return ptr;
}

const ag_record *ag_tape_record(const ag_tape *tape, size_t index)
{
    return index < tape->n_records ? tape->records[index] : NULL;
}

/* ---- anomaly mode --------------------------------------------------------- */

bool ag_tape_set_anomaly_mode(ag_tape *tape, bool enabled)
{
    bool previous = tape->anomaly;

    tape->anomaly = enabled;
    return previous;
}

bool ag_tape_anomaly_mode(const ag_tape *tape) { return tape->anomaly; }

/* Min and max over the elements that are not NaN, and the non-finite ones. */
typedef struct value_summary {
    double min;
    double max;
    size_t n_nan;
    size_t n_inf;
    size_t first_bad; /* index of the first non-finite element */
} value_summary;

static value_summary summarize(const ag_tensor *t)
{
    value_summary s = {.min = INFINITY, .max = -INFINITY, .first_bad = SIZE_MAX};

    for (size_t i = 0; i < t->numel; i++) {
        double v = t->dtype == AG_F32 ? ((const float *)t->data)[i]
                                      : ((const double *)t->data)[i];

        if (isfinite(v)) {
            s.min = fmin(s.min, v);
            s.max = fmax(s.max, v);
            continue;
        }
        if (s.first_bad == SIZE_MAX)
            s.first_bad = i;
        if (isnan(v)) {
            s.n_nan++;
        } else {
            s.n_inf++;
            s.min = fmin(s.min, v);
            s.max = fmax(s.max, v);
        }
    }
    return s;
}

/* Writes "input 0 (2x3) f64 min -1 max 4, 0 NaN, 1 inf; input 1 ..." */
static void describe_inputs(const ag_record *rec, char *buf, size_t size)
{
    size_t used = 0;

    buf[0] = '\0';
    for (int k = 0; k < rec->n_inputs && used < size; k++) {
        const ag_tensor *x = rec->inputs[k];
        value_summary s = summarize(x);
        char shape[64];

        char range[64];

        /* min > max means no element was finite. */
        if (s.min <= s.max)
            snprintf(range, sizeof range, "min %.6g max %.6g", s.min, s.max);
        else
            snprintf(range, sizeof range, "no finite values");
        used += (size_t)snprintf(buf + used, size - used,
                                 "%sinput %d %s %s %s, %zu NaN, %zu inf",
                                 k == 0 ? "" : "; ", k,
                                 ag_shape_str(x, shape, sizeof shape),
                                 ag_dtype_name(x->dtype), range, s.n_nan, s.n_inf);
    }
}

int ag_anomaly_check_output(const ag_tape *tape, const ag_record *rec, bool recorded)
{
    value_summary s = summarize(rec->output);
    char shape[64];
    char inputs[384];

    if (s.first_bad == SIZE_MAX)
        return 0;
    describe_inputs(rec, inputs, sizeof inputs);
    /* An unrecorded op has no index; the tape size places it. */
    ag_set_error("ag_%s: anomaly mode: %s %zu produced %zu NaN and %zu inf in "
                 "its output %s, the first at element %zu; %s",
                 rec->op->name,
                 recorded ? "record" : "an unrecorded op on a tape of size",
                 tape->n_records, s.n_nan, s.n_inf,
                 ag_shape_str(rec->output, shape, sizeof shape), s.first_bad, inputs);
    return -1;
}

int ag_anomaly_check_adjoints(const char *caller, const ag_record *rec)
{
    for (int k = 0; k < rec->n_inputs; k++) {
        const ag_tensor *x = rec->inputs[k];

        if (!x->requires_grad || x->grad == NULL)
            continue;

        value_summary s = summarize(x->grad);
        if (s.first_bad == SIZE_MAX)
            continue;

        value_summary g = summarize(rec->output->grad);
        char inputs[320];
        describe_inputs(rec, inputs, sizeof inputs);
        ag_set_error("%s: anomaly mode: the backward rule of record %zu "
                     "(%s) produced %zu NaN and %zu inf in the adjoint of input %d, "
                     "the first at element %zu; output adjoint min %.6g max %.6g, "
                     "%zu non-finite; %s",
                     caller, rec->index, rec->op->name, s.n_nan, s.n_inf, k, s.first_bad,
                     g.min, g.max, g.n_nan + g.n_inf, inputs);
        return -1;
    }
    return 0;
}

/* ---- applying an op ------------------------------------------------------- */

int ag_tape_grow_records(ag_tape *tape)
{
    size_t cap = tape->cap_records == 0 ? 256 : 2 * tape->cap_records;
    ag_record **grown = ag_heap_realloc(tape->records, cap * sizeof *grown);

    if (grown == NULL)
        return -1;
    tape->records = grown;
    tape->cap_records = cap;
    return 0;
}

/* The checks here run in the order in which their messages take
 * precedence. */
ag_tensor *ag_apply_reject(ag_tape *tape, const ag_op *op, int n_inputs,
                           ag_tensor *const *inputs, int n_params, const double *params)
{
    if (inputs == NULL && n_inputs > 0) {
        ag_set_error("ag_apply: inputs is NULL for %d input%s; pass the array",
                     n_inputs, n_inputs == 1 ? "" : "s");
        return NULL;
    }
    /* A NULL input is an earlier failure: keep its message. */
    for (int i = 0; i < n_inputs && i < AG_MAX_INPUTS; i++) {
        if (inputs[i] == NULL)
            return NULL;
    }
    if (tape == NULL || op == NULL) {
        ag_set_error("ag_apply: %s is NULL", tape == NULL ? "tape" : "op");
        return NULL;
    }
    if (op->name == NULL || op->name[0] == '\0' || op->n_inputs < 1 ||
        op->n_inputs > AG_MAX_INPUTS || op->shape == NULL || op->forward == NULL) {
        ag_set_error("ag_apply: op \"%s\" is incomplete: it needs a name, shape "
                     "and forward functions and 1 to %d inputs (it declares %d); "
                     "ag_op_register checks a definition",
                     op->name == NULL ? "" : op->name, AG_MAX_INPUTS, op->n_inputs);
        return NULL;
    }
    if (n_inputs != op->n_inputs) {
        ag_set_error("ag_apply: op \"%s\" takes %d input%s, got %d", op->name,
                     op->n_inputs, op->n_inputs == 1 ? "" : "s", n_inputs);
        return NULL;
    }
    if (n_params < 0 || n_params > AG_MAX_PARAMS) {
        ag_set_error("ag_apply: op \"%s\" given %d params; an op takes 0 to %d",
                     op->name, n_params, AG_MAX_PARAMS);
        return NULL;
    }
    if (n_params > 0 && params == NULL) {
        ag_set_error("ag_apply: op \"%s\" given %d params but params is NULL; "
                     "pass the array or n_params = 0",
                     op->name, n_params);
        return NULL;
    }
    for (int i = 0; i < n_inputs; i++) {
        ag_tensor *t = inputs[i];

        if (t->tape != NULL && t->tape != tape) {
            ag_set_error("ag_%s: input %d belongs to another tape; ops combine "
                         "tensors of one tape and heap tensors only",
                         op->name, i);
            return NULL;
        }
        if (t->dtype != inputs[0]->dtype) {
            ag_error_dtype_mismatch(op->name, inputs[0], t);
            return NULL;
        }
    }
    ag_set_error("ag_apply: op \"%s\": invalid arguments", op->name);
    return NULL;
}

/* Allocates the output tensor of `op`, of the dtype and shape its shape rule
 * set. Returns NULL with an error naming the op when the shape is invalid or
 * memory runs out. */
static ag_tensor *apply_output(ag_tape *tape, const ag_op *op, ag_dtype dtype,
                               int ndim, const size_t *shape)
{
    size_t numel;

    /* The common case: a valid dtype and small dimensions, which cannot
     * overflow. ag_tensor_alloc checks everything else, with messages. */
    if (ag_shape_is_small(dtype, ndim, shape, &numel)) {
        ag_tensor *out = ag_arena_tensor(tape, dtype, ndim, shape, numel);

        if (out == NULL)
            ag_set_error("ag_%s: out of memory for its output of %zu elements",
                         op->name, numel);
        return out;
    }
    return ag_tensor_alloc(tape, dtype, ndim, shape, op->name);
}

ag_tensor *ag_apply_shaped(ag_tape *tape, const ag_op *op, int n_inputs,
                           ag_tensor *const *inputs, int n_params, const double *params,
                           bool needs_grad)
{
    ag_record *rec = ag_arena_alloc_aligned(&tape->arena, sizeof *rec, AG_SMALL_ALIGN);
    if (rec == NULL) {
        ag_set_error("ag_%s: out of memory", op->name);
        return NULL;
    }
    ag_record_init(rec, op, n_inputs, inputs, n_params, params);
    rec->output = NULL; /* set once the shape rule has run */

    ag_dtype dtype;
    int ndim;
    size_t shape[AG_MAX_DIMS];
    if (op->shape(rec, &dtype, &ndim, shape) != 0)
        return NULL;
    rec->output = apply_output(tape, op, dtype, ndim, shape);
    if (rec->output == NULL || op->forward(tape, rec) != 0)
        return NULL;
    return ag_apply_finish(tape, rec, needs_grad);
}

ag_tensor *ag_apply(ag_tape *tape, const ag_op *op, int n_inputs,
                    ag_tensor *const *inputs, int n_params, const double *params)
{
    return ag_apply_inline(tape, op, n_inputs, inputs, n_params, params);
}

ag_tensor *ag_input_grad(ag_tape *tape, ag_record *rec, int i)
{
    (void)tape;
    ag_tensor *input = rec->inputs[i];

    /* ag_backward allocated the buffer before calling the backward rule. */
    return input->requires_grad ? input->grad : NULL;
}

/* ---- the reverse sweep ---------------------------------------------------- */

static int seed_output(ag_tensor *output, const ag_tensor *seed)
{
    char so[64];
    char ss[64];

    if (seed == NULL && output->numel != 1) {
        ag_set_error("ag_backward: output of shape %s has %zu elements; pass a "
                     "seed gradient of that shape, or reduce the output to one "
                     "element (ag_sum, ag_mean)",
                     ag_shape_str(output, so, sizeof so), output->numel);
        return -1;
    }
    if (seed != NULL && (!ag_tensor_same_shape(seed, output) || seed->dtype != output->dtype)) {
        ag_set_error("ag_backward: seed of shape %s %s does not match output of "
                     "shape %s %s; the seed is dL/doutput and has its shape and dtype",
                     ag_shape_str(seed, ss, sizeof ss), ag_dtype_name(seed->dtype),
                     ag_shape_str(output, so, sizeof so), ag_dtype_name(output->dtype));
        return -1;
    }

    ag_tensor *grad = ag_grad_buffer(output);
    if (grad == NULL) {
        ag_set_error("ag_backward: out of memory for the output's adjoint");
        return -1;
    }

    /* An intermediate output's adjoint is the seed; a leaf accumulates it
     * like any other leaf gradient. */
    if (output->record != NULL)
        ag_tensor_zero_grad(output);
    for (size_t i = 0; i < grad->numel; i++) {
        double s = seed == NULL ? 1.0 : ag_tensor_get(seed, i);
        ag_tensor_set(grad, i, ag_tensor_get(grad, i) + s);
    }
    return 0;
}

/* Marks the records on this tape that produced rec's inputs. */
static void mark_inputs_reached(const ag_tape *tape, const ag_record *rec, bool *reached)
{
    for (int k = 0; k < rec->n_inputs; k++) {
        const ag_record *producer = rec->inputs[k]->record;

        if (producer != NULL && producer->index < rec->index &&
            tape->records[producer->index] == producer)
            reached[producer->index] = true;
    }
}

int ag_anomaly_check_seed(const char *caller, const ag_tensor *seed)
{
    value_summary s = summarize(seed);

    if (s.first_bad == SIZE_MAX)
        return 0;
    ag_set_error("%s: anomaly mode: the seed gradient holds %zu NaN and "
                 "%zu inf, the first at element %zu; pass a finite seed",
                 caller, s.n_nan, s.n_inf, s.first_bad);
    return -1;
}

int ag_backward(ag_tape *tape, ag_tensor *output, const ag_tensor *seed)
{
    if (output == NULL)
        return -1;
    if (tape == NULL) {
        ag_set_error("ag_backward: tape is NULL");
        return -1;
    }
    if (!output->requires_grad) {
        ag_set_error("ag_backward: output does not require a gradient: no input "
                     "was marked with ag_tensor_set_requires_grad, the tape was "
                     "not recording, or the graph passes through an op without a "
                     "backward rule (its output is a constant)");
        return -1;
    }
    if (output->record != NULL && output->tape != tape) {
        ag_set_error("ag_backward: output was recorded on another tape");
        return -1;
    }

    /* Adjoints of intermediate values start from zero on every call, so a
     * second call adds its contribution to leaves only once. Until an
     * adjoint is made on the tape, none exists to zero, which spares the
     * usual single call per step a pass over every record. */
    size_t last = output->record != NULL ? output->record->index : 0;
    bool had_adjoints = tape->has_adjoints; /* seed_output makes one */
    if (output->record != NULL && had_adjoints) {
        for (size_t i = 0; i <= last; i++)
            ag_tensor_zero_grad(tape->records[i]->output);
    }

    if (seed_output(output, seed) != 0)
        return -1;
    if (tape->anomaly && ag_anomaly_check_seed("ag_backward", output->grad) != 0)
        return -1;
    if (output->record == NULL)
        return 0; /* a leaf output: its adjoint is the seed */

    /* On the first call since a reset, an adjoint exists only where the
     * sweep put one. Later calls find the zeroed adjoints of earlier sweeps,
     * so they mark the records that lead to `output`: a branch the output
     * does not use must not add 0 * inf = NaN into a shared input. */
    bool *reached = NULL;
    if (had_adjoints) {
        reached = ag_tape_alloc(tape, last + 1);
        if (reached == NULL)
            return -1;
        memset(reached, 0, last + 1);
        reached[last] = true;
    }

    /* Walk the records backwards; the tape order is a topological order. */
    for (size_t i = last + 1; i-- > 0;) {
        ag_record *rec = tape->records[i];

        if (rec->output->grad == NULL || (reached != NULL && !reached[i]))
            continue; /* no gradient reached this value */
        if (reached != NULL)
            mark_inputs_reached(tape, rec, reached);

        /* Allocate the inputs' adjoints here, so backward rules cannot
         * meet a failed allocation. */
        for (int k = 0; k < rec->n_inputs; k++) {
            ag_tensor *input = rec->inputs[k];
            if (!input->requires_grad || input->grad != NULL)
                continue;
            /* Most inputs are outputs of earlier records, on this tape. */
            ag_tensor *grad = input->tape != NULL ? ag_arena_adjoint(input)
                                                  : ag_grad_buffer(input);
            if (grad == NULL) {
                ag_set_error("ag_backward: out of memory for the adjoint of "
                             "input %d of record %zu (%s)",
                             k, i, rec->op->name);
                return -1;
            }
        }
        if (rec->op->backward(tape, rec) != 0)
            return -1;
        if (tape->anomaly && ag_anomaly_check_adjoints("ag_backward", rec) != 0)
            return -1;
    }
    return 0;
}
