/* Named parameters, weight initialisation, dense layers and the MLP: values
 * against loops written out here, initial weights against their
 * distributions, and the error for each invalid argument. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check_helpers.h"
#include "tapegrad/nn.h"

#define ck_assert_failed_with(status, fragment)                              \
    do {                                                                     \
        ck_assert_int_eq((status), -1);                                      \
        ck_assert_ptr_nonnull(ag_error());                                   \
        ck_assert_msg(strstr(ag_error(), (fragment)) != NULL,                \
                      "error \"%s\" does not mention \"%s\"", ag_error(),    \
                      (fragment));                                           \
    } while (0)

/* ---- named parameters ----------------------------------------------------- */

START_TEST(params_add_and_get)
{
    nn_params *p = nn_params_new();
    ag_tensor *w = ag_zeros(NULL, AG_F64, AG_SHAPE(2, 3));

    ck_assert_int_eq(nn_params_add(p, "w", w), 0);
    ck_assert_ptr_eq(nn_params_get(p, "w"), w);
    ck_assert_ptr_null(nn_params_get(p, "v"));
    ck_assert_uint_eq(nn_params_count(p), 1);
    ck_assert_uint_eq(nn_params_numel(p), 6);
    ck_assert(ag_tensor_requires_grad(w));
    ck_assert_str_eq(ag_tensor_name(w), "w");
    nn_params_free(p);
}
END_TEST

START_TEST(params_insertion_order)
{
    const char *names[4] = {"zeta", "alpha", "mid", "beta"};
    nn_params *p = nn_params_new();

    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(nn_params_add(p, names[i], ag_scalar(NULL, AG_F32, i)), 0);
    for (size_t i = 0; i < 4; i++) {
        const char *name;
        ag_tensor *t = nn_params_at(p, i, &name);
        ck_assert_str_eq(name, names[i]);
        ck_assert_double_eq(ag_tensor_item(t), (double)i);
    }
    nn_params_free(p);
}
END_TEST

START_TEST(params_many_names)
{
    /* Enough entries to make the hash table and the order array grow. */
    nn_params *p = nn_params_new();
    char name[32];

    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "p%d", i);
        ck_assert_int_eq(nn_params_add(p, name, ag_scalar(NULL, AG_F64, i)), 0);
    }
    for (int i = 0; i < 300; i += 37) {
        snprintf(name, sizeof name, "p%d", i);
        ck_assert_double_eq(ag_tensor_item(nn_params_get(p, name)), (double)i);
    }
    ck_assert_uint_eq(nn_params_count(p), 300);
    nn_params_free(p);
}
END_TEST

START_TEST(params_duplicate_rejected)
{
    nn_params *p = nn_params_new();
    ag_tensor *second = ag_zeros(NULL, AG_F64, AG_SHAPE(1));

    ck_assert_int_eq(nn_params_add(p, "w", ag_zeros(NULL, AG_F64, AG_SHAPE(1))), 0);
    ck_assert_failed_with(nn_params_add(p, "w", second), "\"w\" already exists");
    ck_assert_uint_eq(nn_params_count(p), 1);
    ag_tensor_free(second); /* a failed add leaves it with the caller */
    nn_params_free(p);
}
END_TEST

START_TEST(params_same_tensor_rejected)
{
    nn_params *p = nn_params_new();
    ag_tensor *w = ag_zeros(NULL, AG_F64, AG_SHAPE(1));

    ck_assert_int_eq(nn_params_add(p, "w", w), 0);
    ck_assert_failed_with(nn_params_add(p, "v", w), "already in the set as \"w\"");
    nn_params_free(p);
}
END_TEST

