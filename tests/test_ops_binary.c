/* Binary elementwise ops: values and both gradients against closed forms for
 * each broadcasting pattern (reduced gradients summed with explicit loops
 * here), central finite differences, PyTorch's conventions at kinks, and
 * every error path. */
#include <math.h>
#include <string.h>

#include "check_helpers.h"

typedef ag_tensor *(*binary_fn)(ag_tape *, ag_tensor *, ag_tensor *);

/* An op with its closed forms: the value and the partial derivatives. */
typedef struct binary_case {
    const char *name;
    binary_fn op;
    double (*value)(double a, double b);
    double (*d_a)(double a, double b);
    double (*d_b)(double a, double b);
    double a_low, a_high; /* domain to sample a from */
    double b_low, b_high; /* domain to sample b from */
} binary_case;

static double add_value(double a, double b) { return a + b; }
static double sub_value(double a, double b) { return a - b; }
static double mul_value(double a, double b) { return a * b; }
static double div_value(double a, double b) { return a / b; }
static double max_value(double a, double b) { return a > b ? a : b; }
static double min_value(double a, double b) { return a < b ? a : b; }
static double one(double a, double b) { (void)a; (void)b; return 1.0; }
static double minus_one(double a, double b) { (void)a; (void)b; return -1.0; }
static double second(double a, double b) { (void)a; return b; }
static double first(double a, double b) { (void)b; return a; }
static double div_d_a(double a, double b) { (void)a; return 1.0 / b; }
static double div_d_b(double a, double b) { return -a / (b * b); }
static double pow_d_a(double a, double b) { return b * pow(a, b - 1.0); }
static double pow_d_b(double a, double b) { return pow(a, b) * log(a); }
/* Random points have no ties, so the larger side takes the whole gradient. */
static double max_d_a(double a, double b) { return a > b ? 1.0 : 0.0; }
static double max_d_b(double a, double b) { return a > b ? 0.0 : 1.0; }
static double min_d_a(double a, double b) { return a < b ? 1.0 : 0.0; }
static double min_d_b(double a, double b) { return a < b ? 0.0 : 1.0; }

static const binary_case cases[] = {
    {"add", ag_add, add_value, one, one, -3, 3, -3, 3},
    {"sub", ag_sub, sub_value, one, minus_one, -3, 3, -3, 3},
    {"mul", ag_mul, mul_value, second, first, -3, 3, -3, 3},
    {"div", ag_div, div_value, div_d_a, div_d_b, -3, 3, 0.5, 3},
    {"pow", ag_pow, pow, pow_d_a, pow_d_b, 0.2, 3, -2, 2},
    {"maximum", ag_maximum, max_value, max_d_a, max_d_b, -3, 3, -3, 3},
    {"minimum", ag_minimum, min_value, min_d_a, min_d_b, -3, 3, -3, 3},
};
#define N_CASES ((int)(sizeof cases / sizeof cases[0]))

/* A pair of operand shapes, each tested in both orders. */
typedef struct shape_pair {
    const char *name;
    int ndim_a;
    size_t shape_a[4];
    int ndim_b;
    size_t shape_b[4];
} shape_pair;

static const shape_pair patterns[] = {
    {"same", 2, {2, 3}, 2, {2, 3}},
    {"row", 2, {2, 3}, 2, {1, 3}},
    {"column", 2, {2, 3}, 2, {2, 1}},
    {"scalar", 2, {2, 3}, 1, {1}},
    {"rank1", 1, {3}, 2, {2, 3}},
    {"middle", 3, {2, 1, 3}, 2, {4, 1}},
    {"rank4", 4, {3, 1, 4, 5}, 3, {2, 1, 5}},
};
#define N_PATTERNS ((int)(sizeof patterns / sizeof patterns[0]))

/* ---- reference broadcasting, written out independently -------------------- */

