/* gpu_augment.c: the cuda backend's input pipeline against the cpu backend's (the oracle):
 * - warp_batch on real JPEGs (colour and greyscale Imagenette images, 400x300 Cassava leaves) and
 *   on odd-sized crops of them, for every transform kind and sampling path (plain bilinear, the
 *   separable and the general antialiased resize, perspective, reflection and zero padding,
 *   lighting), at odd output sides, with ImageNet's and other channel statistics;
 * - the same in fp16 and bf16 where backend_set_precision gives that dtype;
 * - upload_async + upload_wait double buffering through device_feed, batches issued back to back
 *   with other work in between, every host buffer scribbled over as soon as upload_wait allows;
 * - the loader end to end: BATCH_RAW with the cuda backend's pinned buffers + device_feed on the
 *   GPU against BATCH_F32 on the CPU, same seed and epoch.
 * Plain C, no cmocka. One line per case; exits non-zero if any case fails, 0 with a "skipped" line
 * when no GPU is usable. CNNTRAIN_GPU_QUICK=1 runs fewer and smaller cases (compute-sanitizer).
 *
 * Tolerances: fp32, 1e-5 absolute on the normalised values (the kernel repeats the CPU's
 * arithmetic in the same order; only the lighting table's exp() may differ in a last bit, so most
 * cases are identical, and the count of differing values is printed); fp16 / bf16, one unit in
 * the last place of the fp32 value (round to nearest gives half of one), plus the fp32 tolerance. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/augment.h"
#include "backend/backend.h"
#include "pipeline/dataset.h"
#include "pipeline/device_feed.h"
#include "pipeline/image.h"
#include "pipeline/loader.h"
#include "base/rng.h"
#include "suite.h"
#include "pipeline/synthetic.h"

static const double TOL_F32 = 1e-5;

static Backend *cpu, *gpu;
static int ncases, nfailed, quick;

/* ---- reporting ---- */

static void report(const char *name, double err, double tol, const char *detail) {
    int ok = err <= tol; /* NaN fails */
    ncases++;
    if (!ok) nfailed++;
    printf("%s %-70s err=%.2e tol=%.0e %s\n", ok ? "PASS" : "FAIL", name, err, tol, detail ? detail : "");
    fflush(stdout);
}

static void *xalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "gpu_augment: out of host memory\n");
        exit(2);
    }
    return p;
}

/* ---- images ---- */

typedef struct {
    int w, h, ch; /* ch 1: grey, packed with one channel as the loader packs it */
    uint8_t *px;
    char name[96];
} Img;

#define MAX_IMGS 96
static Img imgs[MAX_IMGS];
static int nimgs;
static char data_root[256]; /* "" when the shared data is missing */

static int is_grey(const Image *im) {
    for (size_t i = 0; i < (size_t)im->w * im->h; i++)
        if (im->rgb[3 * i] != im->rgb[3 * i + 1] || im->rgb[3 * i] != im->rgb[3 * i + 2]) return 0;
    return 1;
}

static void add_image(const Image *im, const char *name) {
    if (nimgs == MAX_IMGS) return;
    Img *d = &imgs[nimgs++];
    d->w = im->w;
    d->h = im->h;
    d->ch = is_grey(im) ? 1 : 3;
    d->px = xalloc((size_t)im->w * im->h * d->ch);
    for (size_t i = 0; i < (size_t)im->w * im->h; i++)
        for (int c = 0; c < d->ch; c++) d->px[i * d->ch + c] = im->rgb[3 * i + c];
    snprintf(d->name, sizeof d->name, "%s", name);
}

/* A crop of an image (odd sizes with real content). */
static void add_crop(const Image *im, int x0, int y0, int w, int h, const char *name) {
    if (w < 1 || h < 1 || x0 + w > im->w || y0 + h > im->h) return;
    Image c = {w, h, xalloc((size_t)w * h * 3)};
    for (int y = 0; y < h; y++) memcpy(c.rgb + (size_t)y * w * 3, im->rgb + ((size_t)(y0 + y) * im->w + x0) * 3, (size_t)w * 3);
    add_image(&c, name);
    free(c.rgb);
}

