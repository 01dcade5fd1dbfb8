/* Pieces shared by the tapegrad program's commands. */
#ifndef TAPEGRAD_TOOLS_CLI_H
#define TAPEGRAD_TOOLS_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "bindings.h"
#include "tapegrad/autograd.h"

/* Exit statuses. */
enum {
    CLI_OK = 0,
    CLI_CHECK_FAILED = 1, /* a gradient check ran and failed */
    CLI_USAGE = 2,        /* invalid arguments, expression, input or library */
};

/* Prints "tapegrad: MESSAGE" to stderr. */
void cli_error(const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* Echoes `text` to stderr with a caret under byte `column` (nothing when
 * column is negative). */
void cli_show_column(const char *text, int column);

/* Reports a failed evaluation of `expression`: the library's message, a
 * caret under byte `column`, and a hint where the message suggests a fix
 * the expression language lacks (ag_reshape for matmul operands). */
void cli_report_eval_error(const char *expression, int column);

/* If argv[*i] is option `name`, stores its value (from "--name=VALUE" or the
 * next argument), advances *i past it and returns 1. Returns 0 when argv[*i]
 * is another argument, and -1 after printing an error when the value is
 * missing. */
int cli_option_value(int argc, char **argv, int *i, const char *name, const char **value);

/* Handles --dtype f32|f64 and --format text|json, which `grad` and
 * `hessian` share. Returns 1 when argv[*i] was one of them, 0 when not, -1
 * after printing an error. */
int cli_dtype_format_option(int argc, char **argv, int *i, ag_dtype *dtype, bool *json);

/* Parses the NAME=VALUE argument into bindings[*n_bindings], records its
 * name in names[*n_bindings] and increments *n_bindings. Prints an error and
 * returns -1 for an invalid binding or a name bound twice. The arrays must
 * have room for one more entry. */
int cli_add_binding(binding *bindings, const char **names, int *n_bindings,
                    const char *argument);

/* An expression and its NAME=VALUE bindings, as `grad` and `hessian` take
 * them. The arrays are allocated by cli_parse_expression_arguments. */
typedef struct cli_expression_arguments {
    const char *expression;
    int n_bindings;
    binding *bindings;
    const char **names;
} cli_expression_arguments;

/* Handles one command-specific option at argv[*i]: returns 1 when handled,
 * 0 when argv[*i] is not one of its options, -1 after printing an error. */
typedef int (*cli_option_parser)(int argc, char **argv, int *i, void *request);

/* Parses `tapegrad COMMAND [OPTIONS] EXPR NAME=VALUE...`: --help prints
 * `print_help` and returns 1; options go to `parse_option` (until "--");
 * the first other argument is the expression and the rest are bindings.
 * Returns 0, 1 after the help, or -1 after printing an error. */
int cli_parse_expression_arguments(int argc, char **argv, const char *command,
                                   cli_option_parser parse_option, void *request,
                                   void (*print_help)(FILE *out),
                                   cli_expression_arguments *args);

/* Parses a number option. Prints an error and returns -1 unless it is a
 * finite number of at least `minimum` (exclusive when `strict`). */
int cli_parse_double(const char *option, const char *text, double minimum, bool strict,
                     double *value);

/* Tolerance options shared by `grad --check` and `check`: --eps, --atol and
 * --rtol. Returns 1 when argv[*i] was one of them, 0 when not, -1 on error. */
int cli_tolerance_option(int argc, char **argv, int *i, ag_gradcheck_options *options);

/* Writes the flat index of a tensor element as "[1, 2]". */
void cli_format_position(char *buf, size_t size, const ag_tensor *t, size_t index);

/* Writes a gradient check result as text. `input_label` names the worst
 * input, `input` is that tensor (for the element's position), or NULL when
 * no element was compared. `kink_label` and `kink_input` name the input of
 * the first kink in the same way (both are ignored without kinks). */
void cli_print_check_text(FILE *out, const ag_gradcheck_result *result,
                          const ag_gradcheck_options *options, const char *input_label,
                          const ag_tensor *input, const char *kink_label,
                          const ag_tensor *kink_input);

/* Writes the same as a JSON object (no trailing newline). */
void cli_print_check_json(FILE *out, const ag_gradcheck_result *result,
                          const ag_gradcheck_options *options, const char *input_label,
                          const ag_tensor *input, const char *kink_label,
                          const ag_tensor *kink_input, const char *indent);

/* Writes a second-order check result (ag_gradgradcheck) as text.
 * `gradient_label` names the worst element of the gradient, such as
 * "d/dy[0]"; `input_label` and `input` name the input element it was
 * differentiated by, as for cli_print_check_text. */
void cli_print_check2_text(FILE *out, const ag_gradcheck_result *result,
                           const ag_gradcheck_options *options, const char *gradient_label,
                           const char *input_label, const ag_tensor *input);

/* Writes a record check result (ag_check_records) as text: the verdict,
 * the first wrong record's worst element and the first kink. `tape` is the
 * checked tape, for the records' ops and input shapes. */
void cli_print_records_text(FILE *out, const ag_record_check_result *result,
                            const ag_tape *tape);

/* Writes the same as a JSON object (no trailing newline). */
void cli_print_records_json(FILE *out, const ag_record_check_result *result,
                            const ag_tape *tape, const char *indent);

/* Writes a Taylor test result (ag_taylor_test) as text: the verdict, the
 * table of h, r(h) and the local order log2(r(2h) / r(h)), and the
 * library's message. `seed` is the seed of the direction's generator. */
void cli_print_taylor_text(FILE *out, const ag_taylor_result *result, unsigned long long seed);

/* Writes the same as a JSON object (no trailing newline). */
void cli_print_taylor_json(FILE *out, const ag_taylor_result *result, unsigned long long seed,
                           const char *indent);

/* The commands. Each returns the exit status; argv[0] is the command name. */
int cmd_grad(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_hessian(int argc, char **argv);

/* Help texts, printed by `tapegrad --help` and by each command's --help. */
void print_grad_help(FILE *out);
void print_check_help(FILE *out);
void print_hessian_help(FILE *out);

#endif /* TAPEGRAD_TOOLS_CLI_H */
