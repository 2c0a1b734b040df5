/* fuzz_config.c: the INI reader and config validation (config_load) on a file holding the input.
 * Bytes after the input's first NUL are --set overrides, separated by NULs. An error must name
 * the file or the override; a config that loads must come back the same through config_write
 * and a second load (the run folder's config.ini is read back that way). */
#include "fuzz.h"

#include "train/config.h"

#ifndef FUZZ_ENTRY
#define FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

/* config_write's text without its first line (a comment naming the source file). */
static char *cfg_text(const Config *c) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    FUZZ_CHECK(f, "open_memstream failed");
    config_write(c, f);
    fclose(f);
    char *body = strchr(text, '\n');
    FUZZ_CHECK(body, "config_write wrote no line");
    memmove(text, body, strlen(body) + 1);
    return text;
}

int FUZZ_ENTRY(const uint8_t *data, size_t size);
int FUZZ_ENTRY(const uint8_t *data, size_t size) {
    char path[600], path2[600], err[2048];
    snprintf(path, sizeof path, "%s/fuzz.ini", fuzz_dir());
    snprintf(path2, sizeof path2, "%s/written.ini", fuzz_dir());
    const uint8_t *nul = memchr(data, 0, size);
    size_t ini = nul ? (size_t)(nul - data) : size;
    fuzz_write(path, data, ini);

    /* the overrides, NUL-terminated in a copy of the rest */
    char *rest = calloc(1, size - ini + 1);
    const char *sets[8];
    int nsets = 0;
    if (nul) {
        memcpy(rest, nul + 1, size - ini - 1);
        for (char *s = rest; s < rest + (size - ini - 1) && nsets < 8; s += strlen(s) + 1) sets[nsets++] = s;
    }

    Config c;
    err[0] = 0;
    if (config_load(path, sets, nsets, &c, err, sizeof err)) {
        FUZZ_CHECK(fuzz_names(err, path) || fuzz_names(err, "--set "), "the error names neither file nor override: %s", err);
        free(rest);
        return 0;
    }
    char *text = cfg_text(&c);
    fuzz_write(path2, text, strlen(text));
    Config c2;
    FUZZ_CHECK(config_load(path2, NULL, 0, &c2, err, sizeof err) == 0, "config_write's file does not load: %s\n%s", err, text);
    char *text2 = cfg_text(&c2);
    FUZZ_CHECK(!strcmp(text, text2), "config_write, load, config_write changed the config:\n%s\n---\n%s", text, text2);
    free(text), free(text2), free(rest);
    config_free(&c), config_free(&c2);
    return 0;
}
