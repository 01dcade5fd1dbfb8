/* Number and tensor output of the tapegrad program: text and JSON. */
#ifndef TAPEGRAD_TOOLS_PRINT_H
#define TAPEGRAD_TOOLS_PRINT_H

#include <stdio.h>

#include "tapegrad/autograd.h"

/* Writes the shortest decimal that reads back as exactly `value` (as a float
 * for AG_F32, a double for AG_F64), or "nan", "inf", "-inf". */
void format_number(char *buf, size_t size, double value, ag_dtype dtype);

/* Writes "(2x3)". */
void print_shape_text(FILE *out, const ag_tensor *t);

/* Writes the elements as nested brackets with right-aligned columns, one
 * innermost row per line, each line after the first starting with `indent`.
 * A tensor of shape (1) is written as a bare number. */
void print_tensor_text(FILE *out, const ag_tensor *t, const char *indent);

/* Writes a JSON string literal with the needed escapes. */
void print_json_string(FILE *out, const char *s);

/* Writes a number as JSON: the shortest round-trip decimal, or the strings
 * "nan", "inf" and "-inf", which JSON numbers cannot express. */
void print_json_number(FILE *out, double value, ag_dtype dtype);

/* Writes {"shape": [...], "data": [...]} with the data flattened row-major. */
void print_tensor_json(FILE *out, const ag_tensor *t);

#endif /* TAPEGRAD_TOOLS_PRINT_H */
