/*
 * Binary classification on two classes of Fashion-MNIST (pullover against
 * coat by default): a 784-64-1 ReLU network whose single output is a logit
 * a, with p = sigmoid(a) the probability of the second class. Trained with
 * binary cross-entropy on the logits (the overflow-free form) by mini-batch
 * Adam; reports the test accuracy and the confusion matrix.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

#define DEFAULT_DATA_DIR "/usr/share/datasets/fashion-mnist"
#define N_CLASSES 10

static const char *const class_names[N_CLASSES] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
};

typedef struct options {
    const char *data_dir;
    int negative; /* class with target 0 */
    int positive; /* class with target 1 */
    int epochs;
    size_t batch;
    double lr;
    uint64_t seed;
} options;

/* A two-class subset: images (n x 784) and targets (n x 1) of 0 or 1. */
typedef struct binary_set {
    ag_tensor *images;
    ag_tensor *targets;
} binary_set;

static void binary_set_free(binary_set *set)
{
    ag_tensor_free(set->images);
    ag_tensor_free(set->targets);
}

/* Loads one split and keeps the images of the two classes. Returns 0, 1
 * when the data set is missing, or -1 on an error. */
static int load_subset(const options *opts, const char *split, binary_set *set)
{
    char images_path[4096];
    char labels_path[4096];
    char name[64];

    snprintf(name, sizeof name, "%s-images-idx3-ubyte.gz", split);
    ex_join(images_path, sizeof images_path, opts->data_dir, name);
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte.gz", split);
    ex_join(labels_path, sizeof labels_path, opts->data_dir, name);
    if (access(images_path, R_OK) != 0 || access(labels_path, R_OK) != 0) {
        fprintf(stderr,
                "binary_classifier: the Fashion-MNIST data set is missing: %s not found.\n"
                "Install it with:\n"
                "    sudo apt-get install dataset-fashion-mnist\n"
                "or pass --data DIR, a directory holding the IDX files.\n",
                access(images_path, R_OK) != 0 ? images_path : labels_path);
        return 1;
    }

    ag_tensor *images = nn_idx_load_images(images_path, AG_F32);
    ag_tensor *labels = nn_idx_load_labels(labels_path, AG_F32);
    size_t n = labels != NULL ? ag_tensor_numel(labels) : 0;
    size_t *rows = malloc((n > 0 ? n : 1) * sizeof *rows);
    size_t kept = 0;
    int rc = -1;

    if (images == NULL || labels == NULL || rows == NULL) {
        ex_fail("binary_classifier: loading the data failed");
        goto done;
    }

    /* Keep the rows of the two classes, in file order. */
    for (size_t i = 0; i < n; i++) {
        int label = (int)ag_tensor_get(labels, i);
        if (label == opts->negative || label == opts->positive)
            rows[kept++] = i;
    }

    set->images = nn_gather_rows(NULL, images, rows, kept);
    set->targets = ag_zeros(NULL, AG_F32, AG_SHAPE(kept, 1));
    if (set->images == NULL || set->targets == NULL) {
        ex_fail("binary_classifier: selecting the two classes failed");
        binary_set_free(set);
        goto done;
    }
    for (size_t i = 0; i < kept; i++) {
        bool positive = (int)ag_tensor_get(labels, rows[i]) == opts->positive;
        ag_tensor_set(set->targets, i, positive ? 1.0 : 0.0);
    }
    rc = 0;

done:
    free(rows);
    ag_tensor_free(images);
    ag_tensor_free(labels);
    return rc;
}

/* Counts of a 2 x 2 confusion matrix: [true class][predicted class]. */
typedef struct confusion {
    size_t counts[2][2];
    double loss; /* mean binary cross-entropy */
} confusion;

/* Evaluates with recording off: p >= 0.5, that is logit >= 0, predicts the
 * positive class. Returns 0, or -1 with an error. */
static int evaluate(ag_tape *tape, nn_mlp *mlp, const binary_set *set, confusion *result)
{
    nn_loader_options load = {.batch_size = 1000, .shuffle = false};
    nn_loader *loader = nn_loader_new(set->images, set->targets, &load);
    ag_tensor *x;
    ag_tensor *y;
    double loss_sum = 0.0;
    int status;

    if (loader == NULL)
        return -1;
    memset(result, 0, sizeof *result);

    bool was_recording = ag_tape_set_recording(tape, false);
    ag_tape_reset(tape);
    while ((status = nn_loader_next(loader, tape, &x, &y)) == 1) {
        ag_tensor *logits = nn_mlp_forward(tape, mlp, x);
        ag_tensor *loss = nn_bce_with_logits_loss(tape, logits, y);
        size_t rows = ag_tensor_dim(x, 0);

        if (loss == NULL) {
            status = -1;
            break;
        }
        loss_sum += ag_tensor_item(loss) * (double)rows;
        for (size_t r = 0; r < rows; r++) {
            int truth = ag_tensor_get(y, r) > 0.5;
            int predicted = ag_tensor_get(logits, r) >= 0.0;
            result->counts[truth][predicted]++;
        }
        ag_tape_reset(tape);
    }
    ag_tape_set_recording(tape, was_recording);
    nn_loader_free(loader);
    if (status < 0)
        return -1;

    result->loss = loss_sum / (double)ag_tensor_dim(set->images, 0);
    return 0;
}

