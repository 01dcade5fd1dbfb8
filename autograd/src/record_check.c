/*
 * Per-record gradient checking: each record's backward rule against central
 * differences of its own op, at the values its inputs hold.
 *
 * For a record y = op(x_1, ..., x_k) and a seed u of y's shape, the backward
 * rule run with adjoint u into zeroed scratch adjoints gives u^T dy/dx_i.
 * The same numbers come from the op's forward alone:
 *   d<u, y>/dx_ie ~ (<u, op(x + h e)> - <u, op(x - h e)>) / (2h),
 * with the op re-run through its definition on f64 copies on a private
 * tape. Small outputs take every one-hot u, which covers the whole local
 * Jacobian; larger ones take one random normal u.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "kink.h"

/* Seed of the random projections, fixed so that a check can be repeated. */
#define PROJECTION_SEED 0x7265636f7264ULL

/* State of one ag_check_records call. */
typedef struct records_run {
    ag_tape *tape;    /* the tape being checked */
    ag_tape *scratch; /* evaluates ops on the perturbed copies */
    ag_gradcheck_options options;
    ag_rng rng;
    ag_record_check_result *result;
} records_run;

/* The worst partial of one record. */
typedef struct record_worst {
    double ratio; /* error / tolerance; -1 before any comparison */
    int input;    /* input slot */
    size_t element;
    int seed;
    double analytic;
    double numeric;
    double abs_error;
} record_worst;

/* One record under check. An input used in several slots (x * x) is one
 * distinct tensor: its copy and its scratch adjoint are shared, as the
 * backward rule adds both slots' shares into one adjoint. */
typedef struct record_work {
    ag_record *rec;
    size_t n_out;
    int n_seeds;         /* n_out (one-hot seeds) or 1 (a projection) */
    bool projected;
    double *weights;     /* n_seeds x n_out seed values, rounded to y's dtype */

    int n_distinct;
    int distinct_of[AG_MAX_INPUTS]; /* slot -> distinct input */
    int first_slot[AG_MAX_INPUTS];  /* distinct input -> its first slot */
    bool checked[AG_MAX_INPUTS];    /* whether the distinct input takes a gradient */
    ag_tensor *copies[AG_MAX_INPUTS];   /* f64 heap copies, by distinct input */
    double *analytic[AG_MAX_INPUTS];    /* n_seeds x numel, by distinct input */

    double *center;      /* <u_s, op(x)> for each seed s */
    double *plus;        /* the same at x + h e */
    double *minus;
    double *plus_half;
    double *minus_half;

    record_worst worst;
} record_work;

/* ---- messages ------------------------------------------------------------- */

/* Copies text into result->message, cut to fit. */
static void set_message(ag_record_check_result *result, const char *text)
{
    size_t length = strlen(text);

    if (length >= sizeof result->message)
        length = sizeof result->message - 1;
    memcpy(result->message, text, length);
    result->message[length] = '\0';
}

/* Sets the error and the message to "ag_check_records: record N (op):
 * <context>: <cause>", the cause being the current error. */
static int fail_record(const record_work *work, ag_record_check_result *result,
                       const char *context)
{
    char cause[256];
    char full[512];

    /* Copy the cause first: ag_set_error overwrites the buffer it lives in. */
    snprintf(cause, sizeof cause, "%s", ag_error() != NULL ? ag_error() : "no message set");
    snprintf(full, sizeof full, "ag_check_records: record %zu (%s): %s: %s",
             work->rec->index, work->rec->op->name, context, cause);
    ag_set_error("%s", full);
    set_message(result, full);
    return -1;
}

/* ---- setting up one record ------------------------------------------------ */

/* Groups the slots by tensor and marks the inputs that take a gradient. */
static void find_distinct_inputs(record_work *work)
{
    const ag_record *rec = work->rec;

    work->n_distinct = 0;
    for (int k = 0; k < rec->n_inputs; k++) {
        int d = 0;

        while (d < work->n_distinct && rec->inputs[work->first_slot[d]] != rec->inputs[k])
            d++;
        if (d == work->n_distinct) {
            work->first_slot[d] = k;
            work->checked[d] = rec->inputs[k]->requires_grad;
            work->n_distinct++;
        }
        work->distinct_of[k] = d;
    }
}

