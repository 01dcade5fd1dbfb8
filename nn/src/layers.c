/* Dense layers Z = h(xW + b) and the multilayer perceptron built from them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad/nn.h"

/* ---- activations ---------------------------------------------------------- */

static bool activation_is_valid(nn_activation activation)
{
    return activation == NN_IDENTITY || activation == NN_RELU ||
           activation == NN_SIGMOID || activation == NN_TANH;
}

const char *nn_activation_name(nn_activation activation)
{
    switch (activation) {
    case NN_IDENTITY:
        return "identity";
    case NN_RELU:
        return "relu";
    case NN_SIGMOID:
        return "sigmoid";
    case NN_TANH:
        return "tanh";
    }
    return "invalid";
}

ag_tensor *nn_activate(ag_tape *tape, ag_tensor *x, nn_activation activation)
{
    if (x == NULL)
        return NULL;

    switch (activation) {
    case NN_IDENTITY:
        return x;
    case NN_RELU:
        return ag_relu(tape, x);
    case NN_SIGMOID:
        return ag_sigmoid(tape, x);
    case NN_TANH:
        return ag_tanh(tape, x);
    }
    ag_set_error("nn_activate: invalid activation %d; use NN_IDENTITY, "
                 "NN_RELU, NN_SIGMOID or NN_TANH",
                 (int)activation);
    return NULL;
}

/* ---- initialisation ------------------------------------------------------- */

int nn_init_weights(ag_tensor *w, nn_init init, ag_rng *rng)
{
    if (w == NULL)
        return -1;
    if (rng == NULL) {
        ag_set_error("nn_init_weights: rng is NULL; pass a generator from ag_rng_new");
        return -1;
    }
    if (ag_tensor_ndim(w) != 2) {
        char shape[64];
        ag_set_error("nn_init_weights: weight of shape %s is not 2-D; W has "
                     "shape (in x out)",
                     ag_shape_str(w, shape, sizeof shape));
        return -1;
    }

    double fan_in = (double)ag_tensor_dim(w, 0);
    double fan_out = (double)ag_tensor_dim(w, 1);
    size_t n = ag_tensor_numel(w);

    switch (init) {
    case NN_INIT_XAVIER: {
        /* U(-a, a) has variance a^2 / 3 = 2 / (in + out), Glorot's choice. */
        double a = sqrt(6.0 / (fan_in + fan_out));
        for (size_t i = 0; i < n; i++)
            ag_tensor_set(w, i, -a + 2.0 * a * ag_rng_uniform(rng));
        return 0;
    }
    case NN_INIT_HE: {
        /* Variance 2 / in keeps the variance of ReLU outputs constant. */
        double sd = sqrt(2.0 / fan_in);
        for (size_t i = 0; i < n; i++)
            ag_tensor_set(w, i, sd * ag_rng_normal(rng));
        return 0;
    }
    }
    ag_set_error("nn_init_weights: invalid init %d; use NN_INIT_XAVIER or NN_INIT_HE",
                 (int)init);
    return -1;
}

/* ---- dense layer ---------------------------------------------------------- */

int nn_dense_init(nn_dense *layer, ag_dtype dtype, size_t in, size_t out,
                  nn_activation activation, nn_init init, ag_rng *rng)
{
    if (layer == NULL) {
        ag_set_error("nn_dense_init: layer is NULL");
        return -1;
    }
    memset(layer, 0, sizeof *layer);
    if (in == 0 || out == 0) {
        ag_set_error("nn_dense_init: a layer of %zu input%s and %zu output%s is "
                     "empty; both widths must be at least 1",
                     in, in == 1 ? "" : "s", out, out == 1 ? "" : "s");
        return -1;
    }
    if (!activation_is_valid(activation)) {
        ag_set_error("nn_dense_init: invalid activation %d; use NN_IDENTITY, "
                     "NN_RELU, NN_SIGMOID or NN_TANH",
                     (int)activation);
        return -1;
    }

    ag_tensor *w = ag_zeros(NULL, dtype, AG_SHAPE(in, out));
    ag_tensor *b = ag_zeros(NULL, dtype, AG_SHAPE(1, out));
    if (w == NULL || b == NULL || nn_init_weights(w, init, rng) != 0 ||
        ag_tensor_set_requires_grad(w, true) != 0 ||
        ag_tensor_set_requires_grad(b, true) != 0) {
        ag_tensor_free(w);
        ag_tensor_free(b);
        return -1;
    }

    layer->w = w;
    layer->b = b;
    layer->activation = activation;
    return 0;
}

void nn_dense_free(nn_dense *layer)
{
    if (layer == NULL)
        return;
    ag_tensor_free(layer->w);
    ag_tensor_free(layer->b);
    layer->w = NULL;
    layer->b = NULL;
}

ag_tensor *nn_dense_forward(ag_tape *tape, const nn_dense *layer, ag_tensor *x)
{
    if (x == NULL)
        return NULL;
    if (layer == NULL || layer->w == NULL || layer->b == NULL) {
        ag_set_error("nn_dense_forward: layer has no weights; create it with "
                     "nn_dense_init");
        return NULL;
    }

    ag_tensor *s = ag_linear(tape, x, layer->w, layer->b);
    return nn_activate(tape, s, layer->activation);
}

/* ---- multilayer perceptron ------------------------------------------------ */

struct nn_mlp {
    int n_layers;
    nn_dense *layers;  /* tensors owned by params */
    nn_params *params;
};

/* Checks the arguments of nn_mlp_new; sets an error naming the first
 * invalid one. */
