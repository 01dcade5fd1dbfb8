/*
 * Infix expressions of the `tapegrad grad` command: a tokenizer and a
 * recursive-descent parser that build a tree, and an evaluator that applies
 * the library's ops to the tree on a tape.
 *
 * Grammar, loosest binding first:
 *   expr    := term (('+' | '-') term)*
 *   term    := unary (('*' | '/' | '@') unary)*
 *   unary   := ('-' | '+') unary | power
 *   power   := primary ('^' unary)?        right-associative; -x^2 is -(x^2)
 *   primary := NUMBER | NAME | NAME '(' expr (',' expr)* ')' | '(' expr ')'
 */
#ifndef TAPEGRAD_TOOLS_EXPR_H
#define TAPEGRAD_TOOLS_EXPR_H

#include <stdbool.h>
#include <stddef.h>

#include "tapegrad/autograd.h"

#define EXPR_MAX_ARGS 2

typedef enum expr_kind {
    EXPR_NUMBER, /* a literal */
    EXPR_NAME,   /* a bound name */
    EXPR_NEGATE, /* unary minus */
    EXPR_BINARY, /* + - * / ^ @ */
    EXPR_CALL,   /* a function of one or two arguments */
} expr_kind;

typedef enum expr_function {
    FN_EXP,
    FN_LOG,
    FN_SQRT,
    FN_ABS,
    FN_TANH,
    FN_SIGMOID,
    FN_RELU,
    FN_SOFTPLUS,
    FN_TRANSPOSE,
    FN_SUM,
    FN_MEAN,
    FN_MAX,
    FN_LOGSUMEXP,
    FN_SOFTMAX,
    FN_LOG_SOFTMAX,
    FN_MSE,
    FN_BCE,
    FN_BCE_LOGITS,
    FN_CROSS_ENTROPY,
    FN_COUNT
} expr_function;

/* How a function is called: its name, its argument counts, and whether its
 * second argument is an axis (a constant integer). */
typedef struct expr_function_info {
    const char *name;
    int min_args;
    int max_args;
    bool axis_argument;
    const char *usage; /* for error messages: "sum(x[, axis])" */
} expr_function_info;

extern const expr_function_info expr_functions[FN_COUNT];

typedef struct expr_node expr_node;

struct expr_node {
    expr_kind kind;
    int column;      /* byte offset of the node's token (its operator) */
    int start;       /* byte offset where the node's text begins */
    double number;   /* EXPR_NUMBER */
    int binding;     /* EXPR_NAME: index of the bound name */
    char op;         /* EXPR_BINARY: one of + - * / ^ @ */
    expr_function function; /* EXPR_CALL */
    int n_args;
    expr_node *args[EXPR_MAX_ARGS]; /* operands of EXPR_NEGATE, EXPR_BINARY, EXPR_CALL */
    int height;      /* nodes on the longest path down to a leaf */
    bool constant;   /* only numbers and arithmetic below: see expr_is_constant */
};

/* A parsed expression. The nodes live in one array owned by the tree. */
typedef struct expr_tree {
    expr_node *root;
    expr_node *nodes;
    size_t n_nodes;
} expr_tree;

/* Where and why parsing or evaluation failed. */
typedef struct expr_error {
    int column; /* byte offset in the expression, or -1 when unknown */
    char message[512];
} expr_error;

/* Parses `text`, resolving names against the n_names bound names. Returns 0
 * and fills `tree` (free it with expr_tree_free), or -1 and fills `error`. */
int expr_parse(const char *text, const char *const *names, int n_names,
               expr_tree *tree, expr_error *error);

void expr_tree_free(expr_tree *tree);

/* Returns whether the subtree contains only numbers and arithmetic, so it
 * can be computed once as a double. */
bool expr_is_constant(const expr_node *node);

/* Returns the value of a constant subtree, computed in double precision. */
double expr_constant_value(const expr_node *node);

/* Marks in used[i] whether bound name i appears in the expression, and in
 * differentiable[i] whether it appears anywhere other than as the class
 * labels of cross_entropy (through which no gradient flows). */
void expr_find_uses(const expr_tree *tree, int n_names, bool *used,
                    bool *differentiable);

/* Marks in labels[i] whether bound name i appears as the class labels of
 * cross_entropy. */
void expr_find_label_uses(const expr_tree *tree, int n_names, bool *labels);

/* Inputs of an evaluation. */
typedef struct expr_context {
    ag_tape *tape;
    ag_dtype dtype;              /* dtype of constants */
    ag_tensor *const *values;    /* tensor of each bound name */
    /* Tensor of each bound name where it is the labels of cross_entropy, or
     * NULL to use values there too. A NULL array uses values everywhere. */
    ag_tensor *const *label_values;
    bool in_labels;              /* set while the labels are evaluated */
    int error_column;            /* set to the failing node's column */
} expr_context;

/* Evaluates the tree on ctx->tape. Returns the result, or NULL with the
 * library's message in ag_error() and ctx->error_column set. */
ag_tensor *expr_eval(const expr_tree *tree, expr_context *ctx);

#endif /* TAPEGRAD_TOOLS_EXPR_H */
