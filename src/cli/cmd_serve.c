/* cmd_serve.c — placeholder until the serve subcommand lands. */
#include "cli/cli.h"

int cmd_serve(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_error("serve", "not built yet");
}
