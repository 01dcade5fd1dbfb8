/*
 * A custom loss as a registered op: the Huber loss, with a forward kernel
 * and a backward rule written by hand for f32 and f64.
 *
 * The program first checks the backward rule three ways: ag_gradcheck
 * (central differences of the whole loss), ag_check_records (each record
 * of a network's loss on its own) and ag_taylor_test (the order of the
 * Taylor remainder). It then runs the same checks on a copy of the op whose
 * backward rule omits the 1/N of the mean, to show what a bug looks like.
 * Last, it trains a 1-16-1 tanh network on samples of sin(x) of which a
 * tenth are outliers, once with the Huber loss and once with the mean
 * squared error. It prints both loss curves and how far each fit lies from
 * sin(x).
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define X_MAX 3.0
#define N_GRID 301
#define HIDDEN 16

typedef struct options {
    const char *out_dir;
    int points;
    double outliers; /* fraction of samples moved up by OUTLIER_SHIFT */
    double delta;
    int steps;
    double lr;
    uint64_t seed;
} options;

#define OUTLIER_SHIFT 5.0
#define NOISE 0.1

/* ---- the Huber loss op ----------------------------------------------------- */

/*
 * huber(pred, target) = mean over elements of
 *   d^2 / 2                  where |d| <= delta,
 *   delta (|d| - delta / 2)  elsewhere,          with d = pred - target.
 * The two pieces meet with equal slope at |d| = delta, so the loss is
 * differentiable: d huber / d pred = clamp(d, -delta, delta) / N and
 * d huber / d target is its negative. Far from the target it grows like
 * |d|, so an outlier pulls on the fit with a force of at most delta / N.
 * delta is the op's first param.
 */

/* Sums the loss terms in double for either element type, so the mean of a
 * large f32 batch keeps its digits. */
#define HUBER_KERNELS(T)                                                        \
    static double huber_sum_##T(const T *pred, const T *target, size_t n,       \
                                double delta)                                   \
    {                                                                           \
        double sum = 0.0;                                                       \
        for (size_t i = 0; i < n; i++) {                                        \
            double d = (double)pred[i] - (double)target[i];                     \
            double a = fabs(d);                                                 \
            sum += a <= delta ? 0.5 * d * d : delta * (a - 0.5 * delta);        \
        }                                                                       \
        return sum;                                                             \
    }                                                                           \
    /* Adds scale * clamp(d, -delta, delta) into the adjoints that exist. */    \
    static void huber_grad_##T(const T *pred, const T *target, size_t n,        \
                               T delta, T scale, T *grad_pred, T *grad_target)  \
    {                                                                           \
        for (size_t i = 0; i < n; i++) {                                        \
            T d = pred[i] - target[i];                                          \
            T g = scale * (d < -delta ? -delta : (d > delta ? delta : d));      \
            if (grad_pred != NULL)                                              \
                grad_pred[i] += g;                                              \
            if (grad_target != NULL)                                            \
                grad_target[i] -= g;                                            \
        }                                                                       \
    }

HUBER_KERNELS(float)
HUBER_KERNELS(double)

static int huber_shape(const ag_record *rec, ag_dtype *dtype, int *ndim, size_t *shape)
{
    const ag_tensor *pred = rec->inputs[0];
    const ag_tensor *target = rec->inputs[1];
    double delta = rec->params[0];
    char ps[64];
    char ts[64];

    if (!ag_tensor_same_shape(pred, target)) {
        ag_set_error("%s: pred %s and target %s differ in shape; pass tensors of one "
                     "shape", rec->op->name, ag_shape_str(pred, ps, sizeof ps),
                     ag_shape_str(target, ts, sizeof ts));
        return -1;
    }
    if (ag_tensor_numel(pred) == 0) {
        ag_set_error("%s: pred is empty; the mean needs at least one element",
                     rec->op->name);
        return -1;
    }
    if (!(delta > 0 && isfinite(delta))) {
        ag_set_error("%s: delta is %g; pass a positive, finite delta", rec->op->name, delta);
        return -1;
    }
    *dtype = ag_tensor_dtype(pred);
    *ndim = 1;
    shape[0] = 1;
    return 0;
}

