/* report/font.h: a tiny built-in bitmap font for labelling pictures (show-batch titles), so no font
 * library or font file is needed: 5x7 glyphs (capitals, digits, lowercase x-height 5) in a 5x8 cell
 * whose last row holds the descenders of g j p q y. Covers A-Z, a-z, 0-9 and " _-.:/()%" (plus a few more marks);
 * any other character (a UTF-8 sequence counts as one) draws as a box. */
#ifndef CNN_FONT_H
#define CNN_FONT_H

#include <stdint.h>

#include "pipeline/image.h"

#define FONT_GLYPH_W 5  /* glyph cell in font pixels */
#define FONT_GLYPH_H 8  /* the cell, descender row included */
#define FONT_CAP_H 7    /* capitals and digits: rows 0..6 */
#define FONT_ADVANCE 6  /* glyph width + 1 pixel of spacing */

/* Draw text with its top-left corner at (x, y), each font pixel a scale x scale square (scale >= 1)
 * of colour rgb. Pixels outside the image are skipped, so text may start off the image. */
void font_draw(Image *img, int x, int y, const char *text, int scale, const uint8_t rgb[3]);
/* Width in pixels that font_draw covers for text (no trailing spacing); 0 for "". */
int font_text_width(const char *text, int scale);
/* Characters font_draw draws for text (a UTF-8 sequence counts as one). */
int font_text_chars(const char *text);

#endif
