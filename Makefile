# SPDX-License-Identifier: LGPL-2.1-or-later
# portres: port reservations for Linux, enforced by cgroup eBPF.
#
#   make            build BPF object + skeleton, libportres, portresd, portresctl, portres-oci-hook
#   make run        install what running needs, build, run portresd in the foreground
#   make check      install what the tests need, build, run every test (real kernel, real BPF)
#   make bench      run the benchmarks and print a table
#   make fuzz       build the libFuzzer targets
#   make install    DESTDIR= PREFIX= (default /usr/local)
#   make deb        the Debian package, build/portres_VERSION_ARCH.deb (scripts/deb/)
#
# run and check need root for some steps: as root they run as they are,
# otherwise those steps go through sudo (asked for once).
#
# Files are found by folder: user/lib/*.c is libportres, user/common/*.c the
# code the agent, CLI and tests share, user/portresd/*.c and user/portresctl/*.c
# the programs, tests/<kind>/*.c one Criterion binary per kind.

.DELETE_ON_ERROR:
.SUFFIXES:

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SBINDIR    ?= $(PREFIX)/sbin
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR     ?= $(PREFIX)/share/man
DATADIR    ?= $(PREFIX)/share
LIBEXECDIR ?= $(PREFIX)/libexec
HOOKSDIR   ?= $(DATADIR)/containers/oci/hooks.d
DESTDIR    ?=

OUT        := build
CC         ?= cc
CLANG      ?= clang
BPFTOOL    ?= bpftool
VERSION    := 0.1.0
SOVERSION  := 0

ifeq ($(V),1)
Q :=
msg =
else
Q := @
msg = @printf '  %-8s %s\n' "$(1)" "$(2)";
endif

ARCH_INC   := $(shell $(CC) -print-multiarch 2>/dev/null)
WARN       := -Wall -Wextra -Werror -Wno-unused-parameter
CPPFLAGS   += -D_GNU_SOURCE -Iinclude -Iuser/common -Iuser/lib -I$(OUT)
CFLAGS     ?= -O2 -g
CFLAGS     += $(WARN) -fPIC
BPF_CFLAGS := -g -O2 --target=bpf -mcpu=v3 -Wall -Werror -Iinclude -I/usr/include/$(ARCH_INC)
LIBS_BPF   := $(shell pkg-config --libs libbpf 2>/dev/null || echo -lbpf -lelf -lz)
LIBS_ALL   := $(LIBS_BPF) -ljansson -lmnl -lsqlite3 -lpthread
MHD_LIBS   := $(shell pkg-config --libs libmicrohttpd 2>/dev/null)

BPF_SRC    := bpf/portres.bpf.c
SKEL       := $(OUT)/portres.skel.h
LIB_SRC    := $(wildcard user/lib/*.c)
COMMON_SRC := $(wildcard user/common/*.c)
AGENT_SRC  := $(wildcard user/portresd/*.c)
CTL_SRC    := $(wildcard user/portresctl/*.c)
HOOK_SRC   := $(wildcard user/portres-oci-hook/*.c)
HEADERS    := $(wildcard include/*.h user/*/*.h)

LIB_OBJ    := $(patsubst user/lib/%.c,$(OUT)/obj/lib/%.o,$(LIB_SRC))
COMMON_OBJ := $(patsubst user/common/%.c,$(OUT)/obj/common/%.o,$(COMMON_SRC))
AGENT_OBJ  := $(patsubst user/portresd/%.c,$(OUT)/obj/portresd/%.o,$(AGENT_SRC))
CTL_OBJ    := $(patsubst user/portresctl/%.c,$(OUT)/obj/portresctl/%.o,$(CTL_SRC))
HOOK_OBJ   := $(patsubst user/portres-oci-hook/%.c,$(OUT)/obj/portres-oci-hook/%.o,$(HOOK_SRC))

LIB_SO     := $(OUT)/libportres.so.$(VERSION)
LIB_A      := $(OUT)/libportres.a
COMMON_A   := $(OUT)/libportres_common.a
PROGS      := $(if $(AGENT_SRC),$(OUT)/portresd) $(if $(CTL_SRC),$(OUT)/portresctl) \
	      $(if $(HOOK_SRC),$(OUT)/portres-oci-hook)

