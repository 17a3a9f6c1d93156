#!/usr/bin/env bash
# ami mkfs against mke2fs -d and the copy floor, on the same directory tree.
#
# Usage: benches/mkfs-vs-mke2fs.sh [SOURCE_DIR (default /usr)] [RUNS (default 3)]
#
# Builds ami in release mode, then, into tmpfs (AMI_BENCH_DIR, default
# /dev/shm), runs RUNS rounds of, in turn:
#   floor   find SOURCE -type f -print0 | xargs -0 cat > one-file
#   mke2fs  mke2fs -q -F -t ext4 -b 4096 -d SOURCE img SIZE
#   ami     ami mkfs --root-owner --size SIZE SOURCE img
# with the same SIZE for both (ami's fitted size with 20 % headroom), timing
# each with /usr/bin/time (wall seconds, peak RSS). Prints every run, the
# medians and the ratios against the targets:
#   mke2fs / ami  >= 3     (ami at least three times faster)
#   ami / floor   <= 2     (ami at most twice the time of copying the data)
#   ami peak RSS  < 100 MB (target for a tree of ~140k entries, such as /usr)
# then checks ami's image with e2fsck -fn, and times the case "100,000
# entries in one directory" (mke2fs is quadratic there; capped at 120 s).
#
# Run it as root (so every file of SOURCE is readable) on an otherwise idle
# machine. Exits 1 if a target is missed or a tool fails.
set -euo pipefail

source_dir=${1:-/usr}
runs=${2:-3}
repo=$(cd "$(dirname "$0")/.." && pwd)
bench_dir=${AMI_BENCH_DIR:-/dev/shm}

die() {
    echo "error: $*" >&2
    exit 1
}

for tool in mke2fs e2fsck find xargs cat timeout awk cargo; do
    command -v "$tool" >/dev/null || PATH=$PATH:/usr/sbin:/sbin
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install e2fsprogs findutils coreutils)"
done
[[ -x /usr/bin/time ]] || die "/usr/bin/time not found (apt-get install time)"
[[ -d $source_dir ]] || die "$source_dir is not a directory"
[[ -d $bench_dir ]] || die "$bench_dir does not exist (set AMI_BENCH_DIR to a tmpfs directory)"
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, not $runs"

echo "== building ami (release)"
(cd "$repo" && cargo build --release --locked -p ami-cli)
ami=${CARGO_TARGET_DIR:-$repo/target}/release/ami
[[ -x $ami ]] || die "no binary at $ami"

