/* net/model.h: a network as data. A builder in models/ fills the node list and the parameter table;
 * the same code then runs it forward and backward on any backend (src/net/model.c).
 *
 * Values are numbered activations: value 0 is the input image batch, every node writes one new
 * value. Parameters live in one contiguous fp32 block (params), with gradients and batch-norm
 * running statistics in blocks of their own (the optimizer's moments have the same layout,
 * net/optim.h), so the optimizer, freezing, weight decay and checkpoints are loops over the Param
 * table.
 */
#ifndef CNN_MODEL_H
#define CNN_MODEL_H

#include "backend/backend.h"

/* OP_CONCATPOOL: fastai's AdaptiveConcatPool2d(1) + Flatten, (n, c, h, w) -> (n, 2c, 1, 1) = [max | mean].
 * OP_DROPOUT: inverted dropout in training, the identity in eval mode. A batch norm on a (n, c, 1, 1)
 * value is PyTorch's BatchNorm1d on (n, c). */
typedef enum {
    OP_CONV, OP_BN, OP_RELU, OP_MAXPOOL, OP_AVGPOOL, OP_GAP, OP_LINEAR, OP_ADD, OP_CONCATPOOL, OP_DROPOUT, OP_COUNT
} OpKind;

typedef enum { P_CONV_WEIGHT, P_BN_WEIGHT, P_BN_BIAS, P_LINEAR_WEIGHT, P_LINEAR_BIAS } ParamKind;

#define NAME_LEN 96

typedef struct {
    OpKind op;
    char name[NAME_LEN];  /* PyTorch module path: "layer1.0.conv1", "4.0.convpath.0.0", "" for ops without state */
    int in0, in1;         /* input value ids; in1 only for OP_ADD, else -1 */
    int out;              /* output value id */
    ConvGeom conv;        /* OP_CONV */
    PoolGeom pool;        /* OP_MAXPOOL, OP_AVGPOOL */
    int features;         /* OP_BN: channels; OP_LINEAR: out features (in features = the input's c) */
    int has_bias;         /* OP_LINEAR */
    float p;              /* OP_DROPOUT: probability of zeroing an element */
    int stream;           /* OP_DROPOUT: 0, 1, ... in model order, so each dropout draws its own mask */
    int head_init;        /* fastai create_head's init: linear Kaiming-normal (fan_in), batch norm bias 1e-3 */
    int param;            /* index of the first Param of this node (weight), -1 if none */
    int nparam;
    size_t stat;          /* OP_BN: float offset of running_mean in the stats block; running_var follows */
    int zero_gamma;       /* OP_BN: gamma starts at 0 (last BN of a residual branch) */
    int frozen_stats;     /* OP_BN: use running statistics even when training (FixRes) */
    int64_t batches_tracked; /* OP_BN: PyTorch's num_batches_tracked */
    float *save_mean, *save_invstd; /* OP_BN: backend memory, per forward, for backward */
} Node;

typedef struct {
    char name[NAME_LEN];  /* PyTorch state_dict key: "layer1.0.conv1.weight" */
    ParamKind kind;
    int ndim, shape[4];   /* PyTorch shape; conv K,C,R,S (stored K,R,S,C in the block) */
    size_t offset, count; /* floats, within the params block */
    int node;
    int trainable;        /* gradients are computed and the optimizer updates it */
    int decay;            /* weight decay applies (fastai: not for BN and bias when wd_bn_bias=0) */
    int group;            /* parameter group for discriminative learning rates and freezing, as fastai's
                           * splitter makes them: 0 .. Model.ngroups-1, the head last */
} Param;

typedef struct { int c, h, w; } Shape;

/* fastai's init_cnn: conv and linear weights Kaiming-normal (fan_in, gain sqrt 2), biases 0.
 * torchvision's ResNet: conv Kaiming-normal (fan_out), linear PyTorch's default uniform(+-1/sqrt(fan_in)).
 * Both: batch norm gamma 1 (0 where zero_gamma), beta 0, running mean 0, running var 1.
 * Nodes with head_init (fastai's create_head, whatever the body): linear Kaiming-normal (fan_in, no
 * bias), batch norm gamma 1, beta 1e-3. */
enum { INIT_FASTAI, INIT_TORCHVISION };

typedef struct Model {
    char arch[32];
    int classes;
    Node *nodes;
    int nnodes, cap_nodes;
    Param *params;
    int nparams, cap_params;
    size_t param_floats;   /* size of the params block */
    size_t stat_floats;    /* size of the running-statistics block */
    int nvalues;           /* value 0 = input; node i writes value i+1 */
    int in_channels;
    int init_style;        /* INIT_FASTAI or INIT_TORCHVISION: see model_init_host */
    int ndropout;          /* dropout nodes, numbered by Node.stream */
    int ngroups;           /* parameter groups (Param.group 0 .. ngroups-1); 1 for a model trained from scratch */

    /* Dropout masks: the trainer sets dropout_seed before each training forward (e.g. from the run's
     * seed and the step, so a resumed run draws the same masks); model_new sets 0. Dropout node k
     * draws with key rng_hash(dropout_seed, k), the same masks on every backend. The forward keeps
     * the seed it used, so changing dropout_seed between a forward and its backward is harmless. */
    uint64_t dropout_seed;
    uint64_t fwd_dropout_seed;

    /* Set by model_attach: backend memory, sized for the largest shape of the run. */
    Backend *be;
    float *params_d, *grads_d, *stats_d; /* the optimizer's state is its own (net/optim.h) */
    Tensor *act;           /* nvalues activations */
    Tensor *grad;          /* nvalues activation gradients (value 0's is unused) */
    int max_batch, max_h, max_w;
    int32_t *labels_d, *labels_b_d; /* max_batch labels (and mixup partners), for softmax_xent */
    float *lam_d;          /* max_batch mixup weights */
    float *loss_d;
    int mixed_labels;      /* model_labels was given mixup partners */
    int last_forward_train;/* the mode of the last forward, which backward must follow */
    Shape *shapes;         /* per value, at the current input size */
    unsigned char *grad_written, *needs_grad; /* per value, scratch for backward */
    /* Data-parallel training on a backend with its own all-reduce (net/grad_buckets.h): when set,
     * model_backward hands it each trainable parameter's gradient as soon as it is final. */
    struct GradBuckets *grad_ready;
    void **buffers;        /* every backend allocation made by model_attach, for model_detach */
    int nbuffers, cap_buffers;
} Model;

