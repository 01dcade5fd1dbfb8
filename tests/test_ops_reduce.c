/* Reductions: values and gradients against sums and maxima written out with
 * explicit loops, central differences in double, PyTorch's conventions for
 * ties, NaN and empty tensors, and the errors for bad axes. */
#include <math.h>
#include <string.h>

#include "check_helpers.h"

/* The 3-D test tensor has shape (2x3x4). */
static const size_t dims[3] = {2, 3, 4};
#define N_ELEMENTS 24

typedef ag_tensor *(*reduce_fn)(ag_tape *, ag_tensor *, int, bool);

typedef enum reduction { SUM, MEAN, MAX } reduction;

static const char *const reduction_names[] = {"sum_axis", "mean_axis", "max_axis"};
static const reduce_fn reduce_fns[] = {ag_sum_axis, ag_mean_axis, ag_max_axis};

static const char *dtype_name(ag_dtype dtype)
{
    return dtype == AG_F32 ? "f32" : "f64";
}

/* Row-major index of the output element that element (i0, i1, i2) reduces
 * into: the coordinates other than `axis`, in order. */
static size_t output_index(const size_t *index, int axis)
{
    size_t out = 0;

    for (int d = 0; d < 3; d++) {
        if (d != axis)
            out = out * dims[d] + index[d];
    }
    return out;
}

/* Coordinates of row-major element `flat` of the (2x3x4) tensor. */
static void unflatten(size_t flat, size_t *index)
{
    index[0] = flat / 12;
    index[1] = flat / 4 % 3;
    index[2] = flat % 4;
}

/* Reference reduction of x (24 values) along `axis` into out (n_out values). */
static void reference_reduce(reduction kind, const double *x, int axis, double *out,
                             size_t n_out)
{
    for (size_t j = 0; j < n_out; j++)
        out[j] = kind == MAX ? -INFINITY : 0.0;

    for (size_t flat = 0; flat < N_ELEMENTS; flat++) {
        size_t index[3];
        unflatten(flat, index);
        size_t j = output_index(index, axis);

        if (kind == MAX)
            out[j] = x[flat] > out[j] ? x[flat] : out[j];
        else
            out[j] += x[flat];
    }
    if (kind == MEAN) {
        for (size_t j = 0; j < n_out; j++)
            out[j] /= (double)dims[axis];
    }
}

/* Reference vector-Jacobian product: dL/dx for the seed g on the output. */
static void reference_gradient(reduction kind, const double *x, int axis,
                               const double *reduced, const double *g, double *dx)
{
    for (size_t flat = 0; flat < N_ELEMENTS; flat++) {
        size_t index[3];
        unflatten(flat, index);
        size_t j = output_index(index, axis);

        if (kind == SUM)
            dx[flat] = g[j];
        else if (kind == MEAN)
            dx[flat] = g[j] / (double)dims[axis];
        else
            dx[flat] = x[flat] == reduced[j] ? g[j] : 0.0; /* values are distinct */
    }
}

static ag_tensor *random_input(ag_tape *tape, ag_dtype dtype, uint64_t seed)
{
    ag_rng rng = ag_rng_new(seed);
    ag_tensor *x = ag_rand_uniform(tape, dtype, AG_SHAPE(2, 3, 4), -2.0, 2.0, &rng);

    ck_assert_int_eq(ag_tensor_set_requires_grad(x, true), 0);
    return x;
}

static void read_values(const ag_tensor *t, double *values)
{
    for (size_t i = 0; i < ag_tensor_numel(t); i++)
        values[i] = ag_tensor_get(t, i);
}

/* Checks one reduction along one axis of a random (2x3x4) tensor: output
 * shape, values, and the gradient for a random seed. */
