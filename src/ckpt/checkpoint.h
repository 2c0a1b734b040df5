/* ckpt/checkpoint.h: a model to and from safetensors files, in PyTorch's names and layouts.
 *
 * The model file is a plain PyTorch state dict: every Param under its name (conv weights in
 * PyTorch's K,C,R,S order), and per batch norm "<name>.running_mean", ".running_var" (F32) and
 * ".num_batches_tracked" (I64, 0-dim). So `model.load_state_dict(load(path))` works in PyTorch
 * (scripts/st_torch.py reads the format without the safetensors package), and a torchvision
 * state dict saved as safetensors loads here. Metadata: "format" = "cnntrain/1", "arch",
 * "classes", plus what the caller adds.
 *
 * Training state (Adam moments) goes to a second file beside it, so the model file stays a plain
 * state dict: "<param>.exp_avg" and ".exp_avg_sq" per Param, same layout, format
 * "cnntrain-train/1", and the caller's metadata (stage, epoch, step, RNG state, ...). Both files
 * of one save carry the same "checkpoint_id" (from ckpt_new_id) so a loader can tell that a pair
 * belongs together; save the training state first, then the model, and a crash in between leaves a
 * pair whose ids differ rather than a silently mismatched one.
 *
 * All float arrays are HOST arrays in our layout (param_floats / stat_floats floats). Every
 * function returns 0, or -1 with a message in err that starts with the file's path.
 */
#ifndef CNN_CHECKPOINT_H
#define CNN_CHECKPOINT_H

#include <stddef.h>

#include "net/model.h"
#include "ckpt/safetensors.h"

#define CKPT_FORMAT "cnntrain/1"
#define CKPT_TRAIN_FORMAT "cnntrain-train/1"
#define CKPT_RESUME_FORMAT "cnntrain-resume/1"
#define CKPT_ID_KEY "checkpoint_id"
#define CKPT_ID_CHARS 32   /* hex digits of a checkpoint id (128 random bits) */

/* A fresh random id, CKPT_ID_CHARS hex digits and a NUL. From the OS, not the training RNG: it
 * must differ between runs with the same seed, and must not shift the run's random streams. */
void ckpt_new_id(char id[CKPT_ID_CHARS + 1]);

/* meta: NULL, or a NULL-terminated list key, value, key, value, ..., NULL of extra metadata
 * (e.g. CKPT_ID_KEY and the id). "format", "arch" and "classes" are written by the checkpoint
 * itself and may not be repeated in meta. */
int ckpt_save(const char *path, const Model *m, const float *params, const float *stats, const char *const *meta,
              char *err, size_t errlen);

/* Strict: every tensor the model expects must be there with its shape, nothing else may be. On
 * any mismatch err lists every problem (missing keys, unexpected keys, shapes with both sides,
 * dtypes) as far as errlen allows, then "and N more", and params, stats and the model are left
 * untouched. F32 is expected; F16, BF16 and F64 are converted, as PyTorch's load_state_dict
 * would (num_batches_tracked: I64 or I32). Fills params (conv weights transposed back), stats and
 * Node.batches_tracked. Works on files without our metadata (a torchvision state dict). */
int ckpt_load(const char *path, Model *m, float *params, float *stats, char *err, size_t errlen);
/* The same from a file already read (e.g. to look at its "arch" first); label names it in err. */
int ckpt_load_st(const StFile *f, const char *label, Model *m, float *params, float *stats, char *err,
                 size_t errlen);

/* Training state: adam_m / adam_v are host arrays of param_floats floats. meta must hold
 * CKPT_ID_KEY (the same id as the model file of the pair). */
int ckpt_save_train(const char *path, const Model *m, const float *adam_m, const float *adam_v,
                    const char *const *meta, char *err, size_t errlen);
/* Strict like ckpt_load. meta_out, when not NULL, receives the file's header: its metadata
 * (st_meta(meta_out, "epoch") ...) and tensor list, without the data (blob NULL); st_close it. */
int ckpt_load_train(const char *path, Model *m, float *adam_m, float *adam_v, StFile *meta_out, char *err,
                    size_t errlen);

/* A run's resume point: model and training state in ONE file (format "cnntrain-resume/1"), so a
 * single atomic rename replaces it whole and a crash at any moment leaves the previous one or the
 * new one, never half of each. meta: where the run stands (stage, epoch, step, ...). */
int ckpt_save_resume(const char *path, const Model *m, const float *params, const float *stats, const float *adam_m,
                     const float *adam_v, const char *const *meta, char *err, size_t errlen);
/* Strict like ckpt_load; meta_out as for ckpt_load_train. */
int ckpt_load_resume(const char *path, Model *m, float *params, float *stats, float *adam_m, float *adam_v,
                     StFile *meta_out, char *err, size_t errlen);

/* Checks that the two files are one save: both carry a checkpoint_id and the ids are equal.
 * Reads only the headers. */
int ckpt_check_pair(const char *model_path, const char *train_path, char *err, size_t errlen);

/* The training-state file that goes beside a model file: "run/e3.safetensors" ->
 * "run/e3.train.safetensors", "run/final.ckpt" -> "run/final.train.ckpt", "x" -> "x.train".
 * Returns 0, or -1 when out is too small. */
int ckpt_train_path(const char *model_path, char *out, size_t outlen);

#endif
