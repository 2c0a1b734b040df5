/* pipeline/loader.c: worker threads decode and augment single images into a ring of batch buffers;
 * the consumer takes batches strictly in epoch order. Work is handed out image by image, so
 * all threads help with the next batch, and a batch buffer is reused only after the consumer
 * has given it back (by asking for the next batch).
 *
 * BATCH_RAW: a worker copies its decoded image into the batch's packed buffer at an offset it
 * reserves under the lock; a buffer too small grows (under the lock, once no worker is copying
 * into it), so after the first few batches the buffers stay put. */
#include "pipeline/loader.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pipeline/image.h"
#include "base/util.h"
#include "dist/dist.h"

typedef struct {
    Batch b;
    int filled, expected;   /* images finished / images belonging to this batch */
    unsigned char *ok;      /* per position: decoded and written */
    size_t cap;             /* BATCH_RAW: bytes allocated at b.pixels (b.pixel_bytes reserved) */
    int writers;            /* BATCH_RAW: workers copying into b.pixels now */
} Slot;

struct Loader {
    LoaderSpec spec;
    int nthreads, nslots;
    int cap;                 /* images per batch buffer: the batch, or a shard's largest part */
    int shard, shards;       /* this process's part of each batch, of shards (1: every image) */
    size_t image_floats;     /* 3 * size * size */
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv, space_cv; /* space_cv: a RAW buffer has no writers left */
    Slot *slots;
    unsigned char *bad;      /* per sample: known to be bad */
    unsigned char *bad_at_start; /* the same when this epoch's order was drawn (for resume files) */
    int nbad, reported_bad; /* bad images found / already summarised at an epoch's end */
    int dropped;             /* drop_last: this epoch's batches left out because bad images made them short */
    int *order, norder;      /* this epoch's samples, known-bad ones left out */
    Rng epoch_rng;
    int nbatches;
    int next_item, end_item; /* positions in the epoch handed to workers / to hand out */
    int epoch_items;         /* the epoch's positions in batches (end_item, until a new epoch stops the hand-out) */
    int released;            /* lowest batch still occupying a slot */
    int consumed;            /* next batch to give the consumer */
    int holding;             /* the consumer holds batch consumed-1 */
    int inflight;            /* items being processed outside the lock */
    int stop;
    char fatal[512];         /* strict mode: the first bad image */
};

static Slot *slot_of(Loader *L, int batch) { return &L->slots[batch % L->nslots]; }

/* This process's part of batch b: epoch positions [part_begin, part_end) (the whole batch unsharded).
 * From epoch_items, which stays put while a worker may still hold one of the epoch's images. */
static int part_begin(const Loader *L, int b) {
    int B = L->spec.batch, start = b * B, m = (b + 1) * B <= L->epoch_items ? B : L->epoch_items - start;
    return start + (int)((long)L->shard * m / L->shards);
}

static int part_end(const Loader *L, int b) {
    int B = L->spec.batch, start = b * B, m = (b + 1) * B <= L->epoch_items ? B : L->epoch_items - start;
    return start + (int)((long)(L->shard + 1) * m / L->shards);
}

/* The first position at or after x that belongs to this process (end_item when none is left). */
static int next_own_item(const Loader *L, int x) {
    while (x < L->end_item) {
        int b = x / L->spec.batch;
        if (x < part_begin(L, b)) x = part_begin(L, b);
        if (x < part_end(L, b)) return x;
        x = (b + 1) * L->spec.batch;
    }
    return L->end_item;
}

/* Batch b's slot, emptied for its part's images. */
static void slot_reset(Loader *L, int b) {
    Slot *s = slot_of(L, b);
    s->filled = 0;
    s->b.pixel_bytes = 0;
    s->expected = part_end(L, b) - part_begin(L, b);
}

/* BATCH_RAW memory: the backend's host staging memory when there is one. */
static uint8_t *raw_alloc(Loader *L, size_t bytes) {
    Backend *be = L->spec.backend;
    return be ? be->ops->alloc_host(be, bytes) : xmalloc(bytes ? bytes : 1);
}

static void raw_free(Loader *L, uint8_t *p) {
    Backend *be = L->spec.backend;
    if (be) be->ops->free_host(be, p);
    else free(p);
}

/* Before a RAW buffer the consumer held is reused: the backend has finished copying from it. */
static void raw_wait_uploads(Loader *L) {
    Backend *be = L->spec.backend;
    if (L->spec.format != BATCH_RAW || !be) return;
    be->ops->upload_wait(be, 0);
    be->ops->upload_wait(be, 1);
}

