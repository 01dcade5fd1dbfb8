/*
 * Nonlinear regression with two hidden layers of 20 ReLU units and a linear
 * output: fits noisy samples y = sin(2x) + 0.3 x + noise of a smooth
 * function on [-3, 3] by full-batch Adam on the mean squared error, then
 * plots the data, the true function and the fit.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"

#define X_MIN -3.0
#define X_MAX 3.0
#define N_GRID 301

typedef struct options {
    const char *out_dir;
    int points;
    double noise;
    int steps;
    double lr;
    uint64_t seed;
} options;

static double truth(double x)
{
    return sin(2.0 * x) + 0.3 * x;
}

static int parse_options(int argc, char **argv, options *opts)
{
    static const struct option long_options[] = {
        {"out", required_argument, NULL, 'o'},   {"points", required_argument, NULL, 'p'},
        {"noise", required_argument, NULL, 'z'}, {"steps", required_argument, NULL, 'n'},
        {"lr", required_argument, NULL, 'l'},    {"seed", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0},
    };
    int c;
    int index = 0;

    while ((c = getopt_long(argc, argv, "", long_options, &index)) != -1) {
        char *end = NULL;

        switch (c) {
        case 'o':
            opts->out_dir = optarg;
            break;
        case 'p':
            opts->points = (int)strtol(optarg, &end, 10);
            if (*end != '\0' || opts->points < 2 || opts->points > 1000000)
                goto invalid;
            break;
        case 'z':
            opts->noise = strtod(optarg, &end);
            if (*end != '\0' || !(opts->noise >= 0))
                goto invalid;
            break;
        case 'n':
            opts->steps = (int)strtol(optarg, &end, 10);
            if (*end != '\0' || opts->steps < 1)
                goto invalid;
            break;
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
        default:
            printf("usage: regression [options]\n"
                   "Fits a 1-20-20-1 ReLU network to noisy samples of sin(2x) + 0.3x on\n"
                   "[-3, 3] and plots data, truth and fit.\n"
                   "  --points N  number of samples (default 200)\n"
                   "  --noise X   standard deviation of the Gaussian noise (default 0.2)\n"
                   "  --steps N   full-batch Adam steps (default 3000)\n"
                   "  --lr X      initial learning rate, cosine-decayed (default 0.005)\n"
                   "  --seed N    seed of the samples and the weights (default 1)\n"
                   "  --out DIR   output directory (default %s)\n",
                   EX_DEFAULT_OUT);
            return c == 'h' ? 1 : -1;
        }
    }
    return 0;

invalid:
    fprintf(stderr, "regression: invalid value \"%s\" for --%s; see --help\n", optarg,
            long_options[index].name);
    return -1;
}

/* The network takes x / X_MAX, in [-1, 1], the usual input scaling. */
static double scale_input(double x)
{
    return x / X_MAX;
}

/* Draws the biases of every layer from U(-1/sqrt(in), 1/sqrt(in)), as
 * PyTorch's nn.Linear does. With zero biases every first-layer ReLU would
 * start with its kink at x = 0, and many would stay near there. */
static void init_biases(nn_mlp *mlp, uint64_t seed)
{
    ag_rng rng = ag_rng_new(seed);

    for (int l = 0; l < nn_mlp_n_layers(mlp); l++) {
        const nn_dense *layer = nn_mlp_layer(mlp, l);
        double bound = 1.0 / sqrt((double)ag_tensor_dim(layer->w, 0));
        double *b = ag_tensor_f64(layer->b);

        for (size_t j = 0; j < ag_tensor_numel(layer->b); j++)
            b[j] = bound * (2.0 * ag_rng_uniform(&rng) - 1.0);
    }
}

/* Draws n samples x ~ U(X_MIN, X_MAX), y = truth(x) + noise, as heap
 * tensors of shape (n x 1). *inputs contains the scaled x the network takes.
 * Returns 0 or -1 with an error. */