static void check_axis_reduction(reduction kind, ag_dtype dtype, int axis,
                                 bool keepdims, double tol)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = random_input(tape, dtype, 7 + (uint64_t)axis);
    int positive = axis < 0 ? axis + 3 : axis;
    size_t n_out = N_ELEMENTS / dims[positive];
    double xs[N_ELEMENTS];
    double expected[N_ELEMENTS];
    double expected_dx[N_ELEMENTS];
    double seed_values[N_ELEMENTS];
    char what[128];

    read_values(x, xs);
    ag_tensor *y = reduce_fns[kind](tape, x, axis, keepdims);
    ck_assert_msg(y != NULL, "%s: %s", reduction_names[kind], ag_error());

    /* Shape: the axis is kept with size 1 or removed. */
    ck_assert_int_eq(ag_tensor_ndim(y), keepdims ? 3 : 2);
    for (int d = 0, out = 0; d < 3; d++) {
        if (d == positive && !keepdims)
            continue;
        ck_assert_uint_eq(ag_tensor_shape(y)[out], d == positive ? 1 : dims[d]);
        out++;
    }

    reference_reduce(kind, xs, positive, expected, n_out);
    for (size_t j = 0; j < n_out; j++) {
        snprintf(what, sizeof what, "%s axis %d keepdims %d %s value %zu",
                 reduction_names[kind], axis, keepdims, dtype_name(dtype), j);
        ck_assert_close(ag_tensor_get(y, j), expected[j], tol, what);
    }

    ag_rng rng = ag_rng_new(99);
    ag_tensor *seed = ag_rand_uniform(tape, dtype, ag_tensor_ndim(y), ag_tensor_shape(y),
                                      -1.0, 1.0, &rng);
    read_values(seed, seed_values);
    ck_assert_int_eq(ag_backward(tape, y, seed), 0);
    reference_gradient(kind, xs, positive, expected, seed_values, expected_dx);
    for (size_t i = 0; i < N_ELEMENTS; i++) {
        snprintf(what, sizeof what, "%s axis %d keepdims %d %s gradient %zu",
                 reduction_names[kind], axis, keepdims, dtype_name(dtype), i);
        ck_assert_close(ag_tensor_get(ag_tensor_grad(x), i), expected_dx[i], tol, what);
    }
    ag_tape_free(tape);
}

/* _i enumerates (reduction, axis -3..2, keepdims): 3 * 6 * 2 cases. */
static void check_loop_case(int i, ag_dtype dtype, double tol)
{
    reduction kind = (reduction)(i / 12);
    int axis = i / 2 % 6 - 3;
    bool keepdims = i % 2 == 1;

    check_axis_reduction(kind, dtype, axis, keepdims, tol);
}

START_TEST(axis_f64_matches_loops)
{
    check_loop_case(_i, AG_F64, 1e-12);
}
END_TEST

START_TEST(axis_f32_matches_loops)
{
    check_loop_case(_i, AG_F32, 1e-5);
}
END_TEST

/* Reductions over all elements of the (2x3x4) tensor. */
static void check_all_reductions(ag_dtype dtype, double tol)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = random_input(tape, dtype, 11);
    double xs[N_ELEMENTS];
    double total = 0.0;
    double largest = -INFINITY;
    size_t argmax = 0;

    read_values(x, xs);
    for (size_t i = 0; i < N_ELEMENTS; i++) {
        total += xs[i];
        if (xs[i] > largest) {
            largest = xs[i];
            argmax = i;
        }
    }

    ag_tensor *sum = ag_sum(tape, x);
    ag_tensor *mean = ag_mean(tape, x);
    ag_tensor *max = ag_max(tape, x);
    ck_assert_ptr_nonnull(sum);
    ck_assert_ptr_nonnull(mean);
    ck_assert_ptr_nonnull(max);
    ck_assert_int_eq(ag_tensor_ndim(sum), 1);
    ck_assert_uint_eq(ag_tensor_shape(sum)[0], 1);
    ck_assert_close(ag_tensor_item(sum), total, tol, "sum value");
    ck_assert_close(ag_tensor_item(mean), total / N_ELEMENTS, tol, "mean value");
    ck_assert_close(ag_tensor_item(max), largest, tol, "max value");

    ck_assert_int_eq(ag_backward(tape, sum, NULL), 0);
    for (size_t i = 0; i < N_ELEMENTS; i++)
        ck_assert_close(ag_tensor_get(ag_tensor_grad(x), i), 1.0, tol, "sum gradient");

    ag_tensor_zero_grad(x);
    ck_assert_int_eq(ag_backward(tape, mean, NULL), 0);
    for (size_t i = 0; i < N_ELEMENTS; i++)
        ck_assert_close(ag_tensor_get(ag_tensor_grad(x), i), 1.0 / N_ELEMENTS, tol,
                        "mean gradient");

    ag_tensor_zero_grad(x);
    ck_assert_int_eq(ag_backward(tape, max, NULL), 0);
    for (size_t i = 0; i < N_ELEMENTS; i++)
        ck_assert_close(ag_tensor_get(ag_tensor_grad(x), i), i == argmax ? 1.0 : 0.0,
                        tol, "max gradient");
    ag_tape_free(tape);
}

