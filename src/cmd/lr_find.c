/* cmd/lr_find.c: `train lr_find CONFIG [--stage NAME] [--start 1e-7] [--end 10] [--iters 100] [--out DIR]
 * [--from CKPT] [--no-stop-div] [--set section.key=value ...]`: its flags, then lr_find_config
 * (train/lr_find.h) runs fastai's LR range test. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "cmd/cli.h"
#include "cmd/commands.h"
#include "train/config.h"
#include "train/lr_find.h"

/* A positive number as a double (the flags' FLAG_FLOAT would round 1e-7 to float: fastai's lrs are
 * Python doubles); -1 when not given. */
static int parse_lr(const char *s, double *out) {
    if (!s) return 0;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v > 0) || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

int cmd_lr_find(int argc, char **argv) {
    const char *stage = NULL, *start = NULL, *end = NULL, *out = NULL, *from = NULL, *dummy_str = NULL;
    int iters = -1, dummy = 0;
    const Flag flags[] = {
        {"--stage", FLAG_STR, &stage, "the stage whose loader, batch, transforms, wd, betas, label smoothing and mixup it "
                                      "uses (default: the first that trains, or an lr_find stage)"},
        {"--start", FLAG_STR, &start, "the first lr (default 1e-7, or the lr_find stage's start_lr)"},
        {"--end", FLAG_STR, &end, "the lr it grows towards (default 10, or the stage's end_lr)"},
        {"--iters", FLAG_INT, &iters, "batches (default 100, or the stage's num_it; at least 6, as fastai)"},
        {"--from", FLAG_STR, &from, "start from a checkpoint instead of the config's fresh model: a run's "
                                    "resume.safetensors (weights, statistics, Adam's moments, as the run stood), or a "
                                    "model file (its weights and statistics, fresh moments; an older run's "
                                    ".train.safetensors beside it gives them)"},
        {"--out", FLAG_STR, &out, "folder for lr_find.csv and lr_find.png (default: [run] out_dir/lr_find-<config name>)"},
        {"--no-stop-div", FLAG_INT, &dummy, "(switch) run every batch, even when the loss diverges"},
        {"--set", FLAG_STR, &dummy_str, "section.key=value: a config override, as for ./train CONFIG (repeatable)"},
        {0},
    };
    const char *usage = "CONFIG [--stage NAME] [--start 1e-7] [--end 10] [--iters 100] [--from CKPT] [--out DIR] [options]";
    /* switches and the repeatable --set are taken out of argv first */
    char **args = xmalloc((size_t)(argc + 1) * sizeof *args);
    const char **sets = xcalloc((size_t)argc + 1, sizeof *sets);
    int nargs = 0, nsets = 0, stop_div = -1;
    for (int i = 0; i < argc; i++) {
        if (i >= 2 && !strcmp(argv[i], "--no-stop-div")) stop_div = 0;
        else if (i >= 2 && !strcmp(argv[i], "--set") && i + 1 < argc) sets[nsets++] = argv[++i];
        else args[nargs++] = argv[i];
    }
    args[nargs] = NULL;
    const char *pos[1];
    int npos;
    cli_parse("lr_find", usage, nargs, args, 2, flags, pos, 1, &npos);
    free(args);
    LrFindOptions o = {-1, -1, iters, stop_div};
    const char *problem = NULL;
    if (npos != 1) problem = "give one CONFIG";
    else if (parse_lr(start, &o.start_lr)) problem = "--start must be a positive number (e.g. 1e-7)";
    else if (parse_lr(end, &o.end_lr)) problem = "--end must be a positive number (e.g. 10)";
    else if (iters != -1 && iters < 1) problem = "--iters must be a positive number of batches";
    if (problem) {
        fprintf(stderr, "train lr_find: %s\n", problem);
        cli_usage("lr_find", usage, flags);
        free(sets);
        return 2;
    }
    Config cfg;
    char err[2048], dir[1200];
    if (config_load(pos[0], sets, nsets, &cfg, err, sizeof err)) {
        fprintf(stderr, "cnntrain: %s\n", err);
        free(sets);
        return 2;
    }
    if (!out) { /* runs/lr_find-<config file name without .ini> */
        const char *base = strrchr(pos[0], '/');
        base = base ? base + 1 : pos[0];
        size_t len = strlen(base);
        if (len > 4 && !strcmp(base + len - 4, ".ini")) len -= 4;
        snprintf(dir, sizeof dir, "%s/lr_find-%.*s", cfg.out_dir, (int)len, base);
        out = dir;
    }
    int rc = lr_find_config(&cfg, stage, &o, from, out);
    config_free(&cfg);
    free(sets);
    return rc;
}