/* The broadcast shape of two shapes, aligned at the last dimension. */
static int ref_broadcast(int na, const size_t *sa, int nb, const size_t *sb,
                         size_t *out)
{
    int n = na > nb ? na : nb;

    for (int i = 0; i < n; i++) {
        size_t da = i - (n - na) >= 0 ? sa[i - (n - na)] : 1;
        size_t db = i - (n - nb) >= 0 ? sb[i - (n - nb)] : 1;
        out[i] = da > db ? da : db;
    }
    return n;
}

/* The flat index into an operand of shape (nx, sx) of the output element
 * with multi-index idx (n dimensions): a size-1 dimension reads index 0. */
static size_t ref_source_index(int n, const size_t *idx, int nx, const size_t *sx)
{
    size_t flat = 0;

    for (int d = 0; d < nx; d++) {
        size_t i = sx[d] == 1 ? 0 : idx[d + (n - nx)];
        flat = flat * sx[d] + i;
    }
    return flat;
}

/* Converts a flat row-major index to a multi-index. */
static void ref_unflatten(size_t flat, int n, const size_t *shape, size_t *idx)
{
    for (int d = n - 1; d >= 0; d--) {
        idx[d] = flat % shape[d];
        flat /= shape[d];
    }
}

static size_t count_of(int n, const size_t *shape)
{
    size_t count = 1;

    for (int d = 0; d < n; d++)
        count *= shape[d];
    return count;
}

/* ---- value and gradients against closed forms ----------------------------- */

static void check_pattern(const binary_case *c, int na, const size_t *sa, int nb,
                          const size_t *sb, ag_dtype dtype, double tol)
{
    ag_tape *tape = ag_tape_new();
    ag_rng rng = ag_rng_new(7);
    ag_tensor *a = ag_rand_uniform(tape, dtype, na, sa, c->a_low, c->a_high, &rng);
    ag_tensor *b = ag_rand_uniform(tape, dtype, nb, sb, c->b_low, c->b_high, &rng);
    size_t so[AG_MAX_DIMS];
    int no = ref_broadcast(na, sa, nb, sb, so);
    size_t numel = count_of(no, so);

    ck_assert_int_eq(ag_tensor_set_requires_grad(a, true), 0);
    ck_assert_int_eq(ag_tensor_set_requires_grad(b, true), 0);
    ag_tensor *y = c->op(tape, a, b);
    ck_assert_msg(y != NULL, "%s: %s", c->name, ag_error());
    ck_assert_int_eq(ag_tensor_ndim(y), no);
    for (int d = 0; d < no; d++)
        ck_assert_uint_eq(ag_tensor_dim(y, d), so[d]);

    /* A random seed weights each output element, so misrouted gradients show. */
    ag_tensor *seed = ag_rand_uniform(tape, dtype, no, so, -1, 1, &rng);
    ck_assert_int_eq(ag_backward(tape, y, seed), 0);

    double expected_ga[64] = {0};
    double expected_gb[64] = {0};
    ck_assert_uint_le(ag_tensor_numel(a), 64);
    ck_assert_uint_le(ag_tensor_numel(b), 64);

    for (size_t o = 0; o < numel; o++) {
        size_t idx[AG_MAX_DIMS];
        ref_unflatten(o, no, so, idx);
        size_t ia = ref_source_index(no, idx, na, sa);
        size_t ib = ref_source_index(no, idx, nb, sb);
        double av = ag_tensor_get(a, ia);
        double bv = ag_tensor_get(b, ib);
        double g = ag_tensor_get(seed, o);
        char what[128];

        snprintf(what, sizeof what, "%s %s value at %zu", c->name,
                 dtype == AG_F32 ? "f32" : "f64", o);
        ck_assert_close(ag_tensor_get(y, o), c->value(av, bv), tol, what);
        expected_ga[ia] += g * c->d_a(av, bv);
        expected_gb[ib] += g * c->d_b(av, bv);
    }

    for (size_t i = 0; i < ag_tensor_numel(a); i++) {
        char what[128];
        snprintf(what, sizeof what, "%s %s d/da at %zu", c->name,
                 dtype == AG_F32 ? "f32" : "f64", i);
        ck_assert_close(ag_tensor_get(ag_tensor_grad(a), i), expected_ga[i], tol, what);
    }
    for (size_t i = 0; i < ag_tensor_numel(b); i++) {
        char what[128];
        snprintf(what, sizeof what, "%s %s d/db at %zu", c->name,
                 dtype == AG_F32 ? "f32" : "f64", i);
        ck_assert_close(ag_tensor_get(ag_tensor_grad(b), i), expected_gb[i], tol, what);
    }
    ag_tape_free(tape);
}

