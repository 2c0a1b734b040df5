/* pipeline/device_feed.h: a BATCH_RAW batch from the loader (decoded uint8 images + their drawn Warps) into
 * the network's input tensor on a backend: upload_async of the packed images into one of two
 * device buffers, alternating, then warp_batch (crop/flip/rotate/zoom/warp, lighting,
 * normalisation and the cast to the tensor's dtype, on the device).
 *
 * Use (the trainer, once per step):
 *
 *     LoaderSpec ls = {..., .format = BATCH_RAW, .backend = be};   // pinned batch buffers
 *     DeviceFeed feed;
 *     device_feed_init(&feed, be);
 *     for (const Batch *b; (b = loader_next(L));) {
 *         device_feed_batch(&feed, b, imagenet_mean, imagenet_std, &x);  // returns at once
 *         ... issue the step's ops on x ...
 *     }   // loader_next waits for the upload before it reuses b's buffer
 *     device_feed_free(&feed);
 *
 * With a loader made without .backend (plain host memory), or any other host buffer, call
 * device_feed_wait() before the batch's pixels change. The copy of batch i+1 runs while the ops
 * issued before it (step i) compute; warp_batch of batch i+1 runs after them, on the same stream
 * as every other op. */
#ifndef CNN_DEVICE_FEED_H
#define CNN_DEVICE_FEED_H

#include "backend/backend.h"
#include "pipeline/loader.h"

typedef struct {
    Backend *b;
    uint8_t *dev[2];    /* backend memory: the packed images of the last batch through each slot */
    size_t cap[2];      /* bytes allocated at dev[k] */
    int next;           /* slot of the next batch */
    int last;           /* slot of the last batch (-1: none yet) */
} DeviceFeed;

void device_feed_init(DeviceFeed *, Backend *);
/* x = warp_batch(upload(batch)): x gets shape (batch->n, 3, batch->size, batch->size) in the
 * backend's layout; x->dtype says what to store (fp32; fp16/bf16 where the backend supports it),
 * x->data must hold that many values. batch must be BATCH_RAW. Asynchronous on a device backend:
 * batch->pixels must stay unchanged until device_feed_wait() (or the loader's own wait, see
 * above). */
void device_feed_batch(DeviceFeed *, const Batch *batch, const float mean[3], const float std[3], Tensor *x);
/* Any loader batch into x: a BATCH_RAW one through device_feed_batch (ImageNet's mean and std, as
 * the loader normalises), a BATCH_F32 one uploaded as it is. x must have the batch's shape. */
void device_feed_upload(DeviceFeed *, const Batch *batch, Tensor *x);
/* Block until the last batch's upload has finished reading its host memory. */
void device_feed_wait(DeviceFeed *);
/* Releases the device buffers (waits for the ops using them). */
void device_feed_free(DeviceFeed *);

#endif
