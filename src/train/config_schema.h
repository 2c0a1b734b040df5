/* train/config_schema.h: private to train/config*.c: the one schema table (every key with its type,
 * range, default, help and target field) and what reads it: the lookups and the applies-when rules
 * (config_schema.c), and values parsed and written as INI text (config_value.c). Resolution
 * (config.c) and the text output (config_print.c) go through these. */
#ifndef CNN_CONFIG_SCHEMA_H
#define CNN_CONFIG_SCHEMA_H

#include <stddef.h>

#include "train/config.h"
#include "train/ini.h"

typedef enum { T_INT, T_U64, T_FLOAT, T_BOOL, T_STRING, T_ENUM, T_SIZES, T_LR } KeyType;
typedef enum { IN_CONFIG, IN_STAGE, IN_TRAIN_TF, IN_VALID_TF } Target;

typedef struct {
    const char *name;
    int value;
} Choice;

enum {
    K_REQ = 1,      /* required wherever it applies */
    K_CARRY = 2,    /* default: the value of the most recent earlier stage where it applies */
    K_LO_OPEN = 4,  /* the range excludes lo */
    K_HI_OPEN = 8,  /* the range excludes hi */
    K_NAME = 16,    /* enum stored as its name in a char array (device) */
    K_ARCH = 32,    /* string checked against the model registry */
};

typedef struct {
    SecKind sec;
    const char *name;
    KeyType type;
    Target in;
    size_t off, size;      /* the field; strings: its capacity */
    size_t count_off;      /* T_SIZES: the int that holds the count */
    double lo, hi;         /* range of ints, floats and list elements */
    const Choice *choices; /* T_ENUM */
    const char *def;       /* default as text; NULL = required, or from the transform's defaults */
    const char *dep;       /* the key of this section whose value decides whether this key applies */
    unsigned mask;         /* bit v: applies when dep's value is v */
    unsigned flags;
    const char *help;
} Key;

#define BIT(v) (1u << (v))
#define TRAINING (BIT(STAGE_FIT_ONE_CYCLE) | BIT(STAGE_FINE_TUNE) | BIT(STAGE_FIT) | BIT(STAGE_PROGRESSIVE) | BIT(STAGE_FIXRES))

/* The keys, in the order resolution, config_write and config_help go through them. */
extern const Key config_keys[];
extern const int config_nkeys;

/* Stage-type defaults that differ from the table's (fastai's). */
typedef struct {
    StageType type;
    const char *key, *value;
} TypeDefault;
extern const TypeDefault config_type_defaults[];
extern const int config_ntype_defaults;

extern const Choice config_stage_types[]; /* [stage] type */
extern const Choice config_tf_kinds[];    /* [stage] transform */

/* ---- config_schema.c: lookups and the applies-when rules */

/* Die on a slip in the table (a field of the wrong size, a dep after its key); checked once. */
void config_check_schema(void);
const Key *find_key(SecKind, const char *name);   /* NULL when the section has no such key */
const char *choice_name(const Choice *, int value);   /* "?" when none has that value */
void list_choices(const Choice *, const char *sep, char *buf, size_t n);
/* Key k's default text for a stage of this type (the type's own, else the table's). */
const char *key_default(const Key *k, int type);
/* The struct that holds key k's field: the Config, the stage, or one of its transforms. */
const void *key_cbase(const Key *k, const Config *, const StageConfig *);
/* The first key in k's chain of deps (k itself included) that does not apply, or NULL when k
 * applies; key_applies is that test. st is NULL for the global sections. */
const Key *key_not_applying(const Key *k, const Config *, const StageConfig *st);
int key_applies(const Key *k, const Config *, const StageConfig *st);
/* The values of k's dep for which k applies: "fit_one_cycle, fine_tune". */
void key_dep_values(const Key *k, char *buf, size_t n);

/* ---- config_value.c: values as INI text */

/* Parse text for key k into its field in base. Returns 0, or -1 with the reason in why. */
int key_parse_value(const Key *k, const char *text, void *base, char *why, size_t n);
/* The value of key k in base as INI text, as key_parse_value reads it back. */
void key_format_value(const Key *k, const void *base, char *buf, size_t n);
/* k's range as messages and help say it: "between 1 and 4", "> 0 and <= 1". */
void key_range_text(const Key *k, char *buf, size_t n);

#endif