static int huber_forward(ag_tape *tape, ag_record *rec)
{
    ag_tensor *pred = rec->inputs[0];
    ag_tensor *target = rec->inputs[1];
    size_t n = ag_tensor_numel(pred);
    double sum;

    (void)tape;
    if (ag_tensor_dtype(pred) == AG_F32)
        sum = huber_sum_float(ag_tensor_f32(pred), ag_tensor_f32(target), n, rec->params[0]);
    else
        sum = huber_sum_double(ag_tensor_f64(pred), ag_tensor_f64(target), n, rec->params[0]);
    return ag_tensor_set(rec->output, 0, sum / (double)n);
}

/* `mean` false gives the bug shown in part 2: the 1/N is left out. */
static int huber_backward_with(ag_tape *tape, ag_record *rec, bool mean)
{
    ag_tensor *pred = rec->inputs[0];
    ag_tensor *target = rec->inputs[1];
    ag_tensor *grad_pred = ag_input_grad(tape, rec, 0);
    ag_tensor *grad_target = ag_input_grad(tape, rec, 1);
    size_t n = ag_tensor_numel(pred);
    double scale = ag_tensor_item(ag_tensor_grad(rec->output)) / (mean ? (double)n : 1.0);

    if (ag_tensor_dtype(pred) == AG_F32)
        huber_grad_float(ag_tensor_f32(pred), ag_tensor_f32(target), n,
                         (float)rec->params[0], (float)scale,
                         grad_pred != NULL ? ag_tensor_f32(grad_pred) : NULL,
                         grad_target != NULL ? ag_tensor_f32(grad_target) : NULL);
    else
        huber_grad_double(ag_tensor_f64(pred), ag_tensor_f64(target), n, rec->params[0],
                          scale, grad_pred != NULL ? ag_tensor_f64(grad_pred) : NULL,
                          grad_target != NULL ? ag_tensor_f64(grad_target) : NULL);
    return 0;
}

static int huber_backward(ag_tape *tape, ag_record *rec)
{
    return huber_backward_with(tape, rec, true);
}

static int huber_backward_without_mean(ag_tape *tape, ag_record *rec)
{
    return huber_backward_with(tape, rec, false);
}

static const ag_op huber_op = {
    .name = "huber_loss",
    .n_inputs = 2,
    .shape = huber_shape,
    .forward = huber_forward,
    .backward = huber_backward,
};

/* The same loss with a wrong backward rule, for part 2. */
static const ag_op huber_wrong_op = {
    .name = "huber_loss_no_mean",
    .n_inputs = 2,
    .shape = huber_shape,
    .forward = huber_forward,
    .backward = huber_backward_without_mean,
};

static ag_tensor *huber_loss(ag_tape *tape, const ag_op *op, ag_tensor *pred,
                             ag_tensor *target, double delta)
{
    ag_tensor *inputs[2] = {pred, target};

    return ag_apply(tape, op, 2, inputs, 1, &delta);
}

/* ---- functions to check -------------------------------------------------- */

/* What the checked functions need besides their inputs. */
typedef struct loss_setup {
    const ag_op *op;
    double delta;
} loss_setup;

/* inputs: pred, target. */
static ag_tensor *loss_of_residuals(ag_tape *tape, ag_tensor *const *inputs, int n_inputs,
                                    void *user)
{
    const loss_setup *setup = user;

    (void)n_inputs;
    return huber_loss(tape, setup->op, inputs[0], inputs[1], setup->delta);
}

/* inputs: x (batch x 1), y (batch x 1), W1, b1, W2, b2 of a 1-16-1 tanh
 * network, built from ops so that ag_taylor_test can move the weights. */
static ag_tensor *loss_of_network(ag_tape *tape, ag_tensor *const *inputs, int n_inputs,
                                  void *user)
{
    const loss_setup *setup = user;

    (void)n_inputs;
    ag_tensor *hidden = ag_tanh(tape, ag_linear(tape, inputs[0], inputs[2], inputs[3]));
    ag_tensor *pred = ag_linear(tape, hidden, inputs[4], inputs[5]);
    return huber_loss(tape, setup->op, pred, inputs[1], setup->delta);
}

/* ---- part 1 and 2: the checks ---------------------------------------------- */

/* Residuals pred - target of -2.5 ... 2.1: both sides of delta = 1, none
 * at |d| = 1 where the second derivative jumps. */
static const double pred_values[8] = {0.2, -1.0, 2.5, 0.4, -0.3, 1.8, -2.0, 0.9};
static const double target_values[8] = {0.5, 1.5, 0.4, 0.1, -0.9, 0.2, 0.5, 1.0};

static void print_gradcheck(const char *label, const ag_gradcheck_result *result)
{
    printf("  ag_gradcheck, %s: %s\n", label, result->passed ? "passed" : "FAILED");
    printf("    %s\n", result->message);
}

