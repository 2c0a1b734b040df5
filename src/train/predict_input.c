/* train/predict_input.c: the images `train predict` was given (predict_input.h): one file, a folder
 * walked recursively (fastai's get_image_files: by extension, hidden entries left out, sorted here
 * so the output's order is fixed), or a Kaggle-style CSV whose first column names the images. */
#include "train/predict_input.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "base/util.h"

/* fastai's image_extensions, the common ones: what is not JPEG is reported by the decoder as a bad
 * image, so it is counted rather than silently missed. */
static int is_image_name(const char *name) {
    static const char *const ext[] = {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", NULL};
    const char *dot = strrchr(name, '.');
    if (!dot) return 0;
    for (int i = 0; ext[i]; i++)
        if (!strcasecmp(dot, ext[i])) return 1;
    return 0;
}

static void add_sample(PredictInput *in, int *cap, char *path, char *id) {
    if (in->n == *cap) {
        *cap = *cap ? 2 * *cap : 256;
        in->samples = xrealloc(in->samples, (size_t)*cap * sizeof *in->samples);
        in->ids = xrealloc(in->ids, (size_t)*cap * sizeof *in->ids);
    }
    in->samples[in->n] = (Sample){path, 0};
    in->ids[in->n++] = id;
}

static char *join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s%s%s", a, *a && a[strlen(a) - 1] != '/' ? "/" : "", b);
    return p;
}

/* Every image below dir; rel is its path below the folder given. Links to files are followed,
 * links to folders are not (no loops). */
static int walk(PredictInput *in, int *cap, const char *dir, const char *rel, int depth, char *err, size_t errlen) {
    DIR *d = opendir(dir);
    if (!d) return error_at(err, errlen, dir, "cannot open the folder: %s", strerror(errno));
    if (depth > 64) {
        closedir(d);
        return error_at(err, errlen, dir, "folders nested more than 64 deep");
    }
    int rc = 0;
    for (struct dirent *e; !rc && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char *path = join(dir, e->d_name), *r = *rel ? join(rel, e->d_name) : xstrdup(e->d_name);
        struct stat st, lst;
        if (lstat(path, &lst) == 0 && S_ISDIR(lst.st_mode)) {
            rc = walk(in, cap, path, r, depth + 1, err, errlen);
            free(path), free(r);
        } else if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && is_image_name(e->d_name)) {
            add_sample(in, cap, path, r);
        } else {
            in->ignored++;
            free(path), free(r);
        }
    }
    closedir(d);
    return rc;
}

static int cmp_index_path(const void *a, const void *b, void *ctx) {
    const PredictInput *in = ctx;
    return strcmp(in->samples[*(const int *)a].path, in->samples[*(const int *)b].path);
}

static void sort_by_path(PredictInput *in) {
    int *order = xmalloc(((size_t)in->n + 1) * sizeof *order);
    for (int i = 0; i < in->n; i++) order[i] = i;
    qsort_r(order, (size_t)in->n, sizeof *order, cmp_index_path, in);
    Sample *s = xmalloc(((size_t)in->n + 1) * sizeof *s);
    char **ids = xmalloc(((size_t)in->n + 1) * sizeof *ids);
    for (int i = 0; i < in->n; i++) s[i] = in->samples[order[i]], ids[i] = in->ids[order[i]];
    free(in->samples), free(in->ids), free(order);
    in->samples = s;
    in->ids = ids;
}

/* The fields of one CSV line (RFC 4180 quoting within the line), into fields[0..max). */
static int csv_split(char *line, char **fields, int max) {
    int n = 0;
    char *p = line;
    for (;;) {
        while (*p == ' ' || *p == '\t') p++;
        char *out = p, *start = p;
        if (*p == '"') {
            for (p++;; p++) {
                if (!*p) break;
                if (*p == '"' && p[1] == '"') *out++ = '"', p++;
                else if (*p == '"') {
                    p++;
                    break;
                } else *out++ = *p;
            }
            while (*p && *p != ',') p++;
        } else {
            while (*p && *p != ',') *out++ = *p++;
            while (out > start && (out[-1] == ' ' || out[-1] == '\t')) out--;
        }
        int more = *p == ',';
        *out = 0;
        if (n < max) fields[n++] = start;
        if (!more) return n;
        p++;
    }
}

static int is_dir(const char *path) {
    struct stat st;
    return !stat(path, &st) && S_ISDIR(st.st_mode);
}

