/*
 * tapegrad nn: named parameters, dense layers, losses, optimizers and
 * safetensors checkpoints, built on the public autograd API only. A custom
 * layer or loss written by a user looks exactly like the ones here.
 *
 * Conventions (those of autograd.h):
 *  - Row vectors: a dense layer computes S = xW + b and Z = h(S), with x of
 *    shape batch x in, W of shape in x out and b of shape 1 x out.
 *  - Functions that build values take the tape first and return tensors on
 *    the tape's arena, valid until ag_tape_reset.
 *  - Errors are values: NULL or -1, with a message readable with ag_error()
 *    that names the function, the offending names, shapes or values, and
 *    the fix. A NULL tensor argument is taken as an earlier failure: the
 *    function returns NULL and keeps that failure's message.
 *  - The library frees only what it created or was explicitly handed
 *    (nn_params_add). nn objects and the tensors they hold are allocated
 *    through the allocator set by ag_set_allocator (ag_alloc, ag_free).
 */
#ifndef TAPEGRAD_NN_H
#define TAPEGRAD_NN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tapegrad/autograd.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Named parameters                                                          */
/* ------------------------------------------------------------------------ */

/* A set of heap tensors keyed by name, iterated in insertion order. It owns
 * its tensors and frees them with itself. */
typedef struct nn_params nn_params;

/* Maximum length of a parameter name, in bytes without the terminating NUL. */
#define NN_PARAM_NAME_MAX 255

/* Creates an empty set. Returns NULL with an error when out of memory. The
 * caller frees it with nn_params_free. */
nn_params *nn_params_new(void);

/* Frees the set and every tensor it owns. NULL is a no-op. */
void nn_params_free(nn_params *params);

/* Adds `t` under `name` and takes ownership of it: from then on the set
 * frees it. `t` must be a heap tensor (created with a NULL tape). The tensor
 * is marked as requiring a gradient and given `name` for traces (truncated
 * there to 31 bytes). Returns 0, or -1 with an error in these cases: the
 * name is empty, longer than NN_PARAM_NAME_MAX or already used; `t` is
 * already in the set; `t` lives on a tape, which would free it at its next
 * reset; or memory runs out. On failure the caller keeps ownership of `t`.
 * A NULL `t` returns -1 and keeps the earlier message, so
 * nn_params_add(p, "w", ag_zeros(NULL, ...)) reports the failed creation. */
int nn_params_add(nn_params *params, const char *name, ag_tensor *t);

/* Returns the tensor stored under `name`, or NULL (without setting an
 * error) when there is none. The set keeps ownership. */
ag_tensor *nn_params_get(const nn_params *params, const char *name);

/* Returns the number of tensors in the set. */
size_t nn_params_count(const nn_params *params);

/* Returns the i-th tensor in insertion order and, when `name` is not NULL,
 * stores its name there (valid as long as the set). Returns NULL with an
 * error when i is out of range. */
ag_tensor *nn_params_at(const nn_params *params, size_t i, const char **name);

/* Returns the total number of elements of all tensors in the set. */
size_t nn_params_numel(const nn_params *params);

/* Sets the gradient of every tensor in the set to zero. Gradients
 * accumulate over backward calls, so a training step calls this (or
 * nn_optimizer_zero_grad) before its backward pass. */
void nn_params_zero_grad(nn_params *params);

/* ------------------------------------------------------------------------ */
/* safetensors checkpoints                                                   */
/* ------------------------------------------------------------------------ */

/*
 * The safetensors format: an 8-byte little-endian unsigned header length N,
 * then N bytes of JSON
 *   {"NAME": {"dtype": "F32" or "F64", "shape": [d0, d1, ...],
 *             "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"KEY": "VALUE", ...}}
 * padded with spaces, then the tensors' raw little-endian bytes. Offsets
 * count from the start of the data section. A tapegrad scalar has shape (1);
 * a file's scalar of shape [] loads into a one-element parameter of shape (1).
 */

