/* train.h: running a configuration's stages: the program the user runs (`./train CONFIG`). */
#ifndef CNN_TRAIN_H
#define CNN_TRAIN_H

#include "config.h"

/* Train and evaluate as the config says, in a new run folder under cfg->out_dir (its path is
 * written into run_dir). Returns 0, or exits with a message on a fatal error. */
int train_run(const Config *cfg, char *run_dir, size_t run_dir_len);

#endif
