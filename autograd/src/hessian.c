/*
 * Jacobians, Hessians and Hessian-vector products of an ag_function.
 *
 * Each call runs f once on a private tape, on copies of the inputs, so the
 * caller's tensors and their gradients are not touched. The variables are
 * the elements of the inputs that require a gradient, in order. A Jacobian
 * row is one reverse sweep seeded with a one-hot vector. A Hessian row is
 * one reverse sweep of one element of the gradient that ag_grad built with
 * create_graph. H v is the gradient of sum(g * v), with no matrix formed.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* f evaluated on copies of the inputs, on a tape of its own. */
typedef struct function_run {
    const char *function_name; /* the public function, for messages */
    ag_tape *tape;
    ag_tensor **copies;        /* one per input: the tensors f is given */
    int n_wrt;                 /* inputs that require a gradient */
    ag_tensor **wrt;           /* their copies, in order */
    size_t n_vars;             /* their elements in all */
    ag_tensor *output;
} function_run;

static void run_free(function_run *run)
{
    ag_tape_free(run->tape);
    ag_heap_free(run->copies);
    ag_heap_free(run->wrt);
}

/* Prefixes the current error (often f's own message) with the function's
 * name and `context`, and frees the run. */
static int run_fail(function_run *run, const char *context)
{
    char cause[256];

    snprintf(cause, sizeof cause, "%s", ag_error() != NULL ? ag_error() : "no message set");
    ag_set_error("%s: %s: %s", run->function_name, context, cause);
    run_free(run);
    return -1;
}

static int check_function_arguments(const char *function_name, ag_function f,
                                    int n_inputs, ag_tensor *const *inputs)
{
    if (f == NULL) {
        ag_set_error("%s: the function is NULL", function_name);
        return -1;
    }
    if (inputs == NULL || n_inputs < 1) {
        ag_set_error("%s: %s; pass an array of at least one input", function_name,
                     inputs == NULL ? "inputs is NULL" : "n_inputs is below 1");
        return -1;
    }

    bool any_requires_grad = false;
    for (int i = 0; i < n_inputs; i++) {
        if (inputs[i] == NULL) {
            ag_set_error("%s: input %d is NULL", function_name, i);
            return -1;
        }
        any_requires_grad = any_requires_grad || inputs[i]->requires_grad;
    }
    if (!any_requires_grad) {
        ag_set_error("%s: no input requires a gradient, so there is nothing to "
                     "differentiate by; mark the inputs with "
                     "ag_tensor_set_requires_grad",
                     function_name);
        return -1;
    }
    return 0;
}

/* Copies the inputs onto a new tape and runs f on them. On failure, sets an
 * error, frees what it made and returns -1. */
static int run_start(function_run *run, const char *function_name, ag_function f,
                     void *user, int n_inputs, ag_tensor *const *inputs)
{
    memset(run, 0, sizeof *run);
    run->function_name = function_name;
    if (check_function_arguments(function_name, f, n_inputs, inputs) != 0)
        return -1;

    run->tape = ag_tape_new();
    run->copies = ag_heap_alloc((size_t)n_inputs * sizeof *run->copies);
    run->wrt = ag_heap_alloc((size_t)n_inputs * sizeof *run->wrt);
    if (run->tape == NULL || run->copies == NULL || run->wrt == NULL) {
        ag_set_error("out of memory");
        return run_fail(run, "cannot set up a tape for the function");
    }

    for (int i = 0; i < n_inputs; i++) {
        const ag_tensor *input = inputs[i];
        ag_tensor *copy = ag_tensor_copy(run->tape, input, input->dtype);

        if (copy == NULL || ag_tensor_set_requires_grad(copy, input->requires_grad) != 0)
            return run_fail(run, "cannot copy the inputs");
        ag_tensor_set_name(copy, input->name);
        run->copies[i] = copy;
        if (input->requires_grad) {
            run->wrt[run->n_wrt++] = copy;
            run->n_vars += copy->numel;
        }
    }

    /* Cleared so that a failure of f reports f's message and no older one. */
    ag_error_clear();
    run->output = f(run->tape, run->copies, n_inputs, user);
    if (run->output == NULL)
        return run_fail(run, "the function failed");
    return 0;
}

/* Allocates a zeroed rows x cols heap matrix of the output's dtype. */
static ag_tensor *new_matrix(function_run *run, size_t rows, size_t cols)
{
    if (cols != 0 && rows > SIZE_MAX / sizeof(double) / cols) {
        ag_set_error("%s: a %zu x %zu matrix overflows the address space; use "
                     "fewer elements",
                     run->function_name, rows, cols);
        return NULL;
    }
    return ag_zeros(NULL, run->output->dtype, AG_SHAPE(rows, cols));
}

