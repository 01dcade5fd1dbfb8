/* Evaluation of a parsed expression with the library's ops, on a tape. */
#include <stdio.h>

#include "tapegrad/nn.h"

#include "expr.h"
#include "print.h"

/* Creates a one-element constant, named by its value so traces show "2". */
static ag_tensor *constant(expr_context *ctx, double value)
{
    ag_tensor *c = ag_scalar(ctx->tape, ctx->dtype, value);
    char name[40];

    if (c == NULL)
        return NULL;
    format_number(name, sizeof name, value, AG_F64);
    ag_tensor_set_name(c, name);
    return c;
}

/* ---- losses ------------------------------------------------------------------ */

/* nn_cross_entropy_loss takes (rows x classes) logits, so logits of shape
 * (classes) become one row: a single example. */
static ag_tensor *cross_entropy(ag_tape *tape, ag_tensor *logits, ag_tensor *labels)
{
    if (ag_tensor_ndim(logits) == 1) {
        size_t row[2] = {1, ag_tensor_dim(logits, 0)};

        logits = ag_reshape(tape, logits, 2, row);
    }
    return nn_cross_entropy_loss(tape, logits, labels);
}

/* ---- nodes -------------------------------------------------------------------- */

static ag_tensor *eval_node(const expr_node *node, expr_context *ctx);

static ag_tensor *apply_binary(expr_context *ctx, char op, ag_tensor *a, ag_tensor *b)
{
    switch (op) {
    case '+':
        return ag_add(ctx->tape, a, b);
    case '-':
        return ag_sub(ctx->tape, a, b);
    case '*':
        return ag_mul(ctx->tape, a, b);
    case '/':
        return ag_div(ctx->tape, a, b);
    case '@':
        return ag_matmul(ctx->tape, a, b);
    default:
        return ag_pow(ctx->tape, a, b);
    }
}

static ag_tensor *eval_binary(const expr_node *node, expr_context *ctx)
{
    ag_tensor *a = eval_node(node->args[0], ctx);

    if (a == NULL)
        return NULL;

    /* A constant exponent is an attribute of pow_scalar, not a tensor. */
    if (node->op == '^' && expr_is_constant(node->args[1]))
        return ag_pow_scalar(ctx->tape, a, expr_constant_value(node->args[1]));

    ag_tensor *b = eval_node(node->args[1], ctx);
    if (b == NULL)
        return NULL;
    return apply_binary(ctx, node->op, a, b);
}

static ag_tensor *eval_unary_function(expr_function function, ag_tape *tape, ag_tensor *x)
{
    switch (function) {
    case FN_EXP:
        return ag_exp(tape, x);
    case FN_LOG:
        return ag_log(tape, x);
    case FN_SQRT:
        return ag_sqrt(tape, x);
    case FN_ABS:
        return ag_abs(tape, x);
    case FN_TANH:
        return ag_tanh(tape, x);
    case FN_SIGMOID:
        return ag_sigmoid(tape, x);
    case FN_RELU:
        return ag_relu(tape, x);
    case FN_SOFTPLUS:
        return ag_softplus(tape, x);
    default:
        return ag_transpose(tape, x);
    }
}

/* sum, mean, max and logsumexp over all elements, or over one axis. */
static ag_tensor *eval_reduction(expr_function function, ag_tape *tape, ag_tensor *x,
                                 bool has_axis, int axis)
{
    switch (function) {
    case FN_SUM:
        return has_axis ? ag_sum_axis(tape, x, axis, false) : ag_sum(tape, x);
    case FN_MEAN:
        return has_axis ? ag_mean_axis(tape, x, axis, false) : ag_mean(tape, x);
    case FN_MAX:
        return has_axis ? ag_max_axis(tape, x, axis, false) : ag_max(tape, x);
    default:
        return has_axis ? ag_logsumexp_axis(tape, x, axis, false) : ag_logsumexp(tape, x);
    }
}

static ag_tensor *eval_call(const expr_node *node, expr_context *ctx)
{
    ag_tape *tape = ctx->tape;
    const expr_function_info *info = &expr_functions[node->function];
    ag_tensor *x = eval_node(node->args[0], ctx);

    if (x == NULL)
        return NULL;

    /* Axis arguments are constants, checked by the parser. */
    if (info->axis_argument) {
        bool has_axis = node->n_args == 2;
        int axis = has_axis ? (int)expr_constant_value(node->args[1]) : 0;

        if (node->function == FN_SOFTMAX)
            return ag_softmax(tape, x, axis);
        if (node->function == FN_LOG_SOFTMAX)
            return ag_log_softmax(tape, x, axis);
        return eval_reduction(node->function, tape, x, has_axis, axis);
    }
    if (node->n_args == 1)
        return eval_unary_function(node->function, tape, x);

    /* The labels of cross_entropy may come from label_values. */
    bool was_in_labels = ctx->in_labels;
    ctx->in_labels = was_in_labels || node->function == FN_CROSS_ENTROPY;
    ag_tensor *y = eval_node(node->args[1], ctx);
    ctx->in_labels = was_in_labels;
    if (y == NULL)
        return NULL;
    switch (node->function) {
    case FN_MSE:
        return nn_mse_loss(tape, x, y);
    case FN_BCE:
        return nn_bce_loss(tape, x, y);
    case FN_BCE_LOGITS:
        return nn_bce_with_logits_loss(tape, x, y);
    default:
        return cross_entropy(tape, x, y);
    }
}

static ag_tensor *name_value(const expr_context *ctx, int binding)
{
    if (ctx->in_labels && ctx->label_values != NULL && ctx->label_values[binding] != NULL)
        return ctx->label_values[binding];
    return ctx->values[binding];
}

static ag_tensor *eval_node(const expr_node *node, expr_context *ctx)
{
    ag_tensor *result;

    if (expr_is_constant(node))
        result = constant(ctx, expr_constant_value(node));
    else if (node->kind == EXPR_NAME)
        return name_value(ctx, node->binding);
    else if (node->kind == EXPR_NEGATE)
        result = ag_neg(ctx->tape, eval_node(node->args[0], ctx));
    else if (node->kind == EXPR_BINARY)
        result = eval_binary(node, ctx);
    else
        result = eval_call(node, ctx);

    /* The first failure is the deepest one: its node gets the caret. */
    if (result == NULL && ctx->error_column < 0)
        ctx->error_column = node->column;
    return result;
}

ag_tensor *expr_eval(const expr_tree *tree, expr_context *ctx)
{
    ctx->error_column = -1;
    ctx->in_labels = false;
    return eval_node(tree->root, ctx);
}
