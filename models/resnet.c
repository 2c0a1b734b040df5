/* resnet.c: torchvision's ResNet v1.5 (7x7 stem, stride on the bottleneck's 3x3 conv). */
#include "models.h"

#include <stdio.h>

static int conv_bn(Model *m, const char *prefix, const char *conv, const char *bn, int in, int cin, int cout,
                   int k, int stride, int relu) {
    char name[NAME_LEN];
    module_name(name, "%s%s", prefix, conv);
    int v = net_conv(m, name, in, cin, cout, k, stride, k / 2);
    module_name(name, "%s%s", prefix, bn);
    v = net_bn(m, name, v, cout, 0);
    return relu ? net_relu(m, v) : v;
}

static int block(Model *m, const char *prefix, int in, int expansion, int inplanes, int planes, int stride) {
    int out = planes * expansion, v;
    if (expansion == 1) {
        v = conv_bn(m, prefix, "conv1", "bn1", in, inplanes, planes, 3, stride, 1);
        v = conv_bn(m, prefix, "conv2", "bn2", v, planes, planes, 3, 1, 0);
    } else {
        v = conv_bn(m, prefix, "conv1", "bn1", in, inplanes, planes, 1, 1, 1);
        v = conv_bn(m, prefix, "conv2", "bn2", v, planes, planes, 3, stride, 1);
        v = conv_bn(m, prefix, "conv3", "bn3", v, planes, out, 1, 1, 0);
    }
    int id = in;
    if (stride != 1 || inplanes != out) id = conv_bn(m, prefix, "downsample.0", "downsample.1", in, inplanes, out, 1, stride, 0);
    return net_relu(m, net_add(m, v, id));
}

int resnet_body(Model *m, const ArchSpec *s, int seq, int *channels) {
    int v = conv_bn(m, "", seq ? "0.0" : "conv1", seq ? "0.1" : "bn1", 0, 3, s->stem[2], 7, 2, 1);
    v = net_maxpool(m, v, 3, 2, 1); /* children 2 relu, 3 maxpool */
    int inplanes = s->stem[2];
    char prefix[NAME_LEN];
    for (int l = 0; l < 4; l++) {
        for (int b = 0; b < s->layers[l]; b++) {
            if (seq)
                module_name(prefix, "0.%d.%d.", 4 + l, b);
            else
                module_name(prefix, "layer%d.%d.", l + 1, b);
            v = block(m, prefix, v, s->expansion, inplanes, s->widths[l], (l > 0 && b == 0) ? 2 : 1);
            inplanes = s->widths[l] * s->expansion;
        }
    }
    *channels = inplanes;
    return v;
}

Model *resnet_build(const char *name, int classes, const ArchSpec *s) {
    Model *m = model_new(name, classes, 3);
    m->init_style = INIT_TORCHVISION;
    int channels, v = resnet_body(m, s, 0, &channels);
    v = net_gap(m, v);
    net_linear(m, "fc", v, channels, classes, 1);
    return m;
}
