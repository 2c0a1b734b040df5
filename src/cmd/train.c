/* cmd/train.c: `train CONFIG [--force] [--set section.key=value ...]`: run a configuration's stages, and
 * `train --resume RUN_FOLDER [--set run.key=value ...]`: go on with a stopped run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/commands.h"
#include "train/config.h"
#include "train/run_record.h"
#include "train/train.h"
#include "base/util.h"

int cmd_train(int argc, char **argv) {
    int resume = !strcmp(argv[1], "--resume");
    if (resume && argc < 3) {
        fprintf(stderr, "usage: train --resume RUN_FOLDER [--set run.key=value ...]\n");
        return 2;
    }
    const char *target = argv[resume ? 2 : 1];
    const char **sets = xcalloc((size_t)argc, sizeof *sets);
    int nsets = 0, force = 0;
    for (int i = resume ? 3 : 2; i < argc; i++) {
        if (!strcmp(argv[i], "--force") && !resume) {
            force = 1;
        } else if (!strcmp(argv[i], "--set") && i + 1 < argc) {
            sets[nsets] = argv[++i];
            /* a resumed run is the same experiment: only what cannot change its numbers may change
             * (train_run checks the whole config against the run's record, config.ini edits too) */
            if (resume && strncmp(sets[nsets], "run.threads=", 12) && strncmp(sets[nsets], "run.stop_after=", 15)) {
                fprintf(stderr, "train: --resume takes only %s overrides (the others change the run's numbers), not '%s'\n",
                        RESUME_FREE_KEYS, sets[nsets]);
                free(sets);
                return 2;
            }
            nsets++;
        } else {
            fprintf(stderr, "train: unexpected argument '%s' (usage: train CONFIG [--force] [--set section.key=value ...] or "
                            "train --resume RUN_FOLDER [--set run.key=value ...])\n", argv[i]);
            free(sets);
            return 2;
        }
    }
    char path[1200];
    if (resume) snprintf(path, sizeof path, "%s/config.ini", target);
    else snprintf(path, sizeof path, "%s", target);
    Config cfg;
    char err[2048], run_dir[1024];
    if (config_load(path, sets, nsets, &cfg, err, sizeof err)) {
        fprintf(stderr, "cnntrain: %s\n", err);
        free(sets);
        return 2;
    }
    cfg.force = force;
    int rc = train_run(&cfg, resume ? target : NULL, run_dir, sizeof run_dir);
    config_free(&cfg);
    free(sets);
    return rc == TRAIN_STOPPED ? 0 : rc;
}
