#!/usr/bin/env bash
# Builds the Debian package of the headless daemon, gatehouse_<version>_<arch>.deb: the binary,
# the built web UI, the systemd unit, the config file and the maintainer scripts from
# packaging/daemon/. Idempotent: each run rebuilds the package from scratch. See docs/packaging.md.
#
# Usage: scripts/package-daemon.sh [--binary PATH] [--target TRIPLE] [--out DIR] [--compression C]
#   --binary PATH     package this gatehouse binary instead of building one
#   --target TRIPLE   Rust target to build for, e.g. aarch64-unknown-linux-gnu (cross build; the
#                     C cross compiler must be set up, see docs/packaging.md)
#   --out DIR         where the .deb goes (default target/packages)
#   --compression C   dpkg-deb compression: xz (default), zstd, gzip or none
# Environment: DEB_MAINTAINER ("Name <email>") for the Maintainer field; CARGO, CARGO_TARGET_DIR.
set -euo pipefail
umask 022
cd "$(dirname "$0")/.."

binary=""
target=""
out="target/packages"
compression="xz"
maintainer="${DEB_MAINTAINER:-Gatehouse maintainers <gatehouse@example.org>}"

die() {
  echo "package-daemon: $*" >&2
  exit 1
}
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

while (($#)); do
  case "$1" in
    --binary | --target | --out | --compression)
      (($# >= 2)) || die "$1 needs a value"
      case "$1" in
        --binary) binary="$2" ;;
        --target) target="$2" ;;
        --out) out="$2" ;;
        --compression) compression="$2" ;;
      esac
      shift 2
      ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

for tool in dpkg-deb readelf; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (Debian packages dpkg and binutils)"
done
case "$compression" in xz | zstd | gzip | none) ;; *) die "--compression must be xz, zstd, gzip or none" ;; esac

# The package version is the workspace's ([workspace.package] in Cargo.toml). A SemVer
# pre-release (1.0.0-rc.1) becomes 1.0.0~rc.1, which Debian sorts before 1.0.0.
version="$(sed -n '/^\[workspace\.package\]/,/^\[/{s/^version[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p}' Cargo.toml | head -n 1)"
[[ "$version" =~ ^[0-9][0-9A-Za-z.+-]*$ ]] || die "no usable version in [workspace.package] of Cargo.toml (found '$version')"
version="${version/-/\~}"

# The Debian architecture a Rust target triple builds for.
triple_arch() {
  case "$1" in
    x86_64-*-linux-gnu) echo amd64 ;;
    aarch64-*-linux-gnu) echo arm64 ;;
    # Debian's armhf is ARMv7; Raspberry Pi OS's 32-bit armhf also runs on ARMv6 (Pi 1, Zero),
    # which needs arm-unknown-linux-gnueabihf. Both are "armhf" to dpkg.
    armv7-*-linux-gnueabihf | arm-*-linux-gnueabihf) echo armhf ;;
    i686-*-linux-gnu) echo i386 ;;
    riscv64gc-*-linux-gnu) echo riscv64 ;;
    *) die "no Debian architecture known for the target $1" ;;
  esac
}

if [[ -z "$binary" ]]; then
  cargo_args=(build --release -p gateway-core --bin gatehouse)
  [[ -n "$target" ]] && cargo_args+=(--target "$target")
  echo "package-daemon: ${CARGO:-cargo} ${cargo_args[*]}"
  "${CARGO:-cargo}" "${cargo_args[@]}"
  binary="${CARGO_TARGET_DIR:-target}/${target:+$target/}release/gatehouse"
fi
[[ -f "$binary" ]] || die "$binary does not exist"

# The architecture comes from the binary itself, so a --binary built elsewhere is labelled right.
header="$(LC_ALL=C readelf -h "$binary" 2>/dev/null)" || die "$binary is not an ELF binary"
machine="$(sed -n 's/^ *Machine: *//p' <<<"$header")"
case "$machine" in
  "Advanced Micro Devices X86-64") arch=amd64 ;;
  AArch64) arch=arm64 ;;
  ARM) if grep -q 'hard-float' <<<"$header"; then arch=armhf; else arch=armel; fi ;;
  "Intel 80386") arch=i386 ;;
  RISC-V) arch=riscv64 ;;
  *) die "$binary is built for '$machine', which this script does not map to a Debian architecture" ;;
esac
if [[ -n "$target" && "$(triple_arch "$target")" != "$arch" ]]; then
  die "$binary is an $arch binary, but --target $target builds $(triple_arch "$target")"
fi

