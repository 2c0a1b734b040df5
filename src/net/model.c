/* net/model.c: running a model on a backend: memory planning, forward, loss, backward. */
#include "net/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "base/util.h"
#include "net/grad_buckets.h"

#define BN_MOMENTUM 0.1f
#define BN_EPS 1e-5f

static void *attach_alloc(Model *m, size_t bytes) {
    if (m->nbuffers == m->cap_buffers) {
        m->cap_buffers = m->cap_buffers ? 2 * m->cap_buffers : 256;
        m->buffers = xrealloc(m->buffers, (size_t)m->cap_buffers * sizeof *m->buffers);
    }
    void *p = m->be->ops->alloc(m->be, bytes ? bytes : 4);
    m->buffers[m->nbuffers++] = p;
    return p;
}

/* How many nodes read each value. */
static int *count_consumers(const Model *m) {
    int *c = xcalloc((size_t)m->nvalues, sizeof *c);
    for (int i = 0; i < m->nnodes; i++) {
        c[m->nodes[i].in0]++;
        if (m->nodes[i].in1 >= 0) c[m->nodes[i].in1]++;
    }
    return c;
}

/* A ReLU or a dropout may overwrite its input when it is the input's only reader and the input's
 * producer does not need its own output in backward (ReLU, max pool and concat pool do; conv, BN,
 * add and dropout do not). An in-place dropout is free in eval mode. */
static int runs_in_place(const Model *m, const Node *n, const int *consumers) {
    if ((n->op != OP_RELU && n->op != OP_DROPOUT) || n->in0 == 0 || consumers[n->in0] != 1) return 0;
    OpKind producer = m->nodes[n->in0 - 1].op;
    return producer != OP_RELU && producer != OP_MAXPOOL && producer != OP_CONCATPOOL;
}

/* Activation gradients live from the backward of a value's last reader to the backward of its
 * producer; buffers are recycled along the backward order (best fit by size). */
typedef struct { void *p; size_t bytes; int free; } PoolBuf;

static void *pool_take(Model *m, PoolBuf *pool, int *npool, size_t bytes) {
    int best = -1;
    for (int i = 0; i < *npool; i++)
        if (pool[i].free && pool[i].bytes >= bytes && (best < 0 || pool[i].bytes < pool[best].bytes)) best = i;
    if (best < 0) {
        best = (*npool)++;
        pool[best] = (PoolBuf){attach_alloc(m, bytes), bytes, 0};
    }
    pool[best].free = 0;
    return pool[best].p;
}

static void pool_give(PoolBuf *pool, int npool, void *p) {
    for (int i = 0; i < npool; i++)
        if (pool[i].p == p) pool[i].free = 1;
}

static void plan_gradients(Model *m, const size_t *bytes) {
    PoolBuf *pool = xcalloc((size_t)m->nvalues, sizeof *pool);
    int npool = 0;
    int last = m->nvalues - 1;
    m->grad[last].data = pool_take(m, pool, &npool, bytes[last]);
    for (int i = m->nnodes - 1; i >= 0; i--) {
        const Node *n = &m->nodes[i];
        int ins[2] = {n->in0, n->in1};
        for (int k = 0; k < 2; k++) {
            int v = ins[k];
            /* The input image needs a gradient only if something other than a conv reads it. */
            if (v < 0 || m->grad[v].data || (v == 0 && n->op == OP_CONV)) continue;
            m->grad[v].data = pool_take(m, pool, &npool, bytes[v]);
        }
        pool_give(pool, npool, m->grad[n->out].data);
    }
    free(pool);
}

