/* net/optim.c: AdamW over the parameter table, per parameter group, with its state (see optim.h). */
#include "net/optim.h"

#include <stdlib.h>

#include "base/util.h"

Optimizer *optim_new(Model *m) {
    if (!m->be) die("optim_new: the model is not attached to a backend");
    if (m->ngroups > OPTIM_MAX_GROUPS) die("%s: %d parameter groups, at most %d", m->arch, m->ngroups, OPTIM_MAX_GROUPS);
    Optimizer *o = xcalloc(1, sizeof *o);
    o->model = m;
    size_t bytes = m->param_floats * sizeof(float);
    o->exp_avg = m->be->ops->alloc(m->be, bytes); /* alloc zero-fills */
    o->exp_avg_sq = m->be->ops->alloc(m->be, bytes);
    for (int g = 0; g < OPTIM_MAX_GROUPS; g++) o->group_lr[g] = 1.0f;
    return o;
}

void optim_free(Optimizer *o) {
    if (!o) return;
    Backend *be = o->model->be;
    be->ops->release(be, o->exp_avg);
    be->ops->release(be, o->exp_avg_sq);
    free(o);
}

void optim_reset(Optimizer *o) {
    Backend *be = o->model->be;
    size_t bytes = o->model->param_floats * sizeof(float);
    be->ops->zero(be, o->exp_avg, bytes);
    be->ops->zero(be, o->exp_avg_sq, bytes);
    o->step = 0;
}

void optim_set_group_lrs(Optimizer *o, const float *scale) {
    for (int g = 0; g < o->model->ngroups; g++) o->group_lr[g] = scale[g];
}

void optim_step(Optimizer *o, const OptimHyper *h, float grad_scale) {
    Model *m = o->model;
    Backend *be = m->be;
    AdamWArgs args = {h->lr, h->beta1, h->beta2, h->eps, h->wd, ++o->step};
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
        while (j < m->nparams && m->params[j].trainable && m->params[j].decay == p->decay && m->params[j].group == p->group)
            j++;
        size_t begin = p->offset, end = m->params[j - 1].offset + m->params[j - 1].count;
        runs[nruns++] = (AdamWRun){begin, end - begin, h->lr * o->group_lr[p->group], p->decay ? h->wd : 0.0f};
        i = j;
    }
    be->ops->adamw(be, m->params_d, m->grads_d, o->exp_avg, o->exp_avg_sq, runs, nruns, &args, grad_scale);
    free(runs);
    be->ops->weights_updated(be, m->params_d, m->param_floats);
}

void optim_get_state(const Optimizer *o, float *exp_avg, float *exp_avg_sq) {
    Backend *be = o->model->be;
    size_t bytes = o->model->param_floats * sizeof(float);
    be->ops->download(be, exp_avg, o->exp_avg, bytes);
    be->ops->download(be, exp_avg_sq, o->exp_avg_sq, bytes);
}

void optim_set_state(Optimizer *o, const float *exp_avg, const float *exp_avg_sq, int step) {
    Backend *be = o->model->be;
    size_t bytes = o->model->param_floats * sizeof(float);
    be->ops->upload(be, o->exp_avg, exp_avg, bytes);
    be->ops->upload(be, o->exp_avg_sq, exp_avg_sq, bytes);
    o->step = step;
}