START_TEST(params_bad_name_rejected)
{
    nn_params *p = nn_params_new();
    ag_tensor *w = ag_zeros(NULL, AG_F64, AG_SHAPE(1));
    char long_name[NN_PARAM_NAME_MAX + 2];

    memset(long_name, 'x', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    ck_assert_failed_with(nn_params_add(p, "", w), "name is empty");
    ck_assert_failed_with(nn_params_add(p, NULL, w), "name is NULL");
    ck_assert_failed_with(nn_params_add(p, long_name, w), "names have at most 255");
    ag_tensor_free(w);
    nn_params_free(p);
}
END_TEST

START_TEST(params_null_tensor_keeps_message)
{
    nn_params *p = nn_params_new();

    ag_set_error("earlier failure");
    ck_assert_int_eq(nn_params_add(p, "w", NULL), -1);
    ck_assert_str_eq(ag_error(), "earlier failure");
    ck_assert_uint_eq(nn_params_count(p), 0);
    nn_params_free(p);
}
END_TEST

START_TEST(params_at_out_of_range)
{
    nn_params *p = nn_params_new();

    ag_error_clear();
    ck_assert_ptr_null(nn_params_at(p, 0, NULL));
    ck_assert_ptr_nonnull(strstr(ag_error(), "index 0 is out of range for 0"));
    nn_params_free(p);
}
END_TEST

START_TEST(params_zero_grad)
{
    nn_params *p = nn_params_new();
    ag_tensor *w = ag_zeros(NULL, AG_F32, AG_SHAPE(3));

    ck_assert_int_eq(nn_params_add(p, "w", w), 0);
    for (size_t i = 0; i < 3; i++)
        ag_tensor_set(ag_tensor_grad(w), i, 1.5);
    nn_params_zero_grad(p);
    for (size_t i = 0; i < 3; i++)
        ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(w), i), 0.0);
    nn_params_free(p);
}
END_TEST

/* ---- initialisation ------------------------------------------------------- */

/* Sample mean and variance of a tensor's elements. */
static void moments(const ag_tensor *t, double *mean, double *variance)
{
    size_t n = ag_tensor_numel(t);
    double sum = 0.0;
    double squares = 0.0;

    for (size_t i = 0; i < n; i++)
        sum += ag_tensor_get(t, i);
    *mean = sum / (double)n;
    for (size_t i = 0; i < n; i++) {
        double d = ag_tensor_get(t, i) - *mean;
        squares += d * d;
    }
    *variance = squares / (double)(n - 1);
}

START_TEST(init_xavier_distribution)
{
    /* U(-a, a) with a = sqrt(6 / 500) has variance a^2 / 3 = 0.004. With
     * 60000 draws the sample variance's standard error is about 0.4% of
     * that and the mean's about 0.0024 a, so 2% and 0.02 a are > 5 errors. */
    nn_dense layer;
    ag_rng rng = ag_rng_new(1);
    double a = sqrt(6.0 / 500.0);
    double mean;
    double variance;

    ck_assert_int_eq(nn_dense_init(&layer, AG_F64, 200, 300, NN_RELU, NN_INIT_XAVIER, &rng), 0);
    for (size_t i = 0; i < 60000; i++)
        ck_assert(fabs(ag_tensor_get(layer.w, i)) <= a);
    moments(layer.w, &mean, &variance);
    ck_assert(fabs(mean) < 0.02 * a);
    ck_assert(fabs(variance / (a * a / 3.0) - 1.0) < 0.02);
    nn_dense_free(&layer);
}
END_TEST

START_TEST(init_he_distribution)
{
    /* N(0, 2 / 400): the sample variance of 60000 draws has a relative
     * standard error of sqrt(2 / 60000) = 0.6%, so 3% is five errors. */
    nn_dense layer;
    ag_rng rng = ag_rng_new(2);
    double mean;
    double variance;

    ck_assert_int_eq(nn_dense_init(&layer, AG_F64, 400, 150, NN_RELU, NN_INIT_HE, &rng), 0);
    moments(layer.w, &mean, &variance);
    ck_assert(fabs(mean) < 5.0 * sqrt(2.0 / 400.0 / 60000.0));
    ck_assert(fabs(variance / (2.0 / 400.0) - 1.0) < 0.03);
    nn_dense_free(&layer);
}
END_TEST