static int decode(const char *path, Image *im) {
    char err[512];
    JpegOptions jo = {0, 0, 0};
    if (jpeg_decode_file(path, &jo, im, NULL, err, sizeof err)) {
        printf("     not used: %s\n", err);
        return -1;
    }
    return 0;
}

static int by_name(const void *a, const void *b) { return strcmp((const char *)a, (const char *)b); }

/* The first n file names of a folder, sorted (so the set is the same on every machine). */
static int list_dir(const char *dir, char names[][256], int n) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int k = 0;
    char(*all)[256] = xalloc(sizeof(*all) * 4096);
    for (struct dirent *e; (e = readdir(d)) && k < 4096;)
        if (e->d_name[0] != '.') snprintf(all[k++], 256, "%s", e->d_name);
    closedir(d);
    qsort(all, (size_t)k, 256, by_name);
    int m = k < n ? k : n;
    memcpy(names, all, (size_t)m * 256);
    free(all);
    return m;
}

static const char *const grey_files[] = {
    "val/n01440764/n01440764_15560.JPEG",       "val/n02102040/n02102040_1980.JPEG",
    "val/n02979186/n02979186_11410.JPEG",       "val/n03000684/n03000684_16481.JPEG",
    "val/n03028079/ILSVRC2012_val_00003351.JPEG", "val/n03394916/ILSVRC2012_val_00003620.JPEG",
    "val/n03417042/n03417042_7670.JPEG",        "val/n03425413/n03425413_12092.JPEG",
};

static void load_images(void) {
    /* gpu-deps/data: the images scripts/gpu_deps.sh copies for a GPU machine (../shared does not travel) */
    const char *roots[] = {"../shared/data", "shared/data", "gpu-deps/data"};
    for (int r = 0; r < 3 && !data_root[0]; r++) {
        char p[300];
        snprintf(p, sizeof p, "%s/imagenette2-224/val", roots[r]);
        DIR *d = opendir(p);
        if (d) {
            closedir(d);
            snprintf(data_root, sizeof data_root, "%s", roots[r]);
        }
    }
    Image im;
    char path[3072];
    if (data_root[0]) {
        static const char *classes[] = {"n01440764", "n02979186", "n03028079", "n03417042", "n03888257"};
        int per = quick ? 2 : 5;
        for (int c = 0; c < 5; c++) {
            char names[8][256], dir[400];
            snprintf(dir, sizeof dir, "%s/imagenette2-224/val/%s", data_root, classes[c]);
            int m = list_dir(dir, names, per);
            for (int i = 0; i < m; i++) {
                snprintf(path, sizeof path, "%s/%s", dir, names[i]);
                if (decode(path, &im)) continue;
                add_image(&im, names[i]);
                image_free(&im);
            }
        }
        for (size_t i = 0; i < sizeof grey_files / sizeof grey_files[0] && (!quick || i < 3); i++) {
            snprintf(path, sizeof path, "%s/imagenette2-224/%s", data_root, grey_files[i]);
            if (decode(path, &im)) continue;
            add_image(&im, grey_files[i]);
            /* odd crops of a grey one too */
            if (i == 0) add_crop(&im, 13, 7, 97, 211, "grey crop 97x211");
            image_free(&im);
        }
        char names[4][256], dir[400];
        snprintf(dir, sizeof dir, "%s/cassava-mini/train_images", data_root);
        int m = list_dir(dir, names, quick ? 1 : 3);
        for (int i = 0; i < m; i++) {
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
            if (decode(path, &im)) continue;
            add_image(&im, names[i]);
            if (i == 0) { /* odd sizes with real content */
                add_crop(&im, 0, 0, 1, 1, "crop 1x1");
                add_crop(&im, 5, 3, 3, 211, "crop 3x211");
                add_crop(&im, 17, 29, 223, 97, "crop 223x97");
                add_crop(&im, 100, 50, 157, 157, "crop 157x157");
                add_crop(&im, 1, 2, 399, 297, "crop 399x297");
            }
            image_free(&im);
        }
    } else {
        printf("gpu_augment: ../shared/data not found: synthetic images instead of real JPEGs\n");
    }
    /* Always a few synthetic ones: odd sizes, and grey ones */
    Rng r;
    rng_seed(&r, 3);
    static const int sizes[][2] = {{31, 17}, {2, 3}, {129, 255}, {64, 1}, {300, 200}, {77, 77}};
    for (int i = 0; i < 6; i++) {
        int w = sizes[i][0], h = sizes[i][1], side = w > h ? w : h;
        uint8_t *sq = xalloc((size_t)side * side * 3);
        synth_image(&r, i, side, sq);
        Image s = {w, h, xalloc((size_t)w * h * 3)};
        for (int y = 0; y < h; y++) memcpy(s.rgb + (size_t)y * w * 3, sq + (size_t)y * side * 3, (size_t)w * 3);
        if (i % 2)
            for (size_t p = 0; p < (size_t)w * h; p++) s.rgb[3 * p + 1] = s.rgb[3 * p + 2] = s.rgb[3 * p];
        char name[64];
        snprintf(name, sizeof name, "synthetic %dx%d%s", w, h, i % 2 ? " grey" : "");
        add_image(&s, name);
        free(s.rgb);
        free(sq);
    }
}

