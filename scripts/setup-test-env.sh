#!/usr/bin/env bash
# Prepare a Debian bookworm machine for Pacer's tests.
#
# What it does (every step is skipped when already done, so re-running is cheap):
#   1. apt-get installs what is missing: zookeeper (only installed here; tests start their own servers),
#      busybox-static, curl, python3, openssl, and docker.io when there is no dockerd.
#      `apt-get update` runs at most once, and only if something has to be installed.
#   2. Starts a Docker engine in the background when none is reachable, and waits
#      (bounded) for `docker info` to answer.
#   3. Builds the local test image pacer/busybox:local
#      (examples/docker/build-local-image.sh) once the engine is up.
#   4. Adds the wasm32-wasip2 Rust target when rustup exists and the target is missing.
#   5. Prints a summary of what is available.
#
# Steps that can legitimately fail on some machines (Docker inside restricted
# containers, no network for rustup, ...) print a `setup: ...` line and the script
# carries on; the tests that need the missing piece report that they could not run.
#
# Run as root, or as a user with sudo. Non-interactive; exports nothing.
# Environment (optional):
#   PACER_DOCKERD_ARGS     extra dockerd arguments; when set, only this variant is tried
#   PACER_DOCKER_WAIT      seconds to wait for each dockerd start attempt (default 30)
#   PACER_DOCKERD_LOG      dockerd log file (default /var/log/pacer-dockerd.log)
set -uo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
IMAGE_SCRIPT="$REPO_ROOT/examples/docker/build-local-image.sh"
IMAGE="pacer/busybox:local"
DOCKER_WAIT="${PACER_DOCKER_WAIT:-30}"
DOCKERD_LOG="${PACER_DOCKERD_LOG:-/var/log/pacer-dockerd.log}"
DOCKER_SOCK=/var/run/docker.sock
WASM_TARGET=wasm32-wasip2

# sbin directories are missing from some non-root PATHs; dockerd lives there.
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
[ -n "${HOME:-}" ] && [ -d "$HOME/.cargo/bin" ] && PATH="$PATH:$HOME/.cargo/bin"

say() { echo "setup: $*"; }

# Run a command as root: directly when we are root, through sudo otherwise.
if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo -n)
else
  SUDO=()
  say "not root and sudo is missing; installing packages and starting dockerd will likely fail"
fi
as_root() { "${SUDO[@]}" "$@"; }

# Summary state, filled in as we go.
S_ZK="no" S_BUSYBOX="no" S_CURL="no" S_DOCKER="no" S_BRIDGE="not checked" S_IMAGE="no" S_WASM="no"

# ---------------------------------------------------------------------------
# 1. Debian packages
# ---------------------------------------------------------------------------
pkg_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
pkg_installed zookeeper || missing+=(zookeeper)
pkg_installed busybox-static || missing+=(busybox-static)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# Health-check tests: a Python task server and a self-signed certificate.
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)