/* Runs a reverse sweep from `from` seeded with the one-hot vector of
 * `element` and writes the result, the gradient of that element with respect
 * to every variable, as row `row` of `matrix`. A value that requires no
 * gradient has a zero row, which `matrix` already contains. */
static int sweep_row(function_run *run, ag_tensor *from, ag_tensor *seed, size_t element,
                     ag_tensor *matrix, size_t row)
{
    if (!from->requires_grad)
        return 0;
    for (int i = 0; i < run->n_wrt; i++)
        ag_tensor_zero_grad(run->wrt[i]);

    ag_tensor_set(seed, element, 1.0);
    int status = ag_backward(run->tape, from, seed);
    ag_tensor_set(seed, element, 0.0);
    if (status != 0)
        return -1;

    size_t column = row * run->n_vars;
    for (int i = 0; i < run->n_wrt; i++) {
        const ag_tensor *grad = run->wrt[i]->grad;

        for (size_t e = 0; e < run->wrt[i]->numel; e++)
            ag_tensor_set(matrix, column++, ag_tensor_get(grad, e));
    }
    return 0;
}

/* ---- Jacobian ------------------------------------------------------------- */

ag_tensor *ag_jacobian(ag_function f, void *user, int n_inputs, ag_tensor *const *inputs)
{
    function_run run;

    if (run_start(&run, "ag_jacobian", f, user, n_inputs, inputs) != 0)
        return NULL;

    ag_tensor *output = run.output;
    ag_tensor *jacobian = new_matrix(&run, output->numel, run.n_vars);
    ag_tensor *seed = ag_zeros(run.tape, output->dtype, output->ndim, output->shape);
    if (jacobian == NULL || seed == NULL) {
        ag_tensor_free(jacobian);
        run_fail(&run, "cannot allocate the Jacobian");
        return NULL;
    }

    for (size_t j = 0; j < output->numel; j++) {
        if (sweep_row(&run, output, seed, j, jacobian, j) != 0) {
            ag_tensor_free(jacobian);
            run_fail(&run, "backward failed");
            return NULL;
        }
    }
    run_free(&run);
    return jacobian;
}

/* ---- Hessian -------------------------------------------------------------- */

static int check_scalar_output(const function_run *run)
{
    char so[64];

    if (run->output->numel == 1)
        return 0;
    ag_set_error("%s: the function's output has shape %s; the Hessian is defined "
                 "for a one-element output, so reduce it (ag_sum, ag_mean) or take "
                 "ag_jacobian of its gradient",
                 run->function_name, ag_shape_str(run->output, so, sizeof so));
    return -1;
}

/* Builds the gradient of the output with respect to every variable with
 * create_graph, so its elements can be differentiated again. An output
 * that requires no gradient has zero gradients, left NULL. */
static int build_gradient(function_run *run, ag_tensor **grads)
{
    for (int i = 0; i < run->n_wrt; i++)
        grads[i] = NULL;
    if (!run->output->requires_grad)
        return 0;
    return ag_grad(run->tape, run->output, NULL, run->n_wrt, run->wrt, grads, true);
}

ag_tensor *ag_hessian(ag_function f, void *user, int n_inputs, ag_tensor *const *inputs)
{
    function_run run;

    if (run_start(&run, "ag_hessian", f, user, n_inputs, inputs) != 0)
        return NULL;
    if (check_scalar_output(&run) != 0) {
        run_free(&run);
        return NULL;
    }

    ag_tensor *hessian = new_matrix(&run, run.n_vars, run.n_vars);
    ag_tensor **grads = ag_tape_alloc(run.tape, (size_t)run.n_wrt * sizeof *grads);
    if (hessian == NULL || grads == NULL) {
        ag_tensor_free(hessian);
        run_fail(&run, "cannot allocate the Hessian");
        return NULL;
    }
    if (build_gradient(&run, grads) != 0) {
        ag_tensor_free(hessian);
        run_fail(&run, "cannot build the gradient");
        return NULL;
    }

    /* Row r is the gradient of element r of the concatenated gradient. An
     * output that requires no gradient is constant in the variables, so its
     * Hessian keeps the zeros it was made with. */
    size_t row = 0;
    for (int i = 0; i < run.n_wrt && run.output->requires_grad; i++) {
        ag_tensor *g = grads[i];
        ag_tensor *seed = ag_zeros(run.tape, g->dtype, g->ndim, g->shape);

        for (size_t e = 0; e < g->numel; e++, row++) {
            if (seed == NULL || sweep_row(&run, g, seed, e, hessian, row) != 0) {
                ag_tensor_free(hessian);
                run_fail(&run, "the reverse sweep of the gradient failed");
                return NULL;
            }
        }
    }
    run_free(&run);
    return hessian;
}

