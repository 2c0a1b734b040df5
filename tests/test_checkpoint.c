/* test_checkpoint.c: safetensors reader/writer and model checkpoints.
 * Round trips are bit-exact; every malformed file must give an error naming the file, never a
 * crash; a failed write must leave the old file as it was and no temporary file behind. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ckpt/checkpoint.h"
#include "net/model.h"
#include "base/rng.h"
#include "ckpt/safetensors.h"
#include "base/util.h"

#define TEST_DIR_TEMPLATE "/tmp/cnn_test_ckpt_XXXXXX"
#include "testutil.h"

static Model *build(const char *arch, int classes) {
    char err[256];
    Model *m = model_build(arch, classes, err, sizeof err);
    if (!m) fail_msg("%s", err);
    return m;
}

/* A small network with torchvision-style names, for tests about behaviour rather than scale. */
static Model *tiny(int classes) {
    Model *m = model_new("tiny", classes, 3);
    int v = net_conv(m, "conv1", 0, 3, 8, 3, 1, 1);
    v = net_relu(m, net_bn(m, "bn1", v, 8, 0));
    v = net_conv(m, "layer1.0.conv1", v, 8, 16, 3, 2, 1);
    v = net_relu(m, net_bn(m, "layer1.0.bn1", v, 16, 1));
    net_linear(m, "fc", net_gap(m, v), 16, classes, 1);
    return m;
}

/* Random values everywhere (padding too), random running stats and batch counts. */
static void randomize(Model *m, float *params, float *stats, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < m->param_floats; i++) params[i] = rng_normal(&r);
    for (size_t i = 0; i < m->stat_floats; i++) stats[i] = rng_normal(&r);
    for (int i = 0; i < m->nnodes; i++) m->nodes[i].batches_tracked = (int64_t)(rng_u64(&r) >> 24);
}

static float *sentinel_block(size_t n) {
    float *p = xmalloc(n * sizeof *p + 1);
    memset(p, 0xA5, n * sizeof *p);
    return p;
}

static int bn_count(const Model *m) {
    int n = 0;
    for (int i = 0; i < m->nnodes; i++) n += m->nodes[i].op == OP_BN;
    return n;
}

/* Save a random model, load it into a fresh one: every parameter, running statistic and batch
 * count comes back bit for bit, and the file holds what PyTorch expects. */
