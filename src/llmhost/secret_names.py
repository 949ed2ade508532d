"""What counts as a secret, in one place.

Every path that writes or shows a value the operator gave (the plan's
experts.json, reports, the legacy importer's output, vLLM arguments) asks this
module. A secret-looking env name keeps its value only in the expert's env file
(mode 0640 to the service group); a secret-looking engine setting is refused,
since vLLM would put it in argv (and so in `ps`, the unit file and the journal).
"""

from __future__ import annotations

import re
from typing import Any

# A name holds a secret when, split at '_', '-' or '.' and matched case-insensitively,
# - its LAST word is one of FINAL_WORDS (HF_TOKEN, API_KEY, DB_PASS, BASIC_AUTH; not
#   max_num_batched_tokens or long_prefill_token_threshold, whose token is a count), or
# - any word is one of ANY_WORDS (DB_PASSWORD_FILE, CLIENT_SECRET_ID), or
# - it contains one of FRAGMENTS (names written without separators: HFTOKEN, DBPASSWORD).
FINAL_WORDS = ("token", "key", "keys", "pass", "pwd", "auth", "authorization", "cookie", "bearer", "signature",
               "apikey", "passphrase", "secret", "password", "passwd", "credential", "credentials")
ANY_WORDS = ("secret", "secrets", "password", "passwd", "passphrase", "credential", "credentials", "apikey",
             "privatekey")
FRAGMENTS = ("secret", "passw", "passphrase", "credential", "apikey", "privatekey", "hftoken", "accesstoken",
             "authtoken")
_WORD_SPLIT = re.compile(r"[_\-.]+")
REDACTED = "<redacted: in the expert's env file, mode 0640>"


def is_secret_name(name: Any) -> bool:
    """True for a setting or variable name that looks like it holds a secret."""
    if not isinstance(name, str) or not name:
        return False
    low = name.lower()
    words = [w for w in _WORD_SPLIT.split(low) if w]
    if not words:
        return False
    return words[-1] in FINAL_WORDS or any(w in ANY_WORDS for w in words) or any(f in low for f in FRAGMENTS)
