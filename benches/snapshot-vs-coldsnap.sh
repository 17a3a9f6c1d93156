#!/usr/bin/env bash
# ami snapshot against coldsnap upload: the same image, into the same EBS
# direct API server (moto on loopback), in one run.
#
# Usage: benches/snapshot-vs-coldsnap.sh [IMAGE (default out/disk.img)] [RUNS (default 1)]
#
# IMAGE is normally the disk.img of `ami build`; the build.json beside it
# gives `ami snapshot` the filesystem's allocated ranges, so it sends
# exactly the allocated 512 KiB blocks (without a usable build.json it
# reads the whole image and skips all-zero blocks, and says so; its first
# line of stderr is printed below).
#
# Needs python3 with moto[server] and boto3 (`python3 -m pip install
# 'moto[server]' boto3`; AMI_PYTHON chooses the interpreter) and GNU time
# (`apt-get install time`). coldsnap is taken from AMI_BENCH_COLDSNAP or
# PATH; with AMI_BENCH_INSTALL_COLDSNAP=1 and none found, the script runs
# `cargo install coldsnap --locked` into a temporary root first (a long
# build). Without coldsnap only ami is measured.
#
# It starts `python3 -m moto.server` on a free loopback port, points both
# tools at it (AWS_ENDPOINT_URL, fixed fake credentials, region us-east-1,
# no profile, no IMDS), builds ami in release mode, and runs RUNS rounds of
#   ami       ami snapshot IMAGE --endpoint-url URL --region us-east-1 --json
#             (AMI_BENCH_CONCURRENCY sets --concurrency; default: ami's)
#   coldsnap  coldsnap upload --no-progress IMAGE   (coldsnap's defaults)
#   coldsnap-omit  coldsnap upload --no-progress --omit-zero-blocks IMAGE
#             (only if this coldsnap has the flag)
# timed with /usr/bin/time (wall seconds, peak RSS). After each upload it
# counts the blocks the server holds (ListSnapshotBlocks through boto3),
# then resets moto so that memory does not pile up. It prints every run,
# the medians, MB/s of image bytes and of bytes sent, and checks:
#   ami's blocks on the server == the blocks its report says it sent
#   ami's blocks == the blocks overlapping build.json's allocated ranges
#     (when there is one)
#   ami blocks <= coldsnap blocks
#   the snapshot read back by an independent client
#     (ami-bundle/tests/ebs_read_snapshot.py) equals the image byte for
#     byte (AMI_BENCH_VERIFY=0 skips it)
# Moto is a single Python process: the MB/s measure the clients plus
# moto's request handling on this machine, not what EBS would do. Compare
# the tools with each other in one run, on an otherwise idle machine.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
image=${1:-$repo/out/disk.img}
runs=${2:-1}
python=${AMI_PYTHON:-python3}
coldsnap=${AMI_BENCH_COLDSNAP:-$(command -v coldsnap || true)}
concurrency=${AMI_BENCH_CONCURRENCY:-}
verify=${AMI_BENCH_VERIFY:-1}

die() {
    echo "error: $*" >&2
    exit 1
}

[[ -x /usr/bin/time ]] || die "/usr/bin/time not found (apt-get install time)"
command -v cargo >/dev/null || die "cargo not found"
"$python" -c 'import moto.server, boto3' 2>/dev/null ||
    die "$python cannot import moto.server and boto3 (python3 -m pip install 'moto[server]' boto3)"
[[ -f $image ]] || die "$image is not a file (make one with: ami build --out out)"
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, not $runs"
image=$(realpath "$image")
image_bytes=$(stat -c %s "$image")
image_blocks=$(((image_bytes + 524287) / 524288))

