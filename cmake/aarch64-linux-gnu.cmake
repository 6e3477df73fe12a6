# Cross toolchain for aarch64 Linux (Debian: gcc-aarch64-linux-gnu, libc6-dev-arm64-cross; tests run
# under qemu-user). Used by `make cross-aarch64` / `make test-aarch64`:
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
# Cross compiling turns ES_CORE_ONLY on (no arm64 cJSON/libevent here): the inference core and the
# tests that need only it.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(ES_CROSS_TRIPLE aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${ES_CROSS_TRIPLE}-gcc)
set(ES_CROSS_SYSROOT /usr/${ES_CROSS_TRIPLE})

set(CMAKE_FIND_ROOT_PATH ${ES_CROSS_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# CTest runs the test executables through qemu user-mode emulation (-L: the target's libc and loader).
find_program(ES_QEMU_AARCH64 qemu-aarch64)
if(ES_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${ES_QEMU_AARCH64} -L ${ES_CROSS_SYSROOT})
endif()
