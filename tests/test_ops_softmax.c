/* logsumexp, softmax and log_softmax: values and gradients against the
 * formulas written out with explicit loops, central differences in double,
 * stability at +-1000 and +-1e4, infinities, empty tensors and bad axes. */
#include <math.h>
#include <string.h>

#include "check_helpers.h"

/* The 3-D test tensor has shape (2x3x4). */
static const size_t dims[3] = {2, 3, 4};
#define N_ELEMENTS 24

typedef enum softmax_kind { LOGSUMEXP, SOFTMAX, LOG_SOFTMAX } softmax_kind;

static const char *const kind_names[] = {"logsumexp_axis", "softmax", "log_softmax"};

static const char *dtype_name(ag_dtype dtype)
{
    return dtype == AG_F32 ? "f32" : "f64";
}

static ag_tensor *apply_kind(ag_tape *tape, softmax_kind kind, ag_tensor *x, int axis,
                             bool keepdims)
{
    if (kind == LOGSUMEXP)
        return ag_logsumexp_axis(tape, x, axis, keepdims);
    if (kind == SOFTMAX)
        return ag_softmax(tape, x, axis);
    return ag_log_softmax(tape, x, axis);
}

/* Flat index of element k of slice (o, i) along `axis` of the (2x3x4) tensor,
 * where o runs over the dimensions before the axis and i over those after. */
static size_t element_index(int axis, size_t slice, size_t k)
{
    size_t index[3];
    size_t rest = slice;

    for (int d = 2; d >= 0; d--) {
        if (d == axis)
            continue;
        index[d] = rest % dims[d];
        rest /= dims[d];
    }
    index[axis] = k;
    return (index[0] * dims[1] + index[1]) * dims[2] + index[2];
}

/*
 * Reference values and vector-Jacobian products for seed g, slice by slice,
 * straight from the definitions (inputs lie in [-2, 2], so the unshifted
 * exponentials are safe):
 *   logsumexp = log sum_k e^x_k, d/dx_k = softmax_k
 *   softmax_k = e^x_k / sum_j e^x_j, dx_k = s_k (g_k - sum_j g_j s_j)
 *   log_softmax_k = x_k - logsumexp, dx_k = g_k - s_k sum_j g_j
 */
static void reference(softmax_kind kind, const double *x, int axis, const double *g,
                      double *y, double *dx)
{
    size_t n = dims[axis];
    size_t n_slices = N_ELEMENTS / n;

    for (size_t slice = 0; slice < n_slices; slice++) {
        double total = 0.0;
        for (size_t k = 0; k < n; k++)
            total += exp(x[element_index(axis, slice, k)]);
        double lse = log(total);

        /* The seed has one value per slice for logsumexp, else one per element. */
        double g_sum = 0.0;
        double g_dot_s = 0.0;
        for (size_t k = 0; k < n && kind != LOGSUMEXP; k++) {
            size_t e = element_index(axis, slice, k);
            g_sum += g[e];
            g_dot_s += g[e] * exp(x[e]) / total;
        }

        if (kind == LOGSUMEXP)
            y[slice] = lse;
        for (size_t k = 0; k < n; k++) {
            size_t e = element_index(axis, slice, k);
            double s = exp(x[e]) / total;
            if (kind == LOGSUMEXP) {
                dx[e] = g[slice] * s;
            } else if (kind == SOFTMAX) {
                y[e] = s;
                dx[e] = s * (g[e] - g_dot_s);
            } else {
                y[e] = x[e] - lse;
                dx[e] = g[e] - s * g_sum;
            }
        }
    }
}

static void read_values(const ag_tensor *t, double *values)
{
    for (size_t i = 0; i < ag_tensor_numel(t); i++)
        values[i] = ag_tensor_get(t, i);
}

/* Checks one op along one axis of a random (2x3x4) tensor: shape, values,
 * and the gradient for a random seed. */
