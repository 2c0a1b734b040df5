/* test_hostile.c: files made to do harm. Checkpoints whose headers lie (lengths and offsets past
 * the end, shapes whose products overflow, names too long to print, hundreds of thousands of
 * entries), paths that are not files; CSVs whose image ids reach outside the images folder;
 * folder names that would corrupt a checkpoint's class list; JPEGs that claim more pixels than
 * the limit. Each is refused with a message that names the file, changes nothing, and crashes
 * nothing. (The parsers' everyday errors are in test_checkpoint.c, test_dataset.c and
 * test_jpeg.c; random inputs in tests/fuzz/.) */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "ckpt/checkpoint.h"
#include "cmd/commands.h"
#include "pipeline/dataset.h"
#include "pipeline/image.h"
#include "pipeline/loader.h"
#include "net/model.h"
#include "ckpt/safetensors.h"
#include "base/util.h"

#define TEST_DIR_TEMPLATE "/tmp/cnn_test_hostile_XXXXXX"
#include "testutil.h"

/* ================================================================ checkpoints */

/* conv1 3->4 (3x3), bn1, fc 4->3: small enough to build for every case. */
static Model *tiny_model(void) {
    Model *m = model_new("tiny", 3, 3);
    int v = net_relu(m, net_bn(m, "bn1", net_conv(m, "conv1", 0, 3, 4, 3, 1, 1), 4, 0));
    net_linear(m, "fc", net_gap(m, v), 4, 3, 1);
    return m;
}

/* A safetensors file in dir: the 8-byte length (hlen, or json's length where hlen is 0), json,
 * then ndata zero bytes. Returns its path. */
static const char *write_st(const char *name, const char *json, uint64_t hlen, size_t ndata) {
    size_t n = strlen(json);
    if (!hlen) hlen = n;
    unsigned char *b = xcalloc(8 + n + ndata, 1);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(b + 8, json, n);
    const char *path = in_dir(name);
    spit(path, b, 8 + n + ndata);
    free(b);
    return path;
}

/* ckpt_load refuses path with a message that starts with it and holds `what`; the weights and
 * statistics are untouched. Returns the message (static). */
static const char *expect_refused(const char *path, const char *what) {
    static char err[4096];
    Model *m = tiny_model();
    float *p = xmalloc(m->param_floats * sizeof(float)), *s = xmalloc(m->stat_floats * sizeof(float));
    for (size_t i = 0; i < m->param_floats; i++) p[i] = 7;
    for (size_t i = 0; i < m->stat_floats; i++) s[i] = 9;
    err[0] = 0;
    if (ckpt_load(path, m, p, s, err, sizeof err) == 0) fail_msg("%s: loaded, expected an error with \"%s\"", path, what);
    ASSERT_STARTS(err, path);
    ASSERT_HAS(err, what);
    for (size_t i = 0; i < m->param_floats; i++) assert_true(p[i] == 7);
    for (size_t i = 0; i < m->stat_floats; i++) assert_true(s[i] == 9);
    free(p), free(s);
    model_free(m);
    return err;
}

/* The same file through the header-only reader, which must not trust the length either. */
static void expect_header_refused(const char *path, const char *what) {
    StFile f;
    char err[1024];
    assert_int_equal(st_read_header(path, &f, err, sizeof err), -1);
    ASSERT_STARTS(err, path);
    ASSERT_HAS(err, what);
}

#define T_F32(name, shape, b, e) "\"" name "\":{\"dtype\":\"F32\",\"shape\":" shape ",\"data_offsets\":[" b "," e "]}"

