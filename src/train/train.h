/* train/train.h: running a configuration's stages: the program the user runs (`./train CONFIG`). */
#ifndef CNN_TRAIN_H
#define CNN_TRAIN_H

#include "train/config.h"

/* train_run's return when run.stop_after stopped the run (a signal gives 128 + its number). */
#define TRAIN_STOPPED 3

/* Train and evaluate as the config says, in a new run folder under cfg->out_dir, or, with
 * resume_dir, on in that run folder from its resume.safetensors (cfg is then the folder's
 * config.ini). The folder's path is written into run_dir. Returns 0 when every stage is done;
 * TRAIN_STOPPED or 128 + the signal (SIGINT, SIGTERM) when the run stopped early with a resume
 * checkpoint; exits with a message on a fatal error. */
int train_run(const Config *cfg, const char *resume_dir, char *run_dir, size_t run_dir_len);

#endif
