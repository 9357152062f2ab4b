// The edgellm command: dispatches to one subcommand per tools/cmd_*.c.
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help")) {
        printf("usage: edgellm SUBCOMMAND [options]\n");
        return 0;
    }
    fprintf(stderr, "edgellm: unknown subcommand '%s'\n", argv[1]);
    return 2;
}
