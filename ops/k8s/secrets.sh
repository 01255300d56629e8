#!/usr/bin/env bash
# Creates (or replaces) the Secrets the manifests in this folder mount, with
# fresh values: nothing secret is ever written in the manifests, and no
# placeholder can reach a program (they refuse placeholder values anyway).
#
#   ops/k8s/secrets.sh 'postgresql://tollgate:PASSWORD@HOST:5432/tollgate' [--dry-run]
#
#   tollgate-db            TOLLGATE_DATABASE_URL              every program and the migration
#   tollgate-master-key    TOLLGATE_SECRET_KEY (new, random)  dispatch, health, admin only
#   tollgate-billing-grant-key  TOLLGATE_BILLING_GRANT_KEY (new, random)  billing only
#   tollgate-admin-token   TOLLGATE_ADMIN_TOKEN (new, random) admin only; printed once
#   tollgate-curve-public  public/NAME.cert of every program  every program
#   tollgate-curve-NAME    NAME's secret certificate          program NAME only
#
# The master key encrypts provider secrets at rest: an existing one is kept
# (a new one would make the stored secrets unreadable); so is the token. Certificates come from
# `tollgate cert make` (the tool in the image or a local build); run again
# with --keep-certs to reuse those in ./k8s-curve.
set -euo pipefail
url=${1:?usage: secrets.sh DATABASE_URL [--dry-run] [--keep-certs]}
shift
dry=()
keep=no
for arg in "$@"; do
    case $arg in
    --dry-run) dry=(--dry-run=client -o yaml) ;;
    --keep-certs) keep=yes ;;
    *) echo "unknown option $arg" >&2; exit 2 ;;
    esac
done
tollgate=${TOLLGATE:-tollgate}
curve=./k8s-curve
if [ "$keep" = no ]; then
    rm -rf "$curve"
    "$tollgate" cert make --curve-dir "$curve" >/dev/null
fi
apply() { #  NAME ARGS...: a generic Secret, created or replaced
    local name=$1
    shift
    if [ ${#dry[@]} -gt 0 ]; then
        kubectl -n tollgate create secret generic "$name" "$@" "${dry[@]}"
        echo ---
    else
        kubectl -n tollgate create secret generic "$name" "$@" --dry-run=client -o yaml |
            kubectl apply -f -
    fi
}
apply tollgate-db --from-literal=TOLLGATE_DATABASE_URL="$url"
exists() { [ ${#dry[@]} -eq 0 ] && kubectl -n tollgate get secret "$1" >/dev/null 2>&1; }
#  An existing master key is never replaced: the stored secrets need it.
if exists tollgate-master-key; then
    echo "tollgate-master-key exists: kept" >&2
else
    apply tollgate-master-key --from-literal=TOLLGATE_SECRET_KEY="$(openssl rand -hex 32)"
fi
#  The grant key signs what dispatch's journals still hold: kept too.
if exists tollgate-billing-grant-key; then
    echo "tollgate-billing-grant-key exists: kept" >&2
else
    apply tollgate-billing-grant-key --from-literal=TOLLGATE_BILLING_GRANT_KEY="$(openssl rand -hex 32)"
fi
token=""
if exists tollgate-admin-token; then
    echo "tollgate-admin-token exists: kept" >&2
else
    token="tga_$(openssl rand -hex 32)"
    apply tollgate-admin-token --from-literal=TOLLGATE_ADMIN_TOKEN="$token"
fi
apply tollgate-curve-public --from-file="$curve/public"
for name in ingress router dispatch health billing ledger admin; do
    apply "tollgate-curve-$name" --from-file="$name.cert=$curve/secret/$name.cert"
done
[ -n "$token" ] && echo "admin bootstrap token (shown once): $token" >&2
exit 0