START_TEST(all_elements_f64)
{
    check_all_reductions(AG_F64, 1e-12);
}
END_TEST

START_TEST(all_elements_f32)
{
    check_all_reductions(AG_F32, 1e-5);
}
END_TEST

/* ---- central differences ------------------------------------------------- */

/* An axis argument for reduce() that selects the reduction over all elements. */
#define ALL_ELEMENTS 100

static ag_tensor *reduce(ag_tape *tape, reduction kind, int axis, ag_tensor *x)
{
    if (axis != ALL_ELEMENTS)
        return reduce_fns[kind](tape, x, axis, false);
    if (kind == SUM)
        return ag_sum(tape, x);
    if (kind == MEAN)
        return ag_mean(tape, x);
    return ag_max(tape, x);
}

/* Returns sum_j g_j * op(x)_j for an f64 heap tensor x, on a fresh tape. */
static double weighted_output(reduction kind, int axis, ag_tensor *x, const double *g)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *y = reduce(tape, kind, axis, x);
    double total = 0.0;

    ck_assert_ptr_nonnull(y);
    for (size_t j = 0; j < ag_tensor_numel(y); j++)
        total += g[j] * ag_tensor_get(y, j);
    ag_tape_free(tape);
    return total;
}

/* Compares the tape's vector-Jacobian product for seed g with central
 * differences of g . op(x) in double. */
static void check_finite_differences(reduction kind, int axis)
{
    const double eps = 1e-6;
    ag_rng rng = ag_rng_new(5);
    ag_tensor *x = ag_rand_uniform(NULL, AG_F64, AG_SHAPE(2, 3, 4), -2.0, 2.0, &rng);
    double g[N_ELEMENTS];
    char what[96];

    for (size_t j = 0; j < N_ELEMENTS; j++)
        g[j] = ag_rng_uniform(&rng) - 0.5;

    ag_tape *tape = ag_tape_new();
    ag_tensor_set_requires_grad(x, true);
    ag_tensor *y = reduce(tape, kind, axis, x);
    ag_tensor *seed = ag_tensor_from_doubles(tape, AG_F64, ag_tensor_ndim(y),
                                             ag_tensor_shape(y), g);
    ck_assert_int_eq(ag_backward(tape, y, seed), 0);

    double *data = ag_tensor_f64(x);
    for (size_t i = 0; i < N_ELEMENTS; i++) {
        double center = data[i];

        data[i] = center + eps;
        double plus = weighted_output(kind, axis, x, g);
        data[i] = center - eps;
        double minus = weighted_output(kind, axis, x, g);
        data[i] = center;

        snprintf(what, sizeof what, "%s axis %d element %zu", reduction_names[kind],
                 axis, i);
        ck_assert_close(ag_tensor_get(ag_tensor_grad(x), i), (plus - minus) / (2 * eps),
                        1e-8, what);
    }
    ag_tape_free(tape);
    ag_tensor_free(x);
}

START_TEST(finite_differences_agree)
{
    const int axes[] = {0, 1, 2, -1, ALL_ELEMENTS};

    for (int k = 0; k < 3; k++) {
        for (int a = 0; a < 5; a++)
            check_finite_differences((reduction)k, axes[a]);
    }
}
END_TEST

/* ---- conventions ---------------------------------------------------------- */

START_TEST(max_ties_share_gradient)
{
    const double xs[] = {1.0, 3.0, 3.0};
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(3), xs);

    ag_tensor_set_requires_grad(x, true);
    ag_tensor *y = ag_max(tape, x);
    ck_assert_int_eq(ag_backward(tape, y, NULL), 0);
    ck_assert_double_eq(ag_tensor_item(y), 3.0);
    ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(x), 0), 0.0);
    ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(x), 1), 0.5);
    ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(x), 2), 0.5);
    ag_tape_free(tape);
}
END_TEST

