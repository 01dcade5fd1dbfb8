/*
 * Higher-order gradients: ag_grad, which returns gradients as tensors and can
 * record the backward pass on the tape, and the Jacobian, Hessian,
 * Hessian-vector product and second-order check built on it.
 *
 * ag_grad walks the records from the output's record down, as ag_backward
 * does, but keeps every adjoint in a table of its own, indexed by record, so
 * no tensor's gradient is touched. Only records on a path from a requested
 * input to the output are visited, which a forward pass over the records
 * finds first. Without create_graph each record's backward kernel runs with
 * the table's buffers swapped in as the adjoints. With create_graph each
 * record's backward_graph rule builds the inputs' adjoints from ops. Those
 * ops append records after the forward ones, and because every one of them
 * only uses values made before it, the tape order stays a topological order,
 * so a later sweep from a gradient walks back through both.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* ---- the sweep ------------------------------------------------------------ */

typedef struct grad_sweep {
    ag_tape *tape;
    size_t n_records;          /* records up to and including the output's */
    int n_inputs;
    ag_tensor *const *inputs;
    bool create_graph;
    bool *tracked;             /* per record: its output leads to an input */
    ag_tensor **adjoint;       /* per record: the adjoint of its output */
    ag_tensor **input_adjoint; /* per input: its adjoint, unless it is a record's output */
} grad_sweep;

/* Finds the record of the sweep that produced t. */
static bool record_index(const grad_sweep *s, const ag_tensor *t, size_t *index)
{
    const ag_record *rec = t->record;

    if (rec == NULL || rec->index >= s->n_records || s->tape->records[rec->index] != rec)
        return false;
    *index = rec->index;
    return true;
}

/* Returns where t's adjoint is kept, or NULL when t needs none. */
static ag_tensor **adjoint_slot(grad_sweep *s, const ag_tensor *t)
{
    size_t index;

    if (record_index(s, t, &index))
        return s->tracked[index] ? &s->adjoint[index] : NULL;
    for (int j = 0; j < s->n_inputs; j++) {
        if (s->inputs[j] == t)
            return &s->input_adjoint[j];
    }
    return NULL;
}

static bool is_requested(const grad_sweep *s, const ag_tensor *t)
{
    for (int j = 0; j < s->n_inputs; j++) {
        if (s->inputs[j] == t)
            return true;
    }
    return false;
}

/* Marks the records whose output is a requested input or depends on one.
 * The tape order is a topological order, so one forward pass suffices. */
static void mark_tracked(grad_sweep *s)
{
    for (size_t r = 0; r < s->n_records; r++) {
        const ag_record *rec = s->tape->records[r];
        bool tracked = is_requested(s, rec->output);

        for (int k = 0; k < rec->n_inputs && !tracked; k++)
            tracked = adjoint_slot(s, rec->inputs[k]) != NULL;
        s->tracked[r] = tracked;
    }
}

/* Sets the error for a rule that returned a gradient of the wrong shape. */
static int wrong_gradient_shape(const ag_record *rec, int k, const ag_tensor *g)
{
    char sg[64];
    char sx[64];

    ag_set_error("ag_grad: the backward_graph rule of op \"%s\" (record %zu) "
                 "returned a gradient of shape %s %s for input %d of shape %s %s; "
                 "it must return the input's shape and dtype",
                 rec->op->name, rec->index, ag_shape_str(g, sg, sizeof sg),
                 ag_dtype_name(g->dtype), k,
                 ag_shape_str(rec->inputs[k], sx, sizeof sx),
                 ag_dtype_name(rec->inputs[k]->dtype));
    return -1;
}

/* Prefixes the current error with the record whose rule failed. */
static int rule_failed(const ag_record *rec)
{
    char cause[256];

    snprintf(cause, sizeof cause, "%s", ag_error() != NULL ? ag_error() : "no message set");
    ag_set_error("ag_grad: the backward_graph rule of op \"%s\" (record %zu) "
                 "failed: %s",
                 rec->op->name, rec->index, cause);
    return -1;
}

/* create_graph: the rule builds each input's adjoint from ops, and a value
 * used several times gets the sum of its adjoints, also built with ops. */
static int run_graph_rule(grad_sweep *s, const ag_record *rec, const bool *needs_grad)
{
    ag_tensor *grad_inputs[AG_MAX_INPUTS] = {NULL};

    if (rec->op->backward_graph == NULL) {
        ag_set_error("ag_grad: op \"%s\" (record %zu) has no differentiable "
                     "backward rule; register it with backward_graph to use "
                     "create_graph",
                     rec->op->name, rec->index);
        return -1;
    }
    if (rec->op->backward_graph(s->tape, rec, s->adjoint[rec->index], needs_grad,
                                grad_inputs) != 0)
        return rule_failed(rec);

    for (int k = 0; k < rec->n_inputs; k++) {
        ag_tensor *g = grad_inputs[k];

        if (!needs_grad[k] || g == NULL)
            continue;

        ag_tensor *input = rec->inputs[k];
        if (!ag_tensor_same_shape(g, input) || g->dtype != input->dtype)
            return wrong_gradient_shape(rec, k, g);

        ag_tensor **slot = adjoint_slot(s, input);
        ag_tensor *sum = *slot == NULL ? g : ag_add(s->tape, *slot, g);
        if (sum == NULL)
            return rule_failed(rec);
        *slot = sum;
    }
    return 0;
}

