#!/usr/bin/env bash
# Downloads Debian packages for any architecture without touching the host's apt setup: apt
# runs with its own sources list and state under the cache, and checks the archive's signatures
# against Debian's keyring as it always does. Prints the path of each downloaded .deb.
#
# Usage: debian-fetch.sh ARCH "SUITE..." DEST PACKAGE[=VERSION]...
#   BERTH_DEBIAN_MIRROR   mirror URL (default http://deb.debian.org/debian)
#   BERTH_DEBIAN_KEYRING  keyring (default /usr/share/keyrings/debian-archive-keyring.gpg)
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: $0 ARCH \"SUITE...\" DEST PACKAGE[=VERSION]..." >&2; exit 2; }
arch=$1 suites=$2 dest=$3
shift 3
mirror=${BERTH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
keyring=${BERTH_DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
[ -r "$keyring" ] || { echo "$0: Debian's archive keyring $keyring is missing (Debian: apt-get install debian-archive-keyring)" >&2; exit 1; }
command -v apt-get >/dev/null || { echo "$0: apt-get is needed to fetch Debian packages" >&2; exit 1; }

cache=${XDG_CACHE_HOME:-$HOME/.cache}/berth/apt/$arch-$(echo "$suites" | tr ' ' '+')
mkdir -p "$cache/lists/partial" "$cache/archives/partial" "$dest"
: >"$cache/sources.list"
for suite in $suites; do
  echo "deb [arch=$arch signed-by=$keyring] $mirror $suite main" >>"$cache/sources.list"
done
apt_opts=(
  -q -o "APT::Architecture=$arch" -o "APT::Architectures=$arch"
  -o "Dir::Etc::SourceList=$cache/sources.list" -o Dir::Etc::SourceParts=/nonexistent
  -o "Dir::State::Lists=$cache/lists" -o "Dir::Cache=$cache" -o Dir::State::status=/dev/null
  -o Acquire::Languages=none -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
  -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
  -o Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false
  -o Debug::NoLocking=1 -o APT::Sandbox::User=root
)
# The lists are refreshed once a day at most: a build should not depend on the network when
# nothing changed.
stamp="$cache/lists/.updated"
if [ -z "$(find "$stamp" -mmin -1440 2>/dev/null)" ]; then
  apt-get "${apt_opts[@]}" update >&2
  touch "$stamp"
fi
for spec in "$@"; do
  name=${spec%%=*}
  if [ "$spec" = "$name" ]; then
    version=$(apt-cache "${apt_opts[@]}" policy "$name" | awk '/Candidate:/ {print $2}')
  else
    # A version prefix ("1.95.0") picks the newest matching version of the suites.
    want=${spec#*=}
    version=$(apt-cache "${apt_opts[@]}" madison "$name" | awk -v w="$want" '$3 == w || index($3, w "+") == 1 {print $3; exit}')
  fi
  if [ -z "$version" ] || [ "$version" = "(none)" ]; then
    echo "$0: no package $spec for $arch in $suites" >&2
    exit 1
  fi
  file="$dest/${name}_${version//:/%3a}_$arch.deb"
  alt="$dest/${name}_${version//:/%3a}_all.deb"
  if [ ! -f "$file" ] && [ ! -f "$alt" ]; then
    (cd "$dest" && apt-get "${apt_opts[@]}" download "$name=$version" >&2)
  fi
  if [ -f "$file" ]; then echo "$file"; elif [ -f "$alt" ]; then echo "$alt"; else
    echo "$0: apt-get download $name=$version left no package in $dest" >&2
    exit 1
  fi
done
