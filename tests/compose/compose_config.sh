#!/usr/bin/env bash
# Validates docker-compose.yml (no Docker engine runs here, so `config` is
# what can be checked): it must parse, name every program as a service, and
# refuse to start without the secrets it needs.
set -euo pipefail
root=${1:?usage: compose_config.sh REPO_ROOT}
cd "$root"
export TOLLGATE_SECRET_KEY=0000000000000000000000000000000000000000000000000000000000000000
export TOLLGATE_ADMIN_TOKEN=test-token
docker-compose -f docker-compose.yml config -q
services=$(docker-compose -f docker-compose.yml config --services | sort | tr '\n' ' ')
for want in billing dispatch health ingress ledger migrate postgres router; do
    case " $services " in
    *" $want "*) ;;
    *) echo "service $want missing from docker-compose.yml (have: $services)"; exit 1 ;;
    esac
done
if env -u TOLLGATE_SECRET_KEY docker-compose -f docker-compose.yml config -q 2>/dev/null; then
    echo "compose accepted a missing TOLLGATE_SECRET_KEY"
    exit 1
fi
echo "docker-compose.yml: valid, services: $services"
