/* cmd/demo_data.c: `train demo-data`: write the synthetic shapes task as a small JPEG image-folder
 * data set, to try the real data path (listing, decoding, augmentation) without a download. */
#include <stdio.h>

#include "cmd/cli.h"
#include "cmd/commands.h"
#include "pipeline/demo_data.h"
#include "pipeline/synthetic.h"
#include "base/util.h"

int cmd_demo_data(int argc, char **argv) {
    const char *out = "data/demo";
    int train = 100, valid = 20, size = 64, seed = 1;
    const Flag flags[] = {
        {"--out", FLAG_STR, &out, "output folder (default data/demo)"},
        {"--train", FLAG_INT, &train, "training images per class (default 100)"},
        {"--valid", FLAG_INT, &valid, "validation images per class (default 20)"},
        {"--size", FLAG_INT, &size, "image side in pixels (default 64)"},
        {"--seed", FLAG_INT, &seed, "random seed: the same seed writes the same images (default 1)"},
        {0},
    };
    int npos;
    cli_parse("demo-data", "[--out DIR] [--train N] [--valid N] [--size S] [--seed N]", argc, argv, 2, flags, NULL,
              0, &npos);
    char err[512];
    double t0 = now_seconds();
    if (demo_data_write(out, train, valid, size, (uint64_t)(unsigned)seed, err, sizeof err)) {
        fprintf(stderr, "train demo-data: %s\n", err);
        return 1;
    }
    printf("wrote %d images (%d classes x %d train + %d valid, %dx%d) to %s/{train,val}/<class>/ in %.1f s\n",
           SYNTH_CLASSES * (train + valid), SYNTH_CLASSES, train, valid, size, size, out, now_seconds() - t0);
    return 0;
}