static int check_mlp_arguments(ag_dtype dtype, int n_layers, const size_t *widths,
                               const nn_activation *activations, nn_init init)
{
    if (dtype != AG_F32 && dtype != AG_F64) {
        ag_set_error("nn_mlp_new: invalid dtype %d; use AG_F32 or AG_F64", (int)dtype);
        return -1;
    }
    if (n_layers < 1) {
        ag_set_error("nn_mlp_new: n_layers is %d; an MLP has at least one layer",
                     n_layers);
        return -1;
    }
    if (widths == NULL || activations == NULL) {
        ag_set_error("nn_mlp_new: %s is NULL; pass %d %s",
                     widths == NULL ? "widths" : "activations",
                     widths == NULL ? n_layers + 1 : n_layers,
                     widths == NULL ? "widths (inputs, then each layer's outputs)"
                                    : "activations, one per layer");
        return -1;
    }
    for (int i = 0; i <= n_layers; i++) {
        if (widths[i] == 0) {
            ag_set_error("nn_mlp_new: widths[%d] is 0; every width must be at "
                         "least 1",
                         i);
            return -1;
        }
    }
    for (int i = 0; i < n_layers; i++) {
        if (!activation_is_valid(activations[i])) {
            ag_set_error("nn_mlp_new: activations[%d] is %d, not an "
                         "nn_activation; use NN_IDENTITY, NN_RELU, NN_SIGMOID "
                         "or NN_TANH",
                         i, (int)activations[i]);
            return -1;
        }
    }
    if (init != NN_INIT_XAVIER && init != NN_INIT_HE) {
        ag_set_error("nn_mlp_new: invalid init %d; use NN_INIT_XAVIER or NN_INIT_HE",
                     (int)init);
        return -1;
    }
    return 0;
}

/* Creates layer l (1-based) and hands its tensors to mlp->params. */
static int add_layer(nn_mlp *mlp, int l, ag_dtype dtype, size_t in, size_t out,
                     nn_activation activation, nn_init init, ag_rng *rng)
{
    nn_dense *layer = &mlp->layers[l - 1];
    char name_w[32];
    char name_b[32];

    if (nn_dense_init(layer, dtype, in, out, activation, init, rng) != 0)
        return -1;

    snprintf(name_w, sizeof name_w, "layer%d.W", l);
    snprintf(name_b, sizeof name_b, "layer%d.b", l);
    if (nn_params_add(mlp->params, name_w, layer->w) != 0) {
        nn_dense_free(layer);
        return -1;
    }
    if (nn_params_add(mlp->params, name_b, layer->b) != 0) {
        ag_tensor_free(layer->b); /* W already belongs to the params */
        layer->b = NULL;
        return -1;
    }
    return 0;
}

nn_mlp *nn_mlp_new(ag_dtype dtype, int n_layers, const size_t *widths,
                   const nn_activation *activations, nn_init init, uint64_t seed)
{
    if (check_mlp_arguments(dtype, n_layers, widths, activations, init) != 0)
        return NULL;

    nn_mlp *mlp = ag_calloc(1, sizeof *mlp);
    if (mlp == NULL) {
        ag_set_error("nn_mlp_new: out of memory");
        return NULL;
    }
    mlp->n_layers = n_layers;
    mlp->layers = ag_calloc((size_t)n_layers, sizeof *mlp->layers);
    mlp->params = nn_params_new();
    if (mlp->layers == NULL || mlp->params == NULL) {
        nn_mlp_free(mlp);
        ag_set_error("nn_mlp_new: out of memory");
        return NULL;
    }

    ag_rng rng = ag_rng_new(seed);
    for (int l = 1; l <= n_layers; l++) {
        if (add_layer(mlp, l, dtype, widths[l - 1], widths[l], activations[l - 1],
                      init, &rng) != 0) {
            nn_mlp_free(mlp);
            return NULL;
        }
    }
    return mlp;
}

void nn_mlp_free(nn_mlp *mlp)
{
    if (mlp == NULL)
        return;
    nn_params_free(mlp->params);
    ag_free(mlp->layers);
    ag_free(mlp);
}

ag_tensor *nn_mlp_forward(ag_tape *tape, nn_mlp *mlp, ag_tensor *x)
{
    if (x == NULL)
        return NULL;
    if (mlp == NULL) {
        ag_set_error("nn_mlp_forward: mlp is NULL; create it with nn_mlp_new");
        return NULL;
    }

    ag_tensor *z = x;
    for (int l = 0; l < mlp->n_layers; l++) {
        z = nn_dense_forward(tape, &mlp->layers[l], z);
        if (z == NULL) {
            /* Prefix the op's message with the layer, which it cannot know. */
            char message[512];
            const char *cause = ag_error();
            snprintf(message, sizeof message, "%s", cause == NULL ? "" : cause);
            ag_set_error("nn_mlp_forward: layer %d failed: %s", l + 1, message);
            return NULL;
        }
    }
    return z;
}

nn_params *nn_mlp_params(nn_mlp *mlp)
{
    return mlp == NULL ? NULL : mlp->params;
}

int nn_mlp_n_layers(const nn_mlp *mlp)
{
    return mlp == NULL ? 0 : mlp->n_layers;
}

const nn_dense *nn_mlp_layer(const nn_mlp *mlp, int i)
{
    if (mlp == NULL || i < 0 || i >= mlp->n_layers) {
        ag_set_error("nn_mlp_layer: layer index %d is out of range for %d layers",
                     i, nn_mlp_n_layers(mlp));
        return NULL;
    }
    return &mlp->layers[i];
}
