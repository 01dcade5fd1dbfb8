/*
 * Optimizers: SGD (with momentum, Nesterov and weight decay) and Adam/AdamW,
 * following PyTorch's update rules, plus learning-rate schedules. Updates
 * write the parameters' data directly, so they record nothing; all state is
 * allocated by the constructor, so a step allocates nothing.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad/nn.h"

typedef enum optimizer_kind { OPT_SGD, OPT_ADAM } optimizer_kind;

/* Per-parameter state. Buffers have the parameter's dtype and size. */
typedef struct param_state {
    ag_tensor *param;
    void *moment1; /* SGD momentum buffer, or Adam's m */
    void *moment2; /* Adam's v; NULL for SGD */
    uint64_t steps; /* updates applied to this parameter */
} param_state;

struct nn_optimizer {
    optimizer_kind kind;
    nn_params *params; /* borrowed */
    size_t n_params;
    param_state *states;
    double lr;
    uint64_t steps;
    nn_sgd_options sgd;
    nn_adam_options adam;
};

/* ---- options -------------------------------------------------------------- */

nn_sgd_options nn_sgd_defaults(double lr)
{
    return (nn_sgd_options){.lr = lr};
}

nn_adam_options nn_adam_defaults(void)
{
    return (nn_adam_options){
        .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.0};
}

nn_adam_options nn_adamw_defaults(void)
{
    nn_adam_options options = nn_adam_defaults();

    options.weight_decay = 1e-2;
    options.decoupled = true;
    return options;
}

/* `!(x >= 0)` also rejects NaN. */
static int check_sgd_options(const nn_sgd_options *o)
{
    if (!(o->lr >= 0) || !(o->momentum >= 0) || !(o->dampening >= 0) ||
        !(o->weight_decay >= 0)) {
        ag_set_error("nn_sgd_new: invalid options lr %g, momentum %g, dampening "
                     "%g, weight_decay %g; each must be >= 0",
                     o->lr, o->momentum, o->dampening, o->weight_decay);
        return -1;
    }
    if (o->nesterov && (o->momentum <= 0 || o->dampening != 0)) {
        ag_set_error("nn_sgd_new: Nesterov momentum needs momentum > 0 and "
                     "dampening 0, got momentum %g and dampening %g",
                     o->momentum, o->dampening);
        return -1;
    }
    return 0;
}

static int check_adam_options(const nn_adam_options *o)
{
    if (!(o->lr >= 0) || !(o->eps >= 0) || !(o->weight_decay >= 0)) {
        ag_set_error("nn_adam_new: invalid options lr %g, eps %g, weight_decay "
                     "%g; each must be >= 0",
                     o->lr, o->eps, o->weight_decay);
        return -1;
    }
    if (!(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1)) {
        ag_set_error("nn_adam_new: invalid betas %g and %g; each must be in [0, 1)",
                     o->beta1, o->beta2);
        return -1;
    }
    return 0;
}

/* ---- lifetime ------------------------------------------------------------- */

static size_t element_size(const ag_tensor *t)
{
    return ag_tensor_dtype(t) == AG_F32 ? sizeof(float) : sizeof(double);
}

/* Allocates the optimizer and zeroed state buffers: one per parameter for
 * SGD with momentum, two for Adam. */
static nn_optimizer *optimizer_new(const char *function_name, optimizer_kind kind,
                                   nn_params *params, int n_buffers)
{
    if (params == NULL) {
        ag_set_error("%s: params is NULL; pass the set to optimize", function_name);
        return NULL;
    }

    nn_optimizer *opt = ag_calloc(1, sizeof *opt);
    size_t n = nn_params_count(params);
    if (opt == NULL || (opt->states = ag_calloc(n + 1, sizeof *opt->states)) == NULL) {
        ag_free(opt);
        ag_set_error("%s: out of memory", function_name);
        return NULL;
    }
    opt->kind = kind;
    opt->params = params;
    opt->n_params = n;

    for (size_t i = 0; i < n; i++) {
        param_state *state = &opt->states[i];
        state->param = nn_params_at(params, i, NULL);

        size_t bytes = ag_tensor_numel(state->param) * element_size(state->param) + 1;
        if (n_buffers >= 1)
            state->moment1 = ag_calloc(1, bytes);
        if (n_buffers >= 2)
            state->moment2 = ag_calloc(1, bytes);
        if ((n_buffers >= 1 && state->moment1 == NULL) ||
            (n_buffers >= 2 && state->moment2 == NULL)) {
            nn_optimizer_free(opt);
            ag_set_error("%s: out of memory for the state of %zu parameters", function_name, n);
            return NULL;
        }
    }
    return opt;
}

