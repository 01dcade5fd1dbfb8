/*
 * Seeing the backward pass: the tape as a text table (ag_tape_print) and as a
 * Graphviz graph (ag_tape_write_dot).
 *
 * After backward, an intermediate value's adjoint is the sum of what every
 * record that consumed it sent back, so the final adjoint of an input does
 * not show one record's share. The printer therefore replays each record's
 * backward rule into zeroed scratch buffers to show exactly what that record
 * added to each input.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* uthash allocates through the library's allocator, and a failed allocation
 * only sets a flag: the printer then reports out of memory. */
#define HASH_NONFATAL_OOM 1
#define uthash_malloc(size) ag_heap_alloc(size)
#define uthash_free(ptr, size) ag_heap_free(ptr)
#define uthash_nonfatal_oom(obj) (leaves->out_of_memory = true)
#include <uthash.h>

/* Tensors with at most this many elements are shown in full; larger ones by
 * shape, min, max and mean. */
#define TRACE_FULL_ELEMENTS 8
/* Graph nodes show fewer values, so they stay small. */
#define DOT_FULL_ELEMENTS 4

/* ---- leaves: tensors that enter the tape without a record ----------------- */

typedef struct leaf_entry {
    const ag_tensor *tensor; /* key */
    size_t id;               /* order of first use, for stable DOT node names */
    UT_hash_handle hh;
} leaf_entry;

typedef struct leaf_table {
    leaf_entry *by_tensor;
    leaf_entry **in_order;
    size_t count;
    size_t capacity;
    bool out_of_memory;
} leaf_table;

/* Returns the record on this tape that produced t, or NULL when t is a leaf
 * or a constant (or was produced while the tape was not recording). */
static const ag_record *producer(const ag_tape *tape, const ag_tensor *t)
{
    const ag_record *rec = t->record;

    if (rec == NULL || rec->index >= tape->n_records || tape->records[rec->index] != rec)
        return NULL;
    return rec;
}

static int leaf_table_add(leaf_table *leaves, const ag_tensor *t)
{
    leaf_entry *entry;

    HASH_FIND_PTR(leaves->by_tensor, &t, entry);
    if (entry != NULL)
        return 0;

    if (leaves->count == leaves->capacity) {
        size_t capacity = leaves->capacity == 0 ? 16 : 2 * leaves->capacity;
        leaf_entry **grown = ag_heap_realloc(leaves->in_order, capacity * sizeof *grown);

        if (grown == NULL)
            return -1;
        leaves->in_order = grown;
        leaves->capacity = capacity;
    }

    entry = ag_heap_alloc(sizeof *entry);
    if (entry == NULL)
        return -1;
    entry->tensor = t;
    entry->id = leaves->count;
    HASH_ADD_PTR(leaves->by_tensor, tensor, entry);
    if (leaves->out_of_memory) {
        ag_heap_free(entry);
        return -1;
    }
    leaves->in_order[leaves->count++] = entry;
    return 0;
}

static void leaf_table_free(leaf_table *leaves)
{
    leaf_entry *entry;
    leaf_entry *next;

    HASH_ITER(hh, leaves->by_tensor, entry, next) {
        HASH_DEL(leaves->by_tensor, entry);
        ag_heap_free(entry);
    }
    ag_heap_free(leaves->in_order);
}

/* Collects every input of every record that no record on this tape produced,
 * in order of first use. */
static int collect_leaves(const ag_tape *tape, leaf_table *leaves, const char *function)
{
    memset(leaves, 0, sizeof *leaves);
    for (size_t i = 0; i < tape->n_records; i++) {
        const ag_record *rec = tape->records[i];

        for (int k = 0; k < rec->n_inputs; k++) {
            if (producer(tape, rec->inputs[k]) == NULL &&
                leaf_table_add(leaves, rec->inputs[k]) != 0) {
                leaf_table_free(leaves);
                ag_set_error("%s: out of memory listing the tape's leaves", function);
                return -1;
            }
        }
    }
    return 0;
}

