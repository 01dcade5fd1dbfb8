/* `tapegrad check`: gradient-check a C function loaded from a shared library. */
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bindings.h"
#include "cli.h"
#include "print.h"

void print_check_help(FILE *out)
{
    fputs(
        "Usage: tapegrad check [OPTIONS] LIB.so SYMBOL --input SHAPE...\n"
        "\n"
        "Loads SYMBOL from the shared library LIB.so, calls it on seeded random f64\n"
        "inputs of the given shapes, and compares its tape gradients with central\n"
        "finite differences over the full Jacobian (ag_gradcheck). That costs one\n"
        "backward pass per output element and two evaluations of the function per\n"
        "input element (four at a kink), so each input may have at most 1000000\n"
        "elements.\n"
        "\n"
        "SYMBOL must be an ag_function, declared in <tapegrad/autograd.h> as\n"
        "  ag_tensor *SYMBOL(ag_tape *tape, ag_tensor *const *inputs, int n_inputs,\n"
        "                    void *user);\n"
        "It builds its output on `tape` from `inputs` with the library's ops (or ops it\n"
        "registers with ag_op_register) and returns it, or NULL with ag_set_error.\n"
        "`user` is NULL. Link LIB.so against the shared libtapegrad (-ltapegrad), not\n"
        "a static copy, so that it uses the program's op registry. A LIB without '/'\n"
        "is looked up in the current directory first, then where dlopen looks.\n"
        "\n"
        "Options:\n"
        "  --input SHAPE...    one shape per input, such as 3x4 or 5; repeat the\n"
        "                      option or list several shapes after it (at most 16\n"
        "                      inputs of at most 1000000 elements each)\n"
        "  --seed N            seed of the random inputs (default 1)\n"
        "  --range LOW,HIGH    the inputs are uniform in [LOW, HIGH) (default -1,1);\n"
        "                      LOW, HIGH and HIGH - LOW must be finite\n"
        "  --eps H             finite-difference step (default 1e-6)\n"
        "  --atol A            absolute tolerance (default 1e-5)\n"
        "  --rtol R            relative tolerance (default 1e-3); an element passes\n"
        "                      when |analytic - numeric| <= A + R * |numeric|\n"
        "  --check-records     also check each record's backward rule on its own\n"
        "                      (ag_check_records) and name the first wrong record by\n"
        "                      index and op; a failed check does this by itself\n"
        "  --taylor            Taylor-remainder test (ag_taylor_test) along a random\n"
        "                      direction from --seed: order 2 for a right gradient, 1\n"
        "                      for a wrong one; fails outside [1.8, 2.2]\n"
        "  --format text|json  output format (default text)\n"
        "  -h, --help          show this help\n"
        "\n"
        "Example:\n"
        "  cc -shared -fPIC -o libmyloss.so myloss.c -ltapegrad\n"
        "  tapegrad check ./libmyloss.so my_loss --input 4x3 4x3\n"
        "\n"
        "Exit status: 0 when the checks pass, 1 when one fails, 2 on invalid options,\n"
        "a library or symbol that cannot be loaded, or a function that fails.\n",
        out);
}

/* Maximum number of inputs of a checked function. */
#define MAX_CHECK_INPUTS 16

/* Maximum number of elements of one input. The full-Jacobian check costs a
 * backward pass per output element and two evaluations per input element,
 * so a larger input would run for hours, or fail to allocate, unannounced. */
#define MAX_CHECK_ELEMENTS 1000000

typedef struct check_request {
    const char *library;
    const char *symbol;
    int n_inputs;
    int ndims[MAX_CHECK_INPUTS];
    size_t shapes[MAX_CHECK_INPUTS][AG_MAX_DIMS];
    unsigned long long seed;
    double low;
    double high;
    bool json;
    bool check_records;
    bool taylor;
    ag_gradcheck_options tolerances;
} check_request;

/* The results of the checks that ran. */
typedef struct check_report {
    ag_gradcheck_result check;
    ag_tape *tape; /* the function's tape, for the record check */
    bool records_checked;
    ag_record_check_result records;
    bool taylor_done;
    ag_taylor_result taylor;
} check_report;

/* ---- arguments ---------------------------------------------------------------- */