static void check_case(softmax_kind kind, ag_dtype dtype, int axis, bool keepdims,
                       double tol)
{
    ag_tape *tape = ag_tape_new();
    ag_rng rng = ag_rng_new(17 + (uint64_t)(axis + 3));
    ag_tensor *x = ag_rand_uniform(tape, dtype, AG_SHAPE(2, 3, 4), -2.0, 2.0, &rng);
    int positive = axis < 0 ? axis + 3 : axis;
    double xs[N_ELEMENTS];
    double g[N_ELEMENTS];
    double expected[N_ELEMENTS];
    double expected_dx[N_ELEMENTS];
    char what[128];

    ag_tensor_set_requires_grad(x, true);
    read_values(x, xs);
    ag_tensor *y = apply_kind(tape, kind, x, axis, keepdims);
    ck_assert_msg(y != NULL, "%s: %s", kind_names[kind], ag_error());

    if (kind == LOGSUMEXP) {
        ck_assert_int_eq(ag_tensor_ndim(y), keepdims ? 3 : 2);
        ck_assert_uint_eq(ag_tensor_numel(y), N_ELEMENTS / dims[positive]);
        if (keepdims)
            ck_assert_uint_eq(ag_tensor_shape(y)[positive], 1);
    } else {
        ck_assert_int_eq(ag_tensor_ndim(y), 3);
        ck_assert_uint_eq(ag_tensor_numel(y), N_ELEMENTS);
    }

    ag_tensor *seed = ag_rand_uniform(tape, dtype, ag_tensor_ndim(y), ag_tensor_shape(y),
                                      -1.0, 1.0, &rng);
    read_values(seed, g);
    ck_assert_int_eq(ag_backward(tape, y, seed), 0);
    reference(kind, xs, positive, g, expected, expected_dx);

    for (size_t j = 0; j < ag_tensor_numel(y); j++) {
        snprintf(what, sizeof what, "%s axis %d %s value %zu", kind_names[kind], axis,
                 dtype_name(dtype), j);
        ck_assert_close(ag_tensor_get(y, j), expected[j], tol, what);
    }
    for (size_t i = 0; i < N_ELEMENTS; i++) {
        snprintf(what, sizeof what, "%s axis %d %s gradient %zu", kind_names[kind], axis,
                 dtype_name(dtype), i);
        ck_assert_close(ag_tensor_get(ag_tensor_grad(x), i), expected_dx[i], tol, what);
    }
    ag_tape_free(tape);
}

/* _i enumerates (op, axis -3..2, keepdims): 3 * 6 * 2 cases. */
static void check_loop_case(int i, ag_dtype dtype, double tol)
{
    check_case((softmax_kind)(i / 12), dtype, i / 2 % 6 - 3, i % 2 == 1, tol);
}

START_TEST(axis_f64_matches_formulas)
{
    check_loop_case(_i, AG_F64, 1e-12);
}
END_TEST

START_TEST(axis_f32_matches_formulas)
{
    check_loop_case(_i, AG_F32, 1e-5);
}
END_TEST

START_TEST(logsumexp_all_elements)
{
    const double xs[] = {0.5, -1.0, 2.0, 0.0, 1.5, -0.25};
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(2, 3), xs);
    double total = 0.0;

    for (int i = 0; i < 6; i++)
        total += exp(xs[i]);

    ag_tensor_set_requires_grad(x, true);
    ag_tensor *y = ag_logsumexp(tape, x);
    ck_assert_int_eq(ag_tensor_ndim(y), 1);
    ck_assert_uint_eq(ag_tensor_shape(y)[0], 1);
    ck_assert_close(ag_tensor_item(y), log(total), 1e-14, "value");
    ck_assert_int_eq(ag_backward(tape, y, NULL), 0);
    for (int i = 0; i < 6; i++)
        ck_assert_close(ag_tensor_get(ag_tensor_grad(x), i), exp(xs[i]) / total, 1e-14,
                        "gradient is softmax");
    ag_tape_free(tape);
}
END_TEST

/* ---- central differences ------------------------------------------------- */

/* Returns sum_j g_j * op(x)_j for an f64 heap tensor x, on a fresh tape. */
static double weighted_output(softmax_kind kind, int axis, ag_tensor *x, const double *g)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *y = apply_kind(tape, kind, x, axis, false);
    double total = 0.0;

    ck_assert_ptr_nonnull(y);
    for (size_t j = 0; j < ag_tensor_numel(y); j++)
        total += g[j] * ag_tensor_get(y, j);
    ag_tape_free(tape);
    return total;
}

/* Compares the tape's vector-Jacobian product for seed g with central
 * differences of g . op(x) in double. */
