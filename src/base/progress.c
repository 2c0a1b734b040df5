/* base/progress.c: the terminal progress line (progress.h). */
#include "base/progress.h"

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

static int shown; /* characters on the line now */

int progress_on(void) { return isatty(STDOUT_FILENO); }

void progress_show(const char *fmt, ...) {
    if (!progress_on()) return;
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (n >= (int)sizeof line) n = (int)sizeof line - 1;
    /* pad over a longer previous line */
    printf("\r  %s%*s", line, shown > n + 2 ? shown - n - 2 : 0, "");
    shown = n + 2 > shown ? n + 2 : shown;
    fflush(stdout);
}

void progress_clear(void) {
    if (!progress_on() || !shown) return;
    printf("\r%*s\r", shown, "");
    fflush(stdout);
    shown = 0;
}
