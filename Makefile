# cnntrain build. `make` builds ./train with the CPU backend, plus the CUDA backend when nvcc and
# cuDNN are found (force with CUDA=1 / CUDA=0). `make test` runs every test that needs no GPU;
# `make test-gpu` runs the GPU parity suite (and says it skipped where there is no GPU); `make test`
# runs that suite's self-check (a second cpu backend in place of cuda: tests/test_parity_self.sh).

CC      ?= cc
OPT     ?= -O3 -march=native
CFLAGS  ?= $(OPT) -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -fopenmp -Isrc -Imodels
LDLIBS  += -ljpeg -lm -lpthread
COMMA   := ,
LDFLAGS += -fopenmp
# SAN: extra compile and link flags for the sanitizer and fuzzing builds (set by their targets)
SAN     ?=
CFLAGS  += $(SAN)
LDFLAGS += $(SAN)
BUILD   ?= build
# where the binary goes (the valgrind test builds its own copy)
TRAIN   ?= train

# ---- optional libraries: say what was found and what was skipped ----
# The CUDA toolkit (nvcc, cudart), cuDNN and cuBLAS. Each header folder and library folder can be
# given on its own: a GPU machine whose cuDNN or cuBLAS is a Python wheel (site-packages/nvidia/
# cudnn, nvidia/cu13) passes CUDNN_INC, CUDNN_LIBDIR, CUBLAS_INC, CUBLAS_LIBDIR (scripts/gpu_env.sh
# finds them). A folder with only the versioned library (libcudnn.so.9, as wheels ship it) is
# linked by that file name. Every library folder is also the binary's run path.
CUDA_HOME ?= /usr/local/cuda
NVCC      ?= $(or $(shell command -v nvcc 2>/dev/null),$(wildcard $(CUDA_HOME)/bin/nvcc))
dir_of     = $(patsubst %/,%,$(dir $(abspath $(firstword $(wildcard $(1))))))
CUDNN_INC ?= $(call dir_of,$(CUDA_HOME)/include/cudnn.h /usr/include/cudnn.h /usr/include/x86_64-linux-gnu/cudnn.h)
CUDNN_H   := $(wildcard $(CUDNN_INC)/cudnn.h)
CUDA_LIBDIR   ?= $(call dir_of,$(CUDA_HOME)/lib64/libcudart.so* $(CUDA_HOME)/targets/x86_64-linux/lib/libcudart.so*)
CUDNN_LIBDIR  ?= $(call dir_of,$(CUDNN_INC)/../lib64/libcudnn.so* $(CUDNN_INC)/../lib/libcudnn.so* \
                   $(CUDA_LIBDIR)/libcudnn.so* /usr/lib/x86_64-linux-gnu/libcudnn.so*)
CUBLAS_INC    ?= $(CUDA_HOME)/include
CUBLAS_LIBDIR ?= $(CUDA_LIBDIR)
# -lNAME when DIR has libNAME.so, else -l:libNAME.so.N (the shortest versioned name there)
link_so    = $(if $(wildcard $(2)/lib$(1).so),-l$(1),-l:$(notdir $(firstword $(sort $(wildcard $(2)/lib$(1).so.*)))))
ifeq ($(origin CUDA),undefined)
  CUDA := $(if $(and $(NVCC),$(CUDNN_H)),1,0)
endif
ifeq ($(CUDA),1)
  ifeq ($(NVCC),)
    $(error CUDA=1 but nvcc was not found (looked in PATH and $(CUDA_HOME)/bin))
  endif
  ifeq ($(CUDNN_H),)
    $(error CUDA=1 but cudnn.h was not found (CUDNN_INC=$(CUDNN_INC); looked under $(CUDA_HOME)/include and /usr/include; a cuDNN from a Python wheel: source scripts/gpu_env.sh and make $$GPU_MAKE_ARGS))
  endif
  ifeq ($(wildcard $(CUDNN_LIBDIR)/libcudnn.so*),)
    $(error CUDA=1 but libcudnn.so was not found (CUDNN_LIBDIR=$(CUDNN_LIBDIR)))
  endif
  ifeq ($(wildcard $(CUBLAS_INC)/cublas_v2.h),)
    $(error CUDA=1 but cublas_v2.h was not found (CUBLAS_INC=$(CUBLAS_INC)))
  endif
  ifeq ($(wildcard $(CUBLAS_LIBDIR)/libcublas.so*),)
    $(error CUDA=1 but libcublas.so was not found (CUBLAS_LIBDIR=$(CUBLAS_LIBDIR)))
  endif
