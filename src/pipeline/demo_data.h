/* pipeline/demo_data.h: a small image-folder data set written as JPEGs from the synthetic generator, so the
 * whole data path (listing, decoding, augmentation, training) can be tried without a download. */
#ifndef CNN_DEMO_DATA_H
#define CNN_DEMO_DATA_H

#include <stddef.h>
#include <stdint.h>

/* Write ROOT/train/<class>/<i>.jpg (i = 0 .. per_class_train-1) and ROOT/val/<class>/<i>.jpg for
 * the SYNTH_CLASSES classes of synthetic.h, each image size x size, quality 90. The pixels of image
 * i of a class and split depend only on (seed, split, class, i), so a larger count adds images and
 * keeps the others. Folders are created as needed; a class folder that already holds a file this call
 * would not write (left from a run with larger counts, or anything else) is an error, so the set on
 * disk is always exactly the one asked for. Returns 0, or -1 with the message in err. */
int demo_data_write(const char *root, int per_class_train, int per_class_valid, int size, uint64_t seed, char *err,
                    size_t errlen);

#endif