nn_optimizer *nn_sgd_new(nn_params *params, nn_sgd_options options)
{
    if (check_sgd_options(&options) != 0)
        return NULL;

    nn_optimizer *opt = optimizer_new("nn_sgd_new", OPT_SGD, params,
                                      options.momentum != 0 ? 1 : 0);
    if (opt == NULL)
        return NULL;
    opt->sgd = options;
    opt->lr = options.lr;
    return opt;
}

nn_optimizer *nn_adam_new(nn_params *params, nn_adam_options options)
{
    if (check_adam_options(&options) != 0)
        return NULL;

    nn_optimizer *opt = optimizer_new("nn_adam_new", OPT_ADAM, params, 2);
    if (opt == NULL)
        return NULL;
    opt->adam = options;
    opt->lr = options.lr;
    return opt;
}

nn_optimizer *nn_adamw_new(nn_params *params, nn_adam_options options)
{
    options.decoupled = true;
    return nn_adam_new(params, options);
}

void nn_optimizer_free(nn_optimizer *opt)
{
    if (opt == NULL)
        return;
    for (size_t i = 0; i < opt->n_params; i++) {
        ag_free(opt->states[i].moment1);
        ag_free(opt->states[i].moment2);
    }
    ag_free(opt->states);
    ag_free(opt);
}

/* ---- update kernels ------------------------------------------------------- */

/*
 * Each kernel is written once for float and double so an f32 parameter is
 * updated in f32 arithmetic, as PyTorch does. `first` is true on a
 * parameter's first update.
 */
#define SGD_KERNEL(T)                                                          \
    static void sgd_update_##T(T *p, const T *g, T *buf, size_t n,             \
                               const nn_sgd_options *o, T lr, bool first)      \
    {                                                                          \
        const T wd = (T)o->weight_decay;                                       \
        const T momentum = (T)o->momentum;                                     \
        const T keep = (T)(1.0 - o->dampening);                                \
                                                                               \
        for (size_t i = 0; i < n; i++) {                                       \
            T d = g[i];                                                        \
            if (wd != 0)                                                       \
                d += wd * p[i];                                                \
            if (buf != NULL) {                                                 \
                /* PyTorch starts the buffer at the first gradient, undamped. */ \
                buf[i] = first ? d : momentum * buf[i] + keep * d;             \
                d = o->nesterov ? d + momentum * buf[i] : buf[i];              \
            }                                                                  \
            p[i] -= lr * d;                                                    \
        }                                                                      \
    }

/* Adam divides m by (1 - beta1^t) and v by (1 - beta2^t) to undo their
 * start at zero. step_size folds the first correction into lr. */
#define ADAM_KERNEL(T)                                                         \
    static void adam_update_##T(T *p, const T *g, T *m, T *v, size_t n,        \
                                const nn_adam_options *o, double lr,           \
                                uint64_t t)                                    \
    {                                                                          \
        const T beta1 = (T)o->beta1;                                           \
        const T beta2 = (T)o->beta2;                                           \
        const T wd = (T)o->weight_decay;                                       \
        const T eps = (T)o->eps;                                               \
        const T decay = (T)(1.0 - lr * o->weight_decay);                       \
        const T step_size = (T)(lr / (1.0 - pow(o->beta1, (double)t)));        \
        const T correction2_sqrt = (T)sqrt(1.0 - pow(o->beta2, (double)t));    \
                                                                               \
        for (size_t i = 0; i < n; i++) {                                       \
            T d = g[i];                                                        \
            if (o->decoupled)                                                  \
                p[i] *= decay;                                                 \
            else if (wd != 0)                                                  \
                d += wd * p[i];                                                \
            m[i] = beta1 * m[i] + ((T)1 - beta1) * d;                          \
            v[i] = beta2 * v[i] + ((T)1 - beta2) * d * d;                      \
            T denom = (T)sqrt(v[i]) / correction2_sqrt + eps;                  \
            /* m = 0 means no step, also with eps = 0 where m / denom would   \
             * be 0 / 0 = NaN (PyTorch 1.13 gives NaN there). */               \
            T ratio = m[i] / denom;                                            \
            p[i] -= step_size * (m[i] == 0 ? (T)0 : ratio);                    \
        }                                                                      \
    }

