#!/usr/bin/env bash
# Installs what is missing, builds Tollgate and starts a local cluster:
#   ./setup.sh [tollgate up options, e.g. --port 9080 --admin-port 9081 --dir ./var]
# Idempotent: run it again to rebuild and to find the running cluster.
set -euo pipefail
cd "$(dirname "$0")"
source ops/install-deps.sh

tg_install_packages
tg_npm_install
tg_build build
exec build/bin/tollgate up "$@"
