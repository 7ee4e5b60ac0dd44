#!/bin/bash
# Runs "$@" with every other heavy process on the machine stopped (SIGSTOP) for its duration, then resumes
# them (SIGCONT). Keeps scanning while the command runs, so processes started meanwhile are stopped too.
# For benchmarks on a shared machine: bench/quiet.sh COMMAND... (run as the user owning the other jobs, or root). Excludes this script's own process tree (ancestors and descendants).
self=$$
declare -A stopped
is_related() {  # $1 pid: ancestor or descendant of $self?
  local a=$1
  while [ -n "$a" ] && [ "$a" != "0" ] && [ "$a" != "1" ]; do [ "$a" = "$self" ] && return 0; a=$(awk '{print $4}' /proc/$a/stat 2>/dev/null); done
  a=$self
  while [ -n "$a" ] && [ "$a" != "0" ] && [ "$a" != "1" ]; do [ "$a" = "$1" ] && return 0; a=$(awk '{print $4}' /proc/$a/stat 2>/dev/null); done
  return 1
}
scan() {
  for p in $(ps -eo pid=); do
    [ -n "${stopped[$p]}" ] && continue
    [ -r /proc/$p/cmdline ] || continue
    cmd=$(tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null)
    case "$cmd" in
      *dotnet*|*cmake*|*c++*|*cc1plus*|*g++*|*make*|*testhost*|*quantc*|*ctest*|*/ld\ *|*chromium*|*csc*|*VBCSCompiler*|*as\ *) ;;
      *) continue ;;
    esac
    is_related "$p" && continue
    kill -STOP "$p" 2>/dev/null && stopped[$p]=1
  done
}
resume() { [ ${#stopped[@]} -gt 0 ] && kill -CONT "${!stopped[@]}" 2>/dev/null; }
trap resume EXIT INT TERM
scan; sleep 2; scan
echo "quiet.sh: paused ${#stopped[@]} processes; load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$@" &
child=$!
while kill -0 $child 2>/dev/null; do scan; sleep 0.5; done
wait $child
