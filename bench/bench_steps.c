/*
 * Training-step workloads: small MLPs trained by SGD on one fixed batch, and
 * cblas_sgemm alone on the matrix products of the largest one. A step is
 * what a training loop does per batch: zero the gradients, reset the tape,
 * run the forward pass and the loss, backward, and update the parameters.
 */
#include <stdio.h>

#ifdef AG_HAVE_CBLAS
#include <cblas.h>
#endif

#include "workloads.h"

#define MAX_REPS 1000

typedef enum loss_kind { LOSS_MSE, LOSS_BCE, LOSS_CROSS_ENTROPY } loss_kind;

/* A model, its loss and the SGD settings of one workload. */
typedef struct train_task {
    const char *name;
    int n_layers;
    size_t widths[4];
    nn_activation activations[3];
    loss_kind loss;
    size_t batch;
    double lr;
} train_task;

static const train_task regression_task = {
    .name = "regression",
    .n_layers = 3,
    .widths = {1, 20, 20, 1},
    .activations = {NN_RELU, NN_RELU, NN_IDENTITY},
    .loss = LOSS_MSE,
    .batch = 64,
    .lr = 0.01,
};

static const train_task classifier_task = {
    .name = "classifier",
    .n_layers = 2,
    .widths = {30, 16, 1},
    .activations = {NN_RELU, NN_SIGMOID},
    .loss = LOSS_BCE,
    .batch = 32,
    .lr = 0.1,
};

static const train_task mlp_task = {
    .name = "mlp",
    .n_layers = 3,
    .widths = {784, 256, 128, 10},
    .activations = {NN_RELU, NN_RELU, NN_IDENTITY},
    .loss = LOSS_CROSS_ENTROPY,
    .batch = 128,
    .lr = 0.01,
};

typedef struct train_state {
    const train_task *task;
    ag_tape *tape;
    nn_mlp *mlp;
    nn_optimizer *opt;
    ag_tensor *x; /* batch x inputs, no gradient */
    ag_tensor *y; /* targets: batch x 1, or batch class indices */
} train_state;

static void train_state_free(train_state *s)
{
    nn_optimizer_free(s->opt);
    nn_mlp_free(s->mlp);
    ag_tape_free(s->tape);
    ag_tensor_free(s->x);
    ag_tensor_free(s->y);
}

/* Makes the model, the optimizer and one batch of random data. */
static int train_state_init(train_state *s, const train_task *task)
{
    const size_t inputs = task->widths[0];
    ag_rng rng = ag_rng_new(42);

    *s = (train_state){.task = task};
    s->tape = ag_tape_new();
    s->mlp = nn_mlp_new(AG_F32, task->n_layers, task->widths, task->activations,
                        NN_INIT_HE, 1);
    s->x = ag_zeros(NULL, AG_F32, AG_SHAPE(task->batch, inputs));
    if (task->loss == LOSS_CROSS_ENTROPY)
        s->y = ag_zeros(NULL, AG_F32, AG_SHAPE(task->batch));
    else
        s->y = ag_zeros(NULL, AG_F32, AG_SHAPE(task->batch, 1));
    if (s->tape == NULL || s->mlp == NULL || s->x == NULL || s->y == NULL)
        return bench_fail(task->name);

    s->opt = nn_sgd_new(nn_mlp_params(s->mlp), nn_sgd_defaults(task->lr));
    if (s->opt == NULL)
        return bench_fail(task->name);

    bench_fill_uniform(s->x, -1.0, 1.0, &rng);
    for (size_t r = 0; r < task->batch; r++) {
        double first = ag_tensor_get(s->x, r * inputs);

        /* Targets: a smooth function, a linear rule, or random classes. */
        if (task->loss == LOSS_MSE)
            ag_tensor_set(s->y, r, first * first - 0.5);
        else if (task->loss == LOSS_BCE)
            ag_tensor_set(s->y, r, first > 0 ? 1.0 : 0.0);
        else
            ag_tensor_set(s->y, r, (double)ag_rng_below(&rng, task->widths[task->n_layers]));
    }
    return 0;
}

static int train_step(void *context)
{
    train_state *s = context;
    ag_tensor *loss;

    ag_tape_reset(s->tape);
    nn_optimizer_zero_grad(s->opt);
    ag_tensor *out = nn_mlp_forward(s->tape, s->mlp, s->x);
    switch (s->task->loss) {
    case LOSS_MSE:
        loss = nn_mse_loss(s->tape, out, s->y);
        break;
    case LOSS_BCE:
        loss = nn_bce_loss(s->tape, out, s->y);
        break;
    default:
        loss = nn_cross_entropy_loss(s->tape, out, s->y);
        break;
    }
    if (loss == NULL || ag_backward(s->tape, loss, NULL) != 0 ||
        nn_optimizer_step(s->opt) != 0)
        return bench_fail(s->task->name);
    return 0;
}

/* Multiply-adds of the matrix products of one training step: every layer's
 * forward product and weight gradient, and the input gradient of every layer
 * but the first (the data batch needs none). */
