"""crossfarm: build Rust crates on a farm of native-architecture machines.

Configuration: flags > CROSSFARM_* environment > ./crossfarm.toml (nearest up the
tree) > ~/.config/crossfarm/config.toml. Exit codes: 0 success, 1 a target failed,
2 usage or farm error, 3 cancelled, 130 interrupted (the remote build goes on).
"""

from __future__ import annotations

import argparse
import getpass
import itertools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from crossfarm.client import render
from crossfarm.client.api import FarmClient
from crossfarm.client.build import (
    EXIT_ERROR,
    EXIT_OK,
    BuildOptions,
    download_all,
    exit_code,
    first_error,
    follow,
    last_build,
    run_build,
)
from crossfarm.client.cargo import add_cargo_flags, cargo_options
from crossfarm.client.config import Config, load_config, read_cross_toml
from crossfarm.client.preflight import version_warning
from crossfarm.client.testrun import run_test
from crossfarm.client.toolchain import check_name, crate_toolchain
from crossfarm.client.workspace import locate
from crossfarm.shared.arch import Placement
from crossfarm.shared.errors import CrossfarmError, FarmError, UsageError
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import API_VERSION, GitAuth, Role, TokenRequest, crossfarm_version

#: The flags every command takes, before or after its name.
_GLOBAL_FLAGS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("--url",), {"help": "the controller (env CROSSFARM_URL)"}),
    (("--token",), {"help": "the API token (env CROSSFARM_TOKEN, which keeps it out of "
                            "the process list)"}),
    (("--json",), {"action": "store_true", "default": False,
                   "help": "one JSON document on stdout; logs stay on stderr"}),
)


def _global_flags(suppress: bool) -> argparse.ArgumentParser:
    """The global flags; with `suppress`, as a command's own (see _parser)."""
    flags = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for names, options in _GLOBAL_FLAGS:
        default = argparse.SUPPRESS if suppress else options.get("default")
        flags.add_argument(*names, **{**options, "default": default})
    return flags


def _parser() -> argparse.ArgumentParser:
    # A subcommand's parser writes its defaults over what the main parser read, so a
    # global flag given before the command would be lost: on commands, the global flags
    # default to SUPPRESS (not set unless given), and the main parser holds the defaults.
    parser = argparse.ArgumentParser(
        prog="crossfarm", description=__doc__, parents=[_global_flags(suppress=False)],
        formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
        usage="crossfarm [+TOOLCHAIN] [--url URL] [--token TOKEN] [--json] COMMAND ...")
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="show program's version number and exit")
    # named plainly: the main usage line (with +TOOLCHAIN) is not each command's prefix
    commands = parser.add_subparsers(dest="command", required=True, prog="crossfarm")
    command_flags = _global_flags(suppress=True)

    def command(name: str, text: str, where: Any = commands) -> argparse.ArgumentParser:
        made: argparse.ArgumentParser = where.add_parser(
            name, parents=[command_flags], help=text, allow_abbrev=False)
        return made

    for name, text in (("build", "build the crate on the farm"),
                       ("test", "run the crate's tests on the farm, on each target's own "
                                "architecture")):
        sub = command(name, text)
        sub.usage = f"crossfarm [+TOOLCHAIN] {name} [options] [-- CARGO_ARGS ...]"
        _submit_flags(sub)
        add_cargo_flags(sub, test=name == "test")
        sub.add_argument("cargo_args", nargs="*", help="after --: extra cargo arguments")
    command("targets", "what the farm builds, per toolchain, and where each target goes")

    for name, text in (("status", "show a build (default: your last)"),
                       ("cancel", "cancel a build")):
        sub = command(name, text)
        sub.add_argument("build_id", nargs="?" if name == "status" else None)
    logs = command("logs", "print a build's log")
    logs.add_argument("build_id")
    logs.add_argument("-f", "--follow", action="store_true", help="keep following until the end")
    logs.add_argument("--target", help="only this target's lines")
    logs.add_argument("--stored", action="store_true",
                      help="each ended target's whole stored log (kept with the artifacts "
                           "after the live one expires)")
    listing = command("list", "list recent builds")
    listing.add_argument("--mine", action="store_true",
                         help="only builds submitted with your token's name")
    listing.add_argument("--state", choices=[s.value for s in BuildState])
    shown = listing.add_mutually_exclusive_group()
    shown.add_argument("--limit", type=_positive, default=20,
                       help="show this many of the newest (default 20)")
    shown.add_argument("--all", action="store_true", help="show every build, page after page")
    artifacts = command("artifacts", "list or fetch artifacts")
    artifacts.add_argument("build_id")
    artifacts.add_argument("--download", type=Path, metavar="DIR",
                           help="download into DIR/<triple>/<name>")
    command("workers", "the farm's workers")
    drain = command("drain", "stop a worker taking jobs (it finishes running ones)")
    drain.add_argument("worker")
    drain.add_argument("--undo", action="store_true", help="let it take jobs again")
    command("config", "the effective configuration")
    credential = command("git-credential",
                         "your tokens for private git repositories (--git builds over https)")
    credentials = credential.add_subparsers(dest="credential_command", required=True)
    put = command("set", where=credentials,
                  text="register the token for a host (read from stdin)")
    put.add_argument("host", help="the git host, e.g. git.example.com")
    put.add_argument("--username", default="git",
                     help="the user to present (default: git; GitHub and GitLab accept any)")
    command("list", where=credentials, text="your hosts, never a token")
    forget = command("delete", where=credentials, text="forget a host's token")
    forget.add_argument("host")
    admin = command("admin", "what operators do")
    token = command("token", where=admin.add_subparsers(dest="admin", required=True),
                    text="issue, list and revoke API tokens")
    tokens = token.add_subparsers(dest="token_command", required=True)
    create = command("create", where=tokens, text="issue a token; it is printed this once")
    create.add_argument("--tenant", required=True, help="whose builds and sources it reaches")
    create.add_argument("--role", choices=[r.value for r in Role], default=Role.SUBMIT.value,
                        help="read, submit (read + build, cancel, upload) or operator")
    create.add_argument("--expires", metavar="DURATION",
                        help="valid for this long (90d, 12h, 30m); default: until revoked")
    create.add_argument("--name", metavar="LABEL",
                        help="shown as the submitter of its builds (default: token-<id>)")
    command("list", where=tokens, text="every token, never a secret")
    revoke = command("revoke", where=tokens, text="refuse a token from now on")
    revoke.add_argument("token_id", type=int, metavar="ID")
    return parser


