#!/usr/bin/env bash
# Runs attn_bench's kernel cases once on every attention core path this CPU
# runs (each forced with ATTN_KERNEL_ISA), under each oneDNN ISA cap asked
# for (ONEDNN_MAX_CPU_ISA), and writes one JSON file and one Markdown table
# of efficiency against oneDNN's GEMM roofline, measured in the same run as
# each case (bf16 cases also show bf16 ÷ fp32 throughput of the same run).
# Paths the CPU cannot run are listed as "not runnable here" with the
# FAILED_PRECONDITION message the kernel gives when forced; never timed.
#
#   bench/isa_matrix.sh [--out PREFIX] [--filter REGEX] [--threads N]
#                       [--min_time SECONDS] [--isas "scalar hwy_avx2 ..."]
#                       [--max_cpu_isas "default AVX2 ..."] [--label TEXT]
#
# Writes PREFIX.json and PREFIX.md (default bench/results/isa_matrix).
# --filter is attn_bench's (default: none, i.e. every case but the "extra"
# ones, the 16k-token memory case and the single 16-token request, which
# run only when a filter names them). --isas limits the paths timed
# (default: "default", the path chosen with ATTN_KERNEL_ISA unset, then
# every path this CPU runs, per cap).
# --max_cpu_isas: the ONEDNN_MAX_CPU_ISA values to run under; "default"
# means the environment as it is. Default: "default", plus "AVX2" on
# AVX-512 CPUs (what an AVX2-only CPU such as AMD EPYC Rome/Milan gets).
# The cap limits both the roofline GEMM and the paths that run.
# --label names the CPU in the titles (default: /proc/cpuinfo's model name
# and the thread count). ATTN_BENCH (default build/bench/attn_bench) is the
# binary.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
out=bench/results/isa_matrix
filter=''
threads=$(nproc)
min_time=1.0
isas=""
caps=""
label=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --filter) filter="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --min_time) min_time="$2"; shift 2 ;;
    --isas) isas="$2"; shift 2 ;;
    --max_cpu_isas) caps="$2"; shift 2 ;;
    --label) label="$2"; shift 2 ;;
    *) echo "isa_matrix: unknown argument $1" >&2; exit 2 ;;
  esac
done
bench="${ATTN_BENCH:-build/bench/attn_bench}"
if [ ! -x "$bench" ]; then
  echo "isa_matrix: $bench not found (run scripts/build.sh first)" >&2
  exit 1
fi
if [ -z "$caps" ]; then
  caps="default"
  if [ -z "${ONEDNN_MAX_CPU_ISA:-}" ] && grep -qw avx512f /proc/cpuinfo; then
    caps="default AVX2"
  fi
fi
if [ -z "$label" ]; then
  label="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  label="${label:-$(uname -m)}, $threads threads"
fi
mkdir -p "$(dirname "$out")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Runs attn_bench under cap $1 (an ONEDNN_MAX_CPU_ISA value or "default").
with_cap() {
  local cap="$1"
  shift
  if [ "$cap" = default ]; then "$@"; else ONEDNN_MAX_CPU_ISA="$cap" "$@"; fi
}