/* ---- one batch on both backends ---- */

typedef struct {
    int n;
    ImageSlot *slots;
    Warp *warps;
    uint8_t *host;  /* packed, from gpu alloc_host */
    size_t bytes;
} Pack;

/* n images starting at `first` (wrapping), warps drawn for tf from seed. */
static Pack pack_new(int first, int n, const TransformSpec *tf, uint64_t seed) {
    Pack p;
    p.n = n;
    p.slots = xalloc((size_t)n * sizeof *p.slots);
    p.warps = xalloc((size_t)n * sizeof *p.warps);
    p.bytes = 0;
    for (int i = 0; i < n; i++) {
        const Img *im = &imgs[(first + i) % nimgs];
        p.bytes += (size_t)im->w * im->h * im->ch;
    }
    p.host = gpu->ops->alloc_host(gpu, p.bytes);
    Rng r;
    rng_seed(&r, seed);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        const Img *im = &imgs[(first + i) % nimgs];
        size_t b = (size_t)im->w * im->h * im->ch;
        memcpy(p.host + off, im->px, b);
        ImageSlot s = {off, im->w, im->h, im->ch};
        p.slots[i] = s;
        Rng ri = rng_split(&r, (uint64_t)i);
        transform_draw(tf, im->w, im->h, &ri, &p.warps[i]);
        /* fastai's area pre-pooling is the loader's, on the host, before warp_batch (augment_pool.c):
         * the kernel is tested on the warp that samples the item */
        p.warps[i].pool_w = p.warps[i].pool_h = 0;
        off += b;
    }
    return p;
}

static void pack_free(Pack *p) {
    gpu->ops->free_host(gpu, p->host);
    free(p->slots);
    free(p->warps);
}

/* The cpu backend's output for a pack, NHWC fp32 (its layout) in a host array. */
static float *cpu_reference(const Pack *p, int side, const float *mean, const float *std) {
    uint8_t *img = cpu->ops->alloc(cpu, p->bytes);
    cpu->ops->upload(cpu, img, p->host, p->bytes);
    size_t count = (size_t)p->n * 3 * side * side;
    Tensor y = {cpu->ops->alloc(cpu, count * sizeof(float)), 0, 0, 0, 0, DT_F32};
    cpu->ops->warp_batch(cpu, img, p->slots, p->warps, p->n, side, mean, std, &y);
    float *out = xalloc(count * sizeof(float));
    cpu->ops->download(cpu, out, y.data, count * sizeof(float));
    cpu->ops->release(cpu, img);
    cpu->ops->release(cpu, y.data);
    return out;
}