int model_attach(Model *m, Backend *be, int max_batch, int max_h, int max_w, char *err, size_t errlen) {
    if (m->be) model_detach(m);
    m->shapes = xcalloc((size_t)m->nvalues, sizeof *m->shapes);
    if (model_shapes(m, max_h, max_w, m->shapes, err, errlen)) {
        free(m->shapes);
        m->shapes = NULL;
        return -1;
    }
    m->be = be;
    m->max_batch = max_batch;
    m->max_h = max_h;
    m->max_w = max_w;
    size_t pbytes = m->param_floats * sizeof(float);
    m->params_d = attach_alloc(m, pbytes);
    m->grads_d = attach_alloc(m, pbytes);
    m->stats_d = attach_alloc(m, m->stat_floats * sizeof(float));
    m->labels_d = attach_alloc(m, (size_t)max_batch * sizeof(int32_t));
    m->labels_b_d = attach_alloc(m, (size_t)max_batch * sizeof(int32_t));
    m->lam_d = attach_alloc(m, (size_t)max_batch * sizeof(float));
    m->loss_d = attach_alloc(m, sizeof(float));
    /* A backend computing in fp16/bf16 registers its cast copy of the (still zero) parameters now, so
     * no op can ever meet a missing or stale copy: every later write of params_d goes through
     * model_set_weights or the optimizer, and both call weights_updated. */
    be->ops->weights_updated(be, m->params_d, m->param_floats);

    m->act = xcalloc((size_t)m->nvalues, sizeof *m->act);
    m->grad = xcalloc((size_t)m->nvalues, sizeof *m->grad);
    m->grad_written = xcalloc((size_t)m->nvalues, 1);
    m->needs_grad = xcalloc((size_t)m->nvalues, 1);
    size_t *bytes = xmalloc((size_t)m->nvalues * sizeof *bytes);
    for (int v = 0; v < m->nvalues; v++) {
        const Shape *s = &m->shapes[v];
        bytes[v] = (size_t)max_batch * s->c * s->h * s->w * dtype_size(be->compute);
        m->act[v].dtype = m->grad[v].dtype = be->compute;
    }
    int *consumers = count_consumers(m);
    m->act[0].data = attach_alloc(m, bytes[0]);
    for (int i = 0; i < m->nnodes; i++) {
        const Node *n = &m->nodes[i];
        m->act[n->out].data = runs_in_place(m, n, consumers) ? m->act[n->in0].data : attach_alloc(m, bytes[n->out]);
    }
    for (int i = 0; i < m->nnodes; i++) {
        Node *n = &m->nodes[i];
        if (n->op != OP_BN) continue;
        n->save_mean = attach_alloc(m, (size_t)n->features * sizeof(float));
        n->save_invstd = attach_alloc(m, (size_t)n->features * sizeof(float));
    }
    plan_gradients(m, bytes);
    free(consumers);
    free(bytes);
    return 0;
}

void model_detach(Model *m) {
    if (!m->be) return;
    for (int i = 0; i < m->nbuffers; i++) m->be->ops->release(m->be, m->buffers[i]);
    free(m->buffers);
    free(m->act);
    free(m->grad);
    free(m->grad_written);
    free(m->needs_grad);
    free(m->shapes);
    for (int i = 0; i < m->nnodes; i++) m->nodes[i].save_mean = m->nodes[i].save_invstd = NULL;
    m->buffers = NULL;
    m->nbuffers = m->cap_buffers = 0;
    m->act = m->grad = NULL;
    m->grad_written = m->needs_grad = NULL;
    m->shapes = NULL;
    m->params_d = m->grads_d = m->stats_d = NULL;
    m->labels_d = m->labels_b_d = NULL;
    m->lam_d = NULL;
    m->loss_d = NULL;
    m->be = NULL;
}

void model_set_weights(Model *m, const float *params, const float *stats) {
    const BackendOps *o = m->be->ops;
    if (params) {
        o->upload(m->be, m->params_d, params, m->param_floats * sizeof(float));
        o->weights_updated(m->be, m->params_d, m->param_floats);
    }
    if (stats) o->upload(m->be, m->stats_d, stats, m->stat_floats * sizeof(float));
}

void model_get_weights(Model *m, float *params, float *stats) {
    const BackendOps *o = m->be->ops;
    if (params) o->download(m->be, params, m->params_d, m->param_floats * sizeof(float));
    if (stats) o->download(m->be, stats, m->stats_d, m->stat_floats * sizeof(float));
}

static void set_shape(Tensor *t, int n, const Shape *s) {
    t->n = n;
    t->c = s->c;
    t->h = s->h;
    t->w = s->w;
}

Tensor *model_input(Model *m, int n, int h, int w) {
    char err[256];
    if (n > m->max_batch || h > m->max_h || w > m->max_w)
        die("%s: batch %dx%dx%d exceeds the %dx%dx%d the model was sized for", m->arch, n, h, w, m->max_batch,
            m->max_h, m->max_w);
    if (model_shapes(m, h, w, m->shapes, err, sizeof err)) die("%s", err);
    for (int v = 0; v < m->nvalues; v++) {
        set_shape(&m->act[v], n, &m->shapes[v]);
        set_shape(&m->grad[v], n, &m->shapes[v]);
    }
    return &m->act[0];
}

const Tensor *model_forward(Model *m, const float *host_nchw, int n, int h, int w, int train) {
    m->be->ops->tensor_upload(m->be, model_input(m, n, h, w), host_nchw);
    return model_run(m, train);
}