work=$(mktemp -d "${TMPDIR:-/tmp}/ami-snapshot-bench.XXXXXX")
moto_pid=
cleanup() {
    if [[ -n $moto_pid ]]; then
        kill "$moto_pid" 2>/dev/null || true
        wait "$moto_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "== building ami (release)"
(cd "$repo" && cargo build --release --locked -p ami-cli)
ami=${CARGO_TARGET_DIR:-$repo/target}/release/ami
[[ -x $ami ]] || die "no binary at $ami"

if [[ -z $coldsnap && ${AMI_BENCH_INSTALL_COLDSNAP:-0} == 1 ]]; then
    echo "== installing coldsnap into $work/coldsnap (cargo install --locked; this takes a while)"
    CARGO_HOME=${CARGO_HOME:-$HOME/.cargo} cargo install coldsnap --locked --root "$work/coldsnap" >&2
    coldsnap=$work/coldsnap/bin/coldsnap
fi
tools=(ami)
coldsnap_flags=()
if [[ -n $coldsnap ]]; then
    tools+=(coldsnap)
    if "$coldsnap" upload --help 2>&1 | grep -q -- --no-progress; then
        coldsnap_flags+=(--no-progress)
    fi
    if "$coldsnap" upload --help 2>&1 | grep -q -- --omit-zero-blocks; then
        tools+=(coldsnap-omit)
    fi
    echo "== coldsnap: $coldsnap ($("$coldsnap" --version 2>/dev/null || echo 'version unknown'))"
else
    echo "== coldsnap not found (set AMI_BENCH_COLDSNAP, put it on PATH, or AMI_BENCH_INSTALL_COLDSNAP=1): measuring ami only"
fi

port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
endpoint=http://127.0.0.1:$port
# moto 5 reports BlockSize 512 from StartSnapshot and ListSnapshotBlocks;
# EBS reports 524288. coldsnap cuts the image into blocks of the reported
# size (4 million 512-byte "blocks" for 2 GiB), so moto is started with the
# real value patched in. ami uses the API's fixed 512 KiB either way.
"$python" - "$port" >"$work/moto.log" 2>&1 <<'EOF' &
import sys
import moto.ebs.models as ebs
init = ebs.EBSSnapshot.__init__
def patched(self, *args, **kwargs):
    init(self, *args, **kwargs)
    self.block_size = 524288
ebs.EBSSnapshot.__init__ = patched
from moto.server import main
main(["-H", "127.0.0.1", "-p", sys.argv[1]])
EOF
moto_pid=$!
"$python" - "$endpoint" <<'EOF' || die "moto did not start (see its log above)"
import sys, time, urllib.request
for _ in range(600):
    try:
        urllib.request.urlopen(sys.argv[1] + "/moto-api/data.json", timeout=2).read()
        sys.exit(0)
    except Exception:
        time.sleep(0.1)
sys.exit(1)
EOF
echo "== moto on $endpoint"

export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE
export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ENDPOINT_URL=$endpoint
export AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_SESSION_TOKEN

# Blocks the allocated ranges of build.json cover (empty if none).
build_json=$(dirname "$image")/build.json
expected_blocks=$("$python" - "$build_json" "$image_bytes" <<'EOF'
import json, sys
try:
    doc = json.load(open(sys.argv[1]))
except Exception:
    sys.exit(0)
ranges = doc.get("allocated")
if not isinstance(ranges, list) or doc.get("image_bytes") != int(sys.argv[2]):
    sys.exit(0)
blocks = set()
for start, end in ranges:
    if end > start:
        blocks.update(range(start // 524288, (end + 524287) // 524288))
print(len(blocks))
EOF
)

# server_blocks SNAPSHOT_ID: how many blocks moto holds for the snapshot.
server_blocks() {
    "$python" - "$endpoint" "$1" <<'EOF'
import sys, boto3
ebs = boto3.client("ebs", endpoint_url=sys.argv[1])
blocks, kwargs, seen = set(), {"SnapshotId": sys.argv[2]}, set()
while True:
    page = ebs.list_snapshot_blocks(**kwargs)
    blocks.update(int(b["BlockIndex"]) for b in page.get("Blocks", []))
    token = page.get("NextToken")
    if not token or token in seen:
        break
    seen.add(token)
    kwargs["NextToken"] = token
print(len(blocks))
EOF
}

reset_moto() {
    "$python" -c 'import sys, urllib.request; urllib.request.urlopen(urllib.request.Request(sys.argv[1] + "/moto-api/reset", method="POST")).read()' "$endpoint"
}

# measure NAME COMMAND...: sets $secs and $rss_mb.
measure() {
    local name=$1
    shift
    local status=0
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out" 2>"$work/err" || status=$?
    if [[ $status -ne 0 ]]; then
        echo "$name failed (exit status $status):" >&2
        tail -n 20 "$work/err" >&2
        exit 1
    fi
    read -r secs rss_kb < <(tail -n 1 "$work/time")
    rss_mb=$(awk -v k="$rss_kb" 'BEGIN { printf "%.1f", k / 1024 }')
}

median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Warm the page cache.
cat "$image" >/dev/null
echo "== $image: $image_bytes bytes, $image_blocks blocks of 512 KiB${expected_blocks:+, $expected_blocks of them allocated (build.json)}"

declare -A times rss blocks
ami_reported= ami_snapshot= ami_choice= verified=
printf '%-4s %-14s %9s %10s %8s\n' run tool seconds "peak MB" blocks
for ((run = 1; run <= runs; run++)); do
    for tool in "${tools[@]}"; do
        case $tool in
        ami)
            measure ami "$ami" snapshot "$image" --endpoint-url "$endpoint" --region us-east-1 \
                --json ${concurrency:+--concurrency "$concurrency"}
            snap=$(grep -o '"snapshot_id":"[^"]*"' "$work/out" | cut -d'"' -f4)
            ami_reported=$(grep -o '"blocks_sent":[0-9]*' "$work/out" | cut -d: -f2)
            ami_choice=$(head -n 1 "$work/err")
            ;;
        coldsnap)
            measure coldsnap "$coldsnap" upload "${coldsnap_flags[@]}" "$image"
            snap=$(grep -o 'snap-[0-9a-f]*' "$work/out" | tail -n 1)
            ;;
        coldsnap-omit)
            measure coldsnap-omit "$coldsnap" upload "${coldsnap_flags[@]}" --omit-zero-blocks "$image"
            snap=$(grep -o 'snap-[0-9a-f]*' "$work/out" | tail -n 1)
            ;;
        esac
        [[ -n $snap ]] || die "$tool printed no snapshot id"
        n=$(server_blocks "$snap")
        if [[ $tool == ami && $verify == 1 && -z $verified ]]; then
            "$python" "$repo/ami-bundle/tests/ebs_read_snapshot.py" --endpoint "$endpoint" \
                --snapshot "$snap" --size "$image_bytes" --out "$work/readback.img" >/dev/null
            if cmp -s "$image" "$work/readback.img"; then verified=1; else verified=0; fi
            rm -f "$work/readback.img"
        fi
        reset_moto
        times[$tool]+="$secs "
        rss[$tool]+="$rss_mb "
        blocks[$tool]=$n
        printf '%-4s %-14s %9s %10s %8s\n' "$run" "$tool" "$secs" "$rss_mb" "$n"
    done
