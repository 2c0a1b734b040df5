/* models.h: the ResNet family builders behind the registry (models/registry.c). */
#ifndef CNN_MODELS_H
#define CNN_MODELS_H

#include "net/model.h"

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

/* The networks up to, not including, their global pooling (what fastai's create_body keeps).
 * Return the value entering the pool and set *channels to its width. resnet_body names modules as
 * torchvision does (seq 0: "conv1", "bn1", "layer1.0.conv1") or as children of fastai's body, the
 * nn.Sequential of torchvision's children under "0." (seq 1: "0.0", "0.1", "0.4.0.conv1");
 * xresnet_body puts prefix ("" or "0.") before fastai's own module numbers. */
int resnet_body(Model *, const ArchSpec *spec, int seq, int *channels);
int xresnet_body(Model *, const ArchSpec *spec, const char *prefix, int *channels);

/* fastai's cnn_learner model, nn.Sequential(body, create_head(...)) with create_head's defaults and
 * a hidden width (fastai's lin_ftrs, 512 by default): body "0.*" as above; head
 * 1.0 AdaptiveConcatPool2d [max, avg], 1.1 Flatten, 1.2 BatchNorm1d(2nf), 1.3 Dropout(0.25),
 * 1.4 Linear(2nf, hidden, bias=False), 1.5 ReLU, 1.6 BatchNorm1d(hidden), 1.7 Dropout(0.5),
 * 1.8 Linear(hidden, classes, bias=False). Param.group is fastai's split (ngroups 3): 0 = body[:6]
 * (resnet: stem through layer2) or body[:3] (xresnet: the stem convs), 1 = the rest of the body,
 * 2 = the head. Init: the body's own (torchvision's or fastai's), the head's as create_head. */
Model *cnn_learner_build(const char *name, int classes, const ArchSpec *spec, int torchvision_body, int hidden);

#endif
