/* cnn_learner.c: fastai's cnn_learner model: a ResNet body cut before its pooling, and create_head. */
#include "models.h"

#include <stdlib.h>

/* node writing value v: marks it for create_head's init */
static int head(Model *m, int v) {
    m->nodes[v - 1].head_init = 1;
    return v;
}

/* fastai's splitters cut the body by child index: _resnet_split at 6 (before layer3),
 * _xresnet_split at 3 (before the max pool). */
static void set_groups(Model *m, int cut) {
    for (int i = 0; i < m->nparams; i++) {
        Param *p = &m->params[i];
        p->group = p->name[0] == '1' ? 2 : strtol(p->name + 2, NULL, 10) < cut ? 0 : 1; /* "1.*" head, "0.K.*" body */
    }
    m->ngroups = 3;
}

Model *cnn_learner_build(const char *name, int classes, const ArchSpec *spec, int torchvision_body, int hidden) {
    Model *m = model_new(name, classes, 3);
    m->init_style = torchvision_body ? INIT_TORCHVISION : INIT_FASTAI;
    int nf, v = torchvision_body ? resnet_body(m, spec, 1, &nf) : xresnet_body(m, spec, "0.", &nf);
    v = net_concat_pool(m, v);                                /* 1.0 [max, avg], 1.1 Flatten */
    v = head(m, net_bn(m, "1.2", v, 2 * nf, 0));
    v = net_dropout(m, v, 0.25f);                             /* 1.3: ps = [0.5/2, 0.5] */
    v = head(m, net_linear(m, "1.4", v, 2 * nf, hidden, 0));
    v = net_relu(m, v);                                       /* 1.5 */
    v = head(m, net_bn(m, "1.6", v, hidden, 0));
    v = net_dropout(m, v, 0.5f);                              /* 1.7 */
    head(m, net_linear(m, "1.8", v, hidden, classes, 0));
    set_groups(m, torchvision_body ? 6 : 3);
    return m;
}
