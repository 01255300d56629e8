#!/usr/bin/env bash
# Validates docker-compose.yml (no Docker engine runs here, so `config` is
# what can be checked): it must parse, name every program as a service,
# refuse to start without the secrets it needs, be scalable (`--scale`) with
# a health check and a restart policy on every program, and give each
# program an environment that the program itself accepts.
set -euo pipefail
root=${1:?usage: compose_config.sh REPO_ROOT}
bin=${TOLLGATE_BIN:-$root/build/bin}
cd "$root"
command -v docker-compose >/dev/null 2>&1 || { echo "SKIP: docker-compose is not installed"; exit 77; }
export TOLLGATE_SECRET_KEY=0000000000000000000000000000000000000000000000000000000000000000
export TOLLGATE_BILLING_GRANT_KEY=1111111111111111111111111111111111111111111111111111111111111111
export TOLLGATE_ADMIN_TOKEN=test-token
export TOLLGATE_DB_PASSWORD=test-password
docker-compose -f docker-compose.yml config -q
services=$(docker-compose -f docker-compose.yml config --services | sort | tr '\n' ' ')
for want in admin billing dispatch health ingress ledger migrate postgres router; do
    case " $services " in
    *" $want "*) ;;
    *) echo "service $want missing from docker-compose.yml (have: $services)"; exit 1 ;;
    esac
done
if env -u TOLLGATE_SECRET_KEY docker-compose -f docker-compose.yml config -q 2>/dev/null; then
    echo "compose accepted a missing TOLLGATE_SECRET_KEY"
    exit 1
fi
if env -u TOLLGATE_BILLING_GRANT_KEY docker-compose -f docker-compose.yml config -q 2>/dev/null; then
    echo "compose accepted a missing TOLLGATE_BILLING_GRANT_KEY"
    exit 1
fi
if env -u TOLLGATE_DB_PASSWORD docker-compose -f docker-compose.yml config -q 2>/dev/null; then
    echo "compose accepted a missing TOLLGATE_DB_PASSWORD (a fixed database password)"
    exit 1
fi

# The resolved file, as JSON, for the checks below (PyYAML comes with docker-compose).
resolved=$(mktemp)
trap 'rm -f "$resolved"' EXIT
docker-compose -f docker-compose.yml config |
    python3 -c 'import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)' >"$resolved"

# Scalable, checked and restarted: no fixed container name, no single fixed
# host port (a range is fine), a health check and a restart policy.
python3 - "$resolved" <<'EOF'
import json, sys
compose = json.load(open(sys.argv[1]))
problems = []
for name in ["ingress", "router", "dispatch", "health", "billing", "ledger", "admin"]:
    service = compose["services"][name]
    if "container_name" in service:
        problems.append(f"{name}: container_name prevents --scale")
    for port in service.get("ports", []):
        published = str(port.get("published", "")) if isinstance(port, dict) else str(port).split(":")[-2]
        if published and "-" not in published:
            problems.append(f"{name}: fixed host port {published} prevents --scale")
    check = service.get("healthcheck", {}).get("test")
    if not check or check[0] not in ("CMD", "CMD-SHELL"):
        problems.append(f"{name}: no health check")
    if service.get("restart") not in ("always", "unless-stopped", "on-failure"):
        problems.append(f"{name}: restart policy {service.get('restart')!r}")
    command = service.get("command", [])
    if command != [f"tollgate-{name}"]:
        problems.append(f"{name}: command {command!r}")
    # Health checks ping this program's own control socket.
    if name != "ingress":
        control = service["environment"][f"TOLLGATE_{name.upper()}_CONTROL_BIND"]
        port = control.rsplit(":", 1)[1]
        if f"tcp://127.0.0.1:{port}" not in check:
            problems.append(f"{name}: health check does not ping its control port {port}: {check}")
    # Peers come from endpoint lists that follow the scale.
    for key, value in service["environment"].items():
        if key.endswith("_ENDPOINTS") and not value.startswith("dns://"):
            problems.append(f"{name}: {key}={value} does not follow --scale (use dns://)")
    env = service["environment"]
    # CURVE on every socket: the public certificates and this program's own secret.
    if env.get("TOLLGATE_SECURITY") != "curve" or env.get("TOLLGATE_CURVE_DIR") != "/etc/tollgate/curve":
        problems.append(f"{name}: internal traffic is not CURVE")
    targets = {s.get("target") for s in service.get("secrets", []) if isinstance(s, dict)}
    for want in ("/etc/tollgate/curve/public", f"/etc/tollgate/curve/secret/{name}.cert"):
        if want not in targets:
            problems.append(f"{name}: secret {want} not mounted")
    if any(t.startswith("/etc/tollgate/curve/secret/") and t != f"/etc/tollgate/curve/secret/{name}.cert" for t in targets):
        problems.append(f"{name}: gets another program's secret certificate")
    # The master key only where provider secrets are opened.
    if ("TOLLGATE_SECRET_KEY" in env) != (name in ("dispatch", "health", "admin")):
        problems.append(f"{name}: TOLLGATE_SECRET_KEY {'present' if 'TOLLGATE_SECRET_KEY' in env else 'missing'}")
    if ("TOLLGATE_BILLING_GRANT_KEY" in env) != (name == "billing"):
        problems.append(f"{name}: TOLLGATE_BILLING_GRANT_KEY {'present' if 'TOLLGATE_BILLING_GRANT_KEY' in env else 'missing'}")
    if "TOLLGATE_ADMIN_TOKEN" in env and name != "admin":
        problems.append(f"{name}: has the admin bootstrap token")
    if "test-password" not in env.get("TOLLGATE_DATABASE_URL", ""):
        problems.append(f"{name}: database password not from TOLLGATE_DB_PASSWORD")
if compose["services"]["postgres"]["environment"].get("POSTGRES_PASSWORD") != "test-password":
    problems.append("postgres: POSTGRES_PASSWORD is not TOLLGATE_DB_PASSWORD")
if problems:
    print("\n".join(problems))
    sys.exit(1)
EOF

# Each program accepts its environment: every TOLLGATE_* variable is a key it
# knows with a value of the right kind (--print-config parses, then exits).
if [ -x "$bin/tollgate" ]; then
    for name in ingress router dispatch health billing ledger admin; do
        mapfile -t assignments < <(python3 - "$resolved" "$name" <<'EOF'
import json, sys
for key, value in json.load(open(sys.argv[1]))["services"][sys.argv[2]]["environment"].items():
    print(f"{key}={value}")
EOF
)
        if ! output=$(env -i PATH="$PATH" "${assignments[@]}" "$bin/tollgate-$name" --print-config 2>&1); then
            echo "tollgate-$name rejects its compose environment:"
            echo "$output"
            exit 1
        fi
    done
    # The health check command exists and fails cleanly when nothing listens.
    if "$bin/tollgate" ping --endpoint tcp://127.0.0.1:1 --ready --timeout 0.2 >/dev/null; then
        echo "tollgate ping --endpoint answered for a closed port"
        exit 1
    fi
fi
echo "docker-compose.yml: valid and scalable, services: $services"
