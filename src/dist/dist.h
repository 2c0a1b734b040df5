/* dist/dist.h: the process group of a data-parallel run (issue 17): which rank this process is, how
 * many there are, and the collective operations the trainer needs (all-reduce, all-gather,
 * broadcast, barrier), over MPI.
 *
 * MPI is initialised only when a launcher started this process as one of several (mpirun, srun:
 * dist_launch_size() > 1), so a plain `./train` never calls MPI_Init and runs as it always did.
 * A build without MPI (make MPI=0) has single-process versions of everything: rank 0 of 1, and
 * every collective is the identity. Every MPI return code goes through one check that names the
 * rank, the call and where it failed, then aborts the whole job (MPI_Abort): no rank waits forever
 * for one that stopped. */
#ifndef CNN_DIST_H
#define CNN_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "base/util.h"

/* Joins the launcher's process group when there is one (else a group of 1), once; later calls do
 * nothing. Exits with a message when launched as several ranks by a binary built without MPI, or
 * when MPI sees a group of another size than the launcher said. */
void dist_init(int *argc, char ***argv);
/* Leaves the group (MPI_Finalize after a barrier); at the end of a run that went well. */
void dist_finalize(void);

int dist_rank(void);        /* 0 .. dist_size() - 1 */
int dist_size(void);        /* 1 without a launcher */
int dist_local_rank(void);  /* rank among the processes on this machine (its GPU index) */
int dist_local_size(void);
static inline int dist_active(void) { return dist_size() > 1; }
static inline int dist_is_root(void) { return dist_rank() == 0; }

/* The number of ranks the launcher's environment says (OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_SIZE,
 * MV2_COMM_WORLD_SIZE, or SLURM_NTASKS inside an srun step); 1 when none does. */
int dist_launch_size(void);

/* Collectives: every rank calls them in the same order with the same counts. In place. */
void dist_allreduce_sum_f32(float *buf, size_t n);
void dist_allreduce_sum_f64(double *buf, size_t n);
void dist_allreduce_sum_i64(int64_t *buf, size_t n);
void dist_allreduce_max_u64(uint64_t *buf, size_t n);
void dist_allreduce_min_u64(uint64_t *buf, size_t n);
void dist_allreduce_or_u8(unsigned char *buf, size_t n);
/* all[r * bytes .. (r+1) * bytes) = rank r's mine (bytes each). */
void dist_allgather(const void *mine, void *all, size_t bytes);
void dist_broadcast(void *buf, size_t bytes, int root);
void dist_barrier(void);
/* Stop every rank: the message (with this rank's name) on stderr, then MPI_Abort; exit(code) in a
 * single process. */
CNN_NORETURN void dist_abort(int code, const char *fmt, ...) CNN_PRINTF(2, 3);

/* For --version: the MPI library ("Open MPI v4.1.4 ..., MPI 3.1") or "not built in"; the NCCL
 * library's version, or "not built in". */
/* A rank that stops making progress ends the job, within a timeout: MPI and NCCL wait forever for
 * a rank that hangs (a deadlock, a stuck file system, a GPU that stopped answering). After
 * dist_watchdog(seconds), a thread checks that dist_progress() (each training step, each
 * evaluation batch) was called within the last `seconds`; when not, it says so, naming this rank,
 * and ends this process, and the launcher (mpirun, srun) then stops every rank. Only with several
 * ranks; 0 seconds: none. */
void dist_watchdog(int seconds);
void dist_progress(void);

void dist_mpi_version(char *buf, size_t len);
void dist_nccl_version(char *buf, size_t len);

#endif