static void check_case_all_patterns(const binary_case *c, ag_dtype dtype, double tol)
{
    for (int p = 0; p < N_PATTERNS; p++) {
        const shape_pair *s = &patterns[p];

        check_pattern(c, s->ndim_a, s->shape_a, s->ndim_b, s->shape_b, dtype, tol);
        check_pattern(c, s->ndim_b, s->shape_b, s->ndim_a, s->shape_a, dtype, tol);
    }
}

START_TEST(f64_closed_form)
{
    check_case_all_patterns(&cases[_i], AG_F64, 1e-12);
}
END_TEST

START_TEST(f32_closed_form)
{
    check_case_all_patterns(&cases[_i], AG_F32, 1e-5);
}
END_TEST

/* ---- central finite differences ------------------------------------------- */

static const binary_case *fd_case;

/* sum(seed * op(a, b)) on a fresh tape, in double. */
static double weighted_output(ag_tensor *a, ag_tensor *b, const ag_tensor *seed)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *y = fd_case->op(tape, a, b);
    double total = 0.0;

    ck_assert_ptr_nonnull(y);
    for (size_t i = 0; i < ag_tensor_numel(y); i++)
        total += ag_tensor_get(seed, i) * ag_tensor_get(y, i);
    ag_tape_free(tape);
    return total;
}

/* Compares each gradient element with (L(x + h) - L(x - h)) / 2h. */
static void check_fd_input(ag_tensor *x, ag_tensor *a, ag_tensor *b,
                           const ag_tensor *seed, const char *label)
{
    const double h = 1e-6;

    for (size_t i = 0; i < ag_tensor_numel(x); i++) {
        double x0 = ag_tensor_get(x, i);
        char what[128];

        ag_tensor_set(x, i, x0 + h);
        double plus = weighted_output(a, b, seed);
        ag_tensor_set(x, i, x0 - h);
        double minus = weighted_output(a, b, seed);
        ag_tensor_set(x, i, x0);

        snprintf(what, sizeof what, "%s %s at %zu", fd_case->name, label, i);
        ck_assert_close(ag_tensor_get(ag_tensor_grad(x), i), (plus - minus) / (2 * h),
                        1e-6, what);
    }
}

START_TEST(finite_differences)
{
    fd_case = &cases[_i];
    ag_rng rng = ag_rng_new(11);

    for (int p = 0; p < N_PATTERNS; p++) {
        const shape_pair *s = &patterns[p];
        /* Heap tensors, so the reference tapes can read them too. */
        ag_tensor *a = ag_rand_uniform(NULL, AG_F64, s->ndim_a, s->shape_a,
                                       fd_case->a_low, fd_case->a_high, &rng);
        ag_tensor *b = ag_rand_uniform(NULL, AG_F64, s->ndim_b, s->shape_b,
                                       fd_case->b_low, fd_case->b_high, &rng);
        ag_tape *tape = ag_tape_new();

        ck_assert_int_eq(ag_tensor_set_requires_grad(a, true), 0);
        ck_assert_int_eq(ag_tensor_set_requires_grad(b, true), 0);
        ag_tensor *y = fd_case->op(tape, a, b);
        ck_assert_ptr_nonnull(y);
        ag_tensor *seed = ag_rand_uniform(NULL, AG_F64, ag_tensor_ndim(y),
                                          ag_tensor_shape(y), -1, 1, &rng);
        ck_assert_int_eq(ag_backward(tape, y, seed), 0);

        check_fd_input(a, a, b, seed, "d/da");
        check_fd_input(b, a, b, seed, "d/db");

        ag_tape_free(tape);
        ag_tensor_free(seed);
        ag_tensor_free(a);
        ag_tensor_free(b);
    }
}
END_TEST