static int run_gradcheck(const loss_setup *setup, ag_dtype dtype, const char *label)
{
    ag_tensor *inputs[2] = {
        ag_tensor_from_doubles(NULL, dtype, AG_SHAPE(2, 4), pred_values),
        ag_tensor_from_doubles(NULL, dtype, AG_SHAPE(2, 4), target_values),
    };
    ag_gradcheck_result result;
    int status = -1;

    if (inputs[0] != NULL && inputs[1] != NULL &&
        ag_tensor_set_requires_grad(inputs[0], true) == 0 &&
        ag_tensor_set_requires_grad(inputs[1], true) == 0 &&
        ag_gradcheck(loss_of_residuals, (void *)setup, 2, inputs, NULL, &result) == 0) {
        print_gradcheck(label, &result);
        status = 0;
    }
    ag_tensor_free(inputs[0]);
    ag_tensor_free(inputs[1]);
    return status;
}

/* The network's inputs for the checks: 8 samples and the MLP's weights,
 * copied into heap tensors (W1, b1, W2, b2 require a gradient). */
static int network_inputs(nn_mlp *mlp, const ag_tensor *x, const ag_tensor *y,
                          ag_tensor **inputs)
{
    double xs[8];
    double ys[8];

    for (size_t i = 0; i < 8; i++) {
        xs[i] = ag_tensor_get(x, i);
        ys[i] = ag_tensor_get(y, i);
    }
    inputs[0] = ag_tensor_from_doubles(NULL, AG_F64, AG_SHAPE(8, 1), xs);
    inputs[1] = ag_tensor_from_doubles(NULL, AG_F64, AG_SHAPE(8, 1), ys);
    for (int l = 0; l < 2; l++) {
        const nn_dense *layer = nn_mlp_layer(mlp, l);

        inputs[2 + 2 * l] = ag_tensor_copy(NULL, layer->w, AG_F64);
        inputs[3 + 2 * l] = ag_tensor_copy(NULL, layer->b, AG_F64);
    }
    for (int i = 0; i < 6; i++) {
        if (inputs[i] == NULL)
            return -1;
        if (i >= 2 && ag_tensor_set_requires_grad(inputs[i], true) != 0)
            return -1;
    }
    return 0;
}

static int run_record_check(const loss_setup *setup, ag_tensor *const *inputs)
{
    ag_tape *tape = ag_tape_new();
    ag_record_check_result result;
    int status = -1;

    if (tape != NULL && loss_of_network(tape, inputs, 6, (void *)setup) != NULL &&
        ag_check_records(tape, NULL, &result) == 0) {
        printf("  ag_check_records on the network's loss (%zu records): %s\n",
               ag_tape_size(tape), result.passed ? "passed" : "FAILED");
        printf("    %s\n", result.message);
        status = 0;
    }
    ag_tape_free(tape);
    return status;
}

static void print_taylor_table(const ag_taylor_result *result)
{
    printf("    %8s  %12s  %11s\n", "h", "r(h)", "local order");
    for (int k = 0; k < result->n_steps; k++) {
        bool fitted = k >= result->fit_first && k <= result->fit_last;

        printf("    2^-%-5d  %12.4e", k + 1, result->remainder[k]);
        if (k > 0 && result->remainder[k] > 0 && result->remainder[k - 1] > 0)
            printf("  %11.3f", log2(result->remainder[k - 1] / result->remainder[k]));
        else
            printf("  %11s", "");
        printf("%s\n", fitted ? "  (fitted)" : "");
    }
}

static int run_taylor(const loss_setup *setup, ag_tensor *const *inputs, bool table)
{
    ag_rng rng = ag_rng_new(7);
    ag_taylor_result result;

    if (ag_taylor_test(loss_of_network, (void *)setup, 6, inputs, &rng, &result) != 0)
        return -1;
    printf("  ag_taylor_test on the network's loss: %s, order %.3f\n",
           result.passed ? "passed" : "FAILED", result.order);
    printf("    %s\n", result.message);
    if (table)
        print_taylor_table(&result);
    return 0;
}

