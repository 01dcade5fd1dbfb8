/* NAME=VALUE arguments: names bound to numbers or nested lists of numbers. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bindings.h"

typedef struct value_parser {
    const char *text; /* the whole argument, so columns count from its start */
    size_t pos;
    binding *out;
    size_t capacity;            /* of out->data */
    size_t lengths[AG_MAX_DIMS]; /* length of the lists at each depth */
    bool list_at[AG_MAX_DIMS];   /* whether a list was seen at each depth */
    int leaf_depth;              /* depth of the numbers; -1 before the first */
    int list_depth;              /* one more than the deepest list */
    binding_error *error;
} value_parser;

static int fail(binding_error *error, size_t column, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static int fail(binding_error *error, size_t column, const char *format, ...)
{
    va_list args;

    va_start(args, format);
    vsnprintf(error->message, sizeof error->message, format, args);
    va_end(args);
    error->column = (int)column;
    return -1;
}

static void skip_spaces(value_parser *p)
{
    while (isspace((unsigned char)p->text[p->pos]))
        p->pos++;
}

static int append(value_parser *p, double value)
{
    binding *b = p->out;

    if (b->numel == p->capacity) {
        size_t capacity = p->capacity == 0 ? 16 : 2 * p->capacity;
        double *grown = realloc(b->data, capacity * sizeof *grown);

        if (grown == NULL)
            return fail(p->error, p->pos, "out of memory");
        b->data = grown;
        p->capacity = capacity;
    }
    b->data[b->numel++] = value;
    return 0;
}

/* Reads one number with strtod. Its hexadecimal form is rejected, but inf
 * and nan are accepted so that non-finite inputs can be tried. */
static int parse_number(value_parser *p, int depth)
{
    size_t start = p->pos;
    size_t end = start;

    while (p->text[end] != '\0' && strchr(",[] \t\n", p->text[end]) == NULL)
        end++;
    if (end == start) {
        if (p->text[start] == '\0')
            return fail(p->error, start, "the value ends early; expected a number or '['");
        return fail(p->error, start, "expected a number or '[', found '%c'", p->text[start]);
    }

    char token[64];
    size_t length = end - start;
    if (length >= sizeof token)
        return fail(p->error, start, "number '%.*s' is too long", (int)length,
                    p->text + start);
    memcpy(token, p->text + start, length);
    token[length] = '\0';

    char *stop;
    errno = 0;
    double value = strtod(token, &stop);
    if (*stop != '\0' || strpbrk(token, "xX") != NULL)
        return fail(p->error, start, "invalid number '%s'", token);
    if (errno == ERANGE && isinf(value))
        return fail(p->error, start, "number '%s' is out of range for a double; "
                    "write inf for an infinity", token);

    if (depth < AG_MAX_DIMS && p->list_at[depth])
        return fail(p->error, start, "ragged list: a number where other elements at "
                    "this depth are lists");
    if (p->leaf_depth >= 0 && p->leaf_depth != depth)
        return fail(p->error, start, "ragged list: a number at depth %d where other "
                    "numbers are at depth %d", depth, p->leaf_depth);
    p->leaf_depth = depth;
    p->pos = end;
    return append(p, value);
}

static int parse_value(value_parser *p, int depth);

static int parse_list(value_parser *p, int depth)
{
    size_t open = p->pos;
    size_t count = 0;

    if (depth == AG_MAX_DIMS)
        return fail(p->error, open, "too deeply nested: a tensor has at most %d "
                    "dimensions", AG_MAX_DIMS);
    if (p->leaf_depth == depth)
        return fail(p->error, open, "ragged list: a list where other elements at this "
                    "depth are numbers");
    p->list_at[depth] = true;
    if (depth + 1 > p->list_depth)
        p->list_depth = depth + 1;

    p->pos++;
    skip_spaces(p);
    if (p->text[p->pos] == ']') {
        p->pos++;
    } else {
        for (;;) {
            if (parse_value(p, depth + 1) != 0)
                return -1;
            count++;
            skip_spaces(p);
            if (p->text[p->pos] == ']') {
                p->pos++;
                break;
            }
            if (p->text[p->pos] != ',') {
                if (p->text[p->pos] == '\0')
                    return fail(p->error, open, "missing ']' to close this '['");
                return fail(p->error, p->pos, "expected ',' or ']', found '%c'",
                            p->text[p->pos]);
            }
            p->pos++;
        }
    }

    /* The first list at a depth fixes that dimension's size. */
    if (p->lengths[depth] == (size_t)-1)
        p->lengths[depth] = count;
    else if (p->lengths[depth] != count)
        return fail(p->error, open, "ragged list: this list has %zu element%s but an "
                    "earlier list at the same depth has %zu; every row needs the same "
                    "length", count, count == 1 ? "" : "s", p->lengths[depth]);
    return 0;
}

static int parse_value(value_parser *p, int depth)
{
    skip_spaces(p);
    if (p->text[p->pos] == '[')
        return parse_list(p, depth);
    return parse_number(p, depth);
}

static int parse_name(const char *argument, const char *equals, binding *out,
                      binding_error *error)
{
    size_t length = (size_t)(equals - argument);

    if (length == 0)
        return fail(error, 0, "missing name before '='; write NAME=VALUE");
    if (!isalpha((unsigned char)argument[0]) && argument[0] != '_')
        return fail(error, 0, "invalid name '%.*s': a name starts with a letter or '_'",
                    (int)length, argument);
    for (size_t i = 1; i < length; i++) {
        if (!isalnum((unsigned char)argument[i]) && argument[i] != '_')
            return fail(error, i, "invalid name '%.*s': a name contains only letters, "
                        "digits and '_'", (int)length, argument);
    }
    if (length > BINDING_NAME_MAX)
        return fail(error, 0, "name '%.*s' is longer than %d characters", (int)length,
                    argument, BINDING_NAME_MAX);
    memcpy(out->name, argument, length);
    out->name[length] = '\0';
    return 0;
}

int binding_parse(const char *argument, binding *out, binding_error *error)
{
    const char *equals = strchr(argument, '=');

    memset(out, 0, sizeof *out);
    error->column = -1;
    error->message[0] = '\0';
    if (equals == NULL)
        return fail(error, 0, "expected NAME=VALUE, such as x=2 or W=[[1,2],[3,4]]");
    if (parse_name(argument, equals, out, error) != 0)
        return -1;

    value_parser p = {.text = argument, .pos = (size_t)(equals - argument) + 1,
                      .out = out, .leaf_depth = -1, .error = error};
    for (int d = 0; d < AG_MAX_DIMS; d++)
        p.lengths[d] = (size_t)-1;

    if (parse_value(&p, 0) != 0) {
        binding_free(out);
        return -1;
    }
    skip_spaces(&p);
    if (argument[p.pos] != '\0') {
        binding_free(out);
        return fail(error, p.pos, "unexpected '%s' after the value", argument + p.pos);
    }

    /* A plain number has shape (1); otherwise the nesting gives the shape,
     * down to the numbers or, for empty lists, to the deepest list. */
    if (p.leaf_depth == 0) {
        out->ndim = 1;
        out->shape[0] = 1;
        return 0;
    }
    out->ndim = p.leaf_depth > 0 ? p.leaf_depth : p.list_depth;
    for (int d = 0; d < out->ndim; d++)
        out->shape[d] = p.lengths[d];
    return 0;
}

void binding_free(binding *b)
{
    free(b->data);
    b->data = NULL;
    b->numel = 0;
}

int shape_parse(const char *text, int *ndim, size_t *shape, char *message,
                size_t message_size)
{
    const char *p = text;

    *ndim = 0;
    for (;;) {
        if (!isdigit((unsigned char)*p)) {
            snprintf(message, message_size, "invalid shape '%s': write the dimensions "
                     "joined by 'x', such as 3x4", text);
            return -1;
        }

        char *end;
        errno = 0;
        unsigned long long size = strtoull(p, &end, 10);
        if (errno != 0 || size == 0 || size > (1ULL << 31)) {
            snprintf(message, message_size, "invalid shape '%s': each dimension must be "
                     "from 1 to 2^31", text);
            return -1;
        }
        if (*ndim == AG_MAX_DIMS) {
            snprintf(message, message_size, "invalid shape '%s': a tensor has at most %d "
                     "dimensions", text, AG_MAX_DIMS);
            return -1;
        }
        shape[(*ndim)++] = (size_t)size;

        if (*end == '\0')
            return 0;
        if (*end != 'x') {
            snprintf(message, message_size, "invalid shape '%s': write the dimensions "
                     "joined by 'x', such as 3x4", text);
            return -1;
        }
        p = end + 1;
    }
}
