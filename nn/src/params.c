/* Named parameters: a uthash table for lookup by name beside an array that
 * keeps insertion order for iteration and checkpoints. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad/nn.h"

/* By default uthash exits the process when it cannot allocate. In
 * non-fatal mode it leaves the item out and calls this hook instead, so
 * nn_params_add can report the failure. */
static bool hash_out_of_memory;
#define HASH_NONFATAL_OOM 1
#define uthash_nonfatal_oom(item) (hash_out_of_memory = true)
#define uthash_malloc(size) ag_alloc(size)
#define uthash_free(ptr, size) ag_free(ptr)
#include <uthash.h>

/* strdup through the library allocator, so ag_free releases it. */
static char *copy_string(const char *text)
{
    size_t size = strlen(text) + 1;
    char *copy = ag_alloc(size);

    if (copy != NULL)
        memcpy(copy, text, size);
    return copy;
}

typedef struct param_entry {
    char *name;
    ag_tensor *tensor;
    UT_hash_handle hh; /* keyed by name */
} param_entry;

struct nn_params {
    param_entry *by_name;  /* uthash head */
    param_entry **ordered; /* entries in insertion order */
    size_t count;
    size_t capacity;
};

nn_params *nn_params_new(void)
{
    nn_params *params = ag_calloc(1, sizeof *params);

    if (params == NULL)
        ag_set_error("nn_params_new: out of memory");
    return params;
}

void nn_params_free(nn_params *params)
{
    if (params == NULL)
        return;

    HASH_CLEAR(hh, params->by_name);
    for (size_t i = 0; i < params->count; i++) {
        param_entry *entry = params->ordered[i];

        ag_tensor_free(entry->tensor);
        ag_free(entry->name);
        ag_free(entry);
    }
    ag_free(params->ordered);
    ag_free(params);
}

static int check_name(const nn_params *params, const char *name)
{
    param_entry *existing;
    size_t length = name == NULL ? 0 : strlen(name);

    if (length == 0) {
        ag_set_error("nn_params_add: name is %s; give every parameter a "
                     "non-empty name",
                     name == NULL ? "NULL" : "empty");
        return -1;
    }
    if (length > NN_PARAM_NAME_MAX) {
        ag_set_error("nn_params_add: name \"%.40s...\" has %zu bytes; names "
                     "have at most %d",
                     name, length, NN_PARAM_NAME_MAX);
        return -1;
    }

    HASH_FIND_STR(params->by_name, name, existing);
    if (existing != NULL) {
        ag_set_error("nn_params_add: a parameter named \"%s\" already exists; "
                     "names must be unique",
                     name);
        return -1;
    }
    return 0;
}

/* Makes room for one more entry in the ordered array. */
static int reserve_one(nn_params *params)
{
    if (params->count < params->capacity)
        return 0;

    size_t capacity = params->capacity == 0 ? 8 : 2 * params->capacity;
    param_entry **grown = ag_realloc(params->ordered, capacity * sizeof *grown);
    if (grown == NULL)
        return -1;
    params->ordered = grown;
    params->capacity = capacity;
    return 0;
}

int nn_params_add(nn_params *params, const char *name, ag_tensor *t)
{
    if (t == NULL)
        return -1; /* an earlier failure; keep its message */
    if (params == NULL) {
        ag_set_error("nn_params_add: params is NULL; create it with nn_params_new");
        return -1;
    }
    if (check_name(params, name) != 0)
        return -1;
    if (ag_tensor_tape(t) != NULL) {
        ag_set_error("nn_params_add: the tensor for \"%s\" lives on a tape, which "
                     "frees it at the next reset; create parameters with a NULL tape",
                     name);
        return -1;
    }
    for (size_t i = 0; i < params->count; i++) {
        if (params->ordered[i]->tensor == t) {
            ag_set_error("nn_params_add: the tensor for \"%s\" is already in "
                         "the set as \"%s\"; a set owns each tensor once",
                         name, params->ordered[i]->name);
            return -1;
        }
    }

    param_entry *entry = ag_calloc(1, sizeof *entry);
    char *copy = entry == NULL ? NULL : copy_string(name);
    if (copy == NULL || reserve_one(params) != 0) {
        ag_free(copy);
        ag_free(entry);
        ag_set_error("nn_params_add: out of memory adding \"%s\"", name);
        return -1;
    }
    if (ag_tensor_set_requires_grad(t, true) != 0) {
        ag_free(copy);
        ag_free(entry);
        return -1;
    }

    entry->name = copy;
    entry->tensor = t;
    hash_out_of_memory = false;
    HASH_ADD_KEYPTR(hh, params->by_name, entry->name, strlen(entry->name), entry);
    if (hash_out_of_memory) {
        ag_free(copy);
        ag_free(entry);
        ag_set_error("nn_params_add: out of memory growing the name table");
        return -1;
    }
    params->ordered[params->count++] = entry;
    ag_tensor_set_name(t, name);
    return 0;
}

ag_tensor *nn_params_get(const nn_params *params, const char *name)
{
    param_entry *entry;

    if (params == NULL || name == NULL)
        return NULL;
    HASH_FIND_STR(params->by_name, name, entry);
    return entry == NULL ? NULL : entry->tensor;
}

size_t nn_params_count(const nn_params *params)
{
    return params == NULL ? 0 : params->count;
}

ag_tensor *nn_params_at(const nn_params *params, size_t i, const char **name)
{
    if (params == NULL || i >= params->count) {
        ag_set_error("nn_params_at: index %zu is out of range for %zu parameters",
                     i, nn_params_count(params));
        return NULL;
    }
    if (name != NULL)
        *name = params->ordered[i]->name;
    return params->ordered[i]->tensor;
}

size_t nn_params_numel(const nn_params *params)
{
    size_t total = 0;

    for (size_t i = 0; i < nn_params_count(params); i++)
        total += ag_tensor_numel(params->ordered[i]->tensor);
    return total;
}

void nn_params_zero_grad(nn_params *params)
{
    for (size_t i = 0; i < nn_params_count(params); i++)
        ag_tensor_zero_grad(params->ordered[i]->tensor);
}
