#!/usr/bin/env bash
# CI stage: Clang's thread-safety analysis (-Wthread-safety, as errors) over
# every .cc under server/, kernels/ and client/ that uses Abseil's lock
# annotations (ABSL_GUARDED_BY, ABSL_PT_GUARDED_BY, ABSL_*LOCKS_REQUIRED,
# ABSL_LOCKS_EXCLUDED) itself or through the project headers it includes
# (transitively). Files are selected by searching the sources, so new ones are
# covered without editing this script.
# Include paths and defines come from build/compile_commands.json (configured
# and the generated protobuf headers built here if missing).
# Needs clang-14 (scripts/setup.sh).
#   scripts/ci/thread_safety.sh          (about 1-2 min on 2 cores)
#   FAST=1 scripts/ci/thread_safety.sh   skipped (never when CI=true)
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
if [ "${FAST:-0}" = "1" ] && [ "${CI:-}" != "true" ]; then
  echo "thread_safety: skipped (FAST=1)"
  exit 0
fi
BUILD_DIR="${ATTN_BUILD_DIR:-build}"
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
# The generated protobuf/gRPC headers the sources include (nothing else is
# built).
mapfile -t generated < <(ninja -C "$BUILD_DIR" -t targets all |
                           grep -oE '^[^/:][^:]*\.pb\.h' | sort -u)
ninja -C "$BUILD_DIR" "${generated[@]}" >/dev/null

# Selection: a .cc is checked when it, or any project header it includes
# (transitively), uses the annotations. Flags: the -I/-isystem/-D/-std/-m
# options of its compile command. Runs ATTN_JOBS clang processes at a time.
ATTN_JOBS="${ATTN_JOBS:-$(nproc)}" /usr/bin/python3 - \
  "$BUILD_DIR/compile_commands.json" "$start" <<'PY'
import concurrent.futures, json, os, re, shlex, subprocess, sys, time
ANNOTATION = re.compile(r"\bABSL_(PT_)?GUARDED_BY\b|\bABSL_(EXCLUSIVE_|SHARED_)?"
                        r"LOCKS_REQUIRED\b|\bABSL_LOCKS_EXCLUDED\b")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
PROJECT = ("server/", "kernels/", "client/", "common/")
annotated = {}

def uses_annotations(path, seen):
    if path not in annotated:
        if path in seen:  # include cycle: decided by the outer call
            return False
        seen.add(path)
        try:
            body = open(path, encoding="utf-8").read()
        except OSError:  # generated (build tree) or a system header
            body = ""
        annotated[path] = bool(ANNOTATION.search(body)) or any(
            uses_annotations(inc, seen) for inc in INCLUDE.findall(body)
            if inc.startswith(PROJECT))
    return annotated[path]

def flags(entry):
    args = (shlex.split(entry["command"]) if "command" in entry
            else entry["arguments"])
    keep, it = [], iter(args)
    for a in it:
        if a in ("-I", "-isystem", "-D"):
            keep += [a, next(it)]
        elif a.startswith(("-I", "-isystem", "-D", "-std=", "-m")):
            keep.append(a)
    return keep

listed = subprocess.run(
    ["git", "ls-files", "--cached", "--others", "--exclude-standard",
     "server", "kernels", "client"],
    capture_output=True, text=True, check=True).stdout.split()
files = [f for f in sorted(listed)
         if f.endswith(".cc") and uses_annotations(f, set())]
db = {os.path.realpath(e["file"]): e for e in json.load(open(sys.argv[1]))}
missing = [f for f in files if os.path.realpath(f) not in db]
if missing:
    sys.exit(f"thread_safety: not in {sys.argv[1]} (not built?): {missing}")
print(f"thread_safety: {len(files)} files: {' '.join(files)}", flush=True)

def check(f):
    cmd = ["clang++-14", "-fsyntax-only", "-Wthread-safety",
           "-Werror=thread-safety", *flags(db[os.path.realpath(f)]), f]
    r = subprocess.run(cmd, capture_output=True, text=True)
    return f, r.returncode, r.stdout + r.stderr

failed = []
with concurrent.futures.ThreadPoolExecutor(int(os.environ["ATTN_JOBS"])) as pool:
    for f, rc, out in pool.map(check, files):
        if rc != 0:
            failed.append(f)
            print(out, end="")
            print(f"thread_safety: FAILED {f}", flush=True)
took = int(time.time()) - int(sys.argv[2])
if failed:
    sys.exit(f"thread_safety: {len(failed)} of {len(files)} files failed "
             f"({took} s)")
print(f"thread_safety: {len(files)} files clean ({took} s)")
PY
