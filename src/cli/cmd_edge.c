/* cmd_edge.c — placeholder until the edge subcommand lands. */
#include "cli/cli.h"

int cmd_edge(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_error("edge", "not built yet");
}
