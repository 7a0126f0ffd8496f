import socket
from pathlib import Path

import pytest

from crossfarm.client.config import (
    DEFAULT_URL,
    KEYS,
    Config,
    CrossConfig,
    find_project_config,
    load_config,
    read_cross_toml,
    user_config_path,
)
from crossfarm.shared.errors import InvalidRequest

USER_ENV = {"USER": "alice"}
X86 = "x86_64-unknown-linux-gnu"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "work" / "crate"
    path.mkdir(parents=True)
    return path


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _user_file(home: Path, text: str) -> Path:
    return _write(home / ".config" / "crossfarm" / "config.toml", text)


def _load(
    project: Path,
    home: Path,
    flags: dict[str, object] | None = None,
    env: dict[str, str] | None = None,
) -> Config:
    return load_config(flags or {}, {**USER_ENV, **(env or {})}, project, home)


# --- precedence and sources -------------------------------------------------------------


def test_flag_beats_env_beats_project_file_beats_user_file(project: Path, home: Path) -> None:
    user = _user_file(home, 'url = "http://user:1"\n')
    proj = _write(project / "crossfarm.toml", 'url = "http://project:1"\n')
    env = {"CROSSFARM_URL": "http://env:1"}
    flags: dict[str, object] = {"url": "http://flag:1"}

    assert _load(project, home, flags, env).sources["url"] == "flag --url"
    assert _load(project, home, flags, env).url == "http://flag:1"
    assert _load(project, home, {}, env).url == "http://env:1"
    assert _load(project, home, {}, env).sources["url"] == "env CROSSFARM_URL"
    assert _load(project, home).url == "http://project:1"
    assert _load(project, home).sources["url"] == str(proj)
    proj.unlink()
    assert _load(project, home).url == "http://user:1"
    assert _load(project, home).sources["url"] == str(user)
    user.unlink()
    assert _load(project, home).url == DEFAULT_URL
    assert _load(project, home).sources["url"] == "default"


def test_every_key_has_its_default_when_nothing_sets_it(project: Path, home: Path) -> None:
    config = _load(project, home)

    assert config.url == DEFAULT_URL
    assert config.token is None
    assert config.targets == []
    assert config.profile is None
    assert config.timeout is None
    assert config.user == f"alice@{socket.gethostname()}"
    assert config.sources == dict.fromkeys(KEYS, "default")


def test_default_user_prefers_logname_from_the_given_environment(
    project: Path, home: Path
) -> None:
    config = load_config({}, {"LOGNAME": "bob", "USER": "alice"}, project, home)

    assert config.user == f"bob@{socket.gethostname()}"


def test_each_key_can_come_from_a_different_layer(project: Path, home: Path) -> None:
    user = _user_file(home, 'token = "s3cret"\nuser = "ci@farm"\n')
    proj = _write(project / "crossfarm.toml", 'targets = ["aarch64-unknown-linux-gnu"]\n')
    env = {"CROSSFARM_PROFILE": "release", "CROSSFARM_TIMEOUT": "900"}

    config = _load(project, home, {"url": "https://farm.example"}, env)

    assert config.sources == {
        "url": "flag --url",
        "token": str(user),
        "targets": str(proj),
        "profile": "env CROSSFARM_PROFILE",
        "timeout": "env CROSSFARM_TIMEOUT",
        "user": str(user),
    }
    assert (config.token, config.targets, config.profile, config.timeout, config.user) == (
        "s3cret", ["aarch64-unknown-linux-gnu"], "release", 900, "ci@farm"
    )


def test_targets_flag_is_reported_as_the_target_option(project: Path, home: Path) -> None:
    config = _load(project, home, {"targets": ["x86_64-unknown-linux-gnu"]})

    assert config.targets == ["x86_64-unknown-linux-gnu"]
    assert config.sources["targets"] == "flag --target"


def test_env_targets_are_split_on_commas(project: Path, home: Path) -> None:
    env = {"CROSSFARM_TARGETS": " x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu,,"}

    config = _load(project, home, env=env)

    assert config.targets == ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"]