static void roundtrip(const char *arch, int classes) {
    Model *m = build(arch, classes), *m2 = build(arch, classes);
    float *params = xmalloc(m->param_floats * sizeof(float)), *stats = xmalloc(m->stat_floats * sizeof(float));
    randomize(m, params, stats, 1234);
    char id[CKPT_ID_CHARS + 1], err[1024] = "";
    ckpt_new_id(id);
    assert_int_equal(strlen(id), CKPT_ID_CHARS);
    const char *meta[] = {CKPT_ID_KEY, id, "epoch", "3", "note", "quote \" backslash \\ tab \t newline \n caf\xc3\xa9", NULL};
    const char *path = in_dir("rt.safetensors");
    if (ckpt_save(path, m, params, stats, meta, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(count_temp_files(dir), 0);

    float *p2 = sentinel_block(m->param_floats), *s2 = sentinel_block(m->stat_floats);
    if (ckpt_load(path, m2, p2, s2, err, sizeof err)) fail_msg("%s", err);
    for (int i = 0; i < m->nparams; i++) {
        const Param *p = &m->params[i];
        if (memcmp(params + p->offset, p2 + p->offset, p->count * sizeof(float))) fail_msg("%s differs after load", p->name);
    }
    assert_int_equal(memcmp(stats, s2, m->stat_floats * sizeof(float)), 0);
    for (int i = 0; i < m->nnodes; i++)
        if (m->nodes[i].op == OP_BN) assert_int_equal(m->nodes[i].batches_tracked, m2->nodes[i].batches_tracked);

    StFile f;
    if (st_read(path, &f, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(f.count, m->nparams + 3 * bn_count(m));
    assert_string_equal(st_meta(&f, "format"), CKPT_FORMAT);
    assert_string_equal(st_meta(&f, "arch"), arch);
    char cls[16];
    snprintf(cls, sizeof cls, "%d", classes);
    assert_string_equal(st_meta(&f, "classes"), cls);
    assert_string_equal(st_meta(&f, "note"), meta[5]);
    assert_string_equal(st_meta(&f, CKPT_ID_KEY), id);
    const StTensor *t = st_find(&f, arch[0] == 'x' ? "0.1.num_batches_tracked" : "bn1.num_batches_tracked");
    assert_non_null(t);
    assert_int_equal(t->dtype, ST_I64);
    assert_int_equal(t->ndim, 0);
    assert_int_equal(t->bytes, 8);
    t = st_find(&f, arch[0] == 'x' ? "0.1.running_var" : "bn1.running_var");
    assert_non_null(t);
    assert_int_equal(t->ndim, 1);
    /* The header is padded so the data starts at a multiple of 8. */
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | ((unsigned char *)f.blob)[i];
    assert_int_equal(hlen % 8, 0);
    st_close(&f);

    free(params), free(stats), free(p2), free(s2);
    model_free(m), model_free(m2);
}

static void test_roundtrip_xresnet18(void **state) {
    (void)state;
    roundtrip("xresnet18", 10);
}

static void test_roundtrip_resnet18(void **state) {
    (void)state;
    roundtrip("resnet18", 7);
}

/* Our K,R,S,C block becomes PyTorch's K,C,R,S in the file; linear weights are not touched. */
static void test_conv_transposed(void **state) {
    (void)state;
    Model *m = build("xresnet18", 10);
    float *params = xcalloc(m->param_floats, sizeof(float)), *stats = xcalloc(m->stat_floats, sizeof(float));
    const Param *stem = &m->params[0], *c64 = NULL, *fc = NULL;
    for (int i = 0; i < m->nparams; i++) {
        if (!strcmp(m->params[i].name, "4.0.convpath.0.0.weight")) c64 = &m->params[i];
        if (!strcmp(m->params[i].name, "11.weight")) fc = &m->params[i];
    }
    assert_string_equal(stem->name, "0.0.weight");
    assert_non_null(c64);
    assert_non_null(fc);
    /* One marked element: K=5, R=0, S=2, C=1 in our layout (shape K32 C3 R3 S3). */
    params[stem->offset + ((5 * 3 + 0) * 3 + 2) * 3 + 1] = 42.0f;
    for (size_t j = 0; j < c64->count; j++) params[c64->offset + j] = (float)j;
    for (size_t j = 0; j < fc->count; j++) params[fc->offset + j] = (float)j + 0.5f;
    char err[512];
    const char *path = in_dir("conv.safetensors");
    if (ckpt_save(path, m, params, stats, NULL, err, sizeof err)) fail_msg("%s", err);

    StFile f;
    if (st_read(path, &f, err, sizeof err)) fail_msg("%s", err);
    const StTensor *t = st_find(&f, "0.0.weight");
    assert_non_null(t);
    assert_int_equal(t->ndim, 4);
    assert_int_equal(t->shape[0], 32);
    assert_int_equal(t->shape[1], 3);
    float v[32 * 3 * 3 * 3];
    memcpy(v, t->data, sizeof v);
    for (int i = 0; i < 32 * 27; i++) {
        /* [k=5][c=1][r=0][s=2] in PyTorch's order */
        float want = i == ((5 * 3 + 1) * 3 + 0) * 3 + 2 ? 42.0f : 0.0f;
        if (v[i] != want) fail_msg("0.0.weight[%d] = %g, want %g", i, v[i], want);
    }
    t = st_find(&f, c64->name);
    assert_int_equal(t->shape[0], 64);
    assert_int_equal(t->shape[1], 64);
    float *w = xmalloc(t->bytes);
    memcpy(w, t->data, t->bytes);
    for (int k = 0; k < 64; k++)
        for (int c = 0; c < 64; c++)
            for (int r = 0; r < 3; r++)
                for (int s = 0; s < 3; s++)
                    assert_true(w[((k * 64 + c) * 3 + r) * 3 + s] == (float)(((k * 3 + r) * 3 + s) * 64 + c));
    free(w);
    t = st_find(&f, "11.weight");
    assert_int_equal(t->shape[0], 10);
    assert_int_equal(t->shape[1], 512);
    assert_int_equal(memcmp(t->data, params + fc->offset, t->bytes), 0);
    st_close(&f);
    free(params), free(stats);
    model_free(m);
}

/* ---- malformed files ---- */

/* A file image: 8-byte length (the JSON's unless hlen given), the JSON, then ndata zero bytes. */
static unsigned char *image(const char *json, uint64_t hlen, size_t ndata, size_t *size) {
    size_t n = strlen(json);
    if (hlen == UINT64_MAX) hlen = n;
    *size = 8 + n + ndata;
    unsigned char *b = xcalloc(*size + 1, 1);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(b + 8, json, n);
    return b;
}

static void expect_bad(const char *json, uint64_t hlen, size_t ndata, const char *what) {
    size_t size;
    unsigned char *b = image(json, hlen, ndata, &size);
    StFile f;
    char err[512] = "";
    int rc = st_parse(b, size, "bad.st", &f, err, sizeof err);
    if (rc == 0) fail_msg("accepted a bad file (%s): %s", what, json);
    ASSERT_STARTS(err, "bad.st: ");
    ASSERT_HAS(err, what);
    assert_int_equal(f.count, 0);
    assert_null(f.blob);
    free(b);
}

static void test_bad_files(void **state) {
    (void)state;
    StFile f;
    char err[512];
    /* Empty and too short, from disk so the message names the path. */
    const char *empty = in_dir("empty.st");
    spit(empty, "", 0);
    assert_int_equal(st_read(empty, &f, err, sizeof err), -1);
    ASSERT_STARTS(err, empty);
    ASSERT_HAS(err, "empty");
    const char *seven = in_dir("seven.st");
    spit(seven, "\x10\0\0\0\0\0\0", 7);
    assert_int_equal(st_read(seven, &f, err, sizeof err), -1);
    ASSERT_STARTS(err, seven);
    ASSERT_HAS(err, "too short");
    assert_int_equal(st_read(in_dir("does-not-exist.st"), &f, err, sizeof err), -1);
    ASSERT_HAS(err, "does-not-exist.st: cannot open: No such file or directory");
    assert_int_equal(st_read(dir, &f, err, sizeof err), -1);
    ASSERT_HAS(err, "not a regular file");
    assert_int_equal(st_read_header(seven, &f, err, sizeof err), -1);
    ASSERT_STARTS(err, seven);

    assert_int_equal(st_parse("", 0, "bad.st", &f, err, sizeof err), -1);
    ASSERT_STARTS(err, "bad.st: the file is empty");
    expect_bad("", UINT64_MAX, 0, "too small for a JSON object");
    expect_bad("{}", 1000, 0, "runs past the end");
    expect_bad("{}", 1ull << 40, 0, "over the");
    expect_bad("hello, world", UINT64_MAX, 0, "expected '{'");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", UINT64_MAX, 4, "run past the end");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", UINT64_MAX, 0,
               "too many elements");
    expect_bad("{\"a\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}}", UINT64_MAX, 0,
               "too many bytes");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,0]}}", UINT64_MAX, 0,
               "too large");
    expect_bad("{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", UINT64_MAX, 1, "unsupported dtype");
    expect_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"a\":{\"dtype\":\"U8\",\"shape\":[1],"
               "\"data_offsets\":[1,2]}}",
               UINT64_MAX, 2, "\"a\" appears twice");
    expect_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", UINT64_MAX, 1, "negative");
    expect_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[1.5],\"data_offsets\":[0,1]}}", UINT64_MAX, 1, "integers");
    expect_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[01],\"data_offsets\":[0,1]}}", UINT64_MAX, 1, "leading zero");
    expect_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[2,1]}}", UINT64_MAX, 2, "end before");
    expect_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,2]}}", UINT64_MAX, 2, "needs 3 bytes");
    expect_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", UINT64_MAX, 1,
               "more than 8 dimensions");
    expect_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", UINT64_MAX, 1, "no \"data_offsets\"");
    expect_bad("{\"a\":{\"dtype\":\"U8\",\"dtype\":\"U8\"}}", UINT64_MAX, 1, "given twice");
    expect_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":1}}", UINT64_MAX, 1,
               "unexpected field");
    expect_bad("{\"a\":[1,2]}", UINT64_MAX, 0, "expected '{' opening the entry");
    expect_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}} x", UINT64_MAX, 1, "after the header");
    expect_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},}", UINT64_MAX, 1, "expected a tensor name");
    expect_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}", UINT64_MAX, 1, "expected ',' or '}'");
    /* The tensors must tile the data section exactly, as the reference implementation demands. */
    expect_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", UINT64_MAX, 2,
               "1 bytes after the last tensor");
    expect_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"b\":{\"dtype\":\"U8\",\"shape\":[1],"
               "\"data_offsets\":[2,3]}}",
               UINT64_MAX, 3, "bytes 1 to 2 of the data section belong to no tensor");
    expect_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},\"b\":{\"dtype\":\"U8\",\"shape\":[2],"
               "\"data_offsets\":[1,3]}}",
               UINT64_MAX, 3, "\"a\" and \"b\" overlap");
    expect_bad("{\"__metadata__\":{\"k\":1}}", UINT64_MAX, 0, "values must be strings");
    expect_bad("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", UINT64_MAX, 0, "metadata key \"k\" appears twice");
    expect_bad("{\"__metadata__\":{},\"__metadata__\":{}}", UINT64_MAX, 0, "__metadata__ given twice");
    expect_bad("{\"ab\\q\":{}}", UINT64_MAX, 0, "unknown escape");
    expect_bad("{\"ab\\u00zz\":{}}", UINT64_MAX, 0, "bad hex digit");
    expect_bad("{\"ab\\ud800x\":{}}", UINT64_MAX, 0, "surrogate");
    expect_bad("{\"ab\\u0000\":{}}", UINT64_MAX, 0, "\\u0000");
    expect_bad("{\"a\tb\":{}}", UINT64_MAX, 0, "control character");
    expect_bad("{\"a\xff\":{}}", UINT64_MAX, 0, "invalid UTF-8");
    expect_bad("{\"abc", UINT64_MAX, 0, "runs past the end of the header");
    expect_bad("{\"abc\\", UINT64_MAX, 0, "runs past the end of the header");

    /* What is valid: escapes, surrogate pairs, spaces anywhere, 0-dim and empty tensors. */
    size_t size;
    unsigned char *b = image(" { \"__metadata__\" : { \"k\\u00e9\\ud83d\\ude00\" : \"v\\n\\\"x\\\"\\/\" } ,\n"
                             "\"t\" : { \"shape\" : [ ] , \"dtype\" : \"I64\" , \"data_offsets\" : [ 0 , 8 ] },"
                             "\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[8,8]} }   ",
                             UINT64_MAX, 8, &size);
    b[size - 8] = 7;
    if (st_parse(b, size, "good.st", &f, err, sizeof err)) fail_msg("%s", err);
    assert_string_equal(f.meta_keys[0], "k\xc3\xa9\xf0\x9f\x98\x80");
    assert_string_equal(st_meta(&f, "k\xc3\xa9\xf0\x9f\x98\x80"), "v\n\"x\"/");
    const StTensor *t = st_find(&f, "t");
    assert_non_null(t);
    assert_int_equal(t->ndim, 0);
    assert_int_equal(*(const unsigned char *)t->data, 7);
    assert_int_equal(st_find(&f, "e")->bytes, 0);
    assert_null(st_find(&f, "nope"));
    st_close(&f);
    free(b);
}

