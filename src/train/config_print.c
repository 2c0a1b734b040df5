/* train/config_print.c: the configuration as text: config_write (the resolved configuration, every
 * key that applies, as an INI file that config_load reads back to the same Config) and
 * config_help (`./train --help-config`: every section and key from the schema table). */
#include "train/config.h"

#include <stdio.h>
#include <string.h>

#include "train/config_schema.h"
#include "train/ini.h"

void config_write(const Config *c, FILE *f) {
    char buf[1024];
    fprintf(f, "# cnntrain configuration resolved from %s: every key that applies, defaults filled in\n", c->path);
    for (int sec = 0; sec < SEC_STAGE; sec++) {
        fprintf(f, "\n[%s]\n", ini_section_names[sec]);
        for (int k = 0; k < config_nkeys; k++) {
            const Key *key = &config_keys[k];
            if ((int)key->sec != sec || !key_applies(key, c, NULL)) continue;
            key_format_value(key, c, buf, sizeof buf);
            if (!*buf) { /* an optional string left empty (no pretrained weights) */
                fprintf(f, "# %s = (none)\n", key->name);
                continue;
            }
            fprintf(f, "%s = ", key->name);
            ini_write_value(f, buf);
        }
    }
    for (int i = 0; i < c->nstages; i++) {
        const StageConfig *st = &c->stages[i];
        fprintf(f, "\n[stage %s]\n", st->name);
        for (int k = 0; k < config_nkeys; k++) {
            const Key *key = &config_keys[k];
            if (key->sec != SEC_STAGE || !key_applies(key, c, st)) continue;
            key_format_value(key, key_cbase(key, c, st), buf, sizeof buf);
            fprintf(f, "%s = ", key->name);
            ini_write_value(f, buf);
        }
    }
}

static void help_type(const Key *k, char *buf, size_t n) {
    char range[96];
    key_range_text(k, range, sizeof range);
    switch (k->type) {
    case T_INT: snprintf(buf, n, "int, %s", range); break;
    case T_U64: snprintf(buf, n, "int, 0 to 2^64-1"); break;
    case T_FLOAT: snprintf(buf, n, "float, %s", range); break;
    case T_LR: snprintf(buf, n, "float %s, or a range lo..hi", range); break;
    case T_BOOL: snprintf(buf, n, "bool"); break;
    case T_STRING: snprintf(buf, n, "string"); break;
    case T_ENUM: list_choices(k->choices, " | ", buf, n); break;
    case T_SIZES: snprintf(buf, n, "list of ints, each %s", range); break;
    }
}

/* The default as help shows it: the table's, the stage types that differ, or a transform's. */
static void help_default(const Key *k, char *buf, size_t n) {
    *buf = 0;
    if (k->flags & K_REQ) {
        snprintf(buf, n, "required");
        return;
    }
    if (k->in == IN_TRAIN_TF && strcmp(k->name, "transform")) {
        /* from transform_defaults: fastai's and torchvision's library defaults */
        char prevv[64] = "";
        int same = 1;
        for (const Choice *c = config_tf_kinds; c->name; c++) {
            if (!((k->mask >> c->value) & 1)) continue;
            TransformSpec t = transform_defaults((TransformKind)c->value, 224, 1);
            char v[64];
            key_format_value(k, &t, v, sizeof v);
            if (*prevv && strcmp(prevv, v)) same = 0;
            snprintf(prevv, sizeof prevv, "%s", v);
            snprintf(buf + strlen(buf), n - strlen(buf), "%s%s %s", *buf ? ", " : "", c->name, v);
        }
        if (same) snprintf(buf, n, "%s", prevv);
        return;
    }
    if (!k->def) {
        snprintf(buf, n, "follows transform");
        return;
    }
    snprintf(buf, n, "%s", k->def);
    for (int i = 0; k->sec == SEC_STAGE && i < config_ntype_defaults; i++)
        if (!strcmp(config_type_defaults[i].key, k->name))
            snprintf(buf + strlen(buf), n - strlen(buf), "; %s %s", choice_name(config_stage_types, config_type_defaults[i].type),
                     config_type_defaults[i].value);
}

