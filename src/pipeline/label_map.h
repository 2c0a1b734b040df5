/* pipeline/label_map.h: display names for a data set's classes from a label map, a JSON object of
 * class -> name such as Kaggle cassava's label_num_to_disease_map.json ({"0": "Cassava Bacterial
 * Blight (CBB)", ...}). The classes themselves (what checkpoints' class_names hold, what a
 * submission's label column holds) stay as the data names them; the map only gives what people
 * read: predictions, show-batch titles, confusion matrices. */
#ifndef CNN_LABEL_MAP_H
#define CNN_LABEL_MAP_H

#include <stddef.h>

/* The file beside a CSV data set's label file that is used when [data] label_map is not given. */
#define LABEL_MAP_DEFAULT "label_num_to_disease_map.json"

typedef struct {
    char **keys, **values;   /* n pairs, in file order */
    int n;
} LabelMap;

/* Read a flat JSON object whose values are strings ({"0": "name", ...}; keys unique, strings in
 * UTF-8 with JSON's escapes). 0, or -1 with "PATH: line L, column C: what is wrong" in err. */
int label_map_read(const char *path, LabelMap *out, char *err, size_t errlen);
int label_map_parse(const char *text, size_t len, const char *label, LabelMap *out, char *err, size_t errlen);
/* The value for key, or NULL. */
const char *label_map_find(const LabelMap *, const char *key);
void label_map_free(LabelMap *);

/* The display name of each of n classes (malloc'd array of n malloc'd strings): the map's value for
 * the class's name, else the name itself. *matched (may be NULL) counts the classes the map names. */
char **label_map_names(const LabelMap *, char *const *classes, int n, int *matched);

/* Where a data set's label map is (dataset.h's DatasetSpec.label_map: given, relative to root, or
 * the default one beside a CSV data set's label file): a malloc'd path, or NULL for none (not asked
 * for, "none", or the default file is absent). *asked: whether the spec named a file. */
char *label_map_path(const char *root, int csv_layout, const char *csv, const char *label_map, int *asked);

#endif