/* Fills the seed weights: one-hot rows for a small output, otherwise one
 * normal row. Values are rounded to y's dtype, so the backward rule and the
 * numeric projection see the same seed. */
static void fill_seeds(records_run *run, record_work *work)
{
    ag_dtype dtype = work->rec->output->dtype;

    for (int s = 0; s < work->n_seeds; s++) {
        double *row = work->weights + (size_t)s * work->n_out;

        for (size_t j = 0; j < work->n_out; j++) {
            double w = work->projected ? ag_rng_normal(&run->rng) : (double)((size_t)s == j);

            row[j] = dtype == AG_F32 ? (double)(float)w : w;
        }
    }
}

static int allocate_work(records_run *run, record_work *work)
{
    work->n_out = work->rec->output->numel;
    work->projected = work->n_out > AG_RECORD_CHECK_FULL;
    work->n_seeds = work->projected ? 1 : (int)work->n_out;
    find_distinct_inputs(work);

    size_t n_seeds = (size_t)work->n_seeds;
    work->weights = ag_calloc(n_seeds * work->n_out, sizeof(double));
    work->center = ag_calloc(5 * n_seeds, sizeof(double));
    if (work->weights == NULL || work->center == NULL)
        return -1;
    work->plus = work->center + n_seeds;
    work->minus = work->plus + n_seeds;
    work->plus_half = work->minus + n_seeds;
    work->minus_half = work->plus_half + n_seeds;

    for (int d = 0; d < work->n_distinct; d++) {
        const ag_tensor *x = work->rec->inputs[work->first_slot[d]];

        work->copies[d] = ag_tensor_copy(NULL, x, AG_F64);
        if (work->copies[d] == NULL)
            return -1;
        if (!work->checked[d])
            continue;
        /* An empty input still gets a buffer, as ag_calloc(0) may be NULL. */
        size_t numel = x->numel > 0 ? x->numel : 1;
        if (numel > SIZE_MAX / sizeof(double) / n_seeds)
            return -1;
        work->analytic[d] = ag_calloc(n_seeds * numel, sizeof(double));
        if (work->analytic[d] == NULL)
            return -1;
    }
    fill_seeds(run, work);
    return 0;
}

static void free_work(record_work *work)
{
    ag_heap_free(work->weights);
    ag_heap_free(work->center);
    for (int d = 0; d < work->n_distinct; d++) {
        ag_tensor_free(work->copies[d]);
        ag_heap_free(work->analytic[d]);
    }
}

/* ---- the backward rule ---------------------------------------------------- */

/* Runs the record's backward rule once per seed, with the seed as the
 * output's adjoint and zeroed scratch adjoints for the inputs, and stores
 * what the rule added. The tensors' own adjoints are put back afterwards. */
static int run_backward(records_run *run, record_work *work)
{
    ag_record *rec = work->rec;
    ag_tensor *kept_output = rec->output->grad;
    ag_tensor *kept[AG_MAX_INPUTS];
    ag_tensor *scratch[AG_MAX_INPUTS] = {NULL};
    ag_tensor *seed = ag_zeros(NULL, rec->output->dtype, rec->output->ndim,
                               rec->output->shape);
    int status = seed == NULL ? -1 : 0;

    for (int k = 0; k < rec->n_inputs; k++)
        kept[k] = rec->inputs[k]->grad;
    for (int d = 0; d < work->n_distinct && status == 0; d++) {
        const ag_tensor *x = rec->inputs[work->first_slot[d]];

        if (work->checked[d]) {
            scratch[d] = ag_zeros(NULL, x->dtype, x->ndim, x->shape);
            status = scratch[d] == NULL ? -1 : 0;
        }
    }
    if (status != 0) {
        ag_set_error("out of memory");
        fail_record(work, run->result, "cannot allocate the scratch adjoints");
    }

    bool recording = run->tape->recording;
    run->tape->recording = false;
    for (int s = 0; s < work->n_seeds && status == 0; s++) {
        const double *row = work->weights + (size_t)s * work->n_out;

        for (size_t j = 0; j < work->n_out; j++)
            ag_tensor_set(seed, j, row[j]);
        for (int d = 0; d < work->n_distinct; d++) {
            if (scratch[d] != NULL && scratch[d]->numel > 0)
                memset(scratch[d]->data, 0,
                       scratch[d]->numel * ag_dtype_size(scratch[d]->dtype));
        }

        /* Only the slots whose tensor takes a gradient get an adjoint. */
        rec->output->grad = seed;
        for (int k = 0; k < rec->n_inputs; k++) {
            int d = work->distinct_of[k];

            if (work->checked[d])
                rec->inputs[k]->grad = scratch[d];
        }
        ag_error_clear();
        status = rec->op->backward(run->tape, rec);
        rec->output->grad = kept_output;
        for (int k = 0; k < rec->n_inputs; k++)
            rec->inputs[k]->grad = kept[k];

        if (status != 0) {
            fail_record(work, run->result, "the backward rule failed");
            break;
        }
        for (int d = 0; d < work->n_distinct; d++) {
            if (!work->checked[d])
                continue;
            double *out = work->analytic[d] + (size_t)s * scratch[d]->numel;
            for (size_t e = 0; e < scratch[d]->numel; e++)
                out[e] = ag_tensor_get(scratch[d], e);
        }
    }
    run->tape->recording = recording;

    ag_tensor_free(seed);
    for (int d = 0; d < work->n_distinct; d++)
        ag_tensor_free(scratch[d]);
    return status;
}

