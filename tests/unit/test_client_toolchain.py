"""The toolchain a crate asks for: +TOOLCHAIN, else its rust-toolchain(.toml). (The
farm's check of it before anything is sent: test_client_preflight.py.)"""

import pytest

from crossfarm.client.toolchain import crate_toolchain, read_toolchain_file
from crossfarm.shared.errors import UsageError

X86 = "x86_64-unknown-linux-gnu"


def test_rust_toolchain_toml_names_its_channel(tmp_path):
    path = tmp_path / "rust-toolchain.toml"
    path.write_text('[toolchain]\nchannel = "1.63"\ncomponents = ["clippy"]\n')
    assert read_toolchain_file(path) == "1.63"


def test_a_legacy_rust_toolchain_file_is_one_line(tmp_path):
    path = tmp_path / "rust-toolchain"
    path.write_text("1.63.0\n")
    assert read_toolchain_file(path) == "1.63.0"


@pytest.mark.parametrize(("text", "complaint"), [
    ('[toolchain]\npath = "/opt/rust"\n', "a toolchain by path is this machine's own"),
    ("[toolchain]\n", "no channel"),
    ('channel = "1.63"\n', "no \\[toolchain\\] table"),
    ('[toolchain]\nchannel = "../../etc"\n', "is not a toolchain name"),
    ("[toolchain\n", "not TOML"),
])
def test_a_toolchain_file_the_farm_cannot_follow_is_refused_saying_why(tmp_path, text,
                                                                        complaint):
    path = tmp_path / "rust-toolchain.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=complaint):
        read_toolchain_file(path)


def test_the_nearest_file_up_to_the_sent_root_counts_legacy_first(tmp_path):
    member = tmp_path / "crates" / "app"
    member.mkdir(parents=True)
    (tmp_path / "rust-toolchain.toml").write_text('[toolchain]\nchannel = "1.96"\n')
    assert crate_toolchain(member, tmp_path) == ("1.96", tmp_path / "rust-toolchain.toml")
    (tmp_path / "rust-toolchain").write_text("1.63\n")
    assert crate_toolchain(member, tmp_path)[0] == "1.63"
    assert crate_toolchain(member, member) is None  # nothing above the root sent
