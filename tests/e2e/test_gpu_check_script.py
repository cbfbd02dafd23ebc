"""scripts/gpu_check.py is only run for real on a GPU machine: its digits steps run here on the CPU, so a change
to the serving code it calls (load_model, OnnxModel) cannot break it unseen."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_check_digits_steps_pass_as_a_cpu_dry_run(tmp_path):
    gpu_check = _load_script()
    case = gpu_check._digits_case()
    gpu_check.attempt("digits torch runtime", lambda: gpu_check.check_torch_runtime(case, tmp_path, "cpu"))
    gpu_check.attempt("digits onnxruntime", lambda: gpu_check.check_onnxruntime(case, tmp_path, "cpu"))
    print("\n" + "\n".join(f"{status} {what}: {detail}" for what, status, detail in gpu_check.RESULTS))
    statuses = {what: status for what, status, _ in gpu_check.RESULTS}
    assert "FAIL" not in statuses.values(), gpu_check.RESULTS
    passed = [what for what, status in statuses.items() if status == "PASS"]
    assert any("torch runtime" in what for what in passed) and any("fp16 ONNX" in what for what in passed), statuses
