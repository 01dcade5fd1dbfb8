/* ag_tape_print and ag_tape_write_dot through the public API: what each
 * record sent back, tapes before backward, summaries of large tensors, and
 * the promise that printing changes no gradient, record or error message. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad/autograd.h"

/* Output of one print, captured in memory. */
typedef struct captured {
    char *text;
    size_t size;
    int status;
} captured;

static captured print_tape(const ag_tape *tape, bool dot)
{
    captured c = {0};
    FILE *out = open_memstream(&c.text, &c.size);

    ck_assert_ptr_nonnull(out);
    c.status = dot ? ag_tape_write_dot(tape, out) : ag_tape_print(tape, out);
    fclose(out);
    return c;
}

static ag_tensor *leaf(ag_tape *tape, const char *name, int ndim, const size_t *shape,
                       const double *data)
{
    ag_tensor *t = ag_tensor_from_doubles(tape, AG_F64, ndim, shape, data);

    ck_assert_ptr_nonnull(t);
    ag_tensor_set_name(t, name);
    ck_assert_int_eq(ag_tensor_set_requires_grad(t, true), 0);
    return t;
}

START_TEST(print_broadcast_share)
{
    /* sum(x + b) with x (2x3) and b (3): b is stretched over 2 rows, so the
     * add record sends b the column sums of its adjoint, 2 per element. */
    ag_tape *tape = ag_tape_new();
    const double xs[6] = {1, 2, 3, 4, 5, 6};
    const double bs[3] = {10, 20, 30};
    ag_tensor *x = leaf(tape, "x", AG_SHAPE(2, 3), xs);
    ag_tensor *b = leaf(tape, "b", AG_SHAPE(3), bs);
    ag_tensor *loss = ag_sum(tape, ag_add(tape, x, b));

    ck_assert_int_eq(ag_backward(tape, loss, NULL), 0);
    captured c = print_tape(tape, false);

    ck_assert_int_eq(c.status, 0);
    ck_assert_ptr_nonnull(strstr(c.text, "#0    add(x, b) -> (2x3)\n"));
    ck_assert_ptr_nonnull(strstr(c.text, "      to b     [2, 2, 2]\n"));
    ck_assert_ptr_nonnull(strstr(c.text, "      to x     [[1, 1, 1], [1, 1, 1]]\n"));
    free(c.text);
    ag_tape_free(tape);
}
END_TEST

START_TEST(print_before_backward)
{
    ag_tape *tape = ag_tape_new();
    const double xs[1] = {3};
    ag_tensor *x = leaf(tape, "x", AG_SHAPE(1), xs);

    ck_assert_ptr_nonnull(ag_mul(tape, x, x));
    captured c = print_tape(tape, false);

    ck_assert_int_eq(c.status, 0);
    ck_assert_ptr_nonnull(strstr(c.text, "tape: 1 record, in the order"));
    ck_assert_ptr_nonnull(strstr(c.text, "#0    mul(x, x) -> (1)\n      value    [9]\n"));
    ck_assert_ptr_null(strstr(c.text, "      adjoint"));
    ck_assert_ptr_nonnull(strstr(c.text, "      grad   [0]\n"));
    free(c.text);
    ag_tape_free(tape);
}
END_TEST

START_TEST(print_empty_tape)
{
    ag_tape *tape = ag_tape_new();
    captured c = print_tape(tape, false);

    ck_assert_int_eq(c.status, 0);
    ck_assert_ptr_nonnull(strstr(c.text, "tape: 0 records"));
    ck_assert_ptr_null(strstr(c.text, "leaves"));
    free(c.text);
    ag_tape_free(tape);
}
END_TEST

START_TEST(print_summarises_large)
{
    /* 12 elements 0..11: min 0, max 11, mean 5.5. */
    ag_tape *tape = ag_tape_new();
    double xs[12];
    for (int i = 0; i < 12; i++)
        xs[i] = i;
    ag_tensor *x = leaf(tape, "x", AG_SHAPE(3, 4), xs);

    ck_assert_ptr_nonnull(ag_mul_scalar(tape, x, 1.0));
    captured c = print_tape(tape, false);

    ck_assert_int_eq(c.status, 0);
    ck_assert_ptr_nonnull(strstr(c.text, "mul_scalar(x, c=1) -> (3x4)\n"));
    ck_assert_ptr_nonnull(strstr(c.text, "value    min 0, max 11, mean 5.5\n"));
    free(c.text);
    ag_tape_free(tape);
}
END_TEST

