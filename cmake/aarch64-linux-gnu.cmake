# Cross build for AArch64 Linux with Debian's cross compiler
# (gcc-aarch64-linux-gnu) and the arm64 multiarch -dev packages of our
# dependencies (scripts/setup --arm64). Tests run under qemu-aarch64.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
# pkg-config must see the arm64 .pc files only, not the build machine's.
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig)
set(ENV{PKG_CONFIG_PATH} "")
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu /usr/lib/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
# ctest runs each test binary through the emulator. The CPU model comes from
# QEMU_CPU in the environment (qemu's default for user mode is "max": Armv8.6+
# with dotprod and i8mm).
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64-static)
