/* pipeline/loader.h: batches of decoded, augmented images from a fixed pool of worker threads through a
 * bounded queue. Deterministic: every image's augmentation comes from a generator derived from
 * (seed, epoch, position in the epoch), and batches come out in epoch order, so the same seed
 * gives the same batches whatever the number of threads.
 *
 * BATCH_RAW leaves the augmentation to a backend (warp_batch, e.g. on the GPU): a batch is then
 * the decoded uint8 images packed into one buffer, where each one is, and the Warp drawn for it,
 * from the same generator in the same order as BATCH_F32, so warp_batch on the cpu backend gives
 * BATCH_F32's floats bit for bit (device_feed.h turns such a batch into a device tensor). */
#ifndef CNN_LOADER_H
#define CNN_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "pipeline/augment.h"
#include "backend/backend.h"
#include "pipeline/dataset.h"

typedef enum { BATCH_F32, BATCH_U8, BATCH_RAW } BatchFormat;

typedef struct {
    const Sample *samples;  /* not copied: must outlive the loader */
    int count;
    TransformSpec tf;
    int batch;
    int shuffle;            /* a new seeded permutation every epoch */
    int drop_last;          /* every batch full: leave out the last partial batch, and any batch that bad
                             * images left short */
    int threads;            /* worker threads; 0 = the number of online cores */
    int prefetch;           /* batch buffers (the one being used + those being filled); 0 = 3 */
    uint64_t seed;
    BatchFormat format;     /* F32: normalised (n,3,s,s); U8: (n,s,s,3) without lighting; RAW: decoded
                             * images + their Warps, for the backend's warp_batch */
    /* RAW only, may be NULL: the backend the batches go to. The packed pixels then come from its
     * alloc_host (page-locked on cuda, so its upload_async is a DMA), and before a batch's buffer is
     * reused (loader_next, loader_start_epoch) or freed, the loader waits for that backend's
     * uploads (upload_wait on both slots): the consumer may upload_async straight from
     * Batch.pixels. Must outlive the loader. */
    Backend *backend;
    int strict;             /* on_bad_image = fail: the first bad image stops the run */
    long max_pixels;        /* JPEG size limit; 0 = the default */
    long long max_file_bytes; /* larger files are bad images, never read; 0 = the default (image.h) */
    /* Data-parallel training (dist/dist.h): 0 or 1 = every image. shards N > 1: batch is the global
     * batch, cut into N contiguous parts (of a batch of m images, part r holds its positions
     * [r*m/N, (r+1)*m/N)); this process loads part shard only. Every image keeps the generator it
     * has in one process (seeded by its position in the epoch), the images found bad are shared at
     * each epoch's start, and drop_last looks at the whole batch (loader_next all-reduces each
     * batch's good images: every rank calls it in step). */
    int shard, shards;
} LoaderSpec;

typedef struct {
    int n;                  /* images in this batch (without drop_last: fewer than the batch size at the
                             * end, or when some were bad) */
    int size;
    int index;              /* batch number within the epoch */
    int global_n, first;    /* sharded (shards > 1): the global batch's images, and the position of this
                             * part's first one in it (unsharded: n and 0). n may be 0 on a rank when
                             * the global batch is short (not drop_last) */
    int shards;             /* the spec's shards, at least 1 */
    float *x;               /* BATCH_F32 */
    uint8_t *u8;            /* BATCH_U8 */
    /* BATCH_RAW: image i is images[i] in pixels (HWC uint8, as decoded; an image whose three
     * channels are equal everywhere, a greyscale JPEG, is packed with 1 channel), warps[i] its
     * transform to size x size, drawn for its decoded size. In no particular order in pixels. */
    uint8_t *pixels;
    size_t pixel_bytes;     /* pixels[0, pixel_bytes) hold the images */
    ImageSlot *images;
    Warp *warps;
    int32_t *labels;
} Batch;

typedef struct Loader Loader;

Loader *loader_create(const LoaderSpec *, char *err, size_t errlen);
/* Batches per epoch (before any bad image is left out). */
int loader_batches(const Loader *);
/* Start an epoch at batch first_batch (0, or later when resuming). Returns the epoch's batches
 * (images known to be bad left out; 0 when drop_last and the good images make no full batch). */
int loader_start_epoch(Loader *, int epoch, int first_batch);
/* The next batch in order, or NULL at the end of the epoch. The batch stays valid until the next
 * call. Exits with a message naming the file when strict and an image is bad, or when every image
 * of the epoch was bad. */
const Batch *loader_next(Loader *);
/* Images found bad so far (each reported once on stderr with its path and reason). */
int loader_bad_images(const Loader *);
/* drop_last: batches of the current epoch dropped so far because bad images left them short. */
int loader_dropped(const Loader *);
/* The samples known to be bad as "i,j,k" (indices into spec.samples; "" when none), now or as they
 * were when the current epoch's order was drawn; for resume files. The caller frees it. */
char *loader_bad_list(Loader *, int at_epoch_start);
/* Marks a loader_bad_list() list bad, before loader_start_epoch, when a run resumes: the order
 * then leaves them out as the interrupted run did. Returns -1 on a malformed list. */
int loader_mark_bad(Loader *, const char *list);
/* Worker threads in use. */
int loader_threads(const Loader *);
void loader_destroy(Loader *);

#endif
