#!/bin/sh
# arnorm-bench's usage errors, which it finds before looking for GPUs (so
# this runs anywhere, fast): each exits 1, the documented status, and says
# what was wrong. $1: the arnorm-bench binary.
bench=$1
fail=0
expect_usage_error() {  # WHAT-STDERR-SAYS ARGS...
  want=$1
  shift
  err=$("$bench" "$@" 2>&1 >/dev/null)
  s=$?
  if [ $s -ne 1 ]; then
    echo "arnorm-bench $*: exit status $s, expected 1"
    fail=1
  fi
  case $err in
    *"$want"*) ;;
    *) echo "arnorm-bench $*: stderr lacks '$want':"; echo "$err"; fail=1 ;;
  esac
}
expect_usage_error "no-such-flag" --no-such-flag
expect_usage_error "notasize" -b notasize
expect_usage_error "float16" -d double
# -J and --tune are written after the sweep, so they are checked before it;
# nccl-tests' "bfloat16" is accepted on the way there.
expect_usage_error "-J /nonexistent-arnorm-dir/r.json: cannot write in /nonexistent-arnorm-dir" \
  -d bfloat16 -J /nonexistent-arnorm-dir/r.json
tmp=$(mktemp -d)
expect_usage_error "is a folder" -J "$tmp"
echo "not json" >"$tmp/table.json"
expect_usage_error "is not a selection table" --weight-dtype fp32 --tune "$tmp/table.json"
# Eager timing (-G 0) is accepted, but not for a selection table.
expect_usage_error "--tune needs CUDA-graph timing" -G 0 --tune "$tmp/new-table.json"
# In-place runs are of the all-reduce sweep; the fused op has no separate out.
expect_usage_error "--in-place applies to the all-reduce sweep" --op fused --in-place
rm -rf "$tmp"
"$bench" --help >/dev/null || { echo "--help failed"; fail=1; }
exit $fail
