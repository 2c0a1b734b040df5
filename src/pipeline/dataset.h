/* pipeline/dataset.h: the list of labelled image files of a data set, in either layout:
 *   folder: ROOT/<train_dir>/<class>/<image>, ROOT/<valid_dir>/<class>/<image>; class = parent folder
 *           name, classes sorted by name (fastai's parent_label + sorted vocab).
 *   csv:    ROOT/<csv> with columns image_id,label[,is_val] and images in ROOT/<images_dir>/ (the
 *           Kaggle layout); the validation split from is_val, else a seeded random valid_pct. Integer
 *           labels are class numbers 0..N-1 (output k is label k; a label that would renumber them,
 *           negative or past a gap, is refused); text labels are the sorted names of the training
 *           rows' labels (fastai's vocab). One image listed twice (by any spelling of its path, or
 *           a link) is listed once; with two labels, not at all.
 * A label map (DatasetSpec.label_map) adds display names; the classes stay as the data names them.
 * Listing checks names and labels but does not decode images (the loader skips and counts bad ones). */
#ifndef CNN_DATASET_H
#define CNN_DATASET_H

#include <stddef.h>
#include <stdint.h>

typedef enum { DATA_FOLDER, DATA_CSV } DataFormat;

typedef struct {
    DataFormat format;
    const char *root;
    const char *train_dir;   /* folder: "train" */
    const char *valid_dir;   /* folder: "val" */
    const char *csv;         /* csv: "train.csv" */
    const char *images_dir;  /* csv: "train_images" */
    float valid_pct;         /* csv without is_val: fraction for validation (e.g. 0.2) */
    uint64_t seed;           /* for valid_pct and fraction */
    float fraction;          /* keep this fraction of each class in each split (0 or 1 = all) */
    /* display names of the classes (label_map.h), relative to root; NULL or "": csv: the
     * LABEL_MAP_DEFAULT file beside the label file when there is one, folder: none; "none": none */
    const char *label_map;
} DatasetSpec;

typedef struct {
    char *path;   /* full path of the image file */
    int label;    /* index into classes */
} Sample;

typedef struct {
    char **classes;   /* names, in label order */
    int nclasses;
    char **labels;    /* nclasses display names from the label map (the class name where it has none),
                       * or NULL without a map */
    char *label_map;  /* the map's path, or NULL */
    Sample *train, *valid;
    int ntrain, nvalid;
    int skipped;      /* CSV rows or files refused while listing (each reported on stderr) */
} Dataset;

/* Returns 0, or -1 with "file[:line]: what is wrong" in err when nothing usable can be listed
 * (missing folder or CSV, no classes, an empty split). Problems with single entries (a CSV row
 * with a missing file or a bad label, an empty class folder, an image id that leaves the images
 * folder) are printed to stderr with file and line, counted in skipped, and left out; with
 * strict != 0 the first one is an error instead. */
int dataset_open(const DatasetSpec *, int strict, Dataset *out, char *err, size_t errlen);
void dataset_free(Dataset *);

#endif
