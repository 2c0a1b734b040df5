/* cmd/commands.h: the subcommands of ./train (one file each). */
#ifndef CNN_COMMANDS_H
#define CNN_COMMANDS_H

int cmd_info(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_smoke(int argc, char **argv);
int cmd_demo_data(int argc, char **argv);
int cmd_bench_loader(int argc, char **argv);
int cmd_show_batch(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_lr_find(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_train(int argc, char **argv); /* argv[1] is the config file */

#endif
