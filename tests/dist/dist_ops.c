/* tests/dist/dist_ops.c: the process group's operations (dist/dist.h), run by tests/test_dist.sh as
 * `mpirun -np N dist_ops` and as one plain process (a group of 1: every collective the identity).
 * Each rank checks what it got against what it can compute alone; prints "dist_ops: ok (rank R of N)"
 * and exits 0, or names the first wrong value and exits 1. `dist_ops abort` makes rank 1 call
 * dist_abort: every rank must stop (the test bounds it with timeout). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist/dist.h"

static int failures;

#define EXPECT(cond, ...)                                                                                 \
    do {                                                                                                  \
        if (!(cond)) {                                                                                    \
            fprintf(stderr, "dist_ops: rank %d: %s:%d: ", dist_rank(), __FILE__, __LINE__);              \
            fprintf(stderr, __VA_ARGS__);                                                                 \
            fputc('\n', stderr);                                                                          \
            failures++;                                                                                   \
        }                                                                                                 \
    } while (0)

int main(int argc, char **argv) {
    dist_init(&argc, &argv);
    int r = dist_rank(), n = dist_size();
    EXPECT(n == dist_launch_size(), "size %d but the launcher said %d", n, dist_launch_size());
    EXPECT(r >= 0 && r < n, "rank %d of %d", r, n);
    EXPECT(dist_local_rank() >= 0 && dist_local_rank() < dist_local_size() && dist_local_size() <= n,
           "local rank %d of %d", dist_local_rank(), dist_local_size());
    if (argc > 1 && !strcmp(argv[1], "abort")) {
        if (r == 1) dist_abort(3, "deliberate abort from the test");
        for (;;) { /* the others wait in a collective: the abort must end them */
            dist_barrier();
            sleep(1);
        }
    }
    if (argc > 1 && !strcmp(argv[1], "die")) { /* die() in one rank: every rank stops, the message names it */
        if (r == 1) die("deliberate die() from the test");
        for (;;) {
            dist_barrier();
            sleep(1);
        }
    }

    /* float sums: rank r contributes (r + 1) * (i + 1); the sum is (i + 1) * n (n + 1) / 2, exact */
    enum { NF = 1000 };
    float f[NF];
    for (int i = 0; i < NF; i++) f[i] = (float)((r + 1) * (i + 1));
    dist_allreduce_sum_f32(f, NF);
    for (int i = 0; i < NF; i++)
        if (f[i] != (float)((i + 1) * n * (n + 1) / 2)) {
            EXPECT(0, "f32 sum [%d] = %g, expected %d", i, (double)f[i], (i + 1) * n * (n + 1) / 2);
            break;
        }
    double d[3] = {0.5 * r, 1.0, -2.0 * r};
    dist_allreduce_sum_f64(d, 3);
    EXPECT(d[0] == 0.25 * n * (n - 1) && d[1] == n && d[2] == -1.0 * n * (n - 1), "f64 sums %g %g %g", d[0], d[1], d[2]);
    int64_t c[2] = {(int64_t)1 << 40, r};
    dist_allreduce_sum_i64(c, 2);
    EXPECT(c[0] == ((int64_t)1 << 40) * n && c[1] == (int64_t)n * (n - 1) / 2, "i64 sums %lld %lld", (long long)c[0],
           (long long)c[1]);
    uint64_t hi[2] = {(uint64_t)r, UINT64_MAX - (uint64_t)r}, lo[2] = {(uint64_t)r + 10, 7};
    dist_allreduce_max_u64(hi, 2);
    dist_allreduce_min_u64(lo, 2);
    EXPECT(hi[0] == (uint64_t)n - 1 && hi[1] == UINT64_MAX, "u64 max %llu %llu", (unsigned long long)hi[0],
           (unsigned long long)hi[1]);
    EXPECT(lo[0] == 10 && lo[1] == 7, "u64 min %llu %llu", (unsigned long long)lo[0], (unsigned long long)lo[1]);

    unsigned char bits[3] = {(unsigned char)(1u << (r % 8)), 0, (unsigned char)(r == n - 1)};
    dist_allreduce_or_u8(bits, 3);
    EXPECT(bits[0] == (unsigned char)((1u << (n < 8 ? n : 8)) - 1) && bits[1] == 0 && bits[2] == 1, "u8 or %x %x %x",
           bits[0], bits[1], bits[2]);

    /* all-gather: rank k's block holds k */
    int mine[2] = {r, 100 + r}, *all = calloc((size_t)n * 2, sizeof *all);
    dist_allgather(mine, all, sizeof mine);
    for (int k = 0; k < n; k++) EXPECT(all[2 * k] == k && all[2 * k + 1] == 100 + k, "allgather block %d: %d %d", k, all[2 * k], all[2 * k + 1]);
    free(all);

    /* broadcast from the last rank */
    char msg[32];
    snprintf(msg, sizeof msg, "from rank %d", r);
    dist_broadcast(msg, sizeof msg, n - 1);
    char want[32];
    snprintf(want, sizeof want, "from rank %d", n - 1);
    EXPECT(!strcmp(msg, want), "broadcast gave '%s', expected '%s'", msg, want);

    dist_barrier();
    int bad = failures;
    int64_t total = bad;
    dist_allreduce_sum_i64(&total, 1);
    if (!total) printf("dist_ops: ok (rank %d of %d)\n", r, n);
    dist_finalize();
    return bad ? 1 : 0;
}
