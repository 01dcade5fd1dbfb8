/*
 * Fits a network with one input, 3 tanh hidden units and a linear output to
 * 50 evenly spaced points of x^2, sin x, |x| and the Heaviside step on
 * [-1, 1], as in Bishop's Pattern Recognition and Machine Learning,
 * Figure 5.3. Each fit is trained by full-batch Adam on the mean squared
 * error. Plots every fit with the outputs of its three hidden units.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define N_POINTS 50
#define N_GRID 201
#define N_HIDDEN 3

typedef struct target_function {
    const char *name;  /* file name part */
    const char *title; /* plot title */
    double (*f)(double);
} target_function;

static double square(double x)
{
    return x * x;
}

/* H(x) = 1 for x >= 0, else 0. */
static double heaviside(double x)
{
    return x >= 0 ? 1.0 : 0.0;
}

static const target_function targets[4] = {
    {"square", "f(x) = x^2", square},
    {"sine", "f(x) = sin(x)", sin},
    {"abs", "f(x) = |x|", fabs},
    {"step", "f(x) = H(x), the Heaviside step", heaviside},
};

typedef struct options {
    const char *out_dir;
    int steps;
    double lr;
    uint64_t seed;
} options;

/* Returns a heap tensor (n x 1) of g(x_i) for the n points of xs. */
static ag_tensor *column(const double *xs, size_t n, double (*g)(double))
{
    double values[N_GRID];

    for (size_t i = 0; i < n; i++)
        values[i] = g != NULL ? g(xs[i]) : xs[i];
    return ag_tensor_from_doubles(NULL, AG_F64, AG_SHAPE(n, 1), values);
}

/* Trains the 1-3-1 network on (x, y) by full-batch Adam with a cosine
 * learning-rate decay. Returns the final mean squared error, or NaN with an
 * error. */
static double train(nn_mlp *mlp, ag_tensor *x, ag_tensor *y, const options *opts)
{
    ag_tape *tape = ag_tape_new();
    nn_adam_options adam = nn_adam_defaults();
    double loss_value = NAN;

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
        if (step == opts->steps)
            break;

        nn_optimizer_set_lr(opt, nn_lr_cosine(opts->lr, 0.01 * opts->lr, opts->steps, step));
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

/* Writes the data points and, on a fine grid, the target, the fit and the
 * hidden units' outputs Z1 = tanh(x W1 + b1). Returns 0 or -1. */
static int write_curves(const char *out_dir, const target_function *target, nn_mlp *mlp,
                        const double *xs)
{
    char name[128];
    char path[4096];
    double grid[N_GRID];

    for (int i = 0; i < N_GRID; i++)
        grid[i] = -1.0 + 2.0 * i / (N_GRID - 1);

    ag_tape *tape = ag_tape_new();
    ag_tensor *gx = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(N_GRID, 1), grid);
    ag_tensor *fit = nn_mlp_forward(tape, mlp, gx);
    ag_tensor *hidden = nn_dense_forward(tape, nn_mlp_layer(mlp, 0), gx);
    if (fit == NULL || hidden == NULL) {
        ex_fail("function_fitting: evaluating the fit failed");
        ag_tape_free(tape);
        return -1;
    }

    snprintf(name, sizeof name, "function_fitting_%s.csv", target->name);
    FILE *f = fopen(ex_join(path, sizeof path, out_dir, name), "w");
    if (f == NULL) {
        perror(path);
        ag_tape_free(tape);
        return -1;
    }
    fprintf(f, "x,target,fit,z1,z2,z3\n");
    for (int i = 0; i < N_GRID; i++) {
        fprintf(f, "%.6f,%.6f,%.6f,%.6f,%.6f,%.6f\n", grid[i], target->f(grid[i]),
                ag_tensor_get(fit, i), ag_tensor_get(hidden, 3 * i),
                ag_tensor_get(hidden, 3 * i + 1), ag_tensor_get(hidden, 3 * i + 2));
    }
    ag_tape_free(tape);
    if (fclose(f) != 0) {
        perror(path);
        return -1;
    }

    snprintf(name, sizeof name, "function_fitting_%s_data.csv", target->name);
    f = fopen(ex_join(path, sizeof path, out_dir, name), "w");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    fprintf(f, "x,y\n");
    for (int i = 0; i < N_POINTS; i++)
        fprintf(f, "%.6f,%.6f\n", xs[i], target->f(xs[i]));
    if (fclose(f) != 0) {
        perror(path);
        return -1;
    }
    return 0;
}

