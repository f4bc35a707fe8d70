"""Fuzz the safe loader beyond the test's 300 files: N seeded mutations of a valid checkpoint (bytes replaced in
data.pkl or a storage, entries shuffled, the file's bytes flipped or cut), each loaded in turn. Every file must load
or be refused with one message, within 60 s, and none may run code (the valid file names a marker it must never
create). Writes reports/loading/fuzz.json with the outcome counts and the slowest load.

    python scripts/fuzz_loading.py --count 1000
"""

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from tests.test_hostile import MUTATIONS, _load_within, _valid_checkpoint


def fuzz(count: int, seed: int) -> dict:
    total = sum(n for _, n in MUTATIONS.values())
    outcomes: dict[str, dict[str, int]] = {}
    slowest = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        marker = root / "ran"
        valid = _valid_checkpoint(root / "valid.pt", marker)
        rng = random.Random(seed)
        for what, (mutate, share) in MUTATIONS.items():
            for i in range(round(count * share / total)):
                path = mutate(valid, root / f"{what}-{i}.pt", rng, what)
                start = time.perf_counter()
                outcome = "refused" if _load_within(path, 60) else "loaded"
                slowest = max(slowest, time.perf_counter() - start)
                outcomes.setdefault(what, {}).setdefault(outcome, 0)
                outcomes[what][outcome] += 1
                path.unlink()
        ran = marker.exists()
    return {"files": sum(sum(o.values()) for o in outcomes.values()), "seed": seed, "outcomes": outcomes,
            "code_ran": ran, "slowest_load_s": round(slowest, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("reports/loading/fuzz.json"))
    args = parser.parse_args()
    result = fuzz(args.count, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