/* ---- kinks and conventions ------------------------------------------------ */

/* Runs op on two rank-1 f64 tensors with a seed of ones and returns the tape. */
static ag_tape *run_pair(binary_fn op, size_t n, const double *av, const double *bv,
                         ag_tensor **a, ag_tensor **b, ag_tensor **y)
{
    ag_tape *tape = ag_tape_new();

    *a = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(n), av);
    *b = ag_tensor_from_doubles(tape, AG_F64, AG_SHAPE(n), bv);
    ck_assert_int_eq(ag_tensor_set_requires_grad(*a, true), 0);
    ck_assert_int_eq(ag_tensor_set_requires_grad(*b, true), 0);
    *y = op(tape, *a, *b);
    ck_assert_ptr_nonnull(*y);
    ck_assert_int_eq(ag_backward(tape, *y, ag_ones(tape, AG_F64, AG_SHAPE(n))), 0);
    return tape;
}

START_TEST(maximum_ties_split)
{
    const double av[] = {1.0, 2.0, 3.0};
    const double bv[] = {1.0, 5.0, 0.0};
    const double value[] = {1.0, 5.0, 3.0};
    const double ga[] = {0.5, 0.0, 1.0};
    const double gb[] = {0.5, 1.0, 0.0};
    ag_tensor *a;
    ag_tensor *b;
    ag_tensor *y;
    ag_tape *tape = run_pair(ag_maximum, 3, av, bv, &a, &b, &y);

    for (size_t i = 0; i < 3; i++) {
        ck_assert_double_eq(ag_tensor_get(y, i), value[i]);
        ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(a), i), ga[i]);
        ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(b), i), gb[i]);
    }
    ag_tape_free(tape);
}
END_TEST

START_TEST(minimum_ties_split)
{
    const double av[] = {1.0, 2.0, 3.0};
    const double bv[] = {1.0, 5.0, 0.0};
    const double value[] = {1.0, 2.0, 0.0};
    const double ga[] = {0.5, 1.0, 0.0};
    const double gb[] = {0.5, 0.0, 1.0};
    ag_tensor *a;
    ag_tensor *b;
    ag_tensor *y;
    ag_tape *tape = run_pair(ag_minimum, 3, av, bv, &a, &b, &y);

    for (size_t i = 0; i < 3; i++) {
        ck_assert_double_eq(ag_tensor_get(y, i), value[i]);
        ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(a), i), ga[i]);
        ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(b), i), gb[i]);
    }
    ag_tape_free(tape);
}
END_TEST

START_TEST(nan_propagates)
{
    const double av[] = {NAN, 1.0};
    const double bv[] = {1.0, NAN};
    ag_tensor *a;
    ag_tensor *b;
    ag_tensor *y;
    ag_tape *tape = run_pair(ag_maximum, 2, av, bv, &a, &b, &y);

    ck_assert(isnan(ag_tensor_get(y, 0)));
    ck_assert(isnan(ag_tensor_get(y, 1)));
    ag_tape_free(tape);

    tape = run_pair(ag_minimum, 2, av, bv, &a, &b, &y);
    ck_assert(isnan(ag_tensor_get(y, 0)));
    ck_assert(isnan(ag_tensor_get(y, 1)));
    ag_tape_free(tape);
}
END_TEST

