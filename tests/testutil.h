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
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ckpt/safetensors.h"
#include "base/util.h"

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

/* The whole of path, in a malloc'd buffer one byte longer than *size, that byte 0: text files can
 * be searched as strings. */
static inline unsigned char *slurp(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = xmalloc(*size + 1);
    assert_int_equal(fread(b, 1, *size, f), *size);
    b[*size] = 0;
    fclose(f);
    return b;
}

/* A text file as a NUL-terminated malloc'd string. */
static inline char *read_text(const char *path) {
    size_t n;
    return (char *)slurp(path, &n);
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

/* Starts ./train (the program, built by `make test` beside the tests' working folder) on a config
 * or with --resume, as a child process that may die as the program does. An exec, not just a fork:
 * OpenMP's threads do not survive a fork. Its output goes to *fd (a temporary file). */
static inline pid_t start_program(const char *config, const char *resume_dir, long fsize_limit, const char *inject_nan, int *fd) {
    char log[] = "/tmp/cnn_train_err_XXXXXX", env[64];
    *fd = mkstemp(log);
    assert_true(*fd >= 0);
    unlink(log);
    assert_int_equal(access("./train", X_OK), 0);
    snprintf(env, sizeof env, "CNNTRAIN_INJECT_NAN=%s", inject_nan ? inject_nan : "0");
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(*fd, 1);
        dup2(*fd, 2);
        if (fsize_limit) {
            struct rlimit lim = {(rlim_t)fsize_limit, (rlim_t)fsize_limit};
            setrlimit(RLIMIT_FSIZE, &lim);
        }
        char *envp[] = {env, "OMP_NUM_THREADS=2", NULL};
        if (config) execle("./train", "./train", config, (char *)NULL, envp);
        else execle("./train", "./train", "--resume", resume_dir, (char *)NULL, envp);
        _exit(127);
    }
    return pid;
}

/* Waits for it; its output comes back in out. Returns the exit status (128 + a killing signal). */
static inline int finish_program(pid_t pid, int fd, char *out, size_t outlen) {
    int status = 0;
    waitpid(pid, &status, 0);
    ssize_t n = pread(fd, out, outlen - 1, 0);
    out[n > 0 ? n : 0] = 0;
    close(fd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Runs the program to its end; its output comes back in out. */
static inline int run_program_to_end(const char *config, const char *resume_dir, char *out, size_t outlen) {
    int fd;
    pid_t pid = start_program(config, resume_dir, 0, NULL, &fd);
    return finish_program(pid, fd, out, outlen);
}

/* Two safetensors files hold the same tensors, bit for bit (their metadata may differ). */
static inline void assert_same_tensors(const char *a_path, const char *b_path) {
    char err[1024];
    StFile a, b;
    if (st_read(a_path, &a, err, sizeof err) || st_read(b_path, &b, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(a.count, b.count);
    for (int i = 0; i < a.count; i++) {
        const StTensor *t = st_find(&b, a.tensors[i].name);
        if (!t) fail_msg("%s: no \"%s\" (in %s)", b_path, a.tensors[i].name, a_path);
        assert_int_equal(t->bytes, a.tensors[i].bytes);
        if (memcmp(t->data, a.tensors[i].data, t->bytes)) fail_msg("%s differs between %s and %s", t->name, a_path, b_path);
    }
    st_close(&a);
    st_close(&b);
}

#endif