static size_t leaf_id(const leaf_table *leaves, const ag_tensor *t)
{
    leaf_entry *entry;

    HASH_FIND_PTR(leaves->by_tensor, &t, entry);
    return entry == NULL ? 0 : entry->id;
}

/* ---- formatting values ---------------------------------------------------- */

static void print_number(FILE *out, double v)
{
    if (isnan(v))
        fputs("nan", out);
    else if (isinf(v))
        fputs(v > 0 ? "inf" : "-inf", out);
    else
        fprintf(out, "%.6g", v);
}

/* Prints dimension `dim` of t as nested brackets, NumPy style, reading the
 * row-major elements from *offset on. */
static void print_nested(FILE *out, const ag_tensor *t, int dim, size_t *offset)
{
    fputc('[', out);
    for (size_t i = 0; i < t->shape[dim]; i++) {
        if (i > 0)
            fputs(", ", out);
        if (dim == t->ndim - 1)
            print_number(out, ag_tensor_get(t, (*offset)++));
        else
            print_nested(out, t, dim + 1, offset);
    }
    fputc(']', out);
}

/* Prints min, max and mean; NaN elements are counted apart so min and max
 * stay informative. */
static void print_summary(FILE *out, const ag_tensor *t)
{
    double low = INFINITY;
    double high = -INFINITY;
    double sum = 0.0;
    size_t nans = 0;

    for (size_t i = 0; i < t->numel; i++) {
        double v = ag_tensor_get(t, i);

        if (isnan(v)) {
            nans++;
            continue;
        }
        low = v < low ? v : low;
        high = v > high ? v : high;
        sum += v;
    }

    fputs("min ", out);
    print_number(out, low);
    fputs(", max ", out);
    print_number(out, high);
    fputs(", mean ", out);
    print_number(out, nans > 0 ? NAN : sum / (double)t->numel);
    if (nans > 0)
        fprintf(out, ", %zu nan", nans);
}

static void print_values(FILE *out, const ag_tensor *t, size_t full_limit)
{
    size_t offset = 0;

    if (t->numel <= full_limit)
        print_nested(out, t, 0, &offset);
    else
        print_summary(out, t);
}

static void print_shape(FILE *out, const ag_tensor *t)
{
    char shape[64];

    fputs(ag_shape_str(t, shape, sizeof shape), out);
}

/* Writes how a record refers to one of its inputs: the tensor's name, the
 * index of the record that produced it, the value of a one-element constant,
 * or "leaf"/"const" with its shape. */
static void input_label(const ag_tape *tape, const ag_tensor *t, char *buf, size_t size)
{
    const ag_record *rec = producer(tape, t);
    char shape[64];

    if (t->name[0] != '\0')
        snprintf(buf, size, "%s", t->name);
    else if (rec != NULL)
        snprintf(buf, size, "#%zu", rec->index);
    else if (t->numel == 1 && !t->requires_grad)
        snprintf(buf, size, "%.6g", ag_tensor_get(t, 0));
    else
        snprintf(buf, size, "%s%s", t->requires_grad ? "leaf" : "const",
                 ag_shape_str(t, shape, sizeof shape));
}

/* ---- op attributes -------------------------------------------------------- */

/* A record does not store how many params its op uses, so the printer names
 * them for the built-in ops that have any. Ops not listed show none. */
typedef struct param_names {
    const char *op;
    const char *names[AG_MAX_PARAMS];
} param_names;

static const param_names known_params[] = {
    {"add_scalar", {"c"}},
    {"mul_scalar", {"c"}},
    {"pow_scalar", {"p"}},
    {"clamp", {"low", "high"}},
    {"sum_axis", {"axis", "keepdims"}},
    {"mean_axis", {"axis", "keepdims"}},
    {"max_axis", {"axis", "keepdims"}},
    {"logsumexp_axis", {"axis", "keepdims"}},
    {"softmax", {"axis"}},
    {"log_softmax", {"axis"}},
};

