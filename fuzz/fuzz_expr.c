/*
 * Fuzz target: the `tapegrad grad` front end. The input's first line is an
 * expression; each later line is a NAME=VALUE binding. The bindings are
 * parsed (tools/bindings.c), the expression is parsed against their names
 * (tools/expr_parse.c) and, when both succeed, evaluated on a tape
 * (tools/expr_eval.c) and differentiated.
 */
#include <stdlib.h>
#include <string.h>

#include "bindings.h"
#include "expr.h"

#define MAX_BINDINGS 4
#define MAX_BOUND_ELEMENTS 256

/* Splits the next line off `text` in place; returns NULL after the last. */
static char *next_line(char **text)
{
    char *line = *text;

    if (line == NULL)
        return NULL;
    char *end = strchr(line, '\n');
    if (end != NULL) {
        *end = '\0';
        *text = end + 1;
    } else {
        *text = NULL;
    }
    return line;
}

/* Evaluates the parsed tree on tensors made from the bindings, then runs a
 * backward pass when the value has one element. A failure must set a
 * message. */
static void evaluate(const expr_tree *tree, const binding *bindings, int n, ag_dtype dtype)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *values[MAX_BINDINGS];
    bool used[MAX_BINDINGS];
    bool differentiable[MAX_BINDINGS];

    if (tape == NULL)
        return;
    expr_find_uses(tree, n, used, differentiable);
    for (int k = 0; k < n; k++) {
        static const double no_elements[1];
        const double *data = bindings[k].numel > 0 ? bindings[k].data : no_elements;

        values[k] = ag_tensor_from_doubles(tape, dtype, bindings[k].ndim, bindings[k].shape,
                                           data);
        if (values[k] == NULL) {
            ag_tape_free(tape);
            return;
        }
        if (differentiable[k])
            ag_tensor_set_requires_grad(values[k], true);
    }

    expr_context context = {.tape = tape, .dtype = dtype, .values = values};
    ag_error_clear();
    ag_tensor *out = expr_eval(tree, &context);
    if (out == NULL && ag_error() == NULL)
        abort(); /* a failure without a message */
    if (out != NULL && ag_tensor_numel(out) == 1 && ag_tensor_requires_grad(out))
        ag_backward(tape, out, NULL);
    ag_tape_free(tape);
}

int fuzz_expr_one(const uint8_t *data, size_t size);
int fuzz_expr_one(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    binding bindings[MAX_BINDINGS];
    const char *names[MAX_BINDINGS];
    int n = 0;

    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    char *rest = text;
    const char *expression = next_line(&rest);
    for (char *line; n < MAX_BINDINGS && (line = next_line(&rest)) != NULL;) {
        binding_error error;

        memset(&bindings[n], 0, sizeof bindings[n]);
        if (binding_parse(line, &bindings[n], &error) != 0)
            continue;
        if (bindings[n].numel > MAX_BOUND_ELEMENTS) {
            binding_free(&bindings[n]);
            continue;
        }
        names[n] = bindings[n].name;
        n++;
    }

    expr_tree tree;
    expr_error error;
    if (expr_parse(expression, names, n, &tree, &error) == 0) {
        if (expr_is_constant(tree.root))
            (void)expr_constant_value(tree.root);
        evaluate(&tree, bindings, n, size % 2 == 0 ? AG_F64 : AG_F32);
        expr_tree_free(&tree);
    } else if (error.message[0] == '\0') {
        abort(); /* a rejection without a message */
    }

    for (int k = 0; k < n; k++)
        binding_free(&bindings[k]);
    free(text);
    return 0;
}

#ifndef FUZZ_NO_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_expr_one(data, size);
}
#endif
