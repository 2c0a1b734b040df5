/* train/predict.h: a saved model's predictions on new images (`train predict`, fastai's
 * learn.predict and get_preds on a test set): class names and top-k probabilities for one image
 * (stdout), a folder of images (a CSV of predictions) or a Kaggle-style CSV of image ids (a
 * submission). Images go through the loader with the transform the run validated with, read from
 * the run's config.ini beside the checkpoint. */
#ifndef CNN_PREDICT_H
#define CNN_PREDICT_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *checkpoint;
    /* an image file; a folder (every image under it, recursively); or a .csv whose first column
     * names images (a Kaggle sample_submission.csv or a data set's label file) */
    const char *input;
    int top_k;                /* classes per image (capped at the model's) */
    int size;                 /* 0: the run's validation size */
    int tta, tta_n;           /* fastai's tta(n, beta): the run's training transforms n times, */
    float tta_beta;           /* lerp(mean, plain, beta) (evaluate.h tta_pass_rows) */
    const char *out;          /* the CSV written; NULL: predictions.csv (folder), submission.csv (csv), none (image) */
    int force;                /* replace an --out file that is not a predictions file of ours */
    int submission;           /* a folder: write image_id,label (paths relative to it) instead */
    const char *images_dir;   /* csv: where its images are (NULL: test_images, train_images, images or the csv's
                               * folder: the first that holds its first image) */
    const char *label_map;    /* display names (label_map.h); NULL: the checkpoint's class_labels, else the run's */
    const char *device;       /* auto, cpu, cuda */
    int batch, threads;
    uint64_t seed;            /* TTA's random transforms */
} PredictOptions;

/* top_k 5, batch 64, device auto, tta_n 4, tta_beta 0.25. */
void predict_options_default(PredictOptions *);

/* Predict, print (the transform used and where it came from, the top-k of a single image, images/s,
 * bad images skipped) and write the CSV. 0, or -1 with the message in err. */
int predict_run(const PredictOptions *, char *err, size_t errlen);

/* The header of a predictions CSV with k top-k columns (a file that starts with "path,class,"
 * is one of ours and may be replaced). */
#define PREDICT_CSV_HEAD "path,class,probability"

#endif
