# -*- coding: utf-8 -*-
# Copyright: the ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The per-host cache of module binaries: what runs on the target.

A module binary is a few MB, and Ansible copies a binary module to the
target for every task. ops keeps one copy of each binary per host instead,
named by its sha256, in a directory of the user the module runs as (root
under become): ``~/.ansible/ops/bin/<sha256>`` by default, or where the
variable ``ops_module_cache`` says (``false`` turns the cache off).

Two POSIX shell scripts do the work on the target; both need only ``sh``,
``id``, ``stat``, ``mkdir``, ``mktemp``, ``cp``, ``mv`` and ``sha256sum``
(coreutils or busybox), no Python (without ``sha256sum`` or ``stat`` the
cache is not used: a third, the *sent launcher*, runs the copy Ansible sent):

- the *launcher* is what Ansible copies and runs as the module (about
  2 KB, with the usual args file). It checks the cached binary
  before every run: every directory from ``/`` down to the cache belongs to
  root or to the user and is writable by its owner only (a link on the way is
  followed only from such a directory), the file is a
  regular file of the user's, written by no one else, and its sha256 is the
  one the controller holds. Then it ``exec``s it. Otherwise it runs nothing
  and prints ``{"_ops_module_cache": REASON}``: the action then sends the
  binary and installs it, or falls back to running the copy it sent.
- the *installer* copies a binary the controller sent (into Ansible's remote
  tmp) into the cache: a temporary file beside the entry, its sha256
  checked, then renamed over the entry. Concurrent tasks each write their
  own temporary file, and a rename is atomic: no task ever sees a
  half-written binary. A truncated entry (a crash, a full disk) fails the
  launcher's check and is replaced by the next task.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex

DEFAULT_DIR = "~/.ansible/ops/bin"

# What the launcher says instead of running the binary.
ABSENT = "absent"  # no entry yet (or no cache directory)
DAMAGED = "damaged"  # an entry whose sha256, type, owner or mode is wrong
UNSAFE = "unsafe"  # a directory on the way is another user's or writable by others
NO_TOOLS = "no-tools"  # sha256sum or stat missing: the cache cannot be checked
NO_HOME = "no-home"  # the default location, but $HOME is not set
SENT_DAMAGED = "sent-damaged"  # the copy just sent is not what was sent

# What the installer says.
INSTALLED = "installed"
UNWRITABLE = "unwritable"  # mkdir, mktemp, cp or mv failed: read-only, full disk

_digests: dict[tuple[str, int, int], str] = {}