/* Writes every tensor of `params` to `path` in insertion order, contiguous
 * and in the tensor's own dtype, with no metadata. The file is first written
 * to PATH.tmp, flushed to disk with fsync and then renamed over `path`, so a
 * crash or a failed save leaves either the old file or the new one, never a
 * partial file. Returns 0, or -1 with an error naming the file and the
 * failing system call; PATH.tmp is removed on failure. */
int nn_params_save(const nn_params *params, const char *path);

/* Reads `path` into the tensors of `params`, matched by name. The whole file
 * is checked before any value is written. The header must be strict JSON in
 * the format above. Every tensor in the file must be in `params` and every
 * tensor in `params` in the file, with the same dtype and shape. The data
 * offsets must tile the data section exactly: no gap, no overlap, no
 * truncated or trailing data. Returns 0, or -1 with an error naming the
 * file and the problems (each mismatched tensor by name); on failure no
 * parameter is modified. Gradients are not touched. */
int nn_params_load(nn_params *params, const char *path);

/* ------------------------------------------------------------------------ */
/* Dense layers                                                              */
/* ------------------------------------------------------------------------ */

/* The activation h in Z = h(S). */
typedef enum nn_activation {
    NN_IDENTITY, /* h(s) = s; the usual choice for the output layer */
    NN_RELU,     /* h(s) = max(s, 0), h'(0) = 0 */
    NN_SIGMOID,  /* h(s) = 1 / (1 + exp(-s)) */
    NN_TANH,     /* h(s) = tanh(s) */
} nn_activation;

/* Weight initialisation. Biases always start at zero. */
typedef enum nn_init {
    NN_INIT_XAVIER, /* Glorot uniform: W ~ U(-a, a), a = sqrt(6 / (in + out)) */
    NN_INIT_HE,     /* He (Kaiming) normal: W ~ N(0, sd^2), sd = sqrt(2 / in) */
} nn_init;

/* Returns the name of an activation ("identity", "relu", "sigmoid",
 * "tanh"), or "invalid" for a value outside the enum. */
const char *nn_activation_name(nn_activation activation);

/* Applies h elementwise: returns h(x) on the tape, or NULL with an error for
 * an activation outside the enum. */
ag_tensor *nn_activate(ag_tape *tape, ag_tensor *x, nn_activation activation);

/* A fully connected layer Z = h(xW + b): W (in x out), b (1 x out). */
typedef struct nn_dense {
    ag_tensor *w;
    ag_tensor *b;
    nn_activation activation;
} nn_dense;

/* Fills the 2-D tensor `w` (in x out) with initial weights drawn from `rng`,
 * element by element in row-major order. Returns 0, or -1 with an error when
 * `w` is not 2-D or `init` is outside the enum. */
int nn_init_weights(ag_tensor *w, nn_init init, ag_rng *rng);

/* Creates W (in x out, initialised by `init` from `rng`) and b (1 x out,
 * zero) as heap tensors that require gradients, and stores them in *layer.
 * The caller owns both: free them with nn_dense_free, or hand them to
 * nn_params_add. Returns 0, or -1 with an error (zero width, invalid dtype,
 * activation or init, out of memory) leaving *layer zeroed. */
int nn_dense_init(nn_dense *layer, ag_dtype dtype, size_t in, size_t out,
                  nn_activation activation, nn_init init, ag_rng *rng);

/* Frees layer->w and layer->b and sets them to NULL. Only for a layer whose
 * tensors were not handed to an nn_params. NULL is a no-op. */
void nn_dense_free(nn_dense *layer);

/* Returns Z = h(xW + b) on the tape for x of shape (batch x in), computed
 * with ag_linear and nn_activate. Returns NULL with an error on a shape or
 * dtype mismatch. */
ag_tensor *nn_dense_forward(ag_tape *tape, const nn_dense *layer, ag_tensor *x);

/* ------------------------------------------------------------------------ */
/* Multilayer perceptron                                                     */
/* ------------------------------------------------------------------------ */

/* A stack of dense layers that owns its parameters. */
typedef struct nn_mlp nn_mlp;

