/* The tape: accumulation into adjoints, repeated backward calls, seeds,
 * recording switches, detaching, arena reuse and seeded random numbers. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "check_helpers.h"

static ag_tensor *leaf(ag_tape *tape, double value)
{
    ag_tensor *x = ag_scalar(tape, AG_F64, value);

    ck_assert_ptr_nonnull(x);
    ck_assert_int_eq(ag_tensor_set_requires_grad(x, true), 0);
    return x;
}

static double grad_of(const ag_tensor *t)
{
    ck_assert_ptr_nonnull(ag_tensor_grad(t));
    return ag_tensor_item(ag_tensor_grad(t));
}

START_TEST(value_used_twice)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = leaf(tape, 3.0);

    ag_tensor *y = ag_add(tape, x, x);
    ck_assert_int_eq(ag_backward(tape, y, NULL), 0);
    ck_assert_double_eq(grad_of(x), 2.0);
    ag_tape_free(tape);
}
END_TEST

START_TEST(diamond_graph)
{
    /* a = 2x, b = exp(x), y = a*b + a: dy/dx = 2 e^x + 2x e^x + 2. */
    ag_tape *tape = ag_tape_new();
    double x0 = 0.7;
    ag_tensor *x = leaf(tape, x0);

    ag_tensor *a = ag_mul_scalar(tape, x, 2.0);
    ag_tensor *b = ag_exp(tape, x);
    ag_tensor *y = ag_add(tape, ag_mul(tape, a, b), a);
    ck_assert_int_eq(ag_backward(tape, y, NULL), 0);

    ck_assert_close(grad_of(x), 2 * exp(x0) + 2 * x0 * exp(x0) + 2, 1e-15, "dy/dx");
    /* Intermediate adjoints stay readable: dy/da = b + 1, dy/db = a. */
    ck_assert_close(grad_of(a), exp(x0) + 1, 1e-15, "dy/da");
    ck_assert_close(grad_of(b), 2 * x0, 1e-15, "dy/db");
    ag_tape_free(tape);
}
END_TEST

START_TEST(variable_reassigned)
{
    /* v = x; v = v*v; v = v + x  computes x^2 + x, so dv/dx = 2x + 1. */
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = leaf(tape, 1.25);
    ag_tensor *v = x;

    v = ag_mul(tape, v, v);
    v = ag_add(tape, v, x);
    ck_assert_int_eq(ag_backward(tape, v, NULL), 0);
    ck_assert_double_eq(grad_of(x), 2 * 1.25 + 1);
    ag_tape_free(tape);
}
END_TEST

START_TEST(backward_twice_doubles_leaves)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = leaf(tape, 0.5);
    ag_tensor *h = ag_tanh(tape, x);
    ag_tensor *y = ag_mul(tape, h, h);

    ck_assert_int_eq(ag_backward(tape, y, NULL), 0);
    double first = grad_of(x);
    double first_h = grad_of(h);
    ck_assert_int_eq(ag_backward(tape, y, NULL), 0);

    /* d/dx tanh(x)^2 = 2 tanh(x) (1 - tanh(x)^2) */
    double expected = 2 * tanh(0.5) * (1 - tanh(0.5) * tanh(0.5));
    ck_assert_close(first, expected, 1e-15, "first call");
    ck_assert_close(grad_of(x), 2 * expected, 1e-15, "leaf after second call");
    ck_assert_double_eq(grad_of(h), first_h);

    ag_tensor_zero_grad(x);
    ck_assert_double_eq(grad_of(x), 0.0);
    ag_tape_free(tape);
}
END_TEST

START_TEST(seed_gives_vector_jacobian_product)
{
    const double xs[] = {1.0, -2.0, 0.5};
    const double ws[] = {3.0, 4.0, -1.0};
    const double vs[] = {0.1, 0.2, 0.3};
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(3), xs);
    ag_tensor *w = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(3), ws);
    ag_tensor *v = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(3), vs);

    ag_tensor_set_requires_grad(x, true);
    ag_tensor *y = ag_mul(tape, x, w); /* J = diag(w) */
    ck_assert_int_eq(ag_backward(tape, y, v), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(x), i), vs[i] * ws[i]);
    ag_tape_free(tape);
}
END_TEST

