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

# The pip packages the tests need: cryptography (the RFC 5649 interop test, the cloud fakes, the
# gRPC client's signature checks),
# selenium (the portal in headless Chromium; never downloads a browser: SE_OFFLINE and
# Debian's), the cloud KMS stand-ins, and PyKMIP's server.
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
  # PyKMIP's server for the KMIP keystore tests (Tests/TestSupport/KMIPFixture.swift), exactly
  # the pair the tests were verified with: PyKMIP 0.11.0 declares no SQLAlchemy bound, and its
  # server ran every operation the tests use with SQLAlchemy 2.1.9, so that one is pinned too
  # (a newer major could break it on a fresh machine).
  if ! python3 -c 'import kmip.services.server.server' 2>/dev/null; then
    echo "==> installing pykmip 0.11.0, sqlalchemy 2.1.9"
    python3 -m pip install -q 'pykmip==0.11.0' 'sqlalchemy==2.1.9' \
      || python3 -m pip install -q --break-system-packages 'pykmip==0.11.0' 'sqlalchemy==2.1.9'
    if command -v pyenv >/dev/null; then pyenv rehash; fi
  fi
  # The gRPC API's client in the tests, written by someone else: grpcio, grpcio-tools (its
  # protoc compiles Protos/ in the test), the standard health and reflection clients, and
  # grpcio-status to read google.rpc.Status details.
  if ! python3 -c 'import grpc, grpc_tools, grpc_health.v1, grpc_reflection.v1alpha, grpc_status' 2>/dev/null; then
    echo "==> installing grpcio, grpcio-tools, grpcio-health-checking, grpcio-reflection, grpcio-status"
    python3 -m pip install -q grpcio grpcio-tools grpcio-health-checking grpcio-reflection grpcio-status \
      || python3 -m pip install -q --break-system-packages grpcio grpcio-tools grpcio-health-checking grpcio-reflection grpcio-status
  fi
}

# Runs a command as PostgreSQL's server user: `postgres` (Debian's package makes it) through
# runuser when the script runs as root, which PostgreSQL refuses to run as; else as the caller.
# (The tests do the same: Tests/TestSupport/PostgresCluster.swift.)
as_postgres() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Waits until `GET URL` answers 200, for up to SECONDS (default 10). Fails, saying why, when it
# does not, or when the process PID (optional: the server being waited for) ends first.
wait_for_http() {
  local url=$1 seconds=${2:-10} pid=${3:-} i
  for ((i = 0; i < seconds * 10; i++)); do
    curl -sf -o /dev/null --max-time 2 "$url" && return 0
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
      echo "wait_for_http: $url: the process $pid ended" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "wait_for_http: $url: no 200 within ${seconds}s" >&2
  return 1
}