/* Without create_graph: the op's backward kernel adds into the table's
 * buffers, which stand in for the adjoints while it runs. An input that
 * needs no adjoint shows none, so the kernel skips it (ag_input_grad).
 * In anomaly mode the buffers are checked while they replace the adjoints,
 * as ag_backward checks the adjoints after each rule. */
static int run_kernel_rule(grad_sweep *s, ag_record *rec, const bool *needs_grad)
{
    ag_tensor *buffers[AG_MAX_INPUTS] = {NULL};
    ag_tensor *saved[AG_MAX_INPUTS];

    for (int k = 0; k < rec->n_inputs; k++) {
        ag_tensor *input = rec->inputs[k];
        ag_tensor **slot;

        if (!needs_grad[k])
            continue;
        slot = adjoint_slot(s, input);
        if (*slot == NULL)
            *slot = ag_zeros(s->tape, input->dtype, input->ndim, input->shape);
        if (*slot == NULL)
            return -1;
        buffers[k] = *slot;
    }

    ag_tensor *saved_output = rec->output->grad;
    for (int k = 0; k < rec->n_inputs; k++) {
        saved[k] = rec->inputs[k]->grad;
        rec->inputs[k]->grad = buffers[k];
    }
    rec->output->grad = s->adjoint[rec->index];

    int status = rec->op->backward(s->tape, rec);
    if (status == 0 && s->tape->anomaly)
        status = ag_anomaly_check_adjoints("ag_grad", rec);

    /* Restored in reverse, so an input that appears twice gets its own
     * gradient back. */
    rec->output->grad = saved_output;
    for (int k = rec->n_inputs - 1; k >= 0; k--)
        rec->inputs[k]->grad = saved[k];
    return status;
}

/* Places the starting adjoint: the seed itself when building a graph (so a
 * seed that requires a gradient is differentiated through), otherwise a
 * copy that the kernels can add into. */
static int seed_sweep(grad_sweep *s, ag_tensor *output, ag_tensor *seed)
{
    ag_tensor **slot = adjoint_slot(s, output);
    ag_tensor *start;

    /* Checked first, because ag_backward reports a bad seed even when no
     * gradient flows from it. */
    if (seed != NULL && s->tape->anomaly && ag_anomaly_check_seed("ag_grad", seed) != 0)
        return -1;
    if (slot == NULL)
        return 0; /* no requested input is on the output's path */
    if (seed == NULL)
        start = ag_ones(s->tape, output->dtype, output->ndim, output->shape);
    else if (s->create_graph)
        start = seed;
    else
        start = ag_tensor_copy(s->tape, seed, seed->dtype);
    if (start == NULL)
        return -1;
    *slot = start;
    return 0;
}

static int sweep(grad_sweep *s)
{
    for (size_t i = s->n_records; i-- > 0;) {
        ag_record *rec = s->tape->records[i];
        bool needs_grad[AG_MAX_INPUTS] = {false};
        bool any = false;

        if (!s->tracked[i] || s->adjoint[i] == NULL)
            continue; /* off the inputs' paths, or no gradient reached it */
        for (int k = 0; k < rec->n_inputs; k++) {
            needs_grad[k] = adjoint_slot(s, rec->inputs[k]) != NULL;
            any = any || needs_grad[k];
        }
        if (!any)
            continue; /* a requested input whose own inputs are not requested */

        int status = s->create_graph ? run_graph_rule(s, rec, needs_grad)
                                     : run_kernel_rule(s, rec, needs_grad);
        if (status != 0)
            return -1;
    }
    return 0;
}

/* Fills grads from the table, with zeros where no gradient arrived. */
static int collect(grad_sweep *s, ag_tensor **grads)
{
    for (int j = 0; j < s->n_inputs; j++) {
        ag_tensor *input = s->inputs[j];
        ag_tensor **slot = adjoint_slot(s, input);

        grads[j] = slot != NULL ? *slot : NULL;
        if (grads[j] == NULL)
            grads[j] = ag_zeros(s->tape, input->dtype, input->ndim, input->shape);
        if (grads[j] == NULL)
            return -1;
    }
    return 0;
}

/* ---- ag_grad -------------------------------------------------------------- */

