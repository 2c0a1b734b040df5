/* relcheck.h: the worst relative error over a series of comparisons against reference values,
 * failing on the first few beyond the tolerance (test_optim, test_fastai_train). Include after
 * <cmocka.h>. */
#ifndef CNN_RELCHECK_H
#define CNN_RELCHECK_H

#include <math.h>

typedef struct {
    const char *what;
    double tol, worst;
    int fails;
} Check;

/* |got - want| <= tol * (|want| + scale) */
static inline void check(Check *c, const char *name, int i, double got, double want, double scale) {
    double err = fabs(got - want) / (fabs(want) + scale);
    if (err > c->worst || isnan(err)) c->worst = isnan(err) ? INFINITY : err;
    if (!(err <= c->tol) && c->fails++ < 5)
        print_error("%s %s[%d]: %.9g, want %.9g (rel err %.3g)\n", c->what, name, i, got, want, err);
}

static inline void check_done(Check *c) {
    print_message("%-34s worst rel err %.3g (tol %g)\n", c->what, c->worst, c->tol);
    if (c->fails) fail_msg("%s: %d values off", c->what, c->fails);
}

#endif
