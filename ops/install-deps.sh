# Shared by setup.sh and test.sh (sourced, not run): installs what is missing and builds.
# Idempotent and non-interactive; works as root, or through sudo for another user.

TG_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Debian packages the build, the tests and `tollgate up` need.
TG_PACKAGES=(
  build-essential cmake pkg-config curl ca-certificates jq
  libzmq3-dev libczmq-dev libmicrohttpd-dev libgnutls28-dev libcurl4-openssl-dev libpq-dev
  libmsgpack-dev libjansson-dev libsodium-dev libpcre2-dev libjemalloc-dev zlib1g-dev
  postgresql-15 wrk nginx-light docker-compose iproute2
  clang libclang-rt-14-dev clang-format
  chromium linux-perf openssl tzdata
)

tg_log() { printf '==> %s\n' "$*" >&2; }

tg_sudo() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    # With no one to type a password (CI=true), fail rather than wait for one.
    if [ "${CI:-false}" = "true" ]; then sudo -n "$@"; else sudo "$@"; fi
  else
    tg_log "need root for: $*  (run as root or install sudo)"
    return 1
  fi
}

tg_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

tg_install_packages() {
  local missing=() package
  for package in "${TG_PACKAGES[@]}"; do
    tg_installed "$package" || missing+=("$package")
  done
  # Node 20+ may come from elsewhere than Debian; only install Debian's when there is none.
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  if [ "${#missing[@]}" -eq 0 ]; then
    return 0
  fi
  tg_log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  tg_sudo apt-get update -q
  tg_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-upgrade \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
}

# The SDK clients the end-to-end tests drive (package.json / package-lock.json).
tg_npm_install() {
  [ -f "$TG_ROOT/package.json" ] || return 0
  local stamp="$TG_ROOT/node_modules/.package-lock.json"
  if [ -f "$stamp" ] && [ "$stamp" -nt "$TG_ROOT/package-lock.json" ]; then
    return 0
  fi
  tg_log "npm: installing test clients"
  if [ -f "$TG_ROOT/package-lock.json" ]; then
    (cd "$TG_ROOT" && npm ci --no-audit --no-fund --loglevel=error)
  else
    (cd "$TG_ROOT" && npm install --no-audit --no-fund --loglevel=error)
  fi
}

# tg_build DIR [CMAKE_ARGS...]: configure (once) and build into DIR.
tg_build() {
  local dir="$1"
  shift
  tg_log "building $dir $*"
  # RelWithDebInfo without -DNDEBUG: asserts stay on in every build (STYLE.md).
  cmake -S "$TG_ROOT" -B "$TG_ROOT/$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -g" "$@" >/dev/null
  cmake --build "$TG_ROOT/$dir" -j "$(nproc 2>/dev/null || echo 2)"
}