/* Every prefix of a real checkpoint is an error naming the file, and so is every prefix of its
 * JSON header given as a complete header. */
static void test_truncated(void **state) {
    (void)state;
    Model *m = build("resnet18", 10);
    float *params = xmalloc(m->param_floats * sizeof(float)), *stats = xmalloc(m->stat_floats * sizeof(float));
    randomize(m, params, stats, 7);
    char err[512];
    const char *path = in_dir("full.safetensors");
    if (ckpt_save(path, m, params, stats, NULL, err, sizeof err)) fail_msg("%s", err);
    size_t size;
    unsigned char *full = slurp(path, &size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | full[i];
    StFile f;
    /* Every length through the header and a little past it, then in steps through the data. */
    size_t step = size / 48 + 1;
    for (size_t len = 0; len < size; len += len < 8 + hlen + 256 ? 1 : step) {
        err[0] = 0;
        if (st_parse(full, len, "cut.st", &f, err, sizeof err) == 0) fail_msg("accepted %zu of %zu bytes", len, size);
        ASSERT_STARTS(err, "cut.st: ");
    }
    if (st_parse(full, size, "cut.st", &f, err, sizeof err)) fail_msg("%s", err);
    st_close(&f);
    /* The header cut at every byte, with a length field that agrees. */
    unsigned char *h = xmalloc(8 + hlen);
    for (uint64_t cut = 0; cut < hlen; cut++) {
        for (int i = 0; i < 8; i++) h[i] = (unsigned char)(cut >> (8 * i));
        memcpy(h + 8, full + 8, cut);
        err[0] = 0;
        if (st_parse(h, 8 + cut, "cuthdr.st", &f, err, sizeof err) == 0) fail_msg("accepted a header cut at %llu", (unsigned long long)cut);
        ASSERT_STARTS(err, "cuthdr.st: ");
    }
    free(h);
    /* A few on disk, through ckpt_load: the message names the file, the model is untouched. */
    const char *cut = in_dir("cut.safetensors");
    size_t lens[] = {0, 5, 8, 8 + (size_t)hlen / 2, 8 + (size_t)hlen, size / 2, size - 1};
    Model *m2 = build("resnet18", 10);
    float *p2 = sentinel_block(m2->param_floats), *s2 = sentinel_block(m2->stat_floats);
    float *p2copy = sentinel_block(m2->param_floats);
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        spit(cut, full, lens[i]);
        assert_int_equal(ckpt_load(cut, m2, p2, s2, err, sizeof err), -1);
        ASSERT_STARTS(err, cut);
        /* The header alone is no better: the data it describes is not all there. */
        assert_int_equal(st_read_header(cut, &f, err, sizeof err), -1);
        ASSERT_STARTS(err, cut);
    }
    assert_int_equal(memcmp(p2, p2copy, m2->param_floats * sizeof(float)), 0);
    free(full), free(params), free(stats), free(p2), free(s2), free(p2copy);
    model_free(m), model_free(m2);
}

