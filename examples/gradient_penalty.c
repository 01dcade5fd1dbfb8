/*
 * Training with a gradient penalty: the loss contains a derivative of the
 * network, so its gradient needs second derivatives.
 *
 * A 1-16-16-1 tanh network fits 40 noisy samples of sin(3x) on [-1, 1]. The
 * loss is
 *     L = mean_i (f(x_i) - y_i)^2 + lambda * mean_j (df/dx (z_j))^2,
 * whose second term is the squared norm of the gradient of the output with
 * respect to the input, at 64 points z_j drawn uniformly from [-1, 1] at
 * every step (WGAN-GP draws its penalty points at random too). Each step
 * builds df/dx with ag_grad and create_graph, so the backward pass is
 * recorded on the tape, and ag_backward of L then differentiates through it
 * to the weights. One network is trained without the penalty and one with
 * it. The penalised fit is flatter (smaller slopes) at the price of a larger
 * error on the samples.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"

#define N_SAMPLES 40
#define N_PENALTY_POINTS 64
#define N_GRID 201

typedef struct options {
    int steps;
    double lr;
    double lambda;
    uint64_t seed;
} options;

/* The terms of one evaluation of the loss. */
typedef struct loss_terms {
    double mse;
    double penalty;
} loss_terms;

/* Builds L on the tape for samples x and targets y (N x 1), with the
 * penalty at N_PENALTY_POINTS points drawn from rng, and stores its two
 * terms. The points require a gradient, so that df/dz exists. Every row's
 * output depends only on its own input, so the gradient of sum_j f(z_j)
 * with respect to z is df/dz at each point. Returns NULL with an error. */
static ag_tensor *penalised_loss(ag_tape *tape, nn_mlp *mlp, ag_tensor *x, ag_tensor *y,
                                 double lambda, ag_rng *rng, loss_terms *terms)
{
    ag_tensor *z = ag_rand_uniform(tape, AG_F64, AG_SHAPE(N_PENALTY_POINTS, 1), -1.0, 1.0, rng);
    ag_tensor *slope = NULL;

    if (z == NULL || ag_tensor_set_requires_grad(z, true) != 0)
        return NULL;
    ag_tensor *mse = nn_mse_loss(tape, nn_mlp_forward(tape, mlp, x), y);
    ag_tensor *at_points = ag_sum(tape, nn_mlp_forward(tape, mlp, z));
    if (mse == NULL || ag_grad(tape, at_points, NULL, 1, &z, &slope, true) != 0)
        return NULL;

    ag_tensor *penalty = ag_mean(tape, ag_mul(tape, slope, slope));
    ag_tensor *loss = ag_add(tape, mse, ag_mul_scalar(tape, penalty, lambda));
    if (loss == NULL)
        return NULL;
    terms->mse = ag_tensor_item(mse);
    terms->penalty = ag_tensor_item(penalty);
    return loss;
}

/* Trains by full-batch Adam, printing the loss terms every steps/10 steps.
 * Returns 0, or -1 with an error. */
static int train(nn_mlp *mlp, ag_tensor *x, ag_tensor *y, double lambda, const options *opts)
{
    ag_tape *tape = ag_tape_new();
    nn_adam_options adam = nn_adam_defaults();
    ag_rng rng = ag_rng_new(opts->seed + 1);
    int status = -1;

    adam.lr = opts->lr;
    nn_optimizer *opt = nn_adam_new(nn_mlp_params(mlp), adam);
    if (tape == NULL || opt == NULL)
        goto done;

    printf("%6s  %-12s %-12s %s\n", "step", "mse", "penalty", "loss");
    for (int step = 0; step <= opts->steps; step++) {
        loss_terms terms;

        ag_tape_reset(tape);
        ag_tensor *loss = penalised_loss(tape, mlp, x, y, lambda, &rng, &terms);
        if (loss == NULL)
            goto done;
        if (step % (opts->steps / 10 > 0 ? opts->steps / 10 : 1) == 0)
            printf("%6d  %-12.5f %-12.5f %.5f\n", step, terms.mse, terms.penalty,
                   ag_tensor_item(loss));
        if (step == opts->steps)
            break;

        nn_optimizer_zero_grad(opt);
        if (ag_backward(tape, loss, NULL) != 0 || nn_optimizer_step(opt) != 0)
            goto done;
    }
    status = 0;

done:
    nn_optimizer_free(opt);
    ag_tape_free(tape);
    return status;
}

/* Writes the largest |df/dx| of the network over N_GRID points of [-1, 1],
 * from one gradient without a graph. Returns 0, or -1 with an error. */
