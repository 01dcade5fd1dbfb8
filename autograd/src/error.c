/* The per-thread error message, in the manner of errno. */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

#define AG_ERROR_SIZE 512

static _Thread_local char error_message[AG_ERROR_SIZE];
static _Thread_local bool error_set;

const char *ag_error(void)
{
    return error_set ? error_message : NULL;
}

void ag_error_clear(void)
{
    error_set = false;
    error_message[0] = '\0';
}

void ag_set_error(const char *format, ...)
{
    va_list args;

    va_start(args, format);
    vsnprintf(error_message, sizeof error_message, format, args);
    va_end(args);
    error_set = true;
}

int ag_error_dtype_mismatch(const char *op, const ag_tensor *a, const ag_tensor *b)
{
    ag_set_error("ag_%s: dtypes differ: %s and %s; convert one operand with "
                 "ag_tensor_copy so both have the same dtype",
                 op, ag_dtype_name(a->dtype), ag_dtype_name(b->dtype));
    return -1;
}
