/* cmd_train.c: `train CONFIG [--set section.key=value ...]`: run a configuration's stages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "config.h"
#include "train.h"
#include "util.h"

int cmd_train(int argc, char **argv) {
    const char *path = argv[1];
    const char **sets = xcalloc((size_t)argc, sizeof *sets);
    int nsets = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--set") && i + 1 < argc) {
            sets[nsets++] = argv[++i];
        } else {
            fprintf(stderr, "train: unexpected argument '%s' (usage: train CONFIG [--set section.key=value ...])\n", argv[i]);
            return 2;
        }
    }
    Config cfg;
    char err[2048], run_dir[1024];
    if (config_load(path, sets, nsets, &cfg, err, sizeof err)) {
        fprintf(stderr, "cnntrain: %s\n", err);
        free(sets);
        return 2;
    }
    int rc = train_run(&cfg, run_dir, sizeof run_dir);
    config_free(&cfg);
    free(sets);
    return rc;
}