static int max_slope(nn_mlp *mlp, double *largest)
{
    double grid[N_GRID];
    ag_tape *tape = ag_tape_new();
    ag_tensor *slope = NULL;
    int status = -1;

    for (int i = 0; i < N_GRID; i++)
        grid[i] = -1.0 + 2.0 * i / (N_GRID - 1);
    ag_tensor *x = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(N_GRID, 1), grid);
    if (x == NULL || ag_tensor_set_requires_grad(x, true) != 0)
        goto done;
    ag_tensor *total = ag_sum(tape, nn_mlp_forward(tape, mlp, x));
    if (ag_grad(tape, total, NULL, 1, &x, &slope, false) != 0)
        goto done;

    *largest = 0;
    for (int i = 0; i < N_GRID; i++)
        *largest = fmax(*largest, fabs(ag_tensor_get(slope, (size_t)i)));
    status = 0;

done:
    ag_tape_free(tape);
    return status;
}

static int parse_options(int argc, char **argv, options *opts)
{
    static const struct option long_options[] = {
        {"steps", required_argument, NULL, 's'},
        {"lr", required_argument, NULL, 'l'},
        {"lambda", required_argument, NULL, 'w'},
        {"seed", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;

    while ((c = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        switch (c) {
        case 's': opts->steps = atoi(optarg); break;
        case 'l': opts->lr = atof(optarg); break;
        case 'w': opts->lambda = atof(optarg); break;
        case 'r': opts->seed = strtoull(optarg, NULL, 10); break;
        case 'h':
            printf("usage: gradient_penalty [--steps N] [--lr LR] [--lambda L] [--seed S]\n"
                   "  --steps   Adam steps per network (default 2000)\n"
                   "  --lr      Adam's learning rate (default 0.01)\n"
                   "  --lambda  weight of the gradient penalty (default 0.05)\n"
                   "  --seed    seed of the data and the weights (default 1)\n");
            return 1;
        default:
            return -1;
        }
    }
    if (opts->steps < 1 || !(opts->lr > 0) || !(opts->lambda >= 0)) {
        fprintf(stderr, "gradient_penalty: --steps must be at least 1, --lr positive and "
                        "--lambda nonnegative\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    options opts = {.steps = 2000, .lr = 0.01, .lambda = 0.05, .seed = 1};
    static const size_t widths[4] = {1, 16, 16, 1};
    static const nn_activation activations[3] = {NN_TANH, NN_TANH, NN_IDENTITY};
    double xs[N_SAMPLES];
    double ys[N_SAMPLES];
    double slopes[2];
    int status = 1;

    int parsed = parse_options(argc, argv, &opts);
    if (parsed != 0)
        return parsed > 0 ? 0 : 2;

    /* y = sin(3x) + noise of standard deviation 0.1. */
    ag_rng rng = ag_rng_new(opts.seed);
    for (int i = 0; i < N_SAMPLES; i++) {
        xs[i] = -1.0 + 2.0 * ag_rng_uniform(&rng);
        ys[i] = sin(3.0 * xs[i]) + 0.1 * ag_rng_normal(&rng);
    }
    ag_tensor *x = ag_tensor_from_doubles(NULL, AG_F64, AG_SHAPE(N_SAMPLES, 1), xs);
    ag_tensor *y = ag_tensor_from_doubles(NULL, AG_F64, AG_SHAPE(N_SAMPLES, 1), ys);
    nn_mlp *plain = nn_mlp_new(AG_F64, 3, widths, activations, NN_INIT_XAVIER, opts.seed);
    nn_mlp *penalised = nn_mlp_new(AG_F64, 3, widths, activations, NN_INIT_XAVIER, opts.seed);
    if (x == NULL || y == NULL || plain == NULL || penalised == NULL) {
        ex_fail("gradient_penalty: setting up failed");
        goto done;
    }

    printf("Fitting sin(3x) + noise with a 1-16-16-1 tanh network, full-batch Adam, "
           "%d steps, lr %g\n\nwithout the penalty (lambda 0):\n",
           opts.steps, opts.lr);
    fprintf(stderr, "training without the penalty ...\n");
    if (train(plain, x, y, 0.0, &opts) != 0) {
        ex_fail("gradient_penalty: training failed");
        goto done;
    }
    printf("\nwith the penalty lambda * mean (df/dx)^2, lambda %g:\n", opts.lambda);
    fprintf(stderr, "training with the penalty ...\n");
    if (train(penalised, x, y, opts.lambda, &opts) != 0) {
        ex_fail("gradient_penalty: training failed");
        goto done;
    }

    if (max_slope(plain, &slopes[0]) != 0 || max_slope(penalised, &slopes[1]) != 0) {
        ex_fail("gradient_penalty: computing the slopes failed");
        goto done;
    }
    printf("\nlargest |df/dx| on [-1, 1]: %.3f without the penalty, %.3f with it "
           "(sin(3x) has 3)\n",
           slopes[0], slopes[1]);
    status = 0;

done:
    nn_mlp_free(plain);
    nn_mlp_free(penalised);
    ag_tensor_free(x);
    ag_tensor_free(y);
    return status;
}
