"""The per-thread accounting of benchmarks/cpu_by_thread.py, on this test's own process."""

import threading
import time

import psutil

from benchmarks.cpu_by_thread import _PY_SPY_THREAD, thread_seconds


def test_a_busy_thread_is_charged_its_own_cpu_time():
    me = psutil.Process()
    started, go, spun, measured = threading.Event(), threading.Event(), threading.Event(), threading.Event()
    ids = {}

    def spin():
        ids["native"] = threading.get_native_id()
        started.set()
        go.wait(10)  # spin only once the "before" reading is taken
        end = time.thread_time() + 0.3
        while time.thread_time() < end:
            pass
        spun.set()
        measured.wait(10)  # stay alive until measured: psutil lists live threads only

    worker = threading.Thread(target=spin)
    worker.start()
    started.wait()
    before = thread_seconds([me])
    go.set()
    spun.wait(10)
    after = thread_seconds([me])
    measured.set()
    worker.join()
    assert after[(me.pid, ids["native"])] - before.get((me.pid, ids["native"]), 0.0) >= 0.2


def test_py_spy_thread_lines_give_kernel_ids_and_python_names():
    dump = ('Thread 14700 (idle): "batcher_0"\n    _worker (thread.py:81)\n'
            'Thread 14666 (active+gil): "AsyncIO Thread: default"\n')
    assert _PY_SPY_THREAD.findall(dump) == [("14700", "batcher_0"), ("14666", "AsyncIO Thread: default")]
