/* train/ini.h: the INI dialect of cnntrain's config files, read without the schema: [data], [model],
 * [run] and [stage NAME] sections of `key = value` lines, `#` and `;` comments (whole lines, or
 * after whitespace), "..." quoting, a UTF-8 byte-order mark, and --set overrides. It checks the
 * shape of the file (section heads, key names, quotes, duplicates) with file:line in every error;
 * which keys exist and what their values mean is config.c's business. */
#ifndef CNN_INI_H
#define CNN_INI_H

#include <stddef.h>
#include <stdio.h>

/* The section kinds, in the order config files and --help-config list them. */
typedef enum { SEC_DATA, SEC_MODEL, SEC_RUN, SEC_STAGE, NSEC } SecKind;
extern const char *const ini_section_names[NSEC]; /* "data", "model", "run", "stage" */

typedef struct {
    char *key, *value;
    int line;        /* 0 for a --set */
    const char *set; /* the --set text it came from */
} Entry;

typedef struct {
    SecKind kind;
    char name[64]; /* a stage's name */
    int line;
    Entry *e;
    int n, cap;
} Section;

typedef struct {
    const char *path;
    Section *s;
    int n, cap;
} Ini;

/* Read path's sections and entries. Returns 0, or -1 with "file:line: message" in err. */
int ini_read(Ini *, const char *path, char *err, size_t errlen);
void ini_free(Ini *);
/* One --set: "section.key=value", "stage NAME.key=value" or "NAME.key=value", replacing the
 * file's entry or adding one. text must outlive the Ini (entries point to it). */
int ini_apply_override(Ini *, const char *text, char *err, size_t errlen);

Entry *ini_find_entry(const Section *, const char *key);   /* NULL when absent (or no section) */
Section *ini_find_section(const Ini *, SecKind, const char *name);   /* name: a stage's; NULL when absent */

/* Labels for messages: "[stage full]" or "[data]"; an entry's "file:line" or "--set TEXT"; "file:line"
 * or, for line 0, "file". Each returns buf. */
const char *ini_section_title(const Section *, char *buf, size_t n);
const char *ini_entry_label(const Ini *, const Entry *, char *buf, size_t n);
const char *ini_line_label(const Ini *, int line, char *buf, size_t n);

/* Write a value and a line break, quoted when it would not read back as itself. */
void ini_write_value(FILE *, const char *value);

/* Strip leading and trailing whitespace in place. */
char *ini_trim(char *s);
/* The closest of names to s when it is close enough to be a likely typo and no other name is as
 * close, else NULL: the "did you mean" of every message here and in the schema. */
const char *ini_closest(const char *s, const char *const *names, int n);

#endif