/* Print text from column `indent` on, wrapped at 100 columns, continuation lines indented. */
static void wrap(FILE *f, const char *text, int indent) {
    int col = indent;
    for (const char *p = text; *p;) {
        while (*p == ' ') p++;
        int len = (int)strcspn(p, " ");
        if (col > indent && col + 1 + len > 100) {
            fprintf(f, "\n%*s", indent, "");
            col = indent;
        } else if (col > indent) {
            fputc(' ', f);
            col++;
        }
        fprintf(f, "%.*s", len, p);
        col += len;
        p += len;
    }
    fputc('\n', f);
}

static const char *const help_sections[NSEC] = {
    "[data]  the data set",
    "[model]  the network",
    "[run]  where and how to run",
    "[stage NAME]  one per stage, run in file order",
};

void config_help(FILE *f) {
    fprintf(f,
            "cnntrain configuration: an INI file with [data], [model], [run] and one [stage NAME] per stage.\n"
            "`key = value`; `#` and `;` start comments; quote a value with \"...\" to keep # or spaces.\n"
            "An unknown key, a bad value or a key that does not apply is an error naming its line.\n"
            "Command-line overrides: --set section.key=value, --set stage NAME.key=value (or NAME.key=value).\n");
    for (int sec = 0; sec < NSEC; sec++) {
        fprintf(f, "\n%s\n", help_sections[sec]);
        for (int i = 0; i < config_nkeys; i++) {
            const Key *k = &config_keys[i];
            if ((int)k->sec != sec) continue;
            char type[256], def[256], when[512] = "";
            help_type(k, type, sizeof type);
            help_default(k, def, sizeof def);
            if (k->dep) {
                char vals[256];
                key_dep_values(k, vals, sizeof vals);
                snprintf(when, sizeof when, "; %s: %s", strcmp(k->dep, "type") ? k->dep : "stages", vals);
            }
            char line[1024];
            snprintf(line, sizeof line, "%s; %s%s%s%s", type, k->flags & K_REQ ? "" : "default ", def, when,
                     k->flags & K_CARRY ? "; carried over" : "");
            fprintf(f, "  %-18s ", k->name);
            wrap(f, line, 21);
            fprintf(f, "%21s", "");
            wrap(f, k->help, 21);
        }
    }
    fprintf(f,
            "\nDefaults by stage type: fit_one_cycle and progressive use fastai's (lr 1e-3, pct_start 0.25, div 25,\n"
            "div_final 1e5, moms 0.95-0.85-0.95, beta2 0.99, eps 1e-5, wd 0.01 without batch-norm and bias);\n"
            "fine_tune is fastai's fine_tune(epochs, 2e-3, freeze_epochs=1, pct_start=0.3, div=5); fit and fixres\n"
            "are PyTorch's AdamW with a constant lr (1e-3, betas 0.9/0.999, eps 1e-8, wd 0.01 on every parameter).\n"
            "progressive is one-cycle with Composer's size schedule (initial_scale 0.5, delay 0.5, finetune 0.2,\n"
            "increment 4); an eval stage's size is its largest test size.\n"
            "\nCarried over (\"carried over\" above): as fastai's learn.dls and loss persist between fit calls, a\n"
            "stage that does not set size, batch, label_smoothing, mixup or transform takes the value of the\n"
            "most recent earlier stage that has it (the first stage: the default). Transform parameters carry\n"
            "while the transform kind stays the same and reset to the library defaults when it changes. The\n"
            "validation transform carries while a stage sets no training-transform key; otherwise it defaults\n"
            "to the deterministic version of the training transform (fastai -> fastai with its presize,\n"
            "rrc -> resize, center -> center, resize -> resize with its resize_ratio). Optimizer settings\n"
            "(lr, wd, moms, betas, eps, schedule) never carry: each stage restates them or takes its type's\n"
            "defaults.\n");
}
