/* net/model_build.c: building the node list and parameter table, shapes, FLOPs, initialisation. */
#include "net/model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "base/util.h"

Model *model_new(const char *arch, int classes, int in_channels) {
    Model *m = xcalloc(1, sizeof *m);
    snprintf(m->arch, sizeof m->arch, "%s", arch);
    m->classes = classes;
    m->in_channels = in_channels;
    m->nvalues = 1;
    m->ngroups = 1;
    return m;
}

void model_free(Model *m) {
    if (!m) return;
    if (m->be) model_detach(m);
    free(m->nodes);
    free(m->params);
    free(m);
}

void module_name(char *dst, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(dst, NAME_LEN, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= NAME_LEN) die("module name '%s...' is longer than %d characters", dst, NAME_LEN - 1);
}

int model_value_channels(const Model *m, int v) {
    if (v == 0) return m->in_channels;
    const Node *n = &m->nodes[v - 1];
    switch (n->op) {
    case OP_CONV: return n->conv.cout;
    case OP_LINEAR: return n->features;
    case OP_CONCATPOOL: return 2 * model_value_channels(m, n->in0);
    default: return model_value_channels(m, n->in0);
    }
}

static Node *add_node(Model *m, OpKind op, const char *name, int in0, int in1) {
    if (in0 < 0 || in0 >= m->nvalues || in1 >= m->nvalues) die("model %s: node reads value %d that does not exist", m->arch, in0);
    if (m->nnodes == m->cap_nodes) {
        m->cap_nodes = m->cap_nodes ? 2 * m->cap_nodes : 64;
        m->nodes = xrealloc(m->nodes, (size_t)m->cap_nodes * sizeof *m->nodes);
    }
    Node *n = &m->nodes[m->nnodes++];
    memset(n, 0, sizeof *n);
    n->op = op;
    snprintf(n->name, sizeof n->name, "%s", name ? name : "");
    n->in0 = in0;
    n->in1 = in1;
    n->out = m->nvalues++;
    n->param = -1;
    return n;
}

static void add_param(Model *m, Node *n, const char *suffix, ParamKind kind, int ndim, const int *shape, int decay) {
    if (m->nparams == m->cap_params) {
        m->cap_params = m->cap_params ? 2 * m->cap_params : 64;
        m->params = xrealloc(m->params, (size_t)m->cap_params * sizeof *m->params);
    }
    Param *p = &m->params[m->nparams];
    memset(p, 0, sizeof *p);
    module_name(p->name, "%s.%s", n->name, suffix);
    p->kind = kind;
    p->ndim = ndim;
    p->count = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = shape[i];
        p->count *= (size_t)shape[i];
    }
    /* 16-float alignment keeps every parameter 64-byte aligned for vector loads. */
    p->offset = m->param_floats;
    m->param_floats += (p->count + 15) & ~(size_t)15;
    p->node = (int)(n - m->nodes);
    p->trainable = 1;
    p->decay = decay;
    if (n->param < 0) n->param = m->nparams;
    n->nparam++;
    m->nparams++;
}

int net_conv(Model *m, const char *name, int in, int cin, int cout, int k, int stride, int pad) {
    if (model_value_channels(m, in) != cin)
        die("model %s: conv %s expects %d input channels, gets %d", m->arch, name, cin, model_value_channels(m, in));
    Node *n = add_node(m, OP_CONV, name, in, -1);
    n->conv = (ConvGeom){cin, cout, k, stride, pad};
    add_param(m, n, "weight", P_CONV_WEIGHT, 4, (int[]){cout, cin, k, k}, 1);
    return n->out;
}

int net_bn(Model *m, const char *name, int in, int channels, int zero_gamma) {
    Node *n = add_node(m, OP_BN, name, in, -1);
    n->features = channels;
    n->zero_gamma = zero_gamma;
    n->stat = m->stat_floats;
    m->stat_floats += 2 * (size_t)channels;
    add_param(m, n, "weight", P_BN_WEIGHT, 1, &channels, 0);
    add_param(m, n, "bias", P_BN_BIAS, 1, &channels, 0);
    return n->out;
}

int net_relu(Model *m, int in) { return add_node(m, OP_RELU, NULL, in, -1)->out; }

int net_maxpool(Model *m, int in, int k, int stride, int pad) {
    Node *n = add_node(m, OP_MAXPOOL, NULL, in, -1);
    n->pool = (PoolGeom){k, stride, pad, 0};
    return n->out;
}

int net_avgpool(Model *m, int in, int k, int stride, int ceil_mode) {
    Node *n = add_node(m, OP_AVGPOOL, NULL, in, -1);
    n->pool = (PoolGeom){k, stride, 0, ceil_mode};
    return n->out;
}

int net_gap(Model *m, int in) { return add_node(m, OP_GAP, NULL, in, -1)->out; }

int net_linear(Model *m, const char *name, int in, int in_features, int out_features, int bias) {
    if (model_value_channels(m, in) != in_features)
        die("model %s: linear %s expects %d inputs, gets %d", m->arch, name, in_features, model_value_channels(m, in));
    Node *n = add_node(m, OP_LINEAR, name, in, -1);
    n->features = out_features;
    n->has_bias = bias;
    add_param(m, n, "weight", P_LINEAR_WEIGHT, 2, (int[]){out_features, in_features}, 1);
    if (bias) add_param(m, n, "bias", P_LINEAR_BIAS, 1, &out_features, 0);
    return n->out;
}

