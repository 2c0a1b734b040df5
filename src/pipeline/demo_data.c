/* pipeline/demo_data.c: the synthetic shapes task (synthetic.c) written out as an image-folder data set. */
#include "pipeline/demo_data.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/image.h"
#include "base/rng.h"
#include "pipeline/synthetic.h"
#include "base/util.h"

static const char *const split_names[2] = {"train", "val"};

/* Is name "<i>.jpg" with 0 <= i < count, as written by this function (no sign, no leading zeros)? */
static int ours(const char *name, int count) {
    if (name[0] < '0' || name[0] > '9' || (name[0] == '0' && name[1] != '.')) return 0;
    char *end;
    long i = strtol(name, &end, 10);
    return !strcmp(end, ".jpg") && i < count;
}

/* Create dir and refuse it if it holds anything but files this run writes. */
static int prepare_folder(const char *dir, int count, char *err, size_t errlen) {
    if (make_dirs(dir)) return error_at(err, errlen, dir, "cannot create the folder: %s", strerror(errno));
    DIR *d = opendir(dir);
    if (!d) return error_at(err, errlen, dir, "cannot list the folder: %s", strerror(errno));
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && !ours(e->d_name, count)) {
            rc = error_at(err, errlen, dir,
                          "already holds '%s', which this run would not write (remove the folder or choose "
                          "another output folder)", e->d_name);
            break;
        }
    closedir(d);
    return rc;
}

int demo_data_write(const char *root, int per_class_train, int per_class_valid, int size, uint64_t seed, char *err,
                    size_t errlen) {
    if (!root || !*root) return error_at(err, errlen, "demo data", "no output folder given");
    if (per_class_train < 0 || per_class_valid < 0 || per_class_train + per_class_valid == 0)
        return error_at(err, errlen, root, "the image counts per class must be >= 0 and not both 0 (got %d and %d)",
                        per_class_train, per_class_valid);
    if (size < 8 || size > 4096) return error_at(err, errlen, root, "image size %d is not in 8..4096", size);

    Rng base;
    rng_seed(&base, seed);
    Image img = {size, size, xmalloc((size_t)size * size * 3)};
    size_t plen = strlen(root) + 64;
    char *path = xmalloc(plen);
    int rc = 0;
    for (int s = 0; s < 2 && !rc; s++) {
        int count = s ? per_class_valid : per_class_train;
        for (int c = 0; c < SYNTH_CLASSES && !rc && count; c++) {
            snprintf(path, plen, "%s/%s/%s", root, split_names[s], synth_class_names[c]);
            if ((rc = prepare_folder(path, count, err, errlen))) break;
            size_t dl = strlen(path);
            for (int i = 0; i < count && !rc; i++) {
                /* One stream per image, keyed by split, class and index: independent of the counts. */
                Rng r = rng_split(&base, ((uint64_t)s << 48) | ((uint64_t)c << 32) | (uint64_t)i);
                synth_image(&r, c, size, img.rgb);
                snprintf(path + dl, plen - dl, "/%d.jpg", i);
                rc = jpeg_write_file(path, &img, 90, err, errlen);
                path[dl] = 0;
            }
        }
    }
    free(path);
    image_free(&img);
    return rc;
}
