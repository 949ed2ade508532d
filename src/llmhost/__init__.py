"""llmhost: the plain, typed logic that the Ansible roles of this toolkit call.

Everything here is importable and pure where it can be: Ansible plugins and the
`llmhost` command are thin wrappers around these functions.
"""

__version__ = "0.1.0"