static double confusion_accuracy(const confusion *c)
{
    size_t right = c->counts[0][0] + c->counts[1][1];
    size_t total = right + c->counts[0][1] + c->counts[1][0];

    return total == 0 ? 0.0 : (double)right / (double)total;
}

/* One epoch of mini-batch Adam on the logits' binary cross-entropy, with
 * the learning rate on a cosine from base_lr to 0 over total_steps. Returns
 * the mean training loss, or -1 with an error. */
static double train_epoch(ag_tape *tape, nn_mlp *mlp, nn_optimizer *opt, nn_loader *loader,
                          double base_lr, int total_steps, const char *label)
{
    size_t total = nn_loader_sample_count(loader);
    size_t seen = 0;
    double loss_sum = 0.0;
    double start = ex_now();
    char status_text[96];
    ag_tensor *x;
    ag_tensor *y;
    int status;

    nn_loader_reset(loader);
    ag_tape_reset(tape);
    while ((status = nn_loader_next(loader, tape, &x, &y)) == 1) {
        ag_tensor *loss = nn_bce_with_logits_loss(tape, nn_mlp_forward(tape, mlp, x), y);
        size_t rows = ag_tensor_dim(x, 0);

        nn_optimizer_set_lr(opt, nn_lr_cosine(base_lr, 0.0, total_steps,
                                              (int)nn_optimizer_steps(opt)));
        nn_optimizer_zero_grad(opt);
        if (loss == NULL || ag_backward(tape, loss, NULL) != 0 || nn_optimizer_step(opt) != 0)
            return -1;
        loss_sum += ag_tensor_item(loss) * (double)rows;
        seen += rows;

        double elapsed = ex_now() - start;
        snprintf(status_text, sizeof status_text, "loss %.4f  %.0f samples/s",
                 loss_sum / (double)seen, (double)seen / (elapsed > 0 ? elapsed : 1e-9));
        ex_progress(label, seen, total, status_text);
        ag_tape_reset(tape);
    }
    return status < 0 ? -1 : loss_sum / (double)seen;
}

/* Parses "A,B" into two different class indices. */
static bool parse_classes(const char *text, int *negative, int *positive)
{
    char *end;
    long a = strtol(text, &end, 10);

    if (end == text || *end != ',')
        return false;

    const char *second = end + 1;
    long b = strtol(second, &end, 10);
    if (end == second || *end != '\0')
        return false;
    if (a < 0 || a >= N_CLASSES || b < 0 || b >= N_CLASSES || a == b)
        return false;
    *negative = (int)a;
    *positive = (int)b;
    return true;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: binary_classifier [options]\n"
            "Trains a 784-64-1 ReLU network with a sigmoid output and binary\n"
            "cross-entropy to tell two Fashion-MNIST classes apart.\n"
            "  --classes A,B  class indices (0-9); B is the positive class (default 2,4:\n"
            "                 pullover against coat)\n"
            "  --epochs N     passes over the training images (default 10)\n"
            "  --batch N      images per mini-batch (default 64)\n"
            "  --lr X         Adam's initial learning rate, cosine-decayed to 0 (default 0.001)\n"
            "  --seed N       seed of the weights and the shuffling (default 1)\n"
            "  --data DIR     directory of the IDX files (default %s)\n"
            "classes: 0 T-shirt/top, 1 trouser, 2 pullover, 3 dress, 4 coat, 5 sandal,\n"
            "         6 shirt, 7 sneaker, 8 bag, 9 ankle boot\n",
            DEFAULT_DATA_DIR);
}