START_TEST(print_changes_nothing)
{
    /* Replaying backward rules must leave gradients, records and the last
     * error message as they were. */
    ag_tape *tape = ag_tape_new();
    const double xs[2] = {0.5, -2};
    ag_tensor *x = leaf(tape, "x", AG_SHAPE(2), xs);
    ag_tensor *y = ag_tanh(tape, ag_mul(tape, x, x));
    ag_tensor *loss = ag_sum(tape, ag_mul(tape, y, x));

    ck_assert_int_eq(ag_backward(tape, loss, NULL), 0);
    double before[2] = {ag_tensor_get(ag_tensor_grad(x), 0), ag_tensor_get(ag_tensor_grad(x), 1)};
    double y_adjoint = ag_tensor_get(ag_tensor_grad(y), 0);
    size_t records = ag_tape_size(tape);
    ag_set_error("earlier message");

    captured c = print_tape(tape, false);
    ck_assert_int_eq(c.status, 0);
    ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(x), 0), before[0]);
    ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(x), 1), before[1]);
    ck_assert_double_eq(ag_tensor_get(ag_tensor_grad(y), 0), y_adjoint);
    ck_assert_uint_eq(ag_tape_size(tape), records);
    ck_assert_str_eq(ag_error(), "earlier message");
    free(c.text);
    ag_tape_free(tape);
}
END_TEST

START_TEST(print_null_arguments)
{
    ag_tape *tape = ag_tape_new();

    ck_assert_int_eq(ag_tape_print(NULL, stdout), -1);
    ck_assert_str_eq(ag_error(), "ag_tape_print: tape is NULL");
    ck_assert_int_eq(ag_tape_write_dot(tape, NULL), -1);
    ck_assert_str_eq(ag_error(), "ag_tape_write_dot: out is NULL");
    ag_tape_free(tape);
}
END_TEST

START_TEST(print_write_failure)
{
    /* Writing to /dev/full fails with ENOSPC when the buffer is flushed. */
    FILE *full = fopen("/dev/full", "w");
    if (full == NULL)
        return; /* not a Linux system; nothing to test */

    ag_tape *tape = ag_tape_new();
    const double xs[1] = {3};
    ag_tensor *x = leaf(tape, "x", AG_SHAPE(1), xs);
    ck_assert_ptr_nonnull(ag_exp(tape, x));

    ck_assert_int_eq(ag_tape_print(tape, full), -1);
    ck_assert_ptr_nonnull(strstr(ag_error(), "ag_tape_print: writing failed"));
    fclose(full);
    ag_tape_free(tape);
}
END_TEST

START_TEST(dot_nodes_and_edges)
{
    /* y = 2 * x: the constant is a leaf shown by its value. */
    ag_tape *tape = ag_tape_new();
    const double xs[1] = {3};
    ag_tensor *x = leaf(tape, "x", AG_SHAPE(1), xs);
    ag_tensor *two = ag_scalar(tape, AG_F64, 2.0);
    ag_tensor *y = ag_mul(tape, two, x);

    ck_assert_int_eq(ag_backward(tape, y, NULL), 0);
    captured c = print_tape(tape, true);

    ck_assert_int_eq(c.status, 0);
    ck_assert_ptr_nonnull(strstr(c.text, "digraph tape {\n"));
    ck_assert_ptr_nonnull(strstr(c.text, "leaf0 [shape=box, label=\"2 (1)\\nvalue [2]\"];\n"));
    ck_assert_ptr_nonnull(
        strstr(c.text, "leaf1 [shape=box, label=\"x (1)\\nvalue [3]\\ngrad [2]\"];\n"));
    ck_assert_ptr_nonnull(strstr(c.text, "leaf0 -> op0 [label=\"0\"];\n"));
    ck_assert_ptr_nonnull(strstr(c.text, "leaf1 -> op0 [label=\"1\"];\n"));
    ck_assert_ptr_nonnull(strstr(c.text, "op0 -> t0;\n"));
    ck_assert_ptr_nonnull(strstr(c.text, "}\n"));
    free(c.text);
    ag_tape_free(tape);
}
END_TEST

START_TEST(dot_escapes_names)
{
    ag_tape *tape = ag_tape_new();
    const double xs[1] = {1};
    ag_tensor *x = leaf(tape, "say \"hi\"\\", AG_SHAPE(1), xs);

    ck_assert_ptr_nonnull(ag_neg(tape, x));
    captured c = print_tape(tape, true);

    ck_assert_int_eq(c.status, 0);
    ck_assert_ptr_nonnull(strstr(c.text, "label=\"say \\\"hi\\\"\\\\ (1)"));
    free(c.text);
    ag_tape_free(tape);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("trace_api");
    TCase *tc = tcase_create("trace_api");

    tcase_add_test(tc, print_broadcast_share);
    tcase_add_test(tc, print_before_backward);
    tcase_add_test(tc, print_empty_tape);
    tcase_add_test(tc, print_summarises_large);
    tcase_add_test(tc, print_changes_nothing);
    tcase_add_test(tc, print_null_arguments);
    tcase_add_test(tc, print_write_failure);
    tcase_add_test(tc, dot_nodes_and_edges);
    tcase_add_test(tc, dot_escapes_names);
    suite_add_tcase(suite, tc);

    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
