/* net/grad_buckets.h: gradients handed to an all-reduce in buckets while the backward pass still
 * runs (PyTorch DDP's buckets, llm.c's overlap): model_backward says when a parameter's gradient is
 * final; consecutive final regions of the gradient block gather into one bucket, and a bucket of
 * `cap` floats or more is launched at once, so its reduction overlaps the rest of the backward pass.
 * The backward pass goes from the last layer to the first, so regions arrive in falling offsets;
 * a region that does not touch the bucket (a frozen parameter between them) launches the bucket
 * first. Each trainable region is launched exactly once per pass; flush launches the rest. */
#ifndef CNN_GRAD_BUCKETS_H
#define CNN_GRAD_BUCKETS_H

#include <stddef.h>

typedef struct GradBuckets {
    size_t lo, hi;        /* the open bucket: floats [lo, hi) of the gradient block; empty when equal */
    size_t cap;           /* launch once this many floats have gathered */
    /* starts the reduction of floats [offset, offset + count) of the gradient block */
    void (*launch)(void *ctx, size_t offset, size_t count);
    void *ctx;
    int launched;         /* buckets launched this pass (for tests and logs) */
} GradBuckets;

/* A new pass: nothing gathered, nothing launched. */
void grad_buckets_begin(GradBuckets *b, size_t cap, void (*launch)(void *ctx, size_t offset, size_t count), void *ctx);
/* Floats [offset, offset + count) of the gradient block are final for this pass. */
void grad_buckets_ready(GradBuckets *b, size_t offset, size_t count);
/* Launch what is gathered (the end of the backward pass). */
void grad_buckets_flush(GradBuckets *b);

#endif