static float bf16_to_float(uint16_t v) {
    uint32_t bits = (uint32_t)v << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static float half_to_float(uint16_t v) {
    int s = v >> 15, e = (v >> 10) & 31, m = v & 1023;
    float f = e == 0 ? ldexpf((float)m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexpf((float)(m | 1024), e - 25);
    return s ? -f : f;
}

/* Max |got - want| over count values (NaN if any is NaN); *differ counts the inexact ones. */
static double max_abs(const float *got, const float *want, size_t count, size_t *differ) {
    double m = 0;
    *differ = 0;
    for (size_t i = 0; i < count; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (isnan(d)) return NAN;
        if (got[i] != want[i]) (*differ)++;
        if (d > m) m = d;
    }
    return m;
}

/* Low precision: the worst |got - want| in units of the allowed error (one ulp of want in dt + the
 * fp32 tolerance); <= 1 passes. */
static double ulp_err(const float *got, const float *want, size_t count, DType dt, size_t *beyond_half) {
    int mant = dt == DT_BF16 ? 7 : 10;
    double worst = 0;
    *beyond_half = 0;
    for (size_t i = 0; i < count; i++) {
        double w = fabs((double)want[i]), ulp = w > 0 ? ldexp(1.0, (int)floor(log2(w)) - mant) : 0;
        if (dt == DT_F16 && ulp < ldexp(1.0, -24)) ulp = ldexp(1.0, -24); /* subnormals */
        double d = fabs((double)got[i] - (double)want[i]);
        if (isnan(d)) return NAN;
        if (d > 0.5 * ulp + TOL_F32) (*beyond_half)++;
        double e = d / (ulp + TOL_F32);
        if (e > worst) worst = e;
    }
    return worst;
}

/* warp_batch of a pack on the GPU in dt (through upload_async), against the cpu's fp32. */
static void check_pack(const char *name, const Pack *p, int side, const float *mean, const float *std, Backend *g,
                       DType dt) {
    size_t count = (size_t)p->n * 3 * side * side;
    float *want = cpu_reference(p, side, mean, std);
    uint8_t *img = g->ops->alloc(g, p->bytes);
    g->ops->sync(g); /* alloc's zero fill before the copy (backend.h) */
    g->ops->upload_async(g, img, p->host, p->bytes, 0);
    Tensor y = {g->ops->alloc(g, count * dtype_size(dt)), 0, 0, 0, 0, dt};
    g->ops->warp_batch(g, img, p->slots, p->warps, p->n, side, mean, std, &y);
    g->ops->upload_wait(g, 0);
    float *got = xalloc(count * sizeof(float));
    char detail[160];
    if (y.n != p->n || y.c != 3 || y.h != side || y.w != side || y.dtype != dt) {
        snprintf(detail, sizeof detail, "shape (%d,%d,%d,%d) %s", y.n, y.c, y.h, y.w, dtype_name(y.dtype));
        report(name, NAN, 0, detail);
    } else if (dt == DT_F32) {
        g->ops->download(g, got, y.data, count * sizeof(float)); /* NHWC, as the cpu's */
        size_t differ;
        double e = max_abs(got, want, count, &differ);
        snprintf(detail, sizeof detail, "(%zu of %zu values not identical)", differ, count);
        report(name, e, TOL_F32, detail);
    } else {
        uint16_t *raw = xalloc(count * 2);
        g->ops->download(g, raw, y.data, count * 2);
        for (size_t i = 0; i < count; i++) got[i] = dt == DT_BF16 ? bf16_to_float(raw[i]) : half_to_float(raw[i]);
        free(raw);
        size_t beyond;
        double e = ulp_err(got, want, count, dt, &beyond);
        snprintf(detail, sizeof detail, "(in ulps of %s; %zu of %zu beyond half an ulp)", dtype_name(dt), beyond, count);
        report(name, e, 1.0, detail);
    }
    g->ops->release(g, img);
    g->ops->release(g, y.data);
    free(got);
    free(want);
}

/* ---- the cases ---- */

typedef struct {
    const char *label;
    TransformSpec tf;
} Tf;

static int make_transforms(Tf *t, int side) {
    int n = 0;
    t[n].label = "fastai train presize=0 (plain, perspective)";
    t[n++].tf = transform_defaults(TF_FASTAI, side, 1);
    t[n].label = "fastai train presize<src (general antialiasing)";
    t[n].tf = transform_defaults(TF_FASTAI, side, 1);
    t[n].tf.presize = side + side / 3 > 8 ? side + side / 3 : 8;
    t[n++].tf.min_scale = 0.75f;
    t[n].label = "fastai train presize=460 (upscale)";
    t[n].tf = transform_defaults(TF_FASTAI, side, 1);
    t[n].tf.presize = 460;
    t[n++].tf.min_scale = 0.75f;
    t[n].label = "fastai valid";
    t[n].tf = transform_defaults(TF_FASTAI, side, 0);
    t[n++].tf.presize = side + 7;
    t[n].label = "rrc train (separable antialiasing, flips)";
    t[n++].tf = transform_defaults(TF_RANDOM_RESIZED_CROP, side, 1);
    t[n].label = "resize valid r=1.25";
    t[n].tf = transform_defaults(TF_RESIZE_CENTER_CROP, side, 0);
    t[n++].tf.resize_ratio = 1.25f;
    t[n].label = "center crop (zero padding)";
    t[n++].tf = transform_defaults(TF_CENTER_CROP, side, 0);
    return n;
}

static void test_warp(void) {
    static const int sides_full[] = {1, 7, 63, 65, 128, 224}, sides_quick[] = {7, 65};
    const int *sides = quick ? sides_quick : sides_full;
    int nsides = quick ? 2 : 6;
    static const float mean2[3] = {0.5f, 0.25f, 0.0f}, std2[3] = {0.5f, 0.125f, 1.0f};
    for (int si = 0; si < nsides; si++) {
        Tf t[8];
        int nt = make_transforms(t, sides[si]);
        for (int k = 0; k < nt; k++) {
            int first = (si * 7 + k * 3) % nimgs, n = quick ? 6 : nimgs;
            Pack p = pack_new(first, n, &t[k].tf, 1000 + (uint64_t)si * 17 + (uint64_t)k);
            char name[200];
            snprintf(name, sizeof name, "warp_batch fp32 side=%d n=%d %s", sides[si], n, t[k].label);
            check_pack(name, &p, sides[si], imagenet_mean, imagenet_std, gpu, DT_F32);
            if (k == 1 || k == 4) {
                snprintf(name, sizeof name, "warp_batch fp32 side=%d n=%d %s, other mean/std", sides[si], n, t[k].label);
                check_pack(name, &p, sides[si], mean2, std2, gpu, DT_F32);
            }
            pack_free(&p);
        }
    }
}

static void test_low_precision(void) {
    const DType dts[2] = {DT_BF16, DT_F16};
    for (int d = 0; d < 2; d++) {
        char err[512];
        Backend *g = backend_create("cuda", err, sizeof err);
        if (!g) {
            report("cuda backend for low precision", NAN, 0, err);
            continue;
        }
        if (backend_set_precision(g, dts[d]) != dts[d]) {
            printf("SKIP warp_batch %s: backend_set_precision does not give %s on this build/device\n",
                   dtype_name(dts[d]), dtype_name(dts[d]));
            backend_destroy(g);
            continue;
        }
        int side = quick ? 33 : 129;
        Tf t[8];
        int nt = make_transforms(t, side);
        for (int k = 0; k < nt; k++) {
            Pack p = pack_new(k, quick ? 5 : nimgs, &t[k].tf, 77 + (uint64_t)k);
            char name[200];
            snprintf(name, sizeof name, "warp_batch %s side=%d %s", dtype_name(dts[d]), side, t[k].label);
            check_pack(name, &p, side, imagenet_mean, imagenet_std, g, dts[d]);
            pack_free(&p);
        }
        backend_destroy(g);
    }
}

/* Batches fed back to back through device_feed, the host refilling each pinned buffer as soon as
 * upload_wait lets it (scribbling over it first), with other GPU work between batches; every
 * batch's output is kept and checked at the end. A copy that overwrote a device buffer still
 * being read, or read a host buffer being refilled, would show as a mismatch. */
static void test_double_buffering(void) {
    int nb = quick ? 4 : 10, n = quick ? 4 : 24, side = quick ? 48 : 224;
    TransformSpec tf = transform_defaults(TF_FASTAI, side, 1);
    tf.presize = side + 40;
    tf.min_scale = 0.75f;
    Pack *packs = xalloc((size_t)nb * sizeof *packs);
    size_t max_bytes = 0;
    for (int i = 0; i < nb; i++) {
        packs[i] = pack_new(i * 5, n, &tf, 500 + (uint64_t)i);
        if (packs[i].bytes > max_bytes) max_bytes = packs[i].bytes;
    }
    uint8_t *host[2] = {gpu->ops->alloc_host(gpu, max_bytes), gpu->ops->alloc_host(gpu, max_bytes)};
    size_t count = (size_t)n * 3 * side * side;
    Tensor *out = xalloc((size_t)nb * sizeof *out);
    for (int i = 0; i < nb; i++) {
        Tensor t = {gpu->ops->alloc(gpu, count * sizeof(float)), 0, 0, 0, 0, DT_F32};
        out[i] = t;
    }
    /* busy work between batches: a chain of adds on a large tensor (the "step") */
    Tensor busy = {gpu->ops->alloc(gpu, (size_t)64 << 20), 1, 1, 1, (int)((16u << 20) - 7), DT_F32};
    DeviceFeed feed;
    device_feed_init(&feed, gpu);
    gpu->ops->sync(gpu);
    for (int i = 0; i < nb; i++) {
        int k = i % 2;
        gpu->ops->upload_wait(gpu, k); /* host[k]'s previous copy has read it */
        memset(host[k], 0xA5, max_bytes);
        memcpy(host[k], packs[i].host, packs[i].bytes);
        Batch b;
        memset(&b, 0, sizeof b);
        b.n = n;
        b.size = side;
        b.index = i;
        b.pixels = host[k];
        b.pixel_bytes = packs[i].bytes;
        b.images = packs[i].slots;
        b.warps = packs[i].warps;
        device_feed_batch(&feed, &b, imagenet_mean, imagenet_std, &out[i]);
        for (int s = 0; s < (quick ? 1 : 8); s++) gpu->ops->add(gpu, &busy, &busy, &busy);
    }
    gpu->ops->sync(gpu);
    double worst = 0;
    size_t differ_all = 0;
    float *got = xalloc(count * sizeof(float));
    for (int i = 0; i < nb; i++) {
        float *want = cpu_reference(&packs[i], side, imagenet_mean, imagenet_std);
        gpu->ops->download(gpu, got, out[i].data, count * sizeof(float));
        size_t differ;
        double e = max_abs(got, want, count, &differ);
        if (!(e <= worst)) worst = e; /* keeps a NaN */
        differ_all += differ;
        free(want);
    }
    char name[160], detail[120];
    snprintf(name, sizeof name, "device_feed double buffering: %d batches of %d at %d, busy work between", nb, n, side);
    snprintf(detail, sizeof detail, "(%zu values not identical)", differ_all);
    report(name, worst, TOL_F32, detail);
    free(got);
    device_feed_free(&feed);
    gpu->ops->release(gpu, busy.data);
    for (int i = 0; i < nb; i++) {
        gpu->ops->release(gpu, out[i].data);
        pack_free(&packs[i]);
    }
    gpu->ops->free_host(gpu, host[0]);
    gpu->ops->free_host(gpu, host[1]);
    free(out);
    free(packs);
}

/* The loader's BATCH_RAW with the cuda backend (pinned buffers, waits in loader_next) through
 * device_feed, against BATCH_F32 on the CPU, for the same seed and epochs. */
static void test_loader(void) {
    if (!data_root[0]) {
        printf("SKIP loader BATCH_RAW + device_feed: no ../shared/data\n");
        return;
    }
    int count = quick ? 10 : 64;
    Sample *samples = xalloc((size_t)count * sizeof *samples);
    static const char *classes[] = {"n01440764", "n02102040", "n03000684", "n03425413"};
    int have = 0;
    for (int c = 0; c < 4 && have < count; c++) {
        char names[16][256], dir[400];
        snprintf(dir, sizeof dir, "%s/imagenette2-224/val/%s", data_root, classes[c]);
        int m = list_dir(dir, names, count / 4);
        for (int i = 0; i < m && have < count; i++) {
            samples[have].path = xalloc(strlen(dir) + strlen(names[i]) + 2);
            sprintf(samples[have].path, "%s/%s", dir, names[i]);
            samples[have].label = c;
            have++;
        }
    }
    for (size_t i = 0; i < sizeof grey_files / sizeof grey_files[0] && have < count; i++) { /* grey ones too */
        samples[have].path = xalloc(strlen(data_root) + strlen(grey_files[i]) + 32);
        sprintf(samples[have].path, "%s/imagenette2-224/%s", data_root, grey_files[i]);
        samples[have].label = 0;
        have++;
    }
    TransformSpec tfs[3];
    tfs[0] = transform_defaults(TF_FASTAI, quick ? 64 : 128, 1);
    tfs[0].presize = 160; /* 224 -> 160: general antialiasing */
    tfs[0].min_scale = 0.75f;
    tfs[1] = transform_defaults(TF_RANDOM_RESIZED_CROP, quick ? 32 : 96, 1);
    tfs[2] = transform_defaults(TF_RESIZE_CENTER_CROP, quick ? 40 : 160, 0);
    tfs[2].resize_ratio = 1.25f;
    for (int k = 0; k < 3; k++) {
        char err[512];
        LoaderSpec fs;
        memset(&fs, 0, sizeof fs);
        fs.samples = samples;
        fs.count = have;
        fs.tf = tfs[k];
        fs.batch = quick ? 4 : 16;
        fs.shuffle = 1;
        fs.threads = 4;
        fs.seed = 4242;
        fs.format = BATCH_F32;
        LoaderSpec rs = fs;
        rs.format = BATCH_RAW;
        rs.backend = gpu;
        Loader *lf = loader_create(&fs, err, sizeof err), *lr = loader_create(&rs, err, sizeof err);
        if (!lf || !lr) {
            report("loader_create", NAN, 0, err);
            return;
        }
        int S = tfs[k].size;
        size_t per = (size_t)3 * S * S;
        /* two output tensors, alternating, so a batch's warp can overlap the previous check */
        Tensor x[2];
        for (int j = 0; j < 2; j++) {
            Tensor t = {gpu->ops->alloc(gpu, (size_t)fs.batch * per * sizeof(float)), 0, 0, 0, 0, DT_F32};
            x[j] = t;
        }
        float *got = xalloc((size_t)fs.batch * per * sizeof(float));
        DeviceFeed feed;
        device_feed_init(&feed, gpu);
        gpu->ops->sync(gpu);
        double worst = 0;
        size_t differ_all = 0, values = 0;
        int batches = 0, mismatch = 0;
        for (int epoch = 0; epoch < 2; epoch++) {
            loader_start_epoch(lf, epoch, 0);
            loader_start_epoch(lr, epoch, 0);
            for (int i = 0;; i++) {
                const Batch *bf = loader_next(lf), *br = loader_next(lr);
                if (!bf || !br) {
                    mismatch |= (bf != NULL) != (br != NULL);
                    break;
                }
                if (bf->n != br->n || memcmp(bf->labels, br->labels, (size_t)bf->n * sizeof(int32_t))) mismatch = 1;
                Tensor *t = &x[i % 2];
                device_feed_batch(&feed, br, imagenet_mean, imagenet_std, t);
                gpu->ops->tensor_download(gpu, got, t); /* NCHW, as BATCH_F32 */
                size_t differ;
                double e = max_abs(got, bf->x, (size_t)bf->n * per, &differ);
                if (!(e <= worst)) worst = e;
                differ_all += differ;
                values += (size_t)bf->n * per;
                batches++;
            }
        }
        char name[200], detail[160];
        snprintf(name, sizeof name, "loader BATCH_RAW + device_feed (cuda) vs BATCH_F32 (cpu): %s side %d",
                 transform_kind_name(tfs[k].kind), S);
        snprintf(detail, sizeof detail, "(%d batches, %zu of %zu values not identical%s)", batches, differ_all, values,
                 mismatch ? "; BATCH COUNTS OR LABELS DIFFER" : "");
        report(name, mismatch ? NAN : worst, TOL_F32, detail);
        device_feed_free(&feed);
        gpu->ops->release(gpu, x[0].data);
        gpu->ops->release(gpu, x[1].data);
        free(got);
        loader_destroy(lf);
        loader_destroy(lr);
    }
    for (int i = 0; i < have; i++) free(samples[i].path);
    free(samples);
}

int main(int argc, char **argv) {
    static const char *const parts[] = {"warp", "low-precision", "double-buffering", "loader"};
    suite_args("gpu_augment", argc, argv, parts, (int)(sizeof parts / sizeof parts[0]));
    char err[512];
    /* A binary without the CUDA backend would otherwise "skip" on a machine that has a GPU. */
    if (!strstr(backend_list(), "cuda")) {
        printf("gpu_augment: FAIL: built without the CUDA backend (backends: %s); rebuild with make clean && make "
               "test-gpu\n",
               backend_list());
        return 1;
    }
    gpu = backend_create("cuda", err, sizeof err);
    if (!gpu) {
        printf("gpu_augment: no usable GPU (%s); skipped\n", err);
        return 0;
    }
    cpu = backend_create("cpu", err, sizeof err);
    if (!cpu) {
        fprintf(stderr, "gpu_augment: cannot create the cpu backend: %s\n", err);
        backend_destroy(gpu);
        return 1;
    }
    const char *q = getenv("CNNTRAIN_GPU_QUICK");
    quick = q && *q && strcmp(q, "0");
    load_images();
    int grey = 0;
    for (int i = 0; i < nimgs; i++) grey += imgs[i].ch == 1;
    printf("gpu_augment: %d images (%d grey)%s\n", nimgs, grey, quick ? ", quick" : "");

    if (suite_part("warp")) test_warp();
    if (suite_part("low-precision")) test_low_precision();
    if (suite_part("double-buffering")) test_double_buffering();
    if (suite_part("loader")) test_loader();

    gpu->ops->sync(gpu);
    char why[96];
    snprintf(why, sizeof why, "%zu bytes still counted as in use", gpu->bytes_in_use);
    report("cuda bytes_in_use back to 0 after every release", gpu->bytes_in_use ? 1 : 0, 0, gpu->bytes_in_use ? why : NULL);

    printf("gpu_augment: %d cases, %d failed (cuda vs cpu)\n", ncases, nfailed);
    for (int i = 0; i < nimgs; i++) free(imgs[i].px);
    backend_destroy(cpu);
    backend_destroy(gpu);
    return nfailed ? 1 : 0;
}