/* Random bytes, random "JSON", and a valid small file with bytes flipped in its header. */
static void test_random_bytes(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 99);
    unsigned char buf[600];
    StFile f;
    char err[512];
    for (int it = 0; it < 3000; it++) {
        size_t n = rng_below(&r, sizeof buf);
        for (size_t i = 0; i < n; i++) buf[i] = (unsigned char)rng_u64(&r);
        if (it % 2 && n >= 8) { /* a consistent length, so the JSON parser sees the noise */
            uint64_t h = rng_below(&r, (uint32_t)n - 7);
            for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(h >> (8 * i));
            if (it % 4 == 1) buf[8] = '{';
        }
        err[0] = 0;
        int rc = st_parse(buf, n, "rand.st", &f, err, sizeof err);
        if (rc == 0) st_close(&f);
        else ASSERT_STARTS(err, "rand.st: ");
    }
    /* Mutations of a valid file. */
    StWriter *w = st_writer_new();
    float data[6] = {1, 2, 3, 4, 5, 6};
    int64_t s23[2] = {2, 3}, s6[1] = {6};
    st_add(w, "a.weight", ST_F32, 2, s23, data);
    st_add(w, "b", ST_U8, 1, s6, data);
    st_add(w, "c", ST_I64, 0, NULL, data);
    st_add_meta(w, "arch", "x\"\\\xc3\xa9");
    const char *path = in_dir("small.st");
    if (st_write(w, path, err, sizeof err)) fail_msg("%s", err);
    st_writer_free(w);
    size_t size;
    unsigned char *good = slurp(path, &size);
    if (st_parse(good, size, "small.st", &f, err, sizeof err)) fail_msg("%s", err);
    assert_string_equal(st_meta(&f, "arch"), "x\"\\\xc3\xa9");
    st_close(&f);
    unsigned char *mut = xmalloc(size);
    int rejected = 0;
    for (int it = 0; it < 20000; it++) {
        memcpy(mut, good, size);
        int flips = 1 + (int)rng_below(&r, 3);
        for (int k = 0; k < flips; k++) {
            size_t at = rng_below(&r, (uint32_t)size);
            mut[at] = it % 3 ? (unsigned char)rng_u64(&r) : (unsigned char)"{}[]\",:0123456789 \\u"[rng_below(&r, 21)];
        }
        err[0] = 0;
        if (st_parse(mut, size, "mut.st", &f, err, sizeof err) == 0) st_close(&f);
        else {
            ASSERT_STARTS(err, "mut.st: ");
            rejected++;
        }
    }
    assert_true(rejected > 1000);
    free(good), free(mut);
}

