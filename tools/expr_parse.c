/* Tokenizer and recursive-descent parser for `tapegrad grad` expressions. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expr.h"

/* Deeper nesting is rejected so a hostile expression cannot exhaust the
 * stack of the recursive parser, nor that of the recursive evaluation of a
 * long chain such as x+x+...+x. */
#define MAX_DEPTH 200
#define MAX_HEIGHT 2000

const expr_function_info expr_functions[FN_COUNT] = {
    [FN_EXP] = {"exp", 1, 1, false, "exp(x)"},
    [FN_LOG] = {"log", 1, 1, false, "log(x)"},
    [FN_SQRT] = {"sqrt", 1, 1, false, "sqrt(x)"},
    [FN_ABS] = {"abs", 1, 1, false, "abs(x)"},
    [FN_TANH] = {"tanh", 1, 1, false, "tanh(x)"},
    [FN_SIGMOID] = {"sigmoid", 1, 1, false, "sigmoid(x)"},
    [FN_RELU] = {"relu", 1, 1, false, "relu(x)"},
    [FN_SOFTPLUS] = {"softplus", 1, 1, false, "softplus(x)"},
    [FN_TRANSPOSE] = {"transpose", 1, 1, false, "transpose(x)"},
    [FN_SUM] = {"sum", 1, 2, true, "sum(x[, axis])"},
    [FN_MEAN] = {"mean", 1, 2, true, "mean(x[, axis])"},
    [FN_MAX] = {"max", 1, 2, true, "max(x[, axis])"},
    [FN_LOGSUMEXP] = {"logsumexp", 1, 2, true, "logsumexp(x[, axis])"},
    [FN_SOFTMAX] = {"softmax", 2, 2, true, "softmax(x, axis)"},
    [FN_LOG_SOFTMAX] = {"log_softmax", 2, 2, true, "log_softmax(x, axis)"},
    [FN_MSE] = {"mse", 2, 2, false, "mse(pred, target)"},
    [FN_BCE] = {"bce", 2, 2, false, "bce(prob, target)"},
    [FN_BCE_LOGITS] = {"bce_logits", 2, 2, false, "bce_logits(logits, target)"},
    [FN_CROSS_ENTROPY] = {"cross_entropy", 2, 2, false, "cross_entropy(logits, labels)"},
};

/* ---- tokens -------------------------------------------------------------- */

typedef enum token_kind { TOKEN_NUMBER, TOKEN_NAME, TOKEN_SYMBOL, TOKEN_END } token_kind;

typedef struct token {
    token_kind kind;
    int column;
    int length;
    double number;
    char symbol; /* TOKEN_SYMBOL: one of + - * / ^ @ ( ) , */
} token;

typedef struct parser {
    const char *text;
    token *tokens;
    size_t n_tokens;
    size_t next;
    expr_tree *tree;
    const char *const *names;
    int n_names;
    int depth;
    expr_error *error;
} parser;