done

rate() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", (s > 0 ? b / s / 1e6 : 0) }'; }
echo
echo "== medians of $runs run(s)"
echo "ami chose: $ami_choice"
printf '%-14s %9s %10s %8s %12s %12s\n' tool seconds "peak MB" blocks "image MB/s" "sent MB/s"
declare -A med
for tool in "${tools[@]}"; do
    # shellcheck disable=SC2086
    med[$tool]=$(median ${times[$tool]})
    # shellcheck disable=SC2086
    printf '%-14s %9s %10s %8s %12s %12s\n' "$tool" "${med[$tool]}" "$(median ${rss[$tool]})" \
        "${blocks[$tool]}" "$(rate "$image_bytes" "${med[$tool]}")" \
        "$(rate "$((blocks[$tool] * 524288))" "${med[$tool]}")"
done
for tool in "${tools[@]}"; do
    [[ $tool == ami ]] && continue
    echo "  $tool / ami (time): $(awk -v a="${med[$tool]}" -v b="${med[ami]}" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
done

failed=0
check() { # description ok(1/0) detail
    if [[ $2 == 1 ]]; then
        printf '  %-52s ok   %s\n' "$1" "$3"
    else
        printf '  %-52s MISSED   %s\n' "$1" "$3"
        failed=1
    fi
}
echo
echo "== checks"
check "ami: blocks on the server == blocks reported sent" \
    "$([[ ${blocks[ami]} == "$ami_reported" ]] && echo 1 || echo 0)" "${blocks[ami]} / $ami_reported"
if [[ -n $expected_blocks ]]; then
    check "ami: blocks sent == allocated blocks (build.json)" \
        "$([[ ${blocks[ami]} == "$expected_blocks" ]] && echo 1 || echo 0)" \
        "${blocks[ami]} / $expected_blocks of $image_blocks"
fi
for tool in "${tools[@]}"; do
    [[ $tool == ami ]] && continue
    check "ami blocks <= $tool blocks" "$((blocks[ami] <= blocks[$tool] ? 1 : 0))" \
        "${blocks[ami]} / ${blocks[$tool]}"
done
if [[ $verify == 1 ]]; then
    check "ami's snapshot read back (boto3) == the image" "${verified:-0}" ""
fi
exit "$failed"
