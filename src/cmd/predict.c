/* cmd/predict.c: `train predict CHECKPOINT IMAGE|FOLDER|CSV [--top-k K] [--size S] [--tta] [--out FILE]`:
 * its flags, then predict_run (train/predict.h) does the work. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "cmd/cli.h"
#include "cmd/commands.h"
#include "train/predict.h"

int cmd_predict(int argc, char **argv) {
    PredictOptions o;
    predict_options_default(&o);
    int seed = 0, dummy;
    /* cli has no switches: these are taken out of argv first; their table rows are for --help */
    const Flag flags[] = {
        {"--top-k", FLAG_INT, &o.top_k, "classes shown per image, most probable first (default 5)"},
        {"--size", FLAG_INT, &o.size, "image side (default: the run's validation size, from config.ini beside the checkpoint)"},
        {"--out", FLAG_STR, &o.out, "the CSV written (default predictions.csv for a folder, submission.csv for a CSV; "
                                    "an image prints to stdout only)"},
        {"--force", FLAG_INT, &dummy, "(switch) replace --out even when it is not a predictions file of ours"},
        {"--submission", FLAG_INT, &dummy, "(switch) a folder: write image_id,label (Kaggle's layout) instead"},
        {"--images", FLAG_STR, &o.images_dir, "a CSV: the folder of its images (default: test_images, train_images, "
                                              "images or the CSV's folder, the first that holds them)"},
        {"--label-map", FLAG_STR, &o.label_map, "JSON {\"0\": \"name\", ...} of display names (default: the checkpoint's "
                                                "class_labels, else the run's label map)"},
        {"--tta", FLAG_INT, &dummy, "(switch) fastai's tta(): the run's training transforms n times, lerp with the plain pass"},
        {"--tta-n", FLAG_INT, &o.tta_n, "TTA: augmented passes (default 4)"},
        {"--tta-beta", FLAG_FLOAT, &o.tta_beta, "TTA: weight of the plain pass (default 0.25)"},
        {"--seed", FLAG_INT, &seed, "TTA: random seed (default 0)"},
        {"--batch", FLAG_INT, &o.batch, "batch size (default 64)"},
        {"--device", FLAG_STR, &o.device, "auto, cpu or cuda (default auto)"},
        {"--threads", FLAG_INT, &o.threads, "loader threads (default: one per core)"},
        {0},
    };
    char **args = xmalloc((size_t)(argc + 1) * sizeof *args);
    int nargs = 0;
    for (int i = 0; i < argc; i++) {
        if (i >= 2 && !strcmp(argv[i], "--tta")) o.tta = 1;
        else if (i >= 2 && !strcmp(argv[i], "--force")) o.force = 1;
        else if (i >= 2 && !strcmp(argv[i], "--submission")) o.submission = 1;
        else args[nargs++] = argv[i];
    }
    args[nargs] = NULL;
    const char *usage = "CHECKPOINT IMAGE|FOLDER|CSV [--top-k K] [--size S] [--tta] [--out preds.csv] [options]";
    const char *pos[2];
    int npos;
    cli_parse("predict", usage, nargs, args, 2, flags, pos, 2, &npos);
    free(args);
    if (npos != 2) {
        fprintf(stderr, "train predict: give a CHECKPOINT and an image, a folder of images or a CSV of image ids\n");
        cli_usage("predict", usage, flags);
        return 2;
    }
    o.checkpoint = pos[0];
    o.input = pos[1];
    o.seed = (uint64_t)(unsigned)seed;
    char err[2048];
    if (predict_run(&o, err, sizeof err)) {
        fprintf(stderr, "train predict: %s\n", err);
        return 1;
    }
    return 0;
}
