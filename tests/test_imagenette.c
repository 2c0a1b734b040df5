/* test_imagenette.c: the whole program on real photographs: xresnet18 on a fifth of the shared
 * 224-px Imagenette (stratified, fixed), 3 epochs of fit_one_cycle at 64 px then fine_tune at
 * 96 px, must reach an accuracy far above chance (10%). Skips, saying so, without ../shared/data. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define TEST_DIR_TEMPLATE "/tmp/cnn_imagenette_XXXXXX"
#include "testutil.h"

#include "train/config.h"
#include "train/train.h"

#define DATA "../shared/data/imagenette2-224"
/* 59.75% measured (2-core development machine, README "Tests"); the threshold is a little under it. */
#define MIN_ACCURACY 0.55f

static void test_progressive_fine_tune_on_imagenette(void **state) {
    (void)state;
    if (access(DATA "/train", R_OK) || access(DATA "/val", R_OK)) {
        printf("skipped: %s is not here\n", DATA);
        skip();
    }
    char path[1200], err[2048], run_dir[1024];
    snprintf(path, sizeof path, "%s/quick.ini", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "[data]\npath = " DATA "\nfraction = 0.2\n[model]\narch = xresnet18\n[run]\ndevice = cpu\nseed = 42\n"
            "out_dir = %s/runs\n"
            "[stage small]\ntype = fit_one_cycle\nepochs = 3\nlr = 3e-3\nsize = 64\nbatch = 64\ntransform = rrc\n"
            "scale_min = 0.35\nvalid_transform = resize\nvalid_resize_ratio = 1.14\n"
            "[stage large]\ntype = fine_tune\nepochs = 1\nlr = 1e-3\nsize = 96\n",
            dir);
    fclose(f);
    Config cfg;
    if (config_load(path, NULL, 0, &cfg, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(train_run(&cfg, NULL, run_dir, sizeof run_dir), 0);
    config_free(&cfg);

    snprintf(path, sizeof path, "%s/metrics.csv", run_dir);
    f = fopen(path, "r");
    assert_non_null(f);
    char line[512];
    float acc = 0, first = 0, last = 0;
    int rows = 0;
    while (fgets(line, sizeof line, f)) {
        char stage[64];
        int e, se;
        float tl, vl, a;
        if (sscanf(line, "%63[^,],%d,%d,%f,%f,%f", stage, &e, &se, &tl, &vl, &a) != 6) continue;
        if (!rows++) first = tl;
        last = tl;
        acc = a;
    }
    fclose(f);
    printf("imagenette (a fifth): train loss %.3f -> %.3f, final accuracy %.2f%% (threshold %.0f%%)\n", first, last,
           100 * acc, 100 * MIN_ACCURACY);
    assert_int_equal(rows, 5);
    assert_true(last < first);
    assert_true(acc >= MIN_ACCURACY);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_progressive_fine_tune_on_imagenette),
    };
    return cmocka_run_group_tests(tests, test_dir_setup, test_dir_teardown);
}