/* A decoded greyscale image comes out with R = G = B (the decoders convert it): one channel does. */
static int image_is_grey(const Image *im) {
    const uint8_t *p = im->rgb;
    size_t n = (size_t)im->w * im->h;
    for (size_t i = 0; i < n; i++, p += 3)
        if (p[0] != p[1] || p[0] != p[2]) return 0;
    return 1;
}

/* Copy a decoded image into its slot's packed buffer (BATCH_RAW). Called without the lock. */
static void raw_store(Loader *L, Slot *slot, int pos, const Image *img, const Warp *warp) {
    int grey = image_is_grey(img);
    size_t px = (size_t)img->w * img->h, bytes = px * (grey ? 1 : 3);
    pthread_mutex_lock(&L->mu);
    while (slot->b.pixel_bytes + bytes > slot->cap) {
        if (slot->writers > 0) { /* others are copying into the buffer: it cannot move yet */
            pthread_cond_wait(&L->space_cv, &L->mu);
            continue;
        }
        /* Grow: to 1.5x, or to a batch of images like this one, whichever is larger. */
        size_t need = slot->b.pixel_bytes + bytes, cap = slot->cap + slot->cap / 2;
        size_t guess = (size_t)L->cap * bytes + (size_t)L->cap * bytes / 4;
        cap = cap > need ? cap : need;
        cap = cap > guess ? cap : guess;
        uint8_t *p = raw_alloc(L, cap);
        if (slot->b.pixel_bytes) memcpy(p, slot->b.pixels, slot->b.pixel_bytes);
        raw_free(L, slot->b.pixels);
        slot->b.pixels = p;
        slot->cap = cap;
    }
    size_t off = slot->b.pixel_bytes;
    slot->b.pixel_bytes += bytes;
    slot->writers++;
    pthread_mutex_unlock(&L->mu);

    uint8_t *dst = slot->b.pixels + off;
    if (grey)
        for (size_t i = 0; i < px; i++) dst[i] = img->rgb[3 * i];
    else
        memcpy(dst, img->rgb, bytes);
    ImageSlot is = {off, img->w, img->h, grey ? 1 : 3};
    slot->b.images[pos] = is;
    slot->b.warps[pos] = *warp;

    pthread_mutex_lock(&L->mu);
    if (--slot->writers == 0) pthread_cond_broadcast(&L->space_cv);
    pthread_mutex_unlock(&L->mu);
}

/* Decode and augment the image at position `item` of the epoch into its batch slot. */
static void process_item(Loader *L, int item, int *sample_out, int *ok_out, char *err, size_t errlen) {
    const LoaderSpec *s = &L->spec;
    int sample = L->order[item], batch = item / s->batch, pos = item - part_begin(L, batch);
    Slot *slot = slot_of(L, batch);
    Rng rng = rng_split(&L->epoch_rng, (uint64_t)item);
    JpegOptions jo = {transform_min_source_side(&s->tf), s->max_pixels, s->max_file_bytes};
    Image img;
    *sample_out = sample;
    *ok_out = image_decode_file(s->samples[sample].path, &jo, &img, NULL, err, errlen) == 0;
    if (!*ok_out) return;
    Warp warp;
    transform_draw(&s->tf, img.w, img.h, &rng, &warp);
    Image pooled; /* fastai's area pre-pooling: done here, so no backend's warp_batch needs it */
    if (warp_prepool(&warp, &img, &pooled)) {
        image_free(&img);
        img = pooled;
    }
    size_t px = (size_t)s->tf.size * s->tf.size;
    if (s->format == BATCH_F32)
        warp_apply_f32(&warp, &img, s->tf.size, slot->b.x + (size_t)pos * 3 * px);
    else if (s->format == BATCH_U8)
        warp_apply_u8(&warp, &img, s->tf.size, slot->b.u8 + (size_t)pos * 3 * px);
    else
        raw_store(L, slot, pos, &img, &warp);
    slot->b.labels[pos] = s->samples[sample].label;
    image_free(&img);
}

