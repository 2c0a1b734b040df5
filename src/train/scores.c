/* train/scores.c: logits to a prediction, probabilities and losses on the host (see scores.h). */
#include "train/scores.h"

#include <math.h>
#include <stddef.h>

int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

double softmax_row(const float *z, float *p, int n) {
    float mx = z[argmax(z, n)];
    double sum = 0;
    for (int c = 0; c < n; c++) sum += p[c] = expf(z[c] - mx);
    for (int c = 0; c < n; c++) p[c] = (float)(p[c] / sum);
    return log(sum) + mx;
}

void tta_accumulate(float *aug, const float *pass, size_t cells, int n) {
    for (size_t i = 0; i < cells; i++) aug[i] += pass[i] / (float)n;
}

int tta_combine(float *aug, const float *plain, const int32_t *labels, int n, int C, float beta, double *loss) {
    double nll = 0;
    int hits = 0;
    for (int i = 0; i < n; i++) {
        float *q = aug + (size_t)i * C;
        const float *p = plain + (size_t)i * C;
        for (int c = 0; c < C; c++) q[c] += beta * (p[c] - q[c]);
        hits += argmax(q, C) == labels[i];
        nll -= log(fmax((double)q[labels[i]], 1e-30));
    }
    *loss = n ? nll / n : 0;
    return hits;
}
