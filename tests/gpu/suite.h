/* suite.h: parts of a GPU suite, chosen on the command line, so that a part that kills the process
 * (a fatal CUDA error exits) does not hide the others: tests/gpu/run.sh runs the whole suite, and
 * when it dies without its summary line, runs each part alone.
 *
 *   SUITE              every part
 *   SUITE PART...      those parts only (an unknown name is an error that lists the parts)
 *   SUITE --list       the part names, one a line
 */
#ifndef CNN_GPU_SUITE_H
#define CNN_GPU_SUITE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const *suite_parts_all;
static int suite_nparts_all;
static char **suite_chosen;
static int suite_nchosen;

/* Reads argv against the suite's part names; exits for --list (0) and unknown names (2). */
static void suite_args(const char *suite, int argc, char **argv, const char *const *parts, int nparts) {
    suite_parts_all = parts;
    suite_nparts_all = nparts;
    suite_chosen = argv + 1;
    suite_nchosen = argc - 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--list")) {
            for (int k = 0; k < nparts; k++) printf("%s\n", parts[k]);
            exit(0);
        }
        int known = 0;
        for (int k = 0; k < nparts; k++) known |= !strcmp(argv[i], parts[k]);
        if (!known) {
            fprintf(stderr, "%s: unknown part '%s'; the parts are:", suite, argv[i]);
            for (int k = 0; k < nparts; k++) fprintf(stderr, " %s", parts[k]);
            fprintf(stderr, "\n");
            exit(2);
        }
    }
}

/* Whether part name runs: every part when none was named. */
static int suite_part(const char *name) {
    if (suite_nchosen == 0) return 1;
    for (int i = 0; i < suite_nchosen; i++)
        if (!strcmp(suite_chosen[i], name)) return 1;
    return 0;
}

#endif
