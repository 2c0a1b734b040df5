/* train/config.c: config_load: the INI file (ini.c) resolved through the schema table
 * (config_schema.c) into a Config, with every error naming its file:line or --set.
 *
 * Resolution rules, in brief (config_help prints them in full):
 * - Every key has a default; optimizer defaults depend on the stage type (fastai's for the
 *   one-cycle stages, PyTorch's AdamW for fit and fixres): config_type_defaults[] in config_schema.c.
 * - A key may apply only for some values of another key of its section (its `dep`): stage keys
 *   on the stage type, transform parameters on the transform, csv keys on the data format.
 *   Setting a key that does not apply is an error, so a typo in a stage type cannot silently
 *   drop settings.
 * - The data pipeline persists from stage to stage as fastai's learn.dls does: size, batch and
 *   the loss options (label smoothing, mixup) carry over from the most recent stage that has them,
 *   the training transform and its parameters too (the parameters only while the kind stays the
 *   same), and the validation transform follows the training transform. Optimizer settings never
 *   carry: each fit call in fastai restates them, and each stage type has its own defaults.
 * - Non-applicable fields hold their defaults, so a Config is a function of the applicable
 *   values only, which is what makes config_write + config_load an exact round trip. */
#include "train/config.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "train/config_schema.h"
#include "train/ini.h"

/* ------------------------------------------------------------------------------ resolution */

static void *key_base(const Key *k, Config *c, StageConfig *st) { return (void *)key_cbase(k, c, st); }

typedef struct {
    const Ini *ini;
    char *err;
    size_t errlen;
} Ctx;

/* "[stage full] lr = abc: " for file entries; a --set label already says it all */
static void entry_what(const Section *s, const Entry *e, char *buf, size_t n) {
    char title[100];
    if (e->set) *buf = 0;
    else snprintf(buf, n, "%s %s = %s: ", ini_section_title(s, title, sizeof title), e->key, e->value);
}

static int bad_value(Ctx *x, const Section *s, const Entry *e, const char *why) {
    char lb[1200], what[700];
    entry_what(s, e, what, sizeof what);
    return error_at(x->err, x->errlen, ini_entry_label(x->ini, e, lb, sizeof lb), "%s%s", what, why);
}

static int set_value(Ctx *x, const Section *s, const Entry *e, const Key *k, void *base) {
    char why[700];
    if (key_parse_value(k, e->value, base, why, sizeof why)) return bad_value(x, s, e, why);
    return 0;
}

/* Whether a stage of this type can take key k at all: the type mask at the end of its dep chain. */
static int stage_type_takes(const Key *k, int type) {
    while (k->dep && strcmp(k->dep, "type")) k = find_key(k->sec, k->dep);
    return !k->dep || ((k->mask >> type) & 1);
}

/* An unknown key: the error names the closest key and lists the keys of the section (of a stage:
 * those its type can take). */
static int unknown_key(Ctx *x, const Section *s, const Entry *e, int type) {
    const char **names = xmalloc((size_t)config_nkeys * sizeof *names);
    int n = 0;
    char list[2048] = "", title[100], lb[1200], hint[100] = "";
    for (int i = 0; i < config_nkeys; i++) {
        if (config_keys[i].sec != s->kind) continue;
        names[n++] = config_keys[i].name;
        if (s->kind != SEC_STAGE || stage_type_takes(&config_keys[i], type))
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", *list ? ", " : "", config_keys[i].name);
    }
    const char *g = ini_closest(e->key, names, n); /* one of the table's names, not names' */
    free(names);
    if (g) snprintf(hint, sizeof hint, "; did you mean '%s'?", g);
    return error_at(x->err, x->errlen, ini_entry_label(x->ini, e, lb, sizeof lb), "unknown key '%s' in %s%s keys: %s", e->key,
                    ini_section_title(s, title, sizeof title), g ? hint : ";", list);
}