static void *worker(void *arg) {
    Loader *L = arg;
    char err[512];
    pthread_mutex_lock(&L->mu);
    for (;;) {
        while (!L->stop && !(L->next_item < L->end_item && L->next_item / L->spec.batch < L->released + L->nslots))
            pthread_cond_wait(&L->work_cv, &L->mu);
        if (L->stop) break;
        int item = L->next_item, sample, ok;
        L->next_item = next_own_item(L, item + 1);
        L->inflight++;
        pthread_mutex_unlock(&L->mu);
        process_item(L, item, &sample, &ok, err, sizeof err);
        pthread_mutex_lock(&L->mu);
        L->inflight--;
        Slot *slot = slot_of(L, item / L->spec.batch);
        slot->ok[item - part_begin(L, item / L->spec.batch)] = (unsigned char)ok;
        if (!ok && !L->bad[sample]) {
            L->bad[sample] = 1;
            L->nbad++;
            fprintf(stderr, "cnntrain: skipped a bad image: %s\n", err);
            if (L->spec.strict && !L->fatal[0]) snprintf(L->fatal, sizeof L->fatal, "%s", err);
        }
        if (++slot->filled == slot->expected || L->inflight == 0 || L->fatal[0]) pthread_cond_broadcast(&L->done_cv);
    }
    pthread_mutex_unlock(&L->mu);
    return NULL;
}

Loader *loader_create(const LoaderSpec *spec, char *err, size_t errlen) {
    if (spec->count < 1) {
        error_at(err, errlen, "loader", "no images to load");
        return NULL;
    }
    if (spec->batch < 1 || spec->tf.size < 1) {
        error_at(err, errlen, "loader", "batch (%d) and image size (%d) must be positive", spec->batch, spec->tf.size);
        return NULL;
    }
    Loader *L = xcalloc(1, sizeof *L);
    L->spec = *spec;
    /* Without drop_last no batch holds more than every image: size the buffers for that (a batch
     * of 65536 over 100 validation images must not allocate 65536 images). */
    if (!spec->drop_last && L->spec.batch > spec->count) L->spec.batch = spec->count;
    L->shards = spec->shards > 1 ? spec->shards : 1;
    L->shard = L->shards > 1 ? spec->shard : 0;
    if (L->shard < 0 || L->shard >= L->shards) {
        error_at(err, errlen, "loader", "shard %d of %d does not exist", spec->shard, L->shards);
        free(L);
        return NULL;
    }
    L->cap = (L->spec.batch + L->shards - 1) / L->shards;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    L->nthreads = spec->threads > 0 ? spec->threads : (cores > 0 ? (int)cores : 1);
    L->nslots = spec->prefetch > 0 ? spec->prefetch : 3;
    if (L->nslots < 2) L->nslots = 2; /* one for the consumer, at least one being filled */
    L->image_floats = 3 * (size_t)spec->tf.size * spec->tf.size;
    L->slots = xcalloc((size_t)L->nslots, sizeof *L->slots);
    size_t batch = (size_t)L->cap;
    for (int i = 0; i < L->nslots; i++) {
        Slot *s = &L->slots[i];
        if (spec->format == BATCH_F32) {
            s->b.x = xmalloc(batch * L->image_floats * sizeof(float));
        } else if (spec->format == BATCH_U8) {
            s->b.u8 = xmalloc(batch * L->image_floats);
        } else { /* pixels: on the first image */
            s->b.images = xmalloc(batch * sizeof(ImageSlot));
            s->b.warps = xmalloc(batch * sizeof(Warp));
        }
        s->b.labels = xmalloc(batch * sizeof(int32_t));
        s->ok = xcalloc(batch, 1);
    }
    L->bad = xcalloc((size_t)spec->count, 1);
    L->bad_at_start = xcalloc((size_t)spec->count, 1);
    L->order = xmalloc((size_t)spec->count * sizeof *L->order);
    pthread_mutex_init(&L->mu, NULL);
    pthread_cond_init(&L->work_cv, NULL);
    pthread_cond_init(&L->done_cv, NULL);
    pthread_cond_init(&L->space_cv, NULL);
    L->threads = xcalloc((size_t)L->nthreads, sizeof *L->threads);
    for (int i = 0; i < L->nthreads; i++)
        if (pthread_create(&L->threads[i], NULL, worker, L)) die("loader: cannot start worker thread %d", i);
    return L;
}

int loader_batches(const Loader *L) {
    int n = L->spec.count, b = L->spec.batch;
    return L->spec.drop_last ? n / b : (n + b - 1) / b;
}

/* Sharded: the images any rank found bad become bad on every rank (the next epoch's order leaves them
 * out everywhere, as one process would). A collective; called under the lock with no work in flight
 * that could add to bad. */