static void check_finite_differences(softmax_kind kind, int axis)
{
    const double eps = 1e-6;
    ag_rng rng = ag_rng_new(23);
    ag_tensor *x = ag_rand_uniform(NULL, AG_F64, AG_SHAPE(2, 3, 4), -3.0, 3.0, &rng);
    double g[N_ELEMENTS];
    char what[96];

    for (size_t j = 0; j < N_ELEMENTS; j++)
        g[j] = ag_rng_uniform(&rng) - 0.5;

    ag_tape *tape = ag_tape_new();
    ag_tensor_set_requires_grad(x, true);
    ag_tensor *y = apply_kind(tape, kind, x, axis, false);
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

        snprintf(what, sizeof what, "%s axis %d element %zu", kind_names[kind], axis, i);
        ck_assert_close(ag_tensor_get(ag_tensor_grad(x), i), (plus - minus) / (2 * eps),
                        1e-8, what);
    }
    ag_tape_free(tape);
    ag_tensor_free(x);
}

START_TEST(finite_differences_agree)
{
    const int axes[] = {0, 1, 2, -1};

    for (int k = 0; k < 3; k++) {
        for (int a = 0; a < 4; a++)
            check_finite_differences((softmax_kind)k, axes[a]);
    }
}
END_TEST

/* ---- stability ------------------------------------------------------------ */

/* logsumexp([c, c]) = c + log 2 exactly, so only rounding to the dtype may
 * differ. The gradient is [1/2, 1/2]. */
START_TEST(logsumexp_stable_at_large_inputs)
{
    const double centers[] = {1000.0, -1000.0, 1e4, -1e4};
    const ag_dtype dtypes[] = {AG_F32, AG_F64};

    for (int d = 0; d < 2; d++) {
        for (int c = 0; c < 4; c++) {
            ag_tape *tape = ag_tape_new();
            ag_tensor *x = ag_full(tape, dtypes[d], AG_SHAPE(2), centers[c]);
            double exact = centers[c] + log(2.0);
            char what[64];

            ag_tensor_set_requires_grad(x, true);
            ag_tensor *y = ag_logsumexp(tape, x);
            snprintf(what, sizeof what, "logsumexp at %g %s", centers[c],
                     dtype_name(dtypes[d]));
            if (dtypes[d] == AG_F32)
                ck_assert_float_eq((float)ag_tensor_item(y), (float)exact);
            else
                ck_assert_close(ag_tensor_item(y), exact, 1e-15, what);

            ck_assert_int_eq(ag_backward(tape, y, NULL), 0);
            ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(x), 0), 0.5);
            ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(x), 1), 0.5);
            ag_tape_free(tape);
        }
    }
}
END_TEST

START_TEST(softmax_stable_at_large_inputs)
{
    /* Rows [c, c - 1] for c = 1e4 and -1e4: softmax is [1, e^-1] / (1 + e^-1),
     * log_softmax [-log(1 + e^-1), -1 - log(1 + e^-1)]. */
    const double centers[] = {1e4, -1e4, 1000.0, -1000.0};
    const ag_dtype dtypes[] = {AG_F32, AG_F64};
    const double p = 1.0 / (1.0 + exp(-1.0));

    for (int d = 0; d < 2; d++) {
        double tol = dtypes[d] == AG_F32 ? 1e-6 : 1e-15;

        for (int c = 0; c < 4; c++) {
            const double xs[] = {centers[c], centers[c] - 1.0};
            ag_tape *tape = ag_tape_new();
            ag_tensor *x = ag_tensor_from_doubles(tape, dtypes[d], AG_SHAPE(1, 2), xs);
            ag_tensor *s = ag_softmax(tape, x, 1);
            ag_tensor *ls = ag_log_softmax(tape, x, -1);

            ck_assert_close(ag_tensor_get(s, 0), p, tol, "softmax first");
            ck_assert_close(ag_tensor_get(s, 1), 1.0 - p, tol, "softmax second");
            ck_assert_close(ag_tensor_get(ls, 0), log(p), tol, "log_softmax first");
            ck_assert_close(ag_tensor_get(ls, 1), log(1.0 - p), tol, "log_softmax second");
            ag_tape_free(tape);
        }
    }
}
END_TEST

START_TEST(log_softmax_far_apart_is_exact)
{
    /* [1000, 0]: softmax [1, 0] and log_softmax [0, -1000]. Nothing
     * overflows, and the small entry does not become log(0) = -inf. */
    const double xs[] = {1000.0, 0.0};
    const ag_dtype dtypes[] = {AG_F32, AG_F64};

    for (int d = 0; d < 2; d++) {
        ag_tape *tape = ag_tape_new();
        ag_tensor *x = ag_tensor_from_doubles(tape, dtypes[d], AG_SHAPE(2), xs);
        ag_tensor *s = ag_softmax(tape, x, 0);
        ag_tensor *ls = ag_log_softmax(tape, x, 0);

        ck_assert_double_eq(ag_tensor_get(s, 0), 1.0);
        ck_assert_double_eq(ag_tensor_get(s, 1), 0.0);
        ck_assert_double_eq(ag_tensor_get(ls, 0), 0.0);
        ck_assert_double_eq(ag_tensor_get(ls, 1), -1000.0);
        ag_tape_free(tape);
    }
}
END_TEST

