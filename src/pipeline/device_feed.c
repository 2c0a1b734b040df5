/* pipeline/device_feed.c: BATCH_RAW batches to device tensors (device_feed.h). The two device buffers
 * alternate with the upload slots, which is what upload_async's ordering rule asks for: the copy
 * into dev[k] waits for every op issued before the previous upload (through the other slot), among
 * them the warp_batch that read dev[k] last. */
#include "pipeline/device_feed.h"

#include <string.h>

#include "base/util.h"
#include "pipeline/augment.h"

void device_feed_init(DeviceFeed *f, Backend *b) {
    memset(f, 0, sizeof *f);
    f->b = b;
    f->last = -1;
}

void device_feed_batch(DeviceFeed *f, const Batch *batch, const float mean[3], const float std[3], Tensor *x) {
    Backend *b = f->b;
    if (!batch->images || !batch->warps) die("device_feed: the batch is not BATCH_RAW");
    int k = f->next;
    size_t bytes = batch->pixel_bytes;
    if (bytes > f->cap[k]) {
        /* Grow with some room, so batches of slightly larger images do not reallocate each time
         * (release waits for the ops that still use the old buffer). */
        b->ops->release(b, f->dev[k]);
        f->cap[k] = bytes + bytes / 4;
        f->dev[k] = b->ops->alloc(b, f->cap[k]);
        /* alloc's zero fill is an op issued after the previous upload: the copy is not ordered
         * after it (backend.h), so let it finish first. */
        b->ops->sync(b);
    }
    if (bytes) b->ops->upload_async(b, f->dev[k], batch->pixels, bytes, k);
    b->ops->warp_batch(b, f->dev[k], batch->images, batch->warps, batch->n, batch->size, mean, std, x);
    f->last = k;
    f->next = 1 - k;
}

void device_feed_upload(DeviceFeed *f, const Batch *batch, Tensor *x) {
    if (batch->pixels) device_feed_batch(f, batch, imagenet_mean, imagenet_std, x);
    else f->b->ops->tensor_upload(f->b, x, batch->x);
}

void device_feed_wait(DeviceFeed *f) {
    if (f->last >= 0) f->b->ops->upload_wait(f->b, f->last);
}

void device_feed_free(DeviceFeed *f) {
    for (int k = 0; k < 2; k++) {
        f->b->ops->release(f->b, f->dev[k]);
        f->dev[k] = NULL;
        f->cap[k] = 0;
    }
}