START_TEST(init_draw_order)
{
    /* W is filled in row-major order, one draw per element, and b is zero. */
    nn_dense layer;
    ag_rng rng = ag_rng_new(7);
    ag_rng replay = ag_rng_new(7);
    double a = sqrt(6.0 / 5.0);

    ck_assert_int_eq(nn_dense_init(&layer, AG_F64, 2, 3, NN_TANH, NN_INIT_XAVIER, &rng), 0);
    for (size_t i = 0; i < 6; i++)
        ck_assert_double_eq_tol(ag_tensor_get(layer.w, i), -a + 2.0 * a * ag_rng_uniform(&replay),
                                1e-15);
    ck_assert_uint_eq(ag_tensor_dim(layer.b, 0), 1);
    ck_assert_uint_eq(ag_tensor_dim(layer.b, 1), 3);
    for (size_t i = 0; i < 3; i++)
        ck_assert_double_eq(ag_tensor_get(layer.b, i), 0.0);
    nn_dense_free(&layer);
}
END_TEST

START_TEST(init_invalid_rejected)
{
    nn_dense layer;
    ag_rng rng = ag_rng_new(1);
    ag_tensor *v = ag_zeros(NULL, AG_F64, AG_SHAPE(4));

    ck_assert_failed_with(nn_dense_init(&layer, AG_F64, 0, 3, NN_RELU, NN_INIT_HE, &rng),
                          "0 inputs and 3 outputs");
    ck_assert_failed_with(nn_dense_init(&layer, AG_F64, 1, 0, NN_RELU, NN_INIT_HE, &rng),
                          "a layer of 1 input and 0 outputs is empty");
    ck_assert_ptr_null(layer.w);
    ck_assert_failed_with(nn_dense_init(&layer, AG_F64, 2, 3, (nn_activation)9, NN_INIT_HE,
                                        &rng),
                          "invalid activation 9");
    ck_assert_failed_with(nn_dense_init(&layer, AG_F64, 2, 3, NN_RELU, (nn_init)5, &rng),
                          "invalid init 5");
    ck_assert_failed_with(nn_init_weights(v, NN_INIT_HE, &rng), "is not 2-D");
    ag_tensor_free(v);
}
END_TEST

/* ---- dense layer ---------------------------------------------------------- */

static double apply_activation(nn_activation activation, double s)
{
    switch (activation) {
    case NN_RELU:
        return s > 0 ? s : 0.0;
    case NN_SIGMOID:
        return 1.0 / (1.0 + exp(-s));
    case NN_TANH:
        return tanh(s);
    default:
        return s;
    }
}

/* Z = h(xW + b) by loops, for x (rows x in), W (in x out), b (1 x out). */
static void dense_by_loops(const ag_tensor *x, const nn_dense *layer, double *z)
{
    size_t rows = ag_tensor_dim(x, 0);
    size_t in = ag_tensor_dim(layer->w, 0);
    size_t out = ag_tensor_dim(layer->w, 1);

    for (size_t r = 0; r < rows; r++) {
        for (size_t j = 0; j < out; j++) {
            double s = ag_tensor_get(layer->b, j);
            for (size_t k = 0; k < in; k++)
                s += ag_tensor_get(x, r * in + k) * ag_tensor_get(layer->w, k * out + j);
            z[r * out + j] = apply_activation(layer->activation, s);
        }
    }
}