static void share_bad(Loader *L) {
    dist_allreduce_or_u8(L->bad, (size_t)L->spec.count);
    int n = 0;
    for (int i = 0; i < L->spec.count; i++) n += L->bad[i];
    L->nbad = n;
}

int loader_start_epoch(Loader *L, int epoch, int first_batch) {
    raw_wait_uploads(L); /* the batch the consumer holds may still be uploading */
    pthread_mutex_lock(&L->mu);
    /* Stop handing out the old epoch's work and wait for what is in flight: its slots are reused. */
    L->end_item = L->next_item;
    while (L->inflight > 0) pthread_cond_wait(&L->done_cv, &L->mu);

    Rng root;
    rng_seed(&root, L->spec.seed);
    L->epoch_rng = rng_split(&root, (uint64_t)epoch);
    if (L->shards > 1) share_bad(L);
    L->norder = 0;
    memcpy(L->bad_at_start, L->bad, (size_t)L->spec.count);
    for (int i = 0; i < L->spec.count; i++)
        if (!L->bad[i]) L->order[L->norder++] = i;
    if (L->spec.shuffle) {
        Rng shuffle = rng_split(&L->epoch_rng, UINT64_MAX); /* not an item index */
        for (int i = L->norder - 1; i > 0; i--) {
            int j = (int)rng_below(&shuffle, (uint32_t)i + 1), t = L->order[i];
            L->order[i] = L->order[j];
            L->order[j] = t;
        }
    }
    int B = L->spec.batch;
    L->nbatches = L->spec.drop_last ? L->norder / B : (L->norder + B - 1) / B;
    if (first_batch > L->nbatches) first_batch = L->nbatches;
    L->end_item = L->nbatches * B < L->norder ? L->nbatches * B : L->norder;
    L->epoch_items = L->end_item; /* after the old epoch's work in flight is done: it used the old one */
    L->next_item = next_own_item(L, first_batch * B);
    L->released = L->consumed = first_batch;
    L->holding = 0;
    L->dropped = 0;
    for (int b = first_batch; b < first_batch + L->nslots && b < L->nbatches; b++) slot_reset(L, b);
    pthread_cond_broadcast(&L->work_cv);
    int nbatches = L->nbatches;
    pthread_mutex_unlock(&L->mu);
    return nbatches;
}

/* Move the good images of a finished slot to the front; returns how many there are. */
static int compact(Loader *L, Slot *s) {
    int n = 0;
    if (L->spec.format == BATCH_RAW) { /* the pixels stay where they are */
        for (int i = 0; i < s->expected; i++) {
            if (!s->ok[i]) continue;
            if (i != n) {
                s->b.images[n] = s->b.images[i];
                s->b.warps[n] = s->b.warps[i];
                s->b.labels[n] = s->b.labels[i];
            }
            n++;
        }
        return n;
    }
    size_t item_bytes = L->image_floats * (L->spec.format == BATCH_F32 ? sizeof(float) : 1);
    uint8_t *data = L->spec.format == BATCH_F32 ? (uint8_t *)s->b.x : s->b.u8;
    for (int i = 0; i < s->expected; i++) {
        if (!s->ok[i]) continue;
        if (i != n) {
            memmove(data + (size_t)n * item_bytes, data + (size_t)i * item_bytes, item_bytes);
            s->b.labels[n] = s->b.labels[i];
        }
        n++;
    }
    return n;
}

