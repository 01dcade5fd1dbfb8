/*
 * Tests of the tapegrad program, each run as a child process:
 *  - golden text for grad, --trace and --check;
 *  - JSON read back and compared with closed-form derivatives;
 *  - kinks, --check-records and --taylor, with counts and remainders
 *    worked out by hand;
 *  - the lecture's scalar network with its hand-derived gradients;
 *  - one test per class of error;
 *  - `tapegrad check` on a correct plugin and on one with a wrong backward rule,
 *    which the record check names by its record.
 *
 * The environment names the program (TAPEGRAD), the golden files
 * (GOLDEN_DIR) and the plugins (PLUGIN_GOOD, PLUGIN_WRONG); meson sets them.
 * Golden files were checked by hand: their expressions have exact values.
 * In a golden file, {{num}} matches one number, for the digits of a finite
 * difference that depend on rounding.
 */
#include <check.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "json.h"
#include "run_program.h"

/* ---- golden files ------------------------------------------------------------- */

static bool is_number_char(char c)
{
    return (c >= '0' && c <= '9') || strchr("+-.eEinfa", c) != NULL;
}

/* Compares text with a golden file in which {{num}} matches one number. */
static bool golden_matches(const char *golden, const char *actual)
{
    static const char wildcard[] = "{{num}}";

    while (*golden != '\0') {
        if (strncmp(golden, wildcard, sizeof wildcard - 1) == 0) {
            if (!is_number_char(*actual))
                return false;
            while (is_number_char(*actual))
                actual++;
            golden += sizeof wildcard - 1;
            continue;
        }
        if (*golden != *actual)
            return false;
        golden++;
        actual++;
    }
    return *actual == '\0';
}

static void assert_golden(const char *name, const char *actual)
{
    char path[512];

    snprintf(path, sizeof path, "%s/%s", env("GOLDEN_DIR"), name);
    char *golden = read_file(path);
    ck_assert_msg(golden_matches(golden, actual),
                  "output differs from %s\n--- expected:\n%s--- got:\n%s", name, golden,
                  actual);
    free(golden);
}

/* ---- JSON --------------------------------------------------------------------- */

/* Returns element i of doc.grad.NAME.data (or of doc.value.data when name
 * is NULL). */
static double data_at(const json_value *doc, const char *name, size_t i)
{
    const json_value *tensor = name == NULL ? json_get(doc, "value")
                                            : json_get(json_get(doc, "grad"), name);
    const json_value *element = json_at(json_get(tensor, "data"), i);

    ck_assert_msg(element != NULL && element->type == JSON_NUMBER,
                  "no number at %s data[%zu]", name == NULL ? "value" : name, i);
    return element->number;
}

static size_t shape_at(const json_value *doc, const char *name, size_t d)
{
    const json_value *tensor = name == NULL ? json_get(doc, "value")
                                            : json_get(json_get(doc, "grad"), name);
    const json_value *size = json_at(json_get(tensor, "shape"), d);

    ck_assert_msg(size != NULL && size->type == JSON_NUMBER, "no shape[%zu] for %s", d,
                  name == NULL ? "value" : name);
    return (size_t)size->number;
}

static const char *string_at(const json_value *object, const char *key)
{
    const json_value *v = json_get(object, key);

    ck_assert_msg(v != NULL && v->type == JSON_STRING, "no string at \"%s\"", key);
    return v->string;
}

static double number_at(const json_value *object, const char *key)
{
    const json_value *v = json_get(object, key);

    ck_assert_msg(v != NULL && v->type == JSON_NUMBER, "no number at \"%s\"", key);
    return v->number;
}

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

/* ================================================================================ */
/* grad: golden text                                                                 */
/* ================================================================================ */

START_TEST(grad_text_scalar)
{
    /* f = xy + x at (3, 4): 15, df/dx = y + 1 = 5, df/dy = x = 3. */
    run_result r = RUN("grad", "x*y + x", "x=3", "y=4", "z=2");

    ck_assert_int_eq(r.status, 0);
    assert_golden("grad_scalar.txt", r.out);
    run_free(&r);
}
END_TEST

START_TEST(grad_text_matrix)
{
    /* sum(x W) = sum_jk x_j W_jk: d/dx_j = sum_k W_jk, d/dW_jk = x_j. */
    run_result r = RUN("grad", "sum(x @ W)", "x=[[1,2]]", "W=[[1,2],[3,4]]");

    ck_assert_int_eq(r.status, 0);
    assert_golden("grad_matrix.txt", r.out);
    run_free(&r);
}
END_TEST

START_TEST(grad_text_vector_value)
{
    run_result r = RUN("grad", "x * 2", "x=[1,2,3]");

    ck_assert_int_eq(r.status, 0);
    assert_golden("grad_vector_value.txt", r.out);
    run_free(&r);
}
END_TEST

START_TEST(grad_text_f32)
{
    /* 1/3 rounded to float is 0.3333333432674408, printed as the shortest
     * decimal that reads back as that float. */
    run_result r = RUN("grad", "--dtype", "f32", "x / 3", "x=1");

    ck_assert_int_eq(r.status, 0);
    assert_golden("grad_f32.txt", r.out);
    run_free(&r);
}
END_TEST

START_TEST(grad_text_three_dims)
{
    run_result r = RUN("grad", "t * 1", "t=[[[1,2],[3,4]],[[5,6],[7,8]]]");

    ck_assert_int_eq(r.status, 0);
    assert_golden("grad_three_dims.txt", r.out);
    run_free(&r);
}
END_TEST

/* ================================================================================ */
/* grad: JSON against closed forms                                                   */
/* ================================================================================ */