/* ---- Hessian-vector product ----------------------------------------------- */

/* Returns sum over the variables of g * v, with v converted to g's dtype. */
static ag_tensor *gradient_dot(function_run *run, ag_tensor **grads,
                               int n_inputs, ag_tensor *const *inputs,
                               ag_tensor *const *vectors)
{
    ag_tensor *total = NULL;
    int w = 0;

    for (int i = 0; i < n_inputs; i++) {
        if (!inputs[i]->requires_grad)
            continue;

        ag_tensor *g = grads[w++];
        ag_tensor *v = ag_tensor_copy(run->tape, vectors[i], g->dtype);
        ag_tensor *term = ag_sum(run->tape, ag_mul(run->tape, g, v));
        total = total == NULL ? term : ag_add(run->tape, total, term);
        if (total == NULL)
            return NULL;
    }
    return total;
}

static int check_vectors(int n_inputs, ag_tensor *const *inputs,
                         ag_tensor *const *vectors, ag_tensor **products)
{
    char sv[64];
    char sx[64];

    if (vectors == NULL || products == NULL) {
        ag_set_error("ag_hvp: %s is NULL", vectors == NULL ? "vectors" : "products");
        return -1;
    }
    for (int i = 0; i < n_inputs; i++) {
        if (inputs == NULL || inputs[i] == NULL || !inputs[i]->requires_grad)
            continue;
        if (vectors[i] == NULL) {
            ag_set_error("ag_hvp: vector %d is NULL; input %d requires a gradient, "
                         "so it needs a vector of its shape",
                         i, i);
            return -1;
        }
        if (!ag_tensor_same_shape(vectors[i], inputs[i])) {
            ag_set_error("ag_hvp: vector %d has shape %s but input %d has shape %s; "
                         "each vector has its input's shape",
                         i, ag_shape_str(vectors[i], sv, sizeof sv), i,
                         ag_shape_str(inputs[i], sx, sizeof sx));
            return -1;
        }
    }
    return 0;
}

/* Copies the product of each input that requires a gradient to the heap.
 * hv contains one tensor per such input, or is NULL for an all-zero product. */
static int store_products(function_run *run, int n_inputs, ag_tensor *const *inputs,
                          ag_tensor **hv, ag_tensor **products)
{
    int w = 0;

    for (int i = 0; i < n_inputs; i++) {
        const ag_tensor *input = inputs[i];

        if (!input->requires_grad)
            continue;
        if (hv != NULL)
            products[i] = ag_tensor_copy(NULL, hv[w], run->output->dtype);
        else
            products[i] = ag_zeros(NULL, run->output->dtype, input->ndim, input->shape);
        w++;
        if (products[i] == NULL)
            return -1;
    }
    return 0;
}

int ag_hvp(ag_function f, void *user, int n_inputs, ag_tensor *const *inputs,
           ag_tensor *const *vectors, ag_tensor **products)
{
    function_run run;

    for (int i = 0; products != NULL && i < n_inputs; i++)
        products[i] = NULL;
    if (check_vectors(n_inputs, inputs, vectors, products) != 0)
        return -1;
    if (run_start(&run, "ag_hvp", f, user, n_inputs, inputs) != 0)
        return -1;
    if (check_scalar_output(&run) != 0) {
        run_free(&run);
        return -1;
    }

    ag_tensor **grads = ag_tape_alloc(run.tape, (size_t)run.n_wrt * sizeof *grads);
    ag_tensor **hv = ag_tape_alloc(run.tape, (size_t)run.n_wrt * sizeof *hv);
    if (grads == NULL || hv == NULL || build_gradient(&run, grads) != 0)
        return run_fail(&run, "cannot build the gradient");

    /* H v = d/dx (g . v), because v does not depend on x. When the output
     * or g . v requires no gradient, the function is at most linear in the
     * variables and H v is 0. */
    bool zero = !run.output->requires_grad;
    if (!zero) {
        ag_tensor *dot = gradient_dot(&run, grads, n_inputs, inputs, vectors);

        if (dot == NULL)
            return run_fail(&run, "cannot form the product of the gradient and the vector");
        zero = !dot->requires_grad;
        if (!zero && ag_grad(run.tape, dot, NULL, run.n_wrt, run.wrt, hv, false) != 0)
            return run_fail(&run, "cannot differentiate the gradient");
    }

    if (store_products(&run, n_inputs, inputs, zero ? NULL : hv, products) != 0) {
        for (int i = 0; i < n_inputs; i++) {
            ag_tensor_free(products[i]);
            products[i] = NULL;
        }
        return run_fail(&run, "cannot allocate the products");
    }
    run_free(&run);
    return 0;
}
