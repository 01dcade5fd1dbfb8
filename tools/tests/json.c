/* A small recursive-descent JSON reader for the CLI tests. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

typedef struct reader {
    const char *text;
    size_t pos;
    char *error;
    size_t error_size;
    int depth;
} reader;

static json_value *read_value(reader *r);

static json_value *fail(reader *r, const char *problem)
{
    snprintf(r->error, r->error_size, "invalid JSON at byte %zu: %s", r->pos, problem);
    return NULL;
}

static void skip_spaces(reader *r)
{
    while (r->text[r->pos] == ' ' || r->text[r->pos] == '\t' ||
           r->text[r->pos] == '\n' || r->text[r->pos] == '\r')
        r->pos++;
}

static json_value *new_value(json_type type)
{
    json_value *v = calloc(1, sizeof *v);

    if (v != NULL)
        v->type = type;
    return v;
}

static bool read_literal(reader *r, const char *word)
{
    size_t length = strlen(word);

    if (strncmp(r->text + r->pos, word, length) != 0)
        return false;
    r->pos += length;
    return true;
}

/* Reads a string body after the opening quote; only ASCII \u escapes are
 * decoded, which is all the program writes. */
static char *read_string(reader *r)
{
    size_t capacity = 16;
    size_t length = 0;
    char *s = malloc(capacity);

    if (s == NULL)
        return NULL;
    for (;;) {
        char c = r->text[r->pos++];

        if (c == '\0' || (unsigned char)c < 0x20) {
            free(s);
            fail(r, "unterminated string");
            return NULL;
        }
        if (c == '"')
            break;
        if (c == '\\') {
            char e = r->text[r->pos++];
            const char *from = "\"\\/bfnrt";
            const char *to = "\"\\/\b\f\n\r\t";
            const char *found = e == '\0' ? NULL : strchr(from, e);

            if (e == 'u') {
                unsigned code;
                if (sscanf(r->text + r->pos, "%4x", &code) != 1 || code > 0x7f) {
                    free(s);
                    fail(r, "unsupported \\u escape");
                    return NULL;
                }
                r->pos += 4;
                c = (char)code;
            } else if (found != NULL) {
                c = to[found - from];
            } else {
                free(s);
                fail(r, "invalid escape");
                return NULL;
            }
        }
        if (length + 2 > capacity) {
            capacity *= 2;
            char *grown = realloc(s, capacity);
            if (grown == NULL) {
                free(s);
                return NULL;
            }
            s = grown;
        }
        s[length++] = c;
    }
    s[length] = '\0';
    return s;
}

/* Checks the JSON number grammar, then converts with strtod. */
static json_value *read_number(reader *r)
{
    const char *start = r->text + r->pos;
    const char *p = start;

    if (*p == '-')
        p++;
    if (*p == '0')
        p++;
    else if (isdigit((unsigned char)*p))
        while (isdigit((unsigned char)*p))
            p++;
    else
        return fail(r, "expected a value");
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return fail(r, "expected digits after '.'");
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!isdigit((unsigned char)*p))
            return fail(r, "expected digits in the exponent");
        while (isdigit((unsigned char)*p))
            p++;
    }

    json_value *v = new_value(JSON_NUMBER);
    if (v == NULL)
        return fail(r, "out of memory");
    v->number = strtod(start, NULL);
    r->pos += (size_t)(p - start);
    return v;
}

static bool push(json_value *container, json_value *item, char *key)
{
    json_value **items = realloc(container->items, (container->count + 1) * sizeof *items);

    if (items == NULL)
        return false;
    container->items = items;
    if (container->type == JSON_OBJECT) {
        char **keys = realloc(container->keys, (container->count + 1) * sizeof *keys);
        if (keys == NULL)
            return false;
        container->keys = keys;
        container->keys[container->count] = key;
    }
    container->items[container->count++] = item;
    return true;
}

static json_value *read_container(reader *r, json_type type, char close)
{
    json_value *v = new_value(type);

    if (v == NULL)
        return fail(r, "out of memory");
    r->pos++;
    skip_spaces(r);
    if (r->text[r->pos] == close) {
        r->pos++;
        return v;
    }
    for (;;) {
        char *key = NULL;

        skip_spaces(r);
        if (type == JSON_OBJECT) {
            if (r->text[r->pos] != '"') {
                json_free(v);
                return fail(r, "expected a key");
            }
            r->pos++;
            key = read_string(r);
            skip_spaces(r);
            if (key == NULL) {
                json_free(v);
                return NULL;
            }
            if (r->text[r->pos] != ':') {
                free(key);
                json_free(v);
                return fail(r, "expected ':'");
            }
            r->pos++;
        }

        json_value *item = read_value(r);
        if (item == NULL || !push(v, item, key)) {
            free(key);
            json_free(item);
            json_free(v);
            return NULL;
        }

        skip_spaces(r);
        if (r->text[r->pos] == close) {
            r->pos++;
            return v;
        }
        if (r->text[r->pos] != ',') {
            json_free(v);
            return fail(r, "expected ',' or the closing bracket");
        }
        r->pos++;
    }
}

static json_value *read_value(reader *r)
{
    skip_spaces(r);
    if (++r->depth > 64)
        return fail(r, "nested too deeply");

    json_value *v;
    char c = r->text[r->pos];
    if (c == '{') {
        v = read_container(r, JSON_OBJECT, '}');
    } else if (c == '[') {
        v = read_container(r, JSON_ARRAY, ']');
    } else if (c == '"') {
        r->pos++;
        v = new_value(JSON_STRING);
        if (v != NULL && (v->string = read_string(r)) == NULL) {
            json_free(v);
            v = NULL;
        }
    } else if (read_literal(r, "null")) {
        v = new_value(JSON_NULL);
    } else if (read_literal(r, "true")) {
        v = new_value(JSON_BOOL);
        if (v != NULL)
            v->boolean = true;
    } else if (read_literal(r, "false")) {
        v = new_value(JSON_BOOL);
    } else {
        v = read_number(r);
    }
    r->depth--;
    return v;
}

json_value *json_parse(const char *text, char *error, size_t error_size)
{
    reader r = {.text = text, .error = error, .error_size = error_size};

    error[0] = '\0';
    json_value *v = read_value(&r);
    if (v == NULL) {
        if (error[0] == '\0')
            snprintf(error, error_size, "invalid JSON (out of memory)");
        return NULL;
    }
    skip_spaces(&r);
    if (text[r.pos] != '\0') {
        json_free(v);
        fail(&r, "text after the document");
        return NULL;
    }
    return v;
}

void json_free(json_value *value)
{
    if (value == NULL)
        return;
    for (size_t i = 0; i < value->count; i++) {
        json_free(value->items[i]);
        if (value->keys != NULL)
            free(value->keys[i]);
    }
    free(value->items);
    free(value->keys);
    free(value->string);
    free(value);
}

const json_value *json_get(const json_value *object, const char *key)
{
    if (object == NULL || object->type != JSON_OBJECT)
        return NULL;
    for (size_t i = 0; i < object->count; i++) {
        if (strcmp(object->keys[i], key) == 0)
            return object->items[i];
    }
    return NULL;
}

const json_value *json_at(const json_value *array, size_t i)
{
    if (array == NULL || array->type != JSON_ARRAY || i >= array->count)
        return NULL;
    return array->items[i];
}