/* Runs the three checks with one op. */
static int run_checks(const ag_op *op, double delta, nn_mlp *mlp, const ag_tensor *x,
                      const ag_tensor *y, bool table)
{
    loss_setup setup = {.op = op, .delta = delta};
    ag_tensor *inputs[6] = {NULL};
    int status = -1;

    if (run_gradcheck(&setup, AG_F64, "f64") == 0 &&
        run_gradcheck(&setup, AG_F32, "f32") == 0 &&
        network_inputs(mlp, x, y, inputs) == 0 && run_record_check(&setup, inputs) == 0 &&
        run_taylor(&setup, inputs, table) == 0)
        status = 0;
    for (int i = 0; i < 6; i++)
        ag_tensor_free(inputs[i]);
    return status;
}

/* ---- part 3: training ---------------------------------------------------- */

static double truth(double x)
{
    return sin(x);
}

/* Draws x ~ U(-X_MAX, X_MAX) and y = sin(x) + noise, of which a fraction
 * `outliers` is moved up by OUTLIER_SHIFT. The network reads x / X_MAX. */
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
        xs[i] = X_MAX * (2.0 * ag_rng_uniform(&rng) - 1.0);
        scaled[i] = xs[i] / X_MAX;
        ys[i] = truth(xs[i]) + NOISE * ag_rng_normal(&rng);
        if (ag_rng_uniform(&rng) < opts->outliers)
            ys[i] += OUTLIER_SHIFT;
    }
    return 0;
}

static nn_mlp *make_network(const options *opts)
{
    static const size_t widths[3] = {1, HIDDEN, 1};
    static const nn_activation activations[2] = {NN_TANH, NN_IDENTITY};

    return nn_mlp_new(AG_F64, 2, widths, activations, NN_INIT_XAVIER, opts->seed + 1);
}

/* A network trained with one loss, and its loss after each step. */
typedef struct training {
    const char *name;
    const ag_op *op; /* NULL for the mean squared error */
    nn_mlp *mlp;
    double *curve;   /* steps + 1 values */
} training;

static ag_tensor *training_loss(ag_tape *tape, const training *t, const options *opts,
                                ag_tensor *inputs, ag_tensor *y)
{
    ag_tensor *pred = nn_mlp_forward(tape, t->mlp, inputs);

    if (t->op == NULL)
        return nn_mse_loss(tape, pred, y);
    return huber_loss(tape, t->op, pred, y, opts->delta);
}

/* Full-batch Adam. Returns 0, or -1 with an error. */
static int train(training *t, const options *opts, ag_tensor *inputs, ag_tensor *y)
{
    ag_tape *tape = ag_tape_new();
    nn_adam_options adam = nn_adam_defaults();
    int status = -1;

    adam.lr = opts->lr;
    nn_optimizer *opt = nn_adam_new(nn_mlp_params(t->mlp), adam);
    if (tape == NULL || opt == NULL)
        goto done;

    for (int step = 0; step <= opts->steps; step++) {
        ag_tape_reset(tape);
        ag_tensor *loss = training_loss(tape, t, opts, inputs, y);
        if (loss == NULL)
            goto done;
        t->curve[step] = ag_tensor_item(loss);
        if (step == opts->steps)
            break;

        nn_optimizer_zero_grad(opt);
        if (ag_backward(tape, loss, NULL) != 0 || nn_optimizer_step(opt) != 0)
            goto done;
        if (step % 100 == 0)
            ex_progress(t->name, (size_t)step, (size_t)opts->steps, "");
    }
    ex_progress(t->name, (size_t)opts->steps, (size_t)opts->steps, "");
    status = 0;

done:
    nn_optimizer_free(opt);
    ag_tape_free(tape);
    return status;
}

/* Evaluates the network on the grid and returns the RMS distance of the fit
 * from sin(x), or NaN with an error. Stores the fit in `fit`. */
static double fit_error(nn_mlp *mlp, const double *grid, double *fit)
{
    double scaled[N_GRID];
    double sum_sq = 0.0;
    ag_tape *tape = ag_tape_new();

    for (int i = 0; i < N_GRID; i++)
        scaled[i] = grid[i] / X_MAX;
    ag_tensor *gx = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(N_GRID, 1), scaled);
    ag_tensor *pred = nn_mlp_forward(tape, mlp, gx);
    if (pred == NULL) {
        ag_tape_free(tape);
        return NAN;
    }
    for (int i = 0; i < N_GRID; i++) {
        fit[i] = ag_tensor_get(pred, i);
        sum_sq += (fit[i] - truth(grid[i])) * (fit[i] - truth(grid[i]));
    }
    ag_tape_free(tape);
    return sqrt(sum_sq / N_GRID);
}

