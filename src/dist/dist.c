/* dist/dist.c: the process group over MPI (see dist.h), and its single-process stand-in when built
 * without MPI. MPI_COMM_WORLD reports errors back to us (MPI_ERRORS_RETURN) so that MPI_CHECK can say
 * which call failed where before it aborts the job. */
#include "dist/dist.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef CNN_HAVE_MPI
#include <mpi.h>
#endif
#ifdef CNN_HAVE_NCCL
#include <nccl.h>
#endif

static struct {
    int ready, mpi, rank, size, local_rank, local_size;
} group = {0, 0, 0, 1, 0, 1};

/* A positive integer from the environment, or 0. */
static int env_count(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v) return 0;
    char *end;
    long n = strtol(v, &end, 10);
    return *end || n < 1 || n > 1000000 ? 0 : (int)n;
}

int dist_launch_size(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        int n = env_count(vars[i]);
        if (n) return n;
    }
    /* SLURM_NTASKS is also set in a batch script that srun has not launched: only a step counts */
    if (getenv("SLURM_STEP_ID") || getenv("SLURM_STEPID")) {
        int n = env_count("SLURM_STEP_NUM_TASKS");
        return n ? n : (env_count("SLURM_NTASKS") ? env_count("SLURM_NTASKS") : 1);
    }
    return 1;
}

#ifdef CNN_HAVE_MPI

/* The message prefix die() uses once there are several ranks. */
static char rank_prefix[48];

/* Every MPI call goes through this: on failure, which call, where, and MPI's reason, then the job
 * stops (MPI_Abort ends every rank). */
#define MPI_CHECK(call)                                                                                  \
    do {                                                                                                 \
        int mpi_rc_ = (call);                                                                            \
        if (mpi_rc_ != MPI_SUCCESS) mpi_failed(mpi_rc_, #call, __FILE__, __LINE__);                      \
    } while (0)

CNN_NORETURN static void mpi_failed(int rc, const char *call, const char *file, int line) {
    char reason[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    if (MPI_Error_string(rc, reason, &len) != MPI_SUCCESS) snprintf(reason, sizeof reason, "MPI error %d", rc);
    fprintf(stderr, "cnntrain: rank %d of %d: %s failed at %s:%d: %s; stopping every rank\n", group.rank, group.size,
            call, file, line, reason);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

/* die() in a rank: its message, then every rank stops (not only this one). */
static void abort_job(int code) {
    fflush(stdout);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

void dist_init(int *argc, char ***argv) {
    if (group.ready) return;
    group.ready = 1;
    int want = dist_launch_size();
    if (want < 2) return;
    int threads = 0;
    /* the loader's threads never call MPI: funneled is enough */
    MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &threads));
    group.mpi = 1;
    MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &group.rank));
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &group.size));
    MPI_Comm local;
    MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, group.rank, MPI_INFO_NULL, &local));
    MPI_CHECK(MPI_Comm_rank(local, &group.local_rank));
    MPI_CHECK(MPI_Comm_size(local, &group.local_size));
    MPI_CHECK(MPI_Comm_free(&local));
    snprintf(rank_prefix, sizeof rank_prefix, "rank %d of %d: ", group.rank, group.size);
    die_set_handler(rank_prefix, abort_job);
    if (group.size != want)
        dist_abort(1, "the launcher started %d processes but MPI sees a group of %d (srun without --mpi=pmix, or "
                      "an mpirun of another MPI than this binary's?)", want, group.size);
}

void dist_finalize(void) {
    if (!group.mpi) return;
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    die_set_handler(NULL, NULL);
    MPI_CHECK(MPI_Finalize());
    group.mpi = 0;
}

/* MPI counts are ints: large buffers go in pieces. */
#define CHUNK ((size_t)1 << 30)

static void allreduce(void *buf, size_t n, size_t elem, MPI_Datatype type, MPI_Op op) {
    if (!group.mpi) return;
    for (size_t done = 0; done < n; done += CHUNK) {
        size_t k = n - done < CHUNK ? n - done : CHUNK;
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, (char *)buf + done * elem, (int)k, type, op, MPI_COMM_WORLD));
    }
}

void dist_allreduce_sum_f32(float *buf, size_t n) { allreduce(buf, n, sizeof *buf, MPI_FLOAT, MPI_SUM); }
void dist_allreduce_sum_f64(double *buf, size_t n) { allreduce(buf, n, sizeof *buf, MPI_DOUBLE, MPI_SUM); }
void dist_allreduce_sum_i64(int64_t *buf, size_t n) { allreduce(buf, n, sizeof *buf, MPI_INT64_T, MPI_SUM); }
void dist_allreduce_max_u64(uint64_t *buf, size_t n) { allreduce(buf, n, sizeof *buf, MPI_UINT64_T, MPI_MAX); }
void dist_allreduce_min_u64(uint64_t *buf, size_t n) { allreduce(buf, n, sizeof *buf, MPI_UINT64_T, MPI_MIN); }
void dist_allreduce_or_u8(unsigned char *buf, size_t n) { allreduce(buf, n, 1, MPI_UNSIGNED_CHAR, MPI_BOR); }

