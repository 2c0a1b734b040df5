/* cmd/cli.c: parsing a subcommand's flags from its table, and its usage text (see cli.h). */
#include "cmd/cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cli_usage(const char *command, const char *usage, const Flag *flags) {
    fprintf(stderr, "usage: train %s %s\n", command, usage);
    for (const Flag *f = flags; f && f->name; f++) fprintf(stderr, "  %-14s %s\n", f->name, f->help);
}

static int parse_value(const Flag *f, const char *s) {
    char *end;
    errno = 0;
    if (f->type == FLAG_INT) {
        long v = strtol(s, &end, 10);
        if (errno || *end || end == s || v < -2147483647L || v > 2147483647L) return -1;
        *(int *)f->dst = (int)v;
    } else if (f->type == FLAG_FLOAT) {
        float v = strtof(s, &end);
        if (errno || *end || end == s || !isfinite(v)) return -1;
        *(float *)f->dst = v;
    } else {
        *(const char **)f->dst = s;
    }
    return 0;
}

void cli_parse(const char *command, const char *usage, int argc, char **argv, int first, const Flag *flags,
               const char **positional, int max_positional, int *npositional) {
    *npositional = 0;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] != '-') {
            if (*npositional >= max_positional) {
                fprintf(stderr, "train %s: unexpected argument '%s'\n", command, a);
                cli_usage(command, usage, flags);
                exit(2);
            }
            positional[(*npositional)++] = a;
            continue;
        }
        if (!strcmp(a, "--help")) {
            cli_usage(command, usage, flags);
            exit(0);
        }
        const Flag *f = flags;
        while (f && f->name && strcmp(f->name, a)) f++;
        if (!f || !f->name) {
            fprintf(stderr, "train %s: unknown option '%s'\n", command, a);
            cli_usage(command, usage, flags);
            exit(2);
        }
        if (i + 1 >= argc || parse_value(f, argv[i + 1])) {
            fprintf(stderr, "train %s: option %s needs a%s value\n", command, a,
                    f->type == FLAG_INT ? "n integer" : f->type == FLAG_FLOAT ? " number" : "");
            exit(2);
        }
        i++;
    }
}