static void print_curves(const training *runs, const options *opts)
{
    int every = opts->steps >= 10 ? opts->steps / 10 : 1;

    printf("  %6s  %16s  %16s\n", "step", "Huber loss", "MSE loss");
    for (int step = 0; step <= opts->steps; step += every)
        printf("  %6d  %16.6f  %16.6f\n", step, runs[0].curve[step], runs[1].curve[step]);
}

/* Writes the loss curves, samples and fits as CSV, and plots the fits. */
static int write_results(const options *opts, const training *runs, const ag_tensor *x,
                         const ag_tensor *y, const double *grid, double fits[2][N_GRID])
{
    char path[4096];
    FILE *f = fopen(ex_join(path, sizeof path, opts->out_dir, "custom_loss_curve.csv"), "w");

    if (f == NULL) {
        perror(path);
        return -1;
    }
    fprintf(f, "step,huber,mse\n");
    for (int step = 0; step <= opts->steps; step++)
        fprintf(f, "%d,%.9g,%.9g\n", step, runs[0].curve[step], runs[1].curve[step]);
    if (fclose(f) != 0) {
        perror(path);
        return -1;
    }

    f = fopen(ex_join(path, sizeof path, opts->out_dir, "custom_loss_fit.csv"), "w");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    fprintf(f, "x,truth,huber_fit,mse_fit,sample_x,sample_y\n");
    for (size_t i = 0; i < N_GRID || i < ag_tensor_numel(x); i++) {
        if (i < N_GRID)
            fprintf(f, "%.6f,%.6f,%.6f,%.6f,", grid[i], truth(grid[i]), fits[0][i],
                    fits[1][i]);
        else
            fprintf(f, ",,,,");
        if (i < ag_tensor_numel(x))
            fprintf(f, "%.6f,%.6f\n", ag_tensor_get(x, i), ag_tensor_get(y, i));
        else
            fprintf(f, ",\n");
    }
    if (fclose(f) != 0) {
        perror(path);
        return -1;
    }

    char script[4096];
    snprintf(script, sizeof script,
             "set terminal pngcairo noenhanced size 900,600\n"
             "set output '%s/custom_loss.png'\n"
             "set datafile separator ','\n"
             "set title 'sin(x) with outliers: Huber loss against mean squared error'\n"
             "set xlabel 'x'\n"
             "set ylabel 'y'\n"
             "set key top left\n"
             "plot '%s/custom_loss_fit.csv' skip 1 using 5:6 with points pt 7 ps 0.5 "
             "lc rgb 'gray40' title 'samples', \\\n"
             "     '' skip 1 using 1:2 with lines lw 2 dt 2 lc rgb 'black' title 'sin(x)', \\\n"
             "     '' skip 1 using 1:3 with lines lw 2 lc rgb 'blue' title 'Huber fit', \\\n"
             "     '' skip 1 using 1:4 with lines lw 2 lc rgb 'red' title 'MSE fit'\n",
             opts->out_dir, opts->out_dir);
    return ex_plot(opts->out_dir, "custom_loss", script);
}

/* ---- options and main ------------------------------------------------------ */

static int parse_options(int argc, char **argv, options *opts)
{
    static const struct option long_options[] = {
        {"out", required_argument, NULL, 'o'},      {"points", required_argument, NULL, 'p'},
        {"outliers", required_argument, NULL, 'f'}, {"delta", required_argument, NULL, 'd'},
        {"steps", required_argument, NULL, 'n'},    {"lr", required_argument, NULL, 'l'},
        {"seed", required_argument, NULL, 's'},     {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
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
            if (*end != '\0' || opts->points < 8 || opts->points > 1000000)
                goto invalid;
            break;
        case 'f':
            opts->outliers = strtod(optarg, &end);
            if (*end != '\0' || !(opts->outliers >= 0 && opts->outliers <= 1))
                goto invalid;
            break;
        case 'd':
            opts->delta = strtod(optarg, &end);
            if (*end != '\0' || !(opts->delta > 0 && isfinite(opts->delta)))
                goto invalid;
            break;
        case 'n':
            opts->steps = (int)strtol(optarg, &end, 10);
            if (*end != '\0' || opts->steps < 1 || opts->steps > 10000000)
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
            printf("usage: custom_loss [options]\n"
                   "Registers the Huber loss as a custom op, checks its backward rule\n"
                   "(and a wrong copy of it), then fits a 1-16-1 tanh network to sin(x)\n"
                   "with outliers, with the Huber loss and with the mean squared error.\n"
                   "  --points N    number of samples, at least 8 (default 200)\n"
                   "  --outliers F  fraction of samples moved up by %g (default 0.1)\n"
                   "  --delta X     the Huber loss's delta (default 1)\n"
                   "  --steps N     full-batch Adam steps (default 2000)\n"
                   "  --lr X        Adam learning rate (default 0.01)\n"
                   "  --seed N      seed of the samples and the weights (default 1)\n"
                   "  --out DIR     output directory (default %s)\n",
                   OUTLIER_SHIFT, EX_DEFAULT_OUT);
            return c == 'h' ? 1 : -1;
        }
    }
    return 0;

invalid:
    fprintf(stderr, "custom_loss: invalid value \"%s\" for --%s; see --help\n", optarg,
            long_options[index].name);
    return -1;
}

