/* pipeline/dataset_folder.c: the folder layout of a data set: ROOT/<train_dir>/<class>/<image> and
 * ROOT/<valid_dir>/<class>/<image> (.jpg, .jpeg, .png, .webp), class = parent folder, classes
 * sorted by name. Folders are read
 * sorted, never in readdir's order. */
#include <dirent.h>
#include <stdio.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "base/util.h"
#include "pipeline/dataset_list.h"
#include "pipeline/image.h"

static int cmp_sample_path(const void *a, const void *b) {
    return strcmp(((const Sample *)a)->path, ((const Sample *)b)->path);
}

typedef struct {
    char *name;
    int is_dir, is_file;
} Entry;

static int cmp_entry(const void *a, const void *b) { return strcmp(((const Entry *)a)->name, ((const Entry *)b)->name); }

static void entries_free(Entry *e, int n) {
    for (int i = 0; i < n; i++) free(e[i].name);
    free(e);
}

/* The entries of a folder sorted by name, hidden ones (".ipynb_checkpoints", macOS "._x.jpg"
 * companions) left out. Symbolic links count as what they point to. -1 with errno on failure. */
static int read_dir(const char *path, Entry **out, int *count) {
    DIR *d = opendir(path);
    *out = NULL;
    *count = 0;
    if (!d) return -1;
    Entry *v = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        int is_dir = e->d_type == DT_DIR, is_file = e->d_type == DT_REG;
        if (e->d_type == DT_LNK || e->d_type == DT_UNKNOWN) {
            /* only these need a stat: readdir's type is enough for plain entries (fast listing) */
            struct stat st;
            if (fstatat(dirfd(d), e->d_name, &st, 0) == 0) {
                is_dir = S_ISDIR(st.st_mode);
                is_file = S_ISREG(st.st_mode);
            }
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            v = xrealloc(v, (size_t)cap * sizeof *v);
        }
        v[n++] = (Entry){xstrdup(e->d_name), is_dir, is_file};
        errno = 0;
    }
    int saved = errno;
    closedir(d);
    if (saved) {
        entries_free(v, n);
        errno = saved;
        return -1;
    }
    if (n > 1) qsort(v, (size_t)n, sizeof *v, cmp_entry);   /* v is NULL for an empty folder */
    *out = v;
    *count = n;
    return 0;
}

/* Image files by extension: the ones this build decodes are listed; the other image formats
 * fastai's get_image_files would take are reported (the loader tells formats by content, so a
 * PNG named .jpg still decodes). */
static const struct {
    const char *ext;
    ImageFormat format;
} image_exts[] = {
    {".jpg", IMAGE_JPEG}, {".jpeg", IMAGE_JPEG}, {".png", IMAGE_PNG}, {".webp", IMAGE_WEBP}, {".gif", IMAGE_GIF},
    {".bmp", IMAGE_BMP},  {".tif", IMAGE_TIFF},  {".tiff", IMAGE_TIFF}, {".heic", IMAGE_HEIF}, {".avif", IMAGE_HEIF},
};

/* 1: an image this build decodes; -1: an image format it does not (named in *format); 0: no image. */
static int image_name_kind(const char *name, ImageFormat *format) {
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name) return 0;
    for (size_t i = 0; i < sizeof image_exts / sizeof *image_exts; i++)
        if (!strcasecmp(dot, image_exts[i].ext)) {
            *format = image_exts[i].format;
            return image_format_decoded(*format) ? 1 : -1;
        }
    return 0;
}

static int is_image_name(const char *name) {
    ImageFormat f;
    return image_name_kind(name, &f) == 1;
}

/* The extensions this build lists, for messages ("none ..." when it decodes no format). */
static const char *listed_extensions(char *text, size_t size) {
    text[0] = 0;
    for (size_t i = 0; i < sizeof image_exts / sizeof *image_exts; i++)
        if (image_format_decoded(image_exts[i].format))
            snprintf(text + strlen(text), size - strlen(text), "%s%s", text[0] ? ", " : "", image_exts[i].ext);
    if (!text[0]) snprintf(text, size, "none: this build decodes no image format");
    return text;
}

/* What to do about files of a format this build does not decode. */
static const char *how_to_decode(ImageFormat f) {
    switch (f) {
    case IMAGE_JPEG: return "install libjpeg62-turbo-dev and rebuild";
    case IMAGE_PNG: return "install libpng-dev and rebuild, or convert them to JPEG";
    case IMAGE_WEBP: return "install libwebp-dev and rebuild, or convert them: dwebp FILE -o FILE.png";
    default: return "convert them, e.g. mogrify -format png FILE";
    }
}

/* The images directly inside one class folder, appended to `out` with `label`; returns how many,
 * or -1 (reported) when the folder cannot be read. */
static int list_class(Listing *c, const char *dir, int label, SampleList *out) {
    Entry *e;
    int n;
    if (read_dir(dir, &e, &n)) {
        entry_problem(c, dir, 0, "cannot read the class folder: %s", strerror(errno));
        return -1;
    }
    int found = 0, unsupported = 0, first = -1;
    ImageFormat first_format = IMAGE_UNKNOWN;
    for (int i = 0; i < n; i++) {
        ImageFormat f;
        int kind = e[i].is_file ? image_name_kind(e[i].name, &f) : 0;
        if (kind == 1) {
            list_push(out, path_join(dir, e[i].name), label);
            found++;
        } else if (kind == -1 && unsupported++ == 0) {
            first = i;
            first_format = f;
        }
    }
    /* One line per folder, not per file: fastai would have trained on these, so say so */
    if (unsupported) {
        char xb[96];
        char *path = path_join(dir, e[first].name);
        entry_problem(c, path, 0,
                      "%d image file%s in this folder (this one: %s) %s a format this build does not decode "
                      "(it decodes %s; %s)",
                      unsupported, unsupported > 1 ? "s" : "", image_format_name(first_format),
                      unsupported > 1 ? "have" : "has", listed_extensions(xb, sizeof xb), how_to_decode(first_format));
        free(path);
    }
    entries_free(e, n);
    return found;
}