/* Creates an MLP of n_layers dense layers. Layer l (counting from 1) maps
 * widths[l-1] inputs to widths[l] outputs and applies activations[l-1];
 * `widths` has n_layers + 1 entries, `activations` n_layers (the output
 * layer's is usually NN_IDENTITY). Weights are initialised by `init` from a
 * generator seeded with `seed`, layer by layer, so a seed gives the same
 * network on every machine. The parameters are named "layer1.W",
 * "layer1.b", "layer2.W", ... Returns NULL with an error when n_layers < 1,
 * an array is NULL, a width is 0, or dtype, an activation or init is
 * invalid. The caller frees the MLP with nn_mlp_free. */
nn_mlp *nn_mlp_new(ag_dtype dtype, int n_layers, const size_t *widths,
                   const nn_activation *activations, nn_init init, uint64_t seed);

/* Frees the MLP and its parameters. NULL is a no-op. */
void nn_mlp_free(nn_mlp *mlp);

/* Returns the output of the last layer for x of shape (batch x widths[0]):
 * a (batch x widths[n_layers]) tensor on the tape. Returns NULL with an error
 * naming the layer on a shape or dtype mismatch. */
ag_tensor *nn_mlp_forward(ag_tape *tape, nn_mlp *mlp, ag_tensor *x);

/* Returns the MLP's parameters, owned by the MLP (do not free them). Pass
 * them to an optimizer or to nn_params_save / nn_params_load. */
nn_params *nn_mlp_params(nn_mlp *mlp);

/* Returns the number of layers. */
int nn_mlp_n_layers(const nn_mlp *mlp);

/* Returns layer i (0-based), owned by the MLP, or NULL with an error when i
 * is out of range. */
const nn_dense *nn_mlp_layer(const nn_mlp *mlp, int i);

/* ------------------------------------------------------------------------ */
/* Losses                                                                    */
/* ------------------------------------------------------------------------ */

/*
 * Every loss returns a one-element tensor of shape (1) on the tape, recorded
 * so that ag_backward(tape, loss, NULL) fills the gradients. Prediction and
 * target must have the same dtype and exactly the same shape: losses do not
 * broadcast, so (N x 1) against (N) is an error. Below, N is the number of
 * elements of the prediction, f its elements and y the target's. The losses
 * that average (mse, bce, bce_with_logits, cross_entropy) reject an empty
 * prediction with an error, since their mean would be 0 / 0; the sums
 * (sum_of_squares, gaussian_nll) are 0 for it.
 */

/* Mean squared error: (1/N) sum_i (f_i - y_i)^2. */
ag_tensor *nn_mse_loss(ag_tape *tape, ag_tensor *pred, ag_tensor *target);

/* Sum of squares in the lecture's form: (1/2) sum_i (y_i - f_i)^2, so that
 * dL/df_i = f_i - y_i. */
ag_tensor *nn_sum_of_squares_loss(ag_tape *tape, ag_tensor *pred, ag_tensor *target);

/* Binary cross-entropy on probabilities p in [0, 1]:
 * -(1/N) sum_i [y_i max(log p_i, -100) + (1 - y_i) max(log(1 - p_i), -100)].
 * Clamping the logs at -100 (as PyTorch does) keeps the loss finite at
 * p = 0 and p = 1. The gradient is PyTorch's:
 * dL/dp_i = (p_i - y_i) / (N max(p_i (1 - p_i), 1e-12)), finite everywhere.
 * Returns NULL with an error naming the element when a probability is
 * outside [0, 1] or NaN. Prefer nn_bce_with_logits_loss on logits: it is
 * exact where this clamps. Its backward rule also has a form built from ops,
 * so ag_grad with create_graph differentiates it twice; the clamps have
 * derivative 0 where they hold. */
ag_tensor *nn_bce_loss(ag_tape *tape, ag_tensor *prob, ag_tensor *target);