static void test_header_length_lies(void **state) {
    (void)state;
    /* lengths far past the end, including ones where 8 + length wraps around */
    uint64_t huge[] = {UINT64_MAX, UINT64_MAX - 7, 1ull << 63, 1ull << 40, 100000001};
    for (size_t i = 0; i < sizeof huge / sizeof *huge; i++) {
        const char *path = write_st("huge_hlen.st", "{}", huge[i], 0);
        expect_refused(path, "over the 100000000-byte limit");
        expect_header_refused(path, "over the 100000000-byte limit");
    }
    /* under the limit but longer than the file: refused before a buffer of that size exists */
    const char *path = write_st("long_hlen.st", "{}", 99999999, 100);
    expect_refused(path, "runs past the end of the 110-byte file");
    expect_header_refused(path, "runs past the end");
    path = write_st("one_over.st", "{\"__metadata__\":{}}", 20, 0);
    expect_refused(path, "header length 20 runs past the end of the 27-byte file");
    /* the training-state readers and the pair check read headers too */
    char err[1024];
    Model *m = tiny_model();
    float *a = xcalloc(m->param_floats, sizeof(float)), *v = xcalloc(m->param_floats, sizeof(float));
    assert_int_equal(ckpt_load_train(path, m, a, v, NULL, err, sizeof err), -1);
    ASSERT_STARTS(err, path);
    assert_int_equal(ckpt_check_pair(path, path, err, sizeof err), -1);
    ASSERT_STARTS(err, path);
    free(a), free(v);
    model_free(m);
}

static void test_offsets_past_the_end(void **state) {
    (void)state;
    expect_refused(write_st("far.st", "{" T_F32("fc.bias", "[3]", "0", "9223372036854775807") "}", 0, 12),
                   "run past the end of the data section");
    /* an empty tensor placed far beyond the data: its size checks out, its place does not */
    expect_refused(write_st("far_empty.st", "{" T_F32("fc.bias", "[0]", "9223372036854775807", "9223372036854775807") "}",
                            0, 0),
                   "run past the end of the data section");
    /* offsets beyond int64, and beyond uint64 */
    expect_refused(write_st("u64.st", "{" T_F32("fc.bias", "[3]", "0", "18446744073709551615") "}", 0, 12),
                   "too large");
    expect_refused(write_st("u65.st", "{" T_F32("fc.bias", "[3]", "0", "36893488147419103232") "}", 0, 12),
                   "too large");
    /* an end that wraps back into the file when added to the header's size */
    expect_refused(write_st("wrap.st", "{" T_F32("fc.bias", "[3]", "9223372036854775795", "9223372036854775807") "}",
                            0, 12),
                   "run past the end of the data section");
    /* two tensors claiming the same bytes */
    expect_refused(write_st("overlap.st", "{" T_F32("a", "[3]", "0", "12") "," T_F32("b", "[3]", "0", "12") "}", 0, 12),
                   "overlap");
}

static void test_shapes_that_overflow(void **state) {
    (void)state;
    /* the element count overflows 64 bits */
    expect_refused(write_st("e65.st", "{" T_F32("fc.weight", "[4294967296,4294967296,2]", "0", "0") "}", 0, 0),
                   "too many elements");
    expect_refused(write_st("e64.st", "{" T_F32("fc.weight", "[9223372036854775807,3]", "0", "0") "}", 0, 0),
                   "too many elements");
    /* the count fits, the bytes do not */
    expect_refused(write_st("b64.st", "{" T_F32("fc.weight", "[4611686018427387904]", "0", "0") "}", 0, 0),
                   "too many bytes");
    /* over INT64_MAX elements of one byte: fits uint64, claims more data than there is */
    expect_refused(write_st("i64.st",
                            "{\"fc.weight\":{\"dtype\":\"U8\",\"shape\":[3037000500,3037000500],\"data_offsets\":[0,4]}}",
                            0, 4),
                   "needs 9223372037000250000 bytes");
    /* one dimension too large on its own */
    expect_refused(write_st("dim.st", "{" T_F32("fc.weight", "[99999999999999999999]", "0", "0") "}", 0, 0),
                   "too large");
    /* zero elements make any other dimension legal: parsed, then refused as the wrong shape */
    expect_refused(write_st("zero.st", "{" T_F32("fc.weight", "[0,9223372036854775807]", "0", "0") "}", 0, 0),
                   "9223372036854775807");
}