endif

# libjpeg(-turbo): Debian's libjpeg62-turbo-dev by default; JPEG_INC / JPEG_LIBDIR for another copy
# (a GPU machine without the -dev package gets Debian's, carried: scripts/gpu_env.sh). JPEG=0
# builds without it: everything runs but JPEG decoding and writing, which fail saying why.
JPEG_INC    ?=
JPEG_LIBDIR ?=
JPEG        ?= 1
ifeq ($(JPEG),1)
  ifneq ($(JPEG_INC),)
    CFLAGS += $(addprefix -I,$(JPEG_INC))
  endif
  ifneq ($(JPEG_LIBDIR),)
    LDLIBS := $(addprefix -L,$(JPEG_LIBDIR)) $(addprefix -Wl$(COMMA)-rpath$(COMMA),$(JPEG_LIBDIR)) $(LDLIBS)
  endif
else
  CFLAGS += -DCNN_NO_JPEG
  LDLIBS := $(filter-out -ljpeg,$(LDLIBS))
endif

HASH := \#
# libpng (Debian: libpng-dev) and libwebp (libwebp-dev): found by a test compile unless PNG= / WEBP=
# is given. PNG=0 / WEBP=0 builds without: those files are refused as bad images, saying which
# package to install (JPEG and the rest work).
ifeq ($(origin PNG),undefined)
  PNG := $(shell printf '$(HASH)include <png.h>\nint main(void){return png_access_version_number() == 0;}\n' | $(CC) -x c - -o /dev/null -lpng 2>/dev/null && echo 1 || echo 0)
endif
ifeq ($(origin WEBP),undefined)
  WEBP := $(shell printf '$(HASH)include <webp/decode.h>\nint main(void){return WebPGetDecoderVersion() == 0;}\n' | $(CC) -x c - -o /dev/null -lwebp 2>/dev/null && echo 1 || echo 0)
endif
ifeq ($(PNG),1)
  LDLIBS += -lpng
else
  CFLAGS += -DCNN_NO_PNG
endif
ifeq ($(WEBP),1)
  LDLIBS += -lwebp
else
  CFLAGS += -DCNN_NO_WEBP
endif
ifeq ($(origin BLAS),undefined)
  BLAS := $(shell printf '$(HASH)include <cblas.h>\nint main(void){float a=1,b=1,c=0;cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasNoTrans,1,1,1,1.f,&a,1,&b,1,0.f,&c,1);return c!=1;}\n' | $(CC) -x c - -o /dev/null -lopenblas 2>/dev/null && echo openblas || echo builtin)
endif
# Open MPI (Debian: libopenmpi-dev, openmpi-bin) for data-parallel training (src/dist/): its flags
# from `mpicc --showme`, else pkg-config's ompi-c, checked by a test compile. MPI=0 builds without
# it: one process, and `mpirun -np N ./train` refuses to start (dist.c says why).
MPICC ?= mpicc
MPI_CFLAGS ?= $(or $(shell $(MPICC) --showme:compile 2>/dev/null),$(shell pkg-config --cflags ompi-c 2>/dev/null))
MPI_LIBS   ?= $(or $(shell $(MPICC) --showme:link 2>/dev/null),$(shell pkg-config --libs ompi-c 2>/dev/null))
ifeq ($(origin MPI),undefined)
  MPI := $(shell printf '$(HASH)include <mpi.h>\nint main(void){int v,s;return MPI_Get_version(&v,&s);}\n' | $(CC) -x c - -o /dev/null $(MPI_CFLAGS) $(MPI_LIBS) 2>/dev/null && echo 1 || echo 0)
endif
ifeq ($(MPI),1)
  CFLAGS += -DCNN_HAVE_MPI $(MPI_CFLAGS)
  LDLIBS += $(MPI_LIBS)
endif
HAVE_CMOCKA := $(shell printf '$(HASH)include <stdarg.h>\n$(HASH)include <stddef.h>\n$(HASH)include <stdint.h>\n$(HASH)include <setjmp.h>\n$(HASH)include <cmocka.h>\nint main(void){return 0;}\n' | $(CC) -x c - -o /dev/null -lcmocka 2>/dev/null && echo 1 || echo 0)