START_TEST(max_axis_ties_share_gradient)
{
    /* Rows [2 2 1] and [5 5 5]: the tied maxima split each row's gradient. */
    const double xs[] = {2.0, 2.0, 1.0, 5.0, 5.0, 5.0};
    const double expected[] = {0.5, 0.5, 0.0, 1.0 / 3, 1.0 / 3, 1.0 / 3};
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(2, 3), xs);

    ag_tensor_set_requires_grad(x, true);
    ag_tensor *y = ag_max_axis(tape, x, 1, false);
    ck_assert_int_eq(ag_backward(tape, y, ag_ones(tape, AG_F64, AG_SHAPE(2))), 0);
    for (int i = 0; i < 6; i++)
        ck_assert_close(ag_tensor_get(ag_tensor_grad(x), i), expected[i], 1e-15,
                        "tied gradient");
    ag_tape_free(tape);
}
END_TEST

START_TEST(max_propagates_nan)
{
    const double xs[] = {1.0, NAN, 3.0, 4.0, 5.0, 6.0};
    const ag_dtype dtypes[] = {AG_F32, AG_F64};

    for (int d = 0; d < 2; d++) {
        ag_tape *tape = ag_tape_new();
        ag_tensor *x = ag_tensor_from_doubles(tape, dtypes[d], AG_SHAPE(2, 3), xs);

        ag_tensor_set_requires_grad(x, true);
        ag_tensor *all = ag_max(tape, x);
        ag_tensor *rows = ag_max_axis(tape, x, 1, false);
        ck_assert(isnan(ag_tensor_item(all)));
        ck_assert(isnan(ag_tensor_get(rows, 0)));
        ck_assert_double_eq(ag_tensor_get(rows, 1), 6.0);

        /* The NaN element takes the whole gradient, so no 0/0 appears. */
        ck_assert_int_eq(ag_backward(tape, all, NULL), 0);
        ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(x), 1), 1.0);
        ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(x), 0), 0.0);
        ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(x), 2), 0.0);
        ag_tape_free(tape);
    }
}
END_TEST

START_TEST(one_dimensional_axis_gives_shape_1)
{
    const double xs[] = {1.0, 2.0, 4.0};
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(3), xs);

    for (int k = 0; k < 3; k++) {
        ag_tensor *y = reduce_fns[k](tape, x, 0, false);
        ck_assert_ptr_nonnull(y);
        ck_assert_int_eq(ag_tensor_ndim(y), 1);
        ck_assert_uint_eq(ag_tensor_shape(y)[0], 1);
    }
    ck_assert_double_eq(ag_tensor_item(ag_sum_axis(tape, x, -1, true)), 7.0);
    ag_tape_free(tape);
}
END_TEST

START_TEST(record_stores_axis_and_keepdims)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = random_input(tape, AG_F64, 1);
    ag_tensor *y = ag_mean_axis(tape, x, -2, true);
    const ag_record *rec = ag_tensor_record(y);

    ck_assert_ptr_nonnull(rec);
    ck_assert_str_eq(rec->op->name, "mean_axis");
    ck_assert_double_eq(rec->params[0], -2.0);
    ck_assert_double_eq(rec->params[1], 1.0);
    ag_tape_free(tape);
}
END_TEST

START_TEST(ops_found_by_name)
{
    const char *const names[] = {"sum", "mean", "max", "sum_axis", "mean_axis", "max_axis"};

    for (int i = 0; i < 6; i++) {
        const ag_op *op = ag_op_find(names[i]);
        ck_assert_ptr_nonnull(op);
        ck_assert_str_eq(op->name, names[i]);
    }
}
END_TEST

/* ---- accuracy of long sums ------------------------------------------------ */

START_TEST(long_f32_sum_accumulates_in_double)
{
    /* 1e6 copies of 0.1f: float accumulation drifts by about 1e-3 relative.
     * Double accumulation rounds once, to the float nearest n * 0.1f. */
    const size_t n = 1000000;
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_full(tape, AG_F32, AG_SHAPE(n), 0.1);
    float exact = (float)((double)n * (double)0.1f);

    ck_assert_float_eq((float)ag_tensor_item(ag_sum(tape, x)), exact);
    ck_assert_float_eq((float)ag_tensor_item(ag_mean(tape, x)), 0.1f);
    ag_tape_free(tape);
}
END_TEST

