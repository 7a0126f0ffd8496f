"""The crossfarm CLI against a running farm, as a user or a CI job drives it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from gate import gate, wait_at_gate
from polling import until

from crossfarm.shared.wire import BuildView, FarmStats

pytestmark = pytest.mark.integration

X86 = "x86_64-unknown-linux-gnu"
ARM = "aarch64-unknown-linux-gnu"


def _stats(farm) -> FarmStats:
    stats = httpx.get(f"{farm.controller_url}/v1/stats", headers=farm.auth)
    return FarmStats.model_validate(stats.json())


def _json(result: subprocess.CompletedProcess[str]) -> object:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_resubmission_sends_no_file_bytes_and_a_one_line_change_sends_one_blob(farm, crate, cli):
    first = cli(crate, "build", "--target", X86, "--detach")
    assert first.returncode == 0, first.stderr

    before = _stats(farm)
    again = cli(crate, "build", "--target", X86, "--detach")
    assert again.returncode == 0, again.stderr
    after = _stats(farm)
    assert after.blob_bytes_received == before.blob_bytes_received
    assert after.blobs_received == before.blobs_received

    main = crate / "src" / "main.rs"
    main.write_text(main.read_text() + "// one more line\n")
    changed = cli(crate, "build", "--target", X86, "--detach")
    assert changed.returncode == 0, changed.stderr
    last = _stats(farm)
    assert last.blobs_received == after.blobs_received + 1
    assert last.blob_bytes_received == after.blob_bytes_received + main.stat().st_size
    assert "sent 1 of" in changed.stderr


def test_json_output_matches_the_servers_record(farm, crate, cli):
    document = _json(cli(crate, "build", "--target", X86, "--json"))
    build = BuildView.model_validate(document["build"])
    server = BuildView.model_validate(
        httpx.get(f"{farm.controller_url}/v1/builds/{build.build_id}", headers=farm.auth).json())
    assert build == server
    assert [a["name"] for a in document["artifacts"]] == ["hello-c"]
    status = _json(cli(crate, "status", build.build_id, "--json"))
    assert BuildView.model_validate(status) == server


def test_list_logs_and_artifacts_commands_see_the_same_build(farm, crate, cli, tmp_path):
    build = BuildView.model_validate(
        _json(cli(crate, "build", "--target", X86, "--json"))["build"])
    listed = _json(cli(crate, "list", "--mine", "--json"))
    assert build.build_id in [item["build_id"] for item in listed]
    assert all(item["submitter"] == build.submitter for item in listed)
    assert build.build_id not in [
        item["build_id"] for item in _json(cli(crate, "list", "--state", "failed", "--json"))]

    logs = cli(crate, "logs", build.build_id, "--target", X86)
    assert logs.returncode == 0
    # the build's output on stdout, as it was: `crossfarm logs ID > file` keeps it
    assert any(line.lstrip().startswith("Compiling hello-c v0.1.0")
               for line in logs.stdout.splitlines())
    assert not logs.stdout.startswith("[")  # one target's lines, unprefixed
    assert f"{X86}: succeeded" in logs.stderr
    events = _json(cli(crate, "logs", build.build_id, "--json"))
    assert {e["target"] for e in events if e["kind"] != "end"} == {X86}
    assert any("Compiling hello-c" in (e["line"] or "") for e in events if e["kind"] == "log")
    assert [e["state"] for e in events if e["kind"] == "state"][-1] == "succeeded"
    # the log the worker stored with the artifacts, which outlives the live stream
    stored = cli(crate, "logs", build.build_id, "--stored")
    assert stored.returncode == 0, stored.stderr
    assert any(line.lstrip().startswith("Compiling hello-c v0.1.0")
               for line in stored.stdout.splitlines())

    fetched = _json(cli(crate, "artifacts", build.build_id, "--download", str(tmp_path / "out"),
                        "--json"))
    assert (tmp_path / "out" / X86 / "hello-c").is_file()
    assert fetched[0]["sha256"] == build_sha(tmp_path / "out" / X86 / "hello-c")


def build_sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_workers_command_shows_the_worker_with_its_arch_and_modes(farm, crate, cli):
    fleet = _json(cli(crate, "workers", "--json"))
    worker = next(w for w in fleet["workers"] if w["name"] == "worker-amd64")
    assert worker["state"] == "online"
    assert worker["info"]["arch"] == "amd64"
    assert worker["info"]["queues"] == {"crossfarm.builds.amd64": "native",
                                        "crossfarm.builds.arm64.cross": "cross"}
    assert sorted(worker["info"]["targets"]) == [ARM, X86]
    arches = {a["arch"]: a for a in fleet["arches"]}
    assert arches["amd64"]["workers_online"] >= 1
    assert arches["arm64"]["workers_online"] == 0
    assert arches["arm64"]["cross_workers"] >= 1


def test_a_symlink_pointing_outside_the_crate_is_refused_before_upload(farm, crate, cli):
    before = _stats(farm)
    (crate / "secrets").symlink_to("/etc/passwd")
    result = cli(crate, "build", "--target", X86)
    assert result.returncode == 2
    assert "secrets: symlink points outside the source tree" in result.stderr
    assert _stats(farm) == before


def test_unsupported_target_is_an_error_naming_the_supported_ones(farm, crate, cli):
    result = cli(crate, "build", "--target", "sparc64-unknown-linux-gnu")
    assert result.returncode == 2
    assert f"supported targets: {ARM}, {X86}" in result.stderr


def test_a_missing_or_wrong_token_is_refused_with_what_to_set(farm, crate, cli):
    before = _stats(farm)
    for token in (None, "not-the-farm-token"):
        env = {k: v for k, v in farm.env().items() if k != "CROSSFARM_TOKEN"}
        if token:
            env["CROSSFARM_TOKEN"] = token
        result = cli(crate, "build", "--target", X86, env=env, timeout=120)
        assert result.returncode == 2, result.stderr
        assert "set `token` in your crossfarm config (or CROSSFARM_TOKEN)" in result.stderr
        assert ("this farm needs a token" if token is None else "not one this farm issued") in (
            result.stderr)
    assert _stats(farm) == before  # nothing was stored


def test_in_a_workspace_member_the_workspace_is_sent_and_only_that_member_built(
        farm, tmp_path, cli):
    ws = tmp_path / "ws"
    files = {
        "Cargo.toml": '[workspace]\nmembers = ["app", "util", "other"]\nresolver = "2"\n'
                      '[workspace.package]\nversion = "0.3.0"\nedition = "2021"\n',
        "app/Cargo.toml": '[package]\nname = "app"\nversion.workspace = true\n'
                          'edition.workspace = true\n[dependencies]\nutil = { path = "../util" }\n',
        "app/src/main.rs": 'fn main() { println!("answer {}", util::answer()); }\n',
        "util/Cargo.toml": '[package]\nname = "util"\nversion.workspace = true\n'
                           'edition.workspace = true\n',
        "util/src/lib.rs": "pub fn answer() -> u32 { 42 }\n",
        "other/Cargo.toml": '[package]\nname = "other"\nversion.workspace = true\n'
                            'edition.workspace = true\n',
        "other/src/main.rs": "fn main() {}\n",
    }
    for name, text in files.items():
        (ws / name).parent.mkdir(parents=True, exist_ok=True)
        (ws / name).write_text(text)
    result = cli(ws / "app", "build", "--target", X86)
    assert result.returncode == 0, result.stderr
    # where cargo itself would put it: the workspace's target/, not the member's
    built = ws / "target" / X86 / "debug"
    ran = subprocess.run([built / "app"], capture_output=True, text=True, check=True)
    assert ran.stdout == "answer 42\n"
    assert not (built / "other").exists()
    assert not (ws / "app" / "target").exists()


def test_config_precedence_flag_over_env_over_project_file(farm, crate, cli, tmp_path):
    (crate / "crossfarm.toml").write_text(
        'url = "http://127.0.0.1:1"\ntargets = ["aarch64-unknown-linux-gnu"]\ntimeout = 99\n')
    sub = crate / "src"
    shown = _json(cli(sub, "config", "--json"))
    # The farm fixture sets CROSSFARM_URL, which beats the project file.
    assert shown["url"] == {"value": farm.controller_url, "source": "env CROSSFARM_URL"}
    assert shown["targets"]["source"] == str(crate / "crossfarm.toml")
    assert shown["timeout"] == {"value": "99", "source": str(crate / "crossfarm.toml")}
    flagged = _json(cli(sub, "config", "--json", "--url", "http://127.0.0.1:2"))
    assert flagged["url"] == {"value": "http://127.0.0.1:2", "source": "flag --url"}


def test_cross_toml_passthrough_reaches_the_build_and_is_redacted_in_logs(farm, crate, cli):
    (crate / "Cross.toml").write_text(
        '[build.env]\npassthrough = ["CROSSFARM_TEST_SECRET"]\nvolumes = ["/data"]\n')
    (crate / "build.rs").write_text(
        'fn main() {\n'
        '    cc::Build::new().file("src/answer.c").compile("answer");\n'
        '    let v = std::env::var("CROSSFARM_TEST_SECRET").unwrap();\n'
        '    println!("cargo:warning=the secret is {v}");\n'
        '    println!("cargo:rustc-env=BAKED={v}");\n'
        '}\n')
    main = crate / "src" / "main.rs"
    main.write_text(main.read_text().replace(
        'println!("hello', 'println!("baked={}", env!("BAKED"));\n    println!("hello'))
    env = {**farm.env(), "CROSSFARM_TEST_SECRET": "hunter2-swordfish"}
    result = cli(crate, "build", "--target", X86, env=env)
    assert result.returncode == 0, result.stderr
    assert "build.env.volumes (/data) are not mounted on remote builders" in result.stderr
    assert "the secret is ***" in result.stderr
    assert "hunter2-swordfish" not in result.stderr
    out = subprocess.run([crate / "target" / X86 / "debug" / "hello-c"], capture_output=True,
                         text=True, check=True)
    assert "baked=hunter2-swordfish" in out.stdout


def test_interrupt_with_cancel_on_interrupt_cancels_the_remote_build(farm, crate):
    gate(crate)  # never opened: only the interrupt's cancel can end this build
    # A runner may start the suite with SIGINT ignored (a background job of a shell
    # without job control), and Python then keeps ignoring it: give the CLI the default.
    proc = subprocess.Popen(
        [sys.executable, "-m", "crossfarm.client", "build", "--target", X86,
         "--cancel-on-interrupt"],
        cwd=crate, env=farm.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def running() -> list[dict]:
        builds = httpx.get(f"{farm.controller_url}/v1/builds", params={"limit": 5},
                           headers=farm.auth).json()
        return [b for b in builds if b["state"] == "running"
                and b["jobs"][0]["started_at"] is not None]

    build = until(running, "the build to start")[0]
    wait_at_gate(build["jobs"][0]["job_id"])
    build_id = build["build_id"]
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    view = httpx.get(f"{farm.controller_url}/v1/builds/{build_id}", headers=farm.auth).json()
    assert view["state"] == "cancelled"


@pytest.fixture(scope="module")
def git_server(tmp_path_factory):
    """A git daemon on loopback serving hello-c, committed on branch main and tagged v1."""
    import shutil

    root = tmp_path_factory.mktemp("git")
    repo = root / "hello-c"
    shutil.copytree(Path(__file__).parents[1] / "fixtures" / "hello-c", repo)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "hello"],
                 ["tag", "v1"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                            text=True, check=True).stdout.strip()
    from farm import free_port  # deploy/local, on the path via conftest

    port = free_port()
    daemon = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={root}",
         "--listen=127.0.0.1", f"--port={port}", str(root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"git://127.0.0.1:{port}/hello-c"
    until(lambda: subprocess.run(["git", "ls-remote", url], capture_output=True).returncode == 0,
          "the git daemon to come up")
    yield url, commit
    daemon.terminate()
    daemon.wait(timeout=10)


@pytest.mark.parametrize("rev", ["main", "v1", "commit"])
def test_git_source_builds_a_commit_the_farm_fetches_itself(farm, cli, git_server, tmp_path,
                                                            rev):
    url, commit = git_server
    before = _stats(farm)
    result = cli(tmp_path, "build", "--git", url, "--rev", commit if rev == "commit" else rev,
                 "--target", X86, "--json")
    document = _json(result)
    assert document["build"]["state"] == "succeeded"
    assert f"farm fetched {url} at {commit}" in result.stderr
    assert (tmp_path / "target" / X86 / "debug" / "hello-c").is_file()
    assert _stats(farm).blob_bytes_received == before.blob_bytes_received  # no upload


def test_git_source_with_a_missing_rev_is_a_clear_error(farm, cli, git_server, tmp_path):
    url, _ = git_server
    result = cli(tmp_path, "build", "--git", url, "--rev", "no-such-branch", "--target", X86)
    assert result.returncode == 2
    assert "revision 'no-such-branch' was not found" in result.stderr


def test_git_source_with_a_bad_url_is_a_clear_error(farm, cli, tmp_path):
    from farm import free_port

    url = f"git://127.0.0.1:{free_port()}/nothing"
    result = cli(tmp_path, "build", "--git", url, "--rev", "main", "--target", X86)
    assert result.returncode == 2
    assert f"cannot fetch {url}" in result.stderr


def test_git_source_refuses_local_paths(farm, cli, tmp_path):
    result = cli(tmp_path, "build", "--git", "file:///etc", "--rev", "main", "--target", X86)
    assert result.returncode == 2
    assert "must start with one of https://" in result.stderr


def test_an_operator_issues_lists_and_revokes_a_token_that_then_builds_only_its_tenants(
        farm, crate, cli, tmp_path):
    created = cli(tmp_path, "admin", "token", "create", "--tenant", "cli-e2e", "--name", "ada",
                  "--expires", "1d")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert "shown this once" in created.stderr
    listed = _json(cli(tmp_path, "admin", "token", "list", "--json"))
    [row] = [t for t in listed if t["tenant"] == "cli-e2e"]
    assert row["name"] == "ada"
    assert token not in json.dumps(listed)

    ada = {**farm.env(), "CROSSFARM_TOKEN": token}
    built = _json(cli(crate, "build", "--target", X86, "--detach", "--json", env=ada))
    assert built["submitter"] == "ada@cli-e2e"
    mine = _json(cli(crate, "list", "--mine", "--json", env=ada))
    assert [b["build_id"] for b in mine] == [built["build_id"]]
    # the farm's own (default-tenant) client token does not see ada's build
    client = {**farm.env(), "CROSSFARM_TOKEN": farm.client_token}
    refused = cli(crate, "status", built["build_id"], env=client)
    assert refused.returncode == 2
    assert "HTTP 404" in refused.stderr
    assert cli(tmp_path, "admin", "token", "list", env=client).returncode == 2  # not an operator

    assert cli(tmp_path, "admin", "token", "revoke", str(row["id"])).returncode == 0
    revoked = cli(crate, "list", env=ada)
    assert revoked.returncode == 2
    assert "was revoked at" in revoked.stderr
    cli(crate, "cancel", built["build_id"])