static int open_csv(const char *csv, PredictInput *in, int *cap, char *err, size_t errlen) {
    uint8_t *raw;
    size_t size;
    if (read_whole_file(csv, &raw, &size, err, errlen)) return -1;
    char *data = xmalloc(size + 1); /* NUL-terminated */
    memcpy(data, raw, size);
    free(raw);
    char *text = data, *dir = xstrdup(csv), *slash = strrchr(dir, '/');
    if (slash) slash[1] = 0;
    else dir[0] = 0;
    if (size >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) text += 3;
    data[size] = 0;
    int rc = 0, line_no = 0, rows = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line && !rc; line = strtok_r(NULL, "\n", &save)) {
        line_no++;
        line[strcspn(line, "\r")] = 0;
        char *f[2];
        int nf = csv_split(line, f, 2);
        if (nf == 1 && !f[0][0]) continue;
        if (!in->id_col[0]) {
            snprintf(in->id_col, sizeof in->id_col, "%s", f[0][0] ? f[0] : "image_id");
            snprintf(in->label_col, sizeof in->label_col, "%s", nf > 1 && f[1][0] ? f[1] : "label");
            continue;
        }
        rows++;
        if (!in->images_dir) { /* the first folder that holds the first image */
            static const char *const cand[] = {"test_images", "train_images", "images", "", NULL};
            for (int k = 0; cand[k] && !in->images_dir; k++) {
                char *d = join(dir, cand[k]), *p = join(d, f[0]);
                struct stat st;
                if (*f[0] != '/' && !stat(p, &st) && S_ISREG(st.st_mode)) in->images_dir = d;
                else free(d);
                free(p);
            }
            if (!in->images_dir) {
                rc = error_at(err, errlen, csv, "line %d: its image '%.200s' is in none of test_images/, train_images/, images/ "
                              "or the CSV's own folder: give --images DIR", line_no, f[0]);
                break;
            }
        }
        char *p = f[0][0] == '/' ? xstrdup(f[0]) : join(in->images_dir, f[0]);
        struct stat st;
        if (!f[0][0] || stat(p, &st) || !S_ISREG(st.st_mode)) {
            fprintf(stderr, "cnntrain: %s:%d: no image file %s: skipped\n", csv, line_no, p);
            in->missing++;
            free(p);
            continue;
        }
        add_sample(in, cap, p, xstrdup(f[0]));
    }
    if (!rc && !in->id_col[0]) rc = error_at(err, errlen, csv, "empty: expected a header line (image_id,label) and rows");
    else if (!rc && !rows) rc = error_at(err, errlen, csv, "no rows after the header line");
    free(data);
    free(dir);
    return rc;
}

int predict_input_open(const char *input, const char *images_dir, PredictInput *in, char *err, size_t errlen) {
    memset(in, 0, sizeof *in);
    struct stat st;
    int cap = 0, rc = 0;
    if (stat(input, &st)) return error_at(err, errlen, input, "cannot open: %s", strerror(errno));
    size_t len = strlen(input);
    if (S_ISDIR(st.st_mode)) {
        in->kind = INPUT_FOLDER;
        rc = walk(in, &cap, input, "", 0, err, errlen);
        if (!rc && !in->n)
            rc = error_at(err, errlen, input, "no image files (.jpg, .jpeg, .png, ...) in the folder or below it%s",
                          in->ignored ? " (only other files)" : "");
        if (!rc) sort_by_path(in);
    } else if (len > 4 && !strcasecmp(input + len - 4, ".csv")) {
        in->kind = INPUT_CSV;
        if (images_dir && !is_dir(images_dir)) rc = error_at(err, errlen, images_dir, "not a folder (--images)");
        else {
            if (images_dir) in->images_dir = xstrdup(images_dir);
            rc = open_csv(input, in, &cap, err, errlen);
        }
        if (!rc && !in->n) rc = error_at(err, errlen, input, "none of its %d images was found", in->missing);
    } else {
        in->kind = INPUT_IMAGE;
        add_sample(in, &cap, xstrdup(input), xstrdup(input));
    }
    if (rc) predict_input_free(in);
    return rc;
}

void predict_input_free(PredictInput *in) {
    for (int i = 0; i < in->n; i++) free(in->samples[i].path), free(in->ids[i]);
    free(in->samples);
    free(in->ids);
    free(in->images_dir);
    memset(in, 0, sizeof *in);
}