known="$("$bench" --list_known_isas | tr '\n' ' ')"
for cap in $caps; do
  mkdir -p "$tmp/$cap"
  runnable=" $(with_cap "$cap" "$bench" --list_isas | tr '\n' ' ') "
  # "default": ATTN_KERNEL_ISA unset, what a server on this CPU runs (for
  # bf16 layers on AVX512-BF16 CPUs, the calibrated vdpbf16ps/fp32 split).
  if [ -z "$isas" ] || [[ " $isas " == *" default "* ]]; then
    echo "isa_matrix: ONEDNN_MAX_CPU_ISA=$cap, ATTN_KERNEL_ISA unset" >&2
    with_cap "$cap" env -u ATTN_KERNEL_ISA "$bench" --json \
      ${filter:+--filter "$filter"} --threads "$threads" \
      --min_time "$min_time" >"$tmp/$cap/default.json"
  fi
  for isa in $known; do
    if [[ "$runnable" == *" $isa "* ]]; then
      if [ -n "$isas" ] && [[ " $isas " != *" $isa "* ]]; then continue; fi
      echo "isa_matrix: ONEDNN_MAX_CPU_ISA=$cap ATTN_KERNEL_ISA=$isa" >&2
      with_cap "$cap" env ATTN_KERNEL_ISA="$isa" "$bench" --json \
        ${filter:+--filter "$filter"} --threads "$threads" \
        --min_time "$min_time" >"$tmp/$cap/$isa.json"
    else
      # Not runnable here: the kernel must refuse it when forced (checked
      # on the smallest case, which creates its layer before any timing).
      if with_cap "$cap" env ATTN_KERNEL_ISA="$isa" "$bench" --json \
        --filter '^single_1x16_d256_h4_bf16$' --min_time 0.01 \
        >/dev/null 2>"$tmp/$cap/$isa.refused"; then
        echo "isa_matrix: $isa is not listed as runnable but ran" >&2
        exit 1
      fi
      if ! grep -q FAILED_PRECONDITION "$tmp/$cap/$isa.refused"; then
        echo "isa_matrix: $isa failed without FAILED_PRECONDITION:" >&2
        cat "$tmp/$cap/$isa.refused" >&2
        exit 1
      fi
    fi
  done
done

ISA_MATRIX_KNOWN="$known" /usr/bin/python3 - "$tmp" "$out" "$label" "$threads" \
  $caps <<'PY'
import json, os, sys
tmp, out, label, threads, caps = (sys.argv[1], sys.argv[2], sys.argv[3],
                                  sys.argv[4], sys.argv[5:])
known = os.environ["ISA_MATRIX_KNOWN"].split()  # kernel_isa.h's order
doc = {"cpu": label, "threads": int(threads), "runs": []}
lines = []
for cap in caps:
    d = os.path.join(tmp, cap)
    at = lambda isa, ext: os.path.join(d, isa + ext)
    paths = {isa: json.load(open(at(isa, ".json")))
             for isa in ["default"] + known if os.path.exists(at(isa, ".json"))}
    refused = {isa: open(at(isa, ".refused")).read().strip().splitlines()[-1]
               for isa in known if os.path.exists(at(isa, ".refused"))}
    doc["runs"].append({"onednn_max_cpu_isa": None if cap == "default" else cap,
                        "paths": paths, "not_runnable_here": refused})
    isas = list(paths)
    capname = ("" if cap == "default" else f", ONEDNN_MAX_CPU_ISA={cap}")
    lines += [f"Efficiency against oneDNN's GEMM roofline ({label}{capname}); "
              "bf16 rows also bf16 ÷ fp32 throughput", ""]
    if not isas:
        lines += ["(no path timed)", ""]
    else:
        lines += ["| case | " + " | ".join(isas) + " |",
                  "|---|" + "---|" * len(isas)]
        for case in [r["name"] for r in paths[isas[0]]]:
            cells = []
            for isa in isas:
                r = next(x for x in paths[isa] if x["name"] == case)
                cell = f"{r['efficiency']:.2f}"
                if "speedup_vs_fp32" in r:
                    cell += f" ({r['speedup_vs_fp32']:.2f}×)"
                cells.append(cell)
            lines.append(f"| {case} | " + " | ".join(cells) + " |")
        roofs = sorted({f"{r['roofline_impl']} {r.get('roofline_dtype', '')}"
                        for r in paths[isas[0]]})
        lines += ["", "Roofline GEMMs: " + ", ".join(roofs) + "."]
    if refused:
        lines += ["", "Not runnable here: " + ", ".join(refused) +
                  " (forced, each is refused with FAILED_PRECONDITION)."]
    lines.append("")
with open(out + ".json", "w") as f:
    json.dump(doc, f, indent=2)
with open(out + ".md", "w") as f:
    f.write("\n".join(lines))
print("\n".join(lines))
PY
echo "isa_matrix: wrote $out.json and $out.md in $(( $(date +%s) - start )) s" >&2
