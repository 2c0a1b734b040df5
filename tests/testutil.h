/* testutil.h: scaffolding shared by the cmocka tests that work in a temporary folder.
 *
 * Define TEST_DIR_TEMPLATE (a mkdtemp template, e.g. "/tmp/cnn_test_x_XXXXXX") before including
 * this header, after <cmocka.h>, and pass test_dir_setup / test_dir_teardown to
 * cmocka_run_group_tests: the folder, in `dir`, is made before the tests and removed with
 * everything in it afterwards. Each test program is its own executable, so everything here is
 * static (inline, so a program need not use all of it). */
#ifndef CNN_TESTUTIL_H
#define CNN_TESTUTIL_H

#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

#ifndef TEST_DIR_TEMPLATE
#error "define TEST_DIR_TEMPLATE (a mkdtemp template) before including testutil.h"
#endif

/* The test's temporary folder. */
static char dir[256];

/* dir/name, in one of 8 rotating buffers (so a few may be live at once). */
static inline const char *in_dir(const char *name) {
    static char buf[8][512];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, sizeof buf[0], "%s/%s", dir, name);
    return b;
}

static inline int test_dir_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)ftw;
    if (flag != FTW_SL) chmod(path, 0755); /* a test may leave a read-only folder behind */
    return remove(path);
}

static inline int test_dir_setup(void **state) {
    (void)state;
    snprintf(dir, sizeof dir, "%s", TEST_DIR_TEMPLATE);
    return mkdtemp(dir) ? 0 : -1;
}

static inline int test_dir_teardown(void **state) {
    (void)state;
    return nftw(dir, test_dir_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#define ASSERT_HAS(text, s)                                                                  \
    do {                                                                                     \
        if (!strstr((text), (s))) fail_msg("expected \"%s\" in: %s", (s), (text));           \
    } while (0)
#define ASSERT_LACKS(text, s)                                                                \
    do {                                                                                     \
        if (strstr((text), (s))) fail_msg("did not expect \"%s\" in: %s", (s), (text));      \
    } while (0)
#define ASSERT_STARTS(text, s)                                                               \
    do {                                                                                     \
        if (strncmp((text), (s), strlen(s)))                                                 \
            fail_msg("message should start with \"%s\": %s", (s), (text));                   \
    } while (0)

/* Write n bytes to path (replacing it); any failure fails the test. */
static inline void spit(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* Write text to dir/name; returns the path (an in_dir buffer). */
static inline const char *write_text(const char *name, const char *text) {
    const char *path = in_dir(name);
    spit(path, text, strlen(text));
    return path;
}

/* The whole of path, in a malloc'd buffer one byte longer than *size. */
static inline unsigned char *slurp(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = xmalloc(*size + 1);
    assert_int_equal(fread(b, 1, *size, f), *size);
    fclose(f);
    return b;
}

/* How many files in folder have ".tmp." in their name (the atomic writers' temporary files). */
static inline int count_temp_files(const char *folder) {
    DIR *d = opendir(folder);
    assert_non_null(d);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

#endif
