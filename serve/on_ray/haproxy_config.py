"""Reading the HAProxy configuration Ray Serve generates: its sections, the model backends, their replicas, and
whether it still has every part the rewrite (serve/on_ray/ingress.py) edits.

What the rewrite looks for is Ray's, not documented: the names and tokens come from serve/on_ray/contract.py.
A configuration without one of them would leave a feature silently off (admission control, the closed port
at start-up, the stamps), so `moved_parts` names each missing part with its feature, and the rewrite refuses
the configuration instead.
"""

from __future__ import annotations

import re
from typing import Iterator

from serve.on_ray.contract import (
    BACKEND_PREFIX, DEFAULT_BACKEND, DEFAULTS, FALLBACK_SERVER, HTTP_FRONTEND, NOT_FOUND_RULE, REPLICA_SERVER,
    ROUTE_ACL, SECTION_KINDS, SERVER_ADDRESS, USE_BACKEND, Assumption,
)

MODEL_ROUTE = "/v2/models/"  # optiserve's: every model application's route prefix starts so

_SECTION = re.compile(rf"^({'|'.join(SECTION_KINDS.value)})\b(\s+(\S+))?")
_ACL_PREFIX, _ACL_MATCH = ROUTE_ACL.value  # "acl is_<backend> path_beg <prefix>"
_ROUTE_ACL = re.compile(rf"^\s+acl {re.escape(_ACL_PREFIX)}(\S+) {_ACL_MATCH} (\S+)")
SERVER_LINE = re.compile(SERVER_ADDRESS.value)

Section = tuple[str, str]  # (kind, name), e.g. ("backend", "http-digits")


def sectioned(lines: list[str]) -> Iterator[tuple[Section, str, bool]]:
    """Each line with its section's (kind, name), and whether it opens it."""
    section = ("", "")
    for line in lines:
        opens = _SECTION.match(line)
        if opens:
            section = (opens.group(1), opens.group(3) or "")
        yield section, line, bool(opens)


def routed_backends(lines: list[str]) -> dict[str, str]:
    """{backend: route prefix} of each `acl is_<backend> path_beg <prefix>` line."""
    return {match.group(1): match.group(2) for line in lines if (match := _ROUTE_ACL.match(line))}


def model_backends(lines: list[str]) -> set[str]:
    """The backends whose route is a model's (under /v2/models/)."""
    return {backend for backend, prefix in routed_backends(lines).items() if prefix.startswith(MODEL_ROUTE)}


def is_replica_server(stripped_line: str) -> bool:
    return stripped_line.startswith(f"server {REPLICA_SERVER.value}")


def apps_with_replicas(config: str) -> set[str]:
    """Applications whose backend in `config` lists at least one replica."""
    return {name.removeprefix(BACKEND_PREFIX.value) for (kind, name), line, _ in sectioned(config.splitlines())
            if kind == "backend" and name.startswith(BACKEND_PREFIX.value) and is_replica_server(line.strip())}


def _moved(assumption: Assumption, found: str) -> str:
    return f"{found} (expected {assumption.key!r}; {assumption.feature} depends on it)"


def _missing_sections(sections: dict[Section, list[str]]) -> list[str]:
    moved = []
    if not any(kind == DEFAULTS.value for kind, _ in sections):
        moved.append(_moved(DEFAULTS, "no 'defaults' section"))
    if ("frontend", HTTP_FRONTEND.value) not in sections:
        moved.append(_moved(HTTP_FRONTEND, f"no 'frontend {HTTP_FRONTEND.value}' section"))
    fallback = sections.get(("backend", DEFAULT_BACKEND.value))
    if fallback is None:
        moved.append(_moved(DEFAULT_BACKEND, f"no 'backend {DEFAULT_BACKEND.value}' section"))
    elif not any(line.strip().startswith(NOT_FOUND_RULE.value) for line in fallback):
        moved.append(_moved(NOT_FOUND_RULE, f"'backend {DEFAULT_BACKEND.value}' has no 404 rule"))
    return moved


def _unrouted_use_backends(lines: list[str]) -> list[str]:
    """use_backend lines whose condition names no `acl is_<backend> path_beg` line."""
    routed = routed_backends(lines)
    moved = []
    for line in lines:
        words = line.split()
        conditions = words[2:]
        if words[:1] == [USE_BACKEND.value] and not any(
                word.startswith(_ACL_PREFIX) and word.removeprefix(_ACL_PREFIX) in routed for word in conditions):
            moved.append(_moved(ROUTE_ACL, f"{line.strip()!r} routes by no path_beg ACL"))
    return moved


def _unexpected_model_servers(sections: dict[Section, list[str]], lines: list[str]) -> list[str]:
    moved = []
    for backend in sorted(model_backends(lines)):
        if not backend.startswith(BACKEND_PREFIX.value):
            moved.append(_moved(BACKEND_PREFIX, f"model backend {backend!r}"))
        for line in sections.get(("backend", backend), []):
            stripped = line.strip()
            if not stripped.startswith("server "):
                continue
            if not SERVER_LINE.match(line):
                moved.append(_moved(SERVER_ADDRESS, f"{stripped!r} in backend {backend}"))
            elif not is_replica_server(stripped) and not stripped.endswith(f" {FALLBACK_SERVER.value}"):
                moved.append(_moved(REPLICA_SERVER, f"{stripped!r} in backend {backend}"))
    return moved


def moved_parts(config: str) -> list[str]:
    """What the rewrite needs that `config` lacks, each with the feature it would leave off; [] when all is there.

    Holds for every configuration Ray Serve 2.60 writes, start-up (no routes, no replicas) included
    (tests/serve/on_ray/test_ray_contract.py renders them with Ray's own code).
    """
    lines = config.splitlines()
    sections: dict[Section, list[str]] = {}
    for section, line, opens in sectioned(lines):
        if section[0] and not opens:
            sections.setdefault(section, []).append(line)
        elif opens:
            sections.setdefault(section, [])
    return (_missing_sections(sections) + _unrouted_use_backends(lines)
            + _unexpected_model_servers(sections, lines))