TEST_KINDS := $(notdir $(patsubst %/,%,$(sort $(dir $(wildcard tests/unit/*.c tests/kernel/*.c tests/e2e/*.c)))))
TEST_BINS  := $(addprefix $(OUT)/test_,$(TEST_KINDS))
FUZZ_SRC   := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS  := $(patsubst tests/fuzz/%.c,$(OUT)/%,$(FUZZ_SRC))

all: $(LIB_SO) $(LIB_A) $(PROGS)

# --- BPF: object -> skeleton -------------------------------------------------
$(OUT)/%.bpf.o: bpf/%.bpf.c include/portres_abi.h | $(OUT)
	$(call msg,BPF,$@)
	$(Q)$(CLANG) $(BPF_CFLAGS) -c $< -o $@.tmp
	$(Q)$(BPFTOOL) gen object $@ $@.tmp && rm -f $@.tmp

$(OUT)/%.skel.h: $(OUT)/%.bpf.o
	$(call msg,SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< name $(subst .skel.h,,$(notdir $@))_bpf > $@

# --- user space ----------------------------------------------------------------
$(OUT)/obj/lib/%.o: user/lib/%.c $(HEADERS) | $(OUT)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D) && $(CC) $(CPPFLAGS) $(CFLAGS) -fvisibility=hidden -c $< -o $@

$(OUT)/obj/common/%.o: user/common/%.c $(HEADERS) $(SKEL) | $(OUT)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D) && $(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(OUT)/obj/portresd/%.o: user/portresd/%.c $(HEADERS) $(SKEL) | $(OUT)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D) && $(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(OUT)/obj/portresctl/%.o: user/portresctl/%.c $(HEADERS) $(SKEL) | $(OUT)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D) && $(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(OUT)/obj/portres-oci-hook/%.o: user/portres-oci-hook/%.c $(HEADERS) $(SKEL) | $(OUT)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D) && $(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

# -z nodelete: a thread's kept connection is closed by a pthread key's
# destructor in the library; once loaded it stays, so dlclose() cannot leave
# that destructor pointing at unmapped code.
$(LIB_SO): $(LIB_OBJ) user/lib/libportres.map
	$(call msg,LD,$@)
	$(Q)$(CC) -shared -Wl,-soname,libportres.so.$(SOVERSION) -Wl,-z,nodelete \
		-Wl,--version-script=user/lib/libportres.map -o $@ $(LIB_OBJ) -ljansson
	$(Q)ln -sf $(notdir $@) $(OUT)/libportres.so.$(SOVERSION)
	$(Q)ln -sf $(notdir $@) $(OUT)/libportres.so

$(LIB_A): $(LIB_OBJ)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(COMMON_A): $(COMMON_OBJ)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(OUT)/portresd: $(AGENT_OBJ) $(COMMON_A) $(LIB_A)
	$(call msg,LD,$@)
	$(Q)$(CC) $(CFLAGS) -o $@ $^ $(LIBS_ALL) $(MHD_LIBS)

$(OUT)/portresctl: $(CTL_OBJ) $(COMMON_A) $(LIB_A)
	$(call msg,LD,$@)
	$(Q)$(CC) $(CFLAGS) -o $@ $^ $(LIBS_ALL)

# Static: the Kubernetes DaemonSet copies the hook onto nodes that may lack its libraries.
$(OUT)/portres-oci-hook: $(HOOK_OBJ) $(COMMON_A) $(LIB_A)
	$(call msg,LD,$@)
	$(Q)$(CC) $(CFLAGS) -static -o $@ $^ -ljansson

$(OUT):
	$(Q)mkdir -p $@

# --- tests -------------------------------------------------------------------
# One Criterion binary per folder of tests/; tests/<kind>/*.h are its helpers,
# tests/common/ those every kind shares (real users for unprivileged cases).
TEST_COMMON := $(wildcard tests/common/*.c tests/common/*.h)
.SECONDEXPANSION:
# The agent's store (user/portresd/store.c) is tested on its own too.
STORE_OBJ  := $(OUT)/obj/portresd/store.o

$(OUT)/test_%: $$(wildcard tests/$$*/*.c tests/$$*/*.h) $(TEST_COMMON) $(COMMON_A) $(LIB_A) $(SKEL) $(OUT)/scan.skel.h $(PROGS)
	$(call msg,TEST,$@)
	$(Q)$(CC) $(CPPFLAGS) -Iuser/portresd -Itests/$* -Itests/common $(CFLAGS) -o $@ $(filter %.c,$^) $(STORE_OBJ) \
		$(COMMON_A) $(LIB_A) -lcriterion $(LIBS_ALL) $(MHD_LIBS)

$(OUT)/bench: tests/bench/bench.c tests/bench/ctlbench.c tests/bench/bench.h $(COMMON_A) $(LIB_A) $(SKEL) $(OUT)/scan.skel.h
	$(call msg,LD,$@)
	$(Q)$(CC) $(CPPFLAGS) -Itests/bench $(CFLAGS) -o $@ $(filter %.c,$^) $(COMMON_A) $(LIB_A) $(LIBS_ALL)

$(OUT)/scan.bpf.o: tests/bench/scan.bpf.c | $(OUT)
	$(call msg,BPF,$@)
	$(Q)$(CLANG) $(BPF_CFLAGS) -c $< -o $@.tmp
	$(Q)$(BPFTOOL) gen object $@ $@.tmp && rm -f $@.tmp

$(OUT)/fuzz_%: tests/fuzz/fuzz_%.c $(COMMON_SRC) user/portresd/store.c $(HEADERS) $(SKEL)
	$(call msg,FUZZ,$@)
	$(Q)$(CLANG) $(CPPFLAGS) -Iuser/portresd -g -O1 -fsanitize=fuzzer,address,undefined -o $@ $< \
		$(filter-out user/common/loader.c,$(COMMON_SRC)) user/portresd/store.c $(LIBS_ALL)

tests: $(TEST_BINS)
fuzz: $(FUZZ_BINS)

# Root's steps: as they are for root, else through sudo (with the tests' settings).
AS_ROOT = $(if $(filter 0,$(shell id -u)),,$(if $(shell command -v sudo),sudo --preserve-env=CI$(,)PORTRES_FUZZ_SECONDS$(,)PORTRES_TEST_JOBS,$(error make $@ needs root: run it as root, or install sudo)))
, := ,

# `make check` installs what is missing (Debian), builds, and runs every test:
# Criterion binaries, shell tests (tests/*.sh), then each fuzz target briefly.
check:
	$(Q)$(AS_ROOT) scripts/install-deps.sh test
	$(Q)$(MAKE) --no-print-directory all tests fuzz
	$(Q)$(AS_ROOT) scripts/run-tests.sh $(TEST_BINS) $(wildcard tests/*.sh) -- $(FUZZ_BINS)

# `make run`: install what is missing to build and run, build, run the agent in the foreground.
run:
	$(Q)$(AS_ROOT) scripts/install-deps.sh run
	$(Q)$(MAKE) --no-print-directory all
	exec $(AS_ROOT) $(OUT)/portresd --foreground $(ARGS)

# Everything package-specific is in scripts/deb/.
deb: all
	$(call msg,DEB,$(OUT)/portres_$(VERSION)_*.deb)
	$(Q)scripts/deb/build.sh $(VERSION) $(OUT) >/dev/null

bench: all $(OUT)/bench
	$(Q)PORTRESD_BIN=$(OUT)/portresd $(OUT)/bench

# --- install -----------------------------------------------------------------
# `man portres_acquire` and the others open portres(3).
MAN3_LINKS := portres_acquire portres_associate portres_release portres_create_persistent \
	      portres_lookup_persistent portres_delete_persistent portres_create_persistent_ns \
	      portres_lookup_persistent_ns portres_delete_persistent_ns

install: all
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR)
	install -m 0644 include/portres.h $(DESTDIR)$(INCLUDEDIR)/portres.h
	install -m 0755 $(LIB_SO) $(DESTDIR)$(LIBDIR)/
	ln -sf libportres.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libportres.so.$(SOVERSION)
	ln -sf libportres.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libportres.so
	install -m 0644 $(LIB_A) $(DESTDIR)$(LIBDIR)/
	sed -e 's|@PREFIX@|$(PREFIX)|; s|@LIBDIR@|$(LIBDIR)|; s|@INCLUDEDIR@|$(INCLUDEDIR)|; s|@VERSION@|$(VERSION)|' \
		user/lib/libportres.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/libportres.pc
	$(if $(AGENT_SRC),install -m 0755 $(OUT)/portresd $(DESTDIR)$(SBINDIR)/portresd)
	$(if $(CTL_SRC),install -m 0755 $(OUT)/portresctl $(DESTDIR)$(BINDIR)/portresctl)
	$(foreach m,$(wildcard scripts/man/*.[0-9]),install -D -m 0644 $(m) $(DESTDIR)$(MANDIR)/man$(subst .,,$(suffix $(m)))/$(notdir $(m));)
	$(foreach f,$(MAN3_LINKS),printf '.so man3/portres.3\n' > $(DESTDIR)$(MANDIR)/man3/$(f).3;)
	$(if $(wildcard scripts/portresctl.bash-completion),install -D -m 0644 scripts/portresctl.bash-completion $(DESTDIR)$(DATADIR)/bash-completion/completions/portresctl)
	$(if $(HOOK_SRC),install -D -m 0755 $(OUT)/portres-oci-hook $(DESTDIR)$(LIBEXECDIR)/portres/portres-oci-hook)
	$(if $(HOOK_SRC),install -d $(DESTDIR)$(HOOKSDIR) && sed -e 's|@LIBEXECDIR@|$(LIBEXECDIR)|' \
		scripts/oci/portres.json.in > $(DESTDIR)$(HOOKSDIR)/portres.json)

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/portres.h $(DESTDIR)$(LIBDIR)/libportres.so* \
	      $(DESTDIR)$(LIBDIR)/libportres.a $(DESTDIR)$(LIBDIR)/pkgconfig/libportres.pc \
	      $(DESTDIR)$(SBINDIR)/portresd $(DESTDIR)$(BINDIR)/portresctl \
	      $(DESTDIR)$(MANDIR)/man8/portresd.8 $(DESTDIR)$(MANDIR)/man8/portresctl.8 \
	      $(DESTDIR)$(MANDIR)/man3/portres.3 $(foreach f,$(MAN3_LINKS),$(DESTDIR)$(MANDIR)/man3/$(f).3) \
	      $(DESTDIR)$(DATADIR)/bash-completion/completions/portresctl \
	      $(DESTDIR)$(LIBEXECDIR)/portres/portres-oci-hook $(DESTDIR)$(HOOKSDIR)/portres.json
	-rmdir $(DESTDIR)$(LIBEXECDIR)/portres 2>/dev/null

clean:
	rm -rf $(OUT)

.PHONY: all tests fuzz check run bench install uninstall deb clean
.SECONDARY:
