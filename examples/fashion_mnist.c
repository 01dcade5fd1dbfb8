/*
 * Trains a 784-256-128-10 ReLU MLP on Fashion-MNIST with softmax
 * cross-entropy and Adam, in f32 mini-batches, and evaluates it on the
 * 10,000 test images after each epoch. Saves the model as safetensors and
 * can evaluate a saved model (--eval FILE).
 *
 * Data: Debian's dataset-fashion-mnist package, gzip-compressed IDX files
 * in /usr/share/datasets/fashion-mnist (or --data DIR).
 */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

#define DEFAULT_DATA_DIR "/usr/share/datasets/fashion-mnist"
#define N_CLASSES 10
#define EVAL_BATCH 1000

static const char *const class_names[N_CLASSES] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
};

typedef struct options {
    const char *data_dir;
    const char *out_dir;
    const char *model_path; /* NULL: OUT/fashion_mnist.safetensors */
    const char *eval_path;  /* evaluate this model instead of training */
    int epochs;
    size_t batch;
    double lr;
    uint64_t seed;
    int threads;
} options;

typedef struct dataset {
    ag_tensor *train_images; /* 60000 x 784, pixels in [0, 1] */
    ag_tensor *train_labels; /* 60000 */
    ag_tensor *test_images;  /* 10000 x 784 */
    ag_tensor *test_labels;  /* 10000 */
} dataset;

/* ---- command line --------------------------------------------------------- */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: fashion_mnist [options]\n"
            "Trains a 784-256-128-10 ReLU MLP on Fashion-MNIST with Adam and prints\n"
            "the test accuracy after each epoch; ends with `test accuracy: 0.XXXX`.\n"
            "\n"
            "  --epochs N     passes over the 60,000 training images (default 15)\n"
            "  --batch N      images per mini-batch (default 128)\n"
            "  --lr X         Adam's initial learning rate, annealed by a cosine\n"
            "                 schedule to 0 over the epochs (default 0.002)\n"
            "  --seed N       seed of the weight initialisation and shuffling (default 1)\n"
            "  --threads N    OpenBLAS threads (default: OpenBLAS's choice)\n"
            "  --data DIR     directory of the IDX files (default %s)\n"
            "  --out DIR      directory for the model, history and plot (default %s)\n"
            "  --model FILE   where to save the model (default OUT/fashion_mnist.safetensors)\n"
            "  --eval FILE    evaluate a saved model on the test set instead of training\n"
            "  --help         print this help\n",
            DEFAULT_DATA_DIR, EX_DEFAULT_OUT);
}

static bool parse_count(const char *text, long min, long *value)
{
    char *end;
    long v = strtol(text, &end, 10);

    if (end == text || *end != '\0' || v < min)
        return false;
    *value = v;
    return true;
}

/* Parses the command line into *opts. Returns 0 to go on, 1 after --help, or
 * -1 after printing the invalid option. */
static int parse_options(int argc, char **argv, options *opts)
{
    static const struct option long_options[] = {
        {"epochs", required_argument, NULL, 'e'}, {"batch", required_argument, NULL, 'b'},
        {"lr", required_argument, NULL, 'l'},     {"seed", required_argument, NULL, 's'},
        {"threads", required_argument, NULL, 't'}, {"data", required_argument, NULL, 'd'},
        {"out", required_argument, NULL, 'o'},    {"model", required_argument, NULL, 'm'},
        {"eval", required_argument, NULL, 'v'},   {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    int index = 0;
    long value;

    while ((c = getopt_long(argc, argv, "", long_options, &index)) != -1) {
        switch (c) {
        case 'e':
            if (!parse_count(optarg, 1, &value) || value > 100000)
                goto invalid;
            opts->epochs = (int)value;
            break;
        case 'b':
            if (!parse_count(optarg, 1, &value))
                goto invalid;
            opts->batch = (size_t)value;
            break;
        case 'l': {
            char *end;
            opts->lr = strtod(optarg, &end);
            if (end == optarg || *end != '\0' || !(opts->lr > 0))
                goto invalid;
            break;
        }
        case 's':
            if (!parse_count(optarg, 0, &value))
                goto invalid;
            opts->seed = (uint64_t)value;
            break;
        case 't':
            if (!parse_count(optarg, 1, &value) || value > 1024)
                goto invalid;
            opts->threads = (int)value;
            break;
        case 'd':
            opts->data_dir = optarg;
            break;
        case 'o':
            opts->out_dir = optarg;
            break;
        case 'm':
            opts->model_path = optarg;
            break;
        case 'v':
            opts->eval_path = optarg;
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "fashion_mnist: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return -1;
    }
    return 0;

invalid:
    fprintf(stderr, "fashion_mnist: invalid value \"%s\" for --%s; see --help\n", optarg,
            long_options[index].name);
    return -1;
}

/* ---- data ----------------------------------------------------------------- */

static const char *const data_files[4] = {
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
};

static void dataset_free(dataset *data)
{
    ag_tensor_free(data->train_images);
    ag_tensor_free(data->train_labels);
    ag_tensor_free(data->test_images);
    ag_tensor_free(data->test_labels);
}

/* Loads the four files. Returns 0, 1 when the data set is not installed, or
 * -1 on a load error; messages go to stderr. */
static int dataset_load(const char *dir, dataset *data)
{
    char paths[4][4096];

    for (int i = 0; i < 4; i++) {
        ex_join(paths[i], sizeof paths[i], dir, data_files[i]);
        if (access(paths[i], R_OK) != 0) {
            fprintf(stderr,
                    "fashion_mnist: the Fashion-MNIST data set is missing: %s not found.\n"
                    "Install it with:\n"
                    "    sudo apt-get install dataset-fashion-mnist\n"
                    "or pass --data DIR, a directory holding the four IDX files.\n",
                    paths[i]);
            return 1;
        }
    }

    data->train_images = nn_idx_load_images(paths[0], AG_F32);
    data->train_labels = nn_idx_load_labels(paths[1], AG_F32);
    data->test_images = nn_idx_load_images(paths[2], AG_F32);
    data->test_labels = nn_idx_load_labels(paths[3], AG_F32);
    if (data->train_images == NULL || data->train_labels == NULL ||
        data->test_images == NULL || data->test_labels == NULL) {
        ex_fail("fashion_mnist: loading the data failed");
        dataset_free(data);
        return -1;
    }
    if (ag_tensor_dim(data->train_images, 1) != 784 ||
        ag_tensor_dim(data->test_images, 1) != 784) {
        fprintf(stderr, "fashion_mnist: expected 28 x 28 images in %s\n", dir);
        dataset_free(data);
        return -1;
    }
    return 0;
}

/* ---- model ---------------------------------------------------------------- */

static nn_mlp *model_new(uint64_t seed)
{
    static const size_t widths[4] = {784, 256, 128, N_CLASSES};
    static const nn_activation activations[3] = {NN_RELU, NN_RELU, NN_IDENTITY};

    return nn_mlp_new(AG_F32, 3, widths, activations, NN_INIT_HE, seed);
}

/* Result of an evaluation pass. */
typedef struct evaluation {
    double loss;     /* mean cross-entropy */
    double accuracy; /* fraction of images classified correctly */
    size_t class_correct[N_CLASSES];
    size_t class_total[N_CLASSES];
} evaluation;

/* Evaluates the model on a data set in batches, with recording off. Returns
 * 0, or -1 with an error. */
static int evaluate(ag_tape *tape, nn_mlp *mlp, ag_tensor *images, ag_tensor *labels,
                    evaluation *result)
{
    nn_loader_options load = {.batch_size = EVAL_BATCH, .shuffle = false};
    nn_loader *loader = nn_loader_new(images, labels, &load);
    ag_tensor *x;
    ag_tensor *y;
    double loss_sum = 0.0;
    size_t correct = 0;
    int status;

    if (loader == NULL)
        return -1;
    memset(result, 0, sizeof *result);

    bool was_recording = ag_tape_set_recording(tape, false);
    ag_tape_reset(tape);
    while ((status = nn_loader_next(loader, tape, &x, &y)) == 1) {
        ag_tensor *logits = nn_mlp_forward(tape, mlp, x);
        ag_tensor *batch_loss = nn_cross_entropy_loss(tape, logits, y);
        size_t rows = ag_tensor_dim(x, 0);

        if (batch_loss == NULL) {
            status = -1;
            break;
        }
        loss_sum += ag_tensor_item(batch_loss) * (double)rows;
        for (size_t r = 0; r < rows; r++) {
            size_t label = (size_t)ag_tensor_get(y, r);

            result->class_total[label]++;
            if (ex_argmax_row(logits, r) == label) {
                result->class_correct[label]++;
                correct++;
            }
        }
        ag_tape_reset(tape);
    }
    ag_tape_set_recording(tape, was_recording);
    nn_loader_free(loader);
    if (status < 0)
        return -1;

    size_t n = ag_tensor_dim(images, 0);
    result->loss = loss_sum / (double)n;
    result->accuracy = (double)correct / (double)n;
    return 0;
}

static void print_class_accuracy(const evaluation *result)
{
    printf("per-class test accuracy:\n");
    for (int c = 0; c < N_CLASSES; c++) {
        double fraction = result->class_total[c] == 0
                              ? 0.0
                              : (double)result->class_correct[c] / (double)result->class_total[c];
        printf("  %-12s %.4f\n", class_names[c], fraction);
    }
}

/* ---- training ------------------------------------------------------------- */

/* Per-epoch numbers for the history table. */
typedef struct epoch_stats {
    double train_loss;
    double train_accuracy;
    double test_loss;
    double test_accuracy;
    double seconds;
} epoch_stats;

/* Runs one epoch of mini-batch Adam. Before each step the learning rate
 * follows a cosine from base_lr down to 0 over `total_steps` steps. The loss
 * is averaged over batches weighted by their size, and the training accuracy
 * is that of the logits before each update. Returns 0, or -1 with an
 * error. */
static int train_epoch(ag_tape *tape, nn_mlp *mlp, nn_optimizer *opt, nn_loader *loader,
                       double base_lr, int total_steps, int epoch, int epochs,
                       epoch_stats *stats)
{
    size_t n_batches = nn_loader_batch_count(loader);
    size_t n_samples = nn_loader_sample_count(loader);
    size_t batch_index = 0;
    size_t seen = 0;
    size_t correct = 0;
    double loss_sum = 0.0;
    double start = ex_now();
    char label[32];
    char status_text[96];
    ag_tensor *x;
    ag_tensor *y;
    int status;

    snprintf(label, sizeof label, "epoch %d/%d", epoch + 1, epochs);
    nn_loader_reset(loader);
    ag_tape_reset(tape);
    while ((status = nn_loader_next(loader, tape, &x, &y)) == 1) {
        ag_tensor *logits = nn_mlp_forward(tape, mlp, x);
        ag_tensor *loss = nn_cross_entropy_loss(tape, logits, y);
        size_t rows = ag_tensor_dim(x, 0);

        nn_optimizer_set_lr(opt, nn_lr_cosine(base_lr, 0.0, total_steps,
                                              (int)nn_optimizer_steps(opt)));
        nn_optimizer_zero_grad(opt);
        if (loss == NULL || ag_backward(tape, loss, NULL) != 0 || nn_optimizer_step(opt) != 0)
            return -1;

        loss_sum += ag_tensor_item(loss) * (double)rows;
        ex_count_correct(logits, y, &correct);
        seen += rows;
        batch_index++;

        /* Redraw about 100 times an epoch. */
        if (batch_index % (n_batches / 100 + 1) == 0 || batch_index == n_batches) {
            double elapsed = ex_now() - start;
            snprintf(status_text, sizeof status_text, "loss %.4f  %.0f samples/s",
                     loss_sum / (double)seen, (double)seen / (elapsed > 0 ? elapsed : 1e-9));
            ex_progress(label, seen, n_samples, status_text);
        }
        ag_tape_reset(tape);
    }
    if (status < 0)
        return -1;

    stats->train_loss = loss_sum / (double)seen;
    stats->train_accuracy = (double)correct / (double)seen;
    stats->seconds = ex_now() - start;
    return 0;
}

/* Writes the history table and draws the learning curves. */
static int write_history(const char *out_dir, const epoch_stats *history, int epochs)
{
    char path[4096];
    FILE *f = fopen(ex_join(path, sizeof path, out_dir, "fashion_mnist_history.csv"), "w");

    if (f == NULL) {
        perror(path);
        return -1;
    }
    fprintf(f, "epoch,train_loss,train_accuracy,test_loss,test_accuracy,seconds\n");
    for (int e = 0; e < epochs; e++) {
        fprintf(f, "%d,%.6f,%.6f,%.6f,%.6f,%.3f\n", e + 1, history[e].train_loss,
                history[e].train_accuracy, history[e].test_loss, history[e].test_accuracy,
                history[e].seconds);
    }
    if (fclose(f) != 0) {
        perror(path);
        return -1;
    }
    printf("history: %s\n", path);

    char script[16384];
    snprintf(script, sizeof script,
             "set terminal pngcairo noenhanced size 900,450\n"
             "set output '%s/fashion_mnist_history.png'\n"
             "set datafile separator ','\n"
             "set multiplot layout 1,2 title 'Fashion-MNIST, 784-256-128-10 MLP, Adam'\n"
             "set xlabel 'epoch'\n"
             "set xrange [0.5:%d.5]\n"
             "set ylabel 'cross-entropy'\n"
             "plot '%s' skip 1 using 1:2 with linespoints title 'train', \\\n"
             "     '' skip 1 using 1:4 with linespoints title 'test'\n"
             "set ylabel 'accuracy'\n"
             "set key bottom right\n"
             "plot '%s' skip 1 using 1:3 with linespoints title 'train', \\\n"
             "     '' skip 1 using 1:5 with linespoints title 'test'\n"
             "unset multiplot\n",
             out_dir, epochs, path, path);
    return ex_plot(out_dir, "fashion_mnist_history", script);
}

/* Trains, evaluating after each epoch, and saves the model. */
static int train(const options *opts, dataset *data, nn_mlp *mlp, ag_tape *tape)
{
    nn_params *params = nn_mlp_params(mlp);
    nn_adam_options adam = nn_adam_defaults();
    nn_loader_options load = {.batch_size = opts->batch, .shuffle = true, .seed = opts->seed};
    epoch_stats *history = calloc((size_t)opts->epochs, sizeof *history);
    nn_optimizer *opt = NULL;
    nn_loader *loader = NULL;
    evaluation test;
    int rc = 1;

    adam.lr = opts->lr;
    opt = nn_adam_new(params, adam);
    loader = nn_loader_new(data->train_images, data->train_labels, &load);
    if (history == NULL || opt == NULL || loader == NULL) {
        ex_fail("fashion_mnist: setting up training failed");
        goto done;
    }

    size_t steps = nn_loader_batch_count(loader) * (size_t)opts->epochs;
    if (steps > INT_MAX) {
        fprintf(stderr, "fashion_mnist: %zu steps are too many; use fewer epochs or "
                        "a larger batch\n", steps);
        goto done;
    }
    int total_steps = (int)steps;

    printf("training on %zu images, testing on %zu; %zu parameters; batch %zu, "
           "%d epochs, Adam lr %g with cosine decay, seed %llu\n",
           ag_tensor_dim(data->train_images, 0), ag_tensor_dim(data->test_images, 0),
           nn_params_numel(params), opts->batch, opts->epochs, opts->lr,
           (unsigned long long)opts->seed);
    printf("%5s %10s %9s %9s %9s %8s\n", "epoch", "train_loss", "train_acc", "test_loss",
           "test_acc", "seconds");
    fflush(stdout);

    double start = ex_now();
    for (int epoch = 0; epoch < opts->epochs; epoch++) {
        if (train_epoch(tape, mlp, opt, loader, opts->lr, total_steps, epoch, opts->epochs,
                        &history[epoch]) != 0 ||
            evaluate(tape, mlp, data->test_images, data->test_labels, &test) != 0) {
            ex_fail("fashion_mnist: training failed");
            goto done;
        }
        history[epoch].test_loss = test.loss;
        history[epoch].test_accuracy = test.accuracy;
        printf("%5d %10.4f %9.4f %9.4f %9.4f %8.1f\n", epoch + 1, history[epoch].train_loss,
               history[epoch].train_accuracy, test.loss, test.accuracy, history[epoch].seconds);
        fflush(stdout);
    }
    double total = ex_now() - start;

    char default_model[4096];
    const char *model_path = opts->model_path != NULL
                                 ? opts->model_path
                                 : ex_join(default_model, sizeof default_model, opts->out_dir,
                                           "fashion_mnist.safetensors");
    if (nn_params_save(params, model_path) != 0) {
        ex_fail("fashion_mnist: saving the model failed");
        goto done;
    }
    printf("trained in %.1f s; model saved to %s\n", total, model_path);
    /* A history that cannot be written or drawn does not undo the training. */
    write_history(opts->out_dir, history, opts->epochs);
    print_class_accuracy(&test);
    printf("test accuracy: %.4f\n", test.accuracy);
    rc = 0;

done:
    nn_loader_free(loader);
    nn_optimizer_free(opt);
    free(history);
    return rc;
}

/* Loads a saved model and evaluates it on the test set. */
static int evaluate_saved(const options *opts, dataset *data, nn_mlp *mlp, ag_tape *tape)
{
    evaluation test;

    if (nn_params_load(nn_mlp_params(mlp), opts->eval_path) != 0)
        return ex_fail("fashion_mnist: loading the model failed");
    if (evaluate(tape, mlp, data->test_images, data->test_labels, &test) != 0)
        return ex_fail("fashion_mnist: evaluation failed");

    printf("model %s on %zu test images: loss %.4f\n", opts->eval_path,
           ag_tensor_dim(data->test_images, 0), test.loss);
    print_class_accuracy(&test);
    printf("test accuracy: %.4f\n", test.accuracy);
    return 0;
}

int main(int argc, char **argv)
{
    options opts = {
        .data_dir = DEFAULT_DATA_DIR,
        .out_dir = EX_DEFAULT_OUT,
        .epochs = 15,
        .batch = 128,
        .lr = 2e-3,
        .seed = 1,
    };
    dataset data = {0};

    int parsed = parse_options(argc, argv, &opts);
    if (parsed != 0)
        return parsed > 0 ? 0 : 2;
    ex_set_threads(opts.threads);

    fprintf(stderr, "fashion_mnist: %s a 784-256-128-10 MLP on Fashion-MNIST (%s)\n",
            opts.eval_path != NULL ? "evaluating" : "training", opts.data_dir);
    int loaded = dataset_load(opts.data_dir, &data);
    if (loaded != 0)
        return 1;
    if (opts.eval_path == NULL && ex_make_dir(opts.out_dir) != 0) {
        dataset_free(&data);
        return 1;
    }

    nn_mlp *mlp = model_new(opts.seed);
    ag_tape *tape = ag_tape_new();
    int rc;

    if (mlp == NULL || tape == NULL)
        rc = ex_fail("fashion_mnist: creating the model failed");
    else if (opts.eval_path != NULL)
        rc = evaluate_saved(&opts, &data, mlp, tape);
    else
        rc = train(&opts, &data, mlp, tape);

    ag_tape_free(tape);
    nn_mlp_free(mlp);
    dataset_free(&data);
    return rc;
}
