/*
 * tapegrad: reverse-mode automatic differentiation from the command line.
 * Results go to stdout, errors to stderr.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

#ifndef TAPEGRAD_VERSION
#define TAPEGRAD_VERSION "unknown"
#endif

static void print_help(FILE *out)
{
    fputs("Usage: tapegrad COMMAND [OPTIONS] ARGUMENTS...\n"
          "\n"
          "Commands:\n"
          "  grad EXPR NAME=VALUE...           evaluate an expression and its gradient\n"
          "                                    with respect to every bound name\n"
          "  hessian EXPR NAME=VALUE...        evaluate a one-element expression and its\n"
          "                                    matrix of second derivatives\n"
          "  check LIB.so SYMBOL --input SHAPE...\n"
          "                                    gradient-check a C function loaded from a\n"
          "                                    shared library\n"
          "\n"
          "Options:\n"
          "  -h, --help       show this help, with every command's options below\n"
          "  --version        print the version\n"
          "\n"
          "Exit status: 0 on success, 1 when a gradient check fails, 2 on invalid usage,\n"
          "input or expression.\n"
          "\n"
          "----------------------------------------------------------------------------\n",
          out);
    print_grad_help(out);
    fputs("\n----------------------------------------------------------------------------\n",
          out);
    print_hessian_help(out);
    fputs("\n----------------------------------------------------------------------------\n",
          out);
    print_check_help(out);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_help(stderr);
        return CLI_USAGE;
    }

    const char *command = argv[1];
    if (strcmp(command, "grad") == 0)
        return cmd_grad(argc - 1, argv + 1);
    if (strcmp(command, "check") == 0)
        return cmd_check(argc - 1, argv + 1);
    if (strcmp(command, "hessian") == 0)
        return cmd_hessian(argc - 1, argv + 1);
    if (strcmp(command, "--help") == 0 || strcmp(command, "-h") == 0 ||
        strcmp(command, "help") == 0) {
        print_help(stdout);
        return CLI_OK;
    }
    if (strcmp(command, "--version") == 0) {
        printf("tapegrad %s\n", TAPEGRAD_VERSION);
        return CLI_OK;
    }

    cli_error("unknown command '%s'; the commands are grad, hessian and check (see "
              "tapegrad --help)",
              command);
    return CLI_USAGE;
}
