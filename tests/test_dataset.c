/* test_dataset.c: listing data sets in the folder and the CSV layout.
 * Small trees of tiny fake images (listing never decodes) check the order, the labels, every kind
 * of bad entry (reported on stderr with its file and line, counted and left out, or the error in
 * strict mode) and the fatal cases; then the two shared data sets, where they exist, are listed
 * and counted. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pipeline/dataset.h"
#include "base/util.h"

#define TEST_DIR_TEMPLATE "/tmp/cnn_test_dataset_XXXXXX"
#include "testutil.h"

/* A fake image (or any file) at dir/rel, its folders made as needed. */
static void touch(const char *rel) {
    char path[512];
    snprintf(path, sizeof path, "%s", in_dir(rel));
    char *slash = strrchr(path, '/');
    *slash = 0;
    assert_int_equal(make_dirs(path), 0);
    *slash = '/';
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs("not a jpeg", f);
    fclose(f);
}

static void mkdir_rel(const char *rel) { assert_int_equal(make_dirs(in_dir(rel)), 0); }

/* ---- stderr capture: what dataset_open reports goes to a file we read back ---- */

static char captured[65536];
static int saved_fd = -1;

static void capture_begin(void) {
    fflush(stderr);
    saved_fd = dup(2);
    int fd = open(in_dir("stderr.txt"), O_CREAT | O_TRUNC | O_WRONLY, 0644);
    assert_true(fd >= 0 && saved_fd >= 0);
    dup2(fd, 2);
    close(fd);
}