static int fail(expr_error *error, int column, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static int fail(expr_error *error, int column, const char *format, ...)
{
    va_list args;

    va_start(args, format);
    vsnprintf(error->message, sizeof error->message, format, args);
    va_end(args);
    error->column = column;
    return -1;
}

static bool is_name_start(char c) { return isalpha((unsigned char)c) || c == '_'; }
static bool is_name_char(char c) { return isalnum((unsigned char)c) || c == '_'; }

/* Scans a number: digits with at most one '.', then an optional exponent.
 * Returns its length, or 0 with an error when it is malformed (1.2.3, 2e). */
static int scan_number(const char *text, int column, double *value, expr_error *error)
{
    const char *start = text + column;
    const char *p = start;
    int digits = 0;

    while (isdigit((unsigned char)*p)) {
        p++;
        digits++;
    }
    if (*p == '.') {
        p++;
        while (isdigit((unsigned char)*p)) {
            p++;
            digits++;
        }
    }
    bool exponent_ok = true;
    if (digits > 0 && (*p == 'e' || *p == 'E')) {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        exponent_ok = isdigit((unsigned char)*p);
        while (isdigit((unsigned char)*p))
            p++;
    }

    int length = (int)(p - start);
    if (digits == 0 || !exponent_ok || *p == '.' || is_name_char(*p)) {
        while (*p == '.' || is_name_char(*p))
            p++;
        fail(error, column, "invalid number '%.*s'", (int)(p - start), start);
        return 0;
    }

    char buffer[128];
    if (length >= (int)sizeof buffer) {
        fail(error, column, "number '%.*s' is too long", length, start);
        return 0;
    }
    memcpy(buffer, start, (size_t)length);
    buffer[length] = '\0';
    errno = 0;
    *value = strtod(buffer, NULL);
    if (errno == ERANGE && isinf(*value)) {
        fail(error, column, "number '%s' is out of range for a double", buffer);
        return 0;
    }
    return length;
}

/* Splits the text into tokens; the array ends with a TOKEN_END. */
static int tokenize(const char *text, token **tokens_out, size_t *count_out,
                    expr_error *error)
{
    size_t length = strlen(text);
    token *tokens = calloc(length + 1, sizeof *tokens);
    size_t count = 0;

    if (tokens == NULL)
        return fail(error, -1, "out of memory");

    int column = 0;
    while (text[column] != '\0') {
        char c = text[column];
        token *t = &tokens[count];

        if (isspace((unsigned char)c)) {
            column++;
            continue;
        }

        t->column = column;
        if (isdigit((unsigned char)c) || (c == '.' && isdigit((unsigned char)text[column + 1]))) {
            t->kind = TOKEN_NUMBER;
            t->length = scan_number(text, column, &t->number, error);
            if (t->length == 0) {
                free(tokens);
                return -1;
            }
        } else if (is_name_start(c)) {
            t->kind = TOKEN_NAME;
            while (is_name_char(text[column + t->length]))
                t->length++;
        } else if (strchr("+-*/^@(),", c) != NULL) {
            t->kind = TOKEN_SYMBOL;
            t->symbol = c;
            t->length = 1;
        } else {
            free(tokens);
            if (isprint((unsigned char)c))
                return fail(error, column, "invalid character '%c'; expressions use numbers, "
                            "names, + - * / ^ @, parentheses and commas", c);
            return fail(error, column, "invalid byte 0x%02x; expressions use numbers, "
                        "names, + - * / ^ @, parentheses and commas", (unsigned char)c);
        }
        column += t->length;
        count++;
    }

    tokens[count].kind = TOKEN_END;
    tokens[count].column = column;
    *tokens_out = tokens;
    *count_out = count + 1;
    return 0;
}

/* ---- parser ------------------------------------------------------------------ */

static const token *peek(const parser *p) { return &p->tokens[p->next]; }

static bool peek_symbol(const parser *p, char symbol)
{
    const token *t = peek(p);

    return t->kind == TOKEN_SYMBOL && t->symbol == symbol;
}

/* Describes a token for "expected X, found Y" messages. */
static void describe(const parser *p, const token *t, char *buf, size_t size)
{
    if (t->kind == TOKEN_END)
        snprintf(buf, size, "the end of the expression");
    else
        snprintf(buf, size, "'%.*s'", t->length, p->text + t->column);
}

static expr_node *new_node(parser *p, expr_kind kind, int column)
{
    /* A node per token at most, so the array sized at the start suffices. */
    expr_node *node = &p->tree->nodes[p->tree->n_nodes++];

    memset(node, 0, sizeof *node);
    node->kind = kind;
    node->column = column;
    node->start = column;
    node->height = 1;
    node->constant = kind == EXPR_NUMBER;
    return node;
}

/* Sets the height and the constant flag of a node whose operands are
 * parsed. Returns the node, or NULL with an error when the tree is too
 * deep. */
static expr_node *finish_node(parser *p, expr_node *node)
{
    bool constant = node->kind == EXPR_NEGATE ||
                    (node->kind == EXPR_BINARY && node->op != '@');

    for (int i = 0; i < node->n_args; i++) {
        if (node->args[i]->height >= node->height)
            node->height = node->args[i]->height + 1;
        constant = constant && node->args[i]->constant;
    }
    node->constant = constant;
    if (node->height > MAX_HEIGHT) {
        fail(p->error, node->column, "the expression nests deeper than %d operations",
             MAX_HEIGHT);
        return NULL;
    }
    return node;
}

static expr_node *parse_expr(parser *p);
static expr_node *parse_unary(parser *p);

static int find_function(const char *text, int length)
{
    for (int i = 0; i < FN_COUNT; i++) {
        if ((int)strlen(expr_functions[i].name) == length &&
            strncmp(expr_functions[i].name, text, (size_t)length) == 0)
            return i;
    }
    return -1;
}

static void list_functions(char *buf, size_t size)
{
    size_t used = 0;

    buf[0] = '\0';
    for (int i = 0; i < FN_COUNT && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%s", i > 0 ? ", " : "",
                                 expr_functions[i].name);
}

/* Checks the arguments that must be constants: an axis is an integer, and
 * the labels of cross_entropy are a bound name or a number, so they can be
 * held constant while the logits are differentiated. */
static int check_call_arguments(parser *p, const expr_node *call)
{
    const expr_function_info *info = &expr_functions[call->function];

    if (info->axis_argument && call->n_args == 2) {
        const expr_node *axis = call->args[1];

        if (!expr_is_constant(axis))
            return fail(p->error, axis->start, "the axis of %s must be a constant "
                        "integer such as 0 or -1", info->name);
        double value = expr_constant_value(axis);
        if (value != floor(value) || fabs(value) > AG_MAX_DIMS)
            return fail(p->error, axis->start, "the axis of %s must be an integer "
                        "from %d to %d, not %g", info->name, -AG_MAX_DIMS,
                        AG_MAX_DIMS - 1, value);
    }

    if (call->function == FN_CROSS_ENTROPY) {
        const expr_node *labels = call->args[1];

        if (labels->kind != EXPR_NAME && !expr_is_constant(labels))
            return fail(p->error, labels->start, "the labels of cross_entropy must be "
                        "a bound name or a number (class indices), not an expression");
    }
    return 0;
}

/* Parses the arguments of a call whose name token was just consumed. */
static expr_node *parse_call(parser *p, const token *name, int function)
{
    const expr_function_info *info = &expr_functions[function];
    expr_node *node = new_node(p, EXPR_CALL, name->column);
    const token *open = peek(p);

    node->function = (expr_function)function;
    p->next++; /* the '(' */

    while (!peek_symbol(p, ')')) {
        if (node->n_args == info->max_args) {
            fail(p->error, peek(p)->column, "%s takes %s%d argument%s: %s",
                 info->name, info->min_args == info->max_args ? "" : "at most ",
                 info->max_args, info->max_args == 1 ? "" : "s", info->usage);
            return NULL;
        }
        if (node->n_args > 0) {
            if (!peek_symbol(p, ',')) {
                char found[64];

                describe(p, peek(p), found, sizeof found);
                fail(p->error, peek(p)->column, "expected ',' or ')' in the arguments of "
                     "%s, found %s", info->name, found);
                return NULL;
            }
            p->next++;
        }
        node->args[node->n_args] = parse_expr(p);
        if (node->args[node->n_args] == NULL)
            return NULL;
        node->n_args++;
        if (peek(p)->kind == TOKEN_END) {
            fail(p->error, open->column, "missing ')' to close this '('");
            return NULL;
        }
    }
    if (node->n_args < info->min_args) {
        fail(p->error, peek(p)->column, "%s takes %s%d argument%s, got %d: %s", info->name,
             info->min_args == info->max_args ? "" : "at least ", info->min_args,
             info->min_args == 1 ? "" : "s", node->n_args, info->usage);
        return NULL;
    }
    p->next++; /* the ')' */

    if (check_call_arguments(p, node) != 0)
        return NULL;
    return finish_node(p, node);
}

static expr_node *parse_name(parser *p)
{
    const token *t = peek(p);
    const char *start = p->text + t->column;

    p->next++;
    if (peek_symbol(p, '(')) {
        int function = find_function(start, t->length);

        if (function < 0) {
            char known[512];

            list_functions(known, sizeof known);
            fail(p->error, t->column, "unknown function '%.*s'; the functions are %s",
                 t->length, start, known);
            return NULL;
        }
        return parse_call(p, t, function);
    }

    for (int i = 0; i < p->n_names; i++) {
        if ((int)strlen(p->names[i]) == t->length &&
            strncmp(p->names[i], start, (size_t)t->length) == 0) {
            expr_node *node = new_node(p, EXPR_NAME, t->column);

            node->binding = i;
            return node;
        }
    }
    if (find_function(start, t->length) >= 0)
        fail(p->error, t->column, "%.*s is a function: call it as %s", t->length, start,
             expr_functions[find_function(start, t->length)].usage);
    else
        fail(p->error, t->column, "unknown name '%.*s'; bind it on the command line as "
             "%.*s=VALUE", t->length, start, t->length, start);
    return NULL;
}

static expr_node *parse_primary(parser *p)
{
    const token *t = peek(p);

    if (t->kind == TOKEN_NUMBER) {
        expr_node *node = new_node(p, EXPR_NUMBER, t->column);

        node->number = t->number;
        p->next++;
        return node;
    }
    if (t->kind == TOKEN_NAME)
        return parse_name(p);
    if (peek_symbol(p, '(')) {
        p->next++;
        expr_node *inner = parse_expr(p);
        if (inner == NULL)
            return NULL;
        if (!peek_symbol(p, ')')) {
            char found[64];

            describe(p, peek(p), found, sizeof found);
            fail(p->error, t->column, "missing ')' to close this '(' (found %s)", found);
            return NULL;
        }
        p->next++;
        inner->start = t->column;
        return inner;
    }

    char found[64];
    describe(p, t, found, sizeof found);
    fail(p->error, t->column, "expected a number, a name, a function call or '(', "
         "found %s", found);
    return NULL;
}

static expr_node *parse_power(parser *p)
{
    expr_node *base = parse_primary(p);

    if (base == NULL || !peek_symbol(p, '^'))
        return base;

    expr_node *node = new_node(p, EXPR_BINARY, peek(p)->column);
    p->next++;
    node->op = '^';
    node->start = base->start;
    node->n_args = 2;
    node->args[0] = base;
    /* The exponent is a unary, so 2^-1 works and 2^3^2 is 2^(3^2). */
    node->args[1] = parse_unary(p);
    if (node->args[1] == NULL)
        return NULL;
    return finish_node(p, node);
}

/* Every nesting level (a parenthesis, a call argument, a unary minus) passes
 * through here, so the depth is counted here. */
static expr_node *parse_unary(parser *p)
{
    if (++p->depth > MAX_DEPTH) {
        fail(p->error, peek(p)->column, "the expression nests deeper than %d levels",
             MAX_DEPTH);
        return NULL;
    }

    expr_node *result;
    if (peek_symbol(p, '-')) {
        expr_node *node = new_node(p, EXPR_NEGATE, peek(p)->column);

        p->next++;
        node->n_args = 1;
        node->args[0] = parse_unary(p);
        result = node->args[0] == NULL ? NULL : finish_node(p, node);
    } else if (peek_symbol(p, '+')) {
        p->next++;
        result = parse_unary(p);
    } else {
        result = parse_power(p);
    }
    p->depth--;
    return result;
}

/* Parses a left-associative chain of the operators in `symbols`. */
static expr_node *parse_chain(parser *p, const char *symbols,
                              expr_node *(*operand)(parser *))
{
    expr_node *left = operand(p);

    while (left != NULL && peek(p)->kind == TOKEN_SYMBOL &&
           strchr(symbols, peek(p)->symbol) != NULL) {
        expr_node *node = new_node(p, EXPR_BINARY, peek(p)->column);

        node->op = peek(p)->symbol;
        node->start = left->start;
        p->next++;
        node->n_args = 2;
        node->args[0] = left;
        node->args[1] = operand(p);
        left = node->args[1] == NULL ? NULL : finish_node(p, node);
    }
    return left;
}

static expr_node *parse_term(parser *p) { return parse_chain(p, "*/@", parse_unary); }

static expr_node *parse_expr(parser *p)
{
    return parse_chain(p, "+-", parse_term);
}

int expr_parse(const char *text, const char *const *names, int n_names,
               expr_tree *tree, expr_error *error)
{
    parser p = {.text = text, .names = names, .n_names = n_names, .tree = tree,
                .error = error};

    memset(tree, 0, sizeof *tree);
    error->column = -1;
    error->message[0] = '\0';
    if (tokenize(text, &p.tokens, &p.n_tokens, error) != 0)
        return -1;

    tree->nodes = calloc(p.n_tokens, sizeof *tree->nodes);
    if (tree->nodes == NULL) {
        free(p.tokens);
        return fail(error, -1, "out of memory");
    }

    if (p.tokens[0].kind == TOKEN_END) {
        fail(error, 0, "the expression is empty");
    } else {
        tree->root = parse_expr(&p);
        if (tree->root != NULL && peek(&p)->kind != TOKEN_END) {
            const token *t = peek(&p);

            if (t->kind == TOKEN_SYMBOL && t->symbol == ')')
                fail(error, t->column, "unmatched ')'");
            else if (t->kind == TOKEN_SYMBOL && t->symbol == ',')
                fail(error, t->column, "',' outside the arguments of a function call");
            else
                fail(error, t->column, "expected an operator (+ - * / ^ @) before '%.*s'",
                     t->length, text + t->column);
            tree->root = NULL;
        }
    }

    free(p.tokens);
    if (tree->root == NULL) {
        expr_tree_free(tree);
        return -1;
    }
    return 0;
}

void expr_tree_free(expr_tree *tree)
{
    free(tree->nodes);
    memset(tree, 0, sizeof *tree);
}

/* ---- questions about a tree ------------------------------------------------------ */

bool expr_is_constant(const expr_node *node)
{
    return node->constant;
}

double expr_constant_value(const expr_node *node)
{
    if (node->kind == EXPR_NUMBER)
        return node->number;
    if (node->kind == EXPR_NEGATE)
        return -expr_constant_value(node->args[0]);

    double a = expr_constant_value(node->args[0]);
    double b = expr_constant_value(node->args[1]);
    switch (node->op) {
    case '+':
        return a + b;
    case '-':
        return a - b;
    case '*':
        return a * b;
    case '/':
        return a / b;
    default:
        return pow(a, b);
    }
}

static void mark_uses(const expr_node *node, bool labels, bool *used, bool *differentiable)
{
    if (node->kind == EXPR_NAME) {
        used[node->binding] = true;
        if (!labels)
            differentiable[node->binding] = true;
        return;
    }
    for (int i = 0; i < node->n_args; i++) {
        bool is_labels = node->kind == EXPR_CALL && node->function == FN_CROSS_ENTROPY &&
                         i == 1;

        mark_uses(node->args[i], labels || is_labels, used, differentiable);
    }
}

void expr_find_uses(const expr_tree *tree, int n_names, bool *used, bool *differentiable)
{
    for (int i = 0; i < n_names; i++) {
        used[i] = false;
        differentiable[i] = false;
    }
    mark_uses(tree->root, false, used, differentiable);
}

static void mark_label_uses(const expr_node *node, bool in_labels, bool *labels)
{
    if (node->kind == EXPR_NAME) {
        if (in_labels)
            labels[node->binding] = true;
        return;
    }
    for (int i = 0; i < node->n_args; i++) {
        bool is_labels = node->kind == EXPR_CALL && node->function == FN_CROSS_ENTROPY &&
                         i == 1;

        mark_label_uses(node->args[i], in_labels || is_labels, labels);
    }
}

void expr_find_label_uses(const expr_tree *tree, int n_names, bool *labels)
{
    for (int i = 0; i < n_names; i++)
        labels[i] = false;
    mark_label_uses(tree->root, false, labels);
}
