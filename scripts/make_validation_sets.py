"""Write the validation prompts of checkpoint selection for the harmful examples (docs/results.md,
issue 16): the validation split of `builtin:judge_train`, which neither the forget set, the
evaluation sets nor any job's judge reads.

- `examples/data/harmful_validation.jsonl`: its 17 harmful requests (11 categories, several
  wordings: role-play, hypotheticals, a friend asking); selection's harmful rate is measured on
  them instead of on forget prompts the model trains on.
- `examples/data/benign_validation.jsonl`: 32 of its everyday requests that only sound sensitive
  (a seeded draw of the distinct prompts); selection's over-refusal is measured on them.

    python scripts/make_validation_sets.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "core" / "data" / "builtin" / "judge_train.jsonl"
BENIGN = 32


def main() -> None:
    rows = [json.loads(line) for line in SOURCE.read_text(encoding="utf-8").splitlines() if line]
    held = [r for r in rows if r["split"] == "validation"]
    harmful = list(dict.fromkeys(r["prompt"] for r in held if r["kind"] == "compliant"))
    benign = list(dict.fromkeys(r["prompt"] for r in held if r["kind"] == "benign"))
    random.Random(0).shuffle(benign)
    out = ROOT / "examples" / "data"
    for name, prompts in (("harmful_validation", harmful), ("benign_validation", benign[:BENIGN])):
        lines = [json.dumps({"prompt": p, "source": "judge_train:validation"}) for p in prompts]
        (out / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(out / f"{name}.jsonl", len(prompts))


if __name__ == "__main__":
    main()