START_TEST(pow_zero_base)
{
    /* PyTorch at a = 0: d/da is b a^(b-1) but 0 for b = 0, and d/db is 0
     * for every b >= 0. */
    const double av[] = {0.0, 0.0, 0.0};
    const double bv[] = {2.0, 0.0, 0.5};
    const double value[] = {0.0, 1.0, 0.0};
    const double ga[] = {0.0, 0.0, INFINITY};
    ag_tensor *a;
    ag_tensor *b;
    ag_tensor *y;
    ag_tape *tape = run_pair(ag_pow, 3, av, bv, &a, &b, &y);

    for (size_t i = 0; i < 3; i++) {
        ck_assert_double_eq(ag_tensor_get(y, i), value[i]);
        ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(a), i), ga[i]);
        ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(b), i), 0.0);
    }
    ag_tape_free(tape);
}
END_TEST

START_TEST(grad_only_where_needed)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *a = ag_full(tape, AG_F64, AG_SHAPE(2, 3), 2.0);
    ag_tensor *b = ag_full(tape, AG_F64, AG_SHAPE(3), 5.0);

    ck_assert_int_eq(ag_tensor_set_requires_grad(a, true), 0);
    ag_tensor *y = ag_mul(tape, a, b);
    ck_assert_int_eq(ag_backward(tape, y, ag_ones(tape, AG_F64, AG_SHAPE(2, 3))), 0);
    ck_assert_ptr_null(ag_tensor_grad(b));
    ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(a), 4), 5.0);
    ag_tape_free(tape);
}
END_TEST

START_TEST(empty_broadcast)
{
    /* (0x3) + (3) gives (0x3), and b receives an all-zero gradient. */
    ag_tape *tape = ag_tape_new();
    ag_tensor *a = ag_zeros(tape, AG_F64, AG_SHAPE(0, 3));
    ag_tensor *b = ag_full(tape, AG_F64, AG_SHAPE(3), 1.0);

    ck_assert_int_eq(ag_tensor_set_requires_grad(b, true), 0);
    ag_tensor *y = ag_add(tape, a, b);
    ck_assert_ptr_nonnull(y);
    ck_assert_uint_eq(ag_tensor_dim(y, 0), 0);
    ck_assert_uint_eq(ag_tensor_dim(y, 1), 3);
    ck_assert_int_eq(ag_backward(tape, y, ag_zeros(tape, AG_F64, AG_SHAPE(0, 3))), 0);
    for (size_t i = 0; i < 3; i++)
        ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(b), i), 0.0);
    ag_tape_free(tape);
}
END_TEST

START_TEST(grad_accumulates)
{
    /* A second backward call adds into the leaves' gradients, so every
     * kernel must add to its adjoint instead of overwriting it. */
    const binary_case *c = &cases[_i];

    for (int p = 0; p < N_PATTERNS; p++) {
        const shape_pair *s = &patterns[p];
        ag_tape *tape = ag_tape_new();
        ag_rng rng = ag_rng_new(31);
        ag_tensor *a = ag_rand_uniform(tape, AG_F64, s->ndim_a, s->shape_a, c->a_low,
                                       c->a_high, &rng);
        ag_tensor *b = ag_rand_uniform(tape, AG_F64, s->ndim_b, s->shape_b, c->b_low,
                                       c->b_high, &rng);
        double first_ga[64];
        double first_gb[64];

        ck_assert_int_eq(ag_tensor_set_requires_grad(a, true), 0);
        ck_assert_int_eq(ag_tensor_set_requires_grad(b, true), 0);
        ag_tensor *y = c->op(tape, a, b);
        ag_tensor *seed = ag_rand_uniform(tape, AG_F64, ag_tensor_ndim(y),
                                          ag_tensor_shape(y), -1, 1, &rng);
        ck_assert_int_eq(ag_backward(tape, y, seed), 0);
        for (size_t i = 0; i < ag_tensor_numel(a); i++)
            first_ga[i] = ag_tensor_get(ag_tensor_grad(a), i);
        for (size_t i = 0; i < ag_tensor_numel(b); i++)
            first_gb[i] = ag_tensor_get(ag_tensor_grad(b), i);

        /* The second sum starts from the first, so rounding may differ. */
        ck_assert_int_eq(ag_backward(tape, y, seed), 0);
        for (size_t i = 0; i < ag_tensor_numel(a); i++)
            ck_assert_close(ag_tensor_get(ag_tensor_grad(a), i), 2 * first_ga[i], 1e-14,
                            c->name);
        for (size_t i = 0; i < ag_tensor_numel(b); i++)
            ck_assert_close(ag_tensor_get(ag_tensor_grad(b), i), 2 * first_gb[i], 1e-14,
                            c->name);
        ag_tape_free(tape);
    }
}
END_TEST

