#include "scores.h"

#include <math.h>

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
