/* cmd/cli.h: command-line flags for the subcommands, from one table per command. */
#ifndef CNN_CLI_H
#define CNN_CLI_H

typedef enum { FLAG_INT, FLAG_FLOAT, FLAG_STR } FlagType;

typedef struct {
    const char *name; /* "--size" */
    FlagType type;
    void *dst;        /* int*, float* or const char** */
    const char *help;
} Flag;

/* Parse argv[first..argc) into the table's targets. Positional arguments are stored into
 * positional[0..max_positional) and counted in *npositional. An unknown flag, a missing or bad
 * value, or too many positionals prints the command's usage and exits with status 2. */
void cli_parse(const char *command, const char *usage, int argc, char **argv, int first, const Flag *flags,
               const char **positional, int max_positional, int *npositional);
void cli_usage(const char *command, const char *usage, const Flag *flags);

#endif
