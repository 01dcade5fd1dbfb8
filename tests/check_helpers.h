/* Helpers shared by the Check suites. */
#ifndef TAPEGRAD_CHECK_HELPERS_H
#define TAPEGRAD_CHECK_HELPERS_H

#include <check.h>
#include <stddef.h>

#include "tapegrad/autograd.h"

/* Installs an allocator that counts calls to alloc and realloc. */
void counting_allocator_install(void);
void counting_allocator_remove(void);
size_t counting_allocator_calls(void);

/* Asserts |actual - expected| <= tol * max(1, |expected|), naming `what`. */
#define ck_assert_close(actual, expected, tol, what)                          \
    do {                                                                      \
        double ck_a_ = (actual);                                              \
        double ck_e_ = (expected);                                            \
        double ck_s_ = fabs(ck_e_) > 1.0 ? fabs(ck_e_) : 1.0;                 \
        ck_assert_msg(fabs(ck_a_ - ck_e_) <= (tol) * ck_s_,                   \
                      "%s: got %.17g, expected %.17g (tolerance %g)", (what), \
                      ck_a_, ck_e_, (double)(tol));                           \
    } while (0)

/* Asserts that `t` is NULL and the error message contains `fragment`. */
#define ck_assert_error_contains(t, fragment)                                 \
    do {                                                                      \
        ck_assert_ptr_null(t);                                                \
        ck_assert_ptr_nonnull(ag_error());                                    \
        ck_assert_msg(strstr(ag_error(), (fragment)) != NULL,                 \
                      "error \"%s\" does not mention \"%s\"", ag_error(),     \
                      (fragment));                                            \
    } while (0)

/* Runs one suite and returns the process exit status. */
int run_suite(Suite *suite);

#endif
