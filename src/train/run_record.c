/* train/run_record.c: run folder marks, config texts and data fingerprints (see run_record.h). */
#include "train/run_record.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *run_config_text(const Config *cfg) {
    Config c = *cfg; /* shallow: config_write only reads */
    c.threads = 0;
    c.stop_after = 0;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) die("out of memory writing a config");
    config_write(&c, f);
    if (fclose(f)) die("out of memory writing a config");
    return text;
}

/* The files a run of cfg writes in its folder (the mark itself and the lock aside). */
static void run_files(const Config *cfg, StrList *l) {
    static const char *const fixed[] = {"config.ini", "log.txt", "metrics.csv", "resume.safetensors", "final.safetensors",
                                        "final.train.safetensors", "plots.gp", "loss.png", "accuracy.png", "size.png",
                                        "best.safetensors", "steps.csv", "lr.png"};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) strlist_add(l, "%s", fixed[i]);
    for (int i = 0; i < cfg->nstages; i++) {
        const char *name = cfg->stages[i].name;
        if (cfg->stages[i].type == STAGE_EVAL) {
            strlist_add(l, "eval-%s.csv", name);
            strlist_add(l, "eval-%s.png", name);
        } else if (cfg->stages[i].type == STAGE_LR_FIND) {
            strlist_add(l, "lr_find-%s.csv", name);
            strlist_add(l, "lr_find-%s.png", name);
            strlist_add(l, "lr_find-%s.gp", name);
        } else if (cfg->stages[i].type == STAGE_INTERPRET) {
            static const char *const made[] = {"confusion.csv", "confusion.png", "confusion.gp", "per_class.csv",
                                               "most_confused.csv", "top_losses.jpg", "show_results.jpg"};
            for (size_t k = 0; k < sizeof made / sizeof *made; k++) strlist_add(l, "%s-%s", name, made[k]);
        } else if (cfg->stages[i].type != STAGE_TTA) {
            strlist_add(l, "%s.safetensors", name);
            strlist_add(l, "%s.train.safetensors", name);
        }
    }
}

int run_mark_write(const char *run_dir, const Config *cfg, char *err, size_t errlen) {
    StrList files = {0};
    run_files(cfg, &files);
    char *config = run_config_text(cfg), *text = NULL, path[1200];
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) die("out of memory writing a run folder's mark");
    fprintf(f, "%s: ./train wrote it with the files listed; --force removes only those, --resume checks the config "
               "below\n", RUN_MARK_HEADER);
    for (int i = 0; i < files.n; i++) fprintf(f, "file %s\n", files.items[i]);
    fprintf(f, "config\n%s", config);
    if (fclose(f)) die("out of memory writing a run folder's mark");
    snprintf(path, sizeof path, "%s/%s", run_dir, RUN_MARK);
    int rc = write_file_atomic(path, text, len, err, errlen);
    free(text);
    free(config);
    strlist_free(&files);
    return rc;
}

int run_mark_read(const char *run_dir, RunMark *out) {
    char path[1200], err[256];
    snprintf(path, sizeof path, "%s/%s", run_dir, RUN_MARK);
    uint8_t *data;
    size_t n;
    if (read_whole_file(path, &data, &n, err, sizeof err)) return 0;
    char *text = xmalloc(n + 1);
    memcpy(text, data, n);
    text[n] = 0;
    free(data);
    int ok = !strncmp(text, RUN_MARK_HEADER ":", strlen(RUN_MARK_HEADER) + 1) && strlen(text) == n;
    RunMark m = {{0}, NULL};
    /* after the header: "file NAME" lines (one name in the folder, never a path), then "config" */
    for (char *line = strchr(text, '\n'); ok && !m.config;) {
        if (!line) {
            ok = 0;
            break;
        }
        line++;
        if (!strncmp(line, "config\n", 7)) {
            m.config = xstrdup(line + 7);
            break;
        }
        char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : 0;
        ok = len > 5 && !strncmp(line, "file ", 5) && !memchr(line + 5, '/', len - 5);
        if (ok) strlist_add(&m.files, "%.*s", (int)(len - 5), line + 5);
        line = end;
    }
    ok = ok && m.config;
    free(text);
    if (!ok || !out) {
        strlist_free(&m.files);
        free(m.config);
        return ok;
    }
    *out = m;
    return 1;
}

