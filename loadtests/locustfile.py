"""Load tests for optiserve's KServe V2 inference API (locust).

    locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:8000 \
        -u 32 -r 32 -t 60s DigitsUser --inputs zipf --slo-p99-ms 100 --slo-error-ratio 0.001

User classes (name them on the command line, as `make loadtest` does, or name none to run them all):
  DigitsUser     the digits classifier: input "input", FP32 [rows, 64]
  MiniLMUser     all-MiniLM-L6-v2 embeddings: input "text", BYTES [rows] (generated sentences)
  BadInputUser   one user sending malformed requests (loadtests/corpus.py) to digits that must get a 4xx
A class whose model the server does not serve (GET /v2/models/{name} is a 404) sends nothing: its users
stop at start and one message says so (exit code 1 if the class was named on the command line).
Options added here: --inputs unique|zipf (cache-cold / cache-warm), --zipf-pool, --zipf-s,
--rows, --user-rps (pacing per user; 0 = back to back), --shape constant|step|spike (+ --step-*,
--spike-*), --slo-p99-ms and --slo-error-ratio (a miss sets exit code 3), --ledger PREFIX
(every request sent and answered, by status: PREFIX.json and PREFIX.npz). See loadtests/README.md.
"""

from __future__ import annotations

import itertools
import logging
import random
import sys
from pathlib import Path

import gevent
import gevent.lock
from locust import FastHttpUser, constant, constant_throughput, events, task
from locust.exception import StopUser

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: `loadtests` package

from loadtests import shapes  # noqa: E402  (a module, so its shape classes are not picked up as defaults)
from loadtests.corpus import CORPUS, check_answer  # noqa: E402
from loadtests.inputs import DISTRIBUTIONS, body_factory  # noqa: E402
from loadtests.ledger import Ledger, slo_violations  # noqa: E402
from loadtests.profiles import SpikeProfile, StepProfile  # noqa: E402
from loadtests.served import ServedModels  # noqa: E402

JSON_HEADERS = {"Content-Type": "application/json"}
LEDGER = Ledger()
_user_numbers = itertools.count()
SERVED = ServedModels()
_asking = gevent.lock.Semaphore()  # one question per model, while the first user of a class waits for it
_skipped: set[str] = set()  # the user classes whose model the server does not serve


@events.init_command_line_parser.add_listener
def _add_options(parser) -> None:
    group = parser.add_argument_group("optiserve")
    group.add_argument("--inputs", choices=DISTRIBUTIONS, default="unique",
                       help="unique: every input new (cache-cold); zipf: Zipf over a fixed pool (cache-warm)")
    group.add_argument("--zipf-pool", type=int, default=10_000, help="distinct inputs in the zipf pool")
    group.add_argument("--zipf-s", type=float, default=1.1, help="zipf exponent: rank k has weight 1/k**s")
    group.add_argument("--rows", type=int, default=1, help="rows (images or sentences) per request")
    group.add_argument("--user-rps", type=float, default=0.0,
                       help="requests per second per user (constant throughput); 0 sends back to back")
    group.add_argument("--bad-rps", type=float, default=20.0, help="requests per second of the BadInputUser")
    group.add_argument("--shape", choices=("constant", "step", "spike"), default="constant",
                       help="constant: -u users for -t; step: --step-users more every --step-seconds up to -u; "
                            "spike: -u users, --spike-users from --spike-at for --spike-seconds")
    group.add_argument("--step-users", type=int, default=8)
    group.add_argument("--step-seconds", type=float, default=10.0)
    group.add_argument("--spike-users", type=int, default=128)
    group.add_argument("--spike-at", type=float, default=10.0)
    group.add_argument("--spike-seconds", type=float, default=10.0)
    group.add_argument("--slo-p99-ms", type=float, default=None, help="fail the run (exit code 3) above this p99")
    group.add_argument("--slo-error-ratio", type=float, default=None,
                       help="fail the run (exit code 3) when failures/requests exceeds this")
    group.add_argument("--ledger", type=Path, default=None,
                       help="write PREFIX.json (requests sent and answered, by status) and PREFIX.npz (one row each)")
    group.add_argument("--request-timeout-s", type=float, default=30.0, help="client timeout per request")
    group.add_argument("--max-requests", type=int, default=10_000_000,
                       help="stop the whole run once this many requests were sent (a bound besides --run-time)")


@events.init.add_listener
def _apply_options(environment, **_kwargs) -> None:
    """Once options are parsed: the client timeout, and for --shape step|spike the shape (it needs -u, -t)."""
    options = environment.parsed_options
    for user_class in (InferUser, BadInputUser):
        user_class.network_timeout = options.request_timeout_s
    if options.shape == "constant":
        return
    if not options.run_time:
        raise SystemExit("--shape step|spike needs --run-time (-t): every load test here ends by itself")
    if options.shape == "step":
        shape = shapes.StepLoadShape(StepProfile(options.step_users, options.step_seconds, options.num_users,
                                                 options.run_time))
    else:
        shape = shapes.SpikeShape(SpikeProfile(options.num_users, options.spike_users, options.spike_at,
                                               options.spike_seconds, options.run_time))
    shape.runner = environment.runner
    environment.shape_class = shape


