/* train/run_view.h: what a saved model's run used, read back from the config.ini its run folder
 * holds beside it (`train predict`, `train eval`): the data set and its split, the validation and
 * training transforms and the size of the stage that trained it, the image limits, the label map. */
#ifndef CNN_RUN_VIEW_H
#define CNN_RUN_VIEW_H

#include "pipeline/augment.h"
#include "train/config.h"

typedef struct {
    Config *cfg;                /* the run's resolved config; NULL when there is no usable one */
    const StageConfig *stage;   /* the training stage whose transforms are used (in cfg) */
    TransformSpec valid, aug;   /* its validation transform; its training transform (TTA) */
    int trained_size;           /* the side that stage trained at */
    long max_pixels;            /* [data] max_megapixels and max_file_mb, as the loader takes them */
    long long max_file_bytes;
    char path[1200];            /* the config.ini looked for */
    char source[1400];          /* "the run's (runs/x/config.ini, stage 'full')" */
    char *label_map;            /* the run's label map file, or NULL */
} RunView;

/* Reads CK's folder's config.ini. The stage used is the last training stage at or before the one
 * named stage (the checkpoint's metadata "stage"; "" or unknown: the run's last training stage).
 * Returns 1 with v filled, or 0 with only v->path set when there is no config.ini (silently) or
 * it is not usable (a line on stderr says why). run_view_free frees v either way. */
int run_view_read(const char *ck, const char *stage, RunView *v);
void run_view_free(RunView *v);

/* "Resize(224) + CenterCrop(224)", "squash + CenterCrop(128)", ... */
const char *transform_text(const TransformSpec *t, char *buf, size_t n);

#endif