/* ---- strict loading ---- */

static void save_random(const char *arch, int classes, const char *path, uint64_t seed) {
    Model *m = build(arch, classes);
    float *params = xmalloc(m->param_floats * sizeof(float)), *stats = xmalloc(m->stat_floats * sizeof(float));
    randomize(m, params, stats, seed);
    char err[512];
    if (ckpt_save(path, m, params, stats, NULL, err, sizeof err)) fail_msg("%s", err);
    free(params), free(stats);
    model_free(m);
}

static int load_into(const char *arch, int classes, const char *path, char *err, size_t errlen) {
    Model *m = build(arch, classes);
    float *p = sentinel_block(m->param_floats), *s = sentinel_block(m->stat_floats);
    float *pc = sentinel_block(m->param_floats);
    int rc = ckpt_load(path, m, p, s, err, errlen);
    if (rc) assert_int_equal(memcmp(p, pc, m->param_floats * sizeof(float)), 0); /* untouched on error */
    free(p), free(s), free(pc);
    model_free(m);
    return rc;
}

static void test_wrong_model(void **state) {
    (void)state;
    const char *path = in_dir("x18.safetensors");
    save_random("xresnet18", 10, path, 5);
    char err[2048];
    /* xresnet18 into xresnet34: the blocks xresnet34 has on top are missing. */
    assert_int_equal(load_into("xresnet34", 10, path, err, sizeof err), -1);
    ASSERT_STARTS(err, path);
    ASSERT_HAS(err, "does not fit model xresnet34");
    ASSERT_HAS(err, "96 problems (96 missing)");
    ASSERT_HAS(err, "the file holds xresnet18 with 10 classes");
    ASSERT_HAS(err, "missing \"4.2.convpath.0.0.weight\"");
    ASSERT_HAS(err, "missing \"4.2.convpath.0.1.num_batches_tracked\"");
    ASSERT_HAS(err, " more");
    assert_true(strlen(err) < sizeof err);
    /* A tiny buffer still gets a whole, terminated message. */
    char small[100];
    assert_int_equal(load_into("xresnet34", 10, path, small, sizeof small), -1);
    ASSERT_STARTS(small, path);
    /* classes 10 into 1000: both shapes of the head. */
    assert_int_equal(load_into("xresnet18", 1000, path, err, sizeof err), -1);
    ASSERT_HAS(err, "2 problems (2 wrong shape)");
    ASSERT_HAS(err, "\"11.weight\" has shape [10, 512] in the file, [1000, 512] in the model");
    ASSERT_HAS(err, "\"11.bias\" has shape [10] in the file, [1000] in the model");
    /* A different family: everything missing and everything unexpected, summarised. */
    assert_int_equal(load_into("resnet18", 10, path, err, sizeof err), -1);
    ASSERT_HAS(err, "missing \"conv1.weight\"");
    ASSERT_HAS(err, "missing, ");
    ASSERT_HAS(err, "unexpected)");
    ASSERT_HAS(err, " more");
}

/* Copy a checkpoint through the writer with edits: drop one tensor, add one, change a dtype,
 * drop the metadata (a file from PyTorch has none of ours). */
typedef struct {
    const char *drop, *add, *as_name;
    StDType as_dtype;
    int no_meta;
} Edit;