static int check_grad_arguments(ag_tape *tape, ag_tensor *output, ag_tensor *seed,
                                int n_inputs, ag_tensor *const *inputs,
                                ag_tensor **grads)
{
    char so[64];
    char ss[64];

    if (tape == NULL) {
        ag_set_error("ag_grad: tape is NULL");
        return -1;
    }
    if (inputs == NULL || grads == NULL) {
        ag_set_error("ag_grad: %s is NULL; pass arrays of n_inputs tensors",
                     inputs == NULL ? "inputs" : "grads");
        return -1;
    }
    if (n_inputs < 1) {
        ag_set_error("ag_grad: n_inputs is %d; pass at least one input", n_inputs);
        return -1;
    }
    for (int j = 0; j < n_inputs; j++) {
        const ag_tensor *input = inputs[j];

        if (input == NULL) {
            ag_set_error("ag_grad: input %d is NULL", j);
            return -1;
        }
        if (input->tape != NULL && input->tape != tape) {
            ag_set_error("ag_grad: input %d belongs to another tape", j);
            return -1;
        }
        if (!input->requires_grad) {
            ag_set_error("ag_grad: input %d does not require a gradient; mark it "
                         "with ag_tensor_set_requires_grad before the forward pass",
                         j);
            return -1;
        }
    }

    if (output->tape != NULL && output->tape != tape) {
        ag_set_error("ag_grad: output belongs to another tape");
        return -1;
    }
    if (!output->requires_grad) {
        ag_set_error("ag_grad: output does not require a gradient: no input was "
                     "marked with ag_tensor_set_requires_grad, or the tape was "
                     "not recording");
        return -1;
    }
    if (seed == NULL && output->numel != 1) {
        ag_set_error("ag_grad: output of shape %s has %zu elements; pass a seed "
                     "gradient of that shape, or reduce the output to one element "
                     "(ag_sum, ag_mean)",
                     ag_shape_str(output, so, sizeof so), output->numel);
        return -1;
    }
    if (seed != NULL && (!ag_tensor_same_shape(seed, output) || seed->dtype != output->dtype)) {
        ag_set_error("ag_grad: seed of shape %s %s does not match output of shape "
                     "%s %s; the seed is d(loss)/d(output) and has its shape and "
                     "dtype",
                     ag_shape_str(seed, ss, sizeof ss), ag_dtype_name(seed->dtype),
                     ag_shape_str(output, so, sizeof so), ag_dtype_name(output->dtype));
        return -1;
    }
    return 0;
}

int ag_grad(ag_tape *tape, ag_tensor *output, ag_tensor *seed, int n_inputs,
            ag_tensor *const *inputs, ag_tensor **grads, bool create_graph)
{
    if (grads != NULL) {
        for (int j = 0; j < n_inputs; j++)
            grads[j] = NULL;
    }
    if (output == NULL)
        return -1; /* an earlier op failed: keep its message */
    if (check_grad_arguments(tape, output, seed, n_inputs, inputs, grads) != 0)
        return -1;

    grad_sweep s = {
        .tape = tape,
        .n_records = output->record != NULL ? output->record->index + 1 : 0,
        .n_inputs = n_inputs,
        .inputs = inputs,
        .create_graph = create_graph,
    };
    if (output->record != NULL && (output->record->index >= tape->n_records ||
                                   tape->records[output->record->index] != output->record)) {
        ag_set_error("ag_grad: output's record is not on this tape; was the tape "
                     "reset after the output was made?");
        return -1;
    }

    size_t table = s.n_records > 0 ? s.n_records : 1;
    s.tracked = ag_heap_alloc(table * sizeof *s.tracked);
    s.adjoint = ag_heap_alloc(table * sizeof *s.adjoint);
    s.input_adjoint = ag_heap_alloc((size_t)n_inputs * sizeof *s.input_adjoint);

    int status = -1;
    bool was_recording = tape->recording;
    if (s.tracked == NULL || s.adjoint == NULL || s.input_adjoint == NULL) {
        ag_set_error("ag_grad: out of memory for the adjoints of %zu records",
                     s.n_records);
        goto done;
    }
    memset(s.adjoint, 0, table * sizeof *s.adjoint);
    memset(s.input_adjoint, 0, (size_t)n_inputs * sizeof *s.input_adjoint);
    mark_tracked(&s);

    /* The kernels need no recording; the graph rules must record. */
    tape->recording = create_graph;
    if (seed_sweep(&s, output, seed) == 0 && sweep(&s) == 0 && collect(&s, grads) == 0)
        status = 0;
    tape->recording = was_recording;

done:
    if (status != 0) {
        for (int j = 0; j < n_inputs; j++)
            grads[j] = NULL;
    }
    ag_heap_free(s.tracked);
    ag_heap_free(s.adjoint);
    ag_heap_free(s.input_adjoint);
    return status;
}
