/* cmd/info.c: `train info MODEL`: the layer table, parameter count and forward GFLOPs. */
#include <stdio.h>
#include <stdlib.h>

#include "cmd/cli.h"
#include "cmd/commands.h"
#include "net/model.h"
#include "base/util.h"

static const char *op_names[OP_COUNT] = {"conv", "batchnorm", "relu", "maxpool", "avgpool",
                                         "gap",  "linear",    "add",  "concatpool", "dropout"};

static void print_count(size_t n) {
    /* 25557032 -> 25,557,032 */
    char digits[32], out[48];
    int len = snprintf(digits, sizeof digits, "%zu", n), o = 0;
    for (int i = 0; i < len; i++) {
        if (i && (len - i) % 3 == 0) out[o++] = ',';
        out[o++] = digits[i];
    }
    out[o] = 0;
    fputs(out, stdout);
}

int cmd_info(int argc, char **argv) {
    int classes = 1000, size = 224;
    const Flag flags[] = {
        {"--classes", FLAG_INT, &classes, "number of classes (default 1000)"},
        {"--size", FLAG_INT, &size, "input side in pixels (default 224)"},
        {0},
    };
    const char *pos[1];
    int npos;
    cli_parse("info", "MODEL [--classes N] [--size S]", argc, argv, 2, flags, pos, 1, &npos);
    if (npos != 1) {
        int n;
        const ModelEntry *e = model_registry(&n);
        fprintf(stderr, "train info: name a model:\n");
        for (int i = 0; i < n; i++) fprintf(stderr, "  %-12s %s\n", e[i].name, e[i].about);
        return 2;
    }
    char err[512];
    Model *m = model_build(pos[0], classes, err, sizeof err);
    if (!m) {
        fprintf(stderr, "train info: %s\n", err);
        return 2;
    }
    Shape *s = xmalloc((size_t)m->nvalues * sizeof *s);
    if (model_shapes(m, size, size, s, err, sizeof err)) {
        fprintf(stderr, "train info: %s\n", err);
        return 2;
    }
    printf("%s, %d classes, input 3x%dx%d\n", m->arch, classes, size, size);
    printf("%4s  %-10s %-28s %-16s %s\n", "#", "op", "module", "output (CxHxW)", "params");
    for (int i = 0; i < m->nnodes; i++) {
        const Node *n = &m->nodes[i];
        size_t np = 0;
        for (int k = 0; k < n->nparam; k++) np += m->params[n->param + k].count;
        char shape[48];
        snprintf(shape, sizeof shape, "%dx%dx%d", s[n->out].c, s[n->out].h, s[n->out].w);
        printf("%4d  %-10s %-28s %-16s ", i, op_names[n->op], n->name, shape);
        if (np) print_count(np);
        putchar('\n');
    }
    printf("parameters: ");
    print_count(model_param_count(m));
    printf("\nforward: %.3f GFLOPs per image at %dx%d (2 FLOPs per multiply-add, conv and linear layers)\n",
           model_flops(m, size, size) / 1e9, size, size);
    free(s);
    model_free(m);
    return 0;
}
