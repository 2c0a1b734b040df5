/* base/progress.h: one progress line on a terminal ("\r  epoch 3: 12/40 batches, ..."), rewritten
 * in place and cleared when the work is done. Nothing at all when stdout is not a terminal
 * (logs, pipes, tests), so files never fill with carriage returns. */
#ifndef CNN_PROGRESS_H
#define CNN_PROGRESS_H

#include "base/util.h"

/* Whether stdout is a terminal. */
int progress_on(void);
/* Replace the line with "  " + the formatted text. */
void progress_show(const char *fmt, ...) CNN_PRINTF(1, 2);
/* Blank the line (after the last progress_show) and return to its start. */
void progress_clear(void);

#endif