/* Error messages stay within the buffer, whatever the names and counts. */
static void test_names_that_do_not_fit(void **state) {
    (void)state;
    size_t n = 200000;
    char *name = xmalloc(n + 1);
    memset(name, 'w', n);
    name[n] = 0;
    /* a 200 KB tensor name, and one that starts like a real parameter */
    size_t cap = n + 4096;
    char *json = xmalloc(cap);
    snprintf(json, cap, "{\"%s\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                        "\"conv1.weight%.300s\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
             name, name);
    const char *path = write_st("longname.st", json, 0, 2);
    const char *err = expect_refused(path, "unexpected");
    assert_true(strlen(err) < 4096);
    /* a small buffer: cut, terminated, still naming the file */
    Model *m = tiny_model();
    float *p = xcalloc(m->param_floats, sizeof(float)), *s = xcalloc(m->stat_floats, sizeof(float));
    char small[48];
    memset(small, 'x', sizeof small);
    assert_int_equal(ckpt_load(path, m, p, s, small, sizeof small), -1);
    assert_true(memchr(small, 0, sizeof small) != NULL);
    assert_int_equal(strncmp(small, path, strlen(small) < strlen(path) ? strlen(small) : strlen(path)), 0);

    /* 100000 empty tensors: refused quickly, the list cut with "and N more" */
    size_t k = 0;
    cap = 100000 * 80 + 64;
    json = xrealloc(json, cap);
    k += (size_t)snprintf(json + k, cap - k, "{");
    for (int i = 0; i < 100000; i++)
        k += (size_t)snprintf(json + k, cap - k, "%s\"t%d\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}",
                              i ? "," : "", i);
    snprintf(json + k, cap - k, "}");
    double t0 = now_seconds();
    expect_refused(write_st("many.st", json, 0, 0), "more");
    double sec = now_seconds() - t0;
    print_message("  100000 tensors refused in %.2f s\n", sec);
    assert_true(sec < 20);

    /* control characters, which a terminal would act on when a message quotes them: ESC, a C1
     * control (U+009B, CSI) and DEL in names, keys and values; only values may break lines */
    const char *escapes[][2] = {
        {"{\"x\\u001b[2J\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", "U+001B in a tensor name"},
        {"{\"x\\u009b2J\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", "U+009B in a tensor name"},
        {"{\"x\":{\"dtype\":\"U8\\u007f\",\"shape\":[1],\"data_offsets\":[0,1]}}", "U+007F in a dtype string"},
        {"{\"x\":{\"dtype\":\"U8\",\"\\rshape\":[1],\"data_offsets\":[0,1]}}", "U+000D in a field name"},
        {"{\"__metadata__\":{\"k\\n\":\"v\"}}", "U+000A in a metadata key"},
        {"{\"__metadata__\":{\"arch\":\"a\\u001b]0;title\\u0007\"}}", "U+001B in a metadata value"},
    };
    for (int i = 0; i < 6; i++) {
        const char *e = expect_refused(write_st("escape.st", escapes[i][0], 0, 1 - (i >= 4)), escapes[i][1]);
        for (const char *c = e; *c; c++) assert_true((unsigned char)*c >= 0x20);
    }
    StFile f;
    char msg[512];
    const char *ok = write_st("lines.st", "{\"__metadata__\":{\"class_names\":\"a\\nb\\tc\"}}", 0, 0);
    if (st_read(ok, &f, msg, sizeof msg)) fail_msg("%s", msg);
    assert_string_equal(st_meta(&f, "class_names"), "a\nb\tc");
    st_close(&f);

    /* a 64 KB "arch" in the metadata, which the mismatch message quotes */
    snprintf(json, cap, "{\"__metadata__\":{\"arch\":\"%.65536s\",\"classes\":\"3\"}}", name);
    expect_refused(write_st("longarch.st", json, 0, 0), "missing");
    free(p), free(s);
    model_free(m);
    free(json);
    free(name);
}

/* Not a regular file: a device that never ends, a FIFO nobody writes, a folder. Refused before
 * reading (a read of /dev/zero would never end; of a FIFO, block). */