def sha256_of(path):
    """The sha256 of a local file, hex; computed once per file version."""
    status = os.stat(path)
    key = (os.path.realpath(path), status.st_size, status.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        with open(path, "rb") as binary:
            for block in iter(lambda: binary.read(1 << 20), b""):
                digest.update(block)
        _digests[key] = digest.hexdigest()
    return _digests[key]


def directory_word(directory):
    """The cache directory as one shell word; ``~/`` becomes ``$HOME``.

    Raises ValueError for anything but an absolute path or one under
    ``~/``: the launcher must know where it looks before it runs.
    """
    if not isinstance(directory, str):
        raise ValueError("must be a directory, absolute or under ~/, or false, not %s" % json.dumps(directory))
    if any(ord(char) < 32 or ord(char) == 127 for char in directory):
        raise ValueError("must not hold control characters: %s" % json.dumps(directory))
    if not directory.startswith(("/", "~/")) or directory.rstrip("/") in ("", "~"):
        raise ValueError("must be a directory, absolute or under ~/, not %s" % json.dumps(directory))
    if any(part in (".", "..") for part in directory.split("/")):
        raise ValueError("must not hold . or .. components: %s" % json.dumps(directory))
    if directory.startswith("~/"):
        return '"$HOME"/' + shlex.quote(directory[2:])
    return shlex.quote(directory)


# Shell functions both scripts use. safe_dirs DIR: every directory from DIR
# up to / belongs to root or to this user and no one else may write it (the
# sticky /tmp fails too): otherwise another user could swap the binary
# between its check and its run.
_COMMON = r"""
me=$(id -u) || say %(no_tools)s
command -v sha256sum >/dev/null 2>&1 && command -v stat >/dev/null 2>&1 || say %(no_tools)s
owned_by_us() { # PATH: owned by root or us, writable by its owner only
  set -- "$1" "$(stat -c '%%u %%a' "$1" 2>/dev/null)" || return 1
  [ -n "$2" ] || return 1
  case "${2%% *}" in 0|"$me") ;; *) return 1 ;; esac
  [ $(( 0${2#* } & 022 )) -eq 0 ]
}
safe_dirs() {
  set -- "$1"
  while :; do
    owned_by_us "$1" || return 1
    [ "$1" = / ] && return 0
    set -- "${1%%/*}"
    [ -n "$1" ] || set -- /
  done
}
sha_of() { set -- "$(sha256sum < "$1" 2>/dev/null)" && printf '%%s' "${1%%%% *}"; }
# enter DIR [make]: cd into DIR one name at a time, each looked up (or made,
# with make) only in a directory safe_dirs accepts: a link in a directory
# others may write (/tmp/link) is never followed, nor anything made there.
# Fails 1 where a name is missing (or cannot be made or entered), 2 where
# a directory is unsafe. Run it in a subshell: it changes the directory.
enter() {
  cd / && owned_by_us / || return 2
  set -- "${1#/}" "$2"
  while [ -n "$1" ]; do
    c=${1%%%%/*}
    case $1 in */*) set -- "${1#*/}" "$2" ;; *) set -- "" "$2" ;; esac
    [ -n "$c" ] || continue
    if [ -h "./$c" ]; then
      # A link leads anywhere: the whole way to where it leads is checked.
      cd -P "./$c" 2>/dev/null || return 1
      safe_dirs "$(pwd -P)" || return 2
    else
      # The directories above were checked on the way down.
      [ -d "./$c" ] || { [ -n "$2" ] && mkdir "./$c" 2>/dev/null; } || return 1
      cd -P "./$c" 2>/dev/null || return 1
      owned_by_us . || return 2
    fi
  done
}
"""


def launcher(sha, directory):
    """The script Ansible runs as the module: check the cached binary, exec it."""
    return (
        _LAUNCHER_HEAD
        + _COMMON % dict(no_tools=NO_TOOLS)
        + r"""
dir=%(dir)s
%(home)s
real=$(enter "$dir" && pwd -P)
case $? in 0) ;; 2) say %(unsafe)s ;; *) say %(absent)s ;; esac
f=$real/%(sha)s
[ -e "$f" ] || [ -h "$f" ] || say %(absent)s
[ -f "$f" ] && [ ! -h "$f" ] && owned_by_us "$f" || say %(damaged)s
[ "$(sha_of "$f")" = %(sha)s ] || say %(damaged)s
exec "$f" "$@"
"""
        % _words(sha, directory)
    ).encode()


def sent_launcher(sha, sent):
    """The script Ansible runs as the module when the cache is not used.

    It runs the binary sent to the remote tmp, as Ansible runs any binary
    module, after checking its sha256 where the host has sha256sum.
    """
    return (
        _LAUNCHER_HEAD
        + r"""
f=%(sent)s
if command -v sha256sum >/dev/null 2>&1; then
  set -- "$(sha256sum < "$f" 2>/dev/null)" "$@"
  [ "${1%%%% *}" = %(sha)s ] || say %(damaged)s
  shift
fi
exec "$f" "$@"
"""
        % dict(sent=shlex.quote(sent), sha=sha, damaged=SENT_DAMAGED)
    ).encode()


_LAUNCHER_HEAD = (
    "#!/bin/sh\n"
    "# ops.onboard: run a module binary, checked first (plugin_utils/module_cache.py)\n"
    "say() { printf '{\"_ops_module_cache\": \"%s\"}\\n' \"$1\"; exit 0; }\n"
)


def installer(sha, directory, sent):
    """A command that copies ``sent`` (the binary in the remote tmp) into the cache.

    It prints one of INSTALLED, UNWRITABLE, UNSAFE, NO_TOOLS or NO_HOME.
    """
    return (
        "say() { echo \"$1\"; exit 0; }\n"
        + _COMMON % dict(no_tools=NO_TOOLS)
        + r"""
umask 077
dir=%(dir)s
%(home)s
real=$(enter "$dir" make && pwd -P)
case $? in 0) ;; 2) say %(unsafe)s ;; *) say %(unwritable)s ;; esac
e=$real/%(sha)s
# mv onto a directory, or a link to one, would move into it: a link goes,
# a directory (made by hand: ops never makes one there) stays, unused.
if [ -h "$e" ]; then rm -f "$e" 2>/dev/null || say %(unwritable)s; fi
[ -d "$e" ] && say %(unwritable)s
# What a copy killed half-way left (a concurrent copy's file is younger).
find "$real" -maxdepth 1 -type f -name '.%(sha)s.??????' -mmin +10 -exec rm -f {} + 2>/dev/null
t=$(mktemp "$real/.%(sha)s.XXXXXX" 2>/dev/null) || say %(unwritable)s
if cp %(sent)s "$t" 2>/dev/null && chmod 0700 "$t" && [ "$(sha_of "$t")" = %(sha)s ] &&
  mv -f "$t" "$e" 2>/dev/null; then
  say %(installed)s
fi
rm -f "$t"
say %(unwritable)s
"""
        % _words(sha, directory, sent=shlex.quote(sent))
    )


def presence(directory, digests):
    """Shell code printing ``cached SHA`` for each of ``digests`` with an entry.

    Only a hint, asked with uname: a missing entry spares the launcher's run
    that would find it missing; an entry said present is still checked by
    the launcher before it runs.
    """
    return "for s in %s; do [ -f %s/\"$s\" ] && echo \"cached $s\"; done; true" % (
        " ".join(digests), directory_word(directory))


def _words(sha, directory, **more):
    """What the scripts' %(name)s stand for."""
    return dict(
        dir=directory_word(directory),
        home=_home_check(directory),
        sha=sha,
        absent=ABSENT,
        damaged=DAMAGED,
        unsafe=UNSAFE,
        unwritable=UNWRITABLE,
        installed=INSTALLED,
        **more,
    )


def _home_check(directory):
    return '[ -n "$HOME" ] || say %s' % NO_HOME if directory.startswith("~") else ""