/* Binary cross-entropy on logits a, in the overflow-free form
 * (1/N) sum_i [max(a_i, 0) - a_i y_i + log(1 + exp(-|a_i|))],
 * which equals the cross-entropy of sigmoid(a_i) against y_i. Its gradient
 * is (sigmoid(a_i) - y_i) / N. An infinite logit gives the limit: the term
 * is 0 for a = +inf, y = 1 and for a = -inf, y = 0, and +inf when the
 * target has weight on the other side (PyTorch 1.13 gives NaN for three of
 * those four cases). Computed by the op "nn_binary_cross_entropy_with_logits"
 * (registered on first use), whose backward rule also has a form built from
 * ops, so ag_grad with create_graph differentiates it twice. */
ag_tensor *nn_bce_with_logits_loss(ag_tape *tape, ag_tensor *logits, ag_tensor *target);

/* Softmax cross-entropy over classes:
 * (1/B) sum_r [-log_softmax(a_r)[c_r]] = (1/B) sum_r [logsumexp(a_r) - a_r,c_r]
 * for logits a of shape (B x C) and labels c of shape (B), a tensor of the
 * logits' dtype holding integer class indices in [0, C). The log-sum-exp is
 * taken from the max-shifted row, so logits of any size give a finite loss.
 * The gradient is (softmax(a_r) - onehot(c_r)) / B, computed by the fused op
 * "nn_softmax_cross_entropy" (registered with ag_op_register on first use);
 * labels get no gradient. A row containing +inf logits takes the limit in
 * which they grow together, where PyTorch 1.13 gives NaN. Its loss is log k
 * when the label is one of the k infinite logits and +inf otherwise, and its
 * softmax is 1/k on them. A row of all -inf has no limit and gives NaN.
 * Returns NULL with an error for an empty batch (B = 0), for a label that is
 * not an integer or is out of range (naming the row and value), and when the
 * dtypes differ. Its backward rule also has a form built from ops, so
 * ag_grad with create_graph differentiates it twice. */
ag_tensor *nn_cross_entropy_loss(ag_tape *tape, ag_tensor *logits, ag_tensor *labels);

/* Negative log-likelihood of y under N(f, sigma^2) for every element,
 * summed: (1/(2 sigma^2)) sum_i (y_i - f_i)^2 + (N/2) log(2 pi sigma^2).
 * `sigma` is a one-element tensor of the prediction's dtype (usually a
 * learnable parameter); the gradient reaches pred, target and sigma.
 * sigma = 0 gives an infinite loss. */
ag_tensor *nn_gaussian_nll_loss(ag_tape *tape, ag_tensor *pred, ag_tensor *target,
                                ag_tensor *sigma);

/* ------------------------------------------------------------------------ */
/* Optimizers                                                                */
/* ------------------------------------------------------------------------ */

/*
 * An optimizer updates the tensors of an nn_params in place from their
 * gradients (ag_tensor_grad), in each tensor's own dtype. It records nothing
 * on any tape and allocates nothing after creation: its state buffers are
 * allocated, zeroed, by the constructor. The parameter set is borrowed and
 * must outlive the optimizer; tensors added to it later are not updated (a
 * step then fails). A tensor without a gradient buffer is skipped.
 */
typedef struct nn_optimizer nn_optimizer;

/* Options of stochastic gradient descent, with PyTorch's torch.optim.SGD
 * update rule (g the gradient, p the parameter, t the step, counted from 1):
 *   g = g + weight_decay p
 *   if momentum != 0: buf = g at t = 1, else buf = momentum buf + (1 - dampening) g
 *                     g = nesterov ? g + momentum buf : buf
 *   p = p - lr g */
typedef struct nn_sgd_options {
    double lr;           /* learning rate, >= 0 */
    double momentum;     /* >= 0; 0 turns momentum off */
    double dampening;    /* >= 0 */
    bool nesterov;       /* needs momentum > 0 and dampening == 0 */
    double weight_decay; /* L2 penalty added to the gradient, >= 0 */
} nn_sgd_options;

/* Returns SGD options with learning rate `lr` and everything else off. */
nn_sgd_options nn_sgd_defaults(double lr);