START_TEST(dense_forward_matches_loops)
{
    const nn_activation activation = (nn_activation)_i;
    ag_tape *tape = ag_tape_new();
    ag_rng rng = ag_rng_new(3);
    nn_dense layer;
    double expected[4 * 5];

    ck_assert_int_eq(nn_dense_init(&layer, AG_F64, 3, 5, activation, NN_INIT_XAVIER, &rng), 0);
    for (size_t j = 0; j < 5; j++)
        ag_tensor_set(layer.b, j, 0.1 * (double)j - 0.2);
    ag_tensor *x = ag_rand_uniform(tape, AG_F64, AG_SHAPE(4, 3), -2, 2, &rng);
    ag_tensor *z = nn_dense_forward(tape, &layer, x);

    ck_assert_ptr_nonnull(z);
    ck_assert_uint_eq(ag_tensor_dim(z, 0), 4);
    ck_assert_uint_eq(ag_tensor_dim(z, 1), 5);
    dense_by_loops(x, &layer, expected);
    for (size_t i = 0; i < 20; i++)
        ck_assert_close(ag_tensor_get(z, i), expected[i], 1e-12, nn_activation_name(activation));

    nn_dense_free(&layer);
    ag_tape_free(tape);
}
END_TEST

START_TEST(dense_shape_mismatch_rejected)
{
    ag_tape *tape = ag_tape_new();
    ag_rng rng = ag_rng_new(3);
    nn_dense layer;

    ck_assert_int_eq(nn_dense_init(&layer, AG_F64, 3, 5, NN_RELU, NN_INIT_HE, &rng), 0);
    ag_error_clear();
    ck_assert_ptr_null(nn_dense_forward(tape, &layer, ag_zeros(tape, AG_F64, AG_SHAPE(4, 2))));
    ck_assert_ptr_nonnull(ag_error());
    nn_dense_free(&layer);
    ag_tape_free(tape);
}
END_TEST

START_TEST(activation_names)
{
    ck_assert_str_eq(nn_activation_name(NN_IDENTITY), "identity");
    ck_assert_str_eq(nn_activation_name(NN_RELU), "relu");
    ck_assert_str_eq(nn_activation_name(NN_SIGMOID), "sigmoid");
    ck_assert_str_eq(nn_activation_name(NN_TANH), "tanh");
    ck_assert_str_eq(nn_activation_name((nn_activation)42), "invalid");
}
END_TEST

/* ---- MLP ------------------------------------------------------------------ */

static const size_t lecture_widths[4] = {1, 20, 20, 1};
static const nn_activation lecture_activations[3] = {NN_RELU, NN_RELU, NN_IDENTITY};

START_TEST(mlp_param_names)
{
    nn_mlp *mlp = nn_mlp_new(AG_F32, 3, lecture_widths, lecture_activations, NN_INIT_HE, 1);
    nn_params *p = nn_mlp_params(mlp);
    const char *expected[6] = {"layer1.W", "layer1.b", "layer2.W",
                               "layer2.b", "layer3.W", "layer3.b"};
    const size_t rows[6] = {1, 1, 20, 1, 20, 1};
    const size_t cols[6] = {20, 20, 20, 20, 1, 1};

    ck_assert_ptr_nonnull(mlp);
    ck_assert_uint_eq(nn_params_count(p), 6);
    for (size_t i = 0; i < 6; i++) {
        const char *name;
        ag_tensor *t = nn_params_at(p, i, &name);
        ck_assert_str_eq(name, expected[i]);
        ck_assert_int_eq(ag_tensor_ndim(t), 2);
        ck_assert_uint_eq(ag_tensor_dim(t, 0), rows[i]);
        ck_assert_uint_eq(ag_tensor_dim(t, 1), cols[i]);
        ck_assert_int_eq(ag_tensor_dtype(t), AG_F32);
    }
    ck_assert_uint_eq(nn_params_numel(p), 20 + 20 + 400 + 20 + 20 + 1);
    ck_assert_int_eq(nn_mlp_n_layers(mlp), 3);
    ck_assert_ptr_eq(nn_mlp_layer(mlp, 1)->w, nn_params_get(p, "layer2.W"));
    ck_assert_int_eq(nn_mlp_layer(mlp, 2)->activation, NN_IDENTITY);
    nn_mlp_free(mlp);
}
END_TEST

