# Shared by the scripts: install what is missing, find the repository.
# shellcheck shell=bash

repo_root() { cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd; }

# The Debian packages the build, the tests and the demo need.
SYSTEM_PACKAGES=(softhsm2 opensc p11-kit libp11-kit-dev pkg-config libsqlite3-dev libssl-dev gcc python3 python3-pip curl)

ensure_system_packages() {
  local missing=()
  for package in "${SYSTEM_PACKAGES[@]}" "$@"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "==> installing ${missing[*]}"
    if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# The directory of PostgreSQL's server programs (initdb, pg_ctl, postgres): Debian keeps them in
# /usr/lib/postgresql/<major>/bin, off PATH. The newest major installed; empty when none is.
# (The tests find it the same way: Tests/TestSupport/PostgresCluster.swift.)
postgres_bin_dir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5n | tail -n 1)
  if [[ -n $dir && -x $dir/initdb && -x $dir/pg_ctl ]]; then echo "$dir"; fi
}

# The pip packages the tests need: cryptography (the RFC 5649 interop test, the cloud fakes),
# selenium (the portal in headless Chromium; never downloads a browser: SE_OFFLINE and
# Debian's), and the cloud KMS stand-ins.
ensure_python_packages() {
  if ! python3 -c 'import cryptography.hazmat.primitives.keywrap' 2>/dev/null; then
    echo "==> installing python cryptography"
    python3 -m pip install -q cryptography || python3 -m pip install -q --break-system-packages cryptography
  fi
  if ! python3 -c 'import selenium' 2>/dev/null; then
    echo "==> installing python selenium"
    python3 -m pip install -q selenium || python3 -m pip install -q --break-system-packages selenium
  fi
  # The cloud keystores' stand-ins: moto's KMS (and IAM, for signed requests), drongo for
  # Cloud KMS (it needs google-crc32c without declaring it), boto3 for moto's setup.
  if ! python3 -c 'import moto, boto3, drongo, google_crc32c' 2>/dev/null || ! command -v moto_server >/dev/null || ! command -v drongo >/dev/null; then
    echo "==> installing moto, drongo, google-crc32c"
    python3 -m pip install -q 'moto[server]' boto3 drongo google-crc32c \
      || python3 -m pip install -q --break-system-packages 'moto[server]' boto3 drongo google-crc32c
    if command -v pyenv >/dev/null; then pyenv rehash; fi
    hash -r
  fi
}