/* ---- the forward on copies ------------------------------------------------ */

/* Runs the op on the f64 copies and stores <u_s, y> for every seed. `point`
 * names the evaluation point for an error message. */
static int evaluate(records_run *run, record_work *work, const char *point, double *values)
{
    ag_record *rec = work->rec;
    ag_tensor *slots[AG_MAX_INPUTS];

    for (int k = 0; k < rec->n_inputs; k++)
        slots[k] = work->copies[work->distinct_of[k]];

    ag_tape_reset(run->scratch);
    ag_error_clear();
    ag_tensor *y = ag_apply(run->scratch, rec->op, rec->n_inputs, slots, AG_MAX_PARAMS,
                            rec->params);
    if (y == NULL) {
        char context[160];

        snprintf(context, sizeof context, "the forward failed in f64 %s", point);
        return fail_record(work, run->result, context);
    }
    if (y->numel != work->n_out) {
        ag_set_error("the output has %zu elements in f64 but %zu on the tape", y->numel,
                     work->n_out);
        return fail_record(work, run->result, "the op's shape depends on its dtype");
    }

    /* A NaN or an infinity in y makes every difference quotient NaN, which
     * would blame a correct backward rule. */
    for (size_t j = 0; j < work->n_out; j++) {
        double value = ag_tensor_get(y, j);

        if (!isfinite(value)) {
            ag_set_error("the forward in f64 gives %g at output element %zu %s, so "
                         "central differences cannot check the record; check the tape at a point "
                         "where every op's output is finite",
                         isnan(value) ? NAN : value, j, point);
            return fail_record(work, run->result, "non-finite output");
        }
    }

    /* Read y before the copies change: an op may share its input's data. */
    for (int s = 0; s < work->n_seeds; s++) {
        const double *row = work->weights + (size_t)s * work->n_out;
        double sum = 0.0;

        for (size_t j = 0; j < work->n_out; j++) {
            if (row[j] != 0.0)
                sum += row[j] * ag_tensor_get(y, j);
        }
        values[s] = sum;
    }
    return 0;
}

/* Evaluates with element e of distinct input d moved by `step`, then puts
 * it back. */
static int evaluate_moved(records_run *run, record_work *work, int d, size_t e,
                          double step, double *values)
{
    double *x = work->copies[d]->data;
    const double center = x[e];
    char point[96];

    /* A step below the spacing of doubles at x would give a numeric
     * derivative of 0. */
    if (center + step == center) {
        ag_set_error("the step %g does not move input %d element %zu (value %.17g) in "
                     "f64; use an eps well above |x| * 2.2e-16, such as "
                     "1e-6 * max(1, |x|)",
                     step, work->first_slot[d], e, center);
        return fail_record(work, run->result, "eps is too small");
    }

    snprintf(point, sizeof point, "with input %d element %zu moved by %g",
             work->first_slot[d], e, step);
    x[e] = center + step;
    int status = evaluate(run, work, point, values);
    x[e] = center;
    return status;
}

