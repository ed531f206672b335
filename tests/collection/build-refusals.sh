# Sourced by tests/collection/run after the release build: collection/build
# refusing what it must refuse, each run in a scratch copy of the checkout's
# collection/ (its tracked files, the working tree's content), so that a
# wrong build cannot spoil the checkout's. A refusal exits non-zero with one
# message and leaves the earlier build's collection/bin and links as they
# were. Stand-ins on PATH: uname saying Darwin; cargo "building" each module
# as a copy of a file the check chooses ($FAKE_<machine>), so the checks of
# what is placed run in seconds on known wrong files. Needs $work, $shipped,
# $project, $venvs and check (tests/systemd/lib.sh).
# shellcheck shell=bash disable=SC2154  # work, project, modules, ...: tests/collection/run's

scratch=$work/scratch
if ! { mkdir -p "$scratch" &&
  (cd "$project" && git ls-files -z collection LICENSE | tar --null -T - -cf - | tar -xf - -C "$scratch"); }; then
  echo "cannot copy collection/ into $scratch"; exit 1
fi
scratch_build=$scratch/collection/build
galaxy_version=$(sed -n 's/^version: *//p' "$project/collection/galaxy.yml")
host_machine=$(uname -m)
other_machine=aarch64
[ "$host_machine" = aarch64 ] && other_machine=x86_64

shims=$work/shims
mkdir -p "$shims/darwin" "$shims/cargo"
# On "Darwin" nothing may run: each tool says it was called.
# shellcheck disable=SC2016  # the shim's own $1
printf '#!/bin/sh\ncase "$1" in -s) echo Darwin ;; -m) echo arm64 ;; *) echo Darwin ;; esac\n' >"$shims/darwin/uname"
for tool in cargo rustc rustup apt-get; do
  printf '#!/bin/sh\necho "%s $*" >>"%s"\nexit 1\n' "$tool" "$shims/darwin-calls" >"$shims/darwin/$tool"
done
cat >"$shims/cargo/cargo" <<'SH'
#!/usr/bin/env bash
# cargo build [--target T]: each module "built" for T's machine (without
# --target: this machine's, into debug/) is a copy of $FAKE_<machine>.
target= dir=debug
while [ $# -gt 0 ]; do
  [ "$1" = --target ] && { target=$2; dir=$2/release; }
  shift
done
machine=${target%%-*}
[ -n "$machine" ] || machine=$(uname -m)
from=FAKE_$machine
[ -n "${!from:-}" ] || { echo "fake cargo: no $from" >&2; exit 1; }
mkdir -p "$CARGO_TARGET_DIR/$dir"
for module in ops_pod ops_image ops_volume ops_facts ops_release; do
  cp "${!from}" "$CARGO_TARGET_DIR/$dir/$module"
done
SH
chmod +x "$shims"/darwin/* "$shims/cargo/cargo"
# A macOS arm64 binary's first bytes (Mach-O, 64-bit): what a build on a Mac
# for its own target makes.
printf '\xcf\xfa\xed\xfe\x0c\x00\x00\x01\x00\x00\x00\x00\x02\x00\x00\x00' >"$work/mach-o"

# What an earlier build left in the copy: every module of both machines,
# with links, and a tarball.
earlier_build() {
  local machine module
  rm -rf "$scratch/collection/bin" "$scratch/target" "$work/fake-target" "$shims/darwin-calls"
  for machine in x86_64 aarch64; do
    mkdir -p "$scratch/collection/bin/$machine" "$scratch/collection/plugins/modules"
    for module in "${modules[@]}"; do
      echo "earlier $machine build" >"$scratch/collection/bin/$machine/$module"
      ln -sfn "../../bin/$machine/$module" "$scratch/collection/plugins/modules/${module}_$machine"
    done
  done
}
scratch_state() {
  (cd "$scratch" && find collection/bin collection/plugins/modules -printf '%p %y %s %l\n' | sort &&
    cat collection/bin/*/*)
}
# refuses EXPECTED ARGS...: the copy's collection/build (the environment as
# the caller sets it) fails saying exactly EXPECTED, and collection/bin and
# its links stay as the earlier build left them.
refuses() {
  local expected=$1 out status=0 before after
  shift
  earlier_build
  before=$(scratch_state)
  out=$("$scratch_build" "$@" 2>&1) || status=$?
  after=$(scratch_state)
  printf '%s\n' "$out"
  [ "$status" -ne 0 ] || { echo "exit status 0"; return 1; }
  [ "$out" = "$expected" ] || { printf 'expected:\n%s\n' "$expected"; return 1; }
  [ "$before" = "$after" ] || { echo "collection/bin changed:"; diff <(echo "$before") <(echo "$after"); return 1; }
}