/* A key set where it does not apply. */
static int not_here(Ctx *x, const Section *s, const Entry *e, const Key *k, Config *c, StageConfig *st) {
    const Key *bad = key_not_applying(k, c, st), *d = find_key(bad->sec, bad->dep);
    char why[700], vals[256], cur[64];
    key_dep_values(bad, vals, sizeof vals);
    key_format_value(d, key_cbase(d, c, st), cur, sizeof cur);
    if (!strcmp(d->name, "type"))
        snprintf(why, sizeof why, "a stage of type %s takes no '%s' (only: %s)", cur, k->name, vals);
    else if (bad == k)
        snprintf(why, sizeof why, "'%s' does not apply when %s = %s (only with %s = %s)", k->name, d->name, cur, d->name, vals);
    else
        snprintf(why, sizeof why, "'%s' does not apply when %s = %s", k->name, d->name, cur);
    return bad_value(x, s, e, why);
}

static int missing(Ctx *x, const Section *s, const Key *k, const char *why) {
    char lb[700], title[100];
    return error_at(x->err, x->errlen, ini_line_label(x->ini, s->line, lb, sizeof lb), "%s has no '%s'%s",
                    ini_section_title(s, title, sizeof title), k->name, why);
}

static int check_unknown(Ctx *x, const Section *s, int type) {
    for (int i = 0; i < s->n; i++)
        if (!find_key(s->kind, s->e[i].key)) return unknown_key(x, s, &s->e[i], type);
    return 0;
}

/* [data], [model], [run]: defaults, then the section's values, in table order. */
static int resolve_global(Ctx *x, SecKind kind, Config *c) {
    Section *s = ini_find_section(x->ini, kind, "");
    for (int i = 0; i < config_nkeys; i++) {
        const Key *k = &config_keys[i];
        if (k->sec != kind || !k->def) continue;
        char why[200];
        if (key_parse_value(k, k->def, c, why, sizeof why)) die("config schema: default of '%s': %s", k->name, why);
    }
    if (!s) {
        for (int i = 0; i < config_nkeys; i++)
            if (config_keys[i].sec == kind && (config_keys[i].flags & K_REQ))
                return error_at(x->err, x->errlen, x->ini->path, "no [%s] section (it needs at least '%s')", ini_section_names[kind],
                                config_keys[i].name);
        return 0;
    }
    if (check_unknown(x, s, -1)) return -1;
    for (int i = 0; i < config_nkeys; i++) {
        const Key *k = &config_keys[i];
        if (k->sec != kind) continue;
        const Entry *e = ini_find_entry(s, k->name);
        if (e && !key_applies(k, c, NULL)) return not_here(x, s, e, k, c, NULL);
        if (e && set_value(x, s, e, k, c)) return -1;
        if (!e && (k->flags & K_REQ) && key_applies(k, c, NULL)) return missing(x, s, k, " (required)");
    }
    return 0;
}

/* The most recent earlier stage where key k applies, or NULL. */
static StageConfig *carry_source(const Key *k, Config *c, StageConfig *stages, int i) {
    for (int j = i - 1; j >= 0; j--)
        if (key_applies(k, c, &stages[j])) return &stages[j];
    return NULL;
}

/* rrc's deterministic version is its evaluation pair, Resize + CenterCrop. */
static TransformKind deterministic(TransformKind k) { return k == TF_RANDOM_RESIZED_CROP ? TF_RESIZE_CENTER_CROP : k; }

