/* fuzz_safetensors.c: st_parse on the input as a whole safetensors file, and, when it parses,
 * ckpt_load_st into two models: a tiny one (176 parameters, so a seed can be a whole checkpoint
 * that loads, in every dtype) and xresnet18 (its names and shapes: a file that matched would be
 * 46 MB, so only the mismatch reports are reached). An error names the file and leaves the
 * tiny model's weights untouched; a parsed file's tensors lie inside its data. */
#include "fuzz.h"

#include "ckpt/checkpoint.h"
#include "net/model.h"
#include "ckpt/safetensors.h"

#ifndef FUZZ_ENTRY
#define FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

static Model *st_tiny, *st_big;
static float *st_tp, *st_ts, *st_tp0, *st_bp, *st_bs;

/* conv1 3->4 (3x3), bn1, fc 4->3 with bias: the seeds in corpus/safetensors were saved from it. */
static Model *st_tiny_model(void) {
    Model *m = model_new("tiny", 3, 3);
    int v = net_relu(m, net_bn(m, "bn1", net_conv(m, "conv1", 0, 3, 4, 3, 1, 1), 4, 0));
    net_linear(m, "fc", net_gap(m, v), 4, 3, 1);
    return m;
}

static void st_setup(void) {
    char err[256];
    st_tiny = st_tiny_model();
    st_big = model_build("xresnet18", 10, err, sizeof err);
    FUZZ_CHECK(st_big, "%s", err);
    st_tp = calloc(st_tiny->param_floats, sizeof(float));
    st_tp0 = calloc(st_tiny->param_floats, sizeof(float));
    st_ts = calloc(st_tiny->stat_floats, sizeof(float));
    st_bp = calloc(st_big->param_floats, sizeof(float));
    st_bs = calloc(st_big->stat_floats, sizeof(float));
}

int FUZZ_ENTRY(const uint8_t *data, size_t size);
int FUZZ_ENTRY(const uint8_t *data, size_t size) {
    if (!st_tiny) st_setup();
    StFile f;
    char err[2048];
    err[0] = 0;
    if (st_parse(data, size, "fuzz.st", &f, err, sizeof err)) {
        FUZZ_CHECK(fuzz_names(err, "fuzz.st: "), "the error does not name the file: %s", err);
        FUZZ_CHECK(f.count == 0 && !f.blob, "a failed parse left tensors behind");
        return 0;
    }
    const unsigned char *blob = f.blob;
    for (int i = 0; i < f.count; i++) {
        const StTensor *t = &f.tensors[i];
        const unsigned char *p = t->data;
        FUZZ_CHECK(p >= blob + 8 && p + t->bytes <= blob + f.size, "tensor %d lies outside the file", i);
        size_t n = st_dtype_size(t->dtype);
        for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
        FUZZ_CHECK(n == t->bytes, "tensor %d: %zu bytes, its shape needs %zu", i, t->bytes, n);
    }
    memcpy(st_tp, st_tp0, st_tiny->param_floats * sizeof(float));
    if (ckpt_load_st(&f, "fuzz.st", st_tiny, st_tp, st_ts, err, sizeof err)) {
        FUZZ_CHECK(fuzz_names(err, "fuzz.st"), "the error does not name the file: %s", err);
        FUZZ_CHECK(!memcmp(st_tp, st_tp0, st_tiny->param_floats * sizeof(float)), "a failed load changed the weights");
    }
    if (ckpt_load_st(&f, "fuzz.st", st_big, st_bp, st_bs, err, sizeof err))
        FUZZ_CHECK(fuzz_names(err, "fuzz.st"), "the error does not name the file: %s", err);
    st_close(&f);
    return 0;
}
