/*
 * One Fashion-MNIST epoch with the settings of examples/fashion_mnist.c run
 * with --epochs 1. The model is a 784-256-128-10 ReLU MLP (He init, seed 1)
 * trained with softmax cross-entropy and Adam at lr 2e-3, which a cosine
 * anneals to 0 over the epoch's steps. Batches of 128 are shuffled with
 * seed 1, and the last partial batch is kept. The data is loaded before
 * timing, and the test accuracy is measured after the epoch.
 */
#include <stdio.h>

#include "workloads.h"

#define N_CLASSES 10
#define BATCH 128
#define LEARNING_RATE 2e-3
#define SEED 1
#define EVAL_BATCH 1000
#define WARMUP_STEPS 20

typedef struct dataset {
    ag_tensor *train_images; /* 60000 x 784, pixels in [0, 1] */
    ag_tensor *train_labels;
    ag_tensor *test_images; /* 10000 x 784 */
    ag_tensor *test_labels;
} dataset;

static void dataset_free(dataset *data)
{
    ag_tensor_free(data->train_images);
    ag_tensor_free(data->train_labels);
    ag_tensor_free(data->test_images);
    ag_tensor_free(data->test_labels);
}

static int dataset_load(const char *dir, dataset *data)
{
    static const char *const files[4] = {
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    };
    char paths[4][4096];

    for (int i = 0; i < 4; i++)
        snprintf(paths[i], sizeof paths[i], "%s/%s", dir, files[i]);
    data->train_images = nn_idx_load_images(paths[0], AG_F32);
    data->train_labels = nn_idx_load_labels(paths[1], AG_F32);
    data->test_images = nn_idx_load_images(paths[2], AG_F32);
    data->test_labels = nn_idx_load_labels(paths[3], AG_F32);
    if (data->train_images == NULL || data->train_labels == NULL ||
        data->test_images == NULL || data->test_labels == NULL) {
        bench_fail("epoch: loading Fashion-MNIST failed (install Debian's "
                   "dataset-fashion-mnist or pass --data DIR)");
        dataset_free(data);
        return -1;
    }
    return 0;
}

static nn_mlp *model_new(void)
{
    static const size_t widths[4] = {784, 256, 128, N_CLASSES};
    static const nn_activation activations[3] = {NN_RELU, NN_RELU, NN_IDENTITY};

    return nn_mlp_new(AG_F32, 3, widths, activations, NN_INIT_HE, SEED);
}

/* Runs up to max_steps steps (all batches of the epoch when max_steps < 0)
 * from the loader's next batch on. The learning rate follows the cosine over
 * total_steps before each step, as in the example. */
static int train_steps(ag_tape *tape, nn_mlp *mlp, nn_optimizer *opt, nn_loader *loader,
                       int total_steps, long max_steps)
{
    ag_tensor *x;
    ag_tensor *y;
    int status;

    for (long done = 0; max_steps < 0 || done < max_steps; done++) {
        ag_tape_reset(tape);
        status = nn_loader_next(loader, tape, &x, &y);
        if (status <= 0)
            return status;

        ag_tensor *logits = nn_mlp_forward(tape, mlp, x);
        ag_tensor *loss = nn_cross_entropy_loss(tape, logits, y);

        nn_optimizer_set_lr(opt, nn_lr_cosine(LEARNING_RATE, 0.0, total_steps,
                                              (int)nn_optimizer_steps(opt)));
        nn_optimizer_zero_grad(opt);
        if (loss == NULL || ag_backward(tape, loss, NULL) != 0 || nn_optimizer_step(opt) != 0)
            return -1;
    }
    return 0;
}

static size_t argmax_row(ag_tensor *logits, size_t r)
{
    const float *row = ag_tensor_f32(logits) + r * N_CLASSES;
    size_t best = 0;

    for (size_t c = 1; c < N_CLASSES; c++) {
        if (row[c] > row[best])
            best = c;
    }
    return best;
}