# Depends from what the binary links dynamically (readelf works for every architecture, so this
# also holds for cross builds). Rust links libc, libm and libgcc_s; SQLite (rusqlite "bundled")
# and libdbus (dbus "vendored") are compiled in. A library not listed here stops the build, so a
# new dynamic dependency cannot slip into the package without a Depends.
max_version() { # the highest symbol version NAME_x.y[.z] the binary needs, as x.y[.z]
  LC_ALL=C readelf -V "$binary" | grep -o "Name: $1_[0-9][0-9.]*" | sed "s/^Name: $1_//" | sort -V | tail -n 1
}
depends=(adduser)
while read -r library; do
  case "$library" in
    libc.so.6 | libm.so.6 | libpthread.so.0 | libdl.so.2 | librt.so.1 | libutil.so.1 | ld-linux*.so.*) libc=1 ;;
    libgcc_s.so.1) libgcc=1 ;;
    "") ;;
    *) die "$binary links $library: add its Debian package to the Depends logic in $0" ;;
  esac
done < <(LC_ALL=C readelf -d "$binary" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
if [[ -n "${libc:-}" ]]; then
  glibc="$(max_version GLIBC)"
  depends+=("libc6${glibc:+ (>= $glibc)}")
fi
if [[ -n "${libgcc:-}" ]]; then
  gcc="$(max_version GCC)"
  [[ "$gcc" =~ ^([0-9]+\.[0-9]+)\.0$ ]] && gcc="${BASH_REMATCH[1]}" # GCC_4.2.0 is libgcc-s1 4.2
  depends+=("libgcc-s1${gcc:+ (>= $gcc)}")
fi

ui_dist="ui/dist"
[[ -f "$ui_dist/index.html" ]] || die "the web UI is not built ($ui_dist/index.html is missing): run
  (cd ui && npm ci && npm run build)      or      ./scripts/setup.sh run"

name="gatehouse_${version}_${arch}"
stage="$out/$name"
deb="$out/$name.deb"
rm -rf "$stage"
mkdir -p "$stage/DEBIAN"

install -D -m 0755 "$binary" "$stage/usr/bin/gatehouse"
# Symbols are not needed at run time (a fifth of the size). The host's strip handles only its own
# architecture; a cross build uses the cross binutils' strip when installed.
case "$arch" in
  amd64) strip_tools=(x86_64-linux-gnu-strip strip) ;;
  arm64) strip_tools=(aarch64-linux-gnu-strip) ;;
  armhf) strip_tools=(arm-linux-gnueabihf-strip) ;;
  *) strip_tools=() ;;
esac
stripped=""
for tool in "${strip_tools[@]}"; do
  if command -v "$tool" >/dev/null 2>&1 && "$tool" --strip-unneeded "$stage/usr/bin/gatehouse" 2>/dev/null; then
    stripped=1
    break
  fi
done
[[ -n "$stripped" ]] || echo "package-daemon: no strip for $arch found; the binary keeps its symbols"

mkdir -p "$stage/usr/share/gatehouse"
cp -R "$ui_dist" "$stage/usr/share/gatehouse/ui"
install -D -m 0644 packaging/daemon/gatehouse.service "$stage/lib/systemd/system/gatehouse.service"
install -D -m 0644 packaging/daemon/gatehouse.toml "$stage/etc/gatehouse/gatehouse.toml"
install -D -m 0644 packaging/daemon/copyright "$stage/usr/share/doc/gatehouse/copyright"
install -m 0644 docs/configuration.md docs/security.md "$stage/usr/share/doc/gatehouse/"
find "$stage" -type d -exec chmod 0755 {} +
find "$stage/usr/share" "$stage/etc" "$stage/lib" -type f -exec chmod 0644 {} +

for script in postinst prerm postrm; do
  install -m 0755 "packaging/daemon/$script" "$stage/DEBIAN/$script"
done
echo /etc/gatehouse/gatehouse.toml >"$stage/DEBIAN/conffiles"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) \
  >"$stage/DEBIAN/md5sums"

installed_size="$(du -sk --apparent-size --exclude=DEBIAN "$stage" | cut -f1)"
depends_field="$(printf '%s, ' "${depends[@]}")"
cat >"$stage/DEBIAN/control" <<CONTROL
Package: gatehouse
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: ${depends_field%, }
Recommends: bluez
Section: net
Priority: optional
Description: IoT gateway for Ruuvi tags and LAN devices (headless daemon)
 Gatehouse receives Ruuvi tag advertisements over Bluetooth (through BlueZ)
 and from remote Ruuvi Gateways, runs an MQTT broker (plain, TLS, WebSocket)
 for LAN devices, keeps readings in SQLite and serves an HTTP API and web UI.
 .
 This package runs it as the systemd service "gatehouse" under its own
 system user, with its data in /var/lib/gatehouse and its configuration in
 /etc/gatehouse/gatehouse.toml: for a Raspberry Pi or a server without a
 desktop.
CONTROL

# Reproducible file dates: dpkg-deb clamps them to SOURCE_DATE_EPOCH (the last commit's time).
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
export SOURCE_DATE_EPOCH
dpkg-deb --root-owner-group -Z"$compression" --build "$stage" "$deb" >/dev/null
rm -rf "$stage"

echo "package-daemon: $deb ($(du -h "$deb" | cut -f1), $arch, version $version)"
echo "  Depends: ${depends_field%, }"