START_TEST(json_scalar_closed_form)
{
    const double x = 0.5;
    const double y = -1.25;
    run_result r = RUN("grad", "--format", "json", "x^3 * y + exp(x*y)", "x=0.5", "y=-1.25");
    ck_assert_int_eq(r.status, 0);
    json_value *doc = parse_output(&r);

    /* f = x^3 y + e^(xy), df/dx = 3x^2 y + y e^(xy), df/dy = x^3 + x e^(xy) */
    ck_assert_str_eq(string_at(doc, "dtype"), "f64");
    ck_assert_uint_eq(shape_at(doc, NULL, 0), 1);
    ck_assert_near(data_at(doc, NULL, 0), x * x * x * y + exp(x * y), "value");
    ck_assert_near(data_at(doc, "x", 0), 3 * x * x * y + y * exp(x * y), "df/dx");
    ck_assert_near(data_at(doc, "y", 0), x * x * x + x * exp(x * y), "df/dy");
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(json_layer_closed_form)
{
    const double x[2] = {1, -2};
    const double w[2][3] = {{0.5, -1, 0.25}, {2, 0, -0.75}};
    const double b[3] = {0.1, 1, -0.3};
    run_result r = RUN("grad", "--format", "json", "sum(tanh(x @ W + b))", "x=[[1,-2]]",
                       "W=[[0.5,-1,0.25],[2,0,-0.75]]", "b=[0.1,1,-0.3]");
    ck_assert_int_eq(r.status, 0);
    json_value *doc = parse_output(&r);

    /* s_k = sum_j x_j W_jk + b_k; d tanh(s)/ds = 1 - tanh(s)^2 */
    double value = 0.0;
    double ds[3];
    for (int k = 0; k < 3; k++) {
        double s = x[0] * w[0][k] + x[1] * w[1][k] + b[k];

        value += tanh(s);
        ds[k] = 1.0 - tanh(s) * tanh(s);
    }
    ck_assert_near(data_at(doc, NULL, 0), value, "value");
    for (int k = 0; k < 3; k++)
        ck_assert_near(data_at(doc, "b", (size_t)k), ds[k], "d/db");
    for (int j = 0; j < 2; j++) {
        double dx = 0.0;

        for (int k = 0; k < 3; k++) {
            ck_assert_near(data_at(doc, "W", (size_t)(3 * j + k)), x[j] * ds[k], "d/dW");
            dx += w[j][k] * ds[k];
        }
        ck_assert_near(data_at(doc, "x", (size_t)j), dx, "d/dx");
    }
    ck_assert_uint_eq(shape_at(doc, "W", 0), 2);
    ck_assert_uint_eq(shape_at(doc, "W", 1), 3);
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(json_broadcast_sums_back)
{
    /* b (3) is added to each of the 2 rows of x, so d/db = 2 per element. */
    run_result r = RUN("grad", "--format", "json", "sum(x + b)", "x=[[1,2,3],[4,5,6]]",
                       "b=[10,20,30]");
    ck_assert_int_eq(r.status, 0);
    json_value *doc = parse_output(&r);

    ck_assert_double_eq(data_at(doc, NULL, 0), 21.0 + 120.0);
    for (size_t i = 0; i < 3; i++)
        ck_assert_double_eq(data_at(doc, "b", i), 2.0);
    for (size_t i = 0; i < 6; i++)
        ck_assert_double_eq(data_at(doc, "x", i), 1.0);
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(json_numbers_round_trip)
{
    /* 1/3 is not a short decimal: the printed digits must read back as the
     * same double. */
    run_result r = RUN("grad", "--format", "json", "x / 3", "x=1");
    ck_assert_int_eq(r.status, 0);
    json_value *doc = parse_output(&r);

    ck_assert_double_eq(data_at(doc, NULL, 0), 1.0 / 3.0);
    ck_assert_double_eq(data_at(doc, "x", 0), 1.0 / 3.0);
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(json_f32_values)
{
    run_result r = RUN("grad", "--format", "json", "--dtype", "f32", "x * x", "x=0.1");
    ck_assert_int_eq(r.status, 0);
    json_value *doc = parse_output(&r);
    float x = 0.1f;

    ck_assert_str_eq(string_at(doc, "dtype"), "f32");
    ck_assert_float_eq((float)data_at(doc, NULL, 0), x * x);
    ck_assert_float_eq((float)data_at(doc, "x", 0), 2.0f * x);
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(json_null_for_unused_and_labels)
{
    run_result r = RUN("grad", "--format", "json", "cross_entropy(z, y)",
                       "z=[[1,2,3],[0,0,1]]", "y=[2,0]", "w=5");
    ck_assert_int_eq(r.status, 0);
    json_value *doc = parse_output(&r);
    const json_value *grad = json_get(doc, "grad");

    ck_assert_ptr_nonnull(json_get(grad, "y"));
    ck_assert_int_eq(json_get(grad, "y")->type, JSON_NULL);
    ck_assert_ptr_nonnull(json_get(grad, "w"));
    ck_assert_int_eq(json_get(grad, "w")->type, JSON_NULL);

    /* d/dz = (softmax(z_r) - onehot(y_r)) / rows */
    const double z[2][3] = {{1, 2, 3}, {0, 0, 1}};
    const int labels[2] = {2, 0};
    double loss = 0.0;
    for (int row = 0; row < 2; row++) {
        double total = exp(z[row][0]) + exp(z[row][1]) + exp(z[row][2]);

        loss += (log(total) - z[row][labels[row]]) / 2.0;
        for (int c = 0; c < 3; c++) {
            double expected = (exp(z[row][c]) / total - (c == labels[row])) / 2.0;
            ck_assert_near(data_at(doc, "z", (size_t)(3 * row + c)), expected, "d/dz");
        }
    }
    ck_assert_near(data_at(doc, NULL, 0), loss, "loss");
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(json_nonfinite_as_strings)
{
    /* log(0) = -inf and d/dx log x = 1/x = inf at 0. */
    run_result r = RUN("grad", "--format", "json", "log(x)", "x=0");
    ck_assert_int_eq(r.status, 0);
    json_value *doc = parse_output(&r);
    const json_value *value = json_at(json_get(json_get(doc, "value"), "data"), 0);
    const json_value *grad = json_at(json_get(json_get(json_get(doc, "grad"), "x"), "data"), 0);

    ck_assert_ptr_nonnull(value);
    ck_assert_int_eq(value->type, JSON_STRING);
    ck_assert_str_eq(value->string, "-inf");
    ck_assert_ptr_nonnull(grad);
    ck_assert_int_eq(grad->type, JSON_STRING);
    ck_assert_str_eq(grad->string, "inf");
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(json_grad_null_for_vector_value)
{
    run_result r = RUN("grad", "--format", "json", "x * 2", "x=[1,2]");
    ck_assert_int_eq(r.status, 0);
    json_value *doc = parse_output(&r);

    ck_assert_ptr_nonnull(json_get(doc, "grad"));
    ck_assert_int_eq(json_get(doc, "grad")->type, JSON_NULL);
    ck_assert_double_eq(data_at(doc, NULL, 1), 4.0);
    json_free(doc);
    run_free(&r);
}
END_TEST

/* Losses and softmax, each against its closed-form gradient. */
typedef struct loss_case {
    const char *name;
    const char *expression;
    double p[3]; /* bound as p */
    double t[3]; /* bound as t */
    double (*value)(const double *p, const double *t);
    double (*dp)(const double *p, const double *t, int i);
} loss_case;

static double mse_value(const double *p, const double *t)
{
    double sum = 0.0;

    for (int i = 0; i < 3; i++)
        sum += (p[i] - t[i]) * (p[i] - t[i]);
    return sum / 3.0;
}

static double mse_dp(const double *p, const double *t, int i) { return 2.0 * (p[i] - t[i]) / 3.0; }

static double bce_value(const double *p, const double *t)
{
    double sum = 0.0;

    for (int i = 0; i < 3; i++)
        sum -= t[i] * log(p[i]) + (1.0 - t[i]) * log(1.0 - p[i]);
    return sum / 3.0;
}

static double bce_dp(const double *p, const double *t, int i)
{
    return (p[i] - t[i]) / (p[i] * (1.0 - p[i])) / 3.0;
}

static double bce_logits_value(const double *z, const double *t)
{
    double sum = 0.0;

    for (int i = 0; i < 3; i++)
        sum -= t[i] * log(sigmoid(z[i])) + (1.0 - t[i]) * log(1.0 - sigmoid(z[i]));
    return sum / 3.0;
}

static double bce_logits_dp(const double *z, const double *t, int i)
{
    return (sigmoid(z[i]) - t[i]) / 3.0;
}

/* sum(log_softmax(p) * t): d/dp_i = t_i - softmax(p)_i sum(t) */
static double log_softmax_value(const double *p, const double *t)
{
    double lse = log(exp(p[0]) + exp(p[1]) + exp(p[2]));

    return (p[0] - lse) * t[0] + (p[1] - lse) * t[1] + (p[2] - lse) * t[2];
}

static double log_softmax_dp(const double *p, const double *t, int i)
{
    double total = exp(p[0]) + exp(p[1]) + exp(p[2]);

    return t[i] - exp(p[i]) / total * (t[0] + t[1] + t[2]);
}

static const loss_case loss_cases[] = {
    {"mse", "mse(p, t)", {0.5, -1, 2}, {1, 0.25, 2.5}, mse_value, mse_dp},
    {"bce", "bce(p, t)", {0.2, 0.7, 0.9}, {0, 1, 1}, bce_value, bce_dp},
    {"bce_logits", "bce_logits(p, t)", {-1.5, 0.3, 4}, {0, 1, 0}, bce_logits_value,
     bce_logits_dp},
    {"log_softmax", "sum(log_softmax(p, -1) * t)", {0.1, -2, 1.5}, {1, 2, 0.5},
     log_softmax_value, log_softmax_dp},
};

START_TEST(json_loss_closed_form)
{
    const loss_case *c = &loss_cases[_i];
    char p_arg[128];
    char t_arg[128];

    snprintf(p_arg, sizeof p_arg, "p=[%.17g,%.17g,%.17g]", c->p[0], c->p[1], c->p[2]);
    snprintf(t_arg, sizeof t_arg, "t=[%.17g,%.17g,%.17g]", c->t[0], c->t[1], c->t[2]);
    run_result r = RUN("grad", "--format", "json", c->expression, p_arg, t_arg);
    ck_assert_msg(r.status == 0, "%s: exit status %d: %s", c->name, r.status, r.err);
    json_value *doc = parse_output(&r);

    ck_assert_near(data_at(doc, NULL, 0), c->value(c->p, c->t), c->name);
    for (int i = 0; i < 3; i++)
        ck_assert_near(data_at(doc, "p", (size_t)i), c->dp(c->p, c->t, i), c->name);
    json_free(doc);
    run_free(&r);
}
END_TEST

/* ================================================================================ */
/* --trace and --dot                                                                  */
/* ================================================================================ */

START_TEST(trace_golden)
{
    /* L = (y - (xw + b))^2 at x=3, w=2, b=1, y=5: xw = 6, + b = 7, y - 7 = -2,
     * L = 4. dL/d(y - f) = 2(-2) = -4, so y gets -4 and f gets 4, which
     * passes unchanged to xw and b; x gets 4w = 8 and w gets 4x = 12. */
    run_result r = RUN("grad", "--trace", "(y - (x*w + b))^2", "x=3", "w=2", "b=1", "y=5");

    ck_assert_int_eq(r.status, 0);
    assert_golden("trace_squared_error.txt", r.out);
    run_free(&r);
}
END_TEST

START_TEST(trace_shared_input)
{
    /* x*x + x at x=3: mul sends 2x = 6 to x, add sends 1, x's gradient is
     * their sum 7. The trace shows each record's share. */
    run_result r = RUN("grad", "--trace", "x*x + x", "x=3");

    ck_assert_int_eq(r.status, 0);
    assert_golden("trace_shared_input.txt", r.out);
    run_free(&r);
}
END_TEST

START_TEST(trace_json_to_stderr)
{
    run_result r = RUN("grad", "--format", "json", "--trace", "x*x", "x=3");
    ck_assert_int_eq(r.status, 0);
    json_value *doc = parse_output(&r);

    ck_assert_double_eq(data_at(doc, "x", 0), 6.0);
    ck_assert_msg(strncmp(r.err, "tape: 1 record,", 15) == 0, "stderr: %s", r.err);
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(dot_golden)
{
    char path[256];
    int fd = temporary_file(path, sizeof path, "dot");
    close(fd);

    run_result r = RUN("grad", "--dot", path, "x*w + b", "x=3", "w=2", "b=1");
    ck_assert_int_eq(r.status, 0);
    char *dot = read_file(path);
    assert_golden("dot_affine.txt", dot);
    free(dot);
    unlink(path);
    run_free(&r);
}
END_TEST

START_TEST(dot_unwritable_file)
{
    run_result r = RUN("grad", "--dot", "/nonexistent-dir/graph.dot", "x*2", "x=1");

    ck_assert_int_eq(r.status, 2);
    ck_assert_ptr_nonnull(strstr(r.err, "/nonexistent-dir/graph.dot"));
    run_free(&r);
}
END_TEST

/* ================================================================================ */
/* --check                                                                            */
/* ================================================================================ */

START_TEST(check_text_golden)
{
    /* d/dx (x^2 + x) = 2x + 1 = 7 at 3; the finite difference differs in its
     * last digits. */
    run_result r = RUN("grad", "--check", "x*x + x", "x=3");

    ck_assert_int_eq(r.status, 0);
    assert_golden("check_passed.txt", r.out);
    run_free(&r);
}
END_TEST

START_TEST(check_json_passes)
{
    const double x = 0.5;
    const double y = -1.25;
    run_result r = RUN("grad", "--format", "json", "--check", "x^3 * y + exp(x*y)",
                       "x=0.5", "y=-1.25");
    ck_assert_int_eq(r.status, 0);
    json_value *doc = parse_output(&r);
    const json_value *check = json_get(doc, "check");

    ck_assert_ptr_nonnull(check);
    ck_assert_int_eq(json_get(check, "passed")->type, JSON_BOOL);
    ck_assert(json_get(check, "passed")->boolean);
    ck_assert_double_eq(number_at(check, "checked"), 2.0);

    /* The worst element's analytic value is one of the closed forms, and the
     * errors are those of analytic against numeric. */
    const char *input = string_at(check, "input");
    double expected = strcmp(input, "x") == 0 ? 3 * x * x * y + y * exp(x * y)
                                              : x * x * x + x * exp(x * y);
    double analytic = number_at(check, "analytic");
    double numeric = number_at(check, "numeric");
    ck_assert_near(analytic, expected, "analytic");
    ck_assert_double_eq(number_at(check, "abs_error"), fabs(analytic - numeric));
    ck_assert(fabs(numeric - expected) < 1e-7);
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(check_kink_json)
{
    /* relu'(0) is 0 by convention, but the central difference at 0 is
     * (eps - 0) / (2 eps) = 0.5. The one-sided differences are 0 and
     * (relu(eps) - relu(0)) / eps = 1, so x is at a kink, not wrong, and the
     * worst element is y, whose derivative is 2y = 3. */
    run_result r = RUN("grad", "--format", "json", "--check", "relu(x) + y*y", "x=0",
                       "y=1.5");
    ck_assert_msg(r.status == 0, "exit status %d: %s", r.status, r.out);
    json_value *doc = parse_output(&r);
    const json_value *check = json_get(doc, "check");
    const json_value *kink = json_get(check, "kink");

    ck_assert(json_get(check, "passed")->boolean);
    ck_assert_double_eq(number_at(check, "checked"), 2.0);
    ck_assert_double_eq(number_at(check, "kinks"), 1.0);
    ck_assert_str_eq(string_at(check, "input"), "y");
    ck_assert_near(number_at(check, "analytic"), 3.0, "analytic");
    ck_assert_ptr_nonnull(kink);
    ck_assert_str_eq(string_at(kink, "input"), "x");
    ck_assert_double_eq(number_at(kink, "index"), 0.0);
    ck_assert_double_eq(number_at(kink, "left"), 0.0);
    /* y*y = 2.25 rounds in the difference, so right is 1 to about 1e-10. */
    ck_assert_msg(fabs(number_at(kink, "right") - 1.0) < 1e-8, "right %.17g",
                  number_at(kink, "right"));
    ck_assert_double_eq(number_at(kink, "analytic"), 0.0);
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(check_kink_text)
{
    run_result r = RUN("grad", "--check", "relu(x)", "x=0");

    ck_assert_int_eq(r.status, 0);
    assert_golden("check_kink.txt", r.out);
    run_free(&r);
}
END_TEST

START_TEST(check_no_kink_json)
{
    /* A smooth function has no kinks, and "kink" is null. */
    run_result r = RUN("grad", "--format", "json", "--check", "exp(x)", "x=0.5");
    ck_assert_int_eq(r.status, 0);
    json_value *doc = parse_output(&r);
    const json_value *check = json_get(doc, "check");

    ck_assert_double_eq(number_at(check, "kinks"), 0.0);
    ck_assert_int_eq(json_get(check, "kink")->type, JSON_NULL);
    ck_assert_ptr_null(json_get(doc, "records"));
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(check_fails_text)
{
    /* No tolerance at all: the finite difference of exp differs from e in
     * its last digits, so the check fails, and the record check that runs
     * after a failure names the one record, exp. */
    run_result r = RUN("grad", "--check", "--atol", "0", "--rtol", "0", "exp(x)", "x=1");

    ck_assert_int_eq(r.status, 1);
    ck_assert_ptr_nonnull(strstr(r.out, "gradient check: FAILED"));
    ck_assert_ptr_nonnull(strstr(r.out, "worst element: x[0]"));
    ck_assert_ptr_nonnull(strstr(r.out, "record check: FAILED at record #0 exp"));
    run_free(&r);
}
END_TEST

START_TEST(records_text_counts)
{
    /* Every record's whole local Jacobian is compared: matmul (2 outputs x
     * 6 input elements), add (2 x 4), tanh (2 x 2) and sum (1 x 2). */
    run_result r = RUN("grad", "--check-records", "sum(tanh(x @ W + b))", "x=[[1,2]]",
                       "W=[[0.5,-1],[2,0]]", "b=[[0,1]]");

    ck_assert_msg(r.status == 0, "exit status %d: %s%s", r.status, r.out, r.err);
    ck_assert_ptr_nonnull(
        strstr(r.out, "record check: passed (4 records, 26 partial derivatives compared)"));
    ck_assert_ptr_null(strstr(r.out, "at a kink"));
    run_free(&r);
}
END_TEST

START_TEST(records_pass_losses)
{
    /* The fused losses of nn are ops of their own; the labels of
     * cross_entropy take no gradient and are held constant. */
    run_result r = RUN("grad", "--check-records",
                       "cross_entropy(z, y) + bce_logits(w, t) + bce(sigmoid(w), t) + "
                       "mse(w, t) + sum(log_softmax(z, 1)) + mean(max(z, 1))",
                       "z=[[1,2,3],[0,0,1]]", "y=[2,0]", "w=[0.5,-1]", "t=[1,0]");

    ck_assert_msg(r.status == 0, "exit status %d: %s%s", r.status, r.out, r.err);
    ck_assert_ptr_nonnull(strstr(r.out, "record check: passed"));
    run_free(&r);
}
END_TEST

START_TEST(records_json_kinks)
{
    /* max over the tie x[0] = x[1] has two kinks (one-sided derivatives 0
     * and 1 each); abs at y[0] = 0 has one, on the diagonal of its local
     * Jacobian. */
    run_result r = RUN("grad", "--format", "json", "--check-records", "max(x) + sum(abs(y))",
                       "x=[2,2,1]", "y=[0,1]");
    ck_assert_msg(r.status == 0, "exit status %d: %s%s", r.status, r.out, r.err);
    json_value *doc = parse_output(&r);
    const json_value *records = json_get(doc, "records");
    const json_value *kink = json_get(records, "kink");

    ck_assert(json_get(records, "passed")->boolean);
    ck_assert_double_eq(number_at(records, "records"), 4.0);
    ck_assert_double_eq(number_at(records, "failed"), 0.0);
    ck_assert_double_eq(number_at(records, "kinks"), 3.0);
    ck_assert_int_eq(json_get(records, "first_wrong")->type, JSON_NULL);
    ck_assert_double_eq(number_at(kink, "record"), 0.0);
    ck_assert_str_eq(string_at(kink, "op"), "max");
    ck_assert_str_eq(string_at(kink, "input"), "x");
    ck_assert_double_eq(number_at(kink, "index"), 0.0);
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(records_text_kink)
{
    run_result r = RUN("grad", "--check-records", "sum(relu(x))", "x=[1,0]");

    ck_assert_int_eq(r.status, 0);
    ck_assert_ptr_nonnull(strstr(r.out, "at a kink: 1 partial derivative"));
    ck_assert_ptr_nonnull(strstr(r.out, "first kink: record #0 relu, x[1]"));
    run_free(&r);
}
END_TEST

START_TEST(taylor_json_closed_form)
{
    /* For sum(x*x), r(h) = |(x + hv)^2 - x^2 - 2hx.v| = h^2 |v|^2 = h^2,
     * with v of unit length. */
    run_result r = RUN("grad", "--format", "json", "--taylor", "sum(x*x)", "x=[1,-2,0.5]");
    ck_assert_msg(r.status == 0, "exit status %d: %s%s", r.status, r.out, r.err);
    json_value *doc = parse_output(&r);
    const json_value *taylor = json_get(doc, "taylor");
    const json_value *h = json_get(taylor, "h");
    const json_value *remainder = json_get(taylor, "r");

    ck_assert(json_get(taylor, "passed")->boolean);
    ck_assert_msg(fabs(number_at(taylor, "order") - 2.0) < 1e-3, "order %g",
                  number_at(taylor, "order"));
    ck_assert_uint_eq(h->count, 20);
    ck_assert_uint_eq(remainder->count, 20);
    for (size_t k = 0; k < 8; k++) {
        double step = ldexp(1.0, -(int)(k + 1));

        ck_assert_double_eq(json_at(h, k)->number, step);
        ck_assert_msg(fabs(json_at(remainder, k)->number / (step * step) - 1.0) < 1e-9,
                      "r(2^-%zu) = %g", k + 1, json_at(remainder, k)->number);
    }
    ck_assert_near(number_at(taylor, "value"), 5.25, "f(x)");
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(taylor_text_table)
{
    run_result r = RUN("grad", "--taylor", "sum(tanh(x @ W + b))", "x=[[1,2]]",
                       "W=[[0.5,-1],[2,0]]", "b=[[0,1]]");

    ck_assert_msg(r.status == 0, "exit status %d: %s%s", r.status, r.out, r.err);
    ck_assert_ptr_nonnull(strstr(r.out, "taylor test: passed, order 2.0"));
    ck_assert_ptr_nonnull(strstr(r.out, "  2^-1 "));
    ck_assert_ptr_nonnull(strstr(r.out, "  2^-20 "));
    ck_assert_ptr_nonnull(strstr(r.out, "fitted"));
    run_free(&r);
}
END_TEST

START_TEST(taylor_linear_passes)
{
    run_result r = RUN("grad", "--taylor", "sum(x*3) + y", "x=[1,2]", "y=4");

    ck_assert_int_eq(r.status, 0);
    ck_assert_ptr_nonnull(strstr(r.out, "taylor test: passed, no order measured"));
    ck_assert_ptr_nonnull(strstr(r.out, "linear along v"));
    run_free(&r);
}
END_TEST

START_TEST(check_holds_labels_constant)
{
    /* Perturbing a label would make it a non-integer class index and fail
     * the loss; a pass shows the labels were held constant. */
    run_result r = RUN("grad", "--format", "json", "--check", "cross_entropy(z, y)",
                       "z=[[1,2,3],[0,0,1]]", "y=[2,0]");
    ck_assert_msg(r.status == 0, "exit status %d: %s", r.status, r.err);
    json_value *doc = parse_output(&r);
    const json_value *check = json_get(doc, "check");

    ck_assert(json_get(check, "passed")->boolean);
    ck_assert_double_eq(number_at(check, "checked"), 6.0);
    ck_assert_str_eq(string_at(check, "input"), "z");
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(check_labels_also_used_elsewhere)
{
    /* c is the labels and a variable: the checks move c in sum(c*c) only,
     * so the labels stay the integer class 1 and every check runs. */
    run_result r = RUN("grad", "--check", "--check2", "--check-records", "--taylor",
                       "cross_entropy(z,c) + sum(c*c)", "z=[[1,2,3]]", "c=[1]");

    ck_assert_msg(r.status == 0, "exit status %d: %s%s", r.status, r.out, r.err);
    ck_assert_ptr_nonnull(strstr(r.out, "d/dc (1): 2\n"));
    ck_assert_ptr_nonnull(strstr(r.out, "labels held constant: the checks keep the labels "
                                        "of cross_entropy at the bound value of c"));
    ck_assert_ptr_nonnull(strstr(r.out, "gradient check: passed (4 partial derivatives"));
    ck_assert_ptr_nonnull(strstr(r.out, "second-order check: passed"));
    ck_assert_ptr_nonnull(strstr(r.out, "record check: passed"));
    ck_assert_ptr_nonnull(strstr(r.out, "taylor test: passed"));
    run_free(&r);
}
END_TEST

START_TEST(check_labels_held_constant_json)
{
    run_result r = RUN("grad", "--format", "json", "--check",
                       "cross_entropy(z,c) + sum(c*c)", "z=[[1,2,3]]", "c=[1]");
    ck_assert_msg(r.status == 0, "exit status %d: %s", r.status, r.err);
    json_value *doc = parse_output(&r);
    const json_value *held = json_get(doc, "labels_held_constant");

    ck_assert_ptr_nonnull(held);
    ck_assert_int_eq(held->type, JSON_ARRAY);
    ck_assert_uint_eq(held->count, 1);
    ck_assert_str_eq(json_at(held, 0)->string, "c");
    ck_assert(json_get(json_get(doc, "check"), "passed")->boolean);
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(check_nan_value_could_not_run)
{
    /* sum's gradient is right; a NaN value must not make it fail. */
    run_result r = RUN("grad", "--check", "sum(x)", "x=[1,nan]");

    ck_assert_msg(r.status == 2, "exit status %d: %s%s", r.status, r.out, r.err);
    ck_assert_ptr_nonnull(strstr(r.err, "f(x) is nan at output element 0"));
    ck_assert_ptr_null(strstr(r.out, "FAILED"));
    run_free(&r);
}
END_TEST

START_TEST(records_nan_value_could_not_run)
{
    run_result r = RUN("grad", "--check-records", "sum(x)", "x=[1,nan]");

    ck_assert_msg(r.status == 2, "exit status %d: %s%s", r.status, r.out, r.err);
    ck_assert_ptr_nonnull(strstr(r.err, "record 0 (sum): non-finite output"));
    ck_assert_ptr_null(strstr(r.out, "FAILED"));
    run_free(&r);
}
END_TEST

START_TEST(check_eps_too_small)
{
    run_result r = RUN("grad", "--check", "--eps", "1e-300", "sum(x)", "x=[1,2]");

    ck_assert_msg(r.status == 2, "exit status %d: %s%s", r.status, r.out, r.err);
    ck_assert_ptr_nonnull(strstr(r.err, "the step 1e-300 does not move input 0 \"x\" "
                                        "element 0"));
    run_free(&r);
}
END_TEST

START_TEST(records_text_one_record)
{
    /* Without tolerance, rounding fails the single record. */
    run_result r = RUN("grad", "--check-records", "--atol", "0", "--rtol", "0", "exp(x)",
                       "x=0.7");

    ck_assert_msg(r.status == 1, "exit status %d: %s%s", r.status, r.out, r.err);
    ck_assert_ptr_nonnull(strstr(r.out, "record check: FAILED at record #0 exp (1 of 1 "
                                        "record wrong)"));
    run_free(&r);
}
END_TEST

/* ================================================================================ */
/* The lecture's network                                                              */
/* ================================================================================ */

START_TEST(lecture_scalar_network)
{
    /* S1 = x W1 + b1, Z1 = h(S1), S2 = Z1 W2 + b2, Z2 = h(S2),
     * f = Z2 W3 + b3, L = (y - f)^2 with h = tanh and every quantity a scalar. */
    const double x = 0.8, w1 = -0.4, b1 = 0.3, w2 = 1.7, b2 = -0.2, w3 = 0.9, b3 = 0.05,
                 y = 1.5;
    run_result r = RUN("grad", "--format", "json",
                       "(y - (tanh(tanh(x*W1 + b1)*W2 + b2)*W3 + b3))^2", "x=0.8",
                       "W1=-0.4", "b1=0.3", "W2=1.7", "b2=-0.2", "W3=0.9", "b3=0.05",
                       "y=1.5");
    ck_assert_int_eq(r.status, 0);
    json_value *doc = parse_output(&r);

    /* Forward pass. */
    double s1 = x * w1 + b1;
    double z1 = tanh(s1);
    double s2 = z1 * w2 + b2;
    double z2 = tanh(s2);
    double f = z2 * w3 + b3;
    double loss = (y - f) * (y - f);

    /* The backward derivation, step by step: h'(S) = 1 - h(S)^2 for tanh. */
    double dl_df = -2.0 * (y - f);
    double dl_dw3 = dl_df * z2;
    double dl_db3 = dl_df;
    double dl_dz2 = dl_df * w3;
    double dl_ds2 = dl_dz2 * (1.0 - z2 * z2);
    double dl_dw2 = dl_ds2 * z1;
    double dl_db2 = dl_ds2;
    double dl_dz1 = dl_ds2 * w2;
    double dl_ds1 = dl_dz1 * (1.0 - z1 * z1);
    double dl_dw1 = dl_ds1 * x;
    double dl_db1 = dl_ds1;
    double dl_dx = dl_ds1 * w1;
    double dl_dy = 2.0 * (y - f);

    ck_assert_near(data_at(doc, NULL, 0), loss, "L");
    ck_assert_near(data_at(doc, "W3", 0), dl_dw3, "dL/dW3");
    ck_assert_near(data_at(doc, "b3", 0), dl_db3, "dL/db3");
    ck_assert_near(data_at(doc, "W2", 0), dl_dw2, "dL/dW2");
    ck_assert_near(data_at(doc, "b2", 0), dl_db2, "dL/db2");
    ck_assert_near(data_at(doc, "W1", 0), dl_dw1, "dL/dW1");
    ck_assert_near(data_at(doc, "b1", 0), dl_db1, "dL/db1");
    ck_assert_near(data_at(doc, "x", 0), dl_dx, "dL/dx");
    ck_assert_near(data_at(doc, "y", 0), dl_dy, "dL/dy");
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(lecture_relu_trace_golden)
{
    /* The same network with h = relu and values chosen so every step is an
     * integer: S1 = 5, S2 = 2, f = 9, L = (6 - 9)^2 = 9; dL/df = 6,
     * dL/dW3 = 12, dL/dS2 = 24, dL/dW2 = 120, dL/dS1 = -24, dL/dW1 = -48,
     * dL/dx = -72, dL/dy = -6. */
    run_result r = RUN("grad", "--trace",
                       "(y - (relu(relu(x*W1 + b1)*W2 + b2)*W3 + b3))^2", "x=2", "W1=3",
                       "b1=-1", "W2=-1", "b2=7", "W3=4", "b3=1", "y=6");

    ck_assert_int_eq(r.status, 0);
    assert_golden("lecture_relu_trace.txt", r.out);
    run_free(&r);
}
END_TEST

START_TEST(lecture_vector_layer)
{
    /* One hidden layer in row-vector form: S = xW1 + b1, Z = sigmoid(S),
     * f = Z W2 + b2 (1x1), L = (y - f)^2. dL/dZ_k = dL/df W2_k,
     * dL/dS_k = dL/dZ_k Z_k (1 - Z_k), dL/dW1_jk = x_j dL/dS_k. */
    const double x[3] = {0.5, -1, 2};
    const double w1[3][2] = {{0.1, -0.3}, {0.8, 0.2}, {-0.5, 0.4}};
    const double b1[2] = {0.05, -0.1};
    const double w2[2] = {1.5, -2};
    const double b2 = 0.3;
    const double y = 1;
    run_result r = RUN("grad", "--format", "json", "(y - (sigmoid(x @ W1 + b1) @ W2 + b2))^2",
                       "x=[[0.5,-1,2]]", "W1=[[0.1,-0.3],[0.8,0.2],[-0.5,0.4]]",
                       "b1=[[0.05,-0.1]]", "W2=[[1.5],[-2]]", "b2=0.3", "y=1");
    ck_assert_int_eq(r.status, 0);
    json_value *doc = parse_output(&r);

    double z[2];
    double f = b2;
    for (int k = 0; k < 2; k++) {
        double s = b1[k];

        for (int j = 0; j < 3; j++)
            s += x[j] * w1[j][k];
        z[k] = sigmoid(s);
        f += z[k] * w2[k];
    }
    double dl_df = -2.0 * (y - f);
    ck_assert_near(data_at(doc, NULL, 0), (y - f) * (y - f), "L");
    ck_assert_near(data_at(doc, "b2", 0), dl_df, "dL/db2");
    for (int k = 0; k < 2; k++) {
        double dl_ds = dl_df * w2[k] * z[k] * (1.0 - z[k]);

        ck_assert_near(data_at(doc, "W2", (size_t)k), dl_df * z[k], "dL/dW2");
        ck_assert_near(data_at(doc, "b1", (size_t)k), dl_ds, "dL/db1");
        for (int j = 0; j < 3; j++)
            ck_assert_near(data_at(doc, "W1", (size_t)(2 * j + k)), x[j] * dl_ds, "dL/dW1");
    }
    json_free(doc);
    run_free(&r);
}
END_TEST

/* ================================================================================ */
/* Errors: exit status 2 and a message that points at the cause                     */
/* ================================================================================ */

START_TEST(error_syntax_caret)
{
    run_result r = RUN("grad", "x * (y +", "x=1", "y=2");

    assert_usage_error(&r, "found the end of the expression");
    /* The expression is echoed with a caret under column 8, its end. */
    assert_usage_error(&r, "  x * (y +\n          ^\n");
    run_free(&r);
}
END_TEST

START_TEST(error_unknown_function)
{
    run_result r = RUN("grad", "2 * cosh(x)", "x=1");

    assert_usage_error(&r, "unknown function 'cosh'");
    assert_usage_error(&r, "      ^\n");
    run_free(&r);
}
END_TEST

START_TEST(error_unknown_name)
{
    run_result r = RUN("grad", "x + z", "x=1");

    assert_usage_error(&r, "unknown name 'z'; bind it on the command line as z=VALUE");
    run_free(&r);
}
END_TEST

START_TEST(error_shape_mismatch)
{
    run_result r = RUN("grad", "sum(x @ W)", "x=[[1,2,3]]", "W=[[1,2],[3,4]]");

    assert_usage_error(&r, "ag_matmul");
    assert_usage_error(&r, "(1x3)");
    assert_usage_error(&r, "(2x2)");
    /* The caret sits under the '@'. */
    assert_usage_error(&r, "  sum(x @ W)\n        ^\n");
    run_free(&r);
}
END_TEST

START_TEST(error_matmul_vector_hint)
{
    run_result r = RUN("grad", "sum(x @ y)", "x=[1,2]", "y=[3,4]");

    assert_usage_error(&r, "ag_matmul: operands must be 2-D");
    assert_usage_error(&r, "hint: expressions cannot reshape, so bind matrices: a row as "
                           "x=[[1,2]] and a column as y=[[3],[4]]");
    run_free(&r);
}
END_TEST

START_TEST(error_taylor_needs_one_element)
{
    run_result r = RUN("grad", "--taylor", "x*2", "x=[1,2]");

    assert_usage_error(&r, "--taylor needs a one-element value");
    run_free(&r);
}
END_TEST

START_TEST(error_check_needs_one_element)
{
    run_result r = RUN("grad", "--check", "x * 2", "x=[1,2]");

    assert_usage_error(&r, "--check needs a one-element value");
    assert_usage_error(&r, "(2)");
    run_free(&r);
}
END_TEST

START_TEST(error_ragged_binding)
{
    run_result r = RUN("grad", "sum(W)", "W=[[1,2],[3]]");

    assert_usage_error(&r, "ragged list");
    assert_usage_error(&r, "  W=[[1,2],[3]]\n           ^\n");
    run_free(&r);
}
END_TEST

START_TEST(error_binding_without_value)
{
    run_result r = RUN("grad", "x", "x");

    assert_usage_error(&r, "expected NAME=VALUE");
    run_free(&r);
}
END_TEST

START_TEST(error_invalid_number)
{
    run_result r = RUN("grad", "x", "x=[1,two]");

    assert_usage_error(&r, "invalid number 'two'");
    run_free(&r);
}
END_TEST

START_TEST(error_name_bound_twice)
{
    run_result r = RUN("grad", "x", "x=1", "x=2");

    assert_usage_error(&r, "x is bound twice");
    run_free(&r);
}
END_TEST

START_TEST(error_bad_label)
{
    run_result r = RUN("grad", "cross_entropy(z, y)", "z=[[1,2]]", "y=[5]");

    assert_usage_error(&r, "label 5");
    run_free(&r);
}
END_TEST

START_TEST(error_bad_axis)
{
    run_result r = RUN("grad", "sum(x, 0.5)", "x=[1,2]");

    assert_usage_error(&r, "the axis of sum must be an integer");
    run_free(&r);
}
END_TEST

START_TEST(error_wrong_argument_count)
{
    run_result r = RUN("grad", "softmax(x)", "x=[1,2]");

    assert_usage_error(&r, "softmax takes 2 arguments, got 1");
    run_free(&r);
}
END_TEST

START_TEST(error_bad_option_value)
{
    run_result r = RUN("grad", "--dtype", "f16", "x", "x=1");

    assert_usage_error(&r, "invalid value 'f16' for --dtype");
    run_free(&r);
}
END_TEST

START_TEST(error_unknown_option)
{
    run_result r = RUN("grad", "--verbose", "x", "x=1");

    assert_usage_error(&r, "unknown option '--verbose'");
    run_free(&r);
}
END_TEST

START_TEST(error_missing_expression)
{
    run_result r = RUN("grad");

    assert_usage_error(&r, "missing expression");
    run_free(&r);
}
END_TEST

START_TEST(error_unknown_command)
{
    run_result r = RUN("differentiate", "x");

    assert_usage_error(&r, "unknown command 'differentiate'");
    run_free(&r);
}
END_TEST

/* ================================================================================ */
/* Help                                                                               */
/* ================================================================================ */

START_TEST(help_lists_every_option)
{
    static const char *const options[] = {
        "--dtype", "--format", "--check", "--trace", "--dot",   "--eps",
        "--atol",  "--rtol",   "--input", "--seed",  "--range", "--help",
        "--version", "--check-records", "--taylor",
    };
    run_result r = RUN("--help");

    ck_assert_int_eq(r.status, 0);
    for (size_t i = 0; i < sizeof options / sizeof options[0]; i++)
        ck_assert_msg(strstr(r.out, options[i]) != NULL, "--help omits %s", options[i]);
    run_free(&r);
}
END_TEST

START_TEST(help_grad_shows_grammar)
{
    static const char *const items[] = {
        "a ^ b", "right-associative", "-x^2 is -(x^2)", "a @ b", "softmax(x, axis)",
        "cross_entropy(logits, labels)", "bce_logits", "logsumexp", "transpose(x)",
        "NAME=VALUE",
    };
    run_result r = RUN("grad", "--help");

    ck_assert_int_eq(r.status, 0);
    for (size_t i = 0; i < sizeof items / sizeof items[0]; i++)
        ck_assert_msg(strstr(r.out, items[i]) != NULL, "grad --help omits %s", items[i]);
    run_free(&r);
}
END_TEST

/* ================================================================================ */
/* tapegrad check on plugins                                                          */
/* ================================================================================ */

START_TEST(plugin_good_passes)
{
    run_result r = RUN("check", env("PLUGIN_GOOD"), "good_function", "--input", "2x3", "3x2");

    ck_assert_msg(r.status == 0, "exit status %d: %s%s", r.status, r.out, r.err);
    ck_assert_ptr_nonnull(strstr(r.out, "gradient check: passed (12 partial derivatives"));
    run_free(&r);
}
END_TEST

START_TEST(plugin_wrong_fails)
{
    run_result r = RUN("check", env("PLUGIN_WRONG"), "wrong_function", "--input", "2x3",
                       "--input", "2x3");

    ck_assert_int_eq(r.status, 1);
    ck_assert_ptr_nonnull(strstr(r.out, "gradient check: FAILED"));
    ck_assert_ptr_nonnull(strstr(r.out, "worst element: input 0 "));
    run_free(&r);
}
END_TEST

START_TEST(plugin_wrong_json)
{
    run_result r = RUN("check", "--format", "json", "--seed", "7", env("PLUGIN_WRONG"),
                       "wrong_function", "--input", "2x3", "2x3");
    ck_assert_int_eq(r.status, 1);
    json_value *doc = parse_output(&r);
    const json_value *check = json_get(doc, "check");

    ck_assert(!json_get(check, "passed")->boolean);
    ck_assert_str_eq(string_at(check, "input"), "input 0");
    /* The rule uses 2 a^2 b where d/da sum(a^3 b) = 3 a^2 b. */
    double ratio = number_at(check, "analytic") / number_at(check, "numeric");
    ck_assert_msg(fabs(ratio - 2.0 / 3.0) < 1e-6, "analytic / numeric = %g", ratio);
    ck_assert_double_eq(number_at(doc, "seed"), 7.0);
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(plugin_wrong_names_record)
{
    /* A failed check runs the record check, which names the custom op's
     * record: cube is record 0 of cube, mul and sum. */
    run_result r = RUN("check", env("PLUGIN_WRONG"), "wrong_function", "--input", "2x3",
                       "2x3");

    ck_assert_int_eq(r.status, 1);
    ck_assert_ptr_nonnull(
        strstr(r.out, "record check: FAILED at record #0 plugin_wrong_cube (1 of 3 records "
                      "wrong)"));
    ck_assert_ptr_nonnull(strstr(r.out, "worst element: input0["));
    run_free(&r);
}
END_TEST

START_TEST(plugin_wrong_records_json)
{
    run_result r = RUN("check", "--format", "json", env("PLUGIN_WRONG"), "wrong_function",
                       "--input", "2x3", "2x3");
    ck_assert_int_eq(r.status, 1);
    json_value *doc = parse_output(&r);
    const json_value *records = json_get(doc, "records");
    const json_value *wrong = json_get(records, "first_wrong");

    ck_assert(!json_get(records, "passed")->boolean);
    ck_assert_double_eq(number_at(records, "failed"), 1.0);
    ck_assert_double_eq(number_at(wrong, "record"), 0.0);
    ck_assert_str_eq(string_at(wrong, "op"), "plugin_wrong_cube");
    ck_assert_str_eq(string_at(wrong, "input"), "input0");
    /* The local Jacobian is diagonal: 2 a^2 from the rule, 3 a^2 numeric. */
    ck_assert_double_eq(number_at(wrong, "output_index"), number_at(wrong, "index"));
    double ratio = number_at(wrong, "analytic") / number_at(wrong, "numeric");
    ck_assert_msg(fabs(ratio - 2.0 / 3.0) < 1e-6, "analytic / numeric = %g", ratio);
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(plugin_good_records_pass)
{
    run_result r = RUN("check", "--check-records", env("PLUGIN_GOOD"), "good_function",
                       "--input", "2x3", "3x2");

    ck_assert_msg(r.status == 0, "exit status %d: %s%s", r.status, r.out, r.err);
    ck_assert_ptr_nonnull(strstr(r.out, "record check: passed"));
    run_free(&r);
}
END_TEST

START_TEST(plugin_wrong_taylor_order_one)
{
    run_result r = RUN("check", "--format", "json", "--taylor", env("PLUGIN_WRONG"),
                       "wrong_function", "--input", "2x3", "2x3");
    ck_assert_int_eq(r.status, 1);
    json_value *doc = parse_output(&r);
    const json_value *taylor = json_get(doc, "taylor");

    ck_assert(!json_get(taylor, "passed")->boolean);
    ck_assert_msg(fabs(number_at(taylor, "order") - 1.0) < 0.1, "order %g",
                  number_at(taylor, "order"));
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(plugin_good_taylor_order_two)
{
    run_result r = RUN("check", "--format", "json", "--taylor", env("PLUGIN_GOOD"),
                       "good_function", "--input", "2x3", "3x2");
    ck_assert_msg(r.status == 0, "exit status %d: %s%s", r.status, r.out, r.err);
    json_value *doc = parse_output(&r);
    const json_value *taylor = json_get(doc, "taylor");

    ck_assert(json_get(taylor, "passed")->boolean);
    ck_assert_msg(fabs(number_at(taylor, "order") - 2.0) < 0.1, "order %g",
                  number_at(taylor, "order"));
    json_free(doc);
    run_free(&r);
}
END_TEST

START_TEST(plugin_missing_library)
{
    run_result r = RUN("check", "/nonexistent/libnothing.so", "f", "--input", "2");

    assert_usage_error(&r, "cannot load /nonexistent/libnothing.so");
    run_free(&r);
}
END_TEST

START_TEST(plugin_missing_symbol)
{
    run_result r = RUN("check", env("PLUGIN_GOOD"), "no_such_function", "--input", "2");

    assert_usage_error(&r, "has no function no_such_function");
    run_free(&r);
}
END_TEST

START_TEST(plugin_function_fails)
{
    /* good_function takes two inputs, so one input is an error (status 2),
     * not a failed check. */
    run_result r = RUN("check", env("PLUGIN_GOOD"), "good_function", "--input", "2x3");

    assert_usage_error(&r, "expected 2 inputs");
    run_free(&r);
}
END_TEST

START_TEST(plugin_missing_input)
{
    run_result r = RUN("check", env("PLUGIN_GOOD"), "good_function");

    assert_usage_error(&r, "missing --input");
    run_free(&r);
}
END_TEST

START_TEST(plugin_bad_shape)
{
    run_result r = RUN("check", env("PLUGIN_GOOD"), "good_function", "--input", "2x", "3x2");

    assert_usage_error(&r, "invalid shape '2x'");
    run_free(&r);
}
END_TEST

START_TEST(plugin_range_overflow)
{
    /* HIGH - LOW is inf, which would make the inputs inf and NaN. */
    run_result r = RUN("check", env("PLUGIN_GOOD"), "good_function", "--input", "3", "3",
                       "--range", "-1e308,1e308");

    assert_usage_error(&r, "invalid value '-1e308,1e308' for --range");
    assert_usage_error(&r, "finite HIGH - LOW");
    run_free(&r);
}
END_TEST

START_TEST(plugin_input_too_large)
{
    run_result r = RUN("check", env("PLUGIN_GOOD"), "good_function", "--input", "2147483648",
                       "3");

    assert_usage_error(&r, "input 0 of shape 2147483648 has more than 1000000 elements");
    run_free(&r);
}
END_TEST

START_TEST(plugin_input_at_limit_parses)
{
    /* 1000x1000 is at the limit, so only the function's own check stops it:
     * good_function needs two inputs of one shape. */
    run_result r = RUN("check", env("PLUGIN_GOOD"), "good_function", "--input", "1000x1000");

    assert_usage_error(&r, "expected 2 inputs");
    run_free(&r);
}
END_TEST

/* ================================================================================ */

static Suite *make_suite(const char *name, const TTest *const *tests, size_t n_tests)
{
    Suite *suite = suite_create(name);
    TCase *tc = tcase_create(name);

    tcase_set_timeout(tc, 60);
    for (size_t i = 0; i < n_tests; i++)
        tcase_add_test(tc, tests[i]);
    suite_add_tcase(suite, tc);
    return suite;
}

#define SUITE(name, ...)                                                              \
    make_suite(name, (const TTest *const[]){__VA_ARGS__},                            \
               sizeof((const TTest *const[]){__VA_ARGS__}) / sizeof(const TTest *))

int main(void)
{
    Suite *json = SUITE("json", json_scalar_closed_form, json_layer_closed_form,
                        json_broadcast_sums_back, json_numbers_round_trip, json_f32_values,
                        json_null_for_unused_and_labels, json_nonfinite_as_strings,
                        json_grad_null_for_vector_value);
    TCase *losses = tcase_create("losses");
    tcase_add_loop_test(losses, json_loss_closed_form, 0,
                        (int)(sizeof loss_cases / sizeof loss_cases[0]));
    suite_add_tcase(json, losses);

    SRunner *runner = srunner_create(SUITE("grad", grad_text_scalar, grad_text_matrix,
                                           grad_text_vector_value, grad_text_f32,
                                           grad_text_three_dims));
    srunner_add_suite(runner, json);
    srunner_add_suite(runner, SUITE("trace", trace_golden, trace_shared_input,
                                    trace_json_to_stderr, dot_golden, dot_unwritable_file));
    srunner_add_suite(runner, SUITE("check", check_text_golden, check_json_passes,
                                    check_kink_json, check_kink_text, check_no_kink_json,
                                    check_fails_text, check_holds_labels_constant,
                                    check_labels_also_used_elsewhere,
                                    check_labels_held_constant_json,
                                    check_nan_value_could_not_run,
                                    records_nan_value_could_not_run, check_eps_too_small,
                                    records_text_one_record,
                                    records_text_counts, records_pass_losses,
                                    records_json_kinks,
                                    records_text_kink, taylor_json_closed_form,
                                    taylor_text_table, taylor_linear_passes));
    srunner_add_suite(runner, SUITE("lecture", lecture_scalar_network,
                                    lecture_relu_trace_golden, lecture_vector_layer));
    srunner_add_suite(runner, SUITE("errors", error_syntax_caret, error_unknown_function,
                                    error_unknown_name, error_shape_mismatch,
                                    error_matmul_vector_hint,
                                    error_check_needs_one_element,
                                    error_taylor_needs_one_element, error_ragged_binding,
                                    error_binding_without_value, error_invalid_number,
                                    error_name_bound_twice, error_bad_label, error_bad_axis,
                                    error_wrong_argument_count, error_bad_option_value,
                                    error_unknown_option, error_missing_expression,
                                    error_unknown_command));
    srunner_add_suite(runner, SUITE("help", help_lists_every_option, help_grad_shows_grammar));
    srunner_add_suite(runner, SUITE("plugin", plugin_good_passes, plugin_wrong_fails,
                                    plugin_wrong_json, plugin_wrong_names_record,
                                    plugin_wrong_records_json, plugin_good_records_pass,
                                    plugin_wrong_taylor_order_one,
                                    plugin_good_taylor_order_two, plugin_missing_library,
                                    plugin_missing_symbol, plugin_function_fails,
                                    plugin_missing_input, plugin_bad_shape,
                                    plugin_range_overflow, plugin_input_too_large,
                                    plugin_input_at_limit_parses));

    /* CK_RUN_SUITE picks one suite; meson runs each as its own test. */
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