if [ "${#missing[@]}" -gt 0 ]; then
  say "installing with apt-get: ${missing[*]}"
  apt_opts=(-y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq; then
    say "apt-get update failed; trying to install from the existing package lists"
  fi
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" "${missing[@]}" >/tmp/pacer-setup-apt.log 2>&1; then
    # One broken package must not prevent the others: retry one by one.
    for p in "${missing[@]}"; do
      if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" "$p" >>/tmp/pacer-setup-apt.log 2>&1; then
        say "could not install $p (see /tmp/pacer-setup-apt.log)"
      fi
    done
  fi
fi

if pkg_installed zookeeper && [ -f /usr/share/java/zookeeper.jar ]; then
  S_ZK="yes (/usr/share/java/zookeeper.jar; not started)"
  command -v java >/dev/null 2>&1 || S_ZK="$S_ZK, but no java on PATH"
fi
pkg_installed busybox-static && [ -x /bin/busybox ] && S_BUSYBOX="yes (/bin/busybox)"
command -v curl >/dev/null 2>&1 && S_CURL="yes"

# ---------------------------------------------------------------------------
# 2. Docker engine
# ---------------------------------------------------------------------------
docker_ok() { timeout 10 docker info >/dev/null 2>&1; }

# Start dockerd with the given extra arguments and wait for it.
# Returns 0 when `docker info` answers; otherwise stops what it started.
DOCKER_FAIL_REASON=""
try_dockerd() {
  local pid i
  say "starting dockerd ${*:-(default options)}; log: $DOCKERD_LOG"
  # setsid + nohup: the engine must outlive this script and its terminal.
  # shellcheck disable=SC2016  # expanded by the inner bash
  pid="$(as_root bash -c 'sock=$1 log=$2; shift 2
    setsid nohup dockerd --host "unix://$sock" "$@" >>"$log" 2>&1 </dev/null &
    echo $!' bash "$DOCKER_SOCK" "$DOCKERD_LOG" "$@" 2>/dev/null)"
  for ((i = 0; i < DOCKER_WAIT * 2; i++)); do
    docker_ok && return 0
    if [ -n "$pid" ] && ! as_root kill -0 "$pid" 2>/dev/null; then
      break
    fi
    sleep 0.5
  done
  DOCKER_FAIL_REASON="$(grep -E 'level=(error|fatal)|failed to start daemon' "$DOCKERD_LOG" 2>/dev/null | tail -1 | sed -E 's/^time="[^"]*" //')"
  [ -n "$DOCKER_FAIL_REASON" ] || DOCKER_FAIL_REASON="docker info did not answer within ${DOCKER_WAIT}s"
  say "dockerd failed: $DOCKER_FAIL_REASON"
  if [ -n "$pid" ] && as_root kill -0 "$pid" 2>/dev/null; then
    as_root kill "$pid" 2>/dev/null
    for ((i = 0; i < 20; i++)); do as_root kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  fi
  return 1
}

docker_unavailable() {
  S_DOCKER="no ($1)"
  say "Docker engine unavailable: $1; Docker tests will report that they could not run"
}

if ! command -v docker >/dev/null 2>&1; then
  docker_unavailable "no docker client installed"
elif docker_ok; then
  say "Docker engine already reachable"
  S_DOCKER="yes"
elif ! command -v dockerd >/dev/null 2>&1; then
  docker_unavailable "dockerd is not installed"
elif pgrep -x dockerd >/dev/null 2>&1; then
  # Do not start a second engine next to one that is running but not answering
  # (e.g. permission denied on the socket, or still starting).
  docker_unavailable "a dockerd process is running but 'docker info' fails: $(timeout 10 docker info 2>&1 | grep -iE 'error|denied|cannot' | head -1)"
else
  as_root touch "$DOCKERD_LOG" 2>/dev/null || DOCKERD_LOG=/tmp/pacer-dockerd.log
  if [ -n "${PACER_DOCKERD_ARGS:-}" ]; then
    variants=("$PACER_DOCKERD_ARGS")
  else
    # 1st: defaults (overlay2, bridge + iptables) -- what works on a normal VM.
    # 2nd: the most restricted setup: no iptables/bridge (only --network host
    #      and none work; -p port mappings are silently ignored), vfs storage.
    variants=("" "--iptables=false --ip-forward=false --bridge=none --storage-driver=vfs")
  fi
  for v in "${variants[@]}"; do
    # shellcheck disable=SC2086
    if try_dockerd $v; then
      S_DOCKER="yes (started: dockerd --host unix://$DOCKER_SOCK${v:+ $v})"
      break
    fi
  done
  [ "$S_DOCKER" = "no" ] && docker_unavailable "$DOCKER_FAIL_REASON (log: $DOCKERD_LOG)"
fi

# ---------------------------------------------------------------------------
# 3. Local test image, and a quick check of bridge networking + port mapping
# ---------------------------------------------------------------------------
if [ "${S_DOCKER%% *}" = "yes" ]; then
  if "$IMAGE_SCRIPT"; then
    S_IMAGE="yes ($IMAGE)"
  else
    S_IMAGE="no (build failed)"
    say "could not build $IMAGE; Docker tests will report that they could not run"
  fi

  if [ "${S_IMAGE%% *}" = "yes" ]; then
    errf="$(mktemp -t pacer-bridge-check.XXXXXX)"
    cid="$(docker run -d --rm -p 127.0.0.1::8080 "$IMAGE" httpd -f -p 8080 -h /www 2>"$errf")"
    if [ -n "$cid" ]; then
      port="$(docker port "$cid" 8080/tcp 2>/dev/null | head -1 | sed 's/.*://')"
      S_BRIDGE="no (port mapping did not answer)"
      for ((i = 0; i < 20; i++)); do
        if [ -n "$port" ] && curl -fsS -m 2 "http://127.0.0.1:$port/" >/dev/null 2>&1; then
          S_BRIDGE="yes (-p host:container works)"
          break
        fi
        sleep 0.25
      done
      docker rm -f "$cid" >/dev/null 2>&1
    else
      S_BRIDGE="no ($(head -1 "$errf"))"
    fi
    rm -f "$errf"
    [ "${S_BRIDGE%% *}" = "yes" ] || say "bridge networking unavailable (${S_BRIDGE#no (}; only --network host works"
  fi
fi

# ---------------------------------------------------------------------------
# 4. wasm32-wasip2 target (never installs a toolchain)
# ---------------------------------------------------------------------------
if command -v rustup >/dev/null 2>&1; then
  if (cd "$REPO_ROOT" && rustup target list --installed 2>/dev/null) | grep -qx "$WASM_TARGET"; then
    S_WASM="yes"
  else
    say "adding Rust target $WASM_TARGET"
    if (cd "$REPO_ROOT" && RUSTUP_AUTO_INSTALL=0 timeout 300 rustup target add "$WASM_TARGET"); then
      S_WASM="yes (just added)"
    else
      S_WASM="no (rustup target add failed)"
      say "could not add $WASM_TARGET; plugin tests will report that they could not run"
    fi
  fi
else
  S_WASM="no (rustup not found)"
fi

# ---------------------------------------------------------------------------
# 5. Summary
# ---------------------------------------------------------------------------
echo "setup: summary"
row() { printf '  %-16s: %s\n' "$1" "$2"; }
row zookeeper "$S_ZK"
row busybox-static "$S_BUSYBOX"
row curl "$S_CURL"
row "docker engine" "$S_DOCKER"
row "docker image" "$S_IMAGE"
row "bridge + -p" "$S_BRIDGE"
row "$WASM_TARGET" "$S_WASM"
exit 0
