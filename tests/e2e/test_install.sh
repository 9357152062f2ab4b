#!/usr/bin/env bash
# libedgellm as other programs use it: `cmake --install` into a staging
# prefix; there, pkg-config finds it, every installed header compiles on its
# own with only installed headers, both examples build against the installed
# library alone (pkg-config, and CMake's find_package) and reproduce
# `edgellm run` (locally, and as the device of a split run against a worker),
# and the installed edgellm prints the project's version.
source "$(dirname "$0")/lib.sh"
BIN=$MODELS/aidreams260K.bin
TOK=$MODELS/tok512.bin
build=$(dirname "$EDGELLM")
stage=$T/stage

cmake --install "$build" --prefix "$stage" >"$T/install.log" 2>&1 || { fail "cmake --install: $(tail -3 "$T/install.log")"; finish; }
[ -f "$stage/lib/libedgellm.a" ] && [ -f "$stage/lib/libedgellm.so" ] && pass || fail "static and shared libraries"
version=$(sed -n 's/^project(edgellm VERSION \([0-9.]*\).*/\1/p' "$EL_SRC/CMakeLists.txt")
expect_eq "installed edgellm --version" "$("$stage/bin/edgellm" --version)" "edgellm $version"
export PKG_CONFIG_PATH=$stage/lib/pkgconfig
expect_eq "pkg-config --modversion edgellm" "$(pkg-config --modversion edgellm)" "$version"
flags=$(pkg-config --cflags --libs edgellm) && pass || fail "pkg-config --cflags --libs edgellm"
# only the public headers are installed, and each stands alone
ls "$stage/include/edgellm" >"$T/headers"
for h in hf.h json.h kernels.h plan.h quant.h safetensors.h serve.h splittrain.h train.h; do
  grep -qx "$h" "$T/headers" && fail "internal header $h is installed" || pass
done
for h in "$stage"/include/edgellm/*.h; do
  # the source tree is not on the include path: only installed headers resolve
  echo "#include <edgellm/$(basename "$h")>" | cc -std=c11 -Wall -Wextra -Werror -fsyntax-only -I"$stage/include" \
    -x c - 2>"$T/h.err" && pass ||
    fail "$(basename "$h") does not compile alone: $(head -3 "$T/h.err")"
done
echo '#include <edgellm/edgellm.h>
#include <stdio.h>
#include <string.h>
int main(void) { printf("%s %d\n", el_version(), strcmp(el_version(), EL_VERSION_STRING)); return 0; }' >"$T/v.c"
cc -std=c11 "$T/v.c" $flags -Wl,-rpath,"$stage/lib" -o "$T/v" && expect_eq "el_version() and EL_VERSION_STRING" "$("$T/v")" "$version 0"

# the examples, against the installed library alone
for ex in generate device; do
  cc -std=c11 -Wall -Wextra -Werror "$EL_SRC/examples/$ex.c" $flags -Wl,-rpath,"$stage/lib" -o "$T/$ex" 2>"$T/cc.err" &&
    pass || fail "examples/$ex.c: $(head -5 "$T/cc.err")"
done
ldd "$T/generate" | grepq "libedgellm.so.0 => $stage/lib/" && pass || fail "generate is not linked to the installed library"
want=$("$EDGELLM" run -m "$BIN" -z "$TOK" -p "The dream" -n 60 --temp 0 2>/dev/null)
got=$("$T/generate" "$BIN" "$TOK" "The dream" 60 0 2>"$T/gen.err")
expect_eq "examples/generate.c greedy text" "$got" "$want"
port=$(free_port)
start_worker "$T/w.log" -m "$BIN" --layers 2:4 --listen "127.0.0.1:$port" --insecure -t 1 || fail "worker"
got=$("$T/device" "$BIN" "$TOK" "127.0.0.1:$port" 2 "The dream" 60 2>"$T/dev.err")
expect_eq "examples/device.c against a worker" "$got" "$want"
grep -q "sent [1-9][0-9]* B, received [1-9][0-9]* B" "$T/dev.err" && pass || fail "device stats: $(cat "$T/dev.err")"

# and with CMake's find_package
cmake -S "$EL_SRC/examples" -B "$T/exb" -DCMAKE_PREFIX_PATH="$stage" -DCMAKE_BUILD_TYPE=Release >"$T/exb.log" 2>&1 &&
  cmake --build "$T/exb" >>"$T/exb.log" 2>&1 && pass || fail "find_package(edgellm) build: $(tail -5 "$T/exb.log")"
got=$("$T/exb/generate" "$BIN" "$TOK" "The dream" 60 0 2>/dev/null)
expect_eq "generate built with find_package(edgellm)" "$got" "$want"
finish
