/* train/data_parallel.c: what a data-parallel run (`mpirun -np N ./train CONFIG`, dist/dist.h) adds
 * to the trainer: its checks before anything starts, the private folder that ranks other than 0 write
 * into (only rank 0 writes the run folder; the others' log and CSVs go to a temporary folder removed
 * at the end, and their stdout is silenced), the agreed stop, and the batch-norm running statistics
 * averaged across the ranks. In one process every function here does nothing. */
#include "train/trainer.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "base/util.h"

void trainer_dist_check(const Config *cfg, const Backend *be) {
    int N = dist_size();
    if (N < 2) return;
    /* rank 0 reports; the others' errors still reach stderr */
    if (!dist_is_root() && !freopen("/dev/null", "w", stdout)) die("cannot silence stdout");
    /* sync_bn: the cpu backend reduces through MPI, cuda through NCCL (its grad_allreduce says it has it) */
    if (cfg->sync_bn && strcmp(be->ops->name, "cpu") && !be->ops->grad_allreduce)
        die("%s: [run] sync_bn = yes reduces batch-norm statistics through NCCL on the %s backend, and this build has "
            "none (NCCL=0, or nccl.h was not found): rebuild with NCCL, or train with per-rank statistics (sync_bn = no)",
            cfg->path, be->ops->name);
    for (int i = 0; i < cfg->nstages; i++) {
        const StageConfig *st = &cfg->stages[i];
        if (st->type == STAGE_EVAL || st->type == STAGE_TTA || st->type == STAGE_INTERPRET) continue;
        if (st->batch % N)
            die("%s: [stage %s] batch = %d is the global batch, cut into %d equal parts (mpirun -np %d), and %d is "
                "not divisible by %d: use a multiple of %d (e.g. batch = %d)",
                cfg->path, st->name, st->batch, N, N, st->batch, N, N, (st->batch + N - 1) / N * N);
    }
}

void trainer_dist_private_folder(Trainer *T) {
    if (dist_is_root()) return;
    const char *tmp = getenv("TMPDIR");
    char dir[sizeof T->run_dir];
    snprintf(dir, sizeof dir, "%s/cnntrain-rank%d-XXXXXX", tmp && *tmp ? tmp : "/tmp", dist_rank());
    if (!mkdtemp(dir)) die("rank %d: cannot make a temporary folder %s", dist_rank(), dir);
    snprintf(T->run_dir, sizeof T->run_dir, "%s", dir);
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

void trainer_dist_remove_private_folder(Trainer *T) {
    if (dist_is_root() || !T->run_dir[0]) return;
    /* the folder mkdtemp made for this process: everything in it is this process's */
    if (nftw(T->run_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS))
        fprintf(stderr, "cnntrain: rank %d: could not remove its temporary folder %s\n", dist_rank(), T->run_dir);
}

int trainer_dist_agree_stop(int stop) {
    if (!dist_active()) return stop;
    int64_t any = stop != 0;
    dist_allreduce_sum_i64(&any, 1);
    return any > 0;
}

void trainer_dist_average_stats(Trainer *T) {
    int N = dist_size();
    if (N < 2 || !T->model->stat_floats) return;
    float *stats = xmalloc(T->model->stat_floats * sizeof(float));
    model_get_weights(T->model, NULL, stats);
    dist_allreduce_sum_f32(stats, T->model->stat_floats);
    const float inv = 1.0f / (float)N;
    for (size_t i = 0; i < T->model->stat_floats; i++) stats[i] *= inv;
    model_set_weights(T->model, NULL, stats);
    free(stats);
}