/* ---- errors --------------------------------------------------------------- */

START_TEST(broadcast_mismatch)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *a = ag_zeros(tape, AG_F64, AG_SHAPE(2, 3));
    ag_tensor *b = ag_zeros(tape, AG_F64, AG_SHAPE(4));

    ag_error_clear();
    ck_assert_error_contains(ag_add(tape, a, b), "ag_add: shapes (2x3) and (4)");
    ck_assert_error_contains(ag_maximum(tape, b, a), "ag_maximum: shapes (4) and (2x3)");
    ck_assert_error_contains(ag_pow(tape, a, b), "dimension -1 is 3 against 4");
    ag_tape_free(tape);
}
END_TEST

START_TEST(middle_mismatch)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *a = ag_zeros(tape, AG_F64, AG_SHAPE(2, 3, 4));
    ag_tensor *b = ag_zeros(tape, AG_F64, AG_SHAPE(5, 1));

    ck_assert_error_contains(ag_sub(tape, a, b),
                             "ag_sub: shapes (2x3x4) and (5x1) cannot be broadcast: "
                             "dimension -2 is 3 against 5");
    ag_tape_free(tape);
}
END_TEST

START_TEST(dtype_mismatch)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *a = ag_zeros(tape, AG_F32, AG_SHAPE(3));
    ag_tensor *b = ag_zeros(tape, AG_F64, AG_SHAPE(3));

    ck_assert_error_contains(ag_mul(tape, a, b), "ag_mul: dtypes differ: f32 and f64");
    ck_assert_error_contains(ag_div(tape, b, a), "ag_div: dtypes differ: f64 and f32");
    ag_tape_free(tape);
}
END_TEST

START_TEST(null_keeps_error)
{
    ag_tape *tape = ag_tape_new();
    ag_tensor *a = ag_zeros(tape, AG_F64, AG_SHAPE(3));

    ag_set_error("first failure");
    for (int c = 0; c < N_CASES; c++) {
        ck_assert_ptr_null(cases[c].op(tape, a, NULL));
        ck_assert_ptr_null(cases[c].op(tape, NULL, a));
    }
    ck_assert_str_eq(ag_error(), "first failure");
    ag_tape_free(tape);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("ops_binary");
    TCase *tc = tcase_create("core");

    tcase_add_loop_test(tc, f64_closed_form, 0, N_CASES);
    tcase_add_loop_test(tc, f32_closed_form, 0, N_CASES);
    tcase_add_loop_test(tc, finite_differences, 0, N_CASES);
    tcase_add_test(tc, maximum_ties_split);
    tcase_add_test(tc, minimum_ties_split);
    tcase_add_test(tc, nan_propagates);
    tcase_add_test(tc, pow_zero_base);
    tcase_add_loop_test(tc, grad_accumulates, 0, N_CASES);
    tcase_add_test(tc, grad_only_where_needed);
    tcase_add_test(tc, empty_broadcast);
    tcase_add_test(tc, broadcast_mismatch);
    tcase_add_test(tc, middle_mismatch);
    tcase_add_test(tc, dtype_mismatch);
    tcase_add_test(tc, null_keeps_error);
    suite_add_tcase(suite, tc);
    return run_suite(suite);
}
