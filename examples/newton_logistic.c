/*
 * Newton's method against gradient descent on a small logistic regression.
 *
 * Two overlapping Gaussian clouds of 200 points in the plane are labelled
 * 0 and 1. The model is p(y = 1 | x) = sigmoid(x1 w1 + x2 w2 + b), and the
 * loss the mean binary cross-entropy plus (lambda / 2) |w|^2, which keeps
 * the Hessian positive definite. Each Newton step solves H d = g with the
 * Hessian from ag_hessian; each gradient-descent step moves by -lr g. The
 * table shows both side by side: Newton's gradient norm falls quadratically
 * once it is close, while gradient descent's shrinks by a constant factor.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"

#define N_SAMPLES 200
#define N_PARAMS 3 /* w1, w2 and the bias b */

/* The data and the L2 weight, handed to the loss as user data. */
typedef struct problem {
    ag_tensor *features; /* N_SAMPLES x 3: x1, x2 and a column of ones */
    ag_tensor *labels;   /* N_SAMPLES x 1, 0 or 1 */
    double lambda;
} problem;

typedef struct options {
    int steps;
    double lr;
    double lambda;
    uint64_t seed;
} options;

/* L(w) = mean(softplus(a) - y a) + (lambda / 2) |w|^2 with logits a = X w.
 * softplus(a) - y a is the cross-entropy on logits in its overflow-free
 * form. inputs[0] is w, of shape (3 x 1). */
static ag_tensor *loss_of(ag_tape *tape, ag_tensor *const *inputs, int n_inputs, void *user)
{
    const problem *p = user;
    ag_tensor *w = inputs[0];

    (void)n_inputs;
    ag_tensor *logits = ag_matmul(tape, p->features, w);
    ag_tensor *cross_entropy =
        ag_mean(tape, ag_sub(tape, ag_softplus(tape, logits), ag_mul(tape, p->labels, logits)));
    ag_tensor *decay = ag_mul_scalar(tape, ag_sum(tape, ag_mul(tape, w, w)), 0.5 * p->lambda);
    return ag_add(tape, cross_entropy, decay);
}

/* Draws the two clouds: class 0 around (-1, -0.5), class 1 around
 * (1, 0.5), both with standard deviation 1, so they overlap. */
static int make_problem(problem *p, double lambda, uint64_t seed)
{
    double features[N_SAMPLES * N_PARAMS];
    double labels[N_SAMPLES];
    ag_rng rng = ag_rng_new(seed);

    for (int i = 0; i < N_SAMPLES; i++) {
        double label = i % 2;
        double sign = label == 1 ? 1.0 : -1.0;

        features[i * N_PARAMS] = sign * 1.0 + ag_rng_normal(&rng);
        features[i * N_PARAMS + 1] = sign * 0.5 + ag_rng_normal(&rng);
        features[i * N_PARAMS + 2] = 1.0;
        labels[i] = label;
    }
    p->features = ag_tensor_from_doubles(NULL, AG_F64, AG_SHAPE(N_SAMPLES, N_PARAMS), features);
    p->labels = ag_tensor_from_doubles(NULL, AG_F64, AG_SHAPE(N_SAMPLES, 1), labels);
    p->lambda = lambda;
    return p->features != NULL && p->labels != NULL ? 0 : -1;
}

/* Writes L(w) and its gradient (3 values) for w. Returns 0, or -1 with an
 * error. */
static int evaluate(const problem *p, ag_tensor *w, double *loss, double *gradient)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *g = NULL;
    int status = -1;

    if (tape == NULL)
        return -1;
    ag_tensor *value = loss_of(tape, &w, 1, (void *)p);
    if (value != NULL && ag_grad(tape, value, NULL, 1, &w, &g, false) == 0) {
        *loss = ag_tensor_item(value);
        for (int k = 0; k < N_PARAMS; k++)
            gradient[k] = ag_tensor_get(g, (size_t)k);
        status = 0;
    }
    ag_tape_free(tape);
    return status;
}

static double norm(const double *v)
{
    return sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
}

/* Solves H d = g for a symmetric positive definite 3 x 3 H by Cholesky
 * (H = L L^T, then two triangular solves). Returns -1 when H is not
 * positive definite. */