@events.request.add_listener
def _record(name, response_time, response, exception, start_time, **_kwargs) -> None:
    status = getattr(response, "status_code", 0) or 0
    error = type(getattr(response, "error", None) or exception).__name__ if status == 0 else ""
    LEDGER.answered(name, status, response_time or 0.0, start_time, error)


@events.quitting.add_listener
def _check_objectives(environment, **_kwargs) -> None:
    options, total = environment.parsed_options, environment.stats.total
    violations = slo_violations(total.num_requests, total.num_failures, total.get_response_time_percentile(0.99),
                                options.slo_p99_ms, options.slo_error_ratio)
    for violation in violations:
        logging.error("objective missed: %s", violation)
    if violations:
        environment.process_exit_code = 3
    _check_skipped(environment)


def _check_skipped(environment) -> None:
    """Exit code 1 when a class named on the command line, or every class, sent nothing for want of its model."""
    named = set(environment.parsed_options.user_classes or ())
    every_class = {user_class.__name__ for user_class in environment.user_classes}
    if _skipped and (_skipped & named or _skipped >= every_class):
        logging.error("nothing was sent for %s: the server does not serve the model",
                      ", ".join(sorted(_skipped & named or _skipped)))
        environment.process_exit_code = environment.process_exit_code or 1


@events.test_stop.add_listener
def _write_ledger(environment, **_kwargs) -> None:
    """After the users have stopped: every request sent has its answer, or was abandoned at shutdown."""
    summary = LEDGER.summary()
    logging.info("ledger: sent %s, answers %s, abandoned %s, lost %s", summary["sent"], summary["answers"],
                 summary["abandoned"], summary["lost"])
    if environment.parsed_options.ledger is not None:
        LEDGER.write(environment.parsed_options.ledger)


def _model_is_served(user) -> bool:
    """Asks the server once per model; a class whose model it does not serve is logged once and skipped."""
    with _asking:
        reason = SERVED.why_not_served(user.host, user.model)
    name = type(user).__name__
    if reason is not None and name not in _skipped:
        _skipped.add(name)
        logging.warning("%s sends nothing: %s does not serve model %r (%s). Name the user classes to run "
                        "on the command line to leave it out.", name, user.host, user.model, reason)
    return reason is None


def _before_request(environment) -> None:
    """Called first in every task, before the request is counted as sent.

    Yields once: locust stops a waiting user by scheduling a kill, which can land
    after the user has resumed, in the middle of its next request. A kill pending
    from the wait lands here instead, before anything is sent. Then --max-requests:
    once that many were sent, every user stops and the first one ends the run.
    """
    gevent.sleep(0)
    if sum(LEDGER.sent.values()) < environment.parsed_options.max_requests:
        return
    if not _quitting:
        _quitting.append(True)
        logging.info("--max-requests %d reached, stopping", environment.parsed_options.max_requests)
        gevent.spawn(environment.runner.quit)
    raise StopUser()


_quitting: list[bool] = []


class InferUser(FastHttpUser):
    """One client of a model's /infer route; subclasses name the model."""

    abstract = True
    model = ""
    output = ""  # every 200 must carry this output
    network_timeout = connection_timeout = 30.0

    def on_start(self) -> None:
        self._served = _model_is_served(self)
        options = self.environment.parsed_options
        self._pace = constant_throughput(options.user_rps) if options.user_rps > 0 else constant(0)
        self._next_body = body_factory(self.model, options.inputs, rows=options.rows, pool_size=options.zipf_pool,
                                       zipf_s=options.zipf_s, seed=next(_user_numbers))
        self._expected = f'"name":"{self.output}"'.encode()

    def wait_time(self) -> float:
        return self._pace(self)

    @task
    def infer(self) -> None:
        if not self._served:
            raise StopUser()  # from a task, not on_start, where locust would log it as an error
        _before_request(self.environment)
        with LEDGER.track(self.model):
            with self.client.post(f"/v2/models/{self.model}/infer", data=self._next_body(), headers=JSON_HEADERS,
                                  name=self.model, catch_response=True) as response:
                if response.status_code == 200 and self._expected not in (response.content or b""):
                    response.failure(f"200 without output {self.output!r}: {(response.content or b'')[:200]!r}")


class DigitsUser(InferUser):
    model, output = "digits", "logits"


class MiniLMUser(InferUser):
    model, output = "minilm", "embedding"


class BadInputUser(FastHttpUser):
    """Sends the malformed-request corpus, weighted, at --bad-rps; each must get its 4xx and message."""

    fixed_count = 1
    model = "digits"  # every case of the corpus is a request to the digits model
    network_timeout = connection_timeout = 30.0

    def on_start(self) -> None:
        self._served = _model_is_served(self)
        options = self.environment.parsed_options
        self._pace = constant_throughput(options.bad_rps)
        cases = [case for case in CORPUS for _ in range(case.weight)]
        random.Random(0).shuffle(cases)
        self._cases = itertools.cycle(cases)

    def wait_time(self) -> float:
        return self._pace(self)

    @task
    def send_malformed(self) -> None:
        if not self._served:
            raise StopUser()
        _before_request(self.environment)
        case = next(self._cases)
        name = f"bad:{case.name}"
        with LEDGER.track(name):
            with self.client.post("/v2/models/digits/infer", data=case.body(), headers=case.headers, name=name,
                                  catch_response=True) as response:
                problem = check_answer(case, response.status_code, response.content or b"")
                response.failure(problem) if problem else response.success()
