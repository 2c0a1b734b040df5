/* test_crash.c: crash safety. The trainer (./train, the program) is killed with SIGKILL at random
 * moments, over and over, many of them while a checkpoint is being written; after every kill the
 * run folder's resume checkpoint must be complete and loadable, and `--resume` must go on. The
 * run finished that way must equal, bit for bit, the same run never interrupted, on data with bad
 * images and over several stages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define TEST_DIR_TEMPLATE "/tmp/cnn_crash_XXXXXX"
#include "testutil.h"

#include "ckpt/checkpoint.h"
#include "pipeline/demo_data.h"
#include "net/model.h"
#include "base/rng.h"
#include "pipeline/synthetic.h"

#define KILLS 12

/* The run folder a run's output names ("run folder PATH"). */
static int run_folder_of(const char *out, char *dir, size_t len) {
    const char *p = strstr(out, "run folder ");
    if (!p) return -1;
    p += strlen("run folder ");
    snprintf(dir, len, "%.*s", (int)strcspn(p, "\n"), p);
    return 0;
}

/* The resume checkpoint's inode, 0 when there is none. */
static ino_t resume_inode(const char *path) {
    struct stat sb;
    return stat(path, &sb) ? 0 : sb.st_ino;
}

/* Whether a checkpoint's temporary file ("NAME.tmp.PID") is in the folder: a write under way. */
static int temp_file_in(const char *folder) {
    DIR *d = opendir(folder);
    int found = 0;
    for (struct dirent *e; d && !found && (e = readdir(d));) found = strstr(e->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    return found;
}

static void test_sigkill_anywhere_then_resume(void **state) {
    (void)state;
    char path[1200], cfg[1200], err[2048], straight[1024], crashed[1024];
    static char out[1 << 16];
    snprintf(path, sizeof path, "%s/data", dir);
    if (demo_data_write(path, 8, 3, 32, 11, err, sizeof err)) fail_msg("%s", err);
    /* 11 bad JPEGs among the 91 training images: which of them a resumed run knows must not change
     * its batches (each epoch leaves 11 images out at its end, so bad images found late matter) */
    for (int i = 0; i < 11; i++) {
        snprintf(path, sizeof path, "%s/data/train/%s/bad%d.jpg", dir, synth_class_names[i % SYNTH_CLASSES], i);
        FILE *bad = fopen(path, "w");
        assert_non_null(bad);
        fprintf(bad, "%s", i % 2 ? "" : "not a JPEG");
        fclose(bad);
    }
    /* xresnet18: its 140 MB resume file takes a good part of each epoch to write and sync. Eight
     * epochs in four stages (five fits, most of two epochs), so kills land before several later
     * stages, whose second epochs' orders depend on the bad images known. */
    snprintf(cfg, sizeof cfg, "%s/run.ini", dir);
    FILE *f = fopen(cfg, "w");
    assert_non_null(f);
    fprintf(f, "[data]\npath = %s/data\n[model]\narch = xresnet18\n[run]\ndevice = cpu\nthreads = 1\nout_dir = %s/runs\n"
               "[stage a]\ntype = fit_one_cycle\nepochs = 2\nsize = 32\nbatch = 16\nlr = 3e-3\nmixup = 0.4\n"
               "[stage b]\ntype = fit\nepochs = 2\nlr = 1e-3\n"
               "[stage c]\ntype = fine_tune\nepochs = 1\nlr = 1e-3\n"
               "[stage d]\ntype = fit_one_cycle\nepochs = 2\nlr = 1e-4\n",
            dir, dir);
    fclose(f);
    double t0 = now_seconds();
    assert_int_equal(run_program_to_end(cfg, NULL, out, sizeof out), 0);
    assert_int_equal(run_folder_of(out, straight, sizeof straight), 0);
    /* kills land at random within about an epoch and a half (with its checkpoint) of training */
    long span_us = (long)((now_seconds() - t0) / 8 * 1.5e6);

    Model *m = model_build("xresnet18", 10, err, sizeof err);
    float *params = xmalloc(m->param_floats * sizeof(float)), *stats = xmalloc(m->stat_floats * sizeof(float));
    float *am = xmalloc(m->param_floats * sizeof(float)), *av = xmalloc(m->param_floats * sizeof(float));
    Rng rng;
    rng_seed(&rng, (uint64_t)time(NULL));
    int kills = 0, in_writes = 0, checkpoints = 0, finished = 0;
    crashed[0] = 0;
    for (int k = 0; k < KILLS && !finished; k++) {
        int fd;
        snprintf(path, sizeof path, "%s/resume.safetensors", crashed);
        ino_t before = k ? resume_inode(path) : 0; /* each write is a new file (an atomic rename) */
        pid_t pid = start_program(k ? NULL : cfg, k ? crashed : NULL, 0, NULL, &fd);
        /* wait until it trains (and, the first time, has made its folder) */
        for (int t = 0; t < 6000; t++) {
            ssize_t n = pread(fd, out, sizeof out - 1, 0);
            out[n > 0 ? n : 0] = 0;
            if (!k) run_folder_of(out, crashed, sizeof crashed);
            if (strstr(out, "train_loss") || strstr(out, "checkpoint: ")) break;
            usleep(10000);
        }
        assert_true(crashed[0]);
        uint32_t delay = rng_below(&rng, (uint32_t)span_us);
        double until = now_seconds() + 120; /* a slow, shared machine: wait, but not forever */
        if (k % 2) { /* every other kill lands while a checkpoint is being written */
            while (!temp_file_in(crashed) && now_seconds() < until) usleep(500);
            usleep(rng_below(&rng, 20000));
        } else {
            /* the others after this process's first new checkpoint (so the run always gets on,
             * whatever the machine's speed), at a random moment within an epoch and a half */
            snprintf(path, sizeof path, "%s/resume.safetensors", crashed);
            while (resume_inode(path) == before && now_seconds() < until) usleep(1000);
            usleep((useconds_t)delay);
        }
        if (getenv("CRASH_DEBUG")) fprintf(stderr, "kill %d after %u us (span %ld)\n", k, delay, span_us);
        kill(pid, SIGKILL);
        int rc = finish_program(pid, fd, out, sizeof out);
        if (rc == 0) {
            finished = 1;
            break;
        }
        if (rc != 128 + SIGKILL) fail_msg("exit status %d: %s", rc, out);
        const char *stage = NULL;
        for (const char *p = out; (p = strstr(p, "\nstage ")); p++) stage = p + 7;
        if (stage) printf("kill %d in stage %c%s\n", k, *stage, temp_file_in(crashed) ? " (during a checkpoint write)" : "");
        kills++;
        in_writes += temp_file_in(crashed); /* a kill inside a write leaves it; --resume removes it */
        snprintf(path, sizeof path, "%s/resume.safetensors", crashed);
        if (access(path, F_OK) == 0) {
            if (ckpt_load_resume(path, m, params, stats, am, av, NULL, err, sizeof err)) fail_msg("after kill %d: %s", k, err);
            checkpoints++;
        }
    }
    printf("%d SIGKILLs (%d while a checkpoint was being written); a complete, loadable resume checkpoint after "
           "every one that came after the first epoch (%d)\n", kills, in_writes, checkpoints);
    assert_true(checkpoints > 0);
    if (!finished) assert_int_equal(run_program_to_end(NULL, crashed, out, sizeof out), 0);
    assert_true(kills >= 3);

    char a[1300], b[1300];
    snprintf(a, sizeof a, "%s/final.safetensors", straight);
    snprintf(b, sizeof b, "%s/final.safetensors", crashed);
    assert_same_tensors(a, b);
    free(params);
    free(stats);
    free(am);
    free(av);
    model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigkill_anywhere_then_resume),
    };
    return cmocka_run_group_tests(tests, test_dir_setup, test_dir_teardown);
}
