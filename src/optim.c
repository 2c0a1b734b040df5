#include "optim.h"

void optim_adamw_step(Model *m, const AdamWArgs *args) {
    Backend *be = m->be;
    AdamWArgs no_decay = *args;
    no_decay.wd = 0.0f;
    int i = 0;
    while (i < m->nparams) {
        const Param *p = &m->params[i];
        if (!p->trainable) {
            i++;
            continue;
        }
        /* Extend the run while the next parameter is trainable with the same decay. */
        int j = i + 1;
        while (j < m->nparams && m->params[j].trainable && m->params[j].decay == p->decay) j++;
        size_t begin = p->offset, end = m->params[j - 1].offset + m->params[j - 1].count;
        be->ops->adamw(be, m->params_d + begin, m->grads_d + begin, m->adam_m + begin, m->adam_v + begin, end - begin,
                       p->decay ? args : &no_decay);
        i = j;
    }
    be->ops->weights_updated(be, m->params_d, m->param_floats);
}

void optim_reset(Model *m) {
    size_t bytes = m->param_floats * sizeof(float);
    m->be->ops->zero(m->be, m->adam_m, bytes);
    m->be->ops->zero(m->be, m->adam_v, bytes);
}
