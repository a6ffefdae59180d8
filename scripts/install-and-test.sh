#!/usr/bin/env bash
# Install everything s2mmu needs on a fresh Debian 12 machine (QEMU and the aarch64
# binutils from Debian; Linux 6.12's and 6.1's source, a C compiler, awk and xz for the
# kernel oracle, `s2mmu kernel`; Debian's arm64 architecture, the aarch64 cross compiler
# and its static libc for real KVM, `s2mmu real`, whose tests fetch Debian's arm64 kernel
# package with apt-get download into ~/.cache/s2mmu/real; Debian's bookworm-backports for
# QEMU 10.0, fetched into ~/.cache/s2mmu beside the system's 7.2; the package and its test
# tools from PyPI), then run the checks and the whole test suite. .ci/run calls exactly this.
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

# QEMU 10.0, the second conformance oracle (FEAT_PAN3/EPAN, FEAT_XS, FEAT_NV2 in -cpu max):
# Debian's bookworm-backports at apt's default backports priority (100), so nothing is ever
# upgraded from it and the system's qemu-system-aarch64 stays 7.2; s2mmu fetches the 10.0
# package with apt-get download and extracts it into ~/.cache/s2mmu/qemu-10.0.2.
BACKPORTS=/etc/apt/sources.list.d/s2mmu-backports.sources
if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  $SUDO tee "$BACKPORTS" >/dev/null <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  $SUDO apt-get update -qq
fi
python3 -m s2mmu.conformance.qemu_binary 10.0

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
# The conformance tests against QEMU 10.0 fail rather than skip without it.
export S2MMU_REQUIRE_QEMU10=1
python3 -m pytest -n 2 -p no:cacheprovider "$@"