/* Options of Adam and AdamW, with PyTorch's torch.optim.Adam / AdamW update
 * rule (amsgrad off):
 *   Adam:  g = g + weight_decay p        AdamW: p = p (1 - lr weight_decay)
 *   m = beta1 m + (1 - beta1) g
 *   v = beta2 v + (1 - beta2) g^2
 *   p = p - (lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 * A zero gradient leaves m = v = 0 and the parameter unchanged, apart from
 * AdamW's decay, with no NaN even for eps = 0 (where PyTorch 1.13 gives
 * 0 / 0 = NaN): an element with m = 0 takes no step. */
typedef struct nn_adam_options {
    double lr;           /* learning rate, >= 0 */
    double beta1;        /* decay of the first moment, in [0, 1) */
    double beta2;        /* decay of the second moment, in [0, 1) */
    double eps;          /* added to the denominator, >= 0 */
    double weight_decay; /* >= 0; an L2 term for Adam, decoupled for AdamW */
    bool decoupled;      /* true: AdamW's decoupled weight decay */
} nn_adam_options;

/* Returns PyTorch's Adam defaults: lr 1e-3, betas 0.9 and 0.999, eps 1e-8,
 * weight_decay 0. */
nn_adam_options nn_adam_defaults(void);

/* Returns PyTorch's AdamW defaults: those of Adam with weight_decay 1e-2 and
 * decoupled set. */
nn_adam_options nn_adamw_defaults(void);

/* Creates an SGD optimizer over `params` (borrowed). Returns NULL with an
 * error on invalid options or when out of memory. Free with
 * nn_optimizer_free. */
nn_optimizer *nn_sgd_new(nn_params *params, nn_sgd_options options);

/* Creates an Adam optimizer (AdamW when options.decoupled is set) over
 * `params` (borrowed). Returns NULL with an error on invalid options or when
 * out of memory. Free with nn_optimizer_free. */
nn_optimizer *nn_adam_new(nn_params *params, nn_adam_options options);

/* Same as nn_adam_new with options.decoupled forced on. */
nn_optimizer *nn_adamw_new(nn_params *params, nn_adam_options options);

/* Frees the optimizer and its state; the parameters are not touched. NULL is
 * a no-op. */
void nn_optimizer_free(nn_optimizer *opt);

/* Updates every parameter once from its current gradient. Returns 0, or -1
 * with an error (no parameter is changed) when the parameter set changed
 * since the optimizer was created. */
int nn_optimizer_step(nn_optimizer *opt);

/* Sets the gradient of every parameter to zero. */
void nn_optimizer_zero_grad(nn_optimizer *opt);

/* Sets the learning rate used by the following steps (for schedules). The
 * value is used as given: unlike the constructors, this does not check it. */
void nn_optimizer_set_lr(nn_optimizer *opt, double lr);

/* Returns the current learning rate. */
double nn_optimizer_lr(const nn_optimizer *opt);

/* Returns the number of steps taken. */
uint64_t nn_optimizer_steps(const nn_optimizer *opt);

/* Learning-rate schedules, as functions of the epoch (counted from 0), for
 * nn_optimizer_set_lr. */

/* Step decay: base_lr * gamma^floor(epoch / step_size). Returns NaN with an
 * error when step_size <= 0 or epoch < 0. */
double nn_lr_step_decay(double base_lr, double gamma, int step_size, int epoch);

/* Cosine annealing, PyTorch's CosineAnnealingLR closed form:
 * eta_min + (base_lr - eta_min) (1 + cos(pi epoch / t_max)) / 2. The value
 * falls from base_lr at epoch 0 to eta_min at epoch t_max and, past t_max,
 * rises again along the same cosine. Returns NaN with an error when
 * t_max <= 0 or epoch < 0. */
double nn_lr_cosine(double base_lr, double eta_min, int t_max, int epoch);

#ifdef __cplusplus
}
#endif

/* Data loading (IDX, CSV, batches) comes with the same header. */
#include "tapegrad/nn_data.h"

#endif /* TAPEGRAD_NN_H */