/* ---- description (host only) ---- */
Model *model_new(const char *arch, int classes, int in_channels);
void model_free(Model *);
/* fastai's weight-decay groups (Learner.create_opt): with wd_bn_bias 0, norm-layer parameters and
 * every bias (norm_bias_params) get none; only conv and linear weights decay. */
void model_set_decay(Model *, int wd_bn_bias);
/* fastai's freeze() = freeze_to(-1) with train_bn (frozen 1): only the last parameter group and
 * every batch-norm parameter (force_train) train; unfreeze() (frozen 0): everything. */
void model_set_frozen(Model *, int frozen);
/* Builder helpers: each adds one node reading value `in` and returns its output value id. */
int net_conv(Model *, const char *name, int in, int cin, int cout, int k, int stride, int pad);
int net_bn(Model *, const char *name, int in, int channels, int zero_gamma);
int net_relu(Model *, int in);
int net_maxpool(Model *, int in, int k, int stride, int pad);
int net_avgpool(Model *, int in, int k, int stride, int ceil_mode);
int net_gap(Model *, int in);
int net_linear(Model *, const char *name, int in, int in_features, int out_features, int bias);
int net_add(Model *, int a, int b);
int net_concat_pool(Model *, int in);
int net_dropout(Model *, int in, float p);
int model_value_channels(const Model *, int value);
/* Format a module name into dst (NAME_LEN bytes); a name too long for the table is a fatal error. */
void module_name(char *dst, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Shapes of every value for one input size. Returns 0, or -1 with a message in err when the
 * input is too small for the network. shapes has nvalues entries. */
int model_shapes(const Model *, int h, int w, Shape *shapes, char *err, size_t errlen);
/* Forward multiply-adds x2 per image at this size, in FLOPs. */
double model_flops(const Model *, int h, int w);
size_t model_param_count(const Model *);  /* parameters, as PyTorch's sum(p.numel()) */

/* Initialise weights into a host block of param_floats floats and stats into stat_floats
 * (running_mean 0, running_var 1), with the builder's rules (see models/). */
struct Rng;
void model_init_host(const Model *, struct Rng *, float *params, float *stats);

/* ---- running (backend) ---- */
/* Allocate every buffer for batches up to max_batch of images up to max_h x max_w. */
int model_attach(Model *, Backend *, int max_batch, int max_h, int max_w, char *err, size_t errlen);
void model_detach(Model *);
/* Upload host params/stats (e.g. from model_init_host or a checkpoint). */
void model_set_weights(Model *, const float *params, const float *stats);
void model_get_weights(Model *, float *params, float *stats);
/* Forward pass of a host NCHW batch (n, in_channels, h, w); train selects batch statistics.
 * Returns the logits tensor (n, classes, 1, 1) in backend memory. */
const Tensor *model_forward(Model *, const float *host_nchw, int n, int h, int w, int train);
/* The same in two halves, for an input made on the device (device_feed): model_input sets every
 * shape for a batch of n at h x w and returns the input tensor to fill (its dtype is the backend's
 * compute dtype); model_run then runs the forward pass on it. */
Tensor *model_input(Model *, int n, int h, int w);
const Tensor *model_run(Model *, int train);
/* Loss on the last forward's logits against host labels; fills the logits' gradient and returns
 * the mean loss (synchronises). */
float model_loss(Model *, const int32_t *host_labels, float smoothing);
/* The same with mixup: per sample, target = lam*onehot(a) + (1-lam)*onehot(b). */
float model_loss_mixup(Model *, const int32_t *labels_a, const int32_t *labels_b, const float *lam, float smoothing);
/* The same in three parts, so that a device need not stop between the forward and the backward
 * pass (uploads wait for the device): the labels of a batch of n before the forward pass
 * (labels_b, lam: mixup, or NULL), the loss and the logits' gradient queued after it (the
 * gradient multiplied by loss_scale, which model_backward's gradients then all carry), and the
 * loss read back once the backward pass is queued too. */
void model_labels(Model *, int n, const int32_t *labels_a, const int32_t *labels_b, const float *lam);
void model_loss_queue(Model *, float smoothing, float loss_scale);
float model_loss_read(Model *);
/* Backward from the logits' gradient: fills grads_d for trainable parameters. */
void model_backward(Model *);

/* ---- registry (models/registry.c) ---- */
typedef struct {
    const char *name;
    const char *about;
} ModelEntry;
const ModelEntry *model_registry(int *count);
/* Build a model by registry name; NULL with a message listing the valid names when unknown. */
Model *model_build(const char *name, int classes, char *err, size_t errlen);

#endif