static int parse_options(int argc, char **argv, options *opts)
{
    static const struct option long_options[] = {
        {"classes", required_argument, NULL, 'c'}, {"epochs", required_argument, NULL, 'e'},
        {"batch", required_argument, NULL, 'b'},   {"lr", required_argument, NULL, 'l'},
        {"seed", required_argument, NULL, 's'},    {"data", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    int c;
    int index = 0;

    while ((c = getopt_long(argc, argv, "", long_options, &index)) != -1) {
        char *end = NULL;

        switch (c) {
        case 'c':
            if (!parse_classes(optarg, &opts->negative, &opts->positive))
                goto invalid;
            break;
        case 'e':
            opts->epochs = (int)strtol(optarg, &end, 10);
            if (*end != '\0' || opts->epochs < 1 || opts->epochs > 100000)
                goto invalid;
            break;
        case 'b': {
            long batch = strtol(optarg, &end, 10);
            if (*end != '\0' || batch < 1)
                goto invalid;
            opts->batch = (size_t)batch;
            break;
        }
        case 'l':
            opts->lr = strtod(optarg, &end);
            if (*end != '\0' || !(opts->lr > 0))
                goto invalid;
            break;
        case 's':
            opts->seed = strtoull(optarg, &end, 10);
            if (*end != '\0')
                goto invalid;
            break;
        case 'd':
            opts->data_dir = optarg;
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return -1;
        }
    }
    return 0;

invalid:
    fprintf(stderr, "binary_classifier: invalid value \"%s\" for --%s; see --help\n", optarg,
            long_options[index].name);
    return -1;
}

int main(int argc, char **argv)
{
    options opts = {
        .data_dir = DEFAULT_DATA_DIR,
        .negative = 2,
        .positive = 4,
        .epochs = 10,
        .batch = 64,
        .lr = 1e-3,
        .seed = 1,
    };
    static const size_t widths[3] = {784, 64, 1};
    static const nn_activation activations[2] = {NN_RELU, NN_IDENTITY};
    binary_set train_set = {0};
    binary_set test_set = {0};
    nn_mlp *mlp = NULL;
    nn_optimizer *opt = NULL;
    nn_loader *loader = NULL;
    ag_tape *tape = NULL;
    int rc = 1;

    int parsed = parse_options(argc, argv, &opts);
    if (parsed != 0)
        return parsed > 0 ? 0 : 2;

    fprintf(stderr, "binary_classifier: %s (0) against %s (1) from %s\n",
            class_names[opts.negative], class_names[opts.positive], opts.data_dir);
    int loaded = load_subset(&opts, "train", &train_set);
    if (loaded == 0)
        loaded = load_subset(&opts, "t10k", &test_set);
    if (loaded != 0)
        goto done;

    nn_adam_options adam = nn_adam_defaults();
    nn_loader_options load = {.batch_size = opts.batch, .shuffle = true, .seed = opts.seed};
    adam.lr = opts.lr;
    mlp = nn_mlp_new(AG_F32, 2, widths, activations, NN_INIT_HE, opts.seed);
    opt = mlp != NULL ? nn_adam_new(nn_mlp_params(mlp), adam) : NULL;
    loader = nn_loader_new(train_set.images, train_set.targets, &load);
    tape = ag_tape_new();
    if (opt == NULL || loader == NULL || tape == NULL) {
        ex_fail("binary_classifier: setup failed");
        goto done;
    }

    printf("%s (target 0) against %s (target 1): %zu training and %zu test images;\n"
           "784-64-1 ReLU network, sigmoid output, binary cross-entropy on the logits,\n"
           "Adam lr %g with cosine decay, batch %zu, %d epochs\n",
           class_names[opts.negative], class_names[opts.positive],
           ag_tensor_dim(train_set.images, 0), ag_tensor_dim(test_set.images, 0), opts.lr,
           opts.batch, opts.epochs);
    printf("%5s %10s %9s %9s\n", "epoch", "train_loss", "test_loss", "test_acc");

    /* Bounded by 100000 epochs of 12000 one-image batches; fits an int. */
    int total_steps = (int)(nn_loader_batch_count(loader) * (size_t)opts.epochs);

    confusion test;
    for (int epoch = 0; epoch < opts.epochs; epoch++) {
        char label[32];

        snprintf(label, sizeof label, "epoch %d/%d", epoch + 1, opts.epochs);
        double train_loss = train_epoch(tape, mlp, opt, loader, opts.lr, total_steps, label);
        if (train_loss < 0 || evaluate(tape, mlp, &test_set, &test) != 0) {
            ex_fail("binary_classifier: training failed");
            goto done;
        }
        printf("%5d %10.4f %9.4f %9.4f\n", epoch + 1, train_loss, test.loss,
               confusion_accuracy(&test));
        fflush(stdout);
    }

    printf("confusion matrix on the test set (rows: true class, columns: predicted):\n");
    printf("  %-12s %12s %12s\n", "", class_names[opts.negative], class_names[opts.positive]);
    for (int t = 0; t < 2; t++) {
        printf("  %-12s %12zu %12zu\n", class_names[t == 0 ? opts.negative : opts.positive],
               test.counts[t][0], test.counts[t][1]);
    }
    printf("test accuracy: %.4f\n", confusion_accuracy(&test));
    rc = 0;

done:
    ag_tape_free(tape);
    nn_loader_free(loader);
    nn_optimizer_free(opt);
    nn_mlp_free(mlp);
    binary_set_free(&train_set);
    binary_set_free(&test_set);
    return rc;
}
