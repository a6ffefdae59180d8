#!/usr/bin/env bash
# Install everything s2mmu needs on a fresh Debian 12 machine (QEMU and the aarch64
# binutils from Debian; Linux 6.12's and 6.1's source, a C compiler, awk and xz for the
# kernel oracle, `s2mmu kernel`; Debian's arm64 architecture, the aarch64 cross compiler
# and its static libc for real KVM, `s2mmu real`, whose tests fetch Debian's arm64 kernel
# package with apt-get download into ~/.cache/s2mmu/real; the package and its test tools
# from PyPI), then run the checks and the whole test suite. .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v qemu-system-aarch64 >/dev/null || need_apt+=(qemu-system-arm)
command -v aarch64-linux-gnu-as >/dev/null || need_apt+=(binutils-aarch64-linux-gnu)
[ -f /usr/src/linux-source-6.12.tar.xz ] || need_apt+=(linux-source-6.12)
[ -f /usr/src/linux-source-6.1.tar.xz ] || need_apt+=(linux-source-6.1)
command -v awk >/dev/null || need_apt+=(mawk)
command -v gcc >/dev/null || need_apt+=(gcc)
[ -f /usr/include/stdio.h ] || need_apt+=(libc6-dev)
command -v xz >/dev/null || need_apt+=(xz-utils)
command -v aarch64-linux-gnu-gcc >/dev/null || need_apt+=(gcc-aarch64-linux-gnu)
[ -f /usr/aarch64-linux-gnu/lib/libc.a ] || need_apt+=(libc6-dev-arm64-cross)
command -v cpio >/dev/null || need_apt+=(cpio)
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
new_arch=0
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  $SUDO dpkg --add-architecture arm64  # real KVM boots Debian's arm64 kernel package
  new_arch=1
fi
if [ ${#need_apt[@]} -gt 0 ] || [ $new_arch -eq 1 ]; then
  $SUDO apt-get update -qq
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

python3 -m pip install -q -e ".[test]" 2>&1 | grep -v -e "^WARNING: Running pip as" -e "is ignored" || true

echo "== ruff"
python3 -m ruff check src tests bench
echo "== mypy --strict (arch, pgtable)"
python3 -m mypy --strict src/s2mmu/arch src/s2mmu/pgtable
echo "== pytest"
# The kernel oracle's tests (tests/kernel) fail rather than skip without its source.
export S2MMU_REQUIRE_KERNEL=1
# The real-KVM tests (tests/real) fail rather than skip without QEMU, the cross compiler
# or Debian's arm64 kernel package.
export S2MMU_REQUIRE_REAL=1
python3 -m pytest -n 2 -p no:cacheprovider "$@"
