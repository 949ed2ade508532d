"""llmhost: the plain, typed logic that the Ansible roles of this toolkit call.

Everything here is importable and pure where it can be: Ansible plugins and the
`llmhost` command are thin wrappers around these functions.
"""

from pathlib import Path

__version__ = "0.1.0"
# The checkout llmhost runs from (an editable install): site.yml, playbooks/,
# roles/ and the site's own templates/ are there.
CHECKOUT = Path(__file__).resolve().parents[2]
