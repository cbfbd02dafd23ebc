#!/usr/bin/env bash
# The prepared GPU check (README "GPU (untested on hardware)"): run from anywhere in a copy of this tree on a
# GPU machine with PyTorch and onnxruntime. It picks a Python with CUDA-enabled torch (the carried .venv first,
# then the system's), tries pip only for what is missing and only if a registry answers, then runs
# scripts/gpu_check.py under a time limit. Exit status: 0 when every check it could run passed.
set -u
cd "$(dirname "$0")/.."
LIMIT_S=${GPU_CHECK_LIMIT_S:-270}

probe() {  # prints "cuda", "cpu" or nothing (no torch) for the python given
    "$1" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")' 2>/dev/null | tail -1
}

PY="" ; FALLBACK=""
for candidate in .venv/bin/python python3.11 python3 python; do
    command -v "$candidate" >/dev/null 2>&1 || [ -x "$candidate" ] || continue
    case "$(probe "$candidate")" in
        cuda) PY=$candidate; break ;;
        cpu) [ -n "$FALLBACK" ] || FALLBACK=$candidate ;;
    esac
done
PY=${PY:-$FALLBACK}
if [ -z "$PY" ]; then
    echo "gpu_check: no Python with torch found (tried .venv/bin/python, python3.11, python3, python); nothing tested"
    exit 2
fi
echo "gpu_check: using $PY ($(probe "$PY") torch)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

missing=$("$PY" - <<'PY'
import glob, importlib.util, sys
sys.path.extend(glob.glob(".venv/lib/python3*/site-packages"))
wanted = {"numpy": "numpy", "onnx": "onnx", "onnxruntime": "onnxruntime", "pydantic": "pydantic",
          "pydantic_settings": "pydantic-settings", "tokenizers": "tokenizers", "transformers": "transformers",
          "sklearn": "scikit-learn"}
print(" ".join(pip for module, pip in wanted.items() if importlib.util.find_spec(module) is None))
PY
)
if [ -n "$missing" ]; then
    echo "gpu_check: missing $missing; trying pip (skipped quietly if no registry answers)"
    timeout 90 "$PY" -m pip install --quiet --disable-pip-version-check --timeout 5 --retries 0 $missing \
        || echo "gpu_check: pip could not install $missing; checks that need them will say so"
fi

timeout "$LIMIT_S" "$PY" scripts/gpu_check.py
status=$?
[ $status -eq 124 ] && echo "gpu_check: stopped after ${LIMIT_S}s; the summary above lists what finished"
exit $status