static double step_madds(const train_task *task)
{
    double madds = 0;

    for (int l = 0; l < task->n_layers; l++) {
        double product = (double)task->batch * (double)task->widths[l] *
                         (double)task->widths[l + 1];

        madds += (l == 0 ? 2.0 : 3.0) * product;
    }
    return madds;
}

static int run_task(const train_task *task, const bench_options *options)
{
    train_state s;
    double samples[MAX_REPS];
    size_t allocations = 0;
    int reps = options->reps < MAX_REPS ? options->reps : MAX_REPS;
    int rc = train_state_init(&s, task);

    if (rc == 0)
        rc = bench_time_steps(train_step, &s, reps, samples, &allocations);
    if (rc == 0) {
        char extra[96];

        for (int r = 0; r < reps; r++)
            samples[r] *= 1e6;
        snprintf(extra, sizeof extra,
                 "\"allocations\": %zu, \"flops_per_step\": %.0f", allocations,
                 2.0 * step_madds(task));
        bench_report(task->name, options->threads, "us/step", samples, reps, extra);
    }
    train_state_free(&s);
    return rc;
}

int bench_regression(const bench_options *options)
{
    return run_task(&regression_task, options);
}

int bench_classifier(const bench_options *options)
{
    return run_task(&classifier_task, options);
}

int bench_mlp(const bench_options *options)
{
    return run_task(&mlp_task, options);
}

/* ---- cblas_sgemm alone ---------------------------------------------------- */

#ifdef AG_HAVE_CBLAS

/* One product C = op(A) op(B) with op(A) m x k and op(B) k x n, row-major. */
typedef struct gemm_shape {
    bool trans_a;
    bool trans_b;
    int m;
    int n;
    int k;
} gemm_shape;

#define N_MLP_PRODUCTS 8

typedef struct sgemm_state {
    gemm_shape shapes[N_MLP_PRODUCTS];
    float *a;
    float *b;
    float *c;
} sgemm_state;

/* The products of one step of the 784-256-128-10 MLP at batch B, with the
 * transpose flags tapegrad passes: S = xW, dW = x^T dS, dx = dS W^T. */
static void mlp_products(gemm_shape *shapes, int batch)
{
    const int w[4] = {784, 256, 128, 10};
    int n = 0;

    for (int l = 0; l < 3; l++)
        shapes[n++] = (gemm_shape){false, false, batch, w[l + 1], w[l]};
    for (int l = 2; l >= 0; l--) {
        shapes[n++] = (gemm_shape){true, false, w[l], w[l + 1], batch};
        if (l > 0)
            shapes[n++] = (gemm_shape){false, true, batch, w[l], w[l + 1]};
    }
}

static int sgemm_step(void *context)
{
    sgemm_state *s = context;

    for (int i = 0; i < N_MLP_PRODUCTS; i++) {
        const gemm_shape *g = &s->shapes[i];
        /* Leading dimensions of the operands as stored (row-major). */
        int lda = g->trans_a ? g->m : g->k;
        int ldb = g->trans_b ? g->k : g->n;

        cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans,
                    g->trans_b ? CblasTrans : CblasNoTrans, g->m, g->n, g->k, 1.0f,
                    s->a, lda, s->b, ldb, 0.0f, s->c, g->n);
    }
    return 0;
}

int bench_sgemm(const bench_options *options)
{
    /* Buffers large enough for every operand: at most 784 x 256 floats. */
    const size_t elements = 784 * 256;
    double samples[MAX_REPS];
    size_t allocations = 0;
    int reps = options->reps < MAX_REPS ? options->reps : MAX_REPS;
    sgemm_state s;
    ag_rng rng = ag_rng_new(7);

    mlp_products(s.shapes, (int)mlp_task.batch);
    ag_tensor *a = ag_zeros(NULL, AG_F32, AG_SHAPE(elements));
    ag_tensor *b = ag_zeros(NULL, AG_F32, AG_SHAPE(elements));
    ag_tensor *c = ag_zeros(NULL, AG_F32, AG_SHAPE(elements));
    int rc = a == NULL || b == NULL || c == NULL ? bench_fail("sgemm") : 0;

    if (rc == 0) {
        bench_fill_uniform(a, -1.0, 1.0, &rng);
        bench_fill_uniform(b, -1.0, 1.0, &rng);
        s.a = ag_tensor_f32(a);
        s.b = ag_tensor_f32(b);
        s.c = ag_tensor_f32(c);
        rc = bench_time_steps(sgemm_step, &s, reps, samples, &allocations);
    }
    if (rc == 0) {
        char extra[64];

        for (int r = 0; r < reps; r++)
            samples[r] *= 1e6;
        snprintf(extra, sizeof extra, "\"flops_per_step\": %.0f", 2.0 * step_madds(&mlp_task));
        bench_report("sgemm", options->threads, "us/step", samples, reps, extra);
    }
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_tensor_free(c);
    return rc;
}

#else

int bench_sgemm(const bench_options *options)
{
    (void)options;
    fprintf(stderr, "tapegrad_bench: sgemm: this build has no OpenBLAS "
                    "(configured with -Dblas=disabled); skipping\n");
    return 0;
}

#endif
