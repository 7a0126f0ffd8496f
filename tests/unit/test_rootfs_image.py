"""deploy/images/rootfs_image.py: the `docker load` archive it writes for a rootfs."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "images" / "rootfs_image.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rootfs_image", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rootfs_image = _module()


def _rootfs(tmp_path: Path) -> Path:
    path = tmp_path / "rootfs.tar"
    with tarfile.open(path, "w") as tar:
        data = b"hello\n"
        info = tarfile.TarInfo("etc/hello")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def _dockerfile(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    return path


def test_the_image_config_takes_the_last_stages_env_user_workdir_and_cmd(tmp_path: Path) -> None:
    dockerfile = _dockerfile(tmp_path, "\n".join([
        "FROM x AS first", "ENV DROPPED=1", "FROM debian:bookworm", "ARG TARGETARCH",
        "ENV CARGO_HOME=/cargo", 'ENV A=1 B="two words"', "USER 10001", "WORKDIR /src",
        "WORKDIR /work", 'CMD ["python3", "-m", "crossfarm.controller"]', "EXPOSE 8700",
        "LABEL org.example=yes", ""]))
    config = rootfs_image.container_config(dockerfile)
    assert config["Env"] == [f"PATH={rootfs_image.DEFAULT_PATH}", "CARGO_HOME=/cargo",
                             "A=1", "B=two words"]
    assert (config["User"], config["WorkingDir"]) == ("10001", "/work")
    assert config["Cmd"] == ["python3", "-m", "crossfarm.controller"]
    assert config["ExposedPorts"] == {"8700/tcp": {}}
    assert config["Labels"] == {"org.example": "yes"}


def test_a_continued_env_line_is_refused_with_the_place_to_fix(tmp_path: Path) -> None:
    dockerfile = _dockerfile(tmp_path, "FROM debian\nENV A=1 \\\n    B=2\n")
    with pytest.raises(rootfs_image.ImageError, match=r"Dockerfile:2: ENV continues"):
        rootfs_image.container_config(dockerfile)


def test_a_shell_form_cmd_is_refused(tmp_path: Path) -> None:
    dockerfile = _dockerfile(tmp_path, "FROM debian\nCMD python3 -m x\n")
    with pytest.raises(rootfs_image.ImageError, match="exec form"):
        rootfs_image.container_config(dockerfile)


def test_an_unknown_architecture_is_refused_by_name() -> None:
    with pytest.raises(rootfs_image.ImageError, match=r"'riscv64'.*amd64.*arm64"):
        rootfs_image.parse_arch("riscv64")


def test_the_archive_names_the_platform_and_the_rootfs_as_its_one_layer(tmp_path: Path) -> None:
    rootfs = _rootfs(tmp_path)
    out = io.BytesIO()
    image_id = rootfs_image.write_archive(rootfs, "aarch64", {"Env": []}, "x/y:1-arm64", out)
    out.seek(0)
    with tarfile.open(fileobj=out) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
        [entry] = manifest
        body = archive.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
        layer = archive.extractfile(entry["Layers"][0]).read()  # type: ignore[union-attr]
    config = json.loads(body)
    assert entry["RepoTags"] == ["x/y:1-arm64"]
    assert (config["os"], config["architecture"], config["variant"]) == ("linux", "arm64", "v8")
    assert layer == rootfs.read_bytes()
    assert config["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(layer).hexdigest()}"]
    assert image_id == f"sha256:{hashlib.sha256(body).hexdigest()}"


def test_an_amd64_image_carries_no_variant(tmp_path: Path) -> None:
    config = rootfs_image.image_config({}, "x86_64", "sha256:00", "2026-01-01T00:00:00Z")
    assert config["architecture"] == "amd64"
    assert "variant" not in config