static const param_names *find_params(const ag_op *op)
{
    for (size_t i = 0; i < sizeof known_params / sizeof known_params[0]; i++) {
        if (strcmp(known_params[i].op, op->name) == 0)
            return &known_params[i];
    }
    return NULL;
}

/* Prints "op(in0, in1, name=param...)". */
static void print_call(FILE *out, const ag_tape *tape, const ag_record *rec)
{
    const param_names *params = find_params(rec->op);
    char label[64];

    fprintf(out, "%s(", rec->op->name);
    for (int k = 0; k < rec->n_inputs; k++) {
        input_label(tape, rec->inputs[k], label, sizeof label);
        fprintf(out, "%s%s", k > 0 ? ", " : "", label);
    }
    for (int p = 0; params != NULL && p < AG_MAX_PARAMS && params->names[p] != NULL; p++) {
        if (strcmp(params->names[p], "keepdims") == 0)
            fprintf(out, ", keepdims=%s", rec->params[p] != 0 ? "true" : "false");
        else
            fprintf(out, ", %s=%.6g", params->names[p], rec->params[p]);
    }
    fputc(')', out);
}

/* ---- what one record sent back --------------------------------------------- */

/* Replays rec's backward rule with each input's adjoint swapped for a zeroed
 * heap buffer, so sent[k] receives exactly what this record added to input k
 * (NULL for inputs that take no gradient). Recording is off during the
 * replay, so the tape's records and values stay as they were, but a rule may
 * take scratch memory from the arena. Returns 0, or -1 with the rule's
 * error. The caller frees sent[] with free_contributions. */
static int replay_backward(ag_tape *tape, ag_record *rec, ag_tensor **sent)
{
    ag_tensor *kept[AG_MAX_INPUTS];

    for (int k = 0; k < rec->n_inputs; k++) {
        sent[k] = NULL;
        kept[k] = rec->inputs[k]->grad;
    }

    int status = 0;
    for (int k = 0; k < rec->n_inputs && status == 0; k++) {
        ag_tensor *input = rec->inputs[k];

        if (!input->requires_grad)
            continue;

        /* An input used twice (x * x) shares one scratch buffer. */
        for (int j = 0; j < k; j++) {
            if (rec->inputs[j] == input)
                sent[k] = sent[j];
        }
        if (sent[k] == NULL) {
            sent[k] = ag_zeros(NULL, input->dtype, input->ndim, input->shape);
            if (sent[k] == NULL)
                status = -1;
        }
        input->grad = sent[k];
    }

    if (status == 0) {
        bool recording = tape->recording;

        tape->recording = false;
        status = rec->op->backward(tape, rec);
        tape->recording = recording;
    }

    for (int k = 0; k < rec->n_inputs; k++)
        rec->inputs[k]->grad = kept[k];
    return status;
}

static void free_contributions(const ag_record *rec, ag_tensor **sent)
{
    for (int k = 0; k < rec->n_inputs; k++) {
        bool shared = false;

        for (int j = 0; j < k; j++)
            shared = shared || sent[j] == sent[k];
        if (!shared)
            ag_tensor_free(sent[k]);
    }
    for (int k = 0; k < rec->n_inputs; k++)
        sent[k] = NULL;
}

/* ---- the text table ---------------------------------------------------------- */

static void print_line(FILE *out, int width, const char *label, const ag_tensor *t)
{
    fprintf(out, "      %-*s  ", width, label);
    if (t == NULL)
        fputs("none", out);
    else
        print_values(out, t, TRACE_FULL_ELEMENTS);
    fputc('\n', out);
}