SGD_KERNEL(float)
SGD_KERNEL(double)
ADAM_KERNEL(float)
ADAM_KERNEL(double)

static void update_param(nn_optimizer *opt, param_state *state)
{
    ag_tensor *grad = ag_tensor_grad(state->param);
    size_t n = ag_tensor_numel(state->param);
    bool f32 = ag_tensor_dtype(state->param) == AG_F32;
    void *p = ag_tensor_data(state->param);
    void *g = ag_tensor_data(grad);

    state->steps++;
    if (opt->kind == OPT_SGD && f32)
        sgd_update_float(p, g, state->moment1, n, &opt->sgd, (float)opt->lr,
                         state->steps == 1);
    else if (opt->kind == OPT_SGD)
        sgd_update_double(p, g, state->moment1, n, &opt->sgd, opt->lr,
                          state->steps == 1);
    else if (f32)
        adam_update_float(p, g, state->moment1, state->moment2, n, &opt->adam, opt->lr,
                          state->steps);
    else
        adam_update_double(p, g, state->moment1, state->moment2, n, &opt->adam, opt->lr,
                           state->steps);
}

/* ---- steps ---------------------------------------------------------------- */

int nn_optimizer_step(nn_optimizer *opt)
{
    if (opt == NULL) {
        ag_set_error("nn_optimizer_step: optimizer is NULL");
        return -1;
    }
    if (nn_params_count(opt->params) != opt->n_params) {
        ag_set_error("nn_optimizer_step: the parameter set had %zu tensors when "
                     "the optimizer was created and has %zu now; create the "
                     "optimizer after adding every parameter",
                     opt->n_params, nn_params_count(opt->params));
        return -1;
    }

    for (size_t i = 0; i < opt->n_params; i++) {
        param_state *state = &opt->states[i];

        /* A parameter no gradient buffer was made for is left alone, as
         * PyTorch skips parameters whose .grad is None. */
        if (ag_tensor_grad(state->param) != NULL)
            update_param(opt, state);
    }
    opt->steps++;
    return 0;
}

void nn_optimizer_zero_grad(nn_optimizer *opt)
{
    if (opt != NULL)
        nn_params_zero_grad(opt->params);
}

void nn_optimizer_set_lr(nn_optimizer *opt, double lr)
{
    if (opt != NULL)
        opt->lr = lr;
}

double nn_optimizer_lr(const nn_optimizer *opt)
{
    return opt == NULL ? NAN : opt->lr;
}

uint64_t nn_optimizer_steps(const nn_optimizer *opt)
{
    return opt == NULL ? 0 : opt->steps;
}

/* ---- learning-rate schedules ---------------------------------------------- */

double nn_lr_step_decay(double base_lr, double gamma, int step_size, int epoch)
{
    if (step_size <= 0 || epoch < 0) {
        ag_set_error("nn_lr_step_decay: step_size %d and epoch %d; step_size "
                     "must be > 0 and epoch >= 0",
                     step_size, epoch);
        return NAN;
    }
    return base_lr * pow(gamma, (double)(epoch / step_size));
}

double nn_lr_cosine(double base_lr, double eta_min, int t_max, int epoch)
{
    const double pi = 3.14159265358979323846;

    if (t_max <= 0 || epoch < 0) {
        ag_set_error("nn_lr_cosine: t_max %d and epoch %d; t_max must be > 0 "
                     "and epoch >= 0",
                     t_max, epoch);
        return NAN;
    }
    return eta_min + (base_lr - eta_min) * (1.0 + cos(pi * epoch / t_max)) / 2.0;
}