START_TEST(backward_rejects_bad_seed)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_ones(tape, AG_F64, AG_SHAPE(2, 3));

    ag_tensor_set_requires_grad(x, true);
    ag_tensor *y = ag_exp(tape, x);

    ck_assert_int_eq(ag_backward(tape, y, NULL), -1);
    ck_assert_ptr_nonnull(strstr(ag_error(), "(2x3) has 6 elements"));

    ag_tensor *seed = ag_ones(tape, AG_F64, AG_SHAPE(3, 2));
    ck_assert_int_eq(ag_backward(tape, y, seed), -1);
    ck_assert_ptr_nonnull(strstr(ag_error(), "seed of shape (3x2) f64 does not match output of shape (2x3) f64"));
    ag_tape_free(tape);
}
END_TEST

START_TEST(no_recording_mode)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = leaf(tape, 2.0);

    ck_assert(ag_tape_set_recording(tape, false));
    ag_tensor *y = ag_exp(tape, x);
    ck_assert(!ag_tape_set_recording(tape, true));

    ck_assert_double_eq(ag_tensor_item(y), exp(2.0));
    ck_assert(!ag_tensor_requires_grad(y));
    ck_assert_uint_eq(ag_tape_size(tape), 0);
    ck_assert_int_eq(ag_backward(tape, y, NULL), -1);
    ck_assert_ptr_nonnull(strstr(ag_error(), "does not require a gradient"));
    ag_tape_free(tape);
}
END_TEST

START_TEST(detach_stops_gradient)
{
    /* y = detach(x) * x: dy/dx = x, not 2x. */
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = leaf(tape, 3.0);
    ag_tensor *y = ag_mul(tape, ag_detach(tape, x), x);

    ck_assert_int_eq(ag_backward(tape, y, NULL), 0);
    ck_assert_double_eq(grad_of(x), 3.0);
    ag_tape_free(tape);
}
END_TEST

START_TEST(records_only_what_needs_grad)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *c = ag_scalar(tape, AG_F64, 1.0);
    ag_tensor *x = leaf(tape, 1.0);

    ag_tensor *k = ag_exp(tape, c); /* constant: not recorded */
    ag_tensor *y = ag_mul(tape, k, x);
    ck_assert_uint_eq(ag_tape_size(tape), 1);
    ck_assert_str_eq(ag_tape_record(tape, 0)->op->name, "mul");
    ck_assert_ptr_eq(ag_tensor_record(y), ag_tape_record(tape, 0));
    ck_assert_ptr_null(ag_tensor_grad(c));
    ag_tape_free(tape);
}
END_TEST

START_TEST(requires_grad_only_on_leaves)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = leaf(tape, 1.0);
    ag_tensor *y = ag_exp(tape, x);

    ck_assert_int_eq(ag_tensor_set_requires_grad(y, true), -1);
    ck_assert_ptr_nonnull(strstr(ag_error(), "only leaves"));
    ag_tape_free(tape);
}
END_TEST

START_TEST(heap_leaf_outlives_reset)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *w = ag_scalar(NULL, AG_F64, 2.0);

    ag_tensor_set_requires_grad(w, true);
    for (int step = 0; step < 3; step++) {
        ag_tape_reset(tape);
        ag_tensor *y = ag_mul(tape, w, w);
        ck_assert_int_eq(ag_backward(tape, y, NULL), 0);
    }
    /* Three accumulated calls of d(w^2)/dw = 4. */
    ck_assert_double_eq(grad_of(w), 12.0);
    ag_tensor_free(w);
    ag_tape_free(tape);
}
END_TEST

START_TEST(mixed_dtypes_rejected)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *a = ag_ones(tape, AG_F32, AG_SHAPE(2));
    ag_tensor *b = ag_ones(tape, AG_F64, AG_SHAPE(2));

    ck_assert_error_contains(ag_add(tape, a, b), "ag_add: dtypes differ: f32 and f64");
    ag_tape_free(tape);
}
END_TEST

