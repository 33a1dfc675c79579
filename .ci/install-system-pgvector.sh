#!/usr/bin/env bash
# Install pgvector into the machine's own PostgreSQL (Debian 12 ships no pgvector package).
#
# Builds the extension from Debian's own source package (trixie carries pgvector 0.8): adds a trixie
# deb-src line on the mirror this machine already uses, fetches the source with apt-get, and compiles it
# against postgresql-server-dev-$PG_MAJOR. Only a *source* line is added, so no installed binary package
# can be upgraded from trixie. Idempotent: exits at once when the extension is already there.
#
# Usage (as root): .ci/install-system-pgvector.sh            PG_MAJOR defaults to the installed cluster
set -euo pipefail

PG_MAJOR=${PG_MAJOR:-$(ls /etc/postgresql 2>/dev/null | sort -n | tail -1)}
PG_MAJOR=${PG_MAJOR:-15}
PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
SRC_SUITE=${PGVECTOR_SOURCE_SUITE:-trixie}
SRC_LIST=/etc/apt/sources.list.d/lookalike-$SRC_SUITE-src.list

control_file() {
  # Without the dev package there is no pg_config yet; the share dir follows Debian's layout.
  local share=/usr/share/postgresql/$PG_MAJOR
  [ -x "$PG_CONFIG" ] && share=$("$PG_CONFIG" --sharedir)
  echo "$share/extension/vector.control"
}

if [ -f "$(control_file)" ]; then
  echo "pgvector already installed for PostgreSQL $PG_MAJOR ($(control_file)); nothing to do"
  exit 0
fi

# The mirror URI of the entry that serves this release's main suite, from either apt source format.
codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
mirror_uri() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # one-line format: deb [options] URI SUITE COMPONENTS...
    awk -v suite="$codename" '
      $1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        if ($(i + 1) == suite) { print $i; exit }
      }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822 format: stanzas separated by blank lines, with Types:, URIs:, Suites:
    awk -v suite="$codename" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uri != "") { print uri; found = 1; exit }
        types = ""; suites = ""; uri = ""
      }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]*#/ { next }
      tolower($1) == "types:"  { $1 = ""; types = substr($0, 2) }
      tolower($1) == "uris:"   { uri = $2 }
      tolower($1) == "suites:" { $1 = ""; suites = substr($0, 2) }
      END { if (!found) flush() }' "$f"
  done
}

if ! grep -rqsE "^[[:space:]]*deb-src[[:space:]].*[[:space:]]$SRC_SUITE[[:space:]]" /etc/apt/sources.list /etc/apt/sources.list.d/*.list; then
  uri=$(mirror_uri | head -1)
  if [ -z "$uri" ]; then
    echo "error: found no apt entry for suite '$codename' to take the mirror from" >&2
    exit 1
  fi
  echo "adding source line: deb-src $uri $SRC_SUITE main  ->  $SRC_LIST"
  echo "deb-src $uri $SRC_SUITE main" >"$SRC_LIST"
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "postgresql-server-dev-$PG_MAJOR" make gcc dpkg-dev >/dev/null

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chown _apt "$work" 2>/dev/null || true  # lets apt download as its unprivileged user instead of warning
cd "$work"
apt-get source -qq pgvector
cd "$(find . -mindepth 1 -maxdepth 1 -type d -name 'pgvector-*' | head -1)"
echo "building $(basename "$PWD") for PostgreSQL $PG_MAJOR"
# with_llvm=no: skip the JIT bitcode, which would need the matching clang at run time for nothing.
make -s with_llvm=no PG_CONFIG="$PG_CONFIG" -j"$(nproc)"
make -s with_llvm=no PG_CONFIG="$PG_CONFIG" install

test -f "$(control_file)"
echo "pgvector installed: $(grep default_version "$(control_file)")"
