/* train/checkpoint_model.h: a saved model read back for use (`train eval`, `train predict`): the
 * header's checks (a model file of ours, not its training state; arch and classes), its class
 * lists, and the model built with its weights, refused when they hold inf or NaN. */
#ifndef CNN_CHECKPOINT_MODEL_H
#define CNN_CHECKPOINT_MODEL_H

#include <stddef.h>

#include "ckpt/safetensors.h"
#include "net/model.h"

typedef struct {
    char arch[64];
    int classes;
    char stage[128];    /* metadata "stage" and "epochs_done", "" when absent */
    char epochs[32];
} CheckpointInfo;

/* The header's arch and classes (hdr: st_read_header of path ck). 0, or -1 with "CK: why" in err:
 * a training-state file, no usable arch/classes, an architecture name too long to be one. */
int checkpoint_info(const char *ck, const StFile *hdr, CheckpointInfo *out, char *err, size_t errlen);

/* " (stage S, N epochs done)" from info, "" when the checkpoint says neither: for the first line
 * `eval` and `predict` print. Returns buf. */
const char *checkpoint_trained_text(const CheckpointInfo *info, char *buf, size_t n);

/* Metadata holding names joined by newlines (class_names, class_labels) as a malloc'd array of
 * *n malloc'd strings (NULL and 0 for NULL; "" is no name at all). names_list_free frees it. */
char **names_list(const char *joined, int *n);
void names_list_free(char **names, int n);

/* The model of info, built and loaded from ck, with its weights in *params and *stats (host
 * arrays, the caller frees them and model_free's the model). Weights holding inf or NaN (a run
 * that diverged) are refused, naming the first tensor. NULL with "CK: why" in err. */
Model *checkpoint_model(const char *ck, const CheckpointInfo *info, float **params, float **stats, char *err, size_t errlen);

#endif