static void rewrite(const char *src, const char *dst, Edit e) {
    StFile f;
    char err[512];
    if (st_read(src, &f, err, sizeof err)) fail_msg("%s", err);
    StWriter *w = st_writer_new();
    void *converted = NULL;
    for (int i = 0; i < f.count; i++) {
        const StTensor *t = &f.tensors[i];
        if (e.drop && !strcmp(t->name, e.drop)) continue;
        if (e.as_name && !strcmp(t->name, e.as_name)) {
            size_t n = t->bytes / 4;
            const float *v = t->data;
            unsigned char *c = converted = xmalloc(n * 8);
            for (size_t j = 0; j < n; j++) {
                float x;
                memcpy(&x, &v[j], 4);
                uint32_t bits;
                memcpy(&bits, &x, 4);
                if (e.as_dtype == ST_BF16) { uint16_t h = (uint16_t)(bits >> 16); memcpy(c + 2 * j, &h, 2); }
                else if (e.as_dtype == ST_F16) { _Float16 h = (_Float16)x; memcpy(c + 2 * j, &h, 2); }
                else if (e.as_dtype == ST_F64) { double d = x; memcpy(c + 8 * j, &d, 8); }
                else { int32_t k = (int32_t)x; memcpy(c + 4 * j, &k, 4); }
            }
            st_add(w, t->name, e.as_dtype, t->ndim, t->shape, converted);
            continue;
        }
        st_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    float one = 1;
    if (e.add) st_add(w, e.add, ST_F32, 0, NULL, &one);
    for (int i = 0; i < f.nmeta && !e.no_meta; i++) st_add_meta(w, f.meta_keys[i], f.meta_values[i]);
    if (st_write(w, dst, err, sizeof err)) fail_msg("%s", err);
    st_writer_free(w);
    st_close(&f);
    free(converted);
}

static void test_edited_files(void **state) {
    (void)state;
    const char *src = in_dir("tiny.safetensors"), *dst = in_dir("edit.safetensors");
    Model *m = tiny(10);
    float *params = xmalloc(m->param_floats * sizeof(float)), *stats = xmalloc(m->stat_floats * sizeof(float));
    randomize(m, params, stats, 11);
    /* Values exactly representable in F16 and BF16 for the tensors that get converted. */
    const Param *fc = &m->params[m->nparams - 2], *fcb = &m->params[m->nparams - 1];
    assert_string_equal(fc->name, "fc.weight");
    for (size_t j = 0; j < fc->count; j++) params[fc->offset + j] = (float)((int)(j % 200) - 100) / 64.0f;
    for (size_t j = 0; j < fcb->count; j++) params[fcb->offset + j] = (float)j * 0.25f - 1.0f;
    char err[2048];
    if (ckpt_save(src, m, params, stats, NULL, err, sizeof err)) fail_msg("%s", err);

    Model *m2 = tiny(10);
    float *p2 = sentinel_block(m2->param_floats), *s2 = sentinel_block(m2->stat_floats);
    /* No metadata at all, fc.weight as F16, fc.bias as BF16, a conv weight as F64: loads, exactly. */
    rewrite(src, dst, (Edit){.no_meta = 1, .as_name = "fc.weight", .as_dtype = ST_F16});
    if (ckpt_load(dst, m2, p2, s2, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(memcmp(p2 + fc->offset, params + fc->offset, fc->count * 4), 0);
    rewrite(src, dst, (Edit){.as_name = "fc.bias", .as_dtype = ST_BF16});
    if (ckpt_load(dst, m2, p2, s2, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(memcmp(p2 + fcb->offset, params + fcb->offset, fcb->count * 4), 0);
    rewrite(src, dst, (Edit){.as_name = "layer1.0.conv1.weight", .as_dtype = ST_F64});
    if (ckpt_load(dst, m2, p2, s2, err, sizeof err)) fail_msg("%s", err);
    for (int i = 0; i < m->nparams; i++)
        if (memcmp(params + m->params[i].offset, p2 + m->params[i].offset, m->params[i].count * 4))
            fail_msg("%s differs", m->params[i].name);
    /* An integer tensor where floats belong, a missing key, an unexpected key: all reported. */
    rewrite(src, dst, (Edit){.as_name = "bn1.bias", .as_dtype = ST_I32, .drop = "layer1.0.bn1.running_var", .add = "extra.scale"});
    float *p3 = sentinel_block(m2->param_floats), *p3copy = sentinel_block(m2->param_floats);
    assert_int_equal(ckpt_load(dst, m2, p3, s2, err, sizeof err), -1);
    assert_int_equal(memcmp(p3, p3copy, m2->param_floats * sizeof(float)), 0);
    free(p3), free(p3copy);
    ASSERT_STARTS(err, dst);
    ASSERT_HAS(err, "3 problems (1 missing, 1 unexpected, 1 wrong dtype)");
    ASSERT_HAS(err, "\"bn1.bias\" is I32, expected F32");
    ASSERT_HAS(err, "missing \"layer1.0.bn1.running_var\"");
    ASSERT_HAS(err, "unexpected \"extra.scale\"");
    free(params), free(stats), free(p2), free(s2);
    model_free(m), model_free(m2);
}

/* ---- training state ---- */

static void test_train_state(void **state) {
    (void)state;
    Model *m = tiny(10), *m2 = tiny(10);
    float *params = xmalloc(m->param_floats * 4), *stats = xmalloc(m->stat_floats * 4);
    float *am = xmalloc(m->param_floats * 4), *av = xmalloc(m->param_floats * 4);
    randomize(m, params, stats, 3);
    randomize(m, am, stats, 4);
    randomize(m, av, stats, 5);
    char id[CKPT_ID_CHARS + 1], id2[CKPT_ID_CHARS + 1], err[1024];
    ckpt_new_id(id);
    ckpt_new_id(id2);
    assert_string_not_equal(id, id2);
    const char *meta[] = {CKPT_ID_KEY, id, "stage", "1", "epoch", "2", "step", "1234", "rng", "0123456789abcdef", NULL};
    char model_path[512], train_path[512];
    snprintf(model_path, sizeof model_path, "%s", in_dir("e2.safetensors"));
    assert_int_equal(ckpt_train_path(model_path, train_path, sizeof train_path), 0);
    ASSERT_HAS(train_path, "/e2.train.safetensors");
    if (ckpt_save_train(train_path, m, am, av, meta, err, sizeof err)) fail_msg("%s", err);
    if (ckpt_save(model_path, m, params, stats, meta, err, sizeof err)) fail_msg("%s", err);
    if (ckpt_check_pair(model_path, train_path, err, sizeof err)) fail_msg("%s", err);

    float *am2 = sentinel_block(m->param_floats), *av2 = sentinel_block(m->param_floats);
    StFile meta_out;
    if (ckpt_load_train(train_path, m2, am2, av2, &meta_out, err, sizeof err)) fail_msg("%s", err);
    for (int i = 0; i < m->nparams; i++) {
        const Param *p = &m->params[i];
        assert_int_equal(memcmp(am + p->offset, am2 + p->offset, p->count * 4), 0);
        assert_int_equal(memcmp(av + p->offset, av2 + p->offset, p->count * 4), 0);
    }
    assert_string_equal(st_meta(&meta_out, "step"), "1234");
    assert_string_equal(st_meta(&meta_out, "format"), CKPT_TRAIN_FORMAT);
    assert_null(meta_out.blob);
    assert_non_null(st_find(&meta_out, "conv1.weight.exp_avg_sq"));
    st_close(&meta_out);

    /* A model saved later with another id no longer matches the training state. */
    const char *meta2[] = {CKPT_ID_KEY, id2, NULL};
    if (ckpt_save(model_path, m, params, stats, meta2, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(ckpt_check_pair(model_path, train_path, err, sizeof err), -1);
    ASSERT_STARTS(err, train_path);
    ASSERT_HAS(err, id);
    ASSERT_HAS(err, id2);
    if (ckpt_save(model_path, m, params, stats, NULL, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(ckpt_check_pair(model_path, train_path, err, sizeof err), -1);
    ASSERT_STARTS(err, model_path);
    ASSERT_HAS(err, "no \"checkpoint_id\"");

    /* Mixing up the two files is a clear error; so is training state without an id. */
    assert_int_equal(ckpt_load(train_path, m2, am2, av2, err, sizeof err), -1);
    ASSERT_HAS(err, "training-state file");
    assert_int_equal(ckpt_load_train(model_path, m2, am2, av2, NULL, err, sizeof err), -1);
    ASSERT_HAS(err, "not a cnntrain training-state file");
    assert_int_equal(ckpt_save_train(in_dir("noid.safetensors"), m, am, av, NULL, err, sizeof err), -1);
    ASSERT_HAS(err, "checkpoint_id");
    const char *clash[] = {"arch", "other", NULL};
    assert_int_equal(ckpt_save(in_dir("clash.safetensors"), m, params, stats, clash, err, sizeof err), -1);
    ASSERT_HAS(err, "metadata key \"arch\" added twice");
    assert_int_equal(access(in_dir("clash.safetensors"), F_OK), -1);

    char tp[64];
    assert_int_equal(ckpt_train_path("runs/a/final.ckpt", tp, sizeof tp), 0);
    assert_string_equal(tp, "runs/a/final.train.ckpt");
    assert_int_equal(ckpt_train_path("runs/a.b/model", tp, sizeof tp), 0);
    assert_string_equal(tp, "runs/a.b/model.train");
    assert_int_equal(ckpt_train_path("x.safetensors", tp, 8), -1);
    free(params), free(stats), free(am), free(av), free(am2), free(av2);
    model_free(m), model_free(m2);
}

/* ---- atomic writing ---- */

static void write_small(const char *path, float value, int expect_ok, char *err, size_t errlen, size_t n) {
    float *v = xmalloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = value;
    StWriter *w = st_writer_new();
    int64_t shape[1] = {(int64_t)n};
    st_add(w, "v", ST_F32, 1, shape, v);
    int rc = st_write(w, path, err, errlen);
    st_writer_free(w);
    free(v);
    if (expect_ok && rc) fail_msg("%s", err);
    if (!expect_ok && !rc) fail_msg("writing %s should have failed", path);
}

static void assert_holds(const char *path, float value) {
    StFile f;
    char err[512];
    if (st_read(path, &f, err, sizeof err)) fail_msg("%s", err);
    float x;
    memcpy(&x, st_find(&f, "v")->data, 4);
    assert_true(x == value);
    st_close(&f);
}

/* Writing into an unwritable folder fails with the path and the reason; 0 when it does. */
static int write_denied(const char *path, char *err, size_t errlen) {
    float v = 2;
    int64_t shape[1] = {1};
    StWriter *w = st_writer_new();
    st_add(w, "v", ST_F32, 1, shape, &v);
    int rc = st_write(w, path, err, errlen);
    st_writer_free(w);
    if (rc == 0) return fprintf(stderr, "writing %s should have failed\n", path), 1;
    if (strncmp(err, path, strlen(path)) || !strstr(err, "Permission denied"))
        return fprintf(stderr, "unexpected message: %s\n", err), 1;
    return 0;
}

static void test_atomic_write(void **state) {
    (void)state;
    char err[1024];
    /* A missing folder. */
    const char *missing = in_dir("no/such/folder/x.safetensors");
    write_small(missing, 1, 0, err, sizeof err, 4);
    ASSERT_STARTS(err, missing);
    ASSERT_HAS(err, "No such file or directory");

    /* Over an existing file: replaced (the temporary names are unique per write: util.h's
     * atomic_open, so none can be in the way). */
    const char *path = in_dir("old.safetensors");
    write_small(path, 0, 1, err, sizeof err, 4);
    write_small(path, 1, 1, err, sizeof err, 4);
    assert_holds(path, 1);

    /* The target is a folder: refused before anything is written. */
    const char *folder = in_dir("a-folder");
    assert_int_equal(mkdir(folder, 0755), 0);
    write_small(folder, 2, 0, err, sizeof err, 4);
    ASSERT_STARTS(err, folder);
    ASSERT_HAS(err, "exists and is a folder, not a regular file: not replaced");
    assert_int_equal(count_temp_files(dir), 0);

    /* A write that fails halfway (file size limit): old file intact, no temporary file left. */
    struct rlimit old;
    getrlimit(RLIMIT_FSIZE, &old);
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = {4096, old.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    write_small(path, 3, 0, err, sizeof err, 1 << 16);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    ASSERT_STARTS(err, path);
    ASSERT_HAS(err, "File too large");
    assert_holds(path, 1);
    assert_int_equal(count_temp_files(dir), 0);

    /* A folder we may not write to. Root may write anywhere, so as root the write runs in a child
     * that drops to the unprivileged uid 65534. */
    const char *ro = in_dir("ro");
    char rofile[600];
    assert_int_equal(mkdir(ro, 0755), 0);
    snprintf(rofile, sizeof rofile, "%s/m.safetensors", ro);
    write_small(rofile, 1, 1, err, sizeof err, 4);
    chmod(ro, 0555);
    if (geteuid() != 0) {
        assert_int_equal(write_denied(rofile, err, sizeof err), 0);
    } else {
        chmod(dir, 0711); /* let the child reach ro */
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            if (setgid(65534) || setuid(65534)) _exit(77);
            _exit(write_denied(rofile, err, sizeof err) ? 1 : 0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        chmod(dir, 0700);
        assert_true(WIFEXITED(status));
        if (WEXITSTATUS(status) == 77) fprintf(stderr, "(could not drop privileges: unwritable-folder case skipped)\n");
        else assert_int_equal(WEXITSTATUS(status), 0);
    }
    chmod(ro, 0755);
    assert_holds(rofile, 1);
    assert_int_equal(count_temp_files(dir), 0);

    /* Success replaces the old file and leaves nothing behind. */
    write_small(path, 4, 1, err, sizeof err, 1000);
    assert_holds(path, 4);
    assert_int_equal(count_temp_files(dir), 0);

    /* Bad writer calls are reported by st_write, and nothing is written. */
    StWriter *w = st_writer_new();
    float x = 0;
    st_add(w, "a", ST_F32, 0, NULL, &x);
    st_add(w, "a", ST_F32, 0, NULL, &x);
    const char *dup = in_dir("dup.safetensors");
    assert_int_equal(st_write(w, dup, err, sizeof err), -1);
    ASSERT_STARTS(err, dup);
    ASSERT_HAS(err, "\"a\" added twice");
    assert_int_equal(access(dup, F_OK), -1);
    st_writer_free(w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_xresnet18),
        cmocka_unit_test(test_roundtrip_resnet18),
        cmocka_unit_test(test_conv_transposed),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_wrong_model),
        cmocka_unit_test(test_edited_files),
        cmocka_unit_test(test_train_state),
        cmocka_unit_test(test_atomic_write),
    };
    return cmocka_run_group_tests(tests, test_dir_setup, test_dir_teardown);
}
