/* fuzz_csv.c: dataset_open on the CSV layout, with the input as train.csv of a data folder whose
 * train_images/ holds a few files, a sub-folder and a folder named like an image, next to a file
 * outside it. Listed or refused, never crashed on: every listed image is a regular file inside
 * train_images (no ".." component), every label a class, and an error names the data folder. */
#include "fuzz.h"

#include <sys/stat.h>

#include "pipeline/dataset.h"

#ifndef FUZZ_ENTRY
#define FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

static char csv_root[600], csv_images[700];

static void csv_setup(void) {
    char p[800];
    snprintf(csv_root, sizeof csv_root, "%s/data", fuzz_dir());
    snprintf(csv_images, sizeof csv_images, "%s/train_images", csv_root);
    mkdir(csv_root, 0755);
    mkdir(csv_images, 0755);
    const char *files[] = {"a.jpg", "b.jpg", "1.jpg", "2.jpg", "10.jpg", "x y.jpg", "sub/c.jpg"};
    snprintf(p, sizeof p, "%s/sub", csv_images);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/dir.jpg", csv_images);
    mkdir(p, 0755);
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(p, sizeof p, "%s/%s", csv_images, files[i]);
        fuzz_write(p, "", 0);
    }
    snprintf(p, sizeof p, "%s/outside.jpg", csv_root);
    fuzz_write(p, "", 0);
}

static void csv_check_split(const Dataset *ds, const Sample *s, int n) {
    size_t k = strlen(csv_images);
    for (int i = 0; i < n; i++) {
        const char *path = s[i].path;
        FUZZ_CHECK(!strncmp(path, csv_images, k) && path[k] == '/', "listed outside the images folder: %s", path);
        FUZZ_CHECK(!strstr(path + k, "/../") && strcmp(path + strlen(path) - 3, "/.."), "a .. component: %s", path);
        struct stat st;
        FUZZ_CHECK(stat(path, &st) == 0 && S_ISREG(st.st_mode), "listed a missing or non-regular file: %s", path);
        FUZZ_CHECK(s[i].label >= 0 && s[i].label < ds->nclasses, "label %d of %d classes", s[i].label, ds->nclasses);
    }
}

int FUZZ_ENTRY(const uint8_t *data, size_t size);
int FUZZ_ENTRY(const uint8_t *data, size_t size) {
    if (!csv_root[0]) csv_setup();
    char path[800], err[1024];
    snprintf(path, sizeof path, "%s/train.csv", csv_root);
    fuzz_write(path, data, size);
    for (int strict = 0; strict < 2; strict++) {
        DatasetSpec spec = {.format = DATA_CSV, .root = csv_root, .csv = "train.csv", .images_dir = "train_images",
                            .valid_pct = 0.5f, .seed = size};
        Dataset ds;
        err[0] = 0;
        if (dataset_open(&spec, strict, &ds, err, sizeof err)) {
            FUZZ_CHECK(fuzz_names(err, csv_root), "the error does not name the data folder: %s", err);
            FUZZ_CHECK(!ds.train && !ds.valid && !ds.classes, "a failed open left samples behind");
            continue;
        }
        FUZZ_CHECK(ds.ntrain > 0 && ds.nvalid > 0 && ds.nclasses > 0, "an empty split or no classes");
        FUZZ_CHECK(!strict || ds.skipped == 0, "strict, yet %d rows left out", ds.skipped);
        csv_check_split(&ds, ds.train, ds.ntrain);
        csv_check_split(&ds, ds.valid, ds.nvalid);
        dataset_free(&ds);
    }
    return 0;
}
