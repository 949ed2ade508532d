"""docs/architecture.md's glossary is the vocabulary of the code and the runbooks."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs/architecture.md"
# Words for the same things that the glossary replaced: none may come back.
RETIRED = ("health gate", "smoke gate", "live probe", "preflight probe")


def tracked_text() -> dict[str, str]:
    files = subprocess.run(["git", "ls-files", "roles", "src", "docs", "playbooks", "site.yml", "molecule", "README.md",
                            "scripts", "collections"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    out = {}
    for f in files:
        p = ROOT / f
        if p.suffix in (".py", ".yml", ".yaml", ".j2", ".md", ".lua", "") and p.is_file() and f != "docs/architecture.md":
            try:
                out[f] = p.read_text().lower()
            except UnicodeDecodeError:
                continue
    return out


def glossary_terms() -> list[str]:
    section = DOC.read_text().split("## Glossary", 1)[1].split("\n## ", 1)[0]
    return [t.rstrip(".").lower() for t in re.findall(r"\*\*([^*]+?)\*\*", section)]


def test_every_glossary_term_is_used_outside_the_glossary():
    text = tracked_text()
    terms = glossary_terms()
    assert len(terms) >= 15
    unused = [t for t in terms if not any(t in body for body in text.values())]
    assert unused == [], f"glossary terms nobody uses: {unused}"


def test_no_retired_word_for_a_glossary_term_is_back():
    found = [(f, w) for f, body in tracked_text().items() for w in RETIRED if w in body]
    assert found == [], found