static int resolve_stage(Ctx *x, const Section *s, Config *c, StageConfig *stages, int i) {
    StageConfig *st = &stages[i];
    memset(st, 0, sizeof *st);
    snprintf(st->name, sizeof st->name, "%s", s->name);
    st->line = s->line;
    const Key *ktype = find_key(SEC_STAGE, "type");
    const Entry *e = ini_find_entry(s, "type");
    char list[256];
    list_choices(config_stage_types, ", ", list, sizeof list);
    if (e && set_value(x, s, e, ktype, st)) return -1;
    if (!e) {
        char why[300];
        snprintf(why, sizeof why, " (required: %s)", list);
        return missing(x, s, ktype, why);
    }
    if (check_unknown(x, s, st->type)) return -1;
    /* Stage fields: defaults for this type, or carried from an earlier stage. */
    for (int k = 0; k < config_nkeys; k++) {
        const Key *key = &config_keys[k];
        if (key->sec != SEC_STAGE || key->in != IN_STAGE || key == ktype) continue;
        const char *def = key_default(key, st->type);
        StageConfig *from = (key->flags & K_CARRY) && key_applies(key, c, st) ? carry_source(key, c, stages, i) : NULL;
        char why[200];
        if (from) memcpy((char *)st + key->off, (char *)from + key->off, key->size);
        else if (def && key_parse_value(key, def, st, why, sizeof why)) die("config schema: default of '%s': %s", key->name, why);
    }
    /* The rest in table order; the two transform heads set up their groups' starting values. */
    int touched_train = 0;
    for (int k = 0; k < config_nkeys; k++) {
        const Key *key = &config_keys[k];
        if (key->sec != SEC_STAGE || key == ktype) continue;
        e = ini_find_entry(s, key->name);
        if (key->in == IN_TRAIN_TF && e) touched_train = 1;
        if (e && !key_applies(key, c, st)) return not_here(x, s, e, key, c, st);
        if (!strcmp(key->name, "transform")) {
            /* the kind carries; its parameters carry only while the kind stays the same */
            StageConfig *from = key_applies(key, c, st) ? carry_source(key, c, stages, i) : NULL;
            TransformSpec first;
            char why[200];
            if (key_parse_value(key, key->def, &first, why, sizeof why)) die("config schema: default of 'transform': %s", why);
            TransformKind kind = from ? from->train_tf.kind : first.kind;
            if (e) {
                if (set_value(x, s, e, key, &st->train_tf)) return -1;
                kind = st->train_tf.kind;
            }
            st->train_tf = from && from->train_tf.kind == kind ? from->train_tf : transform_defaults(kind, 0, 1);
            continue;
        }
        if (!strcmp(key->name, "valid_transform")) {
            /* the validation transform follows the training one: carried while the stage changes
             * nothing of the training transform, else its deterministic version */
            const StageConfig *prev = i > 0 ? &stages[i - 1] : NULL;
            int carry = prev && !touched_train;
            TransformKind kind = carry ? prev->valid_tf.kind : deterministic(st->train_tf.kind);
            if (e) {
                if (set_value(x, s, e, key, &st->valid_tf)) return -1;
                kind = st->valid_tf.kind;
            }
            if (carry && prev->valid_tf.kind == kind) {
                st->valid_tf = prev->valid_tf;
            } else {
                st->valid_tf = transform_defaults(kind, 0, 0);
                if (kind == TF_FASTAI && st->train_tf.kind == TF_FASTAI) st->valid_tf.presize = st->train_tf.presize;
                if (kind == TF_RESIZE_CENTER_CROP && st->train_tf.kind == TF_RESIZE_CENTER_CROP)
                    st->valid_tf.resize_ratio = st->train_tf.resize_ratio;
            }
            continue;
        }
        if (e && set_value(x, s, e, key, key_base(key, c, st))) return -1;
        if (!e && (key->flags & K_REQ) && key_applies(key, c, st)) {
            char why[100];
            const char *tn = choice_name(config_stage_types, st->type);
            snprintf(why, sizeof why, ", which %s %s stage requires", strchr("aeiou", tn[0]) ? "an" : "a", tn);
            return missing(x, s, key, why);
        }
    }
    /* Rules across keys. */
    char lb[700], title[100];
    ini_line_label(x->ini, s->line, lb, sizeof lb);
    ini_section_title(s, title, sizeof title);
    const TransformSpec *t = &st->train_tf;
    if (t->kind == TF_RANDOM_RESIZED_CROP && t->scale_min > t->scale_max)
        return error_at(x->err, x->errlen, lb, "%s scale_min = %g is larger than scale_max = %g", title, (double)t->scale_min,
                        (double)t->scale_max);
    if ((t->kind == TF_RANDOM_RESIZED_CROP || t->kind == TF_FASTAI) && t->ratio_min > t->ratio_max)
        return error_at(x->err, x->errlen, lb, "%s ratio_min = %g is larger than ratio_max = %g", title, (double)t->ratio_min,
                        (double)t->ratio_max);
    if ((BIT(st->type) & (TRAINING | BIT(STAGE_LR_FIND))) && st->batch < 2)
        return error_at(x->err, x->errlen, lb, "%s batch = %d: batch norm needs at least 2 images per training batch "
                        "(PyTorch refuses 1 too)", title, st->batch);
    if (st->type == STAGE_PROGRESSIVE && st->delay_fraction + st->finetune_fraction > 1.0f)
        return error_at(x->err, x->errlen, lb, "%s delay_fraction + finetune_fraction = %g: must be at most 1", title,
                        (double)(st->delay_fraction + st->finetune_fraction));
    /* An eval stage has no size of its own: its largest test size sizes the model's buffers. */
    if (st->type == STAGE_EVAL) {
        st->size = 0;
        for (int k = 0; k < st->nsizes; k++) st->size = st->sizes[k] > st->size ? st->sizes[k] : st->size;
    }
    st->train_tf.size = st->valid_tf.size = st->size;
    st->train_tf.train = 1;
    st->valid_tf.train = 0;
    return 0;
}

