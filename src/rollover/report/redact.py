"""PURE: keep secrets out of everything rollover prints.

Applied at the output boundary (text lines, JSON events, error messages), so no layer below has to
remember it. Two kinds of secret are masked as ``***``:
- the password of any URL's user-info (``http://ci:hunter2@host/`` -> ``http://ci:***@host/``);
- the values of environment variables whose names say they are secret (TOKEN, PASSWORD, SECRET,
  KEY, AUTH, CREDENTIAL, ...), wherever they appear: a registry password handed to a hook, an API
  token in a probe URL's query, a value echoed back in an engine error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

_SECRET_NAME = re.compile(r"TOKEN|PASSW|SECRET|KEY|AUTH|CREDENTIAL|PRIVATE|SESSION|COOKIE", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@")
# Values this short are too likely to be ordinary words ("1", "yes") to mask everywhere.
_MIN_SECRET_LENGTH = 4
MASK = "***"


def secret_values(environ: Mapping[str, str]) -> frozenset[str]:
    """The values of variables named like secrets, e.g. REGISTRY_PASSWORD=hunter2 -> {'hunter2'}."""
    return frozenset(
        value for name, value in environ.items() if _SECRET_NAME.search(name) and len(value) >= _MIN_SECRET_LENGTH
    )


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted(set(secrets), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        if "://" in text:  # the pattern's own start, found far faster than the pattern (every line passes here)
            text = _URL_PASSWORD.sub(lambda match: f"{match['scheme']}{match['user']}:{MASK}@", text)
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def value(self, value: object) -> object:
        """Redact every string inside a JSON-able value (dicts, lists, strings)."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {key: self.value(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(item) for item in value]
        return value
