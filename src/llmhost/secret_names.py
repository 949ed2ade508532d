"""What counts as a secret, in one place.

Every path that writes or shows a value the operator gave (the plan's
experts.json, reports, the legacy importer's output, vLLM arguments) asks this
module. A secret-looking env name keeps its value only in the expert's env file
(mode 0640 to the service group); a secret-looking engine setting is refused,
since vLLM would put it in argv (and so in `ps`, the unit file and the journal).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

# Name fragments that mark a value as a secret, matched case-insensitively on the
# whole name split at '_' or '-' (KEY matches API_KEY and KEY, not KEYBOARD).
# Whole words: TOKEN, SECRET, PASSWORD, PASSWD, PASS, PASSPHRASE, PWD, CREDENTIAL(S),
# KEY, APIKEY, AUTH, AUTHORIZATION, COOKIE, SESSION, PRIVATE, CERT_KEY.
SECRET_WORDS = (
    "token", "tokens", "secret", "secrets", "password", "passwd", "pass", "passphrase", "pwd",
    "credential", "credentials", "key", "keys", "apikey", "auth", "authorization", "cookie", "session",
    "private", "bearer", "signature",
)
# Fragments matched anywhere (names written without separators: HFTOKEN, DBPASSWORD).
SECRET_FRAGMENTS = ("token", "secret", "passw", "passphrase", "credential", "apikey", "api_key", "privatekey")
_WORD_SPLIT = re.compile(r"[_\-.]+")
REDACTED = "<redacted: in the expert's env file, mode 0640>"
REDACTED_VALUE = "<redacted>"


def is_secret_name(name: Any) -> bool:
    """True for a setting or variable name that looks like it holds a secret."""
    if not isinstance(name, str) or not name:
        return False
    low = name.lower()
    if any(f in low for f in SECRET_FRAGMENTS):
        return True
    return any(w in SECRET_WORDS for w in _WORD_SPLIT.split(low) if w)


def redact_mapping(values: Mapping[str, Any], marker: str = REDACTED_VALUE) -> dict[str, Any]:
    """A copy with every secret-looking key's value replaced by `marker`, nested mappings too."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        if is_secret_name(k):
            out[k] = marker
        elif isinstance(v, Mapping):
            out[k] = redact_mapping(v, marker)
        else:
            out[k] = v
    return out