static int add_shape(check_request *request, const char *text)
{
    char message[160];
    int k = request->n_inputs;

    if (k == MAX_CHECK_INPUTS) {
        cli_error("too many inputs: at most %d", MAX_CHECK_INPUTS);
        return -1;
    }
    if (shape_parse(text, &request->ndims[k], request->shapes[k], message,
                    sizeof message) != 0) {
        cli_error("%s", message);
        return -1;
    }

    /* Stop multiplying once past the limit, so the product cannot overflow. */
    unsigned long long numel = 1;
    for (int d = 0; d < request->ndims[k] && numel <= MAX_CHECK_ELEMENTS; d++)
        numel *= request->shapes[k][d];
    if (numel > MAX_CHECK_ELEMENTS) {
        cli_error("input %d of shape %s has more than %d elements, the limit per input: "
                  "the check costs two evaluations of the function per input element "
                  "and one backward pass per output element; check a smaller shape",
                  k, text, MAX_CHECK_ELEMENTS);
        return -1;
    }
    request->n_inputs++;
    return 0;
}

static int parse_range(const char *text, double *low, double *high)
{
    char *end;
    double first = strtod(text, &end);

    if (end != text && *end == ',') {
        const char *second_text = end + 1;
        double second = strtod(second_text, &end);

        /* HIGH - LOW must be finite too: the uniform draw scales by it, so
         * -1e308,1e308 would make infinities and NaNs. */
        if (end != second_text && *end == '\0' && first < second &&
            isfinite(second - first)) {
            *low = first;
            *high = second;
            return 0;
        }
    }
    cli_error("invalid value '%s' for --range: expected LOW,HIGH with LOW < HIGH and "
              "finite HIGH - LOW, such as -1,1", text);
    return -1;
}

static int parse_seed(const char *text, unsigned long long *seed)
{
    char *end;

    errno = 0;
    *seed = strtoull(text, &end, 10);
    if (end == text || *end != '\0' || errno != 0 || text[0] == '-') {
        cli_error("invalid value '%s' for --seed: expected a non-negative integer", text);
        return -1;
    }
    return 0;
}

/* Handles one option at argv[*i]. Returns 1 when handled, 0 when argv[*i] is
 * not an option, -1 on error. */
static int parse_option(int argc, char **argv, int *i, check_request *request)
{
    const char *value;
    int found;

    if ((found = cli_option_value(argc, argv, i, "--input", &value)) != 0) {
        if (found < 0 || add_shape(request, value) != 0)
            return -1;
        /* More shapes may follow until the next option. */
        while (*i + 1 < argc && strncmp(argv[*i + 1], "--", 2) != 0) {
            *i += 1;
            if (add_shape(request, argv[*i]) != 0)
                return -1;
        }
        return 1;
    }
    if ((found = cli_option_value(argc, argv, i, "--seed", &value)) != 0) {
        if (found < 0 || parse_seed(value, &request->seed) != 0)
            return -1;
        return 1;
    }
    if ((found = cli_option_value(argc, argv, i, "--range", &value)) != 0) {
        if (found < 0 || parse_range(value, &request->low, &request->high) != 0)
            return -1;
        return 1;
    }
    if (strcmp(argv[*i], "--check-records") == 0) {
        request->check_records = true;
        return 1;
    }
    if (strcmp(argv[*i], "--taylor") == 0) {
        request->taylor = true;
        return 1;
    }
    if ((found = cli_option_value(argc, argv, i, "--format", &value)) != 0) {
        if (found < 0)
            return -1;
        if (strcmp(value, "text") != 0 && strcmp(value, "json") != 0) {
            cli_error("invalid value '%s' for --format: expected text or json", value);
            return -1;
        }
        request->json = strcmp(value, "json") == 0;
        return 1;
    }
    return cli_tolerance_option(argc, argv, i, &request->tolerances);
}

/* Returns 0, -1 after an error, or 1 after printing the help. */
static int parse_arguments(int argc, char **argv, check_request *request)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];

        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_check_help(stdout);
            return 1;
        }
        if (strncmp(arg, "--", 2) == 0) {
            int handled = parse_option(argc, argv, &i, request);

            if (handled < 0)
                return -1;
            if (handled == 0) {
                cli_error("unknown option '%s'; see tapegrad check --help", arg);
                return -1;
            }
        } else if (request->library == NULL) {
            request->library = arg;
        } else if (request->symbol == NULL) {
            request->symbol = arg;
        } else {
            cli_error("unexpected argument '%s'; shapes follow --input", arg);
            return -1;
        }
    }

    if (request->library == NULL || request->symbol == NULL) {
        cli_error("missing %s; usage: tapegrad check LIB.so SYMBOL --input SHAPE...",
                  request->library == NULL ? "LIB.so and SYMBOL" : "SYMBOL");
        return -1;
    }
    if (request->n_inputs == 0) {
        cli_error("missing --input: give the shape of each input of %s, such as "
                  "--input 3x4 4", request->symbol);
        return -1;
    }
    return 0;
}

