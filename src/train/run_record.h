/* train/run_record.h: what makes a run folder recognisable and a run's record checkable.
 *
 * Every run folder ./train makes holds RUN_MARK ("cnntrain-run"), written first: a header line,
 * the names of the files the run writes there (from its config: config.ini, log.txt, metrics.csv,
 * resume.safetensors, each training stage's checkpoint pair, eval-<stage>.csv, the plots), and the
 * run's config as it affects the numbers (run_config_text). --force removes only the files an old
 * run's mark lists, and never touches a folder without one; --resume refuses a folder without one
 * and a config that differs from the mark's.
 *
 * A data set's fingerprint (data_fingerprint) is its image counts and an order-free hash of its
 * files (path under the data root, and class name) per split; checkpoints carry it so that a
 * resume and `eval` can tell the same data, another split of it, and other data apart. */
#ifndef CNN_RUN_RECORD_H
#define CNN_RUN_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "train/config.h"
#include "pipeline/dataset.h"
#include "base/util.h"

#define RUN_MARK "cnntrain-run"
#define RUN_MARK_HEADER "cnntrain run folder"

/* The keys that may differ on --resume: they cannot change the numbers. */
#define RESUME_FREE_KEYS "run.threads, run.stop_after"

/* cfg written as config.ini is, with the keys a resume may change (RESUME_FREE_KEYS) at their
 * defaults: equal texts, equal numbers. malloc'd. */
char *run_config_text(const Config *cfg);

/* Writes run_dir/RUN_MARK for cfg. 0, or -1 with err. */
int run_mark_write(const char *run_dir, const Config *cfg, char *err, size_t errlen);

/* A run folder's mark: the files it lists and its config text. */
typedef struct {
    StrList files;
    char *config;
} RunMark;
/* 1 when run_dir holds a readable mark (filled in *out when out is not NULL; run_mark_free it),
 * 0 when it holds none or one that is not ours. */
int run_mark_read(const char *run_dir, RunMark *out);
void run_mark_free(RunMark *);

/* The first line where two config texts differ, as "[section] key = a" (in a) and the same in b,
 * into buf. Returns 0 when the texts are equal. */
int config_text_diff(const char *a, const char *b, char *buf, size_t len);

/* What a folder holds, for a message: "README, Makefile, paper.tex and 4 more" ("nothing"). */
void folder_summary(const char *dir, char *buf, size_t len);

/* 64-bit FNV-1a over n bytes, continuing from h (start with FNV_START). */
#define FNV_START 0xcbf29ce484222325ULL
uint64_t fnv1a(uint64_t h, const void *data, size_t n);

/* The fingerprint of d, whose files lie under root: "train N HASH valid M HASH" (HASH 16 hex
 * digits; a split's hash is the sum of its files' hashes, so order does not matter). */
#define DATA_FP_CHARS 80
void data_fingerprint(const Dataset *d, const char *root, char out[DATA_FP_CHARS]);
/* Parsed back: counts and hashes of both splits; 0, or -1 when s is not a fingerprint. */
int data_fingerprint_parse(const char *s, long count[2], uint64_t hash[2]);

#endif
