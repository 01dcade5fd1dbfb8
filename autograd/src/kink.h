/*
 * Finding kinks from finite differences, shared by ag_gradcheck and
 * ag_check_records. At a kink f has two one-sided derivatives, and the
 * central difference is their mean, which matches no derivative convention.
 */
#ifndef TAPEGRAD_AUTOGRAD_KINK_H
#define TAPEGRAD_AUTOGRAD_KINK_H

#include <float.h>
#include <math.h>
#include <stdbool.h>

#include "tapegrad/autograd.h"

/* Difference quotients of one partial derivative. With plus = f(x + s),
 * center = f(x) and minus = f(x - s), left is (center - minus) / s and
 * right is (plus - center) / s. The *_half pair uses the step s / 2. */
typedef struct ag_quotients {
    double central;
    double left;
    double right;
    double left_half;
    double right_half;
    bool have_half; /* the step s / 2 was evaluated */
    double rounding; /* bound on the roundoff of a quotient's difference */
} ag_quotients;

/* The tolerance of a kink test: atol + rtol * max(|left|, |right|), plus
 * the quotients' roundoff, so that zero tolerances do not turn rounding
 * noise into kinks. */
static inline double ag_kink_tolerance(const ag_gradcheck_options *o, const ag_quotients *q)
{
    return o->atol + o->rtol * fmax(fabs(q->left), fabs(q->right)) + q->rounding;
}

/* The first test, from step s: the one-sided differences disagree and the
 * analytic value lies between them, both within tolerance. False for NaN. */
static inline bool ag_kink_candidate(const ag_gradcheck_options *o, double analytic,
                                     const ag_quotients *q)
{
    double tolerance = ag_kink_tolerance(o, q);
    double low = fmin(q->left, q->right) - tolerance;
    double high = fmax(q->left, q->right) + tolerance;

    return fabs(q->right - q->left) > tolerance && analytic >= low && analytic <= high;
}

/* The second test, from step s / 2. For a smooth f the gap right - left is
 * about s f''(x), so it halves with the step. At a kink it keeps its size,
 * so a gap that does not halve is a kink. */
static inline bool ag_kink_confirmed(const ag_gradcheck_options *o, const ag_quotients *q)
{
    double gap = q->right - q->left;
    double gap_half = q->right_half - q->left_half;

    return q->have_half && fabs(gap - 2.0 * gap_half) > ag_kink_tolerance(o, q);
}

/* Fills q from f(x + s), f(x), f(x - s) and, when have_half, f(x +- s / 2). */
static inline void ag_quotients_fill(ag_quotients *q, double plus, double center,
                                     double minus, double step)
{
    q->central = (plus - minus) / (2.0 * step);
    q->left = (center - minus) / step;
    q->right = (plus - center) / step;
    q->left_half = NAN;
    q->right_half = NAN;
    q->have_half = false;
    /* Each value carries a few ulps of roundoff, which a quotient divides by
     * the step; 64 ulps leaves room for f's own rounding. */
    q->rounding = 64.0 * DBL_EPSILON * (fabs(plus) + fabs(center) + fabs(minus)) / step;
}

static inline void ag_quotients_fill_half(ag_quotients *q, double plus_half,
                                          double center, double minus_half, double step)
{
    q->left_half = (center - minus_half) / (0.5 * step);
    q->right_half = (plus_half - center) / (0.5 * step);
    q->have_half = true;
    /* gap - 2 gap_half weighs the half-step quotients twice. */
    q->rounding += 4.0 * 64.0 * DBL_EPSILON *
                   (fabs(plus_half) + fabs(center) + fabs(minus_half)) / step;
}

#endif /* TAPEGRAD_AUTOGRAD_KINK_H */