const Batch *loader_next(Loader *L) {
    raw_wait_uploads(L); /* before the consumer's previous batch buffer is given back */
    pthread_mutex_lock(&L->mu);
    const Batch *out = NULL;
    for (;;) {
        if (L->holding) {
            /* Give the consumer's previous slot back, ready for the batch nslots further on. */
            int reuse = L->released + L->nslots;
            L->released++;
            L->holding = 0;
            if (reuse < L->nbatches) slot_reset(L, reuse);
            pthread_cond_broadcast(&L->work_cv);
        }
        if (L->consumed >= L->nbatches) {
            if (L->nbad > L->reported_bad)
                fprintf(stderr, "cnntrain: %d of %d images are bad and were skipped (listed above)\n", L->nbad, L->spec.count);
            L->reported_bad = L->nbad;
            break;
        }
        int b = L->consumed;
        Slot *s = slot_of(L, b);
        while (s->filled < s->expected && !L->fatal[0]) pthread_cond_wait(&L->done_cv, &L->mu);
        if (L->fatal[0]) {
            pthread_mutex_unlock(&L->mu);
            die("a bad image stopped the run (on_bad_image = fail): %s", L->fatal);
        }
        L->consumed++;
        L->holding = 1;
        s->b.n = s->b.global_n = compact(L, s);
        s->b.size = L->spec.tf.size;
        s->b.index = b;
        s->b.first = 0;
        s->b.shards = L->shards;
        int full = (b + 1) * L->spec.batch <= L->epoch_items ? L->spec.batch : L->epoch_items - b * L->spec.batch;
        if (L->shards > 1) { /* the whole batch's good images decide, the same on every rank */
            int64_t total = s->b.n;
            pthread_mutex_unlock(&L->mu); /* the workers go on meanwhile; this slot is the consumer's */
            dist_allreduce_sum_i64(&total, 1);
            pthread_mutex_lock(&L->mu);
            s->b.global_n = (int)total;
            s->b.first = part_begin(L, b) - b * L->spec.batch;
        }
        /* drop_last: every batch is full, as PyTorch's and fastai's training batches are; one that bad
         * images left short is dropped too (batch norm must never see a batch of 1) */
        if (s->b.global_n > 0 && (!L->spec.drop_last || s->b.global_n == full)) {
            out = &s->b;
            break;
        }
        if (s->b.global_n > 0) L->dropped++;
    }
    int nothing_usable = !out && L->nbad >= L->spec.count;
    pthread_mutex_unlock(&L->mu);
    if (nothing_usable) die("loader: every one of the %d images was bad; nothing usable is left", L->spec.count);
    return out;
}

int loader_bad_images(const Loader *L) { return L->nbad; }

int loader_dropped(const Loader *L) { return L->dropped; }

char *loader_bad_list(Loader *L, int at_epoch_start) {
    if (L->shards > 1 && !at_epoch_start) { /* what every rank found (a collective) */
        pthread_mutex_lock(&L->mu);
        share_bad(L);
        pthread_mutex_unlock(&L->mu);
    }
    pthread_mutex_lock(&L->mu);
    const unsigned char *bad = at_epoch_start ? L->bad_at_start : L->bad;
    size_t len = 1, used = 0;
    for (int i = 0; i < L->spec.count; i++) len += bad[i] ? 12 : 0;
    char *s = xmalloc(len);
    s[0] = 0;
    for (int i = 0; i < L->spec.count; i++)
        if (bad[i]) used += (size_t)snprintf(s + used, len - used, "%s%d", used ? "," : "", i);
    pthread_mutex_unlock(&L->mu);
    return s;
}

int loader_mark_bad(Loader *L, const char *list) {
    pthread_mutex_lock(&L->mu);
    int rc = 0;
    for (const char *p = list; *p && !rc;) {
        char *end;
        long i = strtol(p, &end, 10);
        if (end == p || i < 0 || i >= L->spec.count || (*end && *end != ',')) {
            rc = -1;
            break;
        }
        if (!L->bad[i]) L->nbad++;
        L->bad[i] = 1;
        p = *end ? end + 1 : end;
    }
    L->reported_bad = L->nbad; /* reported by the run that found them */
    pthread_mutex_unlock(&L->mu);
    return rc;
}

int loader_threads(const Loader *L) { return L->nthreads; }

void loader_destroy(Loader *L) {
    if (!L) return;
    pthread_mutex_lock(&L->mu);
    L->stop = 1;
    pthread_cond_broadcast(&L->work_cv);
    pthread_mutex_unlock(&L->mu);
    for (int i = 0; i < L->nthreads; i++) pthread_join(L->threads[i], NULL);
    raw_wait_uploads(L);
    for (int i = 0; i < L->nslots; i++) {
        free(L->slots[i].b.x);
        free(L->slots[i].b.u8);
        if (L->slots[i].b.pixels) raw_free(L, L->slots[i].b.pixels);
        free(L->slots[i].b.images);
        free(L->slots[i].b.warps);
        free(L->slots[i].b.labels);
        free(L->slots[i].ok);
    }
    pthread_mutex_destroy(&L->mu);
    pthread_cond_destroy(&L->work_cv);
    pthread_cond_destroy(&L->done_cv);
    pthread_cond_destroy(&L->space_cv);
    free(L->slots);
    free(L->threads);
    free(L->bad);
    free(L->bad_at_start);
    free(L->order);
    free(L);
}
