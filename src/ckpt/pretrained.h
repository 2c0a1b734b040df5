/* ckpt/pretrained.h: starting weights for a model from another network's state dict (transfer learning).
 *
 * The file is a safetensors state dict: a torchvision ResNet (scripts/pth_to_safetensors.py converts
 * a .pth), or a checkpoint of ours (any model: xresnet, resnet, cnn_learner). Every tensor whose name
 * and shape match is copied; names are also tried in the related layouts, so a body moves between a
 * plain network and fastai's cnn_learner model, whose body is the network's children under "0.":
 *   torchvision  conv1.* bn1.* layerK.*   <->  0.0.* 0.1.* 0.(K+3).*
 *   xresnet      N.* (N = 0..7)            <->  0.N.*
 * The final classifier is skipped when its shape differs (another class count); the old classifier
 * of a plain network has no place in a cnn_learner model and is skipped too. A shape mismatch
 * anywhere else, or a file that lacks some of the model's convolutions, is an error (a different
 * architecture or depth), and then nothing is changed. Tensors the file does not provide keep the values
 * params / stats hold (the caller's fresh initialisation). */
#ifndef CNN_PRETRAINED_H
#define CNN_PRETRAINED_H

#include <stdio.h>

#include "net/model.h"
#include "ckpt/safetensors.h"

typedef struct {
    int nloaded, nnew, nskipped;
    char **loaded;   /* model tensor names; "name <- file name" where the file calls it otherwise */
    char **fresh;    /* model tensors the file does not provide: they keep their initial values */
    char **skipped;  /* file tensors not used: "name: why" */
    char *head_note; /* what was decided about a classifier of the model's shape, and why; or NULL */
} PretrainedReport;

/* params / stats: host arrays in our layout (param_floats / stat_floats floats), already
 * initialised; Node.batches_tracked is loaded too. label names the file in messages. rep may be
 * NULL. Returns 0, or -1 with a message in err (model, arrays and rep untouched). */
int pretrained_load(const StFile *f, const char *label, Model *m, float *params, float *stats,
                    PretrainedReport *rep, char *err, size_t errlen);
/* The same from a path. */
int pretrained_load_file(const char *path, Model *m, float *params, float *stats, PretrainedReport *rep,
                         char *err, size_t errlen);
/* pretrained_load_file, with a choice for a classifier of the model's shape ([model] pretrained_head,
 * PRETRAINED_HEAD_* in config.h; the functions above keep it): AUTO loads it when the file's
 * class_names are class_names (the data's, newline-joined), or when the file names no classes (a
 * torchvision file: the same count is all there is to go on, as timm does), and refuses when the
 * names differ (the same count, other classes: a classifier that would silently mean other
 * things); KEEP loads it whatever the names (saying when they differ); NEW never loads it (fastai's
 * cnn_learner: always a fresh head). What was decided goes into rep->head_note. */
int pretrained_load_file_head(const char *path, Model *m, float *params, float *stats, int head,
                              const char *class_names, PretrainedReport *rep, char *err, size_t errlen);

/* "pretrained: 320 tensors loaded (318 renamed), 14 new, 2 skipped", then the new and skipped
 * tensors one per line (and the loaded ones with verbose), each line after prefix. */
void pretrained_report_print(FILE *out, const PretrainedReport *rep, const char *prefix, int verbose);
void pretrained_report_free(PretrainedReport *rep);

#endif