START_TEST(invalid_shapes_rejected)
{
    size_t dims[AG_MAX_DIMS + 1] = {1, 1, 1, 1, 1, 1, 1};

    ck_assert_error_contains(ag_zeros(NULL, AG_F64, 0, dims), "invalid number of dimensions 0");
    ck_assert_error_contains(ag_zeros(NULL, AG_F64, AG_MAX_DIMS + 1, dims),
                             "invalid number of dimensions 7");
    ck_assert_error_contains(ag_tensor_from_data(NULL, AG_F64, AG_SHAPE(2), NULL),
                             "data is NULL");
    ck_assert_error_contains(ag_zeros(NULL, AG_F64, AG_SHAPE((size_t)1 << 40, (size_t)1 << 40)),
                             "too large");
}
END_TEST

START_TEST(empty_tensor_allowed)
{
    ag_tensor *t = ag_zeros(NULL, AG_F32, AG_SHAPE(0, 3));

    ck_assert_ptr_nonnull(t);
    ck_assert_uint_eq(ag_tensor_numel(t), 0);
    ck_assert_uint_eq(ag_tensor_dim(t, -1), 3);
    ag_tensor_free(t);
}
END_TEST

START_TEST(arena_grows_then_reuses)
{
    ag_tape *tape = ag_tape_new();

    /* Outgrow the first chunk several times within one step. */
    for (int i = 0; i < 40; i++)
        ck_assert_ptr_nonnull(ag_zeros(tape, AG_F64, AG_SHAPE(1000)));
    size_t grown = ag_tape_capacity(tape);
    ag_tape_reset(tape);
    ck_assert_uint_eq(ag_tape_capacity(tape), grown);

    counting_allocator_install();
    for (int i = 0; i < 40; i++)
        ck_assert_ptr_nonnull(ag_zeros(tape, AG_F64, AG_SHAPE(1000)));
    counting_allocator_remove();
    ck_assert_uint_eq(counting_allocator_calls(), 0);
    ag_tape_free(tape);
}
END_TEST

/* One training step of a 3-8-1 network with mean squared error. */
static void training_step(ag_tape *tape, ag_tensor *x, ag_tensor *y, ag_tensor **params)
{
    ag_tape_reset(tape);
    ag_tensor *h = ag_relu(tape, ag_linear(tape, x, params[0], params[1]));
    ag_tensor *f = ag_linear(tape, h, params[2], params[3]);
    ag_tensor *d = ag_sub(tape, f, y);
    ag_tensor *loss = ag_mean(tape, ag_mul(tape, d, d));
    ck_assert_ptr_nonnull(loss);
    ck_assert_int_eq(ag_backward(tape, loss, NULL), 0);
}

START_TEST(warm_step_allocates_nothing)
{
    ag_rng rng = ag_rng_new(7);
    ag_tensor *params[4] = {
        ag_rand_normal(NULL, AG_F32, AG_SHAPE(3, 8), 0, 0.5, &rng),
        ag_zeros(NULL, AG_F32, AG_SHAPE(1, 8)),
        ag_rand_normal(NULL, AG_F32, AG_SHAPE(8, 1), 0, 0.5, &rng),
        ag_zeros(NULL, AG_F32, AG_SHAPE(1, 1)),
    };
    ag_tensor *x = ag_rand_normal(NULL, AG_F32, AG_SHAPE(16, 3), 0, 1, &rng);
    ag_tensor *y = ag_rand_normal(NULL, AG_F32, AG_SHAPE(16, 1), 0, 1, &rng);
    ag_tape *tape = ag_tape_new();

    for (int i = 0; i < 4; i++)
        ag_tensor_set_requires_grad(params[i], true);
    training_step(tape, x, y, params);
    training_step(tape, x, y, params);

    counting_allocator_install();
    for (int step = 0; step < 5; step++)
        training_step(tape, x, y, params);
    counting_allocator_remove();
    ck_assert_uint_eq(counting_allocator_calls(), 0);

    ag_tape_free(tape);
    for (int i = 0; i < 4; i++)
        ag_tensor_free(params[i]);
    ag_tensor_free(x);
    ag_tensor_free(y);
}
END_TEST

