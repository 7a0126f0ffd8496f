"""The CLI's effective configuration, and what crossfarm can take from a cross-rs Cross.toml.

Each key comes from the first layer that sets it:

    command-line flag  >  CROSSFARM_* environment  >  nearest ./crossfarm.toml up the tree
                       >  $XDG_CONFIG_HOME/crossfarm/config.toml (~/.config/…)  >  default

Every layer is checked when it is read, so a broken file is reported even when a
higher layer overrides the key it breaks. Nothing here reads the process environment
or the real home directory: the caller passes both in.
"""

from __future__ import annotations

import getpass
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

from crossfarm.shared.errors import InvalidRequest

DEFAULT_URL = "http://127.0.0.1:8700"
PROJECT_FILE = "crossfarm.toml"
REDACTED = "***"

#: The configuration keys, in the order `crossfarm config` shows them.
KEYS: tuple[str, ...] = ("url", "token", "targets", "profile", "timeout", "user")
ENV_NAMES: dict[str, str] = {key: f"CROSSFARM_{key.upper()}" for key in KEYS}
# The CLI spells the repeatable target option in the singular, like cargo.
FLAG_NAMES: dict[str, str] = {key: "--target" if key == "targets" else f"--{key}" for key in KEYS}


@dataclass(frozen=True)
class Setting:
    """One configuration value and the layer it came from."""

    value: object
    source: str


@dataclass(frozen=True)
class Config:
    """The CLI's effective configuration, with the source of every key."""

    url: str
    token: str | None
    targets: list[str]
    profile: str | None
    timeout: int | None
    user: str
    sources: dict[str, str] = field(default_factory=dict)

    def describe(self) -> list[tuple[str, str, str]]:
        """(key, printable value, source) for each key; the token is always shown as ***."""
        return [(key, self._printable(key), self.sources.get(key, "default")) for key in KEYS]

    def _printable(self, key: str) -> str:
        value = getattr(self, key)
        if value is None:
            return "(not set)"
        if key == "token":
            return REDACTED
        if isinstance(value, list):
            return ", ".join(value) if value else "(none)"
        return str(value)

    def __repr__(self) -> str:
        # Config objects end up in tracebacks and debug logs; the token must not.
        shown = {key: getattr(self, key) for key in KEYS}
        if self.token is not None:
            shown["token"] = REDACTED
        inner = ", ".join(f"{key}={value!r}" for key, value in shown.items())
        return f"Config({inner}, sources={self.sources!r})"


def load_config(
    flags: Mapping[str, object], env: Mapping[str, str], cwd: Path, home: Path
) -> Config:
    """The effective configuration; InvalidRequest names the file or variable to fix."""
    layers: list[dict[str, Setting]] = [_user_layer(env, home), _project_layer(cwd)]
    layers += [_env_layer(env), _flag_layer(flags)]
    merged: dict[str, Setting] = {}
    for layer in layers:
        merged.update(layer)

    def pick(key: str, default: Callable[[], object]) -> object:
        if key not in merged:
            merged[key] = Setting(default(), "default")
        return merged[key].value

    return Config(
        url=cast(str, pick("url", lambda: DEFAULT_URL)),
        token=cast("str | None", pick("token", lambda: None)),
        targets=list(cast("list[str]", pick("targets", list))),
        profile=cast("str | None", pick("profile", lambda: None)),
        timeout=cast("int | None", pick("timeout", lambda: None)),
        user=cast(str, pick("user", lambda: _default_user(env))),
        sources={key: merged[key].source for key in KEYS},
    )


def user_config_path(env: Mapping[str, str], home: Path) -> Path:
    """Where the per-user config file lives: $XDG_CONFIG_HOME or ~/.config, then crossfarm/."""
    xdg = env.get("XDG_CONFIG_HOME", "")
    # The XDG spec says a relative XDG_CONFIG_HOME is invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".config"
    return base / "crossfarm" / "config.toml"


def find_project_config(cwd: Path) -> Path | None:
    """The nearest crossfarm.toml in `cwd` or one of its parents, if there is one."""
    start = cwd.resolve()
    for directory in (start, *start.parents):
        candidate = directory / PROJECT_FILE
        if candidate.is_file():
            return candidate
    return None


# --- the layers -------------------------------------------------------------------------