/* Returns the fraction of test images classified correctly, or -1. */
static double test_accuracy(ag_tape *tape, nn_mlp *mlp, const dataset *data)
{
    nn_loader_options load = {.batch_size = EVAL_BATCH, .shuffle = false};
    nn_loader *loader = nn_loader_new(data->test_images, data->test_labels, &load);
    size_t correct = 0;
    ag_tensor *x;
    ag_tensor *y;
    int status;

    if (loader == NULL)
        return -1;
    bool was_recording = ag_tape_set_recording(tape, false);
    ag_tape_reset(tape);
    while ((status = nn_loader_next(loader, tape, &x, &y)) == 1) {
        ag_tensor *logits = nn_mlp_forward(tape, mlp, x);

        if (logits == NULL) {
            status = -1;
            break;
        }
        for (size_t r = 0; r < ag_tensor_dim(x, 0); r++) {
            if (argmax_row(logits, r) == (size_t)ag_tensor_get(y, r))
                correct++;
        }
        ag_tape_reset(tape);
    }
    ag_tape_set_recording(tape, was_recording);
    nn_loader_free(loader);
    if (status < 0)
        return -1;
    return (double)correct / (double)ag_tensor_dim(data->test_images, 0);
}

/* Trains the throwaway model for a few steps: OpenBLAS starts its threads,
 * and the tape's arena grows to the size of a step. */
static int warm_up(ag_tape *tape, const dataset *data)
{
    nn_loader_options load = {.batch_size = BATCH, .shuffle = true, .seed = SEED + 1};
    nn_mlp *mlp = model_new();
    nn_optimizer *opt = mlp == NULL ? NULL : nn_adam_new(nn_mlp_params(mlp), nn_adam_defaults());
    nn_loader *loader = nn_loader_new(data->train_images, data->train_labels, &load);
    int rc = -1;

    if (mlp != NULL && opt != NULL && loader != NULL)
        rc = train_steps(tape, mlp, opt, loader, WARMUP_STEPS, WARMUP_STEPS);
    nn_loader_free(loader);
    nn_optimizer_free(opt);
    nn_mlp_free(mlp);
    return rc;
}

static int run_epoch(const bench_options *options, const dataset *data, ag_tape *tape)
{
    nn_adam_options adam = nn_adam_defaults();
    nn_loader_options load = {.batch_size = BATCH, .shuffle = true, .seed = SEED};
    nn_mlp *mlp = model_new();
    nn_optimizer *opt = NULL;
    nn_loader *loader = nn_loader_new(data->train_images, data->train_labels, &load);
    int rc = -1;

    adam.lr = LEARNING_RATE;
    if (mlp != NULL)
        opt = nn_adam_new(nn_mlp_params(mlp), adam);
    if (opt == NULL || loader == NULL) {
        bench_fail("epoch");
        goto done;
    }

    int total_steps = (int)nn_loader_batch_count(loader);
    size_t allocations_before = bench_allocations();
    double start = bench_now();
    if (train_steps(tape, mlp, opt, loader, total_steps, -1) != 0) {
        bench_fail("epoch");
        goto done;
    }
    double seconds = bench_now() - start;
    size_t allocations = bench_allocations() - allocations_before;

    double accuracy = test_accuracy(tape, mlp, data);
    if (accuracy < 0) {
        bench_fail("epoch: evaluation");
        goto done;
    }

    char extra[160];
    snprintf(extra, sizeof extra,
             "\"allocations\": %zu, \"steps\": %d, \"test_accuracy\": %.4f, "
             "\"max_rss_kib\": %ld",
             allocations, total_steps, accuracy, bench_max_rss_kib());
    bench_report("epoch", options->threads, "s", &seconds, 1, extra);
    rc = 0;

done:
    nn_loader_free(loader);
    nn_optimizer_free(opt);
    nn_mlp_free(mlp);
    return rc;
}

int bench_epoch(const bench_options *options)
{
    dataset data = {0};

    if (dataset_load(options->data_dir, &data) != 0)
        return -1;

    ag_tape *tape = ag_tape_new();
    int rc;
    if (tape == NULL)
        rc = bench_fail("epoch");
    else if (warm_up(tape, &data) != 0)
        rc = bench_fail("epoch: warm-up");
    else
        rc = run_epoch(options, &data, tape);

    ag_tape_free(tape);
    dataset_free(&data);
    return rc;
}