START_TEST(rng_matches_reference_bits)
{
    /* Values printed by tests/data/rng_reference.py, an independent
     * implementation of splitmix64 seeding and xoshiro256**. */
    const uint64_t seed0[] = {0x99ec5f36cb75f2b4u, 0xbf6e1f784956452au,
                              0x1a5f849d4933e6e0u, 0x6aa594f1262d2d2cu};
    const uint64_t seed42[] = {0x15780b2e0c2ec716u, 0x6104d9866d113a7eu,
                               0xae17533239e499a1u, 0xecb8ad4703b360a1u};
    ag_rng a = ag_rng_new(0);
    ag_rng b = ag_rng_new(42);

    for (int i = 0; i < 4; i++) {
        ck_assert_uint_eq(ag_rng_next(&a), seed0[i]);
        ck_assert_uint_eq(ag_rng_next(&b), seed42[i]);
    }
}
END_TEST

START_TEST(rng_normal_moments)
{
    ag_rng rng = ag_rng_new(123);
    double sum = 0;
    double sum_sq = 0;
    const int n = 200000;

    for (int i = 0; i < n; i++) {
        double z = ag_rng_normal(&rng);
        sum += z;
        sum_sq += z * z;
    }
    /* Standard errors: mean 1/sqrt(n) ~ 0.0022, variance sqrt(2/n) ~ 0.0032. */
    ck_assert_double_lt(fabs(sum / n), 0.01);
    ck_assert_double_lt(fabs(sum_sq / n - 1.0), 0.015);
}
END_TEST

START_TEST(rng_below_in_range)
{
    ag_rng rng = ag_rng_new(5);
    int counts[3] = {0, 0, 0};

    for (int i = 0; i < 30000; i++) {
        uint64_t k = ag_rng_below(&rng, 3);
        ck_assert_uint_lt(k, 3);
        counts[k]++;
    }
    for (int k = 0; k < 3; k++)
        ck_assert_int_gt(counts[k], 9500);
}
END_TEST

START_TEST(accessors_accept_null)
{
    ag_error_clear();
    ck_assert_uint_eq(ag_tensor_numel(NULL), 0);
    ck_assert_ptr_nonnull(strstr(ag_error(), "ag_tensor_numel: tensor is NULL"));

    /* An earlier failure's message is kept. */
    ag_set_error("first failure");
    ck_assert_ptr_null(ag_tensor_grad(NULL));
    ck_assert(isnan(ag_tensor_item(NULL)));
    ck_assert(isnan(ag_tensor_get(NULL, 0)));
    ck_assert_int_eq(ag_tensor_set(NULL, 0, 1.0), -1);
    ck_assert_ptr_null(ag_tensor_data(NULL));
    ck_assert_int_eq(ag_tensor_ndim(NULL), 0);
    ck_assert(!ag_tensor_requires_grad(NULL));
    ck_assert_str_eq(ag_tensor_name(NULL), "");
    ck_assert_str_eq(ag_error(), "first failure");
}
END_TEST

START_TEST(tensor_tape_tells_owner)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *on_tape = ag_scalar(tape, AG_F64, 1.0);
    ag_tensor *on_heap = ag_scalar(NULL, AG_F64, 1.0);

    ck_assert_ptr_eq(ag_tensor_tape(on_tape), tape);
    ck_assert_ptr_null(ag_tensor_tape(on_heap));
    ag_tensor_free(on_heap);
    ag_tape_free(tape);
}
END_TEST

START_TEST(apply_checks_its_arguments)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_scalar(tape, AG_F64, 1.0);
    const ag_op *add_scalar = ag_op_find("add_scalar");
    ag_tensor *two[2] = {x, x};

    ck_assert_ptr_nonnull(add_scalar);
    ck_assert_error_contains(ag_apply(tape, add_scalar, 1, &x, 1, NULL),
                             "ag_apply: op \"add_scalar\" given 1 params but params is NULL");
    ck_assert_error_contains(ag_apply(tape, add_scalar, 2, two, 0, NULL),
                             "ag_apply: op \"add_scalar\" takes 1 input, got 2");
    ck_assert_error_contains(ag_apply(tape, add_scalar, 1, NULL, 0, NULL),
                             "ag_apply: inputs is NULL");
    ck_assert_error_contains(ag_apply(tape, add_scalar, 1, &x, 5, (double[5]){0}),
                             "ag_apply: op \"add_scalar\" given 5 params; an op takes 0 to 4");
    ck_assert_error_contains(ag_apply(NULL, add_scalar, 1, &x, 0, NULL),
                             "ag_apply: tape is NULL");
    ag_tape_free(tape);
}
END_TEST

