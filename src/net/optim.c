/* net/optim.c: AdamW over the parameter table, per parameter group (see optim.h). */
#include "net/optim.h"

#include <stdlib.h>

#include "base/util.h"

void optim_adamw_step(Model *m, const AdamWArgs *args) { optim_adamw_step_groups(m, args, NULL); }

void optim_adamw_step_groups(Model *m, const AdamWArgs *args, const float *group_scale) {
    Backend *be = m->be;
    AdamWRun *runs = xmalloc((size_t)(m->nparams > 0 ? m->nparams : 1) * sizeof *runs);
    int nruns = 0, i = 0;
    while (i < m->nparams) {
        const Param *p = &m->params[i];
        if (!p->trainable) {
            i++;
            continue;
        }
        /* Extend the run while the next parameter is trainable with the same decay and group. */
        int j = i + 1;
        while (j < m->nparams && m->params[j].trainable && m->params[j].decay == p->decay &&
               (!group_scale || m->params[j].group == p->group))
            j++;
        size_t begin = p->offset, end = m->params[j - 1].offset + m->params[j - 1].count;
        float lr = group_scale ? args->lr * group_scale[p->group] : args->lr;
        runs[nruns++] = (AdamWRun){begin, end - begin, lr, p->decay ? args->wd : 0.0f};
        i = j;
    }
    be->ops->adamw(be, m->params_d, m->grads_d, m->adam_m, m->adam_v, runs, nruns, args);
    free(runs);
    be->ops->weights_updated(be, m->params_d, m->param_floats);
}

void optim_reset(Model *m) {
    size_t bytes = m->param_floats * sizeof(float);
    m->be->ops->zero(m->be, m->adam_m, bytes);
    m->be->ops->zero(m->be, m->adam_v, bytes);
}