def test_a_flag_given_as_none_is_not_given(project: Path, home: Path) -> None:
    config = _load(project, home, {"url": None, "timeout": None},
                   {"CROSSFARM_URL": "http://env:1"})

    assert config.url == "http://env:1"
    assert config.sources["timeout"] == "default"


def test_an_empty_environment_variable_counts_as_unset(project: Path, home: Path) -> None:
    _write(project / "crossfarm.toml", 'token = "from-file"\n')

    config = _load(project, home, env={"CROSSFARM_TOKEN": "", "CROSSFARM_TIMEOUT": ""})

    assert config.token == "from-file"
    assert config.timeout is None


def test_nearest_crossfarm_toml_up_the_tree_wins(tmp_path: Path, home: Path) -> None:
    _write(tmp_path / "work" / "crossfarm.toml", 'profile = "outer"\ntimeout = 60\n')
    inner = _write(tmp_path / "work" / "crate" / "crossfarm.toml", 'profile = "inner"\n')
    deep = tmp_path / "work" / "crate" / "src" / "bin"
    deep.mkdir(parents=True)

    config = _load(deep, home)

    assert find_project_config(deep) == inner
    assert config.profile == "inner"
    assert config.sources["profile"] == str(inner)
    # Only the nearest file counts: the outer one does not fill keys the inner one leaves out.
    assert config.timeout is None


def test_crossfarm_toml_in_a_parent_directory_is_found(tmp_path: Path, home: Path) -> None:
    outer = _write(tmp_path / "work" / "crossfarm.toml", 'profile = "outer"\n')
    deep = tmp_path / "work" / "crate" / "src"
    deep.mkdir(parents=True)

    assert _load(deep, home).sources["profile"] == str(outer)


def test_a_directory_named_crossfarm_toml_is_not_a_config_file(project: Path) -> None:
    (project / "crossfarm.toml").mkdir()
    outer = _write(project.parent / "crossfarm.toml", 'profile = "outer"\n')

    assert find_project_config(project) == outer


def test_xdg_config_home_is_respected(project: Path, home: Path, tmp_path: Path) -> None:
    _user_file(home, 'profile = "from-dot-config"\n')
    xdg_file = _write(tmp_path / "xdg" / "crossfarm" / "config.toml", 'profile = "from-xdg"\n')

    config = _load(project, home, env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})

    assert config.profile == "from-xdg"
    assert config.sources["profile"] == str(xdg_file)


def test_a_relative_xdg_config_home_is_ignored(home: Path) -> None:
    path = user_config_path({"XDG_CONFIG_HOME": "relative/dir"}, home)

    assert path == home / ".config" / "crossfarm" / "config.toml"


# --- printing ---------------------------------------------------------------------------


def test_describe_lists_every_key_with_printable_value_and_source(
    project: Path, home: Path
) -> None:
    proj = _write(project / "crossfarm.toml", 'targets = ["a-b-c", "d-e-f"]\ntimeout = 30\n')

    rows = _load(project, home).describe()

    assert [key for key, _, _ in rows] == list(KEYS)
    table = {key: (value, source) for key, value, source in rows}
    assert table["targets"] == ("a-b-c, d-e-f", str(proj))
    assert table["timeout"] == ("30", str(proj))
    assert table["token"] == ("(not set)", "default")
    assert table["url"] == (DEFAULT_URL, "default")


def test_token_is_redacted_in_describe_and_repr(project: Path, home: Path) -> None:
    config = _load(project, home, env={"CROSSFARM_TOKEN": "hunter2-token"})

    assert ("token", "***", "env CROSSFARM_TOKEN") in config.describe()
    assert "hunter2-token" not in repr(config)
    assert "hunter2-token" not in str(config)
    assert "token='***'" in repr(config)
    assert config.token == "hunter2-token"


# --- errors -----------------------------------------------------------------------------