/* Trains both networks from the same initial weights and reports. */
static int compare_losses(const options *opts, ag_tensor *x, ag_tensor *inputs, ag_tensor *y)
{
    training runs[2] = {
        {.name = "Huber", .op = &huber_op},
        {.name = "MSE", .op = NULL},
    };
    double grid[N_GRID];
    static double fits[2][N_GRID];
    double errors[2];
    int status = 1;

    for (int i = 0; i < N_GRID; i++)
        grid[i] = -X_MAX + 2.0 * X_MAX * i / (N_GRID - 1);
    for (int r = 0; r < 2; r++) {
        runs[r].mlp = make_network(opts);
        runs[r].curve = calloc((size_t)opts->steps + 1, sizeof(double));
        if (runs[r].mlp == NULL || runs[r].curve == NULL || train(&runs[r], opts, inputs, y) != 0) {
            ex_fail("custom_loss: training failed");
            goto done;
        }
        errors[r] = fit_error(runs[r].mlp, grid, fits[r]);
        if (isnan(errors[r])) {
            ex_fail("custom_loss: evaluating the fit failed");
            goto done;
        }
    }

    printf("\n3. Training on %d samples of sin(x) + noise (sd %g), %.0f%% moved up by %g:\n"
           "   full-batch Adam, lr %g, %d steps, each loss on its own network\n",
           opts->points, NOISE, 100.0 * opts->outliers, OUTLIER_SHIFT, opts->lr, opts->steps);
    print_curves(runs, opts);
    printf("  RMS distance of the fit from sin(x) on [-3, 3]: Huber %.4f, MSE %.4f\n",
           errors[0], errors[1]);
    if (write_results(opts, runs, x, y, grid, fits) == 0)
        status = 0;

done:
    for (int r = 0; r < 2; r++) {
        nn_mlp_free(runs[r].mlp);
        free(runs[r].curve);
    }
    return status;
}

int main(int argc, char **argv)
{
    options opts = {
        .out_dir = EX_DEFAULT_OUT,
        .points = 200,
        .outliers = 0.1,
        .delta = 1.0,
        .steps = 2000,
        .lr = 0.01,
        .seed = 1,
    };
    ag_tensor *x = NULL;
    ag_tensor *inputs = NULL;
    ag_tensor *y = NULL;
    nn_mlp *mlp = NULL;
    int rc = 1;

    int parsed = parse_options(argc, argv, &opts);
    if (parsed != 0)
        return parsed > 0 ? 0 : 2;
    if (ex_make_dir(opts.out_dir) != 0)
        return 1;
    if (ag_op_register(&huber_op) != 0 || ag_op_register(&huber_wrong_op) != 0)
        return ex_fail("custom_loss: registering the ops failed");

    mlp = make_network(&opts);
    if (mlp == NULL || make_samples(&opts, &x, &inputs, &y) != 0) {
        ex_fail("custom_loss: setup failed");
        goto done;
    }

    printf("1. Checking the backward rule of huber_loss (delta %g)\n", opts.delta);
    if (run_checks(&huber_op, opts.delta, mlp, inputs, y, true) != 0) {
        ex_fail("custom_loss: a check could not run");
        goto done;
    }
    printf("\n2. The same checks on huber_loss_no_mean, whose backward rule omits "
           "the 1/N\n");
    if (run_checks(&huber_wrong_op, opts.delta, mlp, inputs, y, false) != 0) {
        ex_fail("custom_loss: a check could not run");
        goto done;
    }
    rc = compare_losses(&opts, x, inputs, y);

done:
    ag_tensor_free(x);
    ag_tensor_free(inputs);
    ag_tensor_free(y);
    nn_mlp_free(mlp);
    return rc;
}
