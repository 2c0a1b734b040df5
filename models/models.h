/* models.h: the ResNet family builders behind the registry (models/registry.c). */
#ifndef CNN_MODELS_H
#define CNN_MODELS_H

#include "model.h"

/* The shape of a ResNet. expansion 1 = basic blocks, 4 = bottlenecks. stem: the xresnet stem's
 * three conv widths (torchvision's single 7x7 stem conv uses stem[2]); stem[2] is the width
 * entering layer1. widths: each stage's inner width (its output is widths[i] * expansion). */
typedef struct {
    int expansion;
    int layers[4];
    int stem[3];
    int widths[4];
} ArchSpec;

/* fastai v2 XResNet: module names as fastai's nn.Sequential numbers them ("0.0.weight",
 * "4.0.convpath.0.0.weight", "5.0.idpath.1.0.weight", "11.weight"). */
Model *xresnet_build(const char *name, int classes, const ArchSpec *spec);
/* torchvision ResNet (v1.5, stride on the 3x3): names "conv1.weight", "layer1.0.downsample.0.weight", "fc.weight". */
Model *resnet_build(const char *name, int classes, const ArchSpec *spec);

#endif