static const char *capture_end(void) {
    fflush(stderr);
    dup2(saved_fd, 2);
    close(saved_fd);
    FILE *f = fopen(in_dir("stderr.txt"), "rb");
    assert_non_null(f);
    size_t n = fread(captured, 1, sizeof captured - 1, f);
    captured[n] = 0;
    fclose(f);
    return captured;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* ---- specs ---- */

/* A root path that outlives in_dir's rotating buffers, since a spec keeps the pointer. */
static const char *root_of(const char *rel) {
    static char buf[16][512];
    static int k;
    char *b = buf[k++ % 16];
    snprintf(b, sizeof buf[0], "%s/%s", dir, rel);
    return b;
}

static DatasetSpec folder_spec(const char *root) {
    return (DatasetSpec){.format = DATA_FOLDER, .root = root, .train_dir = "train", .valid_dir = "val"};
}

static DatasetSpec csv_spec(const char *root) {
    return (DatasetSpec){.format = DATA_CSV, .root = root, .csv = "train.csv", .images_dir = "train_images",
                         .valid_pct = 0.2f, .seed = 42};
}

/* Open, expecting success, with stderr captured into *report. */
static Dataset open_ok(const DatasetSpec *spec, int strict, const char **report) {
    Dataset ds;
    char err[1024] = "";
    capture_begin();
    int rc = dataset_open(spec, strict, &ds, err, sizeof err);
    const char *text = capture_end();
    if (rc) fail_msg("dataset_open failed: %s", err);
    if (report) *report = text;
    return ds;
}

/* Open, expecting failure; returns the message (static). */
static const char *open_fails(const DatasetSpec *spec, int strict) {
    static char err[1024];
    Dataset ds;
    memset(&ds, 0x5A, sizeof ds);
    err[0] = 0;
    capture_begin();
    int rc = dataset_open(spec, strict, &ds, err, sizeof err);
    capture_end();
    assert_int_equal(rc, -1);
    assert_true(err[0] != 0);
    /* a failed open leaves an empty data set that can still be freed */
    assert_null(ds.classes);
    assert_null(ds.train);
    assert_int_equal(ds.ntrain, 0);
    dataset_free(&ds);
    return err;
}

static void assert_sorted_by_path(const Sample *s, int n) {
    for (int i = 1; i < n; i++)
        if (strcmp(s[i - 1].path, s[i].path) >= 0) fail_msg("not in path order: %s before %s", s[i - 1].path, s[i].path);
}

static int find_sample(const Sample *s, int n, const char *path) {
    for (int i = 0; i < n; i++)
        if (!strcmp(s[i].path, path)) return i;
    return -1;
}

/* ================================================================ folder layout */

static void test_folder_order_and_labels(void **state) {
    (void)state;
    /* made in no particular order; classes must come out in byte order: "Cat" < "ant" < "ant-x" < "dog" */
    touch("f1/train/dog/z.jpg");
    touch("f1/train/dog/a.JPEG");
    touch("f1/train/dog/m.jpeg");
    touch("f1/train/Cat/k.JPG");
    touch("f1/train/ant-x/b.jpg");
    touch("f1/train/ant/q.jpg");
    touch("f1/train/ant/c.Jpg");
    touch("f1/train/ant/notes.txt");       /* not an image: ignored */
    touch("f1/train/ant/._c.jpg");         /* macOS companion file: hidden, ignored */
    touch("f1/train/ant/nested/deep.jpg"); /* not directly in the class folder: ignored */
    touch("f1/train/.ipynb_checkpoints/x.jpg");
    touch("f1/train/README");              /* a stray non-image file in the split: ignored */
    touch("f1/val/dog/v1.jpg");
    touch("f1/val/ant/v2.jpeg");
    touch("f1/val/ant/v0.jpg");

    DatasetSpec spec = folder_spec(root_of("f1"));
    const char *report;
    Dataset ds = open_ok(&spec, 1, &report);
    assert_string_equal(report, "");
    assert_int_equal(ds.skipped, 0);
    assert_int_equal(ds.nclasses, 4);
    assert_string_equal(ds.classes[0], "Cat");
    assert_string_equal(ds.classes[1], "ant");
    assert_string_equal(ds.classes[2], "ant-x");
    assert_string_equal(ds.classes[3], "dog");
    assert_int_equal(ds.ntrain, 7);
    assert_int_equal(ds.nvalid, 3);
    assert_sorted_by_path(ds.train, ds.ntrain);
    assert_sorted_by_path(ds.valid, ds.nvalid);
    /* by full path, "ant-x/" sorts before "ant/" ('-' < '/') */
    const char *want[] = {"Cat/k.JPG", "ant-x/b.jpg", "ant/c.Jpg", "ant/q.jpg", "dog/a.JPEG", "dog/m.jpeg", "dog/z.jpg"};
    const int labels[] = {0, 2, 1, 1, 3, 3, 3};
    for (int i = 0; i < 7; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/f1/train/%s", dir, want[i]);
        assert_string_equal(ds.train[i].path, path);
        assert_int_equal(ds.train[i].label, labels[i]);
    }
    assert_string_equal(ds.valid[0].path, in_dir("f1/val/ant/v0.jpg"));
    assert_int_equal(ds.valid[0].label, 1);
    assert_int_equal(ds.valid[1].label, 1);
    assert_string_equal(ds.valid[2].path, in_dir("f1/val/dog/v1.jpg"));
    assert_int_equal(ds.valid[2].label, 3);

    /* the same listing again (and with a trailing slash on the root) */
    char root2[512];
    snprintf(root2, sizeof root2, "%s/", in_dir("f1"));
    DatasetSpec spec2 = folder_spec(root2);
    Dataset ds2 = open_ok(&spec2, 0, NULL);
    assert_int_equal(ds2.ntrain, ds.ntrain);
    for (int i = 0; i < ds.ntrain; i++) {
        assert_string_equal(ds2.train[i].path, ds.train[i].path);
        assert_int_equal(ds2.train[i].label, ds.train[i].label);
    }
    dataset_free(&ds2);
    dataset_free(&ds);
    dataset_free(&ds);   /* freeing twice is harmless: free clears */
}

static void test_folder_problems(void **state) {
    (void)state;
    touch("f2/train/bird/a.jpg");
    touch("f2/train/cat/b.jpg");
    mkdir_rel("f2/train/empty");          /* empty class folder */
    touch("f2/train/only_text/x.txt");    /* no images either */
    touch("f2/train/loose.jpg");          /* image outside any class folder */
    touch("f2/val/bird/c.jpg");
    touch("f2/val/zebra/d.jpg");          /* class unknown to train */
    mkdir_rel("f2/val/cat");              /* empty valid class folder */
    touch("f2/val/empty/e.jpg");          /* class whose train folder was empty */

    DatasetSpec spec = folder_spec(root_of("f2"));
    const char *report;
    Dataset ds = open_ok(&spec, 0, &report);
    assert_int_equal(ds.nclasses, 2);
    assert_string_equal(ds.classes[0], "bird");
    assert_string_equal(ds.classes[1], "cat");
    assert_int_equal(ds.ntrain, 2);
    assert_int_equal(ds.nvalid, 1);
    assert_string_equal(ds.valid[0].path, in_dir("f2/val/bird/c.jpg"));
    ASSERT_HAS(report, "f2/train/empty: empty class folder");
    ASSERT_HAS(report, "f2/train/only_text: empty class folder");
    ASSERT_HAS(report, "f2/train/loose.jpg: image outside a class folder");
    ASSERT_HAS(report, "f2/val/zebra: class folder with no images of that class");
    ASSERT_HAS(report, "f2/val/empty: class folder with no images of that class");
    ASSERT_HAS(report, "f2/val/cat: empty class folder");
    assert_int_equal(ds.skipped, 6);
    assert_int_equal(count_lines(report), 6);
    dataset_free(&ds);

    /* strict: the first problem (in sorted order) is the error, nothing is printed */
    const char *err = open_fails(&spec, 1);
    ASSERT_HAS(err, "f2/train/empty: empty class folder");
    assert_string_equal(captured, "");
}

static void test_folder_fatal(void **state) {
    (void)state;
    DatasetSpec spec = folder_spec(root_of("nowhere"));
    ASSERT_HAS(open_fails(&spec, 0), "nowhere: cannot open the data folder");
    ASSERT_HAS(open_fails(&spec, 0), "or make a small demo set with `./train demo-data`"); /* what to do */

    mkdir_rel("f3");
    spec = folder_spec(root_of("f3"));
    ASSERT_HAS(open_fails(&spec, 0), "f3/train: cannot open the training folder");
    assert_null(strstr(open_fails(&spec, 0), "format = csv")); /* no CSV there: no such hint */
    touch("f3/labels.csv"); /* a CSV data set read as folders: say how to read it */
    ASSERT_HAS(open_fails(&spec, 0), "It holds labels.csv: a CSV data set? Read it with [data] format = csv");
    unlink(root_of("f3/labels.csv"));

    touch("f3/train/a/x.jpg");
    ASSERT_HAS(open_fails(&spec, 0), "f3/val: cannot open the validation folder");

    /* valid split empty: only an unknown class there */
    touch("f3/val/b/y.jpg");
    ASSERT_HAS(open_fails(&spec, 0), "f3/val: the validation split is empty");

    /* no usable classes */
    mkdir_rel("f4/train/a");
    touch("f4/train/b/readme.txt");
    touch("f4/val/a/x.jpg");
    spec = folder_spec(root_of("f4"));
    ASSERT_HAS(open_fails(&spec, 0), "f4/train: no class folder in it holds");

    /* root is a file */
    touch("f5");
    spec = folder_spec(root_of("f5"));
    ASSERT_HAS(open_fails(&spec, 0), "f5: the data folder is not a folder");
}

/* ================================================================ CSV layout */

static void test_csv_quoting_and_columns(void **state) {
    (void)state;
    touch("c1/train_images/a.jpg");
    touch("c1/train_images/b,c.jpg");
    touch("c1/train_images/say \"hi\".jpg");
    touch("c1/train_images/d.jpg");
    touch("c1/train_images/e.jpg");
    touch("c1/train_images/f.jpg");
    touch("c1/train_images/g.jpg");
    touch("c1/train_images/sub/h.jpg");   /* a sub-folder that stays inside is fine */
    /* columns in another order, an extra column, a BOM, CRLF, blank lines, quotes, spaces,
     * is_val in every accepted spelling, integer labels (class numbers: "01" is class 1) */
    write_text("c1/train.csv",
               "\xEF\xBB\xBF" "label,notes,image_id,is_val\r\n"
               "2,\"x, y\",a.jpg,False\r\n"
               "\r\n"
               "1,,\"b,c.jpg\",false\r\n"
               "\"0\",\"multi\r\nline note\",\"say \"\"hi\"\".jpg\",0\r\n"
               "   \r\n"
               " 1 , z , d.jpg , True\r\n"
               "2,,e.jpg,true\r\n"
               "0,,f.jpg,1\r\n"
               "01,,g.jpg,TRUE\r\n"
               "1,,sub/h.jpg,FALSE");   /* no line end at the end */
    DatasetSpec spec = csv_spec(root_of("c1"));
    const char *report;
    Dataset ds = open_ok(&spec, 1, &report);
    assert_string_equal(report, "");
    assert_int_equal(ds.skipped, 0);
    assert_int_equal(ds.nclasses, 3);
    assert_string_equal(ds.classes[0], "0");
    assert_string_equal(ds.classes[1], "1");
    assert_string_equal(ds.classes[2], "2");
    /* both splits in file order */
    assert_int_equal(ds.ntrain, 4);
    assert_string_equal(ds.train[0].path, in_dir("c1/train_images/a.jpg"));
    assert_int_equal(ds.train[0].label, 2);
    assert_string_equal(ds.train[1].path, in_dir("c1/train_images/b,c.jpg"));
    assert_int_equal(ds.train[1].label, 1);
    assert_string_equal(ds.train[2].path, in_dir("c1/train_images/say \"hi\".jpg"));
    assert_int_equal(ds.train[2].label, 0);
    assert_string_equal(ds.train[3].path, in_dir("c1/train_images/sub/h.jpg"));
    assert_int_equal(ds.nvalid, 4);
    assert_string_equal(ds.valid[0].path, in_dir("c1/train_images/d.jpg"));
    assert_int_equal(ds.valid[0].label, 1);
    assert_int_equal(ds.valid[1].label, 2);
    assert_int_equal(ds.valid[2].label, 0);
    assert_string_equal(ds.valid[3].path, in_dir("c1/train_images/g.jpg"));
    assert_int_equal(ds.valid[3].label, 1);   /* "01" is the integer 1 */
    dataset_free(&ds);

    /* text labels sort by bytes; LF only; is_valid (fastai's name) works as the split column */
    write_text("c1/text.csv", "image_id,label,is_valid\na.jpg,dog,False\nd.jpg,Cat,False\ne.jpg,ant,False\n"
                              "f.jpg,dog,True\n");
    spec.csv = "text.csv";
    ds = open_ok(&spec, 1, NULL);
    assert_int_equal(ds.nclasses, 3);
    assert_string_equal(ds.classes[0], "Cat");
    assert_string_equal(ds.classes[1], "ant");
    assert_string_equal(ds.classes[2], "dog");
    assert_int_equal(ds.train[0].label, 2);
    assert_int_equal(ds.train[1].label, 0);
    assert_int_equal(ds.nvalid, 1);
    assert_int_equal(ds.valid[0].label, 2);
    dataset_free(&ds);
}

static void test_csv_bad_rows(void **state) {
    (void)state;
    const char *ok[] = {"1.jpg", "2.jpg", "3.jpg", "4.jpg", "5.jpg", "6.jpg", "..x.jpg"};
    for (int i = 0; i < 7; i++) {
        char rel[64];
        snprintf(rel, sizeof rel, "c2/train_images/%s", ok[i]);
        touch(rel);
    }
    touch("c2/outside.jpg");   /* what the escaping ids point at: must still be refused */
    mkdir_rel("c2/train_images/adir.jpg");
    write_text("c2/train.csv",
               "image_id,label,is_val\n"          /* 1 */
               "1.jpg,0,False\n"                  /* 2 ok */
               "missing.jpg,1,False\n"            /* 3 no such file */
               "2.jpg,,False\n"                   /* 4 empty label */
               "3.jpg,1,maybe\n"                  /* 5 bad is_val */
               "3.jpg,1,False,extra\n"            /* 6 too many fields */
               "3.jpg,1\n"                        /* 7 too few */
               ",1,False\n"                       /* 8 empty image_id */
               "../outside.jpg,1,False\n"         /* 9 escapes */
               "/etc/passwd,1,False\n"            /* 10 absolute */
               "sub/../../outside.jpg,1,False\n"  /* 11 escapes via a component */
               "..\\outside.jpg,1,False\n"        /* 12 backslash */
               "1.jpg,0,True\n"                   /* 13 duplicate of line 2 */
               "3.jpg,one,False\n"                /* 14 text among integer labels */
               "3.jpg,1,False\n"                  /* 15 ok */
               "\"4.jpg\"x,1,True\n"              /* 16 text after a closing quote */
               "4.jpg,0,\n"                       /* 17 empty is_val */
               "adir.jpg,0,False\n"               /* 18 a folder, not a file */
               "..x.jpg,0,False\n"                /* 19 ok: ".." only inside a name */
               "5.jpg,0,True\n"                   /* 20 ok */
               "6.jpg,2,True\n"                   /* 21 label only in validation rows */
               "6.jpg,0,\"True\n");               /* 22 unterminated quote */
    DatasetSpec spec = csv_spec(root_of("c2"));
    const char *report;
    Dataset ds = open_ok(&spec, 0, &report);
    const char *expect[] = {
        "train.csv:3: image_id \"missing.jpg\": no such file",
        "train.csv:4: empty label",
        "train.csv:5: bad is_val \"maybe\"",
        "train.csv:6: 4 fields where the header has 3",
        "train.csv:7: 2 fields where the header has 3",
        "train.csv:8: empty image_id",
        "train.csv:9: image_id \"../outside.jpg\" has a \"..\" component",
        "train.csv:10: image_id \"/etc/passwd\" is an absolute path",
        "train.csv:11: image_id \"sub/../../outside.jpg\" has a \"..\" component",
        "train.csv:12: image_id \"..\\outside.jpg\" has a backslash",
        "train.csv:13: image_id \"1.jpg\" already listed on line 2",
        "train.csv:14: bad label \"one\" (the other labels are integers)",
        "train.csv:16: text after a closing quote",
        "train.csv:17: empty is_val",
        "train.csv:18: image_id \"adir.jpg\" is not a regular file",
        "train.csv:21: label \"2\" appears only in validation rows",
        "train.csv:22: a quoted field is never closed",
    };
    int n = (int)(sizeof expect / sizeof *expect);
    for (int i = 0; i < n; i++) ASSERT_HAS(report, expect[i]);
    ASSERT_LACKS(report, "train.csv:2:");
    ASSERT_LACKS(report, "train.csv:15:");
    ASSERT_LACKS(report, "train.csv:19:");
    ASSERT_LACKS(report, "train.csv:20:");
    assert_int_equal(count_lines(report), n);
    assert_int_equal(ds.skipped, n);
    /* class 2 stays (output k is label k) though its only row, a validation one, is left out */
    assert_int_equal(ds.nclasses, 3);
    assert_string_equal(ds.classes[0], "0");
    assert_string_equal(ds.classes[1], "1");
    assert_string_equal(ds.classes[2], "2");
    assert_int_equal(ds.ntrain, 3);
    assert_string_equal(ds.train[0].path, in_dir("c2/train_images/1.jpg"));
    assert_int_equal(ds.train[0].label, 0);
    assert_string_equal(ds.train[1].path, in_dir("c2/train_images/3.jpg"));
    assert_int_equal(ds.train[1].label, 1);
    assert_string_equal(ds.train[2].path, in_dir("c2/train_images/..x.jpg"));
    assert_int_equal(ds.nvalid, 1);
    assert_string_equal(ds.valid[0].path, in_dir("c2/train_images/5.jpg"));
    dataset_free(&ds);

    /* strict: the first problem is the error, and nothing is listed or printed */
    const char *err = open_fails(&spec, 1);
    ASSERT_HAS(err, "train.csv:3: image_id \"missing.jpg\": no such file");
    assert_string_equal(captured, "");

    /* strict with a later first problem: a path escape */
    write_text("c2/escape.csv", "image_id,label,is_val\n1.jpg,0,False\n5.jpg,0,True\n../outside.jpg,0,False\n");
    spec.csv = "escape.csv";
    ASSERT_HAS(open_fails(&spec, 1), "escape.csv:4: image_id \"../outside.jpg\" has a \"..\" component");
}

static void test_csv_valid_pct(void **state) {
    (void)state;
    char csv[8192] = "image_id,label\n";
    for (int i = 0; i < 50; i++) {
        char rel[64], row[64];
        snprintf(rel, sizeof rel, "c3/train_images/%02d.jpg", i);
        touch(rel);
        snprintf(row, sizeof row, "%02d.jpg,%s\n", i, i % 2 ? "odd" : "even");
        strcat(csv, row);
    }
    write_text("c3/train.csv", csv);
    DatasetSpec spec = csv_spec(root_of("c3"));
    Dataset a = open_ok(&spec, 1, NULL), b = open_ok(&spec, 1, NULL);
    assert_int_equal(a.nvalid, 10);   /* int(0.2 * 50) */
    assert_int_equal(a.ntrain, 40);
    assert_int_equal(a.nclasses, 2);
    assert_string_equal(a.classes[0], "even");
    /* the same seed gives the same split; every row lands in exactly one split, in file order */
    int seen[50] = {0};
    for (int i = 0; i < a.nvalid; i++) {
        assert_string_equal(a.valid[i].path, b.valid[i].path);
        seen[atoi(strrchr(a.valid[i].path, '/') + 1)]++;
    }
    for (int i = 0; i < a.ntrain; i++) seen[atoi(strrchr(a.train[i].path, '/') + 1)]++;
    for (int i = 0; i < 50; i++) assert_int_equal(seen[i], 1);
    assert_sorted_by_path(a.train, a.ntrain);
    assert_sorted_by_path(a.valid, a.nvalid);
    /* the first ten rows are not what a seeded shuffle picks */
    int first_ten = 0;
    for (int i = 0; i < a.nvalid; i++) first_ten += atoi(strrchr(a.valid[i].path, '/') + 1) < 10;
    assert_true(first_ten < 10);

    /* another seed, another split */
    spec.seed = 43;
    Dataset c = open_ok(&spec, 1, NULL);
    int same = 1;
    for (int i = 0; i < c.nvalid; i++) same &= find_sample(a.valid, a.nvalid, c.valid[i].path) >= 0;
    assert_false(same);
    dataset_free(&c);

    /* sizes that float rounding could get wrong: 0.7 of 10 is 7, 0.3 of 10 is 3 */
    write_text("c3/ten.csv", "image_id,label\n00.jpg,a\n01.jpg,b\n02.jpg,a\n03.jpg,b\n04.jpg,a\n"
                             "05.jpg,b\n06.jpg,a\n07.jpg,b\n08.jpg,a\n09.jpg,b\n");
    spec.csv = "ten.csv";
    spec.valid_pct = 0.7f;
    c = open_ok(&spec, 0, NULL);
    assert_int_equal(c.nvalid, 7);
    dataset_free(&c);
    spec.valid_pct = 0.3f;
    c = open_ok(&spec, 0, NULL);
    assert_int_equal(c.nvalid, 3);
    dataset_free(&c);

    /* a valid_pct that leaves nothing for validation, or is out of range */
    spec.valid_pct = 0.05f;
    ASSERT_HAS(open_fails(&spec, 0), "ten.csv: the validation split is empty (valid_pct 0.05 of 10");
    spec.valid_pct = 0;
    ASSERT_HAS(open_fails(&spec, 0), "ten.csv: no is_val column, and valid_pct 0 is not in (0, 1)");
    spec.valid_pct = 1;
    ASSERT_HAS(open_fails(&spec, 0), "not in (0, 1)");
    dataset_free(&a);
    dataset_free(&b);
}

static void test_csv_fatal(void **state) {
    (void)state;
    DatasetSpec spec = csv_spec(root_of("nowhere"));
    ASSERT_HAS(open_fails(&spec, 0), "nowhere: cannot open the data folder");

    touch("c4/train_images/a.jpg");
    spec = csv_spec(root_of("c4"));
    ASSERT_HAS(open_fails(&spec, 0), "c4/train.csv: cannot open the CSV file");

    write_text("c4/train.csv", "");
    ASSERT_HAS(open_fails(&spec, 0), "c4/train.csv: empty file: no header row");

    write_text("c4/train.csv", "\n\nimage_id,class,is_val\na.jpg,0,False\n");
    ASSERT_HAS(open_fails(&spec, 0), "c4/train.csv:3: the header must name an image_id and a label column");

    write_text("c4/train.csv", "image_id,label,label\na.jpg,0,1\n");
    ASSERT_HAS(open_fails(&spec, 0), "c4/train.csv:1: the header names the column \"label\" twice");

    /* every row bad: no classes, no training split */
    write_text("c4/train.csv", "image_id,label,is_val\nb.jpg,0,False\nc.jpg,1,True\n");
    ASSERT_HAS(open_fails(&spec, 0), "c4/train.csv: no usable training rows (2 rows, 2 left out)");

    /* nothing marked for validation */
    write_text("c4/train.csv", "image_id,label,is_val\na.jpg,0,False\n");
    ASSERT_HAS(open_fails(&spec, 0), "c4/train.csv: the validation split is empty (no usable row has is_val true)");

    /* only validation rows */
    write_text("c4/train.csv", "image_id,label,is_val\na.jpg,0,True\n");
    ASSERT_HAS(open_fails(&spec, 0), "c4/train.csv: no usable training rows");

    /* no images folder */
    spec.images_dir = "imgs";
    ASSERT_HAS(open_fails(&spec, 0), "c4/imgs: cannot open the images folder");
}

/* Integer labels are class numbers (Kaggle's layout): output k is label k. A label that would
 * renumber the classes (-1, or 99 among 0..4: fastai's sorted vocabulary makes them 7 classes) is
 * refused with its line, and so is a set of labels that does not start at 0. */
static void test_csv_label_numbers(void **state) {
    (void)state;
    for (int i = 1; i <= 8; i++) {
        char rel[64];
        snprintf(rel, sizeof rel, "n1/train_images/%d.jpg", i);
        touch(rel);
    }
    write_text("n1/train.csv", "image_id,label,is_val\n"
                               "1.jpg,0,False\n"   /* 2 */
                               "2.jpg,4,False\n"   /* 3 */
                               "3.jpg,2,False\n"   /* 4 */
                               "4.jpg,3,False\n"   /* 5 */
                               "5.jpg,1,False\n"   /* 6 */
                               "6.jpg,-1,False\n"  /* 7 negative */
                               "7.jpg,99,False\n"  /* 8 past the classes */
                               "8.jpg,2,True\n");  /* 9 */
    DatasetSpec spec = csv_spec(root_of("n1"));
    const char *report;
    Dataset ds = open_ok(&spec, 0, &report);
    ASSERT_HAS(report, "train.csv:7: label -1 is negative (integer labels are class numbers 0, 1, 2, ...)");
    ASSERT_HAS(report, "train.csv:8: label 99 is not one of the classes 0..4 (integer labels are class numbers, "
                       "and no row has label 5)");
    assert_int_equal(count_lines(report), 2);
    assert_int_equal(ds.skipped, 2);
    assert_int_equal(ds.nclasses, 5);
    for (int k = 0; k < 5; k++) {
        char name[8];
        snprintf(name, sizeof name, "%d", k);
        assert_string_equal(ds.classes[k], name);
    }
    const int want[] = {0, 4, 2, 3, 1};   /* the labels themselves */
    assert_int_equal(ds.ntrain, 5);
    for (int i = 0; i < 5; i++) assert_int_equal(ds.train[i].label, want[i]);
    assert_int_equal(ds.nvalid, 1);
    assert_int_equal(ds.valid[0].label, 2);
    dataset_free(&ds);
    ASSERT_HAS(open_fails(&spec, 1), "train.csv:7: label -1 is negative");

    /* labels from 1 (or any set without 0): no class numbers to take them as */
    write_text("n1/from1.csv", "image_id,label,is_val\n1.jpg,1,False\n2.jpg,2,False\n3.jpg,3,True\n");
    spec.csv = "from1.csv";
    ASSERT_HAS(open_fails(&spec, 0), "from1.csv:2: label 1: integer labels are class numbers from 0, and no row has "
                                     "label 0");
}

/* The same image listed twice, however its id is spelled (./x.jpg, a//b, a/./b, a link to it):
 * with another label both rows are left out (a contradiction; they would land in both splits);
 * with the same label the later row is, as an exact repeat is. */
static void test_csv_same_image_twice(void **state) {
    (void)state;
    const char *files[] = {"a", "b", "sub/c", "x", "d", "e", "f"};
    for (int i = 0; i < 7; i++) {
        char rel[64];
        snprintf(rel, sizeof rel, "n2/train_images/%s.jpg", files[i]);
        touch(rel);
    }
    assert_int_equal(symlink("x.jpg", in_dir("n2/train_images/link.jpg")), 0);
    write_text("n2/train.csv", "image_id,label,is_val\n"
                               "a.jpg,0,False\n"        /* 2 ok */
                               "./b.jpg,1,False\n"      /* 3 */
                               "sub//c.jpg,0,False\n"   /* 4 */
                               "x.jpg,1,True\n"         /* 5 ok */
                               "b.jpg,0,True\n"         /* 6 = 3, another label: both out */
                               "./a.jpg,0,True\n"       /* 7 = 2, same label: 7 out */
                               "sub/./c.jpg,1,False\n"  /* 8 = 4, another label: both out */
                               "link.jpg,1,False\n"     /* 9 = 5 through a link, same label: 9 out */
                               "d.jpg,0,False\n"        /* 10 ok */
                               "e.jpg,1,False\n"        /* 11 ok */
                               "f.jpg,1,True\n");       /* 12 ok */
    DatasetSpec spec = csv_spec(root_of("n2"));
    const char *report;
    Dataset ds = open_ok(&spec, 0, &report);
    const char *expect[] = {
        "train.csv:6: image_id \"b.jpg\" is the image of line 3 (\"./b.jpg\") with another label (\"0\" here, \"1\" "
        "there): both rows left out",
        "train.csv:3: image_id \"./b.jpg\" is listed again on line 6 with another label",
        "train.csv:7: image_id \"./a.jpg\" already listed on line 2 (as \"a.jpg\")",
        "train.csv:8: image_id \"sub/./c.jpg\" is the image of line 4 (\"sub//c.jpg\") with another label",
        "train.csv:4: image_id \"sub//c.jpg\" is listed again on line 8 with another label",
        "train.csv:9: image_id \"link.jpg\" already listed on line 5 (as \"x.jpg\")",
    };
    int n = (int)(sizeof expect / sizeof *expect);
    for (int i = 0; i < n; i++) ASSERT_HAS(report, expect[i]);
    assert_int_equal(count_lines(report), n);
    assert_int_equal(ds.skipped, n);
    assert_int_equal(ds.ntrain, 3);
    assert_string_equal(ds.train[0].path, in_dir("n2/train_images/a.jpg"));
    assert_string_equal(ds.train[1].path, in_dir("n2/train_images/d.jpg"));
    assert_string_equal(ds.train[2].path, in_dir("n2/train_images/e.jpg"));
    assert_int_equal(ds.nvalid, 2);
    assert_string_equal(ds.valid[0].path, in_dir("n2/train_images/x.jpg"));
    assert_string_equal(ds.valid[1].path, in_dir("n2/train_images/f.jpg"));
    dataset_free(&ds);
    /* strict: the contradiction is the error, naming both lines */
    ASSERT_HAS(open_fails(&spec, 1), "train.csv:6: image_id \"b.jpg\" is the image of line 3");
}

/* ================================================================ names that reach checkpoints */

/* Class names go into every checkpoint's metadata, which is JSON and must be UTF-8: a folder name
 * or a CSV text label that is not (Latin-1 "caf\xE9", an overlong "/") would stop the run at its
 * first checkpoint, after a whole epoch. Refused while listing, naming the folder or file:line, the
 * bad bytes shown as \xNN; valid UTF-8 ("Z\xC3\xBCrich") is a class like any other. */
static void test_non_utf8_class_names(void **state) {
    (void)state;
    touch("u1/train/ok/a.jpg");
    touch("u1/train/caf\xE9/b.jpg");
    touch("u1/train/bad\xC0\xAF/c.jpg");
    touch("u1/train/Z\xC3\xBCrich/d.jpg");
    touch("u1/val/ok/e.jpg");
    touch("u1/val/caf\xE9/f.jpg");
    DatasetSpec spec = folder_spec(root_of("u1"));
    const char *report;
    Dataset ds = open_ok(&spec, 0, &report);
    char want[600];
    snprintf(want, sizeof want, "%s: class folder \"caf\\xe9\" is not valid UTF-8", in_dir("u1/train"));
    ASSERT_HAS(report, want);
    snprintf(want, sizeof want, "%s: class folder \"bad\\xc0\\xaf\" is not valid UTF-8", in_dir("u1/train"));
    ASSERT_HAS(report, want);
    snprintf(want, sizeof want, "%s: class folder \"caf\\xe9\" is not valid UTF-8", in_dir("u1/val"));
    ASSERT_HAS(report, want);
    assert_int_equal(count_lines(report), 3);
    assert_int_equal(ds.skipped, 3);
    assert_int_equal(ds.nclasses, 2);
    assert_string_equal(ds.classes[0], "Z\xC3\xBCrich");
    assert_string_equal(ds.classes[1], "ok");
    assert_int_equal(ds.ntrain, 2);
    assert_int_equal(ds.nvalid, 1);
    dataset_free(&ds);
    snprintf(want, sizeof want, "%s: class folder \"bad\\xc0\\xaf\" is not valid UTF-8", in_dir("u1/train"));
    ASSERT_STARTS(open_fails(&spec, 1), want);

    /* CSV text labels: a Latin-1 one, a cut-off sequence; an image id needs no UTF-8 (it never
     * reaches a checkpoint) */
    touch("u2/train_images/1.jpg");
    touch("u2/train_images/2.jpg");
    touch("u2/train_images/3.jpg");
    touch("u2/train_images/4\xE9.jpg");
    write_text("u2/train.csv", "image_id,label,is_val\n"
                               "1.jpg,caf\xE9,False\n"       /* 2 */
                               "2.jpg,Z\xC3\xBCrich,False\n" /* 3 ok */
                               "3.jpg,cut\xC3,False\n"       /* 4 */
                               "4\xE9.jpg,Z\xC3\xBCrich,True\n");
    spec = csv_spec(root_of("u2"));
    ds = open_ok(&spec, 0, &report);
    ASSERT_HAS(report, "train.csv:2: bad label \"caf\\xe9\" (not valid UTF-8)");
    ASSERT_HAS(report, "train.csv:4: bad label \"cut\\xc3\" (not valid UTF-8)");
    assert_int_equal(count_lines(report), 2);
    assert_int_equal(ds.nclasses, 1);
    assert_string_equal(ds.classes[0], "Z\xC3\xBCrich");
    assert_int_equal(ds.ntrain, 1);
    assert_int_equal(ds.nvalid, 1);
    dataset_free(&ds);
    ASSERT_HAS(open_fails(&spec, 1), "train.csv:2: bad label \"caf\\xe9\" (not valid UTF-8)");
}

/* ================================================================ the shared data sets */

static const char *shared(const char *name) {
    static char path[512];
    snprintf(path, sizeof path, "../shared/data/%s", name);
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? path : NULL;
}

static void test_imagenette(void **state) {
    (void)state;
    const char *root = shared("imagenette2-224");
    if (!root) {
        print_message("../shared/data/imagenette2-224 not found (run from the repository root): skipped\n");
        skip();
    }
    DatasetSpec spec = folder_spec(root);
    double t0 = now_seconds();
    Dataset ds = open_ok(&spec, 1, NULL);
    double t = now_seconds() - t0;
    print_message("imagenette2-224 listed in %.1f ms\n", 1e3 * t);
    assert_int_equal(ds.ntrain, 9469);
    assert_int_equal(ds.nvalid, 3925);
    assert_int_equal(ds.nclasses, 10);
    assert_string_equal(ds.classes[0], "n01440764");
    assert_string_equal(ds.classes[9], "n03888257");
    assert_int_equal(ds.skipped, 0);
    assert_sorted_by_path(ds.train, ds.ntrain);
    for (int i = 0; i < ds.nvalid; i++) {
        /* the label is the parent folder */
        const char *cls = ds.classes[ds.valid[i].label];
        char *slash = strrchr(ds.valid[i].path, '/');
        assert_non_null(slash);
        size_t n = strlen(cls);
        assert_true((size_t)(slash - ds.valid[i].path) > n);
        assert_memory_equal(slash - n, cls, n);
    }
    assert_true(t < 1.0);
    dataset_free(&ds);
}

static void test_cassava(void **state) {
    (void)state;
    const char *root = shared("cassava-mini");
    if (!root) {
        print_message("../shared/data/cassava-mini not found (run from the repository root): skipped\n");
        skip();
    }
    DatasetSpec spec = csv_spec(root);
    double t0 = now_seconds();
    Dataset ds = open_ok(&spec, 1, NULL);
    print_message("cassava-mini listed in %.1f ms\n", 1e3 * (now_seconds() - t0));
    assert_int_equal(ds.ntrain, 960);
    assert_int_equal(ds.nvalid, 240);
    assert_int_equal(ds.nclasses, 5);
    const char *names[] = {"0", "1", "2", "3", "4"};
    const int total[] = {150, 200, 200, 450, 200};
    int count[5] = {0}, vcount[5] = {0};
    for (int i = 0; i < 5; i++) assert_string_equal(ds.classes[i], names[i]);
    for (int i = 0; i < ds.ntrain; i++) count[ds.train[i].label]++;
    for (int i = 0; i < ds.nvalid; i++) vcount[ds.valid[i].label]++;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(count[i] + vcount[i], total[i]);
        assert_int_equal(vcount[i], total[i] / 5);   /* one in five of each class */
    }
    assert_true(strstr(ds.train[0].path, "cassava-mini/train_images/1000015157.jpg") != NULL);

    /* fraction: ceil(f * n) of each class in each split, a subset of the full list, in its order,
     * the same every time, and a different choice for another seed */
    spec.fraction = 0.25f;
    Dataset q = open_ok(&spec, 1, NULL), r = open_ok(&spec, 1, NULL);
    spec.seed++;
    Dataset o = open_ok(&spec, 1, NULL);
    int qcount[5] = {0}, qv[5] = {0}, same = 1, differs = 0;
    assert_int_equal(q.ntrain, r.ntrain);
    for (int i = 0; i < q.ntrain; i++) {
        qcount[q.train[i].label]++;
        same &= !strcmp(q.train[i].path, r.train[i].path);
        differs |= i >= o.ntrain || strcmp(q.train[i].path, o.train[i].path);
        if (i) assert_true(strcmp(q.train[i - 1].path, q.train[i].path) < 0);
    }
    for (int i = 0; i < q.nvalid; i++) qv[q.valid[i].label]++;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(qcount[i], (count[i] + 3) / 4);
        assert_int_equal(qv[i], (vcount[i] + 3) / 4);
    }
    assert_true(same);
    assert_true(differs);
    dataset_free(&q);
    dataset_free(&r);
    dataset_free(&o);
    dataset_free(&ds);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_folder_order_and_labels),
        cmocka_unit_test(test_folder_problems),
        cmocka_unit_test(test_folder_fatal),
        cmocka_unit_test(test_csv_quoting_and_columns),
        cmocka_unit_test(test_csv_bad_rows),
        cmocka_unit_test(test_csv_valid_pct),
        cmocka_unit_test(test_csv_fatal),
        cmocka_unit_test(test_non_utf8_class_names),
        cmocka_unit_test(test_csv_label_numbers),
        cmocka_unit_test(test_csv_same_image_twice),
        cmocka_unit_test(test_imagenette),
        cmocka_unit_test(test_cassava),
    };
    return cmocka_run_group_tests(tests, test_dir_setup, test_dir_teardown);
}