static void print_record(FILE *out, ag_tape *tape, ag_record *rec)
{
    char labels[AG_MAX_INPUTS][96];
    bool repeated[AG_MAX_INPUTS] = {false};
    int width = (int)strlen("adjoint");

    for (int k = 0; k < rec->n_inputs; k++) {
        char name[64];
        int uses = 0;

        /* An input used twice (x * x) gets one line with both shares. */
        for (int j = 0; j < rec->n_inputs; j++) {
            if (rec->inputs[j] == rec->inputs[k]) {
                uses++;
                repeated[k] = repeated[k] || j < k;
            }
        }
        input_label(tape, rec->inputs[k], name, sizeof name);
        if (uses > 1)
            snprintf(labels[k], sizeof labels[k], "to %s (%d uses)", name, uses);
        else
            snprintf(labels[k], sizeof labels[k], "to %s", name);
        /* Before backward no "to" lines follow, so they set no width. */
        if (rec->output->grad != NULL && (int)strlen(labels[k]) > width)
            width = (int)strlen(labels[k]);
    }

    fprintf(out, "#%-4zu ", rec->index);
    print_call(out, tape, rec);
    fputs(" -> ", out);
    if (rec->output->name[0] != '\0')
        fprintf(out, "%s ", rec->output->name);
    print_shape(out, rec->output);
    fputc('\n', out);
    print_line(out, width, "value", rec->output);

    /* No adjoint: backward has not run, or no gradient reached this value. */
    if (rec->output->grad == NULL)
        return;
    print_line(out, width, "adjoint", rec->output->grad);

    ag_tensor *sent[AG_MAX_INPUTS];
    char saved_error[512];
    const char *error = ag_error();

    snprintf(saved_error, sizeof saved_error, "%s", error == NULL ? "" : error);
    if (replay_backward(tape, rec, sent) != 0) {
        fprintf(out, "      (could not replay the backward rule: %s)\n",
                ag_error() == NULL ? "unknown error" : ag_error());
    } else {
        for (int k = 0; k < rec->n_inputs; k++) {
            if (sent[k] != NULL && !repeated[k])
                print_line(out, width, labels[k], sent[k]);
        }
    }
    free_contributions(rec, sent);

    /* Printing must not change the caller's view of the last error. */
    if (error == NULL)
        ag_error_clear();
    else
        ag_set_error("%s", saved_error);
}

static void print_leaf(FILE *out, const ag_tape *tape, const ag_tensor *t)
{
    char label[64];

    input_label(tape, t, label, sizeof label);
    fprintf(out, "leaf  %s ", label);
    print_shape(out, t);
    fputc('\n', out);
    print_line(out, 5, "value", t);
    print_line(out, 5, "grad", t->grad);
}

static int finish_writing(FILE *out, const char *function)
{
    if (fflush(out) != 0 || ferror(out)) {
        ag_set_error("%s: writing failed: %s", function, strerror(errno));
        return -1;
    }
    return 0;
}

int ag_tape_print(const ag_tape *tape, FILE *out)
{
    if (tape == NULL || out == NULL) {
        ag_set_error("ag_tape_print: %s is NULL", tape == NULL ? "tape" : "out");
        return -1;
    }

    leaf_table leaves;
    if (collect_leaves(tape, &leaves, "ag_tape_print") != 0)
        return -1;

    /* Replaying backward rules needs a writable tape; tapes are always heap
     * objects, so casting the const away is defined. */
    ag_tape *writable = (ag_tape *)tape;

    fprintf(out, "tape: %zu record%s, in the order the reverse sweep visits them\n",
            tape->n_records, tape->n_records == 1 ? "" : "s");
    fputs("  value    the record's forward output\n"
          "  adjoint  dL/d(output), once backward has run\n"
          "  to IN    what this record added to the adjoint of input IN:\n"
          "           its local partial derivatives applied to the adjoint\n",
          out);
    for (size_t i = tape->n_records; i-- > 0;)
        print_record(out, writable, tape->records[i]);

    bool header = false;
    for (size_t i = 0; i < leaves.count; i++) {
        const ag_tensor *t = leaves.in_order[i]->tensor;

        if (!t->requires_grad)
            continue;
        if (!header)
            fputs("leaves (gradients accumulate over backward calls)\n", out);
        header = true;
        print_leaf(out, tape, t);
    }
    leaf_table_free(&leaves);
    return finish_writing(out, "ag_tape_print");
}