START_TEST(mlp_seed_reproducible)
{
    nn_mlp *a = nn_mlp_new(AG_F64, 3, lecture_widths, lecture_activations, NN_INIT_HE, 5);
    nn_mlp *b = nn_mlp_new(AG_F64, 3, lecture_widths, lecture_activations, NN_INIT_HE, 5);
    nn_mlp *c = nn_mlp_new(AG_F64, 3, lecture_widths, lecture_activations, NN_INIT_HE, 6);
    ag_tensor *wa = nn_params_get(nn_mlp_params(a), "layer2.W");
    ag_tensor *wb = nn_params_get(nn_mlp_params(b), "layer2.W");
    ag_tensor *wc = nn_params_get(nn_mlp_params(c), "layer2.W");

    ck_assert_mem_eq(ag_tensor_data(wa), ag_tensor_data(wb), 400 * sizeof(double));
    ck_assert_int_ne(memcmp(ag_tensor_data(wa), ag_tensor_data(wc), 400 * sizeof(double)), 0);
    nn_mlp_free(a);
    nn_mlp_free(b);
    nn_mlp_free(c);
}
END_TEST

START_TEST(mlp_forward_matches_loops)
{
    const size_t widths[4] = {3, 6, 4, 2};
    const nn_activation activations[3] = {NN_TANH, NN_SIGMOID, NN_IDENTITY};
    nn_mlp *mlp = nn_mlp_new(AG_F64, 3, widths, activations, NN_INIT_XAVIER, 11);
    ag_tape *tape = ag_tape_new();
    ag_rng rng = ag_rng_new(12);
    ag_tensor *x = ag_rand_uniform(tape, AG_F64, AG_SHAPE(5, 3), -1, 1, &rng);
    double z1[5 * 6];
    double z2[5 * 4];
    double z3[5 * 2];

    /* Nonzero biases, so that a dropped bias shows. */
    for (int l = 0; l < 3; l++) {
        ag_tensor *b = nn_mlp_layer(mlp, l)->b;
        for (size_t j = 0; j < ag_tensor_numel(b); j++)
            ag_tensor_set(b, j, 0.05 * (double)(j + 1) * (l % 2 == 0 ? 1 : -1));
    }
    ag_tensor *out = nn_mlp_forward(tape, mlp, x);
    ck_assert_ptr_nonnull(out);

    dense_by_loops(x, nn_mlp_layer(mlp, 0), z1);
    ag_tensor *t1 = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(5, 6), z1);
    dense_by_loops(t1, nn_mlp_layer(mlp, 1), z2);
    ag_tensor *t2 = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(5, 4), z2);
    dense_by_loops(t2, nn_mlp_layer(mlp, 2), z3);
    ck_assert_uint_eq(ag_tensor_dim(out, 0), 5);
    ck_assert_uint_eq(ag_tensor_dim(out, 1), 2);
    for (size_t i = 0; i < 10; i++)
        ck_assert_close(ag_tensor_get(out, i), z3[i], 1e-12, "mlp output");

    ag_tape_free(tape);
    nn_mlp_free(mlp);
}
END_TEST

START_TEST(mlp_forward_names_layer)
{
    nn_mlp *mlp = nn_mlp_new(AG_F64, 3, lecture_widths, lecture_activations, NN_INIT_HE, 1);
    ag_tape *tape = ag_tape_new();

    ag_error_clear();
    ck_assert_ptr_null(nn_mlp_forward(tape, mlp, ag_zeros(tape, AG_F64, AG_SHAPE(4, 2))));
    ck_assert_ptr_nonnull(strstr(ag_error(), "nn_mlp_forward: layer 1 failed"));
    ag_tape_free(tape);
    nn_mlp_free(mlp);
}
END_TEST

