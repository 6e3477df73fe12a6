#include <stdio.h>

#include "cli/cli.h"
#include "cli/run_opts.h"

void es_run_opts_print_spec_help(void) {
    printf("Speculative decoding options are not available in this build yet.\n");
}

int es_run_speculative(es_run_opts *o) {
    (void)o;
    return cli_error("run", "--draft: speculative decoding is not available in this build yet");
}