ifeq ($(BLAS),openblas)
  CFLAGS += -DHAVE_OPENBLAS
  LDLIBS += -lopenblas
endif

# ---- sources ----
LIB_SRC  := $(filter-out src/cmd/main.c,$(wildcard src/*/*.c)) $(wildcard models/*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CUDA_CU  := $(wildcard cuda/*.cu)
CUDA_OBJ :=
# Kernels for A100 (sm_80) and H100/H200 (sm_90), plus sm_90 PTX that newer GPUs JIT-compile.
NVFLAGS  ?= -O3 -std=c++17 -Xcompiler -Wall,-Wextra -Werror all-warnings -Isrc -Imodels \
            -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
            -gencode arch=compute_90,code=compute_90
ifeq ($(CUDA),1)
  CUDA_INCS    := $(CUDA_HOME)/include $(filter-out $(CUDA_HOME)/include,$(CUDNN_INC) $(CUBLAS_INC))
  CUDA_LIBDIRS := $(sort $(CUDA_LIBDIR) $(CUDNN_LIBDIR) $(CUBLAS_LIBDIR))
  NVINC    := $(addprefix -I,$(filter-out $(CUDA_HOME)/include,$(CUDNN_INC) $(CUBLAS_INC)))
  CFLAGS   += -DHAVE_CUDA $(addprefix -I,$(CUDA_INCS))
  CUDA_OBJ := $(CUDA_CU:%.cu=$(BUILD)/%.o)
  LDLIBS   += $(foreach d,$(CUDA_LIBDIRS),-L$(d) -Wl,-rpath,$(d)) $(call link_so,cudnn,$(CUDNN_LIBDIR)) \
              $(call link_so,cublas,$(CUBLAS_LIBDIR)) $(call link_so,cudart,$(CUDA_LIBDIR)) -lstdc++
endif
# NCCL (in the CUDA toolkit, or NCCL_INC / NCCL_LIBDIR for a wheel's nvidia/nccl): the GPUs' all-reduce
# for data-parallel training; with CUDA only. NCCL=0 builds without it.
NCCL_INC    ?= $(CUDA_HOME)/include
NCCL_LIBDIR ?= $(CUDA_LIBDIR)
ifeq ($(origin NCCL),undefined)
  NCCL := $(if $(and $(filter 1,$(CUDA)),$(wildcard $(NCCL_INC)/nccl.h),$(wildcard $(NCCL_LIBDIR)/libnccl.so*)),1,0)
endif
ifeq ($(NCCL),1)
  CFLAGS += -DCNN_HAVE_NCCL -I$(NCCL_INC)
  NVFLAGS += -DCNN_HAVE_NCCL
  NVINC += $(if $(filter $(CUDA_HOME)/include,$(NCCL_INC)),,-I$(NCCL_INC))
  LDLIBS += $(if $(filter $(NCCL_LIBDIR),$(CUDA_LIBDIRS)),,-L$(NCCL_LIBDIR) -Wl,-rpath,$(NCCL_LIBDIR)) $(call link_so,nccl,$(NCCL_LIBDIR))
endif

TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

.PHONY: all test test-gpu test-gpu-sanitize bench clean config test-sanitize check-static fuzz
all: config $(TRAIN)

config:
	@echo "cnntrain build: cc=$(CC) blas=$(BLAS) cuda=$(CUDA) cmocka=$(HAVE_CMOCKA) png=$(PNG) webp=$(WEBP) mpi=$(MPI) nccl=$(NCCL)"
	@[ "$(MPI)" = 1 ] || echo "  MPI=0: built without MPI: one process only (apt-get install libopenmpi-dev openmpi-bin)"
	@[ "$(BLAS)" = openblas ] || echo "  OpenBLAS not found: using the built-in GEMM (slower; apt-get install libopenblas-dev)"
	@[ "$(CUDA)" = 1 ] && echo "  CUDA backend: nvcc=$(NVCC) cudnn=$(CUDNN_H) libs=$(CUDA_LIBDIRS)" || echo "  CUDA backend skipped (nvcc or cudnn.h not found, or CUDA=0)"
	@[ "$(JPEG)" = 1 ] || echo "  JPEG=0: built without libjpeg: JPEG decoding and writing fail, saying so (apt-get install libjpeg62-turbo-dev)"
	@[ "$(PNG)" = 1 ] || echo "  PNG=0: built without libpng: PNG files are skipped as bad images, saying so (apt-get install libpng-dev)"
	@[ "$(WEBP)" = 1 ] || echo "  WEBP=0: built without libwebp: WebP files are skipped as bad images, saying so (apt-get install libwebp-dev)"

$(TRAIN): $(BUILD)/src/cmd/main.o $(BUILD)/libcnn.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/libcnn.a: $(LIB_OBJ) $(CUDA_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/%.o: %.c $(wildcard src/*/*.h models/*.h) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/cuda/%.o: cuda/%.cu $(wildcard src/*/*.h) $(wildcard cuda/*.h) Makefile
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) $(NVINC) -c -o $@ $<

# tests/test_dist.sh's programs: run under mpirun, no cmocka. dist_ops_nompi: the same program on
# the single-process stand-ins of a build without MPI (MPI=0), which CI would not build otherwise
$(BUILD)/tests/dist/dist_ops_nompi: tests/dist/dist_ops.c src/dist/dist.c src/base/util.c src/dist/dist.h src/base/util.h
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -DCNN_HAVE_MPI -DCNN_HAVE_NCCL $(MPI_CFLAGS),$(CFLAGS)) -o $@ tests/dist/dist_ops.c src/dist/dist.c src/base/util.c -lm -lpthread
$(BUILD)/tests/dist/%: tests/dist/%.c $(BUILD)/libcnn.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests $(LDFLAGS) -o $@ $< $(BUILD)/libcnn.a $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(BUILD)/libcnn.a $(wildcard tests/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests $(LDFLAGS) -o $@ $< $(BUILD)/libcnn.a -lcmocka $(LDLIBS)

test: config train
ifeq ($(HAVE_CMOCKA),0)
	$(error cmocka not found: apt-get install libcmocka-dev (or run .ci/run))
endif
	@$(MAKE) -s --no-print-directory $(TEST_BIN) $(BUILD)/tests/gpu/gpu_parity $(BUILD)/tests/dist/dist_ops $(BUILD)/tests/dist/dist_ops_nompi
	@# every phase runs whatever the one before it did; tests/summary.sh's one line ends the output
	@summary=$(abspath $(BUILD))/test-summary; rm -f $$summary; export TEST_SUMMARY=$$summary; \
	  BUILD=$(BUILD) bash tests/run_all.sh $(TEST_BIN) tests/test_parity_self.sh tests/test_dist.sh tests/test_valgrind.sh \
	    tests/test_gpu_scripts.sh tests/test_reference_scripts.sh tests/test_readme.sh; \
	  $(MAKE) --no-print-directory test-sanitize; \
	  $(MAKE) --no-print-directory fuzz; \
	  bash tests/summary.sh $$summary unit-programs sanitized-runs fuzz-targets

# The fuzz targets' corpora and crash inputs also run as a unit test (tests/test_fuzz_inputs.c).
$(BUILD)/tests/test_fuzz_inputs: $(wildcard tests/fuzz/*.c tests/fuzz/*.h)

# ---- sanitizers: the unit tests again with AddressSanitizer + UBSan (gcc or clang), CPU only.
# -O2, not -O1: the tests run about 4x faster, with the same checks. tests/run_sanitized.sh says
# which programs run.
SAN_DIR   := $(BUILD)/asan
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
test-sanitize:
	@echo "test-sanitize: the unit tests built with $(SAN_FLAGS) in $(SAN_DIR)"
	@$(MAKE) --no-print-directory -s BUILD=$(SAN_DIR) TRAIN=$(SAN_DIR)/train CUDA=0 OPT=-O2 SAN="$(SAN_FLAGS)" \
	    $(SAN_DIR)/train $(TEST_SRC:tests/%.c=$(SAN_DIR)/tests/%)
	@bash tests/run_sanitized.sh $(SAN_DIR)

# ---- static analysis: cppcheck, then clang-tidy per file (checks in .clang-tidy), over src/ and
# models/. Each clean file leaves a stamp, so a second run only looks at what changed.
CPPCHECK_FLAGS := --quiet --error-exitcode=1 --std=c11 --enable=warning,performance,portability \
                  --inline-suppr --suppressions-list=.cppcheck-suppressions -D_GNU_SOURCE -D__GNUC__ -Isrc -Imodels
TIDY_STAMPS := $(patsubst %.c,$(BUILD)/tidy/%.ok,$(LIB_SRC) src/cmd/main.c)
check-static: $(TIDY_STAMPS)
	cppcheck $(CPPCHECK_FLAGS) src models
	@echo "check-static: cppcheck and clang-tidy found nothing"

$(BUILD)/tidy/%.ok: %.c .clang-tidy $(wildcard src/*/*.h models/*.h)
	@mkdir -p $(dir $@)
	clang-tidy --quiet $< -- -std=c11 -D_GNU_SOURCE -Isrc -Imodels $(if $(filter 1,$(MPI)),-DCNN_HAVE_MPI $(MPI_CFLAGS))
	@touch $@

# ---- fuzzing: libFuzzer targets in tests/fuzz/, each run FUZZ_SECONDS from its seed corpus.
# Needs clang with libFuzzer (Debian: clang libclang-rt-dev); skipped, saying so, without it.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 20
FUZZ_DIR     := $(BUILD)/fuzz
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,$(FUZZ_DIR)/%,$(wildcard tests/fuzz/fuzz_*.c))
fuzz:
	@if printf 'int LLVMFuzzerTestOneInput(const char *d, long n) { return 0; }\n' | \
	    $(FUZZ_CC) -x c - -fsanitize=fuzzer -o /dev/null 2>/dev/null; then \
	    $(MAKE) --no-print-directory -s BUILD=$(FUZZ_DIR) CC=$(FUZZ_CC) CUDA=0 OPT=-O1 \
	        SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -Wno-pass-failed" \
	        $(FUZZ_TARGETS) && bash tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS); \
	else echo "fuzz: skipped: $(FUZZ_CC) with libFuzzer not found (apt-get install clang libclang-rt-dev)"; \
	    if [ -n "$$TEST_SUMMARY" ]; then echo "fuzz-targets 0 0" >>"$$TEST_SUMMARY"; fi; fi

$(BUILD)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(BUILD)/libcnn.a
	$(CC) $(CFLAGS) -Itests/fuzz -fsanitize=fuzzer $(LDFLAGS) -o $@ $< $(BUILD)/libcnn.a $(LDLIBS)

# GPU suites: every tests/gpu/*.c is one program; no cmocka, no OpenBLAS needed. Each skips (exit 0,
# saying so) where no GPU is usable. tests/gpu/run.sh runs them all whatever fails, one log each in
# GPU_LOG_DIR, and reports a combined status. GPU_SANITIZE=1 runs them under compute-sanitizer too.
GPU_TESTS := $(patsubst %.c,$(BUILD)/%,$(wildcard tests/gpu/*.c))
GPU_LOG_DIR ?= $(BUILD)/gpu-logs
COMPUTE_SANITIZER ?= $(or $(shell command -v compute-sanitizer 2>/dev/null),$(firstword $(wildcard $(CUDA_HOME)/bin/compute-sanitizer $(CUDA_HOME)/compute-sanitizer/compute-sanitizer)))
GPU_SANITIZE ?= 0
test-gpu:
	@$(MAKE) --no-print-directory CUDA=1 train $(GPU_TESTS)
	@rc=0; bash tests/gpu/run.sh $(GPU_LOG_DIR) $(GPU_TESTS) || rc=1; \
	  if [ "$(GPU_SANITIZE)" = 1 ]; then $(MAKE) --no-print-directory test-gpu-sanitize || rc=1; fi; exit $$rc

# the suites in quick mode (CNNTRAIN_GPU_QUICK=1) under compute-sanitizer's memcheck. API errors
# that cuDNN and cuBLAS raise and handle inside themselves are not ours: not reported.
test-gpu-sanitize:
	@$(MAKE) --no-print-directory CUDA=1 $(GPU_TESTS)
	@[ -n "$(COMPUTE_SANITIZER)" ] || { echo "test-gpu-sanitize: compute-sanitizer not found"; exit 1; }
	@CNNTRAIN_GPU_QUICK=1 GPU_WRAP="$(COMPUTE_SANITIZER) --error-exitcode 99 --tool memcheck --report-api-errors no" \
	  bash tests/gpu/run.sh $(GPU_LOG_DIR)/sanitizer $(GPU_TESTS)

$(BUILD)/tests/gpu/%: tests/gpu/%.c tests/gpu/suite.h tests/op_cases.h $(BUILD)/libcnn.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests $(LDFLAGS) -o $@ $< $(BUILD)/libcnn.a $(LDLIBS)

clean:
	rm -rf $(BUILD) train