/* ---- loading ------------------------------------------------------------------- */

static void *open_library(const char *path)
{
    char local[4096];

    /* dlopen does not search the current directory for a name without '/',
     * but a user naming a file expects it to. */
    if (strchr(path, '/') == NULL && access(path, F_OK) == 0 &&
        strlen(path) + 3 <= sizeof local) {
        snprintf(local, sizeof local, "./%s", path);
        path = local;
    }
    return dlopen(path, RTLD_NOW | RTLD_LOCAL);
}

static ag_function load_function(const check_request *request, void **handle)
{
    *handle = open_library(request->library);
    if (*handle == NULL) {
        cli_error("cannot load %s: %s", request->library, dlerror());
        return NULL;
    }

    dlerror();
    void *symbol = dlsym(*handle, request->symbol);
    const char *error = dlerror();
    if (symbol == NULL || error != NULL) {
        cli_error("%s has no function %s: %s", request->library, request->symbol,
                  error != NULL ? error : "the symbol is NULL");
        return NULL;
    }

    /* POSIX guarantees a data pointer from dlsym converts to a function
     * pointer; memcpy avoids ISO C's warning about the cast. */
    ag_function function;
    memcpy(&function, &symbol, sizeof function);
    return function;
}

/* ---- report ------------------------------------------------------------------- */

/* Returns the input whose element a check names, or NULL when it names
 * none. */
static const ag_tensor *named_input(const check_request *request, ag_tensor *const *inputs,
                                    int k, size_t count)
{
    return count > 0 && k >= 0 && k < request->n_inputs ? inputs[k] : NULL;
}

static void print_text(const check_request *request, ag_tensor *const *inputs,
                       const check_report *report)
{
    const ag_gradcheck_result *result = &report->check;
    char label[32];
    char kink_label[32];

    printf("%s from %s, inputs", request->symbol, request->library);
    for (int i = 0; i < request->n_inputs; i++) {
        printf("%s", i == 0 ? " " : ", ");
        print_shape_text(stdout, inputs[i]);
    }
    printf(", uniform in [%g, %g) with seed %llu\n", request->low, request->high,
           request->seed);

    snprintf(label, sizeof label, "input %d ", result->worst_input);
    snprintf(kink_label, sizeof kink_label, "input %d ", result->kink_input);
    cli_print_check_text(stdout, result, &request->tolerances, label,
                         named_input(request, inputs, result->worst_input, result->n_checked),
                         kink_label,
                         named_input(request, inputs, result->kink_input, result->n_kinks));
    if (report->records_checked)
        cli_print_records_text(stdout, &report->records, report->tape);
    if (report->taylor_done)
        cli_print_taylor_text(stdout, &report->taylor, request->seed);
}

static void print_json(const check_request *request, ag_tensor *const *inputs,
                       const check_report *report)
{
    const ag_gradcheck_result *result = &report->check;
    char label[32];
    char kink_label[32];

    fputs("{\n  \"library\": ", stdout);
    print_json_string(stdout, request->library);
    fputs(",\n  \"symbol\": ", stdout);
    print_json_string(stdout, request->symbol);
    printf(",\n  \"seed\": %llu,\n  \"inputs\": [", request->seed);
    for (int i = 0; i < request->n_inputs; i++) {
        printf("%s[", i == 0 ? "" : ", ");
        for (int d = 0; d < request->ndims[i]; d++)
            printf("%s%zu", d == 0 ? "" : ", ", request->shapes[i][d]);
        fputs("]", stdout);
    }
    fputs("],\n  \"check\": ", stdout);

    snprintf(label, sizeof label, "input %d", result->worst_input);
    snprintf(kink_label, sizeof kink_label, "input %d", result->kink_input);
    cli_print_check_json(stdout, result, &request->tolerances, label,
                         named_input(request, inputs, result->worst_input, result->n_checked),
                         kink_label,
                         named_input(request, inputs, result->kink_input, result->n_kinks),
                         "  ");
    if (report->records_checked) {
        fputs(",\n  \"records\": ", stdout);
        cli_print_records_json(stdout, &report->records, report->tape, "  ");
    }
    if (report->taylor_done) {
        fputs(",\n  \"taylor\": ", stdout);
        cli_print_taylor_json(stdout, &report->taylor, request->seed, "  ");
    }
    fputs("\n}\n", stdout);
}

