/* NAME=VALUE arguments of `tapegrad grad`: a name bound to a number or a
 * bracketed, nested list of numbers. */
#ifndef TAPEGRAD_TOOLS_BINDINGS_H
#define TAPEGRAD_TOOLS_BINDINGS_H

#include <stddef.h>

#include "tapegrad/autograd.h"

/* Maximum length of a name: what ag_tensor_set_name keeps. */
#define BINDING_NAME_MAX 31

typedef struct binding {
    char name[BINDING_NAME_MAX + 1];
    int ndim;
    size_t shape[AG_MAX_DIMS];
    size_t numel;
    double *data; /* numel values, row-major; owned by the binding */
} binding;

/* The reason an argument was rejected, and the byte of it at fault. */
typedef struct binding_error {
    int column;
    char message[256];
} binding_error;

/* Parses "NAME=VALUE". A plain number has shape (1); a list's nesting gives
 * the dimensions, and every list at one depth must have the same length.
 * Returns 0 and fills `out` (free with binding_free), or -1 and fills
 * `error`. */
int binding_parse(const char *argument, binding *out, binding_error *error);

void binding_free(binding *b);

/* Parses a shape such as "3x4" or "5". Returns 0, or -1 with a message. */
int shape_parse(const char *text, int *ndim, size_t *shape, char *message,
                size_t message_size);

#endif /* TAPEGRAD_TOOLS_BINDINGS_H */
