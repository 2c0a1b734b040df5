/* train/predict_input.h: private to train/predict*.c: what `train predict` was given, as a list of
 * image files: one image, every image under a folder, or the images a CSV's first column names. */
#ifndef CNN_PREDICT_INPUT_H
#define CNN_PREDICT_INPUT_H

#include <stddef.h>
#include <stdio.h>

#include "pipeline/dataset.h"

typedef enum { INPUT_IMAGE, INPUT_FOLDER, INPUT_CSV } InputKind;

typedef struct {
    InputKind kind;
    Sample *samples;     /* the image files, in order (folder: sorted paths; csv: row order); label 0 */
    char **ids;          /* per sample, its name in the output: the path as given (image, folder:
                          * below the folder for a submission), or the CSV's id */
    int n;
    char id_col[128], label_col[128]; /* csv: its first two column names ("label" when it has one) */
    char *images_dir;    /* csv: where its images were found */
    int ignored;         /* folder: files that are not images by their extension */
    int missing;         /* csv: rows whose image is not there (each reported on stderr) */
} PredictInput;

/* Lists input (image, folder or .csv); images_dir: the CSV's image folder, NULL to look for it.
 * 0, or -1 with "PATH: why" in err (nothing there, no image in a folder, a CSV without rows). */
int predict_input_open(const char *input, const char *images_dir, PredictInput *out, char *err, size_t errlen);
void predict_input_free(PredictInput *);

#endif