START_TEST(long_f64_sum_is_accurate)
{
    const size_t n = 1000003;
    ag_rng rng = ag_rng_new(3);
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_rand_uniform(tape, AG_F64, AG_SHAPE(n), 0.0, 1.0, &rng);
    const double *data = ag_tensor_f64(x);
    double reference = 0.0;
    double compensation = 0.0;

    /* Neumaier's compensated sum: its error does not grow with n. */
    for (size_t i = 0; i < n; i++) {
        double t = reference + data[i];
        if (fabs(reference) >= fabs(data[i]))
            compensation += (reference - t) + data[i];
        else
            compensation += (data[i] - t) + reference;
        reference = t;
    }
    reference += compensation;
    ck_assert_close(ag_tensor_item(ag_sum(tape, x)) / reference, 1.0, 1e-14,
                    "sum / reference");
    ag_tape_free(tape);
}
END_TEST

START_TEST(long_f64_sum_of_constant)
{
    /* 1e6 copies of 0.1: a running sum drifts by about 1e-11 relative,
     * because every addition rounds at the scale of the total. Pairwise
     * summation stays within a few ulp of the correctly rounded n * 0.1. */
    const size_t n = 1000000;
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_full(tape, AG_F64, AG_SHAPE(n), 0.1);

    ck_assert_close(ag_tensor_item(ag_sum(tape, x)) / ((double)n * 0.1), 1.0, 1e-14,
                    "sum / (n * 0.1)");
    ag_tape_free(tape);
}
END_TEST

START_TEST(sum_over_inner_axis_of_wide_tensor)
{
    /* More columns than one block of partial sums: (3 x 100), axis 0. */
    ag_rng rng = ag_rng_new(8);
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_rand_uniform(tape, AG_F32, AG_SHAPE(3, 100), -1.0, 1.0, &rng);
    ag_tensor *y = ag_sum_axis(tape, x, 0, false);

    ck_assert_uint_eq(ag_tensor_numel(y), 100);
    for (size_t j = 0; j < 100; j++) {
        double expected = ag_tensor_get(x, j) + ag_tensor_get(x, 100 + j) +
                          ag_tensor_get(x, 200 + j);
        ck_assert_close(ag_tensor_get(y, j), expected, 1e-6, "column sum");
    }
    ag_tape_free(tape);
}
END_TEST

/* ---- empty tensors -------------------------------------------------------- */

START_TEST(empty_sum_is_zero)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_zeros(tape, AG_F64, AG_SHAPE(0));

    ag_tensor_set_requires_grad(x, true);
    ag_tensor *y = ag_sum(tape, x);
    ck_assert_ptr_nonnull(y);
    ck_assert_double_eq(ag_tensor_item(y), 0.0);
    ck_assert_int_eq(ag_backward(tape, y, NULL), 0);

    /* (0x3) summed over axis 0 gives three zeros. */
    ag_tensor *columns = ag_sum_axis(tape, ag_zeros(tape, AG_F64, AG_SHAPE(0, 3)), 0, false);
    ck_assert_uint_eq(ag_tensor_numel(columns), 3);
    for (size_t j = 0; j < 3; j++)
        ck_assert_double_eq(ag_tensor_get(columns, j), 0.0);
    ag_tape_free(tape);
}
END_TEST

START_TEST(empty_mean_is_nan)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_zeros(tape, AG_F32, AG_SHAPE(2, 0));

    ag_tensor_set_requires_grad(x, true);
    ag_tensor *all = ag_mean(tape, x);
    ck_assert(isnan(ag_tensor_item(all)));
    ck_assert_int_eq(ag_backward(tape, all, NULL), 0);
    ck_assert_uint_eq(ag_tensor_numel(ag_tensor_grad(x)), 0);

    ag_tensor *rows = ag_mean_axis(tape, x, 1, false);
    ck_assert_uint_eq(ag_tensor_numel(rows), 2);
    ck_assert(isnan(ag_tensor_get(rows, 0)));
    ck_assert(isnan(ag_tensor_get(rows, 1)));
    ck_assert_int_eq(ag_backward(tape, rows, ag_ones(tape, AG_F32, AG_SHAPE(2))), 0);
    ag_tape_free(tape);
}
END_TEST

