/* xresnet.c: fastai v2's XResNet (ResNet-D tweaks: 3-conv stem, avg-pool shortcut, zero-init last BN). */
#include "models.h"

#include <stdio.h>

/* fastai ConvLayer = Sequential(conv, bn[, relu]): names prefix.0 and prefix.1. Padding k/2. */
static int conv_layer(Model *m, const char *prefix, int in, int cin, int cout, int k, int stride, int zero_gamma,
                      int relu) {
    char name[NAME_LEN];
    module_name(name, "%s.0", prefix);
    int v = net_conv(m, name, in, cin, cout, k, stride, k / 2);
    module_name(name, "%s.1", prefix);
    v = net_bn(m, name, v, cout, zero_gamma);
    return relu ? net_relu(m, v) : v;
}

/* fastai ResBlock: act(convpath(x) + idpath(x)). */
static int res_block(Model *m, const char *prefix, int in, int expansion, int ni, int nh, int nf, int stride) {
    char name[NAME_LEN];
    int v;
    if (expansion == 1) {
        module_name(name, "%s.convpath.0", prefix);
        v = conv_layer(m, name, in, ni, nh, 3, stride, 0, 1);
        module_name(name, "%s.convpath.1", prefix);
        v = conv_layer(m, name, v, nh, nf, 3, 1, 1, 0);
    } else {
        module_name(name, "%s.convpath.0", prefix);
        v = conv_layer(m, name, in, ni, nh, 1, 1, 0, 1);
        module_name(name, "%s.convpath.1", prefix);
        v = conv_layer(m, name, v, nh, nh, 3, stride, 0, 1);
        module_name(name, "%s.convpath.2", prefix);
        v = conv_layer(m, name, v, nh, nf, 1, 1, 1, 0);
    }
    int id = in, pooled = 0;
    if (stride != 1) {
        id = net_avgpool(m, id, stride, stride, 1);
        pooled = 1;
    }
    if (ni != nf) {
        module_name(name, "%s.idpath.%d", prefix, pooled);
        id = conv_layer(m, name, id, ni, nf, 1, 1, 0, 0);
    }
    return net_relu(m, net_add(m, v, id));
}

int xresnet_body(Model *m, const ArchSpec *s, const char *prefix, int *channels) {
    char name[NAME_LEN];
    int v = 0, cin = 3;
    for (int i = 0; i < 3; i++) {
        module_name(name, "%s%d", prefix, i);
        v = conv_layer(m, name, v, cin, s->stem[i], 3, i == 0 ? 2 : 1, 0, 1);
        cin = s->stem[i];
    }
    v = net_maxpool(m, v, 3, 2, 1); /* module 3 */
    int ni = s->stem[2];
    for (int l = 0; l < 4; l++) {
        int nf = s->widths[l] * s->expansion;
        for (int b = 0; b < s->layers[l]; b++) {
            module_name(name, "%s%d.%d", prefix, 4 + l, b);
            v = res_block(m, name, v, s->expansion, ni, s->widths[l], nf, (l > 0 && b == 0) ? 2 : 1);
            ni = nf;
        }
    }
    *channels = ni;
    return v;
}

Model *xresnet_build(const char *name, int classes, const ArchSpec *s) {
    Model *m = model_new(name, classes, 3);
    m->init_style = INIT_FASTAI;
    int channels, v = xresnet_body(m, s, "", &channels);
    v = net_gap(m, v);                             /* 8 AdaptiveAvgPool, 9 Flatten, 10 Dropout(0) */
    net_linear(m, "11", v, channels, classes, 1);  /* 11 Linear */
    return m;
}
