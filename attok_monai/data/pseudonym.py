"""Pseudonymisation of identifiers (patient IDs, study/series/instance UIDs, file paths).

A pseudonym is the salted HMAC-SHA256 of the value, hex-encoded and shortened to ``length`` characters
(default 32 hex = 128 bits). The salt is a secret the user keeps: it is never written next to the pseudonyms,
so a reader of a manifest cannot recompute a pseudonym from a known identifier. The same salt gives the same
pseudonym, which is what lets a re-run of the ingestion recognise rows it has already written.

Example::

    salt = resolve_salt(salt_env="ATTOK_SALT")   # raises MissingSaltError when unset
    pseudonymise("1.2.840.113619.2.1.1.1", salt)  # '5d0c...' (32 hex characters)
"""

from __future__ import annotations

import hashlib
import hmac
import os

from attok_monai.errors import InputError

__all__ = ["MissingSaltError", "pseudonymise", "file_key", "resolve_salt", "salt_check", "MIN_SALT_LENGTH"]

MIN_SALT_LENGTH = 8
_CHECK_MESSAGE = "attok-monai salt check v1"


class MissingSaltError(InputError):
    """Raised when no (or too short a) salt is available: pseudonymisation refuses to run without one."""


def pseudonymise(value: object, salt: str | bytes, length: int = 32) -> str:
    """Salted HMAC-SHA256 pseudonym of ``value`` (``str(value)`` after stripping whitespace).

    Args:
        value: the identifier (str, int, pydicom UID/PersonName, ...). Must not be empty.
        salt: the secret salt (at least ``MIN_SALT_LENGTH`` characters).
        length: number of hex characters kept (8..64).

    Returns:
        lower-case hex string of ``length`` characters.
    """
    if not salt or len(salt) < MIN_SALT_LENGTH:
        raise MissingSaltError(f"pseudonymise: a salt of at least {MIN_SALT_LENGTH} characters is required.")
    if not 8 <= length <= 64:
        raise ValueError(f"pseudonymise: length must be in [8, 64], got {length}.")
    text = str(value).strip()
    if not text:
        raise ValueError("pseudonymise: empty value.")
    key = salt.encode("utf-8") if isinstance(salt, str) else salt
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()[:length]


def file_key(relative_path: str, salt: str | bytes) -> str:
    """The stable pseudonymised key of one file: 16 hex characters of the salted HMAC of ``"path:" + relative_path``
    (POSIX separators, relative to the archive or input folder). Manifests, reports and inference outputs name a
    file by this key; only the private key-to-path map (:func:`attok_monai.data.manifest.write_private_map`) holds
    the path."""
    return pseudonymise(f"path:{relative_path}", salt, length=16)


def salt_check(salt: str | bytes) -> str:
    """A fingerprint of the salt (HMAC of a fixed message) stored in reports so that a re-run with a different
    salt is detected; it does not reveal the salt."""
    return pseudonymise(_CHECK_MESSAGE, salt, length=16)


def resolve_salt(salt: str | None = None, salt_env: str | None = "ATTOK_SALT", salt_file: str | None = None) -> str:
    """The salt from the argument, else from the file ``salt_file`` (first line), else from the environment
    variable ``salt_env``.

    Raises:
        MissingSaltError: when none gives a salt of at least ``MIN_SALT_LENGTH`` characters (the value itself is
            never printed).
    """
    source = "argument"
    if not salt and salt_file:
        source = f"salt file {salt_file}"
        try:
            with open(salt_file, encoding="utf-8") as f:
                salt = f.readline().strip()
        except OSError as e:
            raise MissingSaltError(f"cannot read the salt file {salt_file}: {e.strerror}") from None
    if not salt and salt_env:
        source = f"environment variable {salt_env}"
        salt = os.environ.get(salt_env, "")
    if not salt:
        raise MissingSaltError(
            "refusing to run without a salt: pseudonymised keys need a secret salt. Set the environment variable "
            f"{salt_env or 'ATTOK_SALT'} (or pass salt= / --salt-file). Keep the same salt for re-runs."
        )
    if len(salt) < MIN_SALT_LENGTH:
        raise MissingSaltError(f"the salt from the {source} is shorter than {MIN_SALT_LENGTH} characters.")
    return salt
