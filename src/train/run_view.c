/* train/run_view.c: a saved model's run read back from the config.ini beside it (run_view.h). */
#include "train/run_view.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/util.h"
#include "pipeline/label_map.h"

const char *transform_text(const TransformSpec *t, char *buf, size_t n) {
    switch (t->kind) {
    case TF_RESIZE_CENTER_CROP:
        if (t->resize_ratio == 1.0f) snprintf(buf, n, "Resize(%d) + CenterCrop(%d)", t->size, t->size);
        else snprintf(buf, n, "Resize(round(%g*%d)) + CenterCrop(%d)", (double)t->resize_ratio, t->size, t->size);
        break;
    case TF_CENTER_CROP: snprintf(buf, n, "CenterCrop(%d) of the unresized image", t->size); break;
    case TF_SQUASH_CENTER_CROP: snprintf(buf, n, "squash + CenterCrop(%d)", t->size); break;
    case TF_FASTAI:
        if (t->presize) snprintf(buf, n, "fastai Resize(%d) (centre) + Resize(%d)", t->presize, t->size);
        else snprintf(buf, n, "fastai Resize(%d) (centre)", t->size);
        break;
    default: snprintf(buf, n, "%s %d", transform_kind_name(t->kind), t->size);
    }
    return buf;
}

int run_view_read(const char *ck, const char *stage, RunView *v) {
    memset(v, 0, sizeof *v);
    const char *slash = strrchr(ck, '/');
    snprintf(v->path, sizeof v->path, "%.*s%sconfig.ini", slash ? (int)(slash - ck) : 0, ck, slash ? "/" : "");
    struct stat st;
    if (stat(v->path, &st)) return 0;
    char err[1024];
    Config *cfg = xmalloc(sizeof *cfg);
    if (config_load(v->path, NULL, 0, cfg, err, sizeof err)) {
        fprintf(stderr, "cnntrain: %s: not usable (%s)\n", v->path, err);
        free(cfg);
        return 0;
    }
    /* the last training stage at or before the checkpoint's own; without it, the last of all */
    int own = cfg->nstages;
    for (int i = 0; stage && i < cfg->nstages; i++)
        if (!strcmp(cfg->stages[i].name, stage)) own = i;
    const StageConfig *use = config_last_training(cfg, own + 1);
    if (!use) use = config_last_training(cfg, cfg->nstages);
    if (!use) {
        fprintf(stderr, "cnntrain: %s: no training stage: not used\n", v->path);
        config_free(cfg);
        free(cfg);
        return 0;
    }
    v->cfg = cfg;
    v->stage = use;
    v->valid = use->valid_tf;
    v->aug = use->train_tf;
    v->valid.train = 0;
    v->aug.train = 1;
    v->trained_size = use->size;
    v->max_pixels = (long)cfg->max_megapixels * 1000000L;
    v->max_file_bytes = (long long)cfg->max_file_mb * 1000000LL;
    snprintf(v->source, sizeof v->source, "the run's (%s, stage '%s')", v->path, use->name);
    int asked = 0;
    v->label_map = label_map_path(cfg->data.root, cfg->data.format == DATA_CSV, cfg->data.csv, cfg->data.label_map, &asked);
    return 1;
}

void run_view_free(RunView *v) {
    if (v->cfg) {
        config_free(v->cfg);
        free(v->cfg);
    }
    free(v->label_map);
    memset(v, 0, sizeof *v);
}