const Tensor *model_run(Model *m, int train) {
    Backend *be = m->be;
    const BackendOps *o = be->ops;
    m->fwd_dropout_seed = m->dropout_seed;
    for (int i = 0; i < m->nnodes; i++) {
        Node *nd = &m->nodes[i];
        const Tensor *x = &m->act[nd->in0];
        Tensor *y = &m->act[nd->out];
        const float *p = nd->param >= 0 ? m->params_d + m->params[nd->param].offset : NULL;
        switch (nd->op) {
        case OP_CONV: o->conv_forward(be, &nd->conv, x, p, y); break;
        case OP_BN: {
            const float *beta = m->params_d + m->params[nd->param + 1].offset;
            float *mean = m->stats_d + nd->stat, *var = mean + nd->features;
            if (train && !nd->frozen_stats) {
                o->bn_forward_train(be, x, p, beta, mean, var, BN_MOMENTUM, BN_EPS, nd->save_mean, nd->save_invstd, y);
                nd->batches_tracked++;
            } else {
                o->bn_forward_infer(be, x, p, beta, mean, var, BN_EPS, y);
            }
            break;
        }
        case OP_RELU: o->relu_forward(be, x, y); break;
        case OP_MAXPOOL: o->maxpool_forward(be, &nd->pool, x, y); break;
        case OP_AVGPOOL: o->avgpool_forward(be, &nd->pool, x, y); break;
        case OP_GAP: o->global_avgpool_forward(be, x, y); break;
        case OP_LINEAR: {
            const float *b = nd->has_bias ? m->params_d + m->params[nd->param + 1].offset : NULL;
            o->linear_forward(be, x, p, b, y);
            break;
        }
        case OP_ADD: o->add(be, x, &m->act[nd->in1], y); break;
        case OP_CONCATPOOL: o->concat_pool_forward(be, x, y); break;
        case OP_DROPOUT:
            if (train && nd->p > 0)
                o->dropout_forward(be, x, nd->p, rng_hash(m->fwd_dropout_seed, (uint64_t)nd->stream), y);
            else if (y->data != x->data)
                o->accumulate(be, x, y, 0); /* eval mode: the identity */
            break;
        default: die("model %s: unknown op %d", m->arch, nd->op);
        }
    }
    m->last_forward_train = train;
    return &m->act[m->nvalues - 1];
}

float model_loss(Model *m, const int32_t *host_labels, float smoothing) {
    return model_loss_mixup(m, host_labels, NULL, NULL, smoothing);
}

float model_loss_mixup(Model *m, const int32_t *labels_a, const int32_t *labels_b, const float *lam, float smoothing) {
    model_labels(m, m->act[m->nvalues - 1].n, labels_a, labels_b, lam);
    model_loss_queue(m, smoothing, 1.0f);
    return model_loss_read(m);
}

void model_labels(Model *m, int n, const int32_t *labels_a, const int32_t *labels_b, const float *lam) {
    Backend *be = m->be;
    be->ops->upload(be, m->labels_d, labels_a, (size_t)n * sizeof(int32_t));
    m->mixed_labels = labels_b != NULL;
    if (labels_b) {
        be->ops->upload(be, m->labels_b_d, labels_b, (size_t)n * sizeof(int32_t));
        be->ops->upload(be, m->lam_d, lam, (size_t)n * sizeof(float));
    }
}

void model_loss_queue(Model *m, float smoothing, float loss_scale) {
    Backend *be = m->be;
    int last = m->nvalues - 1;
    be->ops->softmax_xent(be, &m->act[last], m->labels_d, m->mixed_labels ? m->labels_b_d : NULL,
                          m->mixed_labels ? m->lam_d : NULL, smoothing, loss_scale, m->loss_d, &m->grad[last]);
    memset(m->grad_written, 0, (size_t)m->nvalues);
    m->grad_written[last] = 1;
}

float model_loss_read(Model *m) {
    float loss;
    m->be->ops->download(m->be, &loss, m->loss_d, sizeof loss);
    return loss;
}

static int node_trainable(const Model *m, const Node *n) {
    for (int k = 0; k < n->nparam; k++)
        if (m->params[n->param + k].trainable) return 1;
    return 0;
}

/* Give the input value v its gradient through `op`, overwriting on the first write of this pass. */
#define INPUT_GRAD(v) (&m->grad[v]), (m->grad_written[v] ? 1 : (m->grad_written[v] = 1, 0))