/* ---- comparing ------------------------------------------------------------ */

static void note_kink(records_run *run, const record_work *work, int d, size_t e)
{
    ag_record_check_result *result = run->result;

    if (result->n_kinks++ > 0)
        return;
    result->kink_record = work->rec->index;
    result->kink_input = work->first_slot[d];
    result->kink_element = e;
}

/* Compares one partial and keeps the record's worst. Returns whether it
 * passed. */
static bool compare(records_run *run, record_work *work, int d, size_t e, int s,
                    const ag_quotients *q)
{
    const ag_tensor *x = work->copies[d];
    double analytic = work->analytic[d][(size_t)s * x->numel + e];
    double numeric = q->central;

    run->result->n_checked++;
    if (ag_kink_candidate(&run->options, analytic, q) && ag_kink_confirmed(&run->options, q)) {
        note_kink(run, work, d, e);
        return true;
    }

    double abs_error = fabs(analytic - numeric);
    double tolerance = run->options.atol + run->options.rtol * fabs(numeric);
    bool ok = abs_error <= tolerance; /* false when either value is NaN */
    double ratio = ok ? 0.0 : INFINITY;

    if (tolerance > 0 && isfinite(abs_error))
        ratio = abs_error / tolerance;
    if (ratio > work->worst.ratio) {
        work->worst = (record_worst){
            .ratio = ratio,
            .input = work->first_slot[d],
            .element = e,
            .seed = s,
            .analytic = analytic,
            .numeric = numeric,
            .abs_error = abs_error,
        };
    }
    return ok;
}

/* Checks every element of distinct input d. Returns the number of failed
 * partials, or -1 when an evaluation failed. */
static long check_input(records_run *run, record_work *work, int d)
{
    const double eps = run->options.eps;
    long failed = 0;

    for (size_t e = 0; e < work->copies[d]->numel; e++) {
        if (evaluate_moved(run, work, d, e, eps, work->plus) != 0 ||
            evaluate_moved(run, work, d, e, -eps, work->minus) != 0)
            return -1;

        /* Only a partial that looks like a kink needs the half step. */
        bool any_candidate = false;
        for (int s = 0; s < work->n_seeds && !any_candidate; s++) {
            ag_quotients q;
            double analytic = work->analytic[d][(size_t)s * work->copies[d]->numel + e];

            ag_quotients_fill(&q, work->plus[s], work->center[s], work->minus[s], eps);
            any_candidate = ag_kink_candidate(&run->options, analytic, &q);
        }
        if (any_candidate &&
            (evaluate_moved(run, work, d, e, eps / 2, work->plus_half) != 0 ||
             evaluate_moved(run, work, d, e, -eps / 2, work->minus_half) != 0))
            return -1;

        for (int s = 0; s < work->n_seeds; s++) {
            ag_quotients q;

            ag_quotients_fill(&q, work->plus[s], work->center[s], work->minus[s], eps);
            if (any_candidate)
                ag_quotients_fill_half(&q, work->plus_half[s], work->center[s],
                                       work->minus_half[s], eps);
            if (!compare(run, work, d, e, s, &q))
                failed++;
        }
    }
    return failed;
}

/* Keeps the first failing record's worst partial in the result. */
static void note_failure(records_run *run, const record_work *work)
{
    ag_record_check_result *result = run->result;

    if (result->n_failed++ > 0)
        return;
    result->record = work->rec->index;
    snprintf(result->op, sizeof result->op, "%s", work->rec->op->name);
    result->input = work->worst.input;
    result->element = work->worst.element;
    result->projected = work->projected;
    result->output_element = work->projected ? 0 : (size_t)work->worst.seed;
    result->analytic = work->worst.analytic;
    result->numeric = work->worst.numeric;
    result->abs_error = work->worst.abs_error;
}

