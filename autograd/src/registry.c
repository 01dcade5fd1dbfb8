/* The op registry: every op, built-in or user-defined, found by name. */
#include <string.h>
#include <threads.h>
#include <uthash.h>

#include "internal.h"

typedef struct registry_entry {
    const ag_op *op;
    UT_hash_handle hh; /* keyed by op->name */
} registry_entry;

static registry_entry *registry;
static once_flag builtins_once = ONCE_FLAG_INIT;

/* uthash allocates through the library's allocator too. It has no way to
 * report failure other than this hook, which marks the registry as broken
 * instead of exiting. */
static bool registry_out_of_memory;
#undef uthash_malloc
#undef uthash_free
#undef uthash_fatal
#define uthash_malloc(size) ag_heap_alloc(size)
#define uthash_free(ptr, size) ag_heap_free(ptr)
#define uthash_fatal(message) (registry_out_of_memory = true)

static int register_op(const ag_op *op)
{
    registry_entry *entry;

    if (op == NULL || op->name == NULL || op->name[0] == '\0' || op->shape == NULL ||
        op->forward == NULL || op->n_inputs < 1 || op->n_inputs > AG_MAX_INPUTS) {
        ag_set_error("ag_op_register: invalid op definition; it needs a name, "
                     "1 to %d inputs, a shape rule and a forward kernel",
                     AG_MAX_INPUTS);
        return -1;
    }

    HASH_FIND_STR(registry, op->name, entry);
    if (entry != NULL) {
        ag_set_error("ag_op_register: an op named \"%s\" is already registered; "
                     "choose another name",
                     op->name);
        return -1;
    }

    entry = ag_heap_alloc(sizeof *entry);
    if (entry == NULL) {
        ag_set_error("ag_op_register: out of memory");
        return -1;
    }
    entry->op = op;
    HASH_ADD_KEYPTR(hh, registry, op->name, strlen(op->name), entry);
    if (registry_out_of_memory) {
        ag_set_error("ag_op_register: out of memory growing the registry");
        return -1;
    }
    return 0;
}

static void register_builtins_once(void)
{
    static const ag_op *const builtins[] = {
        &ag_op_add,       &ag_op_sub,        &ag_op_mul,        &ag_op_div,
        &ag_op_pow,       &ag_op_maximum,    &ag_op_minimum,    &ag_op_add_scalar,
        &ag_op_mul_scalar, &ag_op_pow_scalar, &ag_op_neg,       &ag_op_exp,
        &ag_op_log,       &ag_op_sqrt,       &ag_op_abs,        &ag_op_tanh,
        &ag_op_sigmoid,   &ag_op_relu,       &ag_op_softplus,   &ag_op_log_sigmoid,
        &ag_op_clamp,     &ag_op_matmul,     &ag_op_linear,     &ag_op_transpose,
        &ag_op_reshape,   &ag_op_sum,        &ag_op_mean,       &ag_op_max,
        &ag_op_sum_axis,  &ag_op_mean_axis,  &ag_op_max_axis,   &ag_op_logsumexp,
        &ag_op_logsumexp_axis, &ag_op_softmax, &ag_op_log_softmax,
        &ag_op_expand_as, &ag_op_sum_to, &ag_op_masked, &ag_op_abs_derivative,
        &ag_op_relu_derivative, &ag_op_clamp_derivative, &ag_op_nonzero_mask,
        &ag_op_maximum_derivative, &ag_op_max_mask, &ag_op_pow_exponent_mask,
    };

    for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++)
        register_op(builtins[i]);
}

void ag_register_builtins(void)
{
    call_once(&builtins_once, register_builtins_once);
}

int ag_op_register(const ag_op *op)
{
    ag_register_builtins();
    return register_op(op);
}

const ag_op *ag_op_find(const char *name)
{
    registry_entry *entry;

    if (name == NULL)
        return NULL;
    ag_register_builtins();
    HASH_FIND_STR(registry, name, entry);
    return entry == NULL ? NULL : entry->op;
}
