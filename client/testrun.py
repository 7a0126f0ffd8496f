"""`crossfarm test`: the seam where the test run meets the CLI.

The CLI parses `crossfarm test` like `crossfarm build` (client/cargo.py, with
`--no-run`) into the same BuildOptions; running the tests on the
farm (the request's command, the per-target counts, exit 1 when any failed) is the
farm-side part of issue #12, which replaces this module.
"""

from __future__ import annotations

from crossfarm.client.api import FarmClient
from crossfarm.client.build import BuildOptions
from crossfarm.client.config import Config, CrossConfig
from crossfarm.shared.errors import UsageError


def run_test(client: FarmClient, config: Config, cross: CrossConfig,
             options: BuildOptions) -> int:
    """Run the crate's tests on the farm, for each target; the exit code."""
    raise UsageError("this crossfarm cannot run tests on a farm yet: the wire request has "
                     "no test command; use crossfarm build (or cargo test locally)")