/* Checks one record. Returns 0, or -1 with an error. */
static int check_record(records_run *run, ag_record *rec)
{
    record_work work = {.rec = rec, .worst = {.ratio = -1.0, .input = -1}};
    int status = -1;

    if (rec->output->numel == 0)
        return 0; /* nothing flows back from an empty output */
    if (allocate_work(run, &work) != 0) {
        ag_set_error("out of memory");
        fail_record(&work, run->result, "cannot allocate the check");
        goto done;
    }
    if (run_backward(run, &work) != 0 ||
        evaluate(run, &work, "at the recorded inputs", work.center) != 0)
        goto done;

    long failed = 0;
    for (int d = 0; d < work.n_distinct; d++) {
        if (!work.checked[d])
            continue;
        long n = check_input(run, &work, d);
        if (n < 0)
            goto done;
        failed += n;
    }
    run->result->n_records++;
    if (failed > 0)
        note_failure(run, &work);
    status = 0;

done:
    free_work(&work);
    return status;
}

/* ---- entry point ---------------------------------------------------------- */

static int check_arguments(const ag_tape *tape, const ag_gradcheck_options *options,
                           const ag_record_check_result *result)
{
    if (result == NULL) {
        ag_set_error("ag_check_records: result is NULL; pass a result to fill");
        return -1;
    }
    if (tape == NULL) {
        ag_set_error("ag_check_records: tape is NULL");
        return -1;
    }
    if (options != NULL &&
        !(options->eps > 0 && isfinite(options->eps) && options->atol >= 0 &&
          options->rtol >= 0)) {
        ag_set_error("ag_check_records: invalid options eps %g, atol %g, rtol %g; eps "
                     "must be positive and finite, atol and rtol nonnegative",
                     options->eps, options->atol, options->rtol);
        return -1;
    }
    return 0;
}

static void write_verdict(const records_run *run, ag_record_check_result *result)
{
    const ag_gradcheck_options *o = &run->options;
    char kinks[128] = "";
    char output[48];

    if (result->n_kinks > 0)
        snprintf(kinks, sizeof kinks,
                 " %zu at a kink left out, the first at record %zu input %d element %zu.",
                 result->n_kinks, result->kink_record, result->kink_input,
                 result->kink_element);

    size_t n_compared = result->n_checked - result->n_kinks;

    result->passed = result->n_failed == 0;
    if (result->passed) {
        snprintf(result->message, sizeof result->message,
                 "ag_check_records: passed: %zu record%s, %zu partial%s within atol %g + "
                 "rtol %g * |numeric|.%s",
                 result->n_records, result->n_records == 1 ? "" : "s", n_compared,
                 n_compared == 1 ? "" : "s", o->atol, o->rtol, kinks);
        return;
    }

    if (result->projected)
        snprintf(output, sizeof output, "a random projection of the output");
    else
        snprintf(output, sizeof output, "output element %zu", result->output_element);
    char text[512];
    snprintf(text, sizeof text,
             "ag_check_records: record %zu (%s) is the first wrong one: input %d "
             "element %zu, %s: analytic %.9g, numeric %.9g, abs error %.3g; %zu of %zu "
             "record%s failed",
             result->record, result->op, result->input, result->element, output,
             result->analytic, result->numeric, result->abs_error, result->n_failed,
             result->n_records, result->n_records == 1 ? "" : "s");
    set_message(result, text);
}

int ag_check_records(ag_tape *tape, const ag_gradcheck_options *options,
                     ag_record_check_result *result)
{
    if (result != NULL) {
        memset(result, 0, sizeof *result);
        result->input = -1;
        result->kink_input = -1;
    }
    if (check_arguments(tape, options, result) != 0) {
        if (result != NULL)
            set_message(result, ag_error());
        return -1;
    }

    records_run run = {
        .tape = tape,
        .scratch = ag_tape_new(),
        .options = options != NULL ? *options : ag_gradcheck_defaults(),
        .rng = ag_rng_new(PROJECTION_SEED),
        .result = result,
    };
    if (run.scratch == NULL) {
        set_message(result, "ag_check_records: out of memory for a scratch tape");
        ag_set_error("%s", result->message);
        return -1;
    }
    /* The copies do not require a gradient, so nothing is recorded on it. */
    ag_tape_set_recording(run.scratch, false);

    int status = 0;
    for (size_t i = 0; i < tape->n_records && status == 0; i++)
        status = check_record(&run, tape->records[i]);

    if (status == 0)
        write_verdict(&run, result);
    ag_tape_free(run.scratch);
    return status;
}
