#!/usr/bin/env bash
# A/B timing of library builds in one run on one machine: the same
# arnorm-bench binary against each variant in turn, the whole list twice
# (A B C A B C), so drift between the rounds shows. Compare only within one
# run (docs/perf-notes.md).
#
#   VARIANTS="base new new:ARNORM_FUSED_PAIRS=0" scripts/ab-bench.sh [arnorm-bench flags]
#
# A variant is NAME[:ENV=VALUE[,ENV=VALUE...]]. NAME "base" is the library
# in $BUILD/src; any other NAME is $LIBS/NAME.xz (an xz-compressed
# libarnorm.so.X.Y.Z, built elsewhere: small enough to carry to a lent
# machine). The bench runs with -g ${GPUS:-2} and --op fused unless the
# flags give their own; per variant the table goes to
# $OUT/NAME[-ENV]-roundK.txt (ENV with = and , as _), and for the fused op with its default
# --algos a short line per row to stdout.
set -uo pipefail
BUILD=${BUILD:-build}
LIBS=${LIBS:-$BUILD}
OUT=${OUT:-out}
ROUNDS=${ROUNDS:-2}
mkdir -p "$OUT"
[ -n "${VARIANTS:-}" ] || { echo "set VARIANTS (see the header of $0)"; exit 2; }
bench="$BUILD/tools/bench/arnorm-bench"
[ -x "$bench" ] || { echo "no $bench: build first (scripts/build.sh)"; exit 2; }
# shellcheck source=scripts/gpu-env.sh
. "$(dirname "$0")/gpu-env.sh"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# Defaults the flags do not set themselves; the short lines only where the
# columns are the fused op's defaults.
have_op=0 have_g=0 summary=1 prev=""
for a in "$@"; do
  case $a in
    --op=*) have_op=1; [ "${a#--op=}" = fused ] || summary=0 ;;
    --op) have_op=1 ;;
    -g | -g[0-9]* | --ngpus | --ngpus=*) have_g=1 ;;
    --algos | --algos=*) summary=0 ;;
  esac
  [ "$prev" = --op ] && [ "$a" != fused ] && summary=0
  prev=$a
done
args=()
[ "$have_op" = 1 ] || args+=(--op fused)
[ "$have_g" = 1 ] || args+=(-g "${GPUS:-2}")
status=0
for round in $(seq 1 "$ROUNDS"); do
  for v in $VARIANTS; do
    name=${v%%:*}
    envs=""
    [ "$name" != "$v" ] && envs=${v#*:}
    if [ "$name" = base ]; then
      dir=$(cd "$BUILD/src" && pwd)
    else
      dir="$scratch/$name"
      if [ ! -e "$dir/libarnorm.so.0" ]; then
        mkdir -p "$dir"
        arnorm_unpack "$LIBS/$name.xz" "$dir/libarnorm.so.0" || { echo "cannot unpack $LIBS/$name.xz"; exit 2; }
      fi
    fi
    # (only letters, digits, _ and - in file names: the device tool returns no others)
    log="$OUT/${name}${envs:+-${envs//[^A-Za-z0-9_]/_}}-round$round.txt"
    echo "== round $round: $v"
    # shellcheck disable=SC2086
    if ! env ${envs//,/ } LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" timeout "${STEP_TIMEOUT:-300}" \
        "$bench" "${args[@]}" "$@" > "$log" 2>&1; then
      echo "   failed (log: $log)"
      status=1
    fi
    [ "$summary" = 1 ] || { echo "   table: $log"; continue; }
    # tokens hidden | nccl+norm | oneshot twoshot auto | pick ratio
    awk '/^ +[0-9]/ {printf "   %6s x %-6s n+n %8s  1s %8s  2s %8s  auto %8s  %-8s %s\n", $1, $2, $8, $10, $12, $14, $16, $17}' "$log"
  done
done
exit $status