static int make_samples(const options *opts, ag_tensor **x, ag_tensor **inputs,
                        ag_tensor **y)
{
    ag_rng rng = ag_rng_new(opts->seed);
    size_t n = (size_t)opts->points;

    *x = ag_zeros(NULL, AG_F64, AG_SHAPE(n, 1));
    *inputs = ag_zeros(NULL, AG_F64, AG_SHAPE(n, 1));
    *y = ag_zeros(NULL, AG_F64, AG_SHAPE(n, 1));
    if (*x == NULL || *inputs == NULL || *y == NULL)
        return -1;

    double *xs = ag_tensor_f64(*x);
    double *scaled = ag_tensor_f64(*inputs);
    double *ys = ag_tensor_f64(*y);
    for (size_t i = 0; i < n; i++) {
        xs[i] = X_MIN + (X_MAX - X_MIN) * ag_rng_uniform(&rng);
        scaled[i] = scale_input(xs[i]);
        ys[i] = truth(xs[i]) + opts->noise * ag_rng_normal(&rng);
    }
    return 0;
}

/* Trains by full-batch Adam with a cosine learning-rate decay and returns
 * the final training MSE, or NaN with an error. */
static double train(nn_mlp *mlp, ag_tensor *x, ag_tensor *y, const options *opts)
{
    ag_tape *tape = ag_tape_new();
    nn_adam_options adam = nn_adam_defaults();
    double loss_value = NAN;
    char status[64];

    adam.lr = opts->lr;
    nn_optimizer *opt = nn_adam_new(nn_mlp_params(mlp), adam);
    if (tape == NULL || opt == NULL)
        goto done;

    for (int step = 0; step <= opts->steps; step++) {
        ag_tape_reset(tape);
        ag_tensor *loss = nn_mse_loss(tape, nn_mlp_forward(tape, mlp, x), y);
        if (loss == NULL)
            goto done;
        loss_value = ag_tensor_item(loss);
        if (step % 100 == 0 || step == opts->steps) {
            snprintf(status, sizeof status, "mse %.4f", loss_value);
            ex_progress("training", (size_t)step, (size_t)opts->steps, status);
        }
        if (step == opts->steps)
            break;

        nn_optimizer_set_lr(opt, nn_lr_cosine(opts->lr, 0.0, opts->steps, step));
        nn_optimizer_zero_grad(opt);
        if (ag_backward(tape, loss, NULL) != 0 || nn_optimizer_step(opt) != 0) {
            loss_value = NAN;
            goto done;
        }
    }

done:
    nn_optimizer_free(opt);
    ag_tape_free(tape);
    return loss_value;
}

/* Writes samples and curves, and returns the RMS error of the fit against
 * the true function on the grid (NaN on failure). */
static double write_results(const char *out_dir, nn_mlp *mlp, ag_tensor *x, ag_tensor *y)
{
    char path[4096];
    double grid[N_GRID];
    double scaled[N_GRID];
    double sum_sq = 0.0;

    for (int i = 0; i < N_GRID; i++) {
        grid[i] = X_MIN + (X_MAX - X_MIN) * i / (N_GRID - 1);
        scaled[i] = scale_input(grid[i]);
    }

    ag_tape *tape = ag_tape_new();
    ag_tensor *gx = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(N_GRID, 1), scaled);
    ag_tensor *fit = nn_mlp_forward(tape, mlp, gx);
    if (fit == NULL) {
        ex_fail("regression: evaluating the fit failed");
        ag_tape_free(tape);
        return NAN;
    }

    FILE *f = fopen(ex_join(path, sizeof path, out_dir, "regression_curve.csv"), "w");
    if (f == NULL) {
        perror(path);
        ag_tape_free(tape);
        return NAN;
    }
    fprintf(f, "x,truth,fit\n");
    for (int i = 0; i < N_GRID; i++) {
        double error = ag_tensor_get(fit, i) - truth(grid[i]);

        sum_sq += error * error;
        fprintf(f, "%.6f,%.6f,%.6f\n", grid[i], truth(grid[i]), ag_tensor_get(fit, i));
    }
    ag_tape_free(tape);
    if (fclose(f) != 0) {
        perror(path);
        return NAN;
    }

    f = fopen(ex_join(path, sizeof path, out_dir, "regression_data.csv"), "w");
    if (f == NULL) {
        perror(path);
        return NAN;
    }
    fprintf(f, "x,y\n");
    for (size_t i = 0; i < ag_tensor_numel(x); i++)
        fprintf(f, "%.6f,%.6f\n", ag_tensor_get(x, i), ag_tensor_get(y, i));
    if (fclose(f) != 0) {
        perror(path);
        return NAN;
    }
    return sqrt(sum_sq / N_GRID);
}