/* ---- infinities and NaN --------------------------------------------------- */

START_TEST(logsumexp_of_minus_inf_row)
{
    /* Row 0 is all -inf: logsumexp -inf and a zero gradient, not NaN. */
    const double xs[] = {-INFINITY, -INFINITY, 0.0, 0.0};
    const ag_dtype dtypes[] = {AG_F32, AG_F64};

    for (int d = 0; d < 2; d++) {
        ag_tape *tape = ag_tape_new();
        ag_tensor *x = ag_tensor_from_doubles(tape, dtypes[d], AG_SHAPE(2, 2), xs);

        ag_tensor_set_requires_grad(x, true);
        ag_tensor *y = ag_logsumexp_axis(tape, x, 1, false);
        ck_assert(isinf(ag_tensor_get(y, 0)) && ag_tensor_get(y, 0) < 0);
        ck_assert_close(ag_tensor_get(y, 1), log(2.0), 1e-7, "finite row");

        ck_assert_int_eq(ag_backward(tape, y, ag_ones(tape, dtypes[d], AG_SHAPE(2))), 0);
        ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(x), 0), 0.0);
        ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(x), 1), 0.0);
        ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(x), 2), 0.5);
        ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(x), 3), 0.5);
        ag_tape_free(tape);
    }
}
END_TEST

START_TEST(logsumexp_with_minus_inf_entry)
{
    /* A -inf entry contributes e^-inf = 0 and gets no gradient. */
    const double xs[] = {-INFINITY, 1.0, 1.0};
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(3), xs);

    ag_tensor_set_requires_grad(x, true);
    ag_tensor *y = ag_logsumexp(tape, x);
    ck_assert_close(ag_tensor_item(y), 1.0 + log(2.0), 1e-15, "value");
    ck_assert_int_eq(ag_backward(tape, y, NULL), 0);
    ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(x), 0), 0.0);
    ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(x), 1), 0.5);
    ag_tape_free(tape);
}
END_TEST

START_TEST(logsumexp_of_plus_inf_is_inf)
{
    /* The +inf entries share the gradient, the limit of softmax. */
    const double xs[] = {INFINITY, 1.0, INFINITY, -2.0};
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(4), xs);

    ag_tensor_set_requires_grad(x, true);
    ag_tensor *y = ag_logsumexp(tape, x);
    ck_assert(isinf(ag_tensor_item(y)) && ag_tensor_item(y) > 0);
    ck_assert_int_eq(ag_backward(tape, y, NULL), 0);
    ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(x), 0), 0.5);
    ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(x), 1), 0.0);
    ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(x), 2), 0.5);
    ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(x), 3), 0.0);
    ag_tape_free(tape);
}
END_TEST

START_TEST(logsumexp_propagates_nan)
{
    const double xs[] = {1.0, NAN, 2.0};
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(3), xs);

    ck_assert(isnan(ag_tensor_item(ag_logsumexp(tape, x))));
    ck_assert(isnan(ag_tensor_get(ag_softmax(tape, x, 0), 0)));

    /* NaN beats +inf too: the max of the slice is NaN, not inf. */
    const double with_inf[] = {INFINITY, NAN};
    ag_tensor *y = ag_tensor_from_doubles(tape, AG_F32, AG_SHAPE(2), with_inf);
    ck_assert(isnan(ag_tensor_item(ag_logsumexp(tape, y))));
    ag_tape_free(tape);
}
END_TEST

START_TEST(softmax_masks_minus_inf_entries)
{
    /* -inf entries (masked positions) get probability 0 and log-probability
     * -inf; the others renormalize. */
    const double xs[] = {0.0, -INFINITY, 0.0};
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(3), xs);
    ag_tensor *s = ag_softmax(tape, x, 0);
    ag_tensor *ls = ag_log_softmax(tape, x, 0);

    ck_assert_double_eq(ag_tensor_get(s, 0), 0.5);
    ck_assert_double_eq(ag_tensor_get(s, 1), 0.0);
    ck_assert_double_eq(ag_tensor_get(ls, 0), -log(2.0));
    ck_assert(isinf(ag_tensor_get(ls, 1)) && ag_tensor_get(ls, 1) < 0);
    ag_tape_free(tape);
}
END_TEST