/* Draws the four fits in a 2 x 2 grid. */
static int plot(const char *out_dir)
{
    char script[16384];
    size_t len = 0;

    len += (size_t)snprintf(script + len, sizeof script - len,
                            "set terminal pngcairo noenhanced size 1000,800\n"
                            "set output '%s/function_fitting.png'\n"
                            "set datafile separator ','\n"
                            "set multiplot layout 2,2 title '1-3-1 tanh network "
                            "fitted to 50 points (dashed: the 3 hidden units)'\n"
                            "set key below horizontal font ',9'\n"
                            "set xrange [-1:1]\n",
                            out_dir);
    for (int k = 0; k < 4; k++) {
        const char *name = targets[k].name;

        len += (size_t)snprintf(
            script + len, sizeof script - len,
            "set title '%s'\n"
            "plot '%s/function_fitting_%s_data.csv' skip 1 using 1:2 with points pt 6 "
            "lc rgb 'blue' title 'data', \\\n"
            "     '%s/function_fitting_%s.csv' skip 1 using 1:3 with lines lw 2 "
            "lc rgb 'red' title 'fit', \\\n"
            "     '' skip 1 using 1:4 with lines dt 2 lc rgb 'dark-green' title 'z1', \\\n"
            "     '' skip 1 using 1:5 with lines dt 2 lc rgb 'dark-orange' title 'z2', \\\n"
            "     '' skip 1 using 1:6 with lines dt 2 lc rgb 'purple' title 'z3'\n",
            targets[k].title, out_dir, name, out_dir, name);
    }
    snprintf(script + len, sizeof script - len, "unset multiplot\n");
    return ex_plot(out_dir, "function_fitting", script);
}

static int parse_options(int argc, char **argv, options *opts)
{
    static const struct option long_options[] = {
        {"out", required_argument, NULL, 'o'},  {"steps", required_argument, NULL, 'n'},
        {"lr", required_argument, NULL, 'l'},   {"seed", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},       {NULL, 0, NULL, 0},
    };
    int c;
    int index = 0;

    while ((c = getopt_long(argc, argv, "", long_options, &index)) != -1) {
        char *end = NULL;

        switch (c) {
        case 'o':
            opts->out_dir = optarg;
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
            printf("usage: function_fitting [--out DIR] [--steps N] [--lr X] [--seed N]\n"
                   "Fits a 1-3-1 tanh network to x^2, sin x, |x| and the Heaviside step\n"
                   "on [-1, 1] (50 points each) and plots the fits and hidden units.\n"
                   "  --steps N  full-batch Adam steps per function (default 5000)\n"
                   "  --lr X     initial learning rate, cosine-decayed (default 0.05)\n"
                   "  --seed N   seed of the weight initialisation (default 1)\n"
                   "  --out DIR  output directory (default %s)\n",
                   EX_DEFAULT_OUT);
            return c == 'h' ? 1 : -1;
        }
    }
    return 0;

invalid:
    fprintf(stderr, "function_fitting: invalid value \"%s\" for --%s; see --help\n", optarg,
            long_options[index].name);
    return -1;
}

int main(int argc, char **argv)
{
    options opts = {.out_dir = EX_DEFAULT_OUT, .steps = 5000, .lr = 0.05, .seed = 1};
    static const size_t widths[3] = {1, N_HIDDEN, 1};
    static const nn_activation activations[2] = {NN_TANH, NN_IDENTITY};
    double xs[N_POINTS];

    int parsed = parse_options(argc, argv, &opts);
    if (parsed != 0)
        return parsed > 0 ? 0 : 2;
    if (ex_make_dir(opts.out_dir) != 0)
        return 1;

    for (int i = 0; i < N_POINTS; i++)
        xs[i] = -1.0 + 2.0 * i / (N_POINTS - 1);

    printf("Fitting a 1-%d-1 tanh network to %d points on [-1, 1] "
           "(full-batch Adam, %d steps, lr %g):\n",
           N_HIDDEN, N_POINTS, opts.steps, opts.lr);
    for (int k = 0; k < 4; k++) {
        const target_function *target = &targets[k];
        ag_tensor *x = column(xs, N_POINTS, NULL);
        ag_tensor *y = column(xs, N_POINTS, target->f);
        nn_mlp *mlp = nn_mlp_new(AG_F64, 2, widths, activations, NN_INIT_XAVIER, opts.seed);
        double start = ex_now();

        fprintf(stderr, "fitting %s ...\n", target->title);
        double mse = x == NULL || y == NULL || mlp == NULL ? NAN : train(mlp, x, y, &opts);
        if (isnan(mse))
            ex_fail("function_fitting: training failed");
        if (isnan(mse) || write_curves(opts.out_dir, target, mlp, xs) != 0) {
            ag_tensor_free(x);
            ag_tensor_free(y);
            nn_mlp_free(mlp);
            return 1;
        }
        printf("  %-34s mean squared error %.2e  (%.2f s)\n", target->title, mse,
               ex_now() - start);

        ag_tensor_free(x);
        ag_tensor_free(y);
        nn_mlp_free(mlp);
    }

    printf("curves: %s/function_fitting_*.csv\n", opts.out_dir);
    return plot(opts.out_dir) == 0 ? 0 : 1;
}