int config_load(const char *path, const char *const *overrides, int noverrides, Config *out, char *err, size_t errlen) {
    config_check_schema();
    memset(out, 0, sizeof *out);
    Ini ini;
    if (ini_read(&ini, path, err, errlen)) return -1;
    int rc = 0;
    for (int i = 0; i < noverrides && !rc; i++) rc = ini_apply_override(&ini, overrides[i], err, errlen);
    Ctx x = {&ini, err, errlen};
    if (strlen(path) >= sizeof out->path) rc = error_at(err, errlen, path, "path too long");
    else snprintf(out->path, sizeof out->path, "%s", path);
    for (int k = 0; k < SEC_STAGE && !rc; k++) rc = resolve_global(&x, (SecKind)k, out);
    int nstages = 0;
    for (int i = 0; i < ini.n; i++) nstages += ini.s[i].kind == SEC_STAGE;
    if (!rc && !nstages) rc = error_at(err, errlen, path, "no [stage NAME] section: nothing to run");
    if (!rc) {
        out->stages = xcalloc((size_t)nstages, sizeof *out->stages);
        for (int i = 0; i < ini.n && !rc; i++)
            if (ini.s[i].kind == SEC_STAGE) {
                rc = resolve_stage(&x, &ini.s[i], out, out->stages, out->nstages);
                out->nstages++;
            }
    }
    ini_free(&ini);
    if (rc) {
        config_free(out);
        return -1;
    }
    out->data.root = out->storage[0];
    out->data.train_dir = out->storage[1];
    out->data.valid_dir = out->storage[2];
    out->data.csv = out->storage[3];
    out->data.images_dir = out->storage[4];
    out->data.label_map = out->storage[5];
    return 0;
}

int stage_trains(StageType t) {
    return t == STAGE_FIT_ONE_CYCLE || t == STAGE_FINE_TUNE || t == STAGE_FIT || t == STAGE_PROGRESSIVE || t == STAGE_FIXRES;
}

const StageConfig *config_last_training(const Config *c, int end) {
    for (int i = (end < c->nstages ? end : c->nstages) - 1; i >= 0; i--)
        if (stage_trains(c->stages[i].type)) return &c->stages[i];
    return NULL;
}

void config_free(Config *c) {
    free(c->stages);
    c->stages = NULL;
    c->nstages = 0;
}