/* ---- empty tensors, attributes and errors --------------------------------- */

START_TEST(empty_tensors)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_zeros(tape, AG_F64, AG_SHAPE(2, 0));

    ag_tensor_set_requires_grad(x, true);

    /* The log of an empty sum is -inf (PyTorch gives the same). */
    ag_tensor *all = ag_logsumexp(tape, x);
    ck_assert(isinf(ag_tensor_item(all)) && ag_tensor_item(all) < 0);
    ag_tensor *rows = ag_logsumexp_axis(tape, x, 1, true);
    ck_assert_uint_eq(ag_tensor_numel(rows), 2);
    ck_assert(isinf(ag_tensor_get(rows, 1)));

    ag_tensor *s = ag_softmax(tape, x, 1);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(ag_tensor_numel(s), 0);
    ag_tensor *ls = ag_log_softmax(tape, x, 0);
    ck_assert_ptr_nonnull(ls);
    ck_assert_int_eq(ag_backward(tape, ls, ag_zeros(tape, AG_F64, AG_SHAPE(2, 0))), 0);
    ag_tape_free(tape);
}
END_TEST

START_TEST(record_stores_axis)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_zeros(tape, AG_F64, AG_SHAPE(2, 3));

    ag_tensor_set_requires_grad(x, true);
    const ag_record *rec = ag_tensor_record(ag_log_softmax(tape, x, -1));
    ck_assert_str_eq(rec->op->name, "log_softmax");
    ck_assert_double_eq(rec->params[0], -1.0);

    rec = ag_tensor_record(ag_logsumexp_axis(tape, x, 0, true));
    ck_assert_str_eq(rec->op->name, "logsumexp_axis");
    ck_assert_double_eq(rec->params[0], 0.0);
    ck_assert_double_eq(rec->params[1], 1.0);
    ag_tape_free(tape);
}
END_TEST

START_TEST(axis_out_of_range_names_axis_and_shape)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *x = ag_zeros(tape, AG_F32, AG_SHAPE(2, 3));

    ck_assert_error_contains(ag_softmax(tape, x, 2),
                             "ag_softmax: axis 2 is out of range for a tensor of shape (2x3)");
    ck_assert_error_contains(ag_log_softmax(tape, x, -3),
                             "ag_log_softmax: axis -3 is out of range for a tensor of shape (2x3)");
    ck_assert_error_contains(ag_logsumexp_axis(tape, x, 5, false),
                             "ag_logsumexp_axis: axis 5 is out of range for a tensor of shape (2x3)");
    ag_tape_free(tape);
}
END_TEST

START_TEST(null_input_keeps_first_error)
{
    ag_tape *tape = ag_tape_new();

    ag_set_error("first failure");
    ck_assert_ptr_null(ag_softmax(tape, NULL, 0));
    ck_assert_ptr_null(ag_logsumexp(tape, NULL));
    ck_assert_str_eq(ag_error(), "first failure");
    ag_tape_free(tape);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("ops_softmax");
    TCase *tc = tcase_create("core");

    tcase_add_loop_test(tc, axis_f64_matches_formulas, 0, 36);
    tcase_add_loop_test(tc, axis_f32_matches_formulas, 0, 36);
    tcase_add_test(tc, logsumexp_all_elements);
    tcase_add_test(tc, finite_differences_agree);
    tcase_add_test(tc, logsumexp_stable_at_large_inputs);
    tcase_add_test(tc, softmax_stable_at_large_inputs);
    tcase_add_test(tc, log_softmax_far_apart_is_exact);
    tcase_add_test(tc, logsumexp_of_minus_inf_row);
    tcase_add_test(tc, logsumexp_with_minus_inf_entry);
    tcase_add_test(tc, logsumexp_of_plus_inf_is_inf);
    tcase_add_test(tc, logsumexp_propagates_nan);
    tcase_add_test(tc, softmax_masks_minus_inf_entries);
    tcase_add_test(tc, empty_tensors);
    tcase_add_test(tc, record_stores_axis);
    tcase_add_test(tc, axis_out_of_range_names_axis_and_shape);
    tcase_add_test(tc, null_input_keeps_first_error);
    suite_add_tcase(suite, tc);
    return run_suite(suite);
}