def test_unknown_key_in_a_file_is_named_with_the_known_keys(project: Path, home: Path) -> None:
    path = _write(project / "crossfarm.toml", 'urll = "http://x"\n')

    with pytest.raises(InvalidRequest) as caught:
        _load(project, home)

    assert str(path) in str(caught.value)
    assert "urll" in str(caught.value)
    assert "known keys: url, token, targets, profile, timeout, user" in str(caught.value)


@pytest.mark.parametrize(
    ("line", "key", "expected"),
    [
        ('timeout = "x"', "timeout", "must be a whole number of seconds, got 'x' (a string)"),
        ("timeout = true", "timeout", "must be a whole number of seconds, got True"),
        ("timeout = 0", "timeout", "must be a positive number of seconds"),
        ("timeout = 1.5", "timeout", "must be a whole number of seconds"),
        ("url = 8700", "url", "must be a string, got 8700 (an integer)"),
        ('targets = "x86_64-unknown-linux-gnu"', "targets", "must be a list of target triples"),
        ("targets = [1]", "targets", "1 is not a triple"),
        ('token = ""', "token", "must not be empty"),
        ("[profile]\nname = 'x'", "profile", "must be a string, got {'name': 'x'} (a table)"),
    ],
)
def test_a_wrong_type_in_a_file_names_the_file_and_key(
    project: Path, home: Path, line: str, key: str, expected: str
) -> None:
    path = _write(project / "crossfarm.toml", line + "\n")

    with pytest.raises(InvalidRequest, match="^" + str(path) + ": " + key) as caught:
        _load(project, home)

    assert expected in str(caught.value)


def test_unparseable_toml_reports_the_file_line_and_column(project: Path, home: Path) -> None:
    path = _user_file(home, 'url = "http://x"\ntimeout 30\n')

    with pytest.raises(InvalidRequest) as caught:
        _load(project, home)

    assert str(caught.value).startswith(f"{path}: not valid TOML: ")
    assert "line 2, column 9" in str(caught.value)


def test_a_file_that_is_not_utf8_is_refused_by_name(project: Path, home: Path) -> None:
    path = project / "crossfarm.toml"
    path.write_bytes(b'profile = "\xff"\n')

    with pytest.raises(InvalidRequest, match="not UTF-8") as caught:
        _load(project, home)

    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("source", "url"),
    [("file", "ftp://farm"), ("env", "farm.example:8700"), ("flag", "https://")],
)
def test_a_url_that_is_not_http_is_refused(
    project: Path, home: Path, source: str, url: str
) -> None:
    flags: dict[str, object] = {}
    env: dict[str, str] = {}
    if source == "file":
        _write(project / "crossfarm.toml", f'url = "{url}"\n')
    elif source == "env":
        env["CROSSFARM_URL"] = url
    else:
        flags["url"] = url
    where = {"file": str(project / "crossfarm.toml") + ": url", "env": "CROSSFARM_URL",
             "flag": "--url"}[source]

    with pytest.raises(InvalidRequest) as caught:
        _load(project, home, flags, env)

    assert str(caught.value) == (
        f"{where} must be an http:// or https:// URL such as {DEFAULT_URL}, got {url!r}"
    )


def test_a_non_integer_crossfarm_timeout_is_refused(project: Path, home: Path) -> None:
    with pytest.raises(InvalidRequest) as caught:
        _load(project, home, env={"CROSSFARM_TIMEOUT": "10m"})

    assert str(caught.value) == "CROSSFARM_TIMEOUT must be a whole number of seconds, got '10m'"


def test_a_broken_file_is_reported_even_when_a_flag_overrides_the_key(
    project: Path, home: Path
) -> None:
    path = _user_file(home, 'timeout = "soon"\n')

    with pytest.raises(InvalidRequest, match="timeout") as caught:
        _load(project, home, {"timeout": 60})

    assert str(path) in str(caught.value)


