/* cmd/bench_loader.c: `train bench-loader`: images/s the loader decodes and augments, in total and
 * per thread, so a GPU's appetite can be checked against the cores a machine has. */
#include <stdio.h>
#include <string.h>

#include "cmd/cli.h"
#include "cmd/commands.h"
#include "pipeline/dataset.h"
#include "pipeline/loader.h"
#include "base/util.h"

int cmd_bench_loader(int argc, char **argv) {
    const char *data = NULL, *format = "folder", *transform = "fastai";
    int size = 224, presize = 460, threads = 0, batch = 64, batches = 30, epochs = 2;
    float min_scale = 0.75f;
    const Flag flags[] = {
        {"--data", FLAG_STR, &data, "data set folder (required)"},
        {"--format", FLAG_STR, &format, "folder or csv (default folder)"},
        {"--transform", FLAG_STR, &transform, "fastai, rrc, center or resize (default fastai)"},
        {"--size", FLAG_INT, &size, "output side (default 224)"},
        {"--presize", FLAG_INT, &presize, "fastai item resize (default 460)"},
        {"--min-scale", FLAG_FLOAT, &min_scale, "fastai random resized crop min scale (default 0.75)"},
        {"--threads", FLAG_INT, &threads, "worker threads (default: cores)"},
        {"--batch", FLAG_INT, &batch, "batch size (default 64)"},
        {"--batches", FLAG_INT, &batches, "batches timed per epoch at most (default 30)"},
        {"--epochs", FLAG_INT, &epochs, "epochs; the first is untimed warm-up (default 2)"},
        {0},
    };
    const char *pos[1];
    int npos;
    cli_parse("bench-loader", "--data PATH [options]", argc, argv, 2, flags, pos, 0, &npos);
    TransformKind kind;
    if (!data || transform_kind_parse(transform, &kind) || (strcmp(format, "folder") && strcmp(format, "csv")) || epochs < 2) {
        fprintf(stderr, "train bench-loader: give --data, a known --format and --transform, and --epochs >= 2\n");
        return 2;
    }
    DatasetSpec ds = {!strcmp(format, "csv") ? DATA_CSV : DATA_FOLDER, data, "train", "val", "train.csv", "train_images", 0.2f, 1, 1, NULL};
    Dataset d;
    char err[512];
    if (dataset_open(&ds, 0, &d, err, sizeof err)) die("bench-loader: %s", err);
    LoaderSpec ls = {0};
    ls.samples = d.train;
    ls.count = d.ntrain;
    ls.tf = transform_defaults(kind, size, 1);
    if (kind == TF_FASTAI) {
        ls.tf.presize = presize;
        ls.tf.min_scale = min_scale;
    }
    ls.batch = batch;
    ls.shuffle = 1;
    ls.drop_last = 1;
    ls.threads = threads;
    ls.seed = 1;
    ls.format = BATCH_F32;
    Loader *L = loader_create(&ls, err, sizeof err);
    if (!L) die("bench-loader: %s", err);
    double best = 0;
    long images = 0;
    for (int e = 0; e < epochs; e++) {
        loader_start_epoch(L, e, 0);
        double t0 = now_seconds();
        long n = 0;
        const Batch *b;
        for (int i = 0; i < batches && (b = loader_next(L)); i++) n += b->n;
        double rate = n / (now_seconds() - t0);
        if (e > 0 && rate > best) best = rate;
        images += n;
    }
    int used = loader_threads(L);
    printf("bench-loader data=%s transform=%s size=%d threads=%d images=%ld img_per_s=%.0f img_per_s_per_thread=%.0f bad=%d\n",
           data, transform_kind_name(kind), size, used, images, best, best / used, loader_bad_images(L));
    loader_destroy(L);
    dataset_free(&d);
    return 0;
}
