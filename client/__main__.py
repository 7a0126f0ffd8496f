"""The `crossfarm` command (and `python -m crossfarm.client`): the CLI in client/cli.py,
started so that it starts fast."""

import os
import sys


def main() -> int:
    # Pydantic looks for plugins of its own in the entry points of every installed
    # distribution when it builds its first model: 20-130 ms of every command on a
    # machine with a full environment, for plugins the CLI never uses. Pydantic's own
    # switch turns that off, in this process only, unless the user set it already.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    # httpcore imports trio and anyio whenever they are installed, for async clients; the
    # CLI's client is synchronous, and trio alone took 50-150 ms to import. A None entry
    # makes the import fail, as httpcore expects when they are not installed.
    for unused in ("trio", "anyio"):
        sys.modules.setdefault(unused, None)  # type: ignore[arg-type]
    from crossfarm.client.cli import main as cli  # after the switch: it imports pydantic

    return cli()


if __name__ == "__main__":
    sys.exit(main())