void model_backward(Model *m) {
    Backend *be = m->be;
    const BackendOps *o = be->ops;
    /* A value needs a gradient when a trainable parameter lies upstream of it. */
    m->needs_grad[0] = 0;
    for (int i = 0; i < m->nnodes; i++) {
        const Node *n = &m->nodes[i];
        m->needs_grad[n->out] = node_trainable(m, n) || m->needs_grad[n->in0] || (n->in1 >= 0 && m->needs_grad[n->in1]);
    }
    for (int i = m->nnodes - 1; i >= 0; i--) {
        Node *nd = &m->nodes[i];
        if (!m->needs_grad[nd->out] || !m->grad_written[nd->out]) continue;
        const Tensor *x = &m->act[nd->in0], *dy = &m->grad[nd->out];
        const Param *p = nd->param >= 0 ? &m->params[nd->param] : NULL;
        if (!p && (nd->op == OP_CONV || nd->op == OP_BN || nd->op == OP_LINEAR))
            die("model %s: node %d (%s) has no parameters", m->arch, i, nd->name);
        const float *w = p ? m->params_d + p->offset : NULL;
        float *dw = p ? m->grads_d + p->offset : NULL;
        switch (nd->op) {
        case OP_CONV:
            if (p->trainable) o->conv_backward_filter(be, &nd->conv, x, dy, dw);
            if (m->needs_grad[nd->in0]) o->conv_backward_data(be, &nd->conv, dy, w, INPUT_GRAD(nd->in0));
            break;
        case OP_BN: {
            float *dbeta = m->grads_d + m->params[nd->param + 1].offset;
            if (m->last_forward_train && !nd->frozen_stats) {
                o->bn_backward(be, x, dy, w, nd->save_mean, nd->save_invstd, dw, dbeta, INPUT_GRAD(nd->in0));
            } else {
                const float *mean = m->stats_d + nd->stat;
                o->bn_backward_infer(be, x, dy, w, mean, mean + nd->features, BN_EPS, dw, dbeta, INPUT_GRAD(nd->in0));
            }
            break;
        }
        case OP_RELU: o->relu_backward(be, &m->act[nd->out], dy, INPUT_GRAD(nd->in0)); break;
        case OP_MAXPOOL: o->maxpool_backward(be, &nd->pool, x, &m->act[nd->out], dy, INPUT_GRAD(nd->in0)); break;
        case OP_AVGPOOL: o->avgpool_backward(be, &nd->pool, dy, INPUT_GRAD(nd->in0)); break;
        case OP_GAP: o->global_avgpool_backward(be, dy, INPUT_GRAD(nd->in0)); break;
        case OP_LINEAR: {
            float *db = nd->has_bias ? m->grads_d + m->params[nd->param + 1].offset : NULL;
            o->linear_backward(be, x, dy, w, dw, db, INPUT_GRAD(nd->in0));
            break;
        }
        case OP_ADD:
            o->accumulate(be, dy, INPUT_GRAD(nd->in0));
            o->accumulate(be, dy, INPUT_GRAD(nd->in1));
            break;
        case OP_CONCATPOOL: o->concat_pool_backward(be, x, &m->act[nd->out], dy, INPUT_GRAD(nd->in0)); break;
        case OP_DROPOUT:
            if (m->last_forward_train && nd->p > 0)
                o->dropout_backward(be, dy, nd->p, rng_hash(m->fwd_dropout_seed, (uint64_t)nd->stream),
                                    INPUT_GRAD(nd->in0));
            else
                o->accumulate(be, dy, INPUT_GRAD(nd->in0));
            break;
        default: die("model %s: unknown op %d", m->arch, nd->op);
        }
        /* this node's trainable parameters have their final gradients: on to the all-reduce */
        for (int k = 0; m->grad_ready && p && k < nd->nparam; k++)
            if (p[k].trainable) grad_buckets_ready(m->grad_ready, p[k].offset, p[k].count);
    }
}

void model_set_decay(Model *m, int wd_bn_bias) {
    for (int i = 0; i < m->nparams; i++) {
        ParamKind k = m->params[i].kind;
        m->params[i].decay = wd_bn_bias || k == P_CONV_WEIGHT || k == P_LINEAR_WEIGHT;
    }
}

void model_set_frozen(Model *m, int frozen) {
    for (int i = 0; i < m->nparams; i++) {
        Param *p = &m->params[i];
        p->trainable = !frozen || p->group == m->ngroups - 1 || p->kind == P_BN_WEIGHT || p->kind == P_BN_BIAS;
    }
}