work=$(mktemp -d "$bench_dir/ami-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

# measure NAME COMMAND...: runs COMMAND under /usr/bin/time; sets $secs and
# $rss_mb, and $status to the command's exit status.
measure() {
    local name=$1
    shift
    status=0
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out" 2>"$work/err" || status=$?
    read -r secs rss_kb <"$work/time" || true
    # GNU time writes "Command exited with non-zero status N" first on failure.
    if [[ $status -ne 0 ]]; then
        read -r secs rss_kb < <(tail -n 1 "$work/time")
    fi
    rss_mb=$(awk -v k="$rss_kb" 'BEGIN { printf "%.1f", k / 1024 }')
    if [[ $status -ne 0 && $status -ne 124 ]]; then
        echo "$name failed (exit status $status):" >&2
        cat "$work/err" >&2
        exit 1
    fi
}

median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

entries=$(find "$source_dir" | wc -l)
data_bytes=$(find "$source_dir" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f\n", s }')
echo "== $source_dir: $entries entries, $((data_bytes / 1048576)) MiB in regular files"

# Size both images alike: ami's fitted size. This run also warms the page
# cache, so that every timed run reads the source from memory.
"$ami" mkfs --root-owner --json --headroom 20 "$source_dir" "$work/fit.img" >"$work/fit.json" 2>"$work/fit.err" ||
    die "ami mkfs failed: $(cat "$work/fit.err")"
size=$(grep -o '"size_bytes":[0-9]*' "$work/fit.json" | cut -d: -f2)
rm -f "$work/fit.img"
[[ -n $size ]] || die "could not read the size from ami's report: $(cat "$work/fit.json")"
size_kib=$((size / 1024))
echo "== image size: $size bytes ($((size / 1048576)) MiB), $runs runs, in $work"
echo

floor_t=() mke2fs_t=() ami_t=() ami_rss=() mke2fs_rss=()
printf '%-4s %-7s %9s %10s\n' run tool seconds "peak MB"
for ((run = 1; run <= runs; run++)); do
    measure floor bash -c 'set -o pipefail; find "$1" -type f -print0 | xargs -0 cat >"$2"' _ \
        "$source_dir" "$work/one-file"
    rm -f "$work/one-file"
    floor_t+=("$secs")
    printf '%-4s %-7s %9s %10s\n' "$run" floor "$secs" "$rss_mb"

    measure mke2fs mke2fs -q -F -t ext4 -b 4096 -d "$source_dir" "$work/mke2fs.img" "${size_kib}k"
    rm -f "$work/mke2fs.img"
    mke2fs_t+=("$secs")
    mke2fs_rss+=("$rss_mb")
    printf '%-4s %-7s %9s %10s\n' "$run" mke2fs "$secs" "$rss_mb"

    measure ami "$ami" mkfs --root-owner --size "$size" "$source_dir" "$work/ami.img"
    ami_t+=("$secs")
    ami_rss+=("$rss_mb")
    printf '%-4s %-7s %9s %10s\n' "$run" ami "$secs" "$rss_mb"
    if [[ $run -eq 1 ]]; then
        echo "     e2fsck -fn on ami's image:"
        if ! e2fsck -fn "$work/ami.img" >"$work/fsck" 2>&1; then
            cat "$work/fsck"
            die "e2fsck found problems in ami's image"
        fi
        sed 's/^/       /' "$work/fsck" | tail -n 1
    fi
    rm -f "$work/ami.img"
done

floor_m=$(median "${floor_t[@]}")
mke2fs_m=$(median "${mke2fs_t[@]}")
ami_m=$(median "${ami_t[@]}")
ami_rss_m=$(median "${ami_rss[@]}")
mke2fs_rss_m=$(median "${mke2fs_rss[@]}")
echo
echo "== medians of $runs runs"
printf '%-7s %9s %10s %12s\n' tool seconds "peak MB" "MB/s (data)"
for row in "floor $floor_m -" "mke2fs $mke2fs_m $mke2fs_rss_m" "ami $ami_m $ami_rss_m"; do
    read -r name s m <<<"$row"
    rate=$(awk -v b="$data_bytes" -v s="$s" 'BEGIN { printf "%.0f", (s > 0 ? b / s / 1e6 : 0) }')
    printf '%-7s %9s %10s %12s\n' "$name" "$s" "$m" "$rate"
done

failed=0
check() { # description value op target
    local ok
    ok=$(awk -v v="$2" -v t="$4" -v op="$3" 'BEGIN {
        if (op == ">=") r = v >= t; else if (op == "<=") r = v <= t; else r = v < t; print r }')
    if [[ $ok == 1 ]]; then
        printf '  %-28s %8s   (required %s %s)  ok\n' "$1" "$2" "$3" "$4"
    else
        printf '  %-28s %8s   (required %s %s)  MISSED\n' "$1" "$2" "$3" "$4"
        failed=1
    fi
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
echo
echo "== ratios"
check "mke2fs / ami (time)" "$(ratio "$mke2fs_m" "$ami_m")" ">=" 3
check "ami / floor (time)" "$(ratio "$ami_m" "$floor_m")" "<=" 2
check "ami peak RSS (MB)" "$ami_rss_m" "<" 100
echo "  (the RSS target is for a tree of ~140k entries; this one has $entries)"

echo
echo "== 100,000 entries in one directory"
onedir=$work/one-dir
mkdir "$onedir"
(cd "$onedir" && seq -f 'file-%06.0f' 1 100000 | xargs touch)
measure ami "$ami" mkfs --root-owner --size 1G --inodes 120000 "$onedir" "$work/ami.img"
printf '  %-7s %9s s %8s MB\n' ami "$secs" "$rss_mb"
if ! e2fsck -fn "$work/ami.img" >"$work/fsck" 2>&1; then
    cat "$work/fsck"
    die "e2fsck found problems in ami's one-directory image"
fi
rm -f "$work/ami.img"
measure mke2fs timeout 120 mke2fs -q -F -t ext4 -b 4096 -N 120000 -d "$onedir" "$work/mke2fs.img" 1G
if [[ $status -eq 124 ]]; then
    printf '  %-7s %9s\n' mke2fs "> 120 s (stopped)"
else
    printf '  %-7s %9s s %8s MB\n' mke2fs "$secs" "$rss_mb"
fi
rm -f "$work/mke2fs.img"

exit "$failed"
