/* test_torch_load.c: a checkpoint of our resnet50 loads into torchvision and gives our logits.
 *
 * Builds resnet50 (1000 classes), initialises it, runs one train-mode forward so the running
 * statistics and num_batches_tracked are not their initial values, saves it with ckpt_save,
 * computes eval-mode logits on a fixed input, and asks scripts/check_torch_load.py to load the
 * checkpoint strictly into torchvision.models.resnet50() and compare. Exit 77 from the script
 * (no PyTorch) is a skip, as is a machine without /usr/bin/python3; any other failure fails.
 * Runs from the repository root.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/backend.h"
#include "ckpt/checkpoint.h"
#include "net/model.h"
#include "base/rng.h"
#include "ckpt/safetensors.h"

#ifndef PYTHON
#define PYTHON "/usr/bin/python3" /* Debian's, where python3-torch installs */
#endif
#define CHECKER "scripts/check_torch_load.py"
#define N 2
#define SIDE 64

/* A smooth, deterministic image batch (not random noise: closer to what a network sees). */
static void make_input(float *x, int n, int phase) {
    for (int i = 0; i < n; i++)
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < SIDE; y++)
                for (int w = 0; w < SIDE; w++)
                    x[(((size_t)i * 3 + c) * SIDE + y) * SIDE + w] =
                        sinf(0.11f * (float)(y + 3 * phase) + 0.7f * (float)c + (float)i) *
                        cosf(0.07f * (float)w - 0.5f * (float)(c + phase));
}

static void test_resnet50_loads_in_torchvision(void **state) {
    (void)state;
    if (access(PYTHON, X_OK) != 0) {
        printf("skipped: %s is not installed\n", PYTHON);
        skip();
    }
    char err[512];
    Model *m = model_build("resnet50", 1000, err, sizeof err);
    if (!m) fail_msg("%s", err);
    float *params = calloc(m->param_floats, sizeof *params), *stats = calloc(m->stat_floats, sizeof *stats);
    Rng rng;
    rng_seed(&rng, 20240611);
    model_init_host(m, &rng, params, stats);

    Backend *be = backend_create("cpu", err, sizeof err);
    if (!be) fail_msg("%s", err);
    if (model_attach(m, be, N, SIDE, SIDE, err, sizeof err)) fail_msg("model_attach: %s", err);
    model_set_weights(m, params, stats);

    /* One training step's forward: moves running statistics and num_batches_tracked. */
    size_t nin = (size_t)N * 3 * SIDE * SIDE;
    float *x = malloc(nin * sizeof *x);
    make_input(x, N, 1);
    model_forward(m, x, N, SIDE, SIDE, 1);

    char dir[] = "/tmp/cnntrain_torchload_XXXXXX";
    if (!mkdtemp(dir)) fail_msg("mkdtemp failed");
    char ckpt[128], io[128];
    snprintf(ckpt, sizeof ckpt, "%s/resnet50.safetensors", dir);
    snprintf(io, sizeof io, "%s/io.safetensors", dir);
    model_get_weights(m, params, stats);
    const char *meta[] = {"test", "test_torch_load", NULL};
    if (ckpt_save(ckpt, m, params, stats, meta, err, sizeof err)) fail_msg("ckpt_save: %s", err);

    make_input(x, N, 0);
    const Tensor *out = model_forward(m, x, N, SIDE, SIDE, 0);
    float *logits = malloc((size_t)N * 1000 * sizeof *logits);
    be->ops->tensor_download(be, logits, out);
    int finite = 1;
    for (int i = 0; i < N * 1000; i++) finite &= isfinite(logits[i]) != 0;
    assert_true(finite);

    StWriter *wr = st_writer_new();
    int64_t xshape[4] = {N, 3, SIDE, SIDE}, lshape[2] = {N, 1000};
    st_add(wr, "input", ST_F32, 4, xshape, x);
    st_add(wr, "logits", ST_F32, 2, lshape, logits);
    st_add_meta(wr, "num_batches_tracked", "1");   /* the one train-mode forward above */
    if (st_write(wr, io, err, sizeof err)) fail_msg("st_write: %s", err);
    st_writer_free(wr);

    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s %s %s %s", PYTHON, CHECKER, ckpt, io);
    int status = system(cmd);
    int rc = (status != -1 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;

    unlink(ckpt);
    unlink(io);
    rmdir(dir);
    model_free(m);
    backend_destroy(be);
    free(params);
    free(stats);
    free(x);
    free(logits);

    if (rc == 77) {
        printf("skipped: python3-torch is not installed\n");
        skip();
    }
    if (rc != 0) fail_msg("%s exited with %d: the checkpoint does not reproduce our logits in torchvision", CHECKER, rc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resnet50_loads_in_torchvision),
    };
    return cmocka_run_group_tests_name("checkpoint loads in torchvision", tests, NULL, NULL);
}