static int plot(const char *out_dir)
{
    char script[8192];

    snprintf(script, sizeof script,
             "set terminal pngcairo noenhanced size 900,600\n"
             "set output '%s/regression.png'\n"
             "set datafile separator ','\n"
             "set title 'Nonlinear regression: 1-20-20-1 ReLU network'\n"
             "set xlabel 'x'\n"
             "set ylabel 'y'\n"
             "set key top left\n"
             "plot '%s/regression_data.csv' skip 1 using 1:2 with points pt 7 ps 0.6 "
             "lc rgb 'gray40' title 'noisy samples', \\\n"
             "     '%s/regression_curve.csv' skip 1 using 1:2 with lines lw 2 dt 2 "
             "lc rgb 'blue' title 'truth: sin(2x) + 0.3x', \\\n"
             "     '' skip 1 using 1:3 with lines lw 2 lc rgb 'red' title 'fit'\n",
             out_dir, out_dir, out_dir);
    return ex_plot(out_dir, "regression", script);
}

int main(int argc, char **argv)
{
    options opts = {
        .out_dir = EX_DEFAULT_OUT,
        .points = 200,
        .noise = 0.2,
        .steps = 3000,
        .lr = 0.005,
        .seed = 1,
    };
    static const size_t widths[4] = {1, 20, 20, 1};
    static const nn_activation activations[3] = {NN_RELU, NN_RELU, NN_IDENTITY};
    ag_tensor *x = NULL;
    ag_tensor *inputs = NULL;
    ag_tensor *y = NULL;
    int rc = 1;

    int parsed = parse_options(argc, argv, &opts);
    if (parsed != 0)
        return parsed > 0 ? 0 : 2;
    if (ex_make_dir(opts.out_dir) != 0)
        return 1;

    printf("Nonlinear regression: a 1-20-20-1 ReLU network fitted to %d noisy samples of\n"
           "sin(2x) + 0.3x on [-3, 3] (noise sd %g), full-batch Adam, %d steps, lr %g.\n",
           opts.points, opts.noise, opts.steps, opts.lr);

    nn_mlp *mlp = nn_mlp_new(AG_F64, 3, widths, activations, NN_INIT_HE, opts.seed + 1);
    if (mlp == NULL || make_samples(&opts, &x, &inputs, &y) != 0) {
        ex_fail("regression: setup failed");
        goto done;
    }
    init_biases(mlp, opts.seed + 2);

    double mse = train(mlp, inputs, y, &opts);
    if (isnan(mse)) {
        ex_fail("regression: training failed");
        goto done;
    }
    double rmse = write_results(opts.out_dir, mlp, x, y);
    if (isnan(rmse))
        goto done;

    printf("training mean squared error: %.4f (the noise variance is %.4f)\n", mse,
           opts.noise * opts.noise);
    printf("RMS error of the fit against the true function on [-3, 3]: %.4f\n", rmse);
    printf("data: %s/regression_data.csv, curves: %s/regression_curve.csv\n", opts.out_dir,
           opts.out_dir);
    if (plot(opts.out_dir) == 0)
        rc = 0;

done:
    ag_tensor_free(x);
    ag_tensor_free(inputs);
    ag_tensor_free(y);
    nn_mlp_free(mlp);
    return rc;
}