void run_mark_free(RunMark *m) {
    strlist_free(&m->files);
    free(m->config);
    m->config = NULL;
}

int config_text_diff(const char *a, const char *b, char *buf, size_t len) {
    char section[128] = "";
    for (;;) {
        /* comments (config_write's header names the file it came from) are not the config */
        while (*a == '#') a += strcspn(a, "\n") + (a[strcspn(a, "\n")] == '\n');
        while (*b == '#') b += strcspn(b, "\n") + (b[strcspn(b, "\n")] == '\n');
        if (!*a && !*b) break;
        size_t la = strcspn(a, "\n"), lb = strcspn(b, "\n");
        if (la != lb || memcmp(a, b, la)) {
            snprintf(buf, len, "%s%s'%.*s' when the run started, '%.*s' now", section, *section ? " " : "",
                     (int)(*a ? la : 9), *a ? a : "(nothing)", (int)(*b ? lb : 9), *b ? b : "(nothing)");
            return 1;
        }
        if (a[0] == '[') snprintf(section, sizeof section, "%.*s", (int)la, a);
        a += la + (a[la] == '\n');
        b += lb + (b[lb] == '\n');
    }
    return 0;
}

void folder_summary(const char *dir, char *buf, size_t len) {
    DIR *d = opendir(dir);
    int n = 0;
    size_t k = 0;
    buf[0] = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (n++ < 4 && k < len) k += (size_t)snprintf(buf + k, len - k, "%s%s", k ? ", " : "", e->d_name);
    }
    if (d) closedir(d);
    if (!n) snprintf(buf, len, "nothing");
    else if (n > 4 && k < len) snprintf(buf + k, len - k, " and %d more", n - 4);
}

uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

static uint64_t split_hash(const Sample *s, int n, const Dataset *d, const char *root) {
    size_t rlen = strlen(root);
    uint64_t sum = 0;
    for (int i = 0; i < n; i++) {
        const char *p = s[i].path;
        /* under the root: the same data moved elsewhere keeps its fingerprint */
        if (!strncmp(p, root, rlen) && p[rlen] == '/') p += rlen + 1;
        uint64_t h = fnv1a(FNV_START, p, strlen(p) + 1);
        const char *c = s[i].label >= 0 && s[i].label < d->nclasses ? d->classes[s[i].label] : "";
        sum += fnv1a(h, c, strlen(c) + 1);
    }
    return sum;
}

void data_fingerprint(const Dataset *d, const char *root, char out[DATA_FP_CHARS]) {
    snprintf(out, DATA_FP_CHARS, "train %d %016" PRIx64 " valid %d %016" PRIx64, d->ntrain,
             split_hash(d->train, d->ntrain, d, root), d->nvalid, split_hash(d->valid, d->nvalid, d, root));
}

/* "WORD NUMBER HEX " at *s: advances *s past it. 0, or -1. */
static int fp_part(const char **s, const char *word, long *count, uint64_t *hash) {
    size_t n = strlen(word);
    if (strncmp(*s, word, n) || (*s)[n] != ' ') return -1;
    char *end;
    *count = strtol(*s + n + 1, &end, 10);
    if (end == *s + n + 1 || *end != ' ' || *count < 0) return -1;
    const char *h = end + 1;
    *hash = strtoull(h, &end, 16);
    if (end - h != 16) return -1;
    *s = end;
    return 0;
}

int data_fingerprint_parse(const char *s, long count[2], uint64_t hash[2]) {
    if (!s || fp_part(&s, "train", &count[0], &hash[0]) || *s++ != ' ' || fp_part(&s, "valid", &count[1], &hash[1]))
        return -1;
    return *s ? -1 : 0;
}