def _user_layer(env: Mapping[str, str], home: Path) -> dict[str, Setting]:
    path = user_config_path(env, home)
    return _file_layer(path) if path.is_file() else {}


def _project_layer(cwd: Path) -> dict[str, Setting]:
    path = find_project_config(cwd)
    return _file_layer(path) if path is not None else {}


def _file_layer(path: Path) -> dict[str, Setting]:
    table = _read_toml(path)
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise InvalidRequest(
            f"{path}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"known keys: {', '.join(KEYS)}"
        )
    return {
        key: Setting(_CHECKS[key](value, f"{path}: {key}"), str(path))
        for key, value in table.items()
    }


def _env_layer(env: Mapping[str, str]) -> dict[str, Setting]:
    layer: dict[str, Setting] = {}
    for key in KEYS:
        name = ENV_NAMES[key]
        raw = env.get(name, "")
        # An empty variable counts as unset, the way shells use `NAME= command`.
        if raw == "":
            continue
        value: object = raw
        if key == "targets":
            value = [part.strip() for part in raw.split(",") if part.strip()]
        elif key == "timeout":
            value = _parse_int(raw, name)
        layer[key] = Setting(_CHECKS[key](value, name), f"env {name}")
    return layer


def _flag_layer(flags: Mapping[str, object]) -> dict[str, Setting]:
    unknown = sorted(set(flags) - set(KEYS))
    if unknown:
        # The CLI builds this mapping, so an unknown key is a bug in crossfarm, not user input.
        raise ValueError(f"unknown configuration flags {unknown}; known keys: {KEYS}")
    return {
        key: Setting(_CHECKS[key](value, FLAG_NAMES[key]), f"flag {FLAG_NAMES[key]}")
        for key, value in flags.items()
        if value is not None
    }


