#!/usr/bin/env bash
# System packages the test suite needs beyond Python: PostgreSQL's server binaries (Debian's
# `postgresql` package) for the production-profile tests. Idempotent; `make test` runs it.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if ! command -v apt-get >/dev/null; then
  echo "install PostgreSQL's server (initdb, pg_ctl) with your package manager; this script knows apt-get only" >&2
  exit 1
fi
echo "installing Debian's postgresql (server binaries for the production-profile tests) ..."
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
# the package starts a cluster service on port 5432; the tests run their own servers, so stop it
$SUDO service postgresql stop >/dev/null 2>&1 || true
