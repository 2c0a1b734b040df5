/* registry.c: every model by name. */
#include "models.h"

#include <stdio.h>
#include <string.h>

#define STEM_X {32, 32, 64}
#define STEM_TV {0, 0, 64}
#define WIDTHS {64, 128, 256, 512}

static const struct {
    ModelEntry entry;
    int torchvision;
    ArchSpec spec;
} models[] = {
    {{"xresnet18", "fastai v2 XResNet-18 (basic blocks 2-2-2-2)"}, 0, {1, {2, 2, 2, 2}, STEM_X, WIDTHS}},
    {{"xresnet34", "fastai v2 XResNet-34 (basic blocks 3-4-6-3)"}, 0, {1, {3, 4, 6, 3}, STEM_X, WIDTHS}},
    {{"xresnet50", "fastai v2 XResNet-50 (bottlenecks 3-4-6-3)"}, 0, {4, {3, 4, 6, 3}, STEM_X, WIDTHS}},
    {{"xresnet101", "fastai v2 XResNet-101 (bottlenecks 3-4-23-3)"}, 0, {4, {3, 4, 23, 3}, STEM_X, WIDTHS}},
    /* for tests, smoke runs and soak runs: fastai's structure at an eighth of the width, one block per stage */
    {{"xresnet_tiny", "XResNet with blocks 1-1-1-1 and widths 16-128 (tests and quick runs)"}, 0,
     {1, {1, 1, 1, 1}, {8, 8, 16}, {16, 32, 64, 128}}},
    {{"resnet18", "torchvision ResNet-18"}, 1, {1, {2, 2, 2, 2}, STEM_TV, WIDTHS}},
    {{"resnet34", "torchvision ResNet-34"}, 1, {1, {3, 4, 6, 3}, STEM_TV, WIDTHS}},
    {{"resnet50", "torchvision ResNet-50 v1.5"}, 1, {4, {3, 4, 6, 3}, STEM_TV, WIDTHS}},
    {{"resnet101", "torchvision ResNet-101 v1.5"}, 1, {4, {3, 4, 23, 3}, STEM_TV, WIDTHS}},
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
        return models[i].torchvision ? resnet_build(name, classes, &models[i].spec)
                                     : xresnet_build(name, classes, &models[i].spec);
    }
    int n = snprintf(err, errlen, "unknown model '%s'; choose one of:", name);
    for (int i = 0; i < NMODELS && n > 0 && (size_t)n < errlen; i++)
        n += snprintf(err + n, errlen - (size_t)n, " %s", models[i].entry.name);
    return NULL;
}