class _Version(argparse.Action):
    """--version, whose text is looked up only when asked for: reading the installed
    package's metadata costs every other command start-up time."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"crossfarm {crossfarm_version()} (API {API_VERSION})")
        parser.exit()


def _submit_flags(sub: argparse.ArgumentParser) -> None:
    """The flags of build and test that are crossfarm's own, not cargo's."""
    sub.add_argument("--target", action="append", dest="targets", metavar="TRIPLE",
                     help="a target triple; repeat for several (config: targets)")
    sub.add_argument("--manifest-path", type=Path, help="the Cargo.toml (default ./Cargo.toml)")
    sub.add_argument("--git", metavar="URL", help="build a commit the farm fetches itself")
    sub.add_argument("--rev", help="with --git: the branch, tag or commit")
    sub.add_argument("--timeout", type=int, metavar="SECONDS")
    sub.add_argument("--placement", choices=[p.value for p in Placement],
                     help="native: wait for a worker of the target's arch; cross-ok: else "
                          "a cross toolchain; emulate-ok: else emulation (default: the farm's)")
    sub.add_argument("--wait-limit", type=parse_duration, metavar="DURATION",
                     help="fail a target no worker starts within this long (90s, 5m, 1h)")
    sub.add_argument("--no-cache", action="store_false", dest="cache",
                     help="run every target even if an earlier build had the same inputs")
    sub.add_argument("--detach", action="store_true", help="submit and print the build id")
    sub.add_argument("--cancel-on-interrupt", action="store_true",
                     help="Ctrl-C cancels the remote build without asking")


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line, with a leading `+toolchain` (as cargo takes it) in `toolchain`."""
    toolchain = None
    if argv and argv[0].startswith("+"):
        toolchain, argv = argv[0], argv[1:]
    args = _parser().parse_args(argv)
    args.toolchain = None if toolchain is None else check_name(toolchain[1:], "+TOOLCHAIN")
    if args.toolchain is not None and args.command not in ("build", "test"):
        raise UsageError(f"+{args.toolchain} goes with build or test (crossfarm "
                         f"+{args.toolchain} build ...), not with {args.command}")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(sys.argv[1:] if argv is None else argv)
        config = _config(args)
        if args.command == "config":
            return _show_config(config, args.json)
        with FarmClient(config.url, token=config.token) as client:
            if warning := version_warning(client.health(), client.url):
                render.note(f"warning: {warning}")
            return _dispatch(client, config, args)
    except CrossfarmError as exc:
        print(f"crossfarm: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _config(args: argparse.Namespace) -> Config:
    flags: dict[str, object] = {"url": args.url, "token": args.token}
    if args.command in ("build", "test"):
        flags.update(targets=args.targets, timeout=args.timeout,
                     profile=args.profile or ("release" if args.release else None))
    given = {key: value for key, value in flags.items() if value is not None}
    return load_config(given, os.environ, Path.cwd(), Path.home())


def _dispatch(client: FarmClient, config: Config, args: argparse.Namespace) -> int:
    command: Callable[[FarmClient, Config, argparse.Namespace], int] = _COMMANDS[args.command]
    return command(client, config, args)


def _show(document: BaseModel | list[BaseModel], as_json: bool,
          table: Callable[[Any], None]) -> None:
    render.emit_json(document) if as_json else table(document)


def _status(client: FarmClient, _config: Config, args: argparse.Namespace) -> int:
    view = client.build(args.build_id or last_build())
    _show(view, args.json, render.build_table)
    return exit_code(view.state) if view.state.terminal else EXIT_OK


def _cancel(client: FarmClient, _config: Config, args: argparse.Namespace) -> int:
    _show(client.cancel(args.build_id), args.json, render.build_table)
    return EXIT_OK


def _logs(client: FarmClient, _config: Config, args: argparse.Namespace) -> int:
    if args.stored:
        targets = [job.target for job in client.build(args.build_id).jobs
                   if not args.target or job.target == args.target]
        for target in targets:
            if len(targets) > 1:
                print(f"== {target} ==", flush=True)
            client.stored_log(args.build_id, target, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        return EXIT_OK
    if args.json:  # the events themselves, as one list, once the stream has ended
        render.emit_json([event for event in client.events(args.build_id, follow=args.follow)
                          if not args.target or event.target == args.target])
    else:  # the build's output on stdout, so `crossfarm logs ID > file` keeps it
        follow(client, args.build_id, only=args.target, live=args.follow, out=sys.stdout)
    return EXIT_OK


#: Builds asked for per page when the CLI lists them all.
_PAGE = 100


def _list(client: FarmClient, config: Config, args: argparse.Namespace) -> int:
    builds = client.list_builds(args.state, mine=args.mine,
                                page_size=_PAGE if args.all else min(args.limit, _PAGE))
    _show(list(builds if args.all else itertools.islice(builds, args.limit)), args.json,
          render.builds_table)
    return EXIT_OK


def _artifacts(client: FarmClient, _config: Config, args: argparse.Namespace) -> int:
    if args.download:
        count = download_all(client, args.build_id, args.download, render.Progress)
        render.note(f"{count} artifact(s) in {args.download}")
    _show(list(client.artifacts(args.build_id)), args.json, render.artifacts_table)
    return EXIT_OK


def _drain(client: FarmClient, _config: Config, args: argparse.Namespace) -> int:
    view = client.drain(args.worker, not args.undo)
    if args.json:
        render.emit_json(view)
    else:
        print(f"{view.name}: {view.state.value} ({len(view.running_jobs)} job(s) running)")
    return EXIT_OK


def _admin(client: FarmClient, _config: Config, args: argparse.Namespace) -> int:
    if args.token_command == "create":
        try:
            request = TokenRequest(tenant=args.tenant, role=Role(args.role), name=args.name,
                                   expires=args.expires)
        except ValueError as exc:
            raise UsageError(f"--tenant, --name and --expires: {first_error(exc)}") from None
        issued = client.create_token(request)
        if args.json:
            render.emit_json(issued)
        else:
            view = issued.view
            render.note(f"token {view.id} ({view.role.value} in tenant {view.tenant}, named "
                        f"{view.name}); it is shown this once, keep it now")
            print(issued.token)
    elif args.token_command == "list":
        _show(list(client.tokens()), args.json, render.tokens_table)
    else:
        _show(client.revoke_token(args.token_id), args.json, render.tokens_table_of_one)
    return EXIT_OK


def _git_credential(client: FarmClient, _config: Config, args: argparse.Namespace) -> int:
    if args.credential_command == "list":
        _show(list(client.git_credentials()), args.json, render.credentials_table)
        return EXIT_OK
    host = args.host.strip().lower()
    if args.credential_command == "delete":
        client.delete_git_credential(host)
        render.note(f"the token for {host} is forgotten")
        return EXIT_OK
    token = (getpass.getpass(f"token for {host}: ") if sys.stdin.isatty()
             else sys.stdin.readline()).strip()
    try:
        auth = GitAuth(username=args.username, token=token)
    except ValueError as exc:
        raise UsageError(f"the user name or token: {first_error(exc)}") from None
    view = client.put_git_credential(host, auth)
    _show(view, args.json, lambda one: render.credentials_table([one]))
    return EXIT_OK


def _workers(client: FarmClient, _config: Config, args: argparse.Namespace) -> int:
    _show(client.workers(), args.json, render.workers_table)
    return EXIT_OK


def _targets(client: FarmClient, _config: Config, args: argparse.Namespace) -> int:
    offer = client.targets()
    if offer is None:
        raise FarmError("this farm's controller is older than /v1/targets (no toolchains): "
                        f"it builds {', '.join(client.health().targets) or 'no target it names'}")
    _show(offer, args.json, render.targets_table)
    return EXIT_OK


def _build(client: FarmClient, config: Config, args: argparse.Namespace) -> int:
    options, root = _submission(config, args)
    return run_build(client, config, read_cross_toml(root / "Cross.toml", os.environ), options)


def _test(client: FarmClient, config: Config, args: argparse.Namespace) -> int:
    options, root = _submission(config, args)
    return run_test(client, config, read_cross_toml(root / "Cross.toml", os.environ), options)


def _submission(config: Config, args: argparse.Namespace) -> tuple[BuildOptions, Path]:
    """What build or test was asked to do, and the crate's root on disk."""
    if bool(args.git) != bool(args.rev):
        raise UsageError("--git and --rev go together")
    member = None
    if args.git:
        root = crate_dir = Path.cwd()
    else:
        manifest = args.manifest_path or Path("Cargo.toml")
        if not manifest.is_file():
            raise UsageError(f"{manifest} not found: run crossfarm in a crate directory "
                             "or pass --manifest-path")
        crate = locate(manifest)  # a workspace member sends its workspace, as cargo reads it
        root, member, crate_dir = crate.root, crate.package, manifest.parent
    if not config.targets:
        raise UsageError("no target: pass --target TRIPLE (or set targets in crossfarm.toml)")
    cargo = cargo_options(args, _toolchain(args, root, crate_dir))
    options = BuildOptions(
        targets=config.targets, cargo=cargo.spec(config.profile or "dev", member),
        timeout=config.timeout, detach=args.detach,
        as_json=args.json, cancel_on_interrupt=args.cancel_on_interrupt,
        git=(args.git, args.rev) if args.git else None, root=root,
        placement=Placement(args.placement) if args.placement else None,
        wait_limit_s=args.wait_limit, cache=args.cache,
    )
    return options, root


def _toolchain(args: argparse.Namespace, root: Path, crate_dir: Path) -> str | None:
    """`+TOOLCHAIN` first (checked by parse), else the crate's toolchain file (not for
    --git: the farm's copy of the commit is not read here), else the farm's default."""
    if args.toolchain is not None:
        return str(args.toolchain)
    if args.git:
        return None
    found = crate_toolchain(crate_dir, root)
    if found is None:
        return None
    channel, path = found
    render.note(f"toolchain {channel} from {path}")
    return channel


_COMMANDS: dict[str, Callable[[FarmClient, Config, argparse.Namespace], int]] = {
    "build": _build, "test": _test, "targets": _targets,
    "status": _status, "cancel": _cancel, "logs": _logs, "list": _list,
    "artifacts": _artifacts, "drain": _drain, "workers": _workers, "admin": _admin,
    "git-credential": _git_credential,
}


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def parse_duration(text: str) -> int:
    """Seconds from "90", "90s", "5m" or "1h"."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    if not number.isdigit() or int(number) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 5m or 1h")
    return int(number) * units[unit]


def _show_config(config: Config, as_json: bool) -> int:
    rows = config.describe()
    if as_json:
        render.emit_json({key: {"value": value, "source": source} for key, value, source in rows})
    else:
        for key, value, source in rows:
            print(f"{key:<8} {value:<40} ({source})")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
