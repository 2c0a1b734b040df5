/* scores.h: turning a row of logits into a prediction or probabilities (host side). */
#ifndef CNN_SCORES_H
#define CNN_SCORES_H

/* Index of the largest of v[0..n); the first one on ties. */
int argmax(const float *v, int n);
/* p = softmax(z) over n classes, computed from the maximum so exp never overflows. Returns
 * log(sum(exp(z))), so a cross-entropy is lse - z[label], exact even where p underflows. */
double softmax_row(const float *z, float *p, int n);

#endif
