/* registry.c: every model by name. */
#include "models.h"

#include <stdio.h>
#include <string.h>

#define STEM_X {32, 32, 64}
#define STEM_TV {0, 0, 64}
#define WIDTHS {64, 128, 256, 512}
#define TINY {1, {1, 1, 1, 1}, {8, 8, 16}, {16, 32, 64, 128}}

/* XRESNET, RESNET: the networks themselves; *_HEAD: fastai's cnn_learner model on that body. */
enum { XRESNET, RESNET, XRESNET_HEAD, RESNET_HEAD };
#define HIDDEN 512 /* create_head's default lin_ftrs */

static const struct {
    ModelEntry entry;
    int kind;
    ArchSpec spec;
} models[] = {
    {{"xresnet18", "fastai v2 XResNet-18 (basic blocks 2-2-2-2)"}, XRESNET, {1, {2, 2, 2, 2}, STEM_X, WIDTHS}},
    {{"xresnet34", "fastai v2 XResNet-34 (basic blocks 3-4-6-3)"}, XRESNET, {1, {3, 4, 6, 3}, STEM_X, WIDTHS}},
    {{"xresnet50", "fastai v2 XResNet-50 (bottlenecks 3-4-6-3)"}, XRESNET, {4, {3, 4, 6, 3}, STEM_X, WIDTHS}},
    {{"xresnet101", "fastai v2 XResNet-101 (bottlenecks 3-4-23-3)"}, XRESNET, {4, {3, 4, 23, 3}, STEM_X, WIDTHS}},
    /* for tests, smoke runs and soak runs: fastai's structure at an eighth of the width, one block per stage */
    {{"xresnet_tiny", "XResNet with blocks 1-1-1-1 and widths 16-128 (tests and quick runs)"}, XRESNET, TINY},
    {{"resnet18", "torchvision ResNet-18"}, RESNET, {1, {2, 2, 2, 2}, STEM_TV, WIDTHS}},
    {{"resnet34", "torchvision ResNet-34"}, RESNET, {1, {3, 4, 6, 3}, STEM_TV, WIDTHS}},
    {{"resnet50", "torchvision ResNet-50 v1.5"}, RESNET, {4, {3, 4, 6, 3}, STEM_TV, WIDTHS}},
    {{"resnet101", "torchvision ResNet-101 v1.5"}, RESNET, {4, {3, 4, 23, 3}, STEM_TV, WIDTHS}},
    /* fastai's cnn_learner(dls, arch): the body up to its pooling + create_head (concat pool, BN, dropout,
     * 512-wide hidden layer); state-dict names "0.*" (body) and "1.*" (head) */
    {{"xresnet18_fastai_head", "cnn_learner model: XResNet-18 body + fastai's head"}, XRESNET_HEAD,
     {1, {2, 2, 2, 2}, STEM_X, WIDTHS}},
    {{"xresnet34_fastai_head", "cnn_learner model: XResNet-34 body + fastai's head"}, XRESNET_HEAD,
     {1, {3, 4, 6, 3}, STEM_X, WIDTHS}},
    {{"xresnet50_fastai_head", "cnn_learner model: XResNet-50 body + fastai's head"}, XRESNET_HEAD,
     {4, {3, 4, 6, 3}, STEM_X, WIDTHS}},
    {{"xresnet_tiny_fastai_head", "cnn_learner model: xresnet_tiny body + fastai's head"}, XRESNET_HEAD, TINY},
    {{"resnet18_fastai_head", "cnn_learner model: torchvision ResNet-18 body + fastai's head"}, RESNET_HEAD,
     {1, {2, 2, 2, 2}, STEM_TV, WIDTHS}},
    {{"resnet34_fastai_head", "cnn_learner model: torchvision ResNet-34 body + fastai's head"}, RESNET_HEAD,
     {1, {3, 4, 6, 3}, STEM_TV, WIDTHS}},
    {{"resnet50_fastai_head", "cnn_learner model: torchvision ResNet-50 body + fastai's head"}, RESNET_HEAD,
     {4, {3, 4, 6, 3}, STEM_TV, WIDTHS}},
    {{"resnet101_fastai_head", "cnn_learner model: torchvision ResNet-101 body + fastai's head"}, RESNET_HEAD,
     {4, {3, 4, 23, 3}, STEM_TV, WIDTHS}},
};
#define NMODELS ((int)(sizeof models / sizeof models[0]))

const ModelEntry *model_registry(int *count) {
    static ModelEntry entries[NMODELS];
    for (int i = 0; i < NMODELS; i++) entries[i] = models[i].entry;
    *count = NMODELS;
    return entries;
}

Model *model_build(const char *name, int classes, char *err, size_t errlen) {
    for (int i = 0; i < NMODELS; i++) {
        if (strcmp(models[i].entry.name, name)) continue;
        if (classes < 1) {
            snprintf(err, errlen, "model '%s': the number of classes must be at least 1 (got %d)", name, classes);
            return NULL;
        }
        const ArchSpec *spec = &models[i].spec;
        switch (models[i].kind) {
        case XRESNET: return xresnet_build(name, classes, spec);
        case RESNET: return resnet_build(name, classes, spec);
        default: return cnn_learner_build(name, classes, spec, models[i].kind == RESNET_HEAD, HIDDEN);
        }
    }
    int n = snprintf(err, errlen, "unknown model '%s'; choose one of:", name);
    for (int i = 0; i < NMODELS && n > 0 && (size_t)n < errlen; i++)
        n += snprintf(err + n, errlen - (size_t)n, " %s", models[i].entry.name);
    return NULL;
}
