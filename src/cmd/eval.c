/* cmd/eval.c: `train eval CHECKPOINT [--data PATH] [--sizes 64,128,224] [--interpret]`: its flags, then
 * eval_checkpoint (train/eval.h) does the work. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cli.h"
#include "cmd/commands.h"
#include "train/eval.h"
#include "base/util.h"

/* "64,128,224" -> sizes; 0, or -1 for anything that is not a list of positive integers. */
static int parse_sizes(const char *s, int *out, int max, int *n) {
    *n = 0;
    for (const char *p = s;;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 1 || v > 8192 || *n == max || (*end && *end != ',')) return -1;
        out[(*n)++] = (int)v;
        if (!*end) return 0;
        p = end + 1;
    }
}

int cmd_eval(int argc, char **argv) {
    EvalOptions o;
    eval_options_default(&o);
    /* NULL or NaN: not given (the run's, from its config.ini beside the checkpoint; else the default) */
    const char *data = NULL, *format = NULL, *sizes = NULL, *out = NULL;
    const char *train_dir = NULL, *valid_dir = NULL, *csv = NULL, *images = NULL;
    float ratio = NAN, valid_pct = NAN, beta = o.tta_beta;
    int split_seed = INT_MIN, seed = 0, tta = 0, center_crop = 0, no_plot = 0, interpret = 0;
    /* cli has no switches: these are taken out of argv first; their table rows are for --help */
    int dummy;
    const Flag flags[] = {
        {"--data", FLAG_STR, &data, "data set folder (default: the run's, from the config.ini beside CHECKPOINT)"},
        {"--sizes", FLAG_STR, &sizes, "test sizes, comma-separated, e.g. 64,128,224 (default: the size the run validated at)"},
        {"--format", FLAG_STR, &format, "folder or csv (default: the run's for its data, else folder)"},
        {"--train-dir", FLAG_STR, &train_dir, "folder layout: training folder, which names the classes (default: the run's, else train)"},
        {"--valid-dir", FLAG_STR, &valid_dir, "folder layout: validation folder (default: the run's, else val)"},
        {"--csv", FLAG_STR, &csv, "csv layout: label file (default: the run's, else train.csv)"},
        {"--images", FLAG_STR, &images, "csv layout: image folder (default: the run's, else train_images)"},
        {"--valid-pct", FLAG_FLOAT, &valid_pct, "csv without is_val: the training run's valid_pct (default: the checkpoint's, else 0.2)"},
        {"--split-seed", FLAG_INT, &split_seed, "csv without is_val: the training run's split_seed (default: the checkpoint's, else 42)"},
        {"--resize-ratio", FLAG_FLOAT, &ratio, "Resize(round(ratio*s)) + CenterCrop(s) (default: the run's validation transform; "
         "without a run config, 1: plain resize)"},
        {"--center-crop", FLAG_INT, &dummy, "(switch) CenterCrop(s) of the unresized image instead of resizing"},
        {"--batch", FLAG_INT, &o.batch, "batch size (default 64)"},
        {"--device", FLAG_STR, &o.device, "auto, cpu or cuda (default auto)"},
        {"--threads", FLAG_INT, &o.threads, "loader threads (default: one per core)"},
        {"--tta", FLAG_INT, &dummy, "(switch) also fastai's tta(n=4, beta=0.25) at each size"},
        {"--tta-n", FLAG_INT, &o.tta_n, "TTA: augmented passes (default 4)"},
        {"--tta-beta", FLAG_FLOAT, &beta, "TTA: weight of the plain pass (default 0.25)"},
        {"--seed", FLAG_INT, &seed, "TTA: random seed (default 0)"},
        {"--no-plot", FLAG_INT, &dummy, "(switch) do not draw eval.png (nor confusion.png)"},
        {"--interpret", FLAG_INT, &dummy, "(switch) fastai's ClassificationInterpretation at the last size: confusion.csv/.png, "
         "per_class.csv, most_confused.csv, top_losses.jpg, show_results.jpg; error_rate and top5_accuracy columns"},
        {"--top-losses", FLAG_INT, &o.top_losses, "--interpret: images in top_losses.jpg (default 9)"},
        {"--min-val", FLAG_INT, &o.min_val, "--interpret: most_confused's min_val (default 1)"},
        {"--out", FLAG_STR, &out, "folder for eval.csv, eval.png and the interpretation (default: the checkpoint's folder)"},
        {0},
    };
    char **args = xmalloc((size_t)(argc + 1) * sizeof *args);
    int nargs = 0;
    for (int i = 0; i < argc; i++) {
        if (i >= 2 && !strcmp(argv[i], "--tta")) tta = 1;
        else if (i >= 2 && !strcmp(argv[i], "--center-crop")) center_crop = 1;
        else if (i >= 2 && !strcmp(argv[i], "--no-plot")) no_plot = 1;
        else if (i >= 2 && !strcmp(argv[i], "--interpret")) interpret = 1;
        else args[nargs++] = argv[i];
    }
    args[nargs] = NULL;
    const char *usage = "CHECKPOINT [--data PATH] [--sizes 64,128,224] [--resize-ratio R | --center-crop] [--tta] [--interpret] [options]";
    const char *pos[1];
    int npos, list[64], nsizes = 0;
    cli_parse("eval", usage, nargs, args, 2, flags, pos, 1, &npos);
    free(args);
    const char *problem = NULL;
    if (npos != 1) problem = "give one CHECKPOINT";
    else if (sizes && parse_sizes(sizes, list, 64, &nsizes)) problem = "--sizes must be a comma-separated list of up to 64 sides in 1..8192";
    else if (format && strcmp(format, "folder") && strcmp(format, "csv")) problem = "--format must be folder or csv";
    else if (center_crop && !isnan(ratio)) problem = "give --resize-ratio or --center-crop, not both";
    else if (!isnan(ratio) && !(ratio > 0 && ratio < 16)) problem = "--resize-ratio must be in (0, 16)";
    else if (!isnan(valid_pct) && !(valid_pct > 0 && valid_pct < 1)) problem = "--valid-pct must be in (0, 1)";
    else if (split_seed != INT_MIN && split_seed < 0) problem = "--split-seed must be 0 or more";
    if (problem) {
        fprintf(stderr, "train eval: %s\n", problem);
        cli_usage("eval", usage, flags);
        return 2;
    }
    o.checkpoint = pos[0];
    o.data.root = data;
    if (format || train_dir || valid_dir || csv || images) o.given |= EVAL_LAYOUT;
    if (format) o.data.format = strcmp(format, "csv") ? DATA_FOLDER : DATA_CSV;
    if (train_dir) o.data.train_dir = train_dir;
    if (valid_dir) o.data.valid_dir = valid_dir;
    if (csv) o.data.csv = csv;
    if (images) o.data.images_dir = images;
    o.given |= (!isnan(valid_pct) ? EVAL_SPLIT_PCT : 0) | (split_seed != INT_MIN ? EVAL_SPLIT_SEED : 0);
    if (!isnan(valid_pct)) o.data.valid_pct = valid_pct;
    if (split_seed != INT_MIN) o.data.seed = (uint64_t)split_seed;
    o.sizes = list;
    o.nsizes = nsizes;
    o.resize_ratio = !isnan(ratio) ? ratio : 0; /* 0: the run's transform */
    o.center_crop = center_crop;
    o.tta = tta;
    o.tta_beta = beta;
    o.seed = (uint64_t)seed;
    o.out_dir = out;
    o.plot = !no_plot;
    o.interpret = interpret;
    char err[2048];
    if (eval_checkpoint(&o, err, sizeof err)) {
        fprintf(stderr, "train eval: %s\n", err);
        return 1;
    }
    return 0;
}