# On another system: the same refusal in each mode, before running or
# writing anything (no target/ made, no tool called).
darwin='collection/build: this host runs Darwin, and the modules are Linux binaries, built on a Linux host only: nothing was built. Build on Linux (a machine, VM or container; see the project'"'"'s README.md, "The collection: build, install, architectures"), or install the release tarball (ansible-galaxy collection install ./ops-onboard-<version>.tar.gz)'
on_darwin() {
  PATH=$shims/darwin:$PATH refuses "$darwin" "$@" || return 1
  [ ! -e "$scratch/target" ] || { echo "it wrote $scratch/target"; return 1; }
  [ ! -e "$shims/darwin-calls" ] || { cat "$shims/darwin-calls"; return 1; }
}
check "collection/build on a Darwin host (uname -s says so) refuses with one message, builds and writes nothing" on_darwin
check "collection/build --debug on a Darwin host refuses the same way" on_darwin --debug
check "collection/build --only x86_64 on a Darwin host refuses the same way" on_darwin --only x86_64

# A wrong command line: refused before anything runs (the Darwin stand-ins
# say so if a tool is called), whatever the host.
wrong_words() {
  local expected=$1
  shift
  PATH=$shims/darwin:$PATH refuses "$expected" "$@" || return 1
  [ ! -e "$shims/darwin-calls" ] || { cat "$shims/darwin-calls"; return 1; }
}
check "collection/build --only 'x86_64 aarch64' (two machines in one word) is refused" \
  wrong_words "collection/build: --only takes x86_64 or aarch64, not 'x86_64 aarch64'" --only "x86_64 aarch64"
check "collection/build --only x86_64 with a word after it is refused, not ignored" \
  wrong_words "$(sed -n '4,19s/^#   //p' "$scratch_build"; echo "collection/build: unknown argument 'extra'")" \
  --only x86_64 extra

