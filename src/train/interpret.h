/* train/interpret.h: fastai's ClassificationInterpretation over one evaluation pass (evaluate.h's
 * EvalRows): the confusion matrix, per-class precision / recall / accuracy, most_confused, the
 * top losses and top-k accuracy; and interpret_write, which writes them all (CSV, confusion.png,
 * top_losses.jpg, show_results.jpg) for `train eval --interpret` and the interpret stage.
 *
 * Use:
 *
 *     eval_pass(&ev, L, 0, 0.0f, &(EvalRows){probs, labels, cap});   // a loader without shuffle
 *     interp_loader_order(L, nsamples, r.count, sample, err, errlen); // row i is samples[sample[i]]
 *     InterpretSpec s = {...};
 *     interpret_write(&s, err, errlen);
 */
#ifndef CNN_INTERPRET_H
#define CNN_INTERPRET_H

#include <stddef.h>
#include <stdint.h>

#include "pipeline/augment.h"
#include "pipeline/dataset.h"
#include "pipeline/loader.h"

typedef struct {
    int classes, count;
    int *confusion;     /* classes x classes, [actual * classes + predicted] (fastai: rows actual) */
    int *predicted;     /* per image: the argmax class (the first of equal maxima, as torch.argmax) */
    float *loss;        /* per image: -log p(actual), plain cross-entropy */
    float *confidence;  /* per image: p(predicted), the probability plot_top_losses shows */
    int correct;        /* the diagonal's sum */
} Interpretation;

/* From count rows of softmax probabilities and their labels (each in [0, classes)). */
void interp_compute(const float *probs, const int32_t *labels, int count, int classes, Interpretation *out);
void interp_free(Interpretation *);

/* Images whose label is among the k most probable classes (fastai's top_k_accuracy); equal
 * probabilities rank by class index, as argmax does, so k = 1 counts interp_compute's correct. */
int interp_topk_correct(const float *probs, const int32_t *labels, int count, int classes, int k);

typedef struct {
    double precision;   /* right / predicted as c (0 when none was: sklearn's zero_division) */
    double recall;      /* right / actually c (0 when there is none) */
    double f1;          /* their harmonic mean, as sklearn's classification_report */
    double accuracy;    /* the accuracy on c's images: cm[c][c] / support (= recall; the usual
                         * fastai recipe cm.diagonal() / cm.sum(1)) */
    int support;        /* images actually c */
    int predicted;      /* images predicted as c */
} ClassScores;

ClassScores interp_class_scores(const Interpretation *, int c);

typedef struct {
    int actual, predicted, count;
} ConfusedPair;

/* fastai's most_confused(min_val): the off-diagonal cells with count >= min_val, by count
 * descending; equal counts in row-major order (actual, then predicted), as Python's stable sort
 * of np.where leaves them. *out is allocated (free it); returns how many. */
int interp_most_confused(const Interpretation *, int min_val, ConfusedPair **out);

/* fastai's top_losses(k): the indices of the k largest losses, largest first (equal losses by
 * index). Returns min(k, count), the indices written to idx. */
int interp_top_losses(const Interpretation *, int k, int *idx);

/* Which sample each row of an eval_pass over L came from: L lists samples without shuffling, so
 * the rows are its samples in order less those it found bad. sample gets count entries. 0, or -1
 * with err when the counts disagree (a loader that shuffles, or more than one pass). */
int interp_loader_order(Loader *L, int nsamples, int count, int *sample, char *err, size_t errlen);

/* Images smaller than this are drawn enlarged in top_losses.jpg and show_results.jpg (image_grid.h),
 * as matplotlib shows them at the figure's size: room for titles of about 16 characters. */
#define INTERPRET_GRID_MIN_SIDE 192

/* Everything interpret_write needs: one pass's rows and where their images are. */
typedef struct {
    const float *probs;              /* count x classes */
    const int32_t *labels;
    const int *sample;               /* count: row i is samples[sample[i]] */
    int count, classes;
    const Sample *samples;
    const char *const *class_names;  /* classes names (NULL: numbers) */
    TransformSpec tf;                /* the transform the pass used (its size included): the grids show
                                      * the images as the model saw them */
    int threads;                     /* loader threads for the grids; 0 = one per core */
    int top_losses;                  /* k of plot_top_losses (fastai's examples: 9) */
    int show_results;                /* images in show_results.jpg (fastai's max_n: 9) */
    int min_val;                     /* most_confused's min_val (1) */
    uint64_t seed;                   /* which images show_results draws (fastai shuffles) */
    const char *dir;                 /* the output folder, which exists */
    const char *prefix;              /* file names start with it ("" for `train eval`) */
    int plot;                        /* draw confusion.png when gnuplot is installed */
    const char *title;               /* of confusion.png; NULL: "Confusion matrix" */
    /* each line of the summary (no newline); NULL: stdout */
    void (*say)(void *ctx, const char *line);
    void *say_ctx;
} InterpretSpec;

/* <prefix>confusion.csv, per_class.csv, most_confused.csv, confusion.png (+ confusion.gp),
 * top_losses.jpg and show_results.jpg in dir, and a summary (accuracy, error rate, top-5, the most
 * confused pairs) through say. A plot that fails is said and the rest stands. 0, or -1 with err. */
int interpret_write(const InterpretSpec *, char *err, size_t errlen);

#endif
