/* fuzz.h: what the libFuzzer targets in tests/fuzz/ share.
 *
 * Each target fuzz_NAME.c defines one entry point, FUZZ_ENTRY: libFuzzer's LLVMFuzzerTestOneInput,
 * unless the includer names it otherwise (tests/test_fuzz_inputs.c includes every target under its
 * own name and replays the seed corpora and the regression inputs as a unit test). A target checks
 * what must hold for any input with FUZZ_CHECK, which aborts so that libFuzzer keeps the input. */
#ifndef CNN_FUZZ_H
#define CNN_FUZZ_H

#include <fcntl.h>
#include <ftw.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Printed to stdout: the CSV target runs with stderr closed (its listing reports every bad row). */
#define FUZZ_CHECK(cond, ...)                                                                   \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            printf("fuzz check failed at %s:%d: ", __FILE__, __LINE__);                         \
            printf(__VA_ARGS__);                                                                \
            printf("\n");                                                                       \
            fflush(stdout);                                                                     \
            abort();                                                                            \
        }                                                                                       \
    } while (0)

static inline int fuzz_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static char fuzz_scratch[512];

static inline void fuzz_dir_remove(void) { nftw(fuzz_scratch, fuzz_rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* A scratch folder of this process (under $TMPDIR), removed at exit. */
static inline const char *fuzz_dir(void) {
    if (!fuzz_scratch[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(fuzz_scratch, sizeof fuzz_scratch, "%s/cnn_fuzz_XXXXXX", t && *t ? t : "/tmp");
        FUZZ_CHECK(mkdtemp(fuzz_scratch), "cannot make a scratch folder %s", fuzz_scratch);
        atexit(fuzz_dir_remove);
    }
    return fuzz_scratch;
}

/* Replace the file path with n bytes. */
static inline void fuzz_write(const char *path, const void *data, size_t n) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    FUZZ_CHECK(fd >= 0, "cannot create %s", path);
    FUZZ_CHECK(n == 0 || write(fd, data, n) == (ssize_t)n, "cannot write %s", path);
    close(fd);
}

/* An error message must name the file it is about: it starts with label. */
static inline int fuzz_names(const char *err, const char *label) { return !strncmp(err, label, strlen(label)); }

#endif
