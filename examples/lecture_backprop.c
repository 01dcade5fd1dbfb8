/*
 * The lecture's scalar network, one input and one hidden unit per layer:
 *
 *   S1 = x W1 + b1    Z1 = h(S1)
 *   S2 = Z1 W2 + b2   Z2 = h(S2)
 *   f  = Z2 W3 + b3   L  = (y - f)^2
 *
 * With concrete numbers and for h = sigmoid and h = ReLU, it prints each
 * gradient computed by its hand-derived formula beside the value the tape
 * computed, and their difference, then the tape itself. It exits with
 * status 1 when a formula and the tape disagree beyond rounding.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"

/* Largest relative difference accepted between formula and tape (f64). */
#define AGREEMENT_TOLERANCE 1e-12

/* The numbers of the example: input, target and the six parameters. */
typedef struct network_values {
    double x, y;
    double w1, b1, w2, b2, w3, b3;
} network_values;

/* The forward values every formula needs. */
typedef struct forward_values {
    double s1, z1, s2, z2, f, loss;
} forward_values;

typedef struct activation {
    const char *name;
    nn_activation kind;
    double (*h)(double);
    double (*dh)(double); /* h'(s) */
} activation;

static double sigmoid(double s)
{
    return 1.0 / (1.0 + exp(-s));
}

static double sigmoid_derivative(double s)
{
    return sigmoid(s) * (1.0 - sigmoid(s));
}

static double relu(double s)
{
    return s > 0 ? s : 0.0;
}

/* PyTorch's convention: relu'(0) = 0. */
static double relu_derivative(double s)
{
    return s > 0 ? 1.0 : 0.0;
}

/* Creates a named 1 x 1 f64 tensor on the tape. With `grad` set it is a
 * leaf, so the backward pass fills its gradient. */
static ag_tensor *scalar(ag_tape *tape, const char *name, double value, bool grad)
{
    ag_tensor *t = ag_full(tape, AG_F64, AG_SHAPE(1, 1), value);

    if (t == NULL)
        return NULL;
    ag_tensor_set_name(t, name);
    if (grad && ag_tensor_set_requires_grad(t, true) != 0)
        return NULL;
    return t;
}

/* Tensors of the network on the tape, kept so their adjoints can be read. */
typedef struct network_tensors {
    ag_tensor *w1, *b1, *w2, *b2, *w3, *b3;
    ag_tensor *s1, *z1, *s2, *z2, *f, *loss;
} network_tensors;

/* Builds the forward pass on the tape, naming each intermediate value. */
static int build_forward(ag_tape *tape, const network_values *v, nn_activation kind,
                         network_tensors *n)
{
    ag_tensor *x = scalar(tape, "x", v->x, false);
    ag_tensor *y = scalar(tape, "y", v->y, false);

    n->w1 = scalar(tape, "W1", v->w1, true);
    n->b1 = scalar(tape, "b1", v->b1, true);
    n->w2 = scalar(tape, "W2", v->w2, true);
    n->b2 = scalar(tape, "b2", v->b2, true);
    n->w3 = scalar(tape, "W3", v->w3, true);
    n->b3 = scalar(tape, "b3", v->b3, true);

    n->s1 = ag_add(tape, ag_matmul(tape, x, n->w1), n->b1);
    n->z1 = nn_activate(tape, n->s1, kind);
    n->s2 = ag_add(tape, ag_matmul(tape, n->z1, n->w2), n->b2);
    n->z2 = nn_activate(tape, n->s2, kind);
    n->f = ag_add(tape, ag_matmul(tape, n->z2, n->w3), n->b3);
    n->loss = ag_pow_scalar(tape, ag_sub(tape, y, n->f), 2.0);
    if (n->loss == NULL)
        return -1;

    ag_tensor_set_name(n->s1, "S1");
    ag_tensor_set_name(n->z1, "Z1");
    ag_tensor_set_name(n->s2, "S2");
    ag_tensor_set_name(n->z2, "Z2");
    ag_tensor_set_name(n->f, "f");
    ag_tensor_set_name(n->loss, "L");
    return 0;
}

/* Returns the adjoint dL/dt the tape stored for t (0 when none reached it). */
static double tape_adjoint(const ag_tensor *t)
{
    ag_tensor *grad = ag_tensor_grad(t);

    return grad == NULL ? 0.0 : ag_tensor_item(grad);
}

/* Prints one row and returns whether formula and tape agree. */
static bool print_row(const char *name, const char *formula, double hand, double tape)
{
    double difference = hand - tape;
    double scale = fabs(hand) > 1.0 ? fabs(hand) : 1.0;

    printf("  %-8s = %-22s %22.15e %22.15e %10.2e\n", name, formula, hand, tape, difference);
    return fabs(difference) <= AGREEMENT_TOLERANCE * scale;
}

/* Runs the network for one activation and prints the comparison and the
 * tape. Clears *agree when a gradient disagrees. Returns 0, or 1 when the
 * library fails. */