START_TEST(empty_max_is_error)
{
    ag_tape *tape = ag_tape_new();

    ck_assert_error_contains(ag_max(tape, ag_zeros(tape, AG_F64, AG_SHAPE(0))),
                             "ag_max: the input of shape (0) is empty");
    ck_assert_error_contains(ag_max_axis(tape, ag_zeros(tape, AG_F64, AG_SHAPE(2, 0)), -1,
                                         false),
                             "ag_max_axis: axis 1 of shape (2x0) has size 0");

    /* Reducing a nonempty axis of an empty tensor is fine: shape (0). */
    ag_tensor *y = ag_max_axis(tape, ag_zeros(tape, AG_F64, AG_SHAPE(0, 3)), 1, false);
    ck_assert_ptr_nonnull(y);
    ck_assert_uint_eq(ag_tensor_numel(y), 0);
    ag_tape_free(tape);
}
END_TEST

/* ---- errors --------------------------------------------------------------- */

START_TEST(axis_out_of_range_names_axis_and_shape)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_zeros(tape, AG_F64, AG_SHAPE(2, 3, 4));
    char expected[96];

    for (int k = 0; k < 3; k++) {
        snprintf(expected, sizeof expected,
                 "ag_%s: axis 3 is out of range for a tensor of shape (2x3x4)",
                 reduction_names[k]);
        ck_assert_error_contains(reduce_fns[k](tape, x, 3, false), expected);
        snprintf(expected, sizeof expected, "ag_%s: axis -4 is out of range",
                 reduction_names[k]);
        ck_assert_error_contains(reduce_fns[k](tape, x, -4, true), expected);
    }
    ag_tape_free(tape);
}
END_TEST

START_TEST(fractional_axis_is_error)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_zeros(tape, AG_F64, AG_SHAPE(2, 3));
    const double params[2] = {0.5, 0.0};

    ck_assert_error_contains(ag_apply(tape, ag_op_find("sum_axis"), 1, &x, 2, params),
                             "ag_sum_axis: axis 0.5 is not an integer");
    ag_tape_free(tape);
}
END_TEST

START_TEST(null_input_keeps_first_error)
{
    ag_tape *tape = ag_tape_new();

    ag_set_error("first failure");
    ck_assert_ptr_null(ag_sum(tape, NULL));
    ck_assert_ptr_null(ag_max_axis(tape, NULL, 7, false));
    ck_assert_str_eq(ag_error(), "first failure");
    ag_tape_free(tape);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("ops_reduce");
    TCase *tc = tcase_create("core");

    tcase_add_loop_test(tc, axis_f64_matches_loops, 0, 36);
    tcase_add_loop_test(tc, axis_f32_matches_loops, 0, 36);
    tcase_add_test(tc, all_elements_f64);
    tcase_add_test(tc, all_elements_f32);
    tcase_add_test(tc, finite_differences_agree);
    tcase_add_test(tc, max_ties_share_gradient);
    tcase_add_test(tc, max_axis_ties_share_gradient);
    tcase_add_test(tc, max_propagates_nan);
    tcase_add_test(tc, one_dimensional_axis_gives_shape_1);
    tcase_add_test(tc, record_stores_axis_and_keepdims);
    tcase_add_test(tc, ops_found_by_name);
    tcase_add_test(tc, long_f32_sum_accumulates_in_double);
    tcase_add_test(tc, long_f64_sum_is_accurate);
    tcase_add_test(tc, long_f64_sum_of_constant);
    tcase_add_test(tc, sum_over_inner_axis_of_wide_tensor);
    tcase_add_test(tc, empty_sum_is_zero);
    tcase_add_test(tc, empty_mean_is_nan);
    tcase_add_test(tc, empty_max_is_error);
    tcase_add_test(tc, axis_out_of_range_names_axis_and_shape);
    tcase_add_test(tc, fractional_axis_is_error);
    tcase_add_test(tc, null_input_keeps_first_error);
    suite_add_tcase(suite, tc);
    return run_suite(suite);
}
