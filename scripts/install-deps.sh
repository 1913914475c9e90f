#!/usr/bin/env bash
# Installs every Debian package that warden's build, tests, demo, fuzzing and benchmarks need.
# Idempotent: packages already present are not reinstalled; apt runs only when something is missing.
set -euo pipefail

PKGS=(
  # build
  build-essential meson ninja-build pkg-config clang lld llvm libclang-rt-14-dev
  # libraries
  libuv1-dev libssl-dev libsodium-dev libjansson-dev libyaml-dev libhyperscan-dev libpcre2-dev
  libsqlite3-dev libpq-dev libhiredis-dev liboath-dev libqrencode-dev
  # tests
  libcmocka-dev python3-pytest python3-httpx python3-pyotp python3-nacl python3-jwt
  python3-cryptography python3-yaml nodejs npm
  openssl   # the CLI: tests/integration/test_tls.py makes its throwaway CA and certificates with it
  # servers used by tests and benchmarks (started by the harness itself, on loopback)
  nginx-light redis-server wrk
  curl      # scripts/demo.sh and bench/run.sh talk to the gateway with it
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

# node/npm may come from outside Debian (e.g. a preinstalled Node 20); do not fight it.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  filtered=()
  for p in "${missing[@]}"; do
    [[ "$p" == nodejs || "$p" == npm ]] || filtered+=("$p")
  done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing packages: ${missing[*]}" >&2
    echo "install-deps: run as root (or: sudo $0)" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Intel Hyperscan and its fork Vectorscan ship the same library name and conflict; warden needs
  # Hyperscan (docs/architecture.md says why), so a Vectorscan left on the machine is replaced.
  remove=()
  for p in libvectorscan-dev libvectorscan5; do
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then remove+=("$p-"); fi
  done
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" "${remove[@]+"${remove[@]}"}"
fi

# Debian's nginx and redis packages start system services on install; tests start their own.
for svc in nginx redis-server; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" >/dev/null 2>&1 || true
  fi
done
exit 0
