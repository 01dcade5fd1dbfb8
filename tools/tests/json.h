/* A small JSON reader for the CLI tests: enough of RFC 8259 to read back
 * what `tapegrad --format json` prints. */
#ifndef TAPEGRAD_TESTS_JSON_H
#define TAPEGRAD_TESTS_JSON_H

#include <stdbool.h>
#include <stddef.h>

typedef enum json_type {
    JSON_NULL,
    JSON_BOOL,
    JSON_NUMBER,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT,
} json_type;

typedef struct json_value json_value;

struct json_value {
    json_type type;
    bool boolean;
    double number;
    char *string;       /* JSON_STRING */
    json_value **items; /* JSON_ARRAY elements, JSON_OBJECT values */
    char **keys;        /* JSON_OBJECT keys */
    size_t count;
};

/* Parses a whole document. Returns the value (free with json_free), or NULL
 * with a message naming the byte offset in `error`. */
json_value *json_parse(const char *text, char *error, size_t error_size);

void json_free(json_value *value);

/* Returns the member `key` of an object, or NULL when absent or when
 * `object` is not an object. */
const json_value *json_get(const json_value *object, const char *key);

/* Returns element i of an array, or NULL. */
const json_value *json_at(const json_value *array, size_t i);

#endif