static void test_not_regular_files(void **state) {
    (void)state;
    const char *fifo = in_dir("fifo.safetensors");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    const char *paths[] = {"/dev/zero", fifo, dir};
    for (int i = 0; i < 3; i++) {
        expect_refused(paths[i], "not a regular file");
        expect_header_refused(paths[i], "not a regular file");
        Image im;
        char err[512];
        assert_int_equal(jpeg_decode_file(paths[i], NULL, &im, NULL, err, sizeof err), -1);
        ASSERT_STARTS(err, paths[i]);
        ASSERT_HAS(err, "not a regular file");
    }
    /* a data set whose label file is a FIFO or a link to /dev/zero */
    assert_int_equal(mkdir(in_dir("d"), 0755), 0);
    assert_int_equal(mkdir(in_dir("d/train_images"), 0755), 0);
    assert_int_equal(mkfifo(in_dir("d/fifo.csv"), 0600), 0);
    assert_int_equal(symlink("/dev/zero", in_dir("d/zero.csv")), 0);
    const char *csvs[] = {"fifo.csv", "zero.csv"};
    for (int i = 0; i < 2; i++) {
        DatasetSpec spec = {.format = DATA_CSV, .root = in_dir("d"), .csv = csvs[i], .images_dir = "train_images",
                            .valid_pct = 0.2f};
        Dataset ds;
        char err[512];
        assert_int_equal(dataset_open(&spec, 0, &ds, err, sizeof err), -1);
        char want[600];
        snprintf(want, sizeof want, "%s/%s: the CSV file is not a regular file", spec.root, csvs[i]);
        ASSERT_STARTS(err, want);
    }
}

/* ================================================================ data sets */

static void touch(const char *rel) {
    char *p = xstrdup(in_dir(rel));
    for (char *s = strchr(p + strlen(dir) + 1, '/'); s; s = strchr(s + 1, '/')) {
        *s = 0;
        mkdir(p, 0755);
        *s = '/';
    }
    spit(p, "", 0);
    free(p);
}

/* stderr to a file while f runs; returns what was printed (static). */
static const char *captured(void (*f)(void *), void *arg) {
    static char text[1 << 16];
    fflush(stderr);
    int saved = dup(2), fd = open(in_dir("stderr.txt"), O_CREAT | O_TRUNC | O_WRONLY, 0644);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);
    f(arg);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    size_t n;
    unsigned char *b = slurp(in_dir("stderr.txt"), &n);
    n = n < sizeof text - 1 ? n : sizeof text - 1;
    memcpy(text, b, n);
    text[n] = 0;
    free(b);
    return text;
}

typedef struct {
    DatasetSpec spec;
    int strict, rc;
    Dataset ds;
    char err[1024];
} Open;

