/* train/checkpoint_model.c: a saved model read back for use (checkpoint_model.h), shared by
 * `train eval` (eval_checkpoint.c) and `train predict` (predict.c): checked before anything heavy,
 * then built and loaded, its weights checked for inf and NaN. */
#include "train/checkpoint_model.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "ckpt/checkpoint.h"

int checkpoint_info(const char *ck, const StFile *hdr, CheckpointInfo *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    const char *format = st_meta(hdr, "format"), *arch_m = st_meta(hdr, "arch"), *classes_m = st_meta(hdr, "classes");
    const char *stage_m = st_meta(hdr, "stage"), *epochs_m = st_meta(hdr, "epochs_done");
    char *end = NULL;
    long classes = classes_m ? strtol(classes_m, &end, 10) : 0;
    if (format && !strcmp(format, CKPT_TRAIN_FORMAT))
        return error_at(err, errlen, ck, "this is the training state (optimizer moments) of a checkpoint; give the model file beside it");
    if (!arch_m || !classes_m || !end || *end || classes < 1 || classes > INT_MAX)
        return error_at(err, errlen, ck, "no usable 'arch' and 'classes' metadata: not a model file written by cnntrain");
    if (strlen(arch_m) >= sizeof out->arch) return error_at(err, errlen, ck, "unknown architecture '%.40s...'", arch_m);
    snprintf(out->arch, sizeof out->arch, "%s", arch_m);
    out->classes = (int)classes;
    snprintf(out->stage, sizeof out->stage, "%s", stage_m ? stage_m : "");
    snprintf(out->epochs, sizeof out->epochs, "%s", epochs_m ? epochs_m : "");
    return 0;
}

char **names_list(const char *joined, int *n) {
    *n = 0;
    if (!joined) return NULL;
    int cap = 16;
    char **names = xmalloc((size_t)cap * sizeof *names);
    for (const char *p = joined; *joined;) { /* "" is no class at all, not one unnamed class */
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (*n == cap) names = xrealloc(names, (size_t)(cap *= 2) * sizeof *names);
        names[*n] = xmalloc(len + 1);
        memcpy(names[*n], p, len);
        names[(*n)++][len] = 0;
        if (!nl) break;
        p = nl + 1;
    }
    return names;
}

void names_list_free(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* Weights holding inf or NaN (a run that diverged) give a NaN loss and chance accuracy: refused,
 * naming the first tensor, before any work. */
static int check_finite(const char *ck, const Model *m, const float *params, const float *stats, char *err, size_t errlen) {
    for (int i = 0; i < m->nparams; i++)
        for (size_t k = 0; k < m->params[i].count; k++) {
            float v = params[m->params[i].offset + k];
            if (!isfinite(v))
                return error_at(err, errlen, ck, "%s holds inf or NaN values (%s at index %zu): these weights are broken "
                                "(saved from a run that diverged?)", m->params[i].name, isnan(v) ? "NaN" : "inf", k);
        }
    for (int i = 0; i < m->nnodes; i++)
        for (int k = 0; m->nodes[i].op == OP_BN && k < 2 * m->nodes[i].features; k++)
            if (!isfinite(stats[m->nodes[i].stat + (size_t)k]))
                return error_at(err, errlen, ck, "%s.%s holds inf or NaN values: these weights are broken (saved from a run "
                                "that diverged?)", m->nodes[i].name, k < m->nodes[i].features ? "running_mean" : "running_var");
    return 0;
}

Model *checkpoint_model(const char *ck, const CheckpointInfo *info, float **params, float **stats, char *err, size_t errlen) {
    char msg[1024];
    *params = *stats = NULL;
    Model *m = model_build(info->arch, info->classes, msg, sizeof msg);
    if (!m) {
        error_at(err, errlen, ck, "%s", msg);
        return NULL;
    }
    *params = xmalloc((m->param_floats + 1) * sizeof(float));
    *stats = xmalloc((m->stat_floats + 1) * sizeof(float));
    if (ckpt_load(ck, m, *params, *stats, err, errlen) || check_finite(ck, m, *params, *stats, err, errlen)) {
        free(*params);
        free(*stats);
        *params = *stats = NULL;
        model_free(m);
        return NULL;
    }
    return m;
}

const char *checkpoint_trained_text(const CheckpointInfo *info, char *buf, size_t n) {
    *buf = 0;
    if (*info->stage || *info->epochs)
        snprintf(buf, n, " (stage %s, %s epoch%s done)", *info->stage ? info->stage : "?", *info->epochs ? info->epochs : "?",
                 strcmp(info->epochs, "1") ? "s" : "");
    return buf;
}
