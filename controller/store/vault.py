"""The values of a build's variables, sealed at rest; the only module that imports
`cryptography`.

A build's variables (Cross.toml passthrough, `--env`) are often credentials. The record
keeps their names in clear (views show them) and their values only as one Fernet token
(AES-CBC with an HMAC-SHA256: a changed or foreign token is refused, never half-read),
and the job store drops that token once every job of the build has ended.

The same key makes the result cache's keyed digests (`digest`): a record of a job's
inputs that only a holder of the key could recompute, so a copy of the database cannot
be used to test guesses of a variable's value.

Where the key comes from, in order:
- `CROSSFARM_SECRETS_KEY`, which a farm on PostgreSQL must set: every controller sharing
  the database must seal with one key, and no file beside a network database exists;
- on SQLite, a key file beside the database (`<database>.key`), made on first start with
  mode 0600 and refused if others may read it. It keeps a copy or dump of the database
  alone from revealing a running build's values; whoever reads the whole state
  directory reads both, which is why the values are also dropped when the build ends;
- an in-memory SQLite database gets a key that lives as long as it does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy.engine import make_url

from crossfarm.controller.store.schema import Database, MetaRow

_CHECK_KEY = "secrets_key_check"
#: what the digest key is derived with: Fernet's own keys are never used for anything else
_DIGEST_LABEL = b"crossfarm: keyed digests of build inputs"
_CHECK_TEXT = b"crossfarm: the secrets key of this database"
_MAKE_ONE = ("python3 -c 'from cryptography.fernet import Fernet; "
             "print(Fernet.generate_key().decode())'")


class SecretsKeyError(RuntimeError):
    """The secrets key is missing, malformed, exposed, or not the one this database's
    values were sealed with; `source` says where the key came from."""

    def __init__(self, message: str, source: str) -> None:
        super().__init__(message)
        self.source = source


class Vault:
    """Seals and opens the values of a build's variables (and tenants' git tokens) with
    the farm's secrets key."""

    def __init__(self, key: bytes | str, source: str) -> None:
        self.source = source
        try:
            self._fernet = Fernet(key)
        except ValueError:
            raise SecretsKeyError(
                f"the secrets key from {source} is not a Fernet key (32 url-safe "
                f"base64-encoded bytes); make one with: {_MAKE_ONE}", source) from None
        self._digest_key = hmac.digest(base64.urlsafe_b64decode(key), _DIGEST_LABEL,
                                       hashlib.sha256)

    def digest(self, document: object) -> str:
        """HMAC-SHA256 (hex) of `document` as canonical JSON, under a key derived from the
        secrets key: equal documents give equal digests on this farm, and nobody without
        the key can tell which document a digest stands for."""
        text = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
        return hmac.new(self._digest_key, text, hashlib.sha256).hexdigest()

    def seal(self, values: dict[str, dict[str, str]]) -> str:
        return self._fernet.encrypt(json.dumps(values, sort_keys=True).encode()).decode()

    def open(self, token: str, build_id: str) -> dict[str, dict[str, str]]:
        try:
            values: dict[str, dict[str, str]] = json.loads(self._fernet.decrypt(token))
        except InvalidToken:
            raise SecretsKeyError(
                f"the variables of build {build_id} were sealed with another secrets key "
                f"than the one from {self.source}", self.source) from None
        return values

    def seal_text(self, text: str) -> str:
        return self._fernet.encrypt(text.encode()).decode()

    def open_text(self, token: str, what: str) -> str:
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken:
            raise SecretsKeyError(f"{what} was sealed with another secrets key than the one "
                                  f"from {self.source}", self.source) from None

    def check(self, db: Database) -> None:
        """Seal a known text into a new database; in one that has it, open it, so a
        controller with the wrong key stops at start-up instead of sending jobs without
        their variables."""
        with db.session() as session:
            row = session.get(MetaRow, _CHECK_KEY)
            if row is None:
                session.add(MetaRow(key=_CHECK_KEY,
                                    value=self._fernet.encrypt(_CHECK_TEXT).decode()))
                return
            try:
                self._fernet.decrypt(row.value)
            except InvalidToken:
                raise SecretsKeyError(
                    f"this database's variables were sealed with another secrets key than "
                    f"the one from {self.source}: start the controller with the key it was "
                    "made with (CROSSFARM_SECRETS_KEY, or the key file beside a SQLite "
                    "database), or point CROSSFARM_DATABASE_URL at a new database",
                    self.source) from None


def open_vault(database_url: str, secrets_key: str | None) -> Vault:
    """The vault for this database: the key set, else the SQLite database's key file."""
    if secrets_key is not None:
        return Vault(secrets_key, "CROSSFARM_SECRETS_KEY")
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        raise SecretsKeyError(
            f"CROSSFARM_SECRETS_KEY is not set: a {url.get_backend_name()} database needs it, "
            f"as every controller sharing it must seal build variables with one key. "
            f"Make one with: {_MAKE_ONE}", "CROSSFARM_SECRETS_KEY")
    if url.database in (None, "", ":memory:"):
        return Vault(Fernet.generate_key(), "a key made for this in-memory database")
    return _key_file_vault(Path(f"{url.database}.key"))


def _key_file_vault(path: Path) -> Vault:
    """Read the key file, making it first if there is none. It is written whole under a
    temporary name and linked into place, so two controllers starting at once agree on
    one key and neither reads a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(Fernet.generate_key())
                file.flush()
                os.fsync(file.fileno())
            os.link(temporary, path)
        except FileExistsError:
            pass  # another controller made it first: use theirs
        finally:
            os.unlink(temporary)
    exposed = path.stat().st_mode & 0o077
    if exposed:
        raise SecretsKeyError(
            f"the secrets key file {path} may be read by others (mode "
            f"{path.stat().st_mode & 0o777:o}): `chmod 600 {path}`", str(path))
    return Vault(path.read_bytes().strip(), str(path))