int net_add(Model *m, int a, int b) {
    if (model_value_channels(m, a) != model_value_channels(m, b))
        die("model %s: residual add of %d and %d channels", m->arch, model_value_channels(m, a), model_value_channels(m, b));
    return add_node(m, OP_ADD, NULL, a, b)->out;
}

int net_concat_pool(Model *m, int in) { return add_node(m, OP_CONCATPOOL, NULL, in, -1)->out; }

int net_dropout(Model *m, int in, float p) {
    if (!(p >= 0.0f && p <= 1.0f)) die("model %s: dropout probability %g is not in [0, 1]", m->arch, p);
    Node *n = add_node(m, OP_DROPOUT, NULL, in, -1);
    n->p = p;
    n->stream = m->ndropout++;
    return n->out;
}

int model_shapes(const Model *m, int h, int w, Shape *s, char *err, size_t errlen) {
    s[0] = (Shape){m->in_channels, h, w};
    for (int i = 0; i < m->nnodes; i++) {
        const Node *n = &m->nodes[i];
        Shape x = s[n->in0], y = x;
        switch (n->op) {
        case OP_CONV:
            y = (Shape){n->conv.cout, conv_out_size(x.h, n->conv.k, n->conv.stride, n->conv.pad),
                        conv_out_size(x.w, n->conv.k, n->conv.stride, n->conv.pad)};
            break;
        case OP_MAXPOOL:
        case OP_AVGPOOL: y = (Shape){x.c, pool_out_size(x.h, &n->pool), pool_out_size(x.w, &n->pool)}; break;
        case OP_GAP: y = (Shape){x.c, 1, 1}; break;
        case OP_CONCATPOOL: y = (Shape){2 * x.c, 1, 1}; break;
        case OP_LINEAR: y = (Shape){n->features, 1, 1}; break;
        case OP_ADD:
            if (s[n->in1].h != x.h || s[n->in1].w != x.w) {
                snprintf(err, errlen, "%s at %dx%d: a residual add joins %dx%d and %dx%d maps", m->arch, h, w, x.h,
                         x.w, s[n->in1].h, s[n->in1].w);
                return -1;
            }
            break;
        default: break;
        }
        if (y.h < 1 || y.w < 1) {
            snprintf(err, errlen, "input %dx%d is too small for %s: layer %d (%s) would output %dx%d", h, w, m->arch,
                     i, n->name[0] ? n->name : "pool", y.h, y.w);
            return -1;
        }
        s[n->out] = y;
    }
    return 0;
}

double model_flops(const Model *m, int h, int w) {
    Shape *s = xmalloc((size_t)m->nvalues * sizeof *s);
    char err[256];
    double flops = 0;
    if (model_shapes(m, h, w, s, err, sizeof err) == 0) {
        for (int i = 0; i < m->nnodes; i++) {
            const Node *n = &m->nodes[i];
            const Shape *y = &s[n->out];
            if (n->op == OP_CONV) flops += 2.0 * n->conv.cin * n->conv.k * n->conv.k * y->c * y->h * y->w;
            if (n->op == OP_LINEAR) flops += 2.0 * model_value_channels(m, n->in0) * n->features;
        }
    }
    free(s);
    return flops;
}

size_t model_param_count(const Model *m) {
    size_t total = 0;
    for (int i = 0; i < m->nparams; i++) total += m->params[i].count;
    return total;
}

void model_init_host(const Model *m, Rng *rng, float *params, float *stats) {
    memset(params, 0, m->param_floats * sizeof *params);
    for (int i = 0; i < m->nparams; i++) {
        const Param *p = &m->params[i];
        const Node *n = &m->nodes[p->node];
        float *w = params + p->offset;
        switch (p->kind) {
        case P_CONV_WEIGHT: {
            /* Kaiming normal, ReLU gain: std = sqrt(2 / fan); fastai uses fan_in, torchvision fan_out. */
            int fan = (m->init_style == INIT_TORCHVISION ? n->conv.cout : n->conv.cin) * n->conv.k * n->conv.k;
            float std = sqrtf(2.0f / (float)fan);
            for (size_t j = 0; j < p->count; j++) w[j] = std * rng_normal(rng);
            break;
        }
        case P_BN_WEIGHT:
            for (size_t j = 0; j < p->count; j++) w[j] = n->zero_gamma ? 0.0f : 1.0f;
            break;
        case P_BN_BIAS:
            if (n->head_init) /* fastai's BatchNorm(): bias 1e-3, which create_head's init leaves alone */
                for (size_t j = 0; j < p->count; j++) w[j] = 1e-3f;
            break;
        case P_LINEAR_WEIGHT:
        case P_LINEAR_BIAS: {
            int fan_in = model_value_channels(m, n->in0);
            if (m->init_style == INIT_TORCHVISION && !n->head_init) {
                float bound = 1.0f / sqrtf((float)fan_in);
                for (size_t j = 0; j < p->count; j++) w[j] = bound * (2.0f * rng_uniform(rng) - 1.0f);
            } else if (p->kind == P_LINEAR_WEIGHT) {
                float std = sqrtf(2.0f / (float)fan_in);
                for (size_t j = 0; j < p->count; j++) w[j] = std * rng_normal(rng);
            }
            break;
        }
        }
    }
    for (int i = 0; i < m->nnodes; i++) {
        const Node *n = &m->nodes[i];
        if (n->op != OP_BN) continue;
        for (int c = 0; c < n->features; c++) {
            stats[n->stat + (size_t)c] = 0.0f;
            stats[n->stat + (size_t)n->features + (size_t)c] = 1.0f;
        }
    }
}