/* ag_apply also runs ops that were never registered, so it checks the
 * definition itself instead of crashing on it. */
START_TEST(apply_rejects_incomplete_op)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_scalar(tape, AG_F64, 1.0);
    ag_tensor *five[5] = {x, x, x, x, x};
    ag_op op = *ag_op_find("neg");

    op.shape = NULL;
    ck_assert_error_contains(ag_apply(tape, &op, 1, &x, 0, NULL),
                             "ag_apply: op \"neg\" is incomplete");
    op = *ag_op_find("neg");
    op.n_inputs = 5;
    ck_assert_error_contains(ag_apply(tape, &op, 5, five, 0, NULL),
                             "it declares 5");
    ag_tape_free(tape);
}
END_TEST

/* A NULL input stands for an earlier failure, whose message ag_apply keeps,
 * even when other arguments are wrong too. */
START_TEST(apply_keeps_message_of_null_input)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_scalar(tape, AG_F64, 1.0);

    ag_set_error("first failure");
    ck_assert_ptr_null(ag_add(tape, x, NULL));
    ck_assert_ptr_null(ag_add(NULL, NULL, x));
    ck_assert_str_eq(ag_error(), "first failure");
    ag_tape_free(tape);
}
END_TEST

/* Elementwise ops on inputs of one shape take their output's shape from
 * input 0; the others ask the shape rule. Both give the broadcast shape. */
START_TEST(elementwise_output_shapes)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *m = ag_full(tape, AG_F32, AG_SHAPE(2, 3), 2.0);
    ag_tensor *row = ag_full(tape, AG_F32, AG_SHAPE(3), 1.0);
    ag_tensor *col = ag_full(tape, AG_F32, AG_SHAPE(2, 1), 4.0);
    ag_tensor *same = ag_mul(tape, m, m);
    ag_tensor *wide = ag_add(tape, row, col);
    ag_tensor *neg = ag_neg(tape, col);

    ck_assert_int_eq(ag_tensor_ndim(same), 2);
    ck_assert_uint_eq(ag_tensor_shape(same)[0], 2);
    ck_assert_uint_eq(ag_tensor_shape(same)[1], 3);
    ck_assert_double_eq(ag_tensor_get(same, 5), 4.0);
    ck_assert_int_eq(ag_tensor_ndim(wide), 2);
    ck_assert_uint_eq(ag_tensor_shape(wide)[0], 2);
    ck_assert_uint_eq(ag_tensor_shape(wide)[1], 3);
    ck_assert_double_eq(ag_tensor_get(wide, 4), 5.0);
    ck_assert_uint_eq(ag_tensor_shape(neg)[0], 2);
    ck_assert_uint_eq(ag_tensor_shape(neg)[1], 1);
    ck_assert_double_eq(ag_tensor_get(neg, 1), -4.0);
    /* A (3) and a (1, 3) hold as many elements but differ in rank. */
    ag_tensor *lifted = ag_add(tape, row, ag_full(tape, AG_F32, AG_SHAPE(1, 3), 1.0));
    ck_assert_int_eq(ag_tensor_ndim(lifted), 2);
    ag_tape_free(tape);
}
END_TEST

static int unnamed_shape(const ag_record *rec, ag_dtype *dtype, int *ndim, size_t *shape)
{
    const ag_tensor *x = rec->inputs[0];

    *dtype = ag_tensor_dtype(x);
    *ndim = ag_tensor_ndim(x);
    memcpy(shape, ag_tensor_shape(x), (size_t)*ndim * sizeof *shape);
    return 0;
}

static int unnamed_forward(ag_tape *tape, ag_record *rec)
{
    (void)tape;
    (void)rec;
    return 0;
}

