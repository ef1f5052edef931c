# Output helpers shared by the demo scripts (sourced, not run). The caller sets T, its temp dir,
# which `run` shortens to $T when it prints a command.
if [ -t 1 ]; then B=$'\e[1m' G=$'\e[32m' R=$'\e[31m' N=$'\e[0m'; else B='' G='' R='' N=''; fi
STEP=0
step() { STEP=$((STEP + 1)); printf '\n%s== Step %d: %s ==%s\n' "$B" "$STEP" "$1" "$N"; }
say()  { printf '%s\n' "$*"; }
# run CMD...: print the command (paths shortened: $T for the temp dir), then run it.
run()  { local s="$*"; printf '%s$ %s%s\n' "$B" "${s//$T/\$T}" "$N"; "$@"; }
# check DESCRIPTION CMD...: the step fails unless CMD succeeds.
check() {
    local what=$1; shift
    if "$@"; then
        printf '  %sok%s: %s\n' "$G" "$N" "$what"
    else
        printf '  %sFAILED%s: %s\n' "$R" "$N" "$what" >&2
        exit 1
    fi
}
not() { ! "$@"; }