def _read_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidRequest(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise InvalidRequest(f"{path}: not valid TOML: the file is not UTF-8") from None
    except OSError as exc:
        raise InvalidRequest(f"{path}: cannot be read: {exc.strerror}") from None


def _default_user(env: Mapping[str, str]) -> str:
    # The same variables getpass.getuser() consults, but from the mapping we were given.
    login = next((env[n] for n in ("LOGNAME", "USER", "LNAME", "USERNAME") if env.get(n)), "")
    if not login:
        try:
            login = getpass.getuser()
        except (OSError, KeyError):
            login = "unknown"
    return f"{login}@{socket.gethostname()}"


# --- checking one value -----------------------------------------------------------------


def _parse_int(raw: str, name: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise InvalidRequest(f"{name} must be a whole number of seconds, got {raw!r}") from None


def _check_text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string, got {_describe(value)}")
    if not value.strip():
        raise InvalidRequest(f"{name} must not be empty")
    return value


def _check_url(value: object, name: str) -> str:
    url = _check_text(value, name)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidRequest(
            f"{name} must be an http:// or https:// URL such as {DEFAULT_URL}, got {url!r}"
        )
    return url


def _check_targets(value: object, name: str) -> list[str]:
    if not isinstance(value, list):
        raise InvalidRequest(f"{name} must be a list of target triples, got {_describe(value)}")
    for item in value:
        if not isinstance(item, str) or not item or any(c.isspace() for c in item):
            raise InvalidRequest(
                f"{name} must be a list of target triples; {item!r} is not a triple"
            )
    return list(value)


def _check_timeout(value: object, name: str) -> int:
    # bool is an int subclass, and `timeout = true` is a mistake, not one second.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(
            f"{name} must be a whole number of seconds, got {_describe(value)}"
        )
    if value <= 0:
        raise InvalidRequest(f"{name} must be a positive number of seconds, got {value}")
    return value


def _describe(value: object) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a table"}
    return f"{value!r} ({kinds.get(type(value), type(value).__name__)})"


_CHECKS: dict[str, Callable[[object, str], object]] = {
    "url": _check_url,
    "token": _check_text,
    "targets": _check_targets,
    "profile": _check_text,
    "timeout": _check_timeout,
    "user": _check_text,
}


# --- Cross.toml -------------------------------------------------------------------------

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class CrossConfig:
    """What crossfarm takes from a cross-rs Cross.toml, and what it had to leave behind."""

    passthrough: dict[str, str] = field(default_factory=dict)
    per_target: dict[str, dict[str, str]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def env_for(self, target: str) -> dict[str, str]:
        """The variables a build of `target` gets; target-specific values win, as in cross."""
        return {**self.passthrough, **self.per_target.get(target, {})}

    def secret_values(self) -> list[str]:
        """Every passed-through value, each once, for redaction in logs."""
        values = [*self.passthrough.values()]
        for env in self.per_target.values():
            values += env.values()
        # An empty value would "redact" every position in a log line.
        return list(dict.fromkeys(v for v in values if v))


def read_cross_toml(path: Path, env: Mapping[str, str]) -> CrossConfig:
    """Read a cross-rs Cross.toml; a missing file gives an empty CrossConfig.

    Passthrough variables are resolved from `env`; everything crossfarm cannot honour on
    a remote farm becomes a warning rather than being dropped silently.
    """
    if not path.is_file():
        return CrossConfig()
    reader = _CrossReader(path, env)
    reader.read(_read_toml(path))
    return CrossConfig(
        passthrough=reader.passthrough,
        per_target={triple: env for triple, env in reader.per_target.items() if env},
        missing=list(dict.fromkeys(reader.missing)),
        warnings=reader.warnings,
    )


class _CrossReader:
    def __init__(self, path: Path, env: Mapping[str, str]) -> None:
        self.path = path
        self.env = env
        self.passthrough: dict[str, str] = {}
        self.per_target: dict[str, dict[str, str]] = {}
        self.missing: list[str] = []
        self.warnings: list[str] = []

    def read(self, document: dict[str, object]) -> None:
        for key, value in document.items():
            if key == "build":
                self._build(self._table(value, "build"))
            elif key == "target":
                for triple, table in self._table(value, "target").items():
                    self._target(triple, self._table(table, f"target.{triple}"))
            else:
                self._unsupported(key)

    def _build(self, table: dict[str, object]) -> None:
        for key, value in table.items():
            if key == "env":
                self._env(self._table(value, "build.env"), "build.env", self.passthrough)
            else:
                self._unsupported(f"build.{key}")

    def _target(self, triple: str, table: dict[str, object]) -> None:
        for key, value in table.items():
            where = f"target.{triple}.{key}"
            if key == "env":
                resolved = self.per_target.setdefault(triple, {})
                self._env(self._table(value, where), where, resolved)
            elif key == "image":
                self._warn(f"{where} ({_image_name(value)}) is ignored: the farm builds "
                           "with its own builder images")
            else:
                self._unsupported(where)

    def _env(self, table: dict[str, object], where: str, into: dict[str, str]) -> None:
        for key, value in table.items():
            if key == "passthrough":
                for entry in self._strings(value, f"{where}.passthrough"):
                    self._pass(entry, f"{where}.passthrough", into)
            elif key == "volumes":
                names = ", ".join(self._strings(value, f"{where}.volumes"))
                self._warn(f"{where}.volumes ({names}) are not mounted on remote builders "
                           "and are ignored")
            else:
                self._unsupported(f"{where}.{key}")

    def _pass(self, entry: str, where: str, into: dict[str, str]) -> None:
        name, has_value, literal = entry.partition("=")
        if not _ENV_NAME.fullmatch(name):
            raise InvalidRequest(
                f"{self.path}: {where} names {name!r}, which is not an environment variable "
                "name (letters, digits and _, not starting with a digit)"
            )
        if has_value:
            into[name] = literal
        elif name in self.env:
            into[name] = self.env[name]
        else:
            self.missing.append(name)

    def _table(self, value: object, where: str) -> dict[str, object]:
        if not isinstance(value, dict):
            raise InvalidRequest(f"{self.path}: {where} must be a table, got {_describe(value)}")
        return value

    def _strings(self, value: object, where: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidRequest(
                f"{self.path}: {where} must be a list of strings, got {_describe(value)}"
            )
        return value

    def _unsupported(self, key_path: str) -> None:
        self._warn(f"{key_path} is not supported by crossfarm and is ignored")

    def _warn(self, text: str) -> None:
        self.warnings.append(f"{self.path.name}: {text}")


def _image_name(value: object) -> str:
    # cross accepts `image = "name"` or `image = { name = "…", toolchain = [...] }`.
    if isinstance(value, dict):
        return repr(value.get("name", value))
    return repr(value)