/* One split folder. Train (classes == NULL on entry) makes the class list; valid looks classes up
 * in it. Images lying directly in the split folder have no class: reported. */
static int list_split(Listing *c, const char *split, int is_train, char ***classes, int *nclasses, SampleList *out,
                      char *err, size_t errlen) {
    Entry *e;
    int n;
    if (read_dir(split, &e, &n)) return error_at(err, errlen, split, "cannot read the folder: %s", strerror(errno));
    int cap = 0;
    for (int i = 0; i < n && !c->failed; i++) {
        char *path = path_join(split, e[i].name);
        char sb[96], xb[96];
        if (e[i].is_file && is_image_name(e[i].name)) {
            entry_problem(c, path, 0, "image outside a class folder");
        } else if (e[i].is_dir && has_control_char(e[i].name)) {
            /* as a CSV label would be: class names are stored one per line in checkpoints */
            entry_problem(c, split, 0, "class folder %s has a control character in its name", shown_text(e[i].name, sb, sizeof sb));
        } else if (e[i].is_dir && !utf8_valid(e[i].name)) {
            /* class names go into checkpoints' JSON metadata, which must be UTF-8 */
            entry_problem(c, split, 0, "class folder %s is not valid UTF-8 (rename it)", shown_text(e[i].name, sb, sizeof sb));
        } else if (e[i].is_dir && is_train) {
            int found = list_class(c, path, *nclasses, out);
            if (found == 0)
                entry_problem(c, path, 0, "empty class folder (no %s files directly in it)", listed_extensions(xb, sizeof xb));
            if (found > 0) {
                if (*nclasses == cap) {
                    cap = cap ? 2 * cap : 16;
                    *classes = xrealloc(*classes, (size_t)cap * sizeof **classes);
                }
                (*classes)[(*nclasses)++] = xstrdup(e[i].name);   /* sorted: e is sorted */
            }
        } else if (e[i].is_dir) {
            char *key = e[i].name;
            char **hit = *nclasses ? bsearch(&key, *classes, (size_t)*nclasses, sizeof **classes, cmp_strings) : NULL;
            if (!hit)
                entry_problem(c, path, 0, "class folder with no images of that class in the training folder");
            else if (list_class(c, path, (int)(hit - *classes), out) == 0)
                entry_problem(c, path, 0, "empty class folder (no %s files directly in it)", listed_extensions(xb, sizeof xb));
        }
        free(path);
    }
    entries_free(e, n);
    return 0;
}

/* A folder-layout data set whose train/ or val/ is missing but that holds a .csv file is likely a
 * Kaggle CSV data set given without its format: say how to read it so. */
static void csv_hint(const char *root, char *err, size_t errlen) {
    if (!err || !errlen) return;
    DIR *d = opendir(root);
    if (!d) return;
    const char *csv = NULL;
    char name[256] = "";
    for (struct dirent *e; (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        if (n > 4 && !strcasecmp(e->d_name + n - 4, ".csv") && n < sizeof name) {
            snprintf(name, sizeof name, "%s", e->d_name);
            csv = name;
            break;
        }
    }
    closedir(d);
    if (!csv) return;
    size_t used = strlen(err);
    snprintf(err + used, errlen - used,
             ". It holds %s: a CSV data set? Read it with [data] format = csv (train eval, show-batch, bench-loader: "
             "--format csv)", csv);
}

int dataset_open_folder(const DatasetSpec *spec, Listing *c, Dataset *ds, char *err, size_t errlen) {
    char *train = path_join(spec->root, spec->train_dir ? spec->train_dir : "train");
    char *valid = path_join(spec->root, spec->valid_dir ? spec->valid_dir : "val");
    SampleList tl = {0}, vl = {0};
    int rc = -1;
    if (need_dir(train, "training folder", err, errlen) || need_dir(valid, "validation folder", err, errlen)) {
        csv_hint(spec->root, err, errlen);
        goto done;
    }
    if (list_split(c, train, 1, &ds->classes, &ds->nclasses, &tl, err, errlen) || c->failed) goto done;
    if (ds->nclasses == 0) {
        char xb[96];
        error_at(err, errlen, train, "no class folder in it holds an image (%s)", listed_extensions(xb, sizeof xb));
        goto done;
    }
    if (list_split(c, valid, 0, &ds->classes, &ds->nclasses, &vl, err, errlen) || c->failed) goto done;
    if (vl.n == 0) {
        error_at(err, errlen, valid, "the validation split is empty (no images in folders of the %d training classes)",
                 ds->nclasses);
        goto done;
    }
    /* by full path, so the order is the same whatever the file system returned */
    if (tl.n > 1) qsort(tl.v, (size_t)tl.n, sizeof *tl.v, cmp_sample_path);
    if (vl.n > 1) qsort(vl.v, (size_t)vl.n, sizeof *vl.v, cmp_sample_path);
    lists_to_dataset(&tl, &vl, ds);
    rc = 0;
done:
    list_free(&tl);
    list_free(&vl);
    free(train);
    free(valid);
    return rc;
}
