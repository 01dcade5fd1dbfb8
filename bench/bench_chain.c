/*
 * The scalar chain: v = x, then 10,000 ops v = v * a, v = v + b,
 * v = tanh(v) in turn, in f64. On the tape every op is a one-element tensor
 * op, so the time per op is the cost of dispatch, recording and the reverse
 * sweep rather than of arithmetic. The plain C loop computes the same value
 * with doubles: the cost of the function itself.
 */
#include <math.h>
#include <stdio.h>

#include "workloads.h"

#define CHAIN_OPS 10000
#define MAX_REPS 1000

/* Inputs of the chain, the same as in torch_bench.py. The fixed point of
 * v = tanh(0.999 v + 0.01), about 0.30, is attracting, so the value stays
 * finite. Each mul, add, tanh triple scales the adjoint by about
 * 0.999 (1 - 0.30^2) = 0.91, so dv/dx is about 1e-140 after 3,333 triples:
 * every adjoint stays a normal double, and the sweep does not time
 * subnormal arithmetic, which many CPUs run far slower. */
#define CHAIN_X 0.5
#define CHAIN_A 0.999
#define CHAIN_B 0.01

/* ---- on the tape ---------------------------------------------------------- */

typedef struct chain_state {
    ag_tape *tape;
    ag_tensor *x; /* heap leaves that require gradients */
    ag_tensor *a;
    ag_tensor *b;
    double value;
} chain_state;

static int chain_step(void *context)
{
    chain_state *s = context;
    ag_tape *tape = s->tape;
    ag_tensor *v = s->x;
    int i = 0;

    ag_tape_reset(tape);
    ag_tensor_zero_grad(s->x);
    ag_tensor_zero_grad(s->a);
    ag_tensor_zero_grad(s->b);
    for (; i + 3 <= CHAIN_OPS; i += 3) {
        v = ag_mul(tape, v, s->a);
        v = ag_add(tape, v, s->b);
        v = ag_tanh(tape, v);
    }
    for (; i < CHAIN_OPS; i++)
        v = ag_mul(tape, v, s->a); /* 10,000 = 3 * 3333 + 1 */

    if (v == NULL || ag_backward(tape, v, NULL) != 0)
        return bench_fail("chain");
    s->value = ag_tensor_item(v);
    return 0;
}

int bench_chain(const bench_options *options)
{
    chain_state s = {0};
    double samples[MAX_REPS];
    size_t allocations = 0;
    int reps = options->reps < MAX_REPS ? options->reps : MAX_REPS;
    int rc = 0;

    s.tape = ag_tape_new();
    s.x = ag_scalar(NULL, AG_F64, CHAIN_X);
    s.a = ag_scalar(NULL, AG_F64, CHAIN_A);
    s.b = ag_scalar(NULL, AG_F64, CHAIN_B);
    if (s.tape == NULL || s.x == NULL || s.a == NULL || s.b == NULL ||
        ag_tensor_set_requires_grad(s.x, true) != 0 ||
        ag_tensor_set_requires_grad(s.a, true) != 0 ||
        ag_tensor_set_requires_grad(s.b, true) != 0)
        rc = bench_fail("chain");

    if (rc == 0)
        rc = bench_time_steps(chain_step, &s, reps, samples, &allocations);
    if (rc == 0) {
        char extra[256];

        for (int r = 0; r < reps; r++)
            samples[r] *= 1e9 / CHAIN_OPS;
        snprintf(extra, sizeof extra,
                 "\"allocations\": %zu, \"ops\": %d, \"value\": %.17g, "
                 "\"grad_x\": %.17g, \"grad_a\": %.17g, \"grad_b\": %.17g",
                 allocations, CHAIN_OPS, s.value, ag_tensor_item(ag_tensor_grad(s.x)),
                 ag_tensor_item(ag_tensor_grad(s.a)), ag_tensor_item(ag_tensor_grad(s.b)));
        bench_report("chain", options->threads, "ns/op", samples, reps, extra);
    }
    ag_tape_free(s.tape);
    ag_tensor_free(s.x);
    ag_tensor_free(s.a);
    ag_tensor_free(s.b);
    return rc;
}

/* ---- the plain C loop ----------------------------------------------------- */

/* Read through volatile so the compiler cannot fold the chain into a
 * constant computed once. */
static volatile double plain_inputs[3] = {CHAIN_X, CHAIN_A, CHAIN_B};
static double plain_value;

static int chain_plain_step(void *context)
{
    (void)context;
    double v = plain_inputs[0];
    const double a = plain_inputs[1];
    const double b = plain_inputs[2];
    int i = 0;

    for (; i + 3 <= CHAIN_OPS; i += 3) {
        v = v * a;
        v = v + b;
        v = tanh(v);
    }
    for (; i < CHAIN_OPS; i++)
        v = v * a;
    plain_value = v;
    return 0;
}

int bench_chain_plain(const bench_options *options)
{
    double samples[MAX_REPS];
    size_t allocations = 0;
    int reps = options->reps < MAX_REPS ? options->reps : MAX_REPS;

    if (bench_time_steps(chain_plain_step, NULL, reps, samples, &allocations) != 0)
        return -1;

    char extra[96];
    for (int r = 0; r < reps; r++)
        samples[r] *= 1e9 / CHAIN_OPS;
    snprintf(extra, sizeof extra, "\"ops\": %d, \"value\": %.17g", CHAIN_OPS, plain_value);
    bench_report("chain_plain", options->threads, "ns/op", samples, reps, extra);
    return 0;
}