/* Every message names the op, so ag_apply rejects an op without a name, as
 * ag_op_register does. */
START_TEST(apply_rejects_unnamed_op)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_scalar(tape, AG_F64, 1.0);
    ag_tensor *two[2] = {x, x};
    const ag_op op = {.name = NULL, .n_inputs = 1, .shape = unnamed_shape,
                      .forward = unnamed_forward};

    const ag_op empty = {.name = "", .n_inputs = 1, .shape = unnamed_shape,
                         .forward = unnamed_forward};

    ck_assert_error_contains(ag_apply(tape, &op, 2, two, 0, NULL),
                             "ag_apply: op \"\" is incomplete: it needs a name");
    ck_assert_error_contains(ag_apply(tape, &empty, 1, &x, 0, NULL),
                             "ag_apply: op \"\" is incomplete: it needs a name");
    ck_assert_error_contains(ag_apply(tape, &empty, 1, NULL, 0, NULL),
                             "ag_apply: inputs is NULL for 1 input;");
    ag_tape_free(tape);
}
END_TEST

/* Checks edge shapes of the one-bump path, forward and backward: empty
 * tensors, single elements of different ranks, six dimensions and reshapes. */
START_TEST(elementwise_edge_shapes)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *empty = ag_zeros(tape, AG_F64, AG_SHAPE(3, 0, 2));
    ag_tensor *scalar = ag_full(tape, AG_F64, AG_SHAPE(1), 2.0);
    ag_tensor *cube = ag_full(tape, AG_F64, AG_SHAPE(1, 1, 1), 3.0);
    ag_tensor *x = ag_full(tape, AG_F64, AG_SHAPE(2, 3, 4), 0.5);

    ck_assert_int_eq(ag_tensor_set_requires_grad(empty, true), 0);
    ck_assert_int_eq(ag_tensor_set_requires_grad(scalar, true), 0);
    ck_assert_int_eq(ag_tensor_set_requires_grad(x, true), 0);

    ag_tensor *empty_product = ag_mul(tape, ag_exp(tape, empty), empty);
    ck_assert_int_eq(ag_tensor_ndim(empty_product), 3);
    ck_assert_uint_eq(ag_tensor_numel(empty_product), 0);
    ck_assert_uint_eq(ag_tensor_shape(empty_product)[1], 0);

    /* A (1) times a (1x1x1) gives a (1x1x1). */
    ag_tensor *product = ag_mul(tape, scalar, cube);
    ck_assert_int_eq(ag_tensor_ndim(product), 3);
    ck_assert_double_eq(ag_tensor_item(product), 6.0);

    ag_tensor *six_dims = ag_reshape(tape, x, AG_SHAPE(1, 2, 1, 3, 4, 1));
    ag_tensor *matrix = ag_reshape(tape, six_dims, AG_SHAPE(6, 4));
    ag_tensor *exp_product = ag_mul(tape, ag_exp(tape, six_dims), six_dims);
    ck_assert_int_eq(ag_tensor_ndim(exp_product), 6);
    ck_assert_uint_eq(ag_tensor_shape(exp_product)[4], 4);
    ck_assert_ptr_null(ag_add(tape, matrix, ag_reshape(tape, x, AG_SHAPE(4, 6))));

    ag_tensor *elementwise = ag_add(tape, ag_sum(tape, exp_product), ag_sum(tape, empty_product));
    ag_tensor *scaled = ag_sum(tape, ag_mul(tape, product, ag_sum(tape, matrix)));
    ag_tensor *loss = ag_add(tape, elementwise, scaled);
    ck_assert_int_eq(ag_backward(tape, loss, NULL), 0);
    /* The loss contains x e^x + 6 x per element, so dloss/dx = e^x (1 + x) + 6. */
    ck_assert_double_eq_tol(ag_tensor_get(ag_tensor_grad(x), 23),
                            exp(0.5) * 1.5 + 6.0, 1e-12);
    /* The loss contains 3 * scalar * sum(x), and sum(x) = 24 * 0.5. */
    ck_assert_double_eq_tol(ag_tensor_item(ag_tensor_grad(scalar)), 36.0, 1e-12);
    ck_assert_uint_eq(ag_tensor_numel(ag_tensor_grad(empty)), 0);
    ag_tape_free(tape);
}
END_TEST

