# Processes by PID and start time, for the sandbox and the fleet (sourced).
# A PID alone may be reused: a process is identified by its PID and its
# start time (field 22 of /proc/PID/stat, after the parenthesised comm,
# which may hold spaces).

proc_state() { # proc_state PID: its state letter (Z: a zombie); nothing if gone
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  echo "${stat%% *}"
}
proc_start() { # proc_start PID: its start time; nothing if gone or a zombie
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  # shellcheck disable=SC2086 # the fields, split on spaces
  set -- $stat
  [ "$1" != Z ] || return 0
  echo "${20}"
}
# is_alive PID START: the process recorded as "PID START" still runs.
is_alive() { [ -n "$2" ] && [ "$(proc_start "$1")" = "$2" ]; }