static void do_open(void *arg) {
    Open *o = arg;
    o->rc = dataset_open(&o->spec, o->strict, &o->ds, o->err, sizeof o->err);
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* Ids that reach outside train_images in every spelling: refused with CSV file and line, never
 * listed; the images that are inside still are. */
static void test_csv_ids_stay_inside(void **state) {
    (void)state;
    touch("c/train_images/a.jpg");
    touch("c/train_images/b.jpg");
    touch("c/train_images/sub/c.jpg");
    touch("c/secret.jpg");
    char *long_id = xmalloc(5001);
    memset(long_id, 'n', 5000);
    long_id[5000] = 0;
    char csv[8192];
    snprintf(csv, sizeof csv,
             "image_id,label,is_val\n"
             "a.jpg,x,False\n"                   /* 2 ok */
             "../secret.jpg,x,False\n"           /* 3 */
             "sub/..,x,False\n"                  /* 4 */
             "./../secret.jpg,x,False\n"         /* 5 */
             "sub/./../../secret.jpg,x,False\n"  /* 6 */
             "a.jpg/..,x,False\n"                /* 7 */
             "//etc/passwd,x,False\n"            /* 8 */
             "/dev/zero,x,False\n"               /* 9 */
             "..\\secret.jpg,x,False\n"          /* 10 */
             "\"sub/\n../../secret.jpg\",x,False\n" /* 11-12: a line break inside a quoted id */
             "%s,x,False\n"                      /* 13: 5000 bytes */
             "sub/c.jpg,x,True\n"                /* 14 ok */
             "b.jpg,y,False\n",                  /* 15 ok */
             long_id);
    write_text("c/train.csv", csv);
    Open o = {.spec = {.format = DATA_CSV, .root = xstrdup(in_dir("c")), .csv = "train.csv",
                       .images_dir = "train_images", .valid_pct = 0.2f, .seed = 1}};
    const char *report = captured(do_open, &o);
    if (o.rc) fail_msg("%s", o.err);
    const char *expect[] = {":3: image_id \"../secret.jpg\" has a \"..\" component",
                            ":4: image_id \"sub/..\" has a \"..\" component",
                            ":5: image_id \"./../secret.jpg\" has a \"..\" component",
                            ":6: image_id \"sub/./../../secret.jpg\" has a \"..\" component",
                            ":7: image_id \"a.jpg/..\" has a \"..\" component",
                            ":8: image_id \"//etc/passwd\" is an absolute path",
                            ":9: image_id \"/dev/zero\" is an absolute path",
                            ":10: image_id \"..\\secret.jpg\" has a backslash",
                            ":11: image_id \"sub/?../../secret.jpg\" has a control character",
                            ":13: image_id \"nnnn"};
    int n = (int)(sizeof expect / sizeof *expect);
    char want[256];
    for (int i = 0; i < n; i++) {
        snprintf(want, sizeof want, "%s%s", in_dir("c/train.csv"), expect[i]);
        ASSERT_HAS(report, want);
    }
    assert_int_equal(count_lines(report), n);
    assert_int_equal(o.ds.skipped, n);
    /* the long id is cut in the message: no line longer than a few hundred bytes */
    for (const char *line = report; *line; line = strchr(line, '\n') + 1)
        assert_true(strcspn(line, "\n") < 400);
    /* what is listed is inside the images folder */
    assert_int_equal(o.ds.ntrain, 2);
    assert_int_equal(o.ds.nvalid, 1);
    assert_string_equal(o.ds.train[0].path, in_dir("c/train_images/a.jpg"));
    assert_string_equal(o.ds.train[1].path, in_dir("c/train_images/b.jpg"));
    assert_string_equal(o.ds.valid[0].path, in_dir("c/train_images/sub/c.jpg"));
    dataset_free(&o.ds);

    /* strict: the first escaping id is the error, with file and line */
    o.strict = 1;
    captured(do_open, &o);
    assert_int_equal(o.rc, -1);
    snprintf(want, sizeof want, "%s:3: image_id \"../secret.jpg\" has a \"..\" component", in_dir("c/train.csv"));
    ASSERT_STARTS(o.err, want);
    free((void *)o.spec.root);
    free(long_id);
}

/* A class folder whose name holds a line break would split into two classes in a checkpoint's
 * class_names (one per line): left out, as a CSV label with one is, naming the folder. */
static void test_class_folder_names(void **state) {
    (void)state;
    touch("f/train/cat/1.jpg");
    touch("f/train/dog\nbird/2.jpg");
    touch("f/train/esc\033[2J/3.jpg");
    touch("f/val/cat/4.jpg");
    touch("f/val/dog\nbird/5.jpg");
    Open o = {.spec = {.format = DATA_FOLDER, .root = xstrdup(in_dir("f")), .train_dir = "train", .valid_dir = "val"}};
    const char *report = captured(do_open, &o);
    if (o.rc) fail_msg("%s", o.err);
    char want[512];
    snprintf(want, sizeof want, "%s: class folder \"dog?bird\" has a control character", in_dir("f/train"));
    ASSERT_HAS(report, want);
    snprintf(want, sizeof want, "%s: class folder \"esc?[2J\" has a control character", in_dir("f/train"));
    ASSERT_HAS(report, want);
    snprintf(want, sizeof want, "%s: class folder \"dog?bird\" has a control character", in_dir("f/val"));
    ASSERT_HAS(report, want);
    ASSERT_LACKS(report, "\033");
    assert_int_equal(o.ds.nclasses, 1);
    assert_string_equal(o.ds.classes[0], "cat");
    assert_int_equal(o.ds.ntrain, 1);
    assert_int_equal(o.ds.nvalid, 1);
    dataset_free(&o.ds);
    free((void *)o.spec.root);
}

/* ================================================================ JPEGs */

/* A small real JPEG with its SOF's height and width replaced. */
static unsigned char *jpeg_claiming(int w, int h, int progressive_marker, size_t *n) {
    Image im = {40, 25, xcalloc(40 * 25 * 3, 1)};
    char err[512];
    const char *path = in_dir("small.jpg");
    if (jpeg_write_file(path, &im, 90, err, sizeof err)) fail_msg("%s", err);
    image_free(&im);
    unsigned char *b = slurp(path, n);
    size_t sof = 0;
    for (size_t i = 2; i + 9 < *n && !sof; i++)
        if (b[i] == 0xFF && b[i + 1] == 0xC0) sof = i;
    assert_true(sof > 0);
    if (progressive_marker) b[sof + 1] = 0xC2;
    b[sof + 5] = (unsigned char)(h >> 8), b[sof + 6] = (unsigned char)h;
    b[sof + 7] = (unsigned char)(w >> 8), b[sof + 8] = (unsigned char)w;
    return b;
}

static void test_jpeg_pixel_limit(void **state) {
    (void)state;
    /* 60000x60000 (3.6 Gpx, 10.8 GB of RGB): refused from the header, baseline or progressive,
     * at the default limit and at a chosen one, from memory and from a file */
    for (int prog = 0; prog < 2; prog++) {
        size_t n;
        unsigned char *b = jpeg_claiming(60000, 60000, prog, &n);
        Image im;
        char err[512];
        assert_int_equal(jpeg_decode_mem(b, n, "huge.jpg", NULL, &im, NULL, err, sizeof err), -1);
        ASSERT_STARTS(err, "huge.jpg: the header claims 60000x60000 = 3600000000 pixels, over the limit of 67108864");
        assert_null(im.rgb);
        JpegOptions small = {0, 1000, 0};
        const char *path = in_dir("huge.jpg");
        spit(path, b, n);
        assert_int_equal(jpeg_decode_file(path, &small, &im, NULL, err, sizeof err), -1);
        ASSERT_STARTS(err, path);
        ASSERT_HAS(err, "over the limit of 1000");
        free(b);
    }
    /* the largest a JPEG can claim, and a zero side */
    size_t n;
    unsigned char *b = jpeg_claiming(65535, 65535, 0, &n);
    Image im;
    char err[512];
    assert_int_equal(jpeg_decode_mem(b, n, "max.jpg", NULL, &im, NULL, err, sizeof err), -1);
    ASSERT_STARTS(err, "max.jpg: ");
    free(b);
    b = jpeg_claiming(0, 25, 0, &n);
    assert_int_equal(jpeg_decode_mem(b, n, "zero.jpg", NULL, &im, NULL, err, sizeof err), -1);
    ASSERT_STARTS(err, "zero.jpg: ");
    free(b);
}

/* A file of `size` bytes (sparse: no disk) that starts with the n bytes of head. */
static const char *sparse_file(const char *name, const void *head, size_t n, long long size) {
    const char *path = in_dir(name);
    spit(path, head, n);
    assert_int_equal(truncate(path, (off_t)size), 0);
    return path;
}

static long peak_rss_kb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* A 3 GB file named .jpg that is no JPEG (a zip, zeros) is refused from its first bytes, without
 * being read (the whole file was read first: 3 GB of memory and 20 s per loader thread). One that
 * starts like a JPEG but is over the size limit is refused from its size, naming the limit. */
static void test_jpeg_huge_files(void **state) {
    (void)state;
    const long long big = 3LL << 30;
    const char *zip = sparse_file("zip.jpg", "PK\3\4", 4, big), *zeros = sparse_file("zeros.jpg", "", 0, big);
    Image im;
    char err[512];
    long rss0 = peak_rss_kb();
    assert_int_equal(jpeg_decode_file(zip, NULL, &im, NULL, err, sizeof err), -1);
    ASSERT_STARTS(err, zip);
    ASSERT_HAS(err, "not a JPEG file (zip signature)");
    assert_int_equal(jpeg_decode_file(zeros, NULL, &im, NULL, err, sizeof err), -1);
    ASSERT_HAS(err, "not a JPEG file (starts with 0x00 0x00 0x00)");
    if (peak_rss_kb() - rss0 > 64 * 1024) fail_msg("peak memory grew by %ld KB: the file was read", peak_rss_kb() - rss0);

    /* a JPEG's first bytes, then 3 GB: over the default limit (64 MB) */
    const char *fake = sparse_file("fake.jpg", "\xFF\xD8\xFF\xE0", 4, big);
    assert_int_equal(jpeg_decode_file(fake, NULL, &im, NULL, err, sizeof err), -1);
    ASSERT_STARTS(err, fake);
    ASSERT_HAS(err, "3221225472 bytes, over the limit of 64000000 bytes for an image file ([data] max_file_mb)");
    if (peak_rss_kb() - rss0 > 64 * 1024) fail_msg("peak memory grew by %ld KB: the file was read", peak_rss_kb() - rss0);

    /* a chosen limit: a real JPEG one byte over it is refused, at it decoded */
    Image small = {40, 25, xcalloc(40 * 25 * 3, 1)};
    const char *path = in_dir("small.jpg");
    if (jpeg_write_file(path, &small, 90, err, sizeof err)) fail_msg("%s", err);
    image_free(&small);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    JpegOptions o = {.max_file_bytes = st.st_size - 1};
    assert_int_equal(jpeg_decode_file(path, &o, &im, NULL, err, sizeof err), -1);
    ASSERT_HAS(err, "over the limit of");
    o.max_file_bytes = st.st_size;
    if (jpeg_decode_file(path, &o, &im, NULL, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(im.w, 40);
    image_free(&im);
}

typedef struct {
    Loader *L;
    int got, bad;
} Drain;

static void drain(void *arg) {
    Drain *d = arg;
    loader_start_epoch(d->L, 0, 0);
    for (const Batch *b; (b = loader_next(d->L));) d->got += b->n;
    d->bad = loader_bad_images(d->L);
}

/* One epoch of a loader over 3 images of which the middle one is bad: two load, one is counted
 * bad; returns what the loader reported. */
static const char *one_bad_of_three(const LoaderSpec *spec) {
    char err[512];
    Drain d = {loader_create(spec, err, sizeof err), 0, 0};
    if (!d.L) fail_msg("%s", err);
    const char *report = captured(drain, &d);
    loader_destroy(d.L);
    assert_int_equal(d.got, 2);
    assert_int_equal(d.bad, 1);
    return report;
}

/* The loader's limit (LoaderSpec.max_pixels): an image one pixel over it is skipped, reported
 * once with its path (and counted in the summary), and the others load. */
static void test_loader_pixel_limit(void **state) {
    (void)state;
    Image ok = {40, 25, xcalloc(40 * 25 * 3, 1)}, over = {41, 25, xcalloc(41 * 25 * 3, 1)};
    char err[512];
    Sample s[3] = {{xstrdup(in_dir("ok1.jpg")), 0}, {xstrdup(in_dir("over.jpg")), 1}, {xstrdup(in_dir("ok2.jpg")), 0}};
    if (jpeg_write_file(s[0].path, &ok, 90, err, sizeof err) || jpeg_write_file(s[1].path, &over, 90, err, sizeof err) ||
        jpeg_write_file(s[2].path, &ok, 90, err, sizeof err))
        fail_msg("%s", err);
    LoaderSpec spec = {.samples = s, .count = 3, .tf = transform_defaults(TF_RESIZE_CENTER_CROP, 16, 0), .batch = 3,
                       .threads = 2, .seed = 1, .format = BATCH_F32, .max_pixels = 1000};
    const char *report = one_bad_of_three(&spec);
    char want[600];
    snprintf(want, sizeof want, "%s: the header claims 41x25 = 1025 pixels, over the limit of 1000", s[1].path);
    ASSERT_HAS(report, want);
    ASSERT_HAS(report, "1 of 3 images are bad");
    assert_int_equal(count_lines(report), 2);
    for (int i = 0; i < 3; i++) free(s[i].path);
    image_free(&ok), image_free(&over);
}

/* The loader's file size limit (LoaderSpec.max_file_bytes, [data] max_file_mb): a file over it
 * is skipped and reported with its path like any bad image, and so is a huge non-JPEG. */
static void test_loader_file_limit(void **state) {
    (void)state;
    Image im = {40, 25, xcalloc(40 * 25 * 3, 1)};
    char err[512];
    Sample s[3] = {{xstrdup(in_dir("l1.jpg")), 0}, {xstrdup(in_dir("l2.jpg")), 1}, {xstrdup(in_dir("l3.jpg")), 0}};
    if (jpeg_write_file(s[0].path, &im, 90, err, sizeof err) || jpeg_write_file(s[2].path, &im, 90, err, sizeof err))
        fail_msg("%s", err);
    sparse_file("l2.jpg", "\xFF\xD8\xFF\xE0", 4, 1LL << 30);
    struct stat st;
    assert_int_equal(stat(s[0].path, &st), 0);
    LoaderSpec spec = {.samples = s, .count = 3, .tf = transform_defaults(TF_RESIZE_CENTER_CROP, 16, 0), .batch = 3,
                       .threads = 2, .seed = 1, .format = BATCH_F32, .max_file_bytes = 1000000};
    const char *report = one_bad_of_three(&spec);
    char want[600];
    snprintf(want, sizeof want, "%s: 1073741824 bytes, over the limit of 1000000 bytes", s[1].path);
    ASSERT_HAS(report, want);
    ASSERT_HAS(report, "1 of 3 images are bad");
    for (int i = 0; i < 3; i++) free(s[i].path);
    image_free(&im);
}

/* `train smoke --out DIR` in a child process (its errors exit); its exit status, stdout and stderr in text. */
static int smoke_into(const char *dir, char *text, size_t cap) {
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(in_dir("smoke.txt"), O_CREAT | O_TRUNC | O_WRONLY, 0644);
        dup2(fd, 1), dup2(fd, 2), close(fd);
        char *argv[] = {"train", "smoke", "--steps", "1", "--valid", "4", "--batch", "2", "--size", "16", "--device",
                        "cpu", "--out", (char *)dir, NULL};
        exit(cmd_smoke(14, argv));
    }
    int status = 0;
    waitpid(pid, &status, 0);
    size_t n;
    unsigned char *b = slurp(in_dir("smoke.txt"), &n);
    n = n < cap - 1 ? n : cap - 1;
    memcpy(text, b, n);
    text[n] = 0;
    free(b);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* `train smoke` replaces only its own checkpoint: a file of the user's at its path stays, and the
 * refusal comes before any training. */
static void test_smoke_keeps_other_files(void **state) {
    (void)state;
    char text[4096], dir[600], path[700];
    snprintf(dir, sizeof dir, "%s", in_dir("smoke"));
    snprintf(path, sizeof path, "%s/final.safetensors", dir);
    mkdir(dir, 0755);
    spit(path, "the user's file", 15);
    assert_int_not_equal(smoke_into(dir, text, sizeof text), 0);
    assert_non_null(strstr(text, "was not written by train smoke: not replaced"));
    assert_null(strstr(text, "step")); /* refused before the work */
    size_t n;
    unsigned char *kept = slurp(path, &n);
    assert_memory_equal(kept, "the user's file", n);
    free(kept);
    unlink(path);
    assert_int_equal(smoke_into(dir, text, sizeof text), 0);
    assert_null(strstr(text, "replacing"));
    assert_int_equal(smoke_into(dir, text, sizeof text), 0);
    assert_non_null(strstr(text, "(replacing the previous smoke run's)"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_length_lies), cmocka_unit_test(test_offsets_past_the_end),
        cmocka_unit_test(test_shapes_that_overflow), cmocka_unit_test(test_names_that_do_not_fit),
        cmocka_unit_test(test_not_regular_files), cmocka_unit_test(test_csv_ids_stay_inside),
        cmocka_unit_test(test_class_folder_names), cmocka_unit_test(test_jpeg_pixel_limit),
        cmocka_unit_test(test_loader_pixel_limit), cmocka_unit_test(test_jpeg_huge_files),
        cmocka_unit_test(test_loader_file_limit), cmocka_unit_test(test_smoke_keeps_other_files),
    };
    return cmocka_run_group_tests(tests, test_dir_setup, test_dir_teardown);
}