static int solve_spd(const double *h, const double *g, double *d)
{
    double l[N_PARAMS][N_PARAMS] = {{0}};
    double z[N_PARAMS];

    for (int i = 0; i < N_PARAMS; i++) {
        for (int j = 0; j <= i; j++) {
            double s = h[i * N_PARAMS + j];

            for (int k = 0; k < j; k++)
                s -= l[i][k] * l[j][k];
            if (i == j) {
                if (!(s > 0))
                    return -1;
                l[i][i] = sqrt(s);
            } else {
                l[i][j] = s / l[j][j];
            }
        }
    }
    for (int i = 0; i < N_PARAMS; i++) {
        double s = g[i];
        for (int k = 0; k < i; k++)
            s -= l[i][k] * z[k];
        z[i] = s / l[i][i];
    }
    for (int i = N_PARAMS - 1; i >= 0; i--) {
        double s = z[i];
        for (int k = i + 1; k < N_PARAMS; k++)
            s -= l[k][i] * d[k];
        d[i] = s / l[i][i];
    }
    return 0;
}

/* Takes one Newton step w = w - H^-1 g, with H from ag_hessian. */
static int newton_step(const problem *p, ag_tensor *w, const double *gradient)
{
    double step[N_PARAMS];
    ag_tensor *hessian = ag_hessian(loss_of, (void *)p, 1, &w);

    if (hessian == NULL)
        return -1;
    int status = solve_spd(ag_tensor_f64(hessian), gradient, step);
    ag_tensor_free(hessian);
    if (status != 0) {
        ag_set_error("newton_logistic: the Hessian is not positive definite; raise --lambda");
        return -1;
    }
    for (int k = 0; k < N_PARAMS; k++)
        ag_tensor_f64(w)[k] -= step[k];
    return 0;
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
            printf("usage: newton_logistic [--steps N] [--lr LR] [--lambda L] [--seed S]\n"
                   "  --steps   iterations of each method (default 10)\n"
                   "  --lr      gradient descent's learning rate (default 1)\n"
                   "  --lambda  L2 weight in the loss (default 0.01)\n"
                   "  --seed    seed of the data (default 1)\n");
            return 1;
        default:
            return -1;
        }
    }
    if (opts->steps < 1 || !(opts->lr > 0) || !(opts->lambda > 0)) {
        fprintf(stderr, "newton_logistic: --steps must be at least 1, --lr and --lambda "
                        "positive\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    options opts = {.steps = 10, .lr = 1.0, .lambda = 0.01, .seed = 1};
    problem p;
    double newton_loss;
    double newton_grad[N_PARAMS];
    double descent_loss;
    double descent_grad[N_PARAMS];
    int status = 1;

    int parsed = parse_options(argc, argv, &opts);
    if (parsed != 0)
        return parsed > 0 ? 0 : 2;
    if (make_problem(&p, opts.lambda, opts.seed) != 0)
        return ex_fail("newton_logistic: making the data failed");

    /* Both methods start from w = 0. */
    ag_tensor *newton_w = ag_zeros(NULL, AG_F64, AG_SHAPE(N_PARAMS, 1));
    ag_tensor *descent_w = ag_zeros(NULL, AG_F64, AG_SHAPE(N_PARAMS, 1));
    if (newton_w == NULL || descent_w == NULL ||
        ag_tensor_set_requires_grad(newton_w, true) != 0 ||
        ag_tensor_set_requires_grad(descent_w, true) != 0) {
        ex_fail("newton_logistic: making the parameters failed");
        goto done;
    }

    printf("Logistic regression on %d points, lambda %g: Newton's method against "
           "gradient descent (lr %g)\n\n",
           N_SAMPLES, opts.lambda, opts.lr);
    printf("%4s  %-24s %-10s  %-24s %s\n", "step", "Newton loss", "|grad|",
           "gradient descent loss", "|grad|");
    for (int step = 0; step <= opts.steps; step++) {
        if (evaluate(&p, newton_w, &newton_loss, newton_grad) != 0 ||
            evaluate(&p, descent_w, &descent_loss, descent_grad) != 0) {
            ex_fail("newton_logistic: evaluating the loss failed");
            goto done;
        }
        printf("%4d  %-24.17g %-10.3e  %-24.17g %.3e\n", step, newton_loss,
               norm(newton_grad), descent_loss, norm(descent_grad));
        if (step == opts.steps)
            break;

        if (newton_step(&p, newton_w, newton_grad) != 0) {
            ex_fail("newton_logistic: the Newton step failed");
            goto done;
        }
        for (int k = 0; k < N_PARAMS; k++)
            ag_tensor_f64(descent_w)[k] -= opts.lr * descent_grad[k];
    }

    double *w = ag_tensor_f64(newton_w);
    printf("\nNewton's solution: w1 = %.6f, w2 = %.6f, b = %.6f\n", w[0], w[1], w[2]);
    status = 0;

done:
    ag_tensor_free(newton_w);
    ag_tensor_free(descent_w);
    ag_tensor_free(p.features);
    ag_tensor_free(p.labels);
    return status;
}