void dist_allgather(const void *mine, void *all, size_t bytes) {
    if (!group.mpi) {
        if (all != mine) memmove(all, mine, bytes);
        return;
    }
    if (bytes > (size_t)1 << 30) dist_abort(1, "dist_allgather: %zu bytes per rank is more than one call moves", bytes);
    MPI_CHECK(MPI_Allgather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, MPI_COMM_WORLD));
}

void dist_broadcast(void *buf, size_t bytes, int root) {
    if (!group.mpi) return;
    for (size_t done = 0; done < bytes; done += CHUNK) {
        size_t k = bytes - done < CHUNK ? bytes - done : CHUNK;
        MPI_CHECK(MPI_Bcast((char *)buf + done, (int)k, MPI_BYTE, root, MPI_COMM_WORLD));
    }
}

void dist_barrier(void) {
    if (group.mpi) MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
}

void dist_mpi_version(char *buf, size_t len) {
    char lib[MPI_MAX_LIBRARY_VERSION_STRING] = "";
    int n = 0, v = 0, sub = 0;
    /* both may be called before MPI_Init */
    MPI_CHECK(MPI_Get_library_version(lib, &n));
    MPI_CHECK(MPI_Get_version(&v, &sub));
    char *nl = strpbrk(lib, ",\n");
    if (nl) *nl = 0;
    snprintf(buf, len, "%s (MPI %d.%d)", lib, v, sub);
}

#else /* built without MPI: a group of one */

void dist_init(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (group.ready) return;
    group.ready = 1;
    int want = dist_launch_size();
    if (want > 1)
        die("launched as one of %d processes (mpirun, srun), but this binary was built without MPI (MPI=0, or "
            "libopenmpi-dev was missing when it was built): rebuild with MPI, or run one process",
            want);
}

void dist_finalize(void) {}
void dist_allreduce_sum_f32(float *buf, size_t n) { (void)buf, (void)n; }
void dist_allreduce_sum_f64(double *buf, size_t n) { (void)buf, (void)n; }
void dist_allreduce_sum_i64(int64_t *buf, size_t n) { (void)buf, (void)n; }
void dist_allreduce_max_u64(uint64_t *buf, size_t n) { (void)buf, (void)n; }
void dist_allreduce_min_u64(uint64_t *buf, size_t n) { (void)buf, (void)n; }
void dist_allreduce_or_u8(unsigned char *buf, size_t n) { (void)buf, (void)n; }
void dist_allgather(const void *mine, void *all, size_t bytes) {
    if (all != mine) memmove(all, mine, bytes);
}
void dist_broadcast(void *buf, size_t bytes, int root) { (void)buf, (void)bytes, (void)root; }
void dist_barrier(void) {}
void dist_mpi_version(char *buf, size_t len) { snprintf(buf, len, "not built in"); }

#endif

int dist_rank(void) { return group.rank; }
int dist_size(void) { return group.size; }
int dist_local_rank(void) { return group.local_rank; }
int dist_local_size(void) { return group.local_size; }

void dist_abort(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cnntrain: rank %d of %d: ", group.rank, group.size);
    vfprintf(stderr, fmt, ap);
    fputs("; stopping every rank\n", stderr);
    va_end(ap);
    fflush(stderr);
#ifdef CNN_HAVE_MPI
    if (group.mpi) MPI_Abort(MPI_COMM_WORLD, code);
#endif
    exit(code);
}

void dist_nccl_version(char *buf, size_t len) {
#ifdef CNN_HAVE_NCCL
    int v = 0;
    ncclResult_t rc = ncclGetVersion(&v);
    if (rc != ncclSuccess) {
        snprintf(buf, len, "built in (headers %d.%d.%d), library: %s", NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH,
                 ncclGetErrorString(rc));
        return;
    }
    /* NCCL_VERSION(X,Y,Z) = X*10000 + Y*100 + Z since 2.9 */
    snprintf(buf, len, "NCCL %d.%d.%d", v / 10000, v / 100 % 100, v % 100);
#else
    snprintf(buf, len, "not built in");
#endif
}

/* ------------------------------------------------------------------------- the watchdog */

static atomic_long last_progress; /* CLOCK_MONOTONIC seconds of the last dist_progress */
static int watchdog_seconds;

static long monotonic_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)t.tv_sec;
}

void dist_progress(void) {
    if (watchdog_seconds) atomic_store(&last_progress, monotonic_seconds());
}

static void *watch(void *arg) {
    (void)arg;
    for (;;) {
        sleep(1);
        long idle = monotonic_seconds() - atomic_load(&last_progress);
        if (idle <= watchdog_seconds) continue;
        /* no MPI from this thread (the group is MPI_THREAD_FUNNELED): the launcher sees a rank end
         * without MPI_Finalize and stops the others */
        fprintf(stderr,
                "cnntrain: rank %d of %d: no training step or evaluation batch finished in %ld s ([run] dist_timeout "
                "= %d): a rank hangs or stopped; ending this rank, so that the launcher stops every rank\n",
                dist_rank(), dist_size(), idle, watchdog_seconds);
        fflush(stderr);
        _exit(3);
    }
    return NULL;
}

void dist_watchdog(int seconds) {
    if (!dist_active() || seconds <= 0 || watchdog_seconds) return;
    watchdog_seconds = seconds;
    atomic_store(&last_progress, monotonic_seconds());
    pthread_t t;
    if (pthread_create(&t, NULL, watch, NULL)) die("cannot start the data-parallel watchdog thread");
    pthread_detach(t);
}
