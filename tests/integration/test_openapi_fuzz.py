"""Schemathesis against the live controller of the shared farm: every generated request,
valid or not, gets an answer its OpenAPI documents (status, content type, body schema),
never a 5xx and never a response cut short.

The run is seeded and bounded, so its verdict is repeatable. Operations left out, each
because fuzzing it would reach past this test's own throwaway data:
- POST /v1/sources/git: the controller would fetch arbitrary generated URLs (network
  probes leave 127.0.0.1).
- POST /v1/workers/{name}/heartbeat: a generated worker would join the fleet the placer
  places the session's other builds on.
- POST /v1/workers/{name}/drain: a worker drained by a generated name would be one less
  for the session's other tests (undraining, DELETE, stays in).
Every other operation meets only this test's own throwaway data: a source and a build
cancelled at once (its path ids are fixed to theirs, so the event stream, the artifacts
and the job reports are fuzzed on a real record), or random ids no other test made.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from crossfarm.client.api import FarmClient
from crossfarm.client.source import scan, send
from crossfarm.shared.wire import BuildRequest

pytestmark = pytest.mark.integration

#: Cases per operation and phase; ~18 operations over the examples, coverage and fuzzing
#: phases make well over 1,000 cases, in about a minute on two cores.
MAX_EXAMPLES = 60
SEED = 20261201
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance")
EXCLUDED = ("create_git_source_v1_sources_git_post", "heartbeat_v1_workers__name__heartbeat_post",
            "drain_v1_workers__name__drain_post")


X86 = "x86_64-unknown-linux-gnu"


def _throwaway(farm, crate: Path, config: Path) -> None:
    """A source and a cancelled build of this test's own; the fuzz's path ids are theirs."""
    with FarmClient(farm.controller_url, token=farm.client_token) as client:
        digest = send(client, scan(crate)).status.digest
        build = client.cancel(client.submit(BuildRequest(source=digest, targets=[X86])).build_id)
    config.write_text(f"""[parameters]
"path.build_id" = "{build.build_id}"
"path.job_id" = "{build.jobs[0].job_id}"
"path.digest" = "{digest}"
""")


def _schemathesis(farm, config: Path, report: Path) -> subprocess.CompletedProcess[str]:
    token = farm.client_token
    excluded = [arg for operation in EXCLUDED for arg in ("--exclude-operation-id", operation)]
    return subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
         f"{farm.controller_url}/openapi.json",
         "--checks", CHECKS, "--phases", "examples,coverage,fuzzing",
         "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--no-shrink",
         "--generation-database", "none", "--request-timeout", "30",
         # One worker: with two threads, CPython 3.11's ast.parse (hypothesis describing
         # its lambdas) crashed once under load ("AST constructor recursion depth mismatch").
         "--workers", "1",
         "--header", f"Authorization: Bearer {token}", *excluded,
         "--report", "ndjson", "--report-ndjson-path", str(report), "--no-color"],
        capture_output=True, text=True, timeout=900, cwd=report.parent,
    )


def test_every_generated_request_gets_a_documented_answer_and_never_a_5xx(
        farm, crate, tmp_path):
    config = tmp_path / "schemathesis.toml"
    _throwaway(farm, crate, config)
    run = _schemathesis(farm, config, tmp_path / "schemathesis.ndjson")
    # Failures, errors (a response cut short is one) and warnings all show in the output.
    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]
    cases = re.search(r"Test cases:\s+(\d+) generated", run.stdout)
    assert cases, run.stdout[-5_000:]
    assert int(cases.group(1)) >= 1_000
