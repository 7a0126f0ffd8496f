"""`crossfarm build`: cargo's interface, the farm's machines."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from crossfarm.client.api import FarmClient, FarmError
from crossfarm.client.pack import pack
from crossfarm.shared.errors import InvalidArchive
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import BuildRequest, BuildView

DEFAULT_URL = "http://127.0.0.1:8700"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossfarm", description=__doc__)
    parser.add_argument("--url", default=None, help=f"the controller (env CROSSFARM_URL, "
                        f"default {DEFAULT_URL})")
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="build the crate here on the farm")
    build.add_argument("--target", action="append", required=True, dest="targets",
                       metavar="TRIPLE", help="a target triple; repeat for several")
    profile = build.add_mutually_exclusive_group()
    profile.add_argument("--release", action="store_true", help="the release profile")
    profile.add_argument("--profile", default=None, help="a named cargo profile")
    build.add_argument("-F", "--features", action="append", default=[],
                       help="features to enable (comma or space separated)")
    build.add_argument("--all-features", action="store_true")
    build.add_argument("--no-default-features", action="store_true")
    build.add_argument("--manifest-path", type=Path, default=None,
                       help="the Cargo.toml of the crate (default: ./Cargo.toml)")
    build.add_argument("--timeout", type=int, default=None, metavar="SECONDS")
    build.add_argument("--detach", action="store_true", help="submit and print the build id")
    build.add_argument("--json", action="store_true", help="print the final build as JSON")
    build.add_argument("cargo_args", nargs="*", help="after --: extra cargo build arguments")

    for name, text in (("status", "show a build"), ("cancel", "cancel a build")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("build_id")
        sub.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    client = FarmClient(args.url or os.environ.get("CROSSFARM_URL") or DEFAULT_URL,
                        token=os.environ.get("CROSSFARM_TOKEN"))
    try:
        if args.command == "build":
            return _build(client, args)
        view = client.build(args.build_id) if args.command == "status" else \
            client.cancel(args.build_id)
        _print_build(view, args.json)
        return 0 if view.state is not BuildState.FAILED else 1
    except (FarmError, InvalidArchive) as exc:
        print(f"crossfarm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _build(client: FarmClient, args: argparse.Namespace) -> int:
    manifest = args.manifest_path or Path("Cargo.toml")
    if not manifest.is_file():
        raise FarmError(f"{manifest} not found: run crossfarm in a crate directory "
                        "or pass --manifest-path")
    root = manifest.resolve().parent
    packed = pack(root)
    if client.has_source(packed.digest):
        _note(f"source {packed.digest[:12]} ({packed.files} files) already on the farm")
    else:
        _note(f"uploading {packed.files} files ({len(packed.data)} bytes packed)")
        client.upload_source(packed.digest, packed.data)
    features = [f for group in args.features for f in group.replace(",", " ").split()]
    request = BuildRequest(
        source=packed.digest, targets=args.targets,
        profile=args.profile or ("release" if args.release else "dev"),
        features=features, all_features=args.all_features,
        no_default_features=args.no_default_features, cargo_args=args.cargo_args,
        timeout_s=args.timeout,
    )
    build = client.submit(request)
    _note(f"build {build.build_id}: " + ", ".join(
        f"{job.target} → {job.queue}" for job in build.jobs))
    if args.detach:
        print(build.build_id)
        return 0
    width = max(len(t) for t in args.targets)
    for event in client.events(build.build_id):
        if event.kind == "log":
            print(f"[{(event.target or ''):<{width}}] {event.line}", file=sys.stderr, flush=True)
        elif event.kind == "state" and event.target:
            _note(f"{event.target}: {event.state}")
    final = client.build(build.build_id)
    for artifact in client.artifacts(build.build_id):
        dest = root / artifact.path
        client.download(artifact, dest)
        _note(f"{artifact.target}: {artifact.path} ({artifact.size} bytes, sha256 ok)")
    _print_build(final, args.json)
    return 0 if final.state is BuildState.SUCCEEDED else 1


def _print_build(view: BuildView, as_json: bool) -> None:
    if as_json:
        print(json.dumps(view.model_dump(mode="json"), indent=2))
        return
    print(f"build {view.build_id}: {view.state}")
    for job in view.jobs:
        took = (f"{(job.finished_at - job.started_at).total_seconds():.1f}s"
                if job.finished_at and job.started_at else "-")
        print(f"  {job.target:<28} {job.state:<10} {job.worker or '-':<20} "
              f"{job.mode or '-':<7} {took:>8}  {job.reason or ''}")


def _note(text: str) -> None:
    print(f"crossfarm: {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