# Whatever a build made, a binary is placed only where its ELF header says
# it belongs: the machine (e_machine), and static (no dynamic loader named).
# A failed release build leaves no tarball either.
fake_build() { # fake_build EXPECTED ARGS...: with the stand-in cargo
  PATH=$shims/cargo:$PATH CARGO_TARGET_DIR=$work/fake-target refuses "$@" || return 1
  [ -z "$(ls "$scratch"/target/collection/*.tar.gz 2>/dev/null)" ] || { echo "a tarball is left"; return 1; }
}
built_to=$work/fake-target
mislabelled() {
  FAKE_x86_64=$shipped/bin/x86_64/ops_pod FAKE_aarch64=$shipped/bin/x86_64/ops_pod fake_build \
    "collection/build: $built_to/aarch64-unknown-linux-musl/release/ops_pod is not a static Linux binary for aarch64 (an ELF file for x86_64): nothing was placed"
}
check "collection/build refuses to place an x86_64 ELF built for aarch64 (nothing placed, no tarball)" mislabelled
dynamic() {
  local -A fake=([x86_64]=$shipped/bin/x86_64/ops_pod [aarch64]=$shipped/bin/aarch64/ops_pod)
  fake[$host_machine]=/bin/true
  FAKE_x86_64=${fake[x86_64]} FAKE_aarch64=${fake[aarch64]} fake_build \
    "collection/build: $built_to/$host_machine-unknown-linux-musl/release/ops_pod is not a static Linux binary for $host_machine (dynamically linked: it names a dynamic loader): nothing was placed"
}
check "collection/build refuses to place a dynamically linked binary in a release" dynamic
mach_o() {
  FAKE_x86_64=$work/mach-o FAKE_aarch64=$work/mach-o fake_build \
    "collection/build: $built_to/x86_64-unknown-linux-musl/release/ops_pod is not a static Linux binary for x86_64 (not a 64-bit little-endian ELF file): nothing was placed"
}
check "collection/build refuses to place a binary that is not ELF (a Mach-O)" mach_o
debug_mislabelled() {
  local -A fake=([x86_64]=$shipped/bin/aarch64/ops_pod [aarch64]=$shipped/bin/x86_64/ops_pod)
  FAKE_x86_64=${fake[x86_64]} FAKE_aarch64=${fake[aarch64]} fake_build \
    "collection/build: $built_to/debug/ops_pod is not a Linux binary for $host_machine (an ELF file for $other_machine): nothing was placed" \
    --debug
}
check "collection/build --debug refuses to place a binary of another machine" debug_mislabelled

# Without the other machine's cross C compiler (and no apt-get to install
# it): one message naming it and its package, before any build.
without_cross_compiler() {
  local path=$work/path-without-cc dir file name
  local hidden=" $other_machine-linux-gnu-gcc apt-get "
  mkdir -p "$path"
  IFS=: read -r -a dirs <<<"$PATH"
  for dir in "${dirs[@]}"; do
    for file in "$dir"/*; do
      [ -e "$file" ] || continue
      name=${file##*/}
      [[ $hidden == *" $name "* ]] || [ -e "$path/$name" ] || ln -s "$file" "$path/$name"
    done
  done
  PATH=$shims/cargo:$path fake_build \
    "collection/build: cannot build the release (static x86_64 and aarch64 Linux binaries): missing the C compiler $other_machine-linux-gnu-gcc (apt-get install gcc-${other_machine//_/-}-linux-gnu). Nothing was built. (collection/build --only MACHINE builds one machine, for development: not a release.)"
}
check "collection/build without the $other_machine cross C compiler fails with one message naming it and its package, placing nothing" \
  without_cross_compiler

# --only MACHINE: that machine's binaries, the other's gone, and a tarball
# whose name and MANIFEST.json version say so.
only_one() {
  local tarball listing version
  earlier_build
  PATH=$shims/cargo:$project/${venvs[0]}/bin:$PATH CARGO_TARGET_DIR=$built_to FAKE_x86_64=$shipped/bin/x86_64/ops_pod \
    "$scratch_build" --only x86_64 || return 1
  tarball=$scratch/target/collection/ops-onboard-$galaxy_version+x86-64-only.tar.gz
  ls "$scratch/target/collection/"
  [ -f "$tarball" ] && [ ! -e "$scratch/collection/bin/aarch64" ] || return 1
  listing=$(tar -tzf "$tarball" | grep '^bin/.' | sort)
  printf '%s\n' "$listing"
  [ "$(printf '%s\n' "$listing" | sed -n 's|^bin/\([^/]*\)/.*|\1|p' | sort -u)" = x86_64 ] || return 1
  version=$(tar -xzOf "$tarball" MANIFEST.json | python3 -c 'import json, sys; print(json.load(sys.stdin)["collection_info"]["version"])')
  echo "MANIFEST.json version: $version"
  [ "$version" = "$galaxy_version+x86-64-only" ]
}
check "collection/build --only x86_64: x86_64 binaries only, the tarball ops-onboard-<version>+x86-64-only.tar.gz says so (name, MANIFEST.json)" only_one
