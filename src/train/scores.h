/* train/scores.h: turning a row of logits into a prediction or probabilities (host side). */
#ifndef CNN_SCORES_H
#define CNN_SCORES_H

#include <stddef.h>
#include <stdint.h>

/* Index of the largest of v[0..n); the first one on ties. */
int argmax(const float *v, int n);
/* p = softmax(z) over n classes, computed from the maximum so exp never overflows. Returns
 * log(sum(exp(z))), so a cross-entropy is lse - z[label], exact even where p underflows. */
double softmax_row(const float *z, float *p, int n);

/* One of n augmented passes into the running mean: aug[i] += pass[i] / n over cells values. */
void tta_accumulate(float *aug, const float *pass, size_t cells, int n);
/* fastai's tta result: aug holds the mean softmax probabilities of the augmented passes (n rows of
 * C); each row becomes lerp(aug, plain, beta) (torch.lerp). Returns the hits against labels; *loss
 * gets the mean -log p of the combined probability of the label (kept finite where p underflowed). */
int tta_combine(float *aug, const float *plain, const int32_t *labels, int n, int C, float beta, double *loss);

#endif
