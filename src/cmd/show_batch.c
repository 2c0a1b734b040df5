/* cmd/show_batch.c: `train show-batch`: one batch as the network sees it (augmented, with lighting)
 * drawn as a titled grid, to check labels and transforms before a long run. Only the options live
 * here; the drawing is show_batch.c's. */
#include <stdio.h>
#include <string.h>

#include "cmd/cli.h"
#include "train/config.h"
#include "cmd/commands.h"
#include "pipeline/dataset.h"
#include "pipeline/loader.h"
#include "report/show_batch.h"
#include "base/util.h"

static const char USAGE[] = "(CONFIG.ini [--stage NAME] | --data PATH [options]) --out FILE.jpg";

int cmd_show_batch(int argc, char **argv) {
    const char *data = NULL, *format = "folder", *train_dir = "train", *valid_dir = "val", *csv = "train.csv",
               *images = "train_images", *transform = "fastai", *split = "train", *out = NULL, *stage = NULL;
    int size = 224, presize = 460, n = 16, cols = 4, seed = 1, shuffle = -1;
    float min_scale = 0.75f;
    const Flag flags[] = {
        {"--stage", FLAG_STR, &stage, "with a config: the stage whose transforms to show (default: the first)"},
        {"--data", FLAG_STR, &data, "data set folder (without a config)"},
        {"--out", FLAG_STR, &out, "JPEG file to write (required)"},
        {"--format", FLAG_STR, &format, "folder or csv (default folder)"},
        {"--train-dir", FLAG_STR, &train_dir, "folder layout: training folder (default train)"},
        {"--valid-dir", FLAG_STR, &valid_dir, "folder layout: validation folder (default val)"},
        {"--csv", FLAG_STR, &csv, "csv layout: label file (default train.csv)"},
        {"--images", FLAG_STR, &images, "csv layout: image folder (default train_images)"},
        {"--transform", FLAG_STR, &transform, "fastai, rrc, center or resize (default fastai)"},
        {"--size", FLAG_INT, &size, "image side (default 224)"},
        {"--presize", FLAG_INT, &presize, "fastai item resize (default 460)"},
        {"--min-scale", FLAG_FLOAT, &min_scale, "fastai random resized crop min scale (default 0.75)"},
        {"--n", FLAG_INT, &n, "images in the batch (default 16)"},
        {"--cols", FLAG_INT, &cols, "images per row (default 4)"},
        {"--split", FLAG_STR, &split, "train (training transforms) or valid (default train)"},
        {"--shuffle", FLAG_INT, &shuffle, "1: a seeded random batch, 0: the first images (default: 1 for train, 0 for valid, as fastai)"},
        {"--seed", FLAG_INT, &seed, "seed of the shuffle, the augmentation and a csv valid split (default 1)"},
        {0},
    };
    const char *pos[1];
    int npos;
    cli_parse("show-batch", USAGE, argc, argv, 2, flags, pos, 1, &npos);
    /* With a config, the data set and the stage's transforms come from it. */
    Config cfg;
    const StageConfig *st = NULL;
    char err[2048];
    if (npos) {
        if (config_load(pos[0], NULL, 0, &cfg, err, sizeof err)) {
            fprintf(stderr, "train show-batch: %s\n", err);
            return 2;
        }
        for (int i = 0; i < cfg.nstages && !st; i++)
            if (!stage || !strcmp(cfg.stages[i].name, stage)) st = &cfg.stages[i];
        if (!st) {
            fprintf(stderr, "train show-batch: %s has no stage '%s'\n", pos[0], stage ? stage : "");
            config_free(&cfg);
            return 2;
        }
        data = cfg.data.root;
        transform = transform_kind_name(st->train_tf.kind);
    }
    TransformKind kind;
    int train = !strcmp(split, "train");
    const char *bad = !data ? "give a config or --data"
                      : !out ? "--out is required"
                      : strcmp(format, "folder") && strcmp(format, "csv") ? "--format must be folder or csv"
                      : transform_kind_parse(transform, &kind) ? "--transform must be fastai, rrc, center or resize"
                      : !train && strcmp(split, "valid") ? "--split must be train or valid"
                      : size < 1 || n < 1 || cols < 1 ? "--size, --n and --cols must be positive"
                      : presize < 0 || !(min_scale > 0 && min_scale <= 1) ? "--presize must be >= 0 and --min-scale in (0, 1]"
                                                                         : NULL;
    if (bad) {
        fprintf(stderr, "train show-batch: %s\n", bad);
        cli_usage("show-batch", USAGE, flags);
        return 2;
    }

    DatasetSpec ds = {!strcmp(format, "csv") ? DATA_CSV : DATA_FOLDER, data, train_dir, valid_dir, csv, images, 0.2f,
                      (uint64_t)(unsigned)seed, 1, NULL};
    if (st) ds = cfg.data;
    Dataset d;
    if (dataset_open(&ds, 0, &d, err, sizeof err)) {
        fprintf(stderr, "train show-batch: %s\n", err);
        return 1;
    }
    LoaderSpec ls;
    memset(&ls, 0, sizeof ls);
    ls.samples = train ? d.train : d.valid;
    ls.count = train ? d.ntrain : d.nvalid;
    ls.tf = transform_defaults(kind, size, train);
    if (kind == TF_FASTAI) {
        ls.tf.presize = presize;
        ls.tf.min_scale = min_scale;
    }
    if (st) ls.tf = train ? st->train_tf : st->valid_tf;
    ls.batch = n;
    ls.shuffle = shuffle < 0 ? train : shuffle != 0;
    ls.drop_last = 0;
    ls.prefetch = 2; /* one batch is wanted: fill as little ahead as the loader allows */
    ls.seed = (uint64_t)(unsigned)seed;
    ls.format = BATCH_F32; /* what the network sees, lighting included */
    Loader *L = loader_create(&ls, err, sizeof err);
    int rc = 1;
    if (!L) {
        fprintf(stderr, "train show-batch: %s\n", err);
    } else {
        loader_start_epoch(L, 0, 0);
        const Batch *b = loader_next(L);
        if (!b) {
            fprintf(stderr, "train show-batch: no images could be loaded\n");
        } else if (show_batch_write(b, (const char *const *)d.classes, d.nclasses, cols, out, err, sizeof err)) {
            fprintf(stderr, "train show-batch: %s\n", err);
        } else {
            ShowBatchLayout lay = show_batch_layout(b->n, b->size, cols);
            printf("wrote %s: %d %s images of %dx%d (%s transform), %d x %d grid, %dx%d pixels\n", out, b->n,
                   train ? "train" : "valid", b->size, b->size, transform_kind_name(kind), lay.rows, lay.cols, lay.width, lay.height);
            rc = 0;
        }
        loader_destroy(L);
    }
    dataset_free(&d);
    if (st) config_free(&cfg);
    return rc;
}