/* Checks that outputs and adjoints of 64 bytes or more start on a cache
 * line, also after a small tensor has moved the arena cursor off one. */
START_TEST(elementwise_output_alignment)
{
    ag_tape *tape = ag_tape_new();

    for (size_t n = 1; n <= 20; n++) {
        ag_tape_reset(tape);
        ag_tensor *small = ag_scalar(tape, AG_F32, 1.0);
        ag_tensor *values = ag_full(tape, AG_F32, 1, (const size_t[]){n}, 0.5);
        ck_assert_int_eq(ag_tensor_set_requires_grad(values, true), 0);
        ag_tensor *y = ag_mul(tape, ag_exp(tape, values), values);
        ck_assert_ptr_nonnull(ag_add(tape, ag_exp(tape, small), small));
        ck_assert_int_eq(ag_backward(tape, ag_sum(tape, y), NULL), 0);

        uintptr_t align = n * sizeof(float) >= 64 ? 64 : 16;
        ck_assert_uint_eq((uintptr_t)ag_tensor_data(y) % align, 0);
        ck_assert_uint_eq((uintptr_t)ag_tensor_data(ag_tensor_grad(y)) % align, 0);
        ck_assert_uint_eq((uintptr_t)ag_tensor_data(ag_tensor_grad(values)) % align, 0);
    }
    ag_tape_free(tape);
}
END_TEST

/* Checks that heap tensors and their gradients start their data on a cache
 * line, whatever alignment malloc gives the block. */
START_TEST(heap_data_alignment)
{
    for (size_t n = 1; n <= 20; n++) {
        ag_dtype dtype = n % 2 == 0 ? AG_F64 : AG_F32;
        ag_tensor *t = ag_zeros(NULL, dtype, 1, (const size_t[]){n});

        ck_assert_ptr_nonnull(t);
        ck_assert_int_eq(ag_tensor_set_requires_grad(t, true), 0);
        ck_assert_uint_eq((uintptr_t)ag_tensor_data(t) % 64, 0);
        ck_assert_uint_eq((uintptr_t)ag_tensor_data(ag_tensor_grad(t)) % 64, 0);
        ag_tensor_free(t);
    }
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("tape");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, value_used_twice);
    tcase_add_test(tc, diamond_graph);
    tcase_add_test(tc, variable_reassigned);
    tcase_add_test(tc, backward_twice_doubles_leaves);
    tcase_add_test(tc, seed_gives_vector_jacobian_product);
    tcase_add_test(tc, backward_rejects_bad_seed);
    tcase_add_test(tc, no_recording_mode);
    tcase_add_test(tc, detach_stops_gradient);
    tcase_add_test(tc, records_only_what_needs_grad);
    tcase_add_test(tc, requires_grad_only_on_leaves);
    tcase_add_test(tc, heap_leaf_outlives_reset);
    tcase_add_test(tc, mixed_dtypes_rejected);
    tcase_add_test(tc, invalid_shapes_rejected);
    tcase_add_test(tc, empty_tensor_allowed);
    tcase_add_test(tc, arena_grows_then_reuses);
    tcase_add_test(tc, warm_step_allocates_nothing);
    tcase_add_test(tc, rng_matches_reference_bits);
    tcase_add_test(tc, rng_normal_moments);
    tcase_add_test(tc, rng_below_in_range);
    tcase_add_test(tc, accessors_accept_null);
    tcase_add_test(tc, tensor_tape_tells_owner);
    tcase_add_test(tc, apply_checks_its_arguments);
    tcase_add_test(tc, apply_rejects_incomplete_op);
    tcase_add_test(tc, apply_keeps_message_of_null_input);
    tcase_add_test(tc, elementwise_output_shapes);
    tcase_add_test(tc, apply_rejects_unnamed_op);
    tcase_add_test(tc, elementwise_edge_shapes);
    tcase_add_test(tc, elementwise_output_alignment);
    tcase_add_test(tc, heap_data_alignment);
    suite_add_tcase(suite, tc);
    return run_suite(suite);
}