/* ---- the Graphviz graph ----------------------------------------------------------- */

/* Writes a string inside a DOT double-quoted label; box nodes give special
 * meaning only to the quote and the backslash. */
static void dot_escaped(FILE *out, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', out);
        fputc(*s, out);
    }
}

/* Writes one tensor node: name, shape, values and gradient. */
static void dot_tensor(FILE *out, const char *id, const char *title, const ag_tensor *t,
                       bool leaf)
{
    fprintf(out, "  %s [shape=box%s, label=\"", id, leaf ? "" : ", style=rounded");
    dot_escaped(out, title);
    fputs(" ", out);
    print_shape(out, t);
    fputs("\\nvalue ", out);
    print_values(out, t, DOT_FULL_ELEMENTS);
    if (t->grad != NULL) {
        fputs("\\ngrad ", out);
        print_values(out, t->grad, DOT_FULL_ELEMENTS);
    }
    fputs("\"];\n", out);
}

static void dot_node_id(const ag_tape *tape, const leaf_table *leaves, const ag_tensor *t,
                        char *buf, size_t size)
{
    const ag_record *rec = producer(tape, t);

    if (rec != NULL)
        snprintf(buf, size, "t%zu", rec->index);
    else
        snprintf(buf, size, "leaf%zu", leaf_id(leaves, t));
}

int ag_tape_write_dot(const ag_tape *tape, FILE *out)
{
    if (tape == NULL || out == NULL) {
        ag_set_error("ag_tape_write_dot: %s is NULL", tape == NULL ? "tape" : "out");
        return -1;
    }

    leaf_table leaves;
    if (collect_leaves(tape, &leaves, "ag_tape_write_dot") != 0)
        return -1;

    fputs("digraph tape {\n"
          "  node [fontname=\"monospace\", fontsize=10];\n"
          "  edge [fontname=\"monospace\", fontsize=9];\n",
          out);

    char id[32];
    char title[64];
    for (size_t i = 0; i < leaves.count; i++) {
        const ag_tensor *t = leaves.in_order[i]->tensor;

        input_label(tape, t, title, sizeof title);
        snprintf(id, sizeof id, "leaf%zu", i);
        dot_tensor(out, id, title, t, true);
    }

    for (size_t i = 0; i < tape->n_records; i++) {
        const ag_record *rec = tape->records[i];
        char input_id[32];

        /* The op node, its inputs' edges, and the tensor it produced. */
        fprintf(out, "  op%zu [shape=ellipse, label=\"#%zu ", i, i);
        dot_escaped(out, rec->op->name);
        fputs("\"];\n", out);
        for (int k = 0; k < rec->n_inputs; k++) {
            dot_node_id(tape, &leaves, rec->inputs[k], input_id, sizeof input_id);
            /* Number the operands where their order matters (sub, matmul). */
            if (rec->n_inputs > 1)
                fprintf(out, "  %s -> op%zu [label=\"%d\"];\n", input_id, i, k);
            else
                fprintf(out, "  %s -> op%zu;\n", input_id, i);
        }

        if (rec->output->name[0] != '\0')
            snprintf(title, sizeof title, "#%zu %s", i, rec->output->name);
        else
            snprintf(title, sizeof title, "#%zu", i);
        snprintf(id, sizeof id, "t%zu", i);
        dot_tensor(out, id, title, rec->output, false);
        fprintf(out, "  op%zu -> t%zu;\n", i, i);
    }
    fputs("}\n", out);

    leaf_table_free(&leaves);
    return finish_writing(out, "ag_tape_write_dot");
}
