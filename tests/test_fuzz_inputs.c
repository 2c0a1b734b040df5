/* test_fuzz_inputs.c: every fuzz target's seed corpus (tests/fuzz/corpus/NAME) and the inputs that
 * once broke it (tests/fuzz/regress/NAME), run through the target's own entry point, so they are
 * checked in every `make test` (and under the sanitizers) even where clang's libFuzzer is missing. */
#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/util.h"

#define FUZZ_ENTRY fuzz_config
#include "fuzz/fuzz_config.c"
#undef FUZZ_ENTRY
#define FUZZ_ENTRY fuzz_csv
#include "fuzz/fuzz_csv.c"
#undef FUZZ_ENTRY
#define FUZZ_ENTRY fuzz_safetensors
#include "fuzz/fuzz_safetensors.c"
#undef FUZZ_ENTRY
#define FUZZ_ENTRY fuzz_jpeg
#include "fuzz/fuzz_jpeg.c"
#undef FUZZ_ENTRY
#define FUZZ_ENTRY fuzz_image
#include "fuzz/fuzz_image.c"
#undef FUZZ_ENTRY

typedef int (*Entry)(const uint8_t *, size_t);

/* Every file in folder through entry; returns how many. A missing folder holds none. */
static int replay(const char *folder, Entry entry) {
    DIR *d = opendir(folder);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", folder, e->d_name);
        uint8_t *data;
        size_t size;
        char err[512];
        if (read_whole_file(path, &data, &size, err, sizeof err)) fail_msg("%s", err);
        entry(data, size);
        free(data);
        n++;
    }
    closedir(d);
    return n;
}

static void run_target(const char *name, Entry entry, int quiet) {
    char corpus[256], regress[256];
    snprintf(corpus, sizeof corpus, "tests/fuzz/corpus/%s", name);
    snprintf(regress, sizeof regress, "tests/fuzz/regress/%s", name);
    /* the CSV listing reports bad rows on stderr: sent to /dev/null meanwhile */
    int saved = -1;
    if (quiet) {
        fflush(stderr);
        saved = dup(2);
        int null = open("/dev/null", O_WRONLY);
        assert_true(saved >= 0 && null >= 0);
        dup2(null, 2);
        close(null);
    }
    int seeds = replay(corpus, entry), old = replay(regress, entry);
    if (quiet) {
        fflush(stderr);
        dup2(saved, 2);
        close(saved);
    }
    print_message("  %s: %d seeds, %d regression inputs\n", name, seeds, old);
    assert_true(seeds > 0);
}

static void test_config_inputs(void **state) { (void)state, run_target("config", fuzz_config, 0); }
static void test_csv_inputs(void **state) { (void)state, run_target("csv", fuzz_csv, 1); }
static void test_safetensors_inputs(void **state) { (void)state, run_target("safetensors", fuzz_safetensors, 0); }
static void test_jpeg_inputs(void **state) { (void)state, run_target("jpeg", fuzz_jpeg, 0); }
static void test_image_inputs(void **state) { (void)state, run_target("image", fuzz_image, 0); }

/* The seeds are what they claim: the tiny checkpoints load in all four dtypes. */
static void test_tiny_checkpoints_load(void **state) {
    (void)state;
    const char *dtypes[] = {"f32", "f16", "bf16", "f64"};
    Model *m = st_tiny_model();
    float *p = xcalloc(m->param_floats, sizeof(float)), *s = xcalloc(m->stat_floats, sizeof(float));
    for (int i = 0; i < 4; i++) {
        char path[256], err[1024];
        snprintf(path, sizeof path, "tests/fuzz/corpus/safetensors/tiny_%s.safetensors", dtypes[i]);
        if (ckpt_load(path, m, p, s, err, sizeof err)) fail_msg("%s", err);
    }
    free(p), free(s);
    model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_inputs),      cmocka_unit_test(test_csv_inputs),
        cmocka_unit_test(test_safetensors_inputs), cmocka_unit_test(test_jpeg_inputs),
        cmocka_unit_test(test_image_inputs),       cmocka_unit_test(test_tiny_checkpoints_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