/* ---- the command ----------------------------------------------------------------- */

/* Records the function on report->tape, on copies of the inputs, and
 * checks each record on its own. */
static int check_records(const check_request *request, ag_function function,
                         ag_tensor *const *inputs, check_report *report)
{
    ag_tensor *copies[MAX_CHECK_INPUTS] = {0};

    report->tape = ag_tape_new();
    if (report->tape == NULL)
        goto failed;
    for (int i = 0; i < request->n_inputs; i++) {
        copies[i] = ag_tensor_copy(report->tape, inputs[i], AG_F64);
        if (copies[i] == NULL || ag_tensor_set_requires_grad(copies[i], true) != 0)
            goto failed;
        ag_tensor_set_name(copies[i], ag_tensor_name(inputs[i]));
    }
    if (function(report->tape, copies, request->n_inputs, NULL) == NULL ||
        ag_check_records(report->tape, &request->tolerances, &report->records) != 0)
        goto failed;
    report->records_checked = true;
    return 0;

failed:
    cli_error("the record check of %s could not run: %s", request->symbol,
              ag_error() != NULL ? ag_error() : "the function returned NULL");
    return -1;
}

static int run(const check_request *request, ag_function function)
{
    ag_tensor *inputs[MAX_CHECK_INPUTS] = {0};
    ag_rng rng = ag_rng_new(request->seed);
    check_report report = {0};
    int status = CLI_USAGE;

    for (int i = 0; i < request->n_inputs; i++) {
        char name[16];

        inputs[i] = ag_rand_uniform(NULL, AG_F64, request->ndims[i], request->shapes[i],
                                    request->low, request->high, &rng);
        if (inputs[i] == NULL || ag_tensor_set_requires_grad(inputs[i], true) != 0) {
            cli_error("%s", ag_error());
            goto done;
        }
        snprintf(name, sizeof name, "input%d", i);
        ag_tensor_set_name(inputs[i], name);
    }

    if (ag_gradcheck(function, NULL, request->n_inputs, inputs, &request->tolerances,
                     &report.check) != 0) {
        cli_error("checking %s failed: %s", request->symbol,
                  ag_error() != NULL ? ag_error() : "the function returned NULL");
        goto done;
    }
    /* A failed check names the first wrong record even without the option. */
    if ((request->check_records || !report.check.passed) &&
        check_records(request, function, inputs, &report) != 0)
        goto done;
    if (request->taylor) {
        ag_rng direction_rng = ag_rng_new(request->seed);

        if (ag_taylor_test(function, NULL, request->n_inputs, inputs, &direction_rng,
                           &report.taylor) != 0) {
            cli_error("the Taylor test of %s could not run: %s", request->symbol,
                      ag_error());
            goto done;
        }
        report.taylor_done = true;
    }

    if (request->json)
        print_json(request, inputs, &report);
    else
        print_text(request, inputs, &report);
    bool failed = !report.check.passed ||
                  (report.records_checked && !report.records.passed) ||
                  (report.taylor_done && !report.taylor.passed);
    status = failed ? CLI_CHECK_FAILED : CLI_OK;

done:
    ag_tape_free(report.tape);
    for (int i = 0; i < request->n_inputs; i++)
        ag_tensor_free(inputs[i]);
    return status;
}

int cmd_check(int argc, char **argv)
{
    check_request request = {
        .seed = 1,
        .low = -1.0,
        .high = 1.0,
        .tolerances = ag_gradcheck_defaults(),
    };

    int parsed = parse_arguments(argc, argv, &request);
    if (parsed != 0)
        return parsed > 0 ? CLI_OK : CLI_USAGE;

    void *handle;
    ag_function function = load_function(&request, &handle);
    if (function == NULL)
        return CLI_USAGE;

    /* The library stays loaded until exit: an op it registered is still in
     * the registry, and dlclose would leave the registry pointing at
     * unmapped memory. */
    return run(&request, function);
}