START_TEST(mlp_invalid_rejected)
{
    const size_t zero_width[3] = {2, 0, 1};
    const size_t widths[3] = {2, 3, 1};
    const nn_activation bad[2] = {NN_RELU, (nn_activation)17};
    const nn_activation good[2] = {NN_RELU, NN_IDENTITY};

    ag_error_clear();
    ck_assert_ptr_null(nn_mlp_new(AG_F64, 0, widths, good, NN_INIT_HE, 1));
    ck_assert_ptr_nonnull(strstr(ag_error(), "n_layers is 0"));
    ck_assert_ptr_null(nn_mlp_new(AG_F64, 2, zero_width, good, NN_INIT_HE, 1));
    ck_assert_ptr_nonnull(strstr(ag_error(), "widths[1] is 0"));
    ck_assert_ptr_null(nn_mlp_new(AG_F64, 2, widths, bad, NN_INIT_HE, 1));
    ck_assert_ptr_nonnull(strstr(ag_error(), "activations[1] is 17"));
    ck_assert_ptr_null(nn_mlp_new(AG_F64, 2, widths, good, (nn_init)3, 1));
    ck_assert_ptr_nonnull(strstr(ag_error(), "invalid init 3"));
    ck_assert_ptr_null(nn_mlp_new((ag_dtype)4, 2, widths, good, NN_INIT_HE, 1));
    ck_assert_ptr_nonnull(strstr(ag_error(), "invalid dtype 4"));
    ck_assert_ptr_null(nn_mlp_new(AG_F64, 2, NULL, good, NN_INIT_HE, 1));
    ck_assert_ptr_nonnull(strstr(ag_error(), "widths is NULL"));
    ck_assert_ptr_null(nn_mlp_layer(NULL, 0));
}
END_TEST

START_TEST(params_reject_tape_tensor)
{
    nn_params *params = nn_params_new();
    ag_tape *tape = ag_tape_new();
    ag_tensor *t = ag_ones(tape, AG_F64, AG_SHAPE(2));

    ck_assert_int_eq(nn_params_add(params, "w", t), -1);
    ck_assert_ptr_nonnull(strstr(ag_error(), "nn_params_add: the tensor for \"w\" lives on a tape"));
    ck_assert_uint_eq(nn_params_count(params), 0);
    nn_params_free(params);
    ag_tape_free(tape);
}
END_TEST

static Suite *layers_suite(void)
{
    Suite *s = suite_create("nn_layers");
    TCase *params = tcase_create("params");
    TCase *init = tcase_create("init");
    TCase *dense = tcase_create("dense");
    TCase *mlp = tcase_create("mlp");

    tcase_add_test(params, params_reject_tape_tensor);
    tcase_add_test(params, params_add_and_get);
    tcase_add_test(params, params_insertion_order);
    tcase_add_test(params, params_many_names);
    tcase_add_test(params, params_duplicate_rejected);
    tcase_add_test(params, params_same_tensor_rejected);
    tcase_add_test(params, params_bad_name_rejected);
    tcase_add_test(params, params_null_tensor_keeps_message);
    tcase_add_test(params, params_at_out_of_range);
    tcase_add_test(params, params_zero_grad);
    suite_add_tcase(s, params);

    tcase_add_test(init, init_xavier_distribution);
    tcase_add_test(init, init_he_distribution);
    tcase_add_test(init, init_draw_order);
    tcase_add_test(init, init_invalid_rejected);
    suite_add_tcase(s, init);

    tcase_add_loop_test(dense, dense_forward_matches_loops, NN_IDENTITY, NN_TANH + 1);
    tcase_add_test(dense, dense_shape_mismatch_rejected);
    tcase_add_test(dense, activation_names);
    suite_add_tcase(s, dense);

    tcase_add_test(mlp, mlp_param_names);
    tcase_add_test(mlp, mlp_seed_reproducible);
    tcase_add_test(mlp, mlp_forward_matches_loops);
    tcase_add_test(mlp, mlp_forward_names_layer);
    tcase_add_test(mlp, mlp_invalid_rejected);
    suite_add_tcase(s, mlp);
    return s;
}

int main(void)
{
    return run_suite(layers_suite());
}