def test_an_unknown_flag_is_a_programming_error(project: Path, home: Path) -> None:
    with pytest.raises(ValueError, match="verbose"):
        _load(project, home, {"verbose": True})


# --- Cross.toml -------------------------------------------------------------------------


def _cross(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> CrossConfig:
    return read_cross_toml(_write(tmp_path / "Cross.toml", text), env or {})


def test_bare_passthrough_name_takes_its_value_from_the_environment(tmp_path: Path) -> None:
    cross = _cross(tmp_path, '[build.env]\npassthrough = ["API_KEY"]\n', {"API_KEY": "k-123"})

    assert cross.passthrough == {"API_KEY": "k-123"}
    assert cross.missing == []
    assert cross.warnings == []


def test_name_equals_value_passthrough_gives_the_literal_value(tmp_path: Path) -> None:
    cross = _cross(
        tmp_path,
        '[build.env]\npassthrough = ["MODE=fast", "QUERY=a=b", "EMPTY="]\n',
        {"MODE": "slow"},
    )

    assert cross.passthrough == {"MODE": "fast", "QUERY": "a=b", "EMPTY": ""}


def test_an_unset_passthrough_name_is_skipped_and_listed_as_missing(tmp_path: Path) -> None:
    cross = _cross(
        tmp_path,
        '[build.env]\npassthrough = ["SET", "UNSET"]\n'
        '[target.aarch64-unknown-linux-gnu.env]\npassthrough = ["UNSET", "ALSO_UNSET"]\n',
        {"SET": "1"},
    )

    assert cross.passthrough == {"SET": "1"}
    assert cross.per_target == {}
    assert cross.missing == ["UNSET", "ALSO_UNSET"]


def test_target_passthrough_is_kept_per_target_and_wins_for_that_target(tmp_path: Path) -> None:
    cross = _cross(
        tmp_path,
        '[build.env]\npassthrough = ["LEVEL=global", "SHARED"]\n'
        '[target.aarch64-unknown-linux-gnu.env]\npassthrough = ["LEVEL=arm", "ARM_ONLY"]\n',
        {"SHARED": "s", "ARM_ONLY": "a"},
    )

    assert cross.passthrough == {"LEVEL": "global", "SHARED": "s"}
    assert cross.per_target == {"aarch64-unknown-linux-gnu": {"LEVEL": "arm", "ARM_ONLY": "a"}}
    assert cross.env_for("aarch64-unknown-linux-gnu") == {
        "LEVEL": "arm", "SHARED": "s", "ARM_ONLY": "a"
    }
    assert cross.env_for("x86_64-unknown-linux-gnu") == {"LEVEL": "global", "SHARED": "s"}


def test_secret_values_lists_each_non_empty_value_once(tmp_path: Path) -> None:
    cross = _cross(
        tmp_path,
        '[build.env]\npassthrough = ["A=one", "B=two", "C="]\n'
        '[target.x86_64-unknown-linux-gnu.env]\npassthrough = ["D=one", "E=three"]\n',
    )

    assert cross.secret_values() == ["one", "two", "three"]


@pytest.mark.parametrize("where", ["build.env", "target.x86_64-unknown-linux-gnu.env"])
def test_volumes_warn_that_they_are_not_mounted_on_remote_builders(
    tmp_path: Path, where: str
) -> None:
    cross = _cross(tmp_path, f'[{where}]\nvolumes = ["DATA_DIR", "CACHE"]\n')

    assert cross.warnings == [
        f"Cross.toml: {where}.volumes (DATA_DIR, CACHE) are not mounted on remote builders "
        "and are ignored"
    ]


@pytest.mark.parametrize(
    ("image", "shown"),
    [('"ghcr.io/me/img:1"', "'ghcr.io/me/img:1'"), ('{ name = "me/img" }', "'me/img'")],
)
def test_a_target_image_warns_that_the_farm_uses_its_own_images(
    tmp_path: Path, image: str, shown: str
) -> None:
    cross = _cross(tmp_path, f"[target.aarch64-unknown-linux-gnu]\nimage = {image}\n")

    assert cross.warnings == [
        f"Cross.toml: target.aarch64-unknown-linux-gnu.image ({shown}) is ignored: "
        "the farm builds with its own builder images"
    ]


@pytest.mark.parametrize(
    ("text", "key_path"),
    [
        ("[build]\nxargo = true", "build.xargo"),
        ("[build]\nbuild-std = true", "build.build-std"),
        ("[build]\nzig = true", "build.zig"),
        ('[build]\ndefault-target = "x86_64-unknown-linux-gnu"', "build.default-target"),
        ('[build]\npre-build = ["apt-get update"]', "build.pre-build"),
        ('[build]\ndockerfile = "./Dockerfile"', "build.dockerfile"),
        ("[build.dockerfile]\nfile = './Dockerfile'", "build.dockerfile"),
        ("[build]\nsomething-new = 1", "build.something-new"),
        ('[build.env]\ncargo-config = "complete"', "build.env.cargo-config"),
        (f'[target.{X86}]\nrunner = "qemu"', f"target.{X86}.runner"),
        (f"[target.{X86}]\nxargo = false", f"target.{X86}.xargo"),
        (f'[target.{X86}]\npre-build = ["true"]', f"target.{X86}.pre-build"),
        ("[metadata]\nx = 1", "metadata"),
    ],
)
def test_every_unsupported_key_is_warned_about_by_its_path(
    tmp_path: Path, text: str, key_path: str
) -> None:
    cross = _cross(tmp_path, text + "\n")

    assert cross.warnings == [
        f"Cross.toml: {key_path} is not supported by crossfarm and is ignored"
    ]
    assert cross.passthrough == {}


def test_supported_and_unsupported_keys_in_one_file(tmp_path: Path) -> None:
    cross = _cross(
        tmp_path,
        '[build]\nzig = true\nxargo = false\n[build.env]\npassthrough = ["TOKEN"]\n',
        {"TOKEN": "t"},
    )

    assert cross.passthrough == {"TOKEN": "t"}
    assert [w.split(": ")[1].split(" ")[0] for w in cross.warnings] == ["build.zig", "build.xargo"]


@pytest.mark.parametrize("entry", ["1ABC", "A-B", "", "=value", "A B=c", "ÄRGER"])
def test_a_bad_environment_variable_name_is_refused_by_name(tmp_path: Path, entry: str) -> None:
    path = _write(tmp_path / "Cross.toml", f'[build.env]\npassthrough = ["{entry}"]\n')
    name = entry.partition("=")[0]

    with pytest.raises(InvalidRequest) as caught:
        read_cross_toml(path, {})

    assert str(caught.value).startswith(f"{path}: build.env.passthrough names {name!r}")


def test_malformed_cross_toml_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "Cross.toml", "[build.env\npassthrough = []\n")

    with pytest.raises(InvalidRequest, match="not valid TOML") as caught:
        read_cross_toml(path, {})

    assert str(caught.value).startswith(str(path))
    assert "line 1" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[build.env]\npassthrough = "A"', "build.env.passthrough must be a list of strings"),
        ("[build.env]\npassthrough = [1]", "build.env.passthrough must be a list of strings"),
        ('build = "x"', "build must be a table"),
        ('[target]\nx86_64-unknown-linux-gnu = "img"', "target.x86_64-unknown-linux-gnu must be"),
    ],
)
def test_a_wrongly_shaped_cross_toml_is_refused_by_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = _write(tmp_path / "Cross.toml", text + "\n")

    with pytest.raises(InvalidRequest) as caught:
        read_cross_toml(path, {})

    assert str(caught.value).startswith(f"{path}: {message}")


def test_no_cross_toml_gives_an_empty_cross_config(tmp_path: Path) -> None:
    cross = read_cross_toml(tmp_path / "Cross.toml", {"API_KEY": "x"})

    assert cross == CrossConfig()
    assert cross.secret_values() == []
