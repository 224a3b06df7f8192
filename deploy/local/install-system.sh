#!/usr/bin/env bash
# Installs the system pieces of the local stack: PostgreSQL 15 + TimescaleDB, nats-server and tools.
# Idempotent and quick when everything is present: `apt-get update` only runs when something is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
started=$(date +%s)

PG_MAJOR=15
PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
# Debian has no bookworm binary of TimescaleDB; trixie's source package builds against PostgreSQL 15.
TSDB_SUITE=trixie
TSDB_SOURCES=/etc/apt/sources.list.d/analytics-$TSDB_SUITE-src.sources
RUN_USER=analytics

step() { printf '\033[1m==> system: %s\033[0m\n' "$*"; }
die() { printf '==> system: error: %s\n' "$*" >&2; exit 1; }

sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || die "not root and sudo is missing: run as root or install sudo"
  sudo="sudo"
fi

# --- Debian packages -------------------------------------------------------------------------
packages=(
  ca-certificates
  postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR
  cmake build-essential dpkg-dev
  nats-server wrk
)
# NodeSource's nodejs bundles npm and conflicts with Debian's npm package, so trust the commands.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  packages+=(nodejs npm)
fi
step "Debian packages: ${packages[*]}"
"$here/apt-install.sh" "${packages[@]}"

# --- TimescaleDB -----------------------------------------------------------------------------
# Prints "URIs<TAB>Signed-By" of the machine's enabled binary entry for suite $1 (deb822 or one-line).
debian_entry() {
  local suite=$1 f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -e "$f" ] || continue
    awk -v suite="$suite" '
      function flush() {
        if (types ~ /(^|[ \t])deb([ \t]|$)/ && (" " suites " ") ~ (" " suite " ") && enabled != "no" && uris != "") {
          print uris "\t" signed; found = 1; exit
        }
        types = suites = uris = signed = enabled = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      /^[A-Za-z-]+:/ {
        i = index($0, ":"); key = tolower(substr($0, 1, i - 1)); val = substr($0, i + 1)
        gsub(/^[ \t]+|[ \t]+$/, "", val)
        if (key == "types") types = val
        else if (key == "suites") suites = val
        else if (key == "uris") uris = val
        else if (key == "signed-by") signed = val
        else if (key == "enabled") enabled = tolower(val)
      }
      END { if (!found) flush() }
    ' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -e "$f" ] || continue
    awk -v suite="$suite" '
      $1 != "deb" { next }
      {
        line = $0; signed = ""
        if (match(line, /\[[^]]*\]/)) {
          opts = substr(line, RSTART + 1, RLENGTH - 2)
          line = substr(line, 1, RSTART - 1) substr(line, RSTART + RLENGTH)
          n = split(opts, o, /[ \t]+/)
          for (k = 1; k <= n; k++) if (tolower(o[k]) ~ /^signed-by=/) signed = substr(o[k], 11)
        }
        split(line, w, /[ \t]+/)
        if (w[3] == suite) { print w[2] "\t" signed; exit }
      }
    ' "$f"
  done
}

add_source_entry() {
  local codename entry uris signed
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  [ -n "$codename" ] || die "cannot tell the Debian release from /etc/os-release"
  entry=$(debian_entry "$codename" | head -n 1)
  [ -n "$entry" ] || die "no enabled 'deb' entry for $codename in /etc/apt: cannot derive a $TSDB_SUITE deb-src entry"
  uris=${entry%%$'\t'*}
  signed=${entry#*$'\t'}
  step "TimescaleDB: adding a deb-src-only $TSDB_SUITE entry (mirror taken from the $codename entry)"
  # deb-src only: a binary trixie entry would let apt replace libc and OpenSSL machine-wide.
  {
    echo "# Written by deploy/local/install-system.sh to build TimescaleDB from source; source packages only."
    echo "Types: deb-src"
    echo "URIs: $uris"
    echo "Suites: $TSDB_SUITE"
    echo "Components: main"
    # Inline keys or odd values are left to apt's default keyrings.
    case $signed in /*) echo "Signed-By: $signed" ;; esac
  } | $sudo tee "$TSDB_SOURCES" >/dev/null
}

build_timescaledb() {
  local tmp src
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/analytics-timescaledb.XXXXXX")
  # shellcheck disable=SC2064 # expand $tmp now: it is local
  trap "rm -rf '$tmp'" EXIT
  [ -e "$TSDB_SOURCES" ] || add_source_entry
  step "TimescaleDB: refreshing package lists"
  $sudo apt-get update -q
  step "TimescaleDB: downloading the $TSDB_SUITE source package"
  if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then
    # apt downloads as the sandbox user _apt, which cannot write to root's private temp dir.
    chown _apt "$tmp"
  fi
  (cd "$tmp" && apt-get source -q "timescaledb/$TSDB_SUITE")
  src=$(find "$tmp" -mindepth 1 -maxdepth 1 -type d -name 'timescaledb-*' | head -n 1)
  [ -n "$src" ] || die "apt-get source did not unpack timescaledb"
  step "TimescaleDB: configuring $(basename "$src") (Apache edition, PostgreSQL $PG_MAJOR)"
  (cd "$src" && ./bootstrap -DCMAKE_BUILD_TYPE=Release -DAPACHE_ONLY=1 -DPG_CONFIG="$PG_CONFIG" \
    -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF -DSEND_TELEMETRY_DEFAULT=OFF \
    -DUSE_OPENSSL=ON >"$tmp/configure.log" 2>&1) || { tail -n 40 "$tmp/configure.log" >&2; die "configure failed"; }
  step "TimescaleDB: compiling"
  make -C "$src/build" -j"$(nproc)" >"$tmp/build.log" 2>&1 || { tail -n 40 "$tmp/build.log" >&2; die "build failed"; }
  step "TimescaleDB: installing into $($PG_CONFIG --pkglibdir) and $($PG_CONFIG --sharedir)/extension"
  $sudo make -C "$src/build" install >"$tmp/install.log" 2>&1 || { tail -n 40 "$tmp/install.log" >&2; die "install failed"; }
  # The entry is only needed for this download; dropping it keeps later `apt-get update`s lean.
  $sudo rm -f "$TSDB_SOURCES"
  rm -rf "$tmp"
  trap - EXIT
}

[ -x "$PG_CONFIG" ] || die "$PG_CONFIG is missing although postgresql-$PG_MAJOR is installed"
control="$($PG_CONFIG --sharedir)/extension/timescaledb.control"
if [ -e "$control" ]; then
  step "TimescaleDB: present ($(sed -n "s/^default_version = '\(.*\)'/\1/p" "$control"))"
else
  build_started=$(date +%s)
  build_timescaledb
  [ -e "$control" ] || die "TimescaleDB installed but $control is missing"
  step "TimescaleDB: built and installed in $(($(date +%s) - build_started))s"
fi

# --- unprivileged user -----------------------------------------------------------------------
# PostgreSQL refuses to run as root, so root runs the project's cluster as this user.
if [ "$(id -u)" = 0 ]; then
  if id "$RUN_USER" >/dev/null 2>&1; then
    step "user $RUN_USER: present"
  else
    step "user $RUN_USER: creating (system user, no login) to run PostgreSQL when root"
    useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$RUN_USER"
  fi
fi

step "ready in $(($(date +%s) - started))s"
