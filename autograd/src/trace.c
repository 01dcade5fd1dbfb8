/* STUB: placeholder until the tape printer lands. */
#include "internal.h"

int ag_tape_print(const ag_tape *tape, FILE *out)
{
    (void)tape;
    (void)out;
    ag_set_error("ag_tape_print: not implemented yet");
    return -1;
}

int ag_tape_write_dot(const ag_tape *tape, FILE *out)
{
    (void)tape;
    (void)out;
    ag_set_error("ag_tape_write_dot: not implemented yet");
    return -1;
}
