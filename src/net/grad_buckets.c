/* net/grad_buckets.c: final gradient regions gathered into buckets and launched (grad_buckets.h). */
#include "net/grad_buckets.h"

void grad_buckets_begin(GradBuckets *b, size_t cap, void (*launch)(void *ctx, size_t offset, size_t count), void *ctx) {
    b->lo = b->hi = 0;
    b->cap = cap ? cap : 1;
    b->launch = launch;
    b->ctx = ctx;
    b->launched = 0;
}

void grad_buckets_flush(GradBuckets *b) {
    if (b->hi > b->lo) {
        b->launch(b->ctx, b->lo, b->hi - b->lo);
        b->launched++;
    }
    b->lo = b->hi = 0;
}

void grad_buckets_ready(GradBuckets *b, size_t offset, size_t count) {
    if (!count) return;
    if (b->hi == b->lo) {
        b->lo = offset, b->hi = offset + count;
    } else if (offset + count == b->lo) {
        b->lo = offset; /* the layer before: the usual order of a backward pass */
    } else if (offset == b->hi) {
        b->hi += count; /* a node's next parameter (a bias after its weight) */
    } else {
        grad_buckets_flush(b); /* not touching: a frozen parameter lies between */
        b->lo = offset, b->hi = offset + count;
    }
    if (b->hi - b->lo >= b->cap) grad_buckets_flush(b);
}
