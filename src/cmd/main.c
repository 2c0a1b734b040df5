/* cmd/main.c: ./train's entry point: dispatch to a subcommand. */
#include <stdio.h>
#include <string.h>

#include "backend/backend.h"
#include "cmd/commands.h"
#include "train/config.h"
#include "cpu/gemm.h"
#include "dist/dist.h"
#include "pipeline/image.h"

#define CNNTRAIN_VERSION "0.1.0"

static void usage(FILE *f) {
    fprintf(f,
            "cnntrain %s: train ResNet / xResNet image classifiers\n"
            "usage:\n"
            "  train CONFIG.ini [--force] [--set section.key=value ...]\n"
            "                                           train and evaluate as the config's stages say\n"
            "                                           (--force: replace the run in an existing [run] name folder)\n"
            "  train --resume RUN_FOLDER [--set run.key=value ...]\n"
            "                                           go on with a stopped run (Ctrl-C, SIGTERM, run.stop_after)\n"
            "  train --help-config                      every config section and key\n"
            "  train smoke [--model M] [--steps N] ...   train on generated images (no download), save a checkpoint\n"
            "  train info MODEL [--classes N] [--size S] layers, output shapes, parameters, GFLOPs\n"
            "  train bench MODEL [--size S] [--batch B] training speed and peak memory\n"
            "  train bench-loader --data PATH [--size S] [--threads N]\n"
            "                                           images/s decoded and augmented, per thread\n"
            "  train eval CKPT [--data PATH] [--sizes 64,128,224] [--resize-ratio R | --center-crop] [--tta]\n"
            "                                           loss and accuracy per test size (default: as the run validated)\n"
            "  train lr_find CONFIG [--stage NAME] [--start 1e-7] [--end 10] [--iters 100] [--from CKPT] [--out DIR]\n"
            "                                           fastai's LR range test: lr_find.csv, lr_find.png, suggestions\n"
            "  train predict CKPT IMAGE|FOLDER|CSV [--top-k K] [--size S] [--tta] [--out preds.csv]\n"
            "                                           class names and top-k probabilities: stdout, a CSV, a submission\n"
            "  train eval CKPT [--data PATH] [--sizes 224] --interpret [--top-losses K] [--min-val N]\n"
            "                                           + confusion matrix, per-class scores, most_confused, top losses\n"
            "  train show-batch --data PATH --out FILE.jpg [--split train|valid] [--n N] [--cols C] ...\n"
            "                                           one augmented batch as a titled image grid\n"
            "  train demo-data [--out DIR] [--train N] [--valid N] [--size S]\n"
            "                                           write a small JPEG data set of generated shapes\n"
            "  train --version                          version and the backends built in\n"
            "Each command takes --help.\n",
            CNNTRAIN_VERSION);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        char mpi[256], nccl[128];
        dist_mpi_version(mpi, sizeof mpi);
        dist_nccl_version(nccl, sizeof nccl);
        printf("cnntrain %s\nbackends: %s\ncpu GEMM: %s\njpeg: %s\npng: %s\nwebp: %s\nmpi: %s\nnccl: %s\n", CNNTRAIN_VERSION,
               backend_list(), sgemm_name(), jpeg_library(), png_library(), webp_library(), mpi, nccl);
        return 0;
    }
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--help-config")) {
        config_help(stdout);
        return 0;
    }
    size_t len = strlen(cmd);
    if ((len > 4 && !strcmp(cmd + len - 4, ".ini")) || !strcmp(cmd, "--resume")) {
        /* data-parallel training: the launcher's process group (mpirun, srun), or one process */
        dist_init(&argc, &argv);
        int rc = cmd_train(argc, argv);
        if (rc == 0) dist_finalize();
        return rc;
    }
    if (!strcmp(cmd, "info")) return cmd_info(argc, argv);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc, argv);
    if (!strcmp(cmd, "smoke")) return cmd_smoke(argc, argv);
    if (!strcmp(cmd, "demo-data")) return cmd_demo_data(argc, argv);
    if (!strcmp(cmd, "bench-loader")) return cmd_bench_loader(argc, argv);
    if (!strcmp(cmd, "show-batch")) return cmd_show_batch(argc, argv);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc, argv);
    if (!strcmp(cmd, "lr_find") || !strcmp(cmd, "lr-find")) return cmd_lr_find(argc, argv);
    if (!strcmp(cmd, "predict")) return cmd_predict(argc, argv);
    fprintf(stderr, "train: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