static int run(const network_values *v, const activation *act, const char *out_dir,
               bool *agree)
{
    ag_tape *tape = ag_tape_new();
    network_tensors n;

    if (tape == NULL || build_forward(tape, v, act->kind, &n) != 0 ||
        ag_backward(tape, n.loss, NULL) != 0) {
        ag_tape_free(tape);
        return ex_fail("lecture_backprop");
    }

    /* The forward pass by hand, in double precision. */
    forward_values fw;
    fw.s1 = v->x * v->w1 + v->b1;
    fw.z1 = act->h(fw.s1);
    fw.s2 = fw.z1 * v->w2 + v->b2;
    fw.z2 = act->h(fw.s2);
    fw.f = fw.z2 * v->w3 + v->b3;
    fw.loss = (v->y - fw.f) * (v->y - fw.f);

    printf("\nh = %s\n", act->name);
    printf("forward:  S1 = %.6f  Z1 = %.6f  S2 = %.6f  Z2 = %.6f  f = %.6f  L = %.6f\n",
           fw.s1, fw.z1, fw.s2, fw.z2, fw.f, fw.loss);
    printf("  %-8s   %-22s %22s %22s %10s\n", "gradient", "formula", "by hand", "tape",
           "difference");

    /* The backward pass by hand, each line one of the lecture's formulas. */
    double dl_df = -2.0 * (v->y - fw.f);
    double dl_dw3 = dl_df * fw.z2;
    double dl_db3 = dl_df;
    double dl_dz2 = dl_df * v->w3;
    double dl_ds2 = dl_dz2 * act->dh(fw.s2);
    double dl_dw2 = dl_ds2 * fw.z1;
    double dl_db2 = dl_ds2;
    double dl_dz1 = dl_ds2 * v->w2;
    double dl_ds1 = dl_dz1 * act->dh(fw.s1);
    double dl_dw1 = dl_ds1 * v->x;
    double dl_db1 = dl_ds1;

    bool ok = true;
    ok &= print_row("dL/df", "-2(y - f)", dl_df, tape_adjoint(n.f));
    ok &= print_row("dL/dW3", "dL/df Z2", dl_dw3, tape_adjoint(n.w3));
    ok &= print_row("dL/db3", "dL/df", dl_db3, tape_adjoint(n.b3));
    ok &= print_row("dL/dZ2", "dL/df W3", dl_dz2, tape_adjoint(n.z2));
    ok &= print_row("dL/dS2", "dL/dZ2 h'(S2)", dl_ds2, tape_adjoint(n.s2));
    ok &= print_row("dL/dW2", "dL/dS2 Z1", dl_dw2, tape_adjoint(n.w2));
    ok &= print_row("dL/db2", "dL/dS2", dl_db2, tape_adjoint(n.b2));
    ok &= print_row("dL/dZ1", "dL/dS2 W2", dl_dz1, tape_adjoint(n.z1));
    printf("  exercise:\n");
    ok &= print_row("dL/dS1", "dL/dZ1 h'(S1)", dl_ds1, tape_adjoint(n.s1));
    ok &= print_row("dL/dW1", "dL/dS1 x", dl_dw1, tape_adjoint(n.w1));
    ok &= print_row("dL/db1", "dL/dS1", dl_db1, tape_adjoint(n.b1));
    printf("%s\n", ok ? "every formula agrees with the tape"
                      : "MISMATCH: a formula and the tape disagree");
    *agree = *agree && ok;

    printf("\nthe tape (records in the order the backward pass visits them):\n");
    fflush(stdout);
    if (ag_tape_print(tape, stdout) != 0)
        ex_fail("lecture_backprop: printing the tape failed");

    /* The same graph as Graphviz DOT, for `dot -Tpng`. */
    char name[64];
    char path[4096];
    snprintf(name, sizeof name, "lecture_backprop_%s.dot", act->name);
    FILE *dot = fopen(ex_join(path, sizeof path, out_dir, name), "w");
    if (dot == NULL || ag_tape_write_dot(tape, dot) != 0 || fclose(dot) != 0)
        fprintf(stderr, "lecture_backprop: cannot write %s\n", path);
    else
        fprintf(stderr, "graph written to %s (draw it with: dot -Tpng -O %s)\n", path, path);

    ag_tape_free(tape);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"out", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *out_dir = EX_DEFAULT_OUT;
    int c;

    while ((c = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        if (c == 'o') {
            out_dir = optarg;
        } else {
            printf("usage: lecture_backprop [--out DIR]\n"
                   "Prints the lecture's hand-derived gradients of a scalar network\n"
                   "beside the tape's values; writes the graphs as DOT into DIR\n"
                   "(default %s).\n",
                   EX_DEFAULT_OUT);
            return c == 'h' ? 0 : 2;
        }
    }
    if (ex_make_dir(out_dir) != 0)
        return 1;

    /* Numbers chosen so every ReLU is active (S1, S2 > 0) and f misses y. */
    const network_values v = {
        .x = 0.5, .y = 2.0,
        .w1 = 0.8, .b1 = 0.1, .w2 = 1.2, .b2 = -0.3, .w3 = 1.5, .b3 = 0.2,
    };
    const activation activations[2] = {
        {"sigmoid", NN_SIGMOID, sigmoid, sigmoid_derivative},
        {"relu", NN_RELU, relu, relu_derivative},
    };
    bool agree = true;

    printf("The lecture's scalar network: S1 = x W1 + b1, Z1 = h(S1), "
           "S2 = Z1 W2 + b2, Z2 = h(S2),\n"
           "f = Z2 W3 + b3, L = (y - f)^2, with x = %g, y = %g, W1 = %g, b1 = %g, "
           "W2 = %g, b2 = %g, W3 = %g, b3 = %g.\n"
           "Each gradient from its hand-derived formula beside the tape's value:\n",
           v.x, v.y, v.w1, v.b1, v.w2, v.b2, v.w3, v.b3);

    for (int i = 0; i < 2; i++) {
        if (run(&v, &activations[i], out_dir, &agree) != 0)
            return 1;
    }
    return agree ? 0 : 1;
}
