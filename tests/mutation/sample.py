"""Keeps a seeded random sample of a cosmic-ray session's pending mutants.

Every pending mutant outside the sample is marked skipped, so ``cosmic-ray exec``
tests only the sample. The sample depends only on the module's source and the
seed (mutants are ordered by position and operator before drawing), so two runs
on the same source test the same mutants.

Usage: python tests/mutation/sample.py SESSION.sqlite SIZE [SEED]
"""

import random
import sys

from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import WorkerOutcome, WorkResult


def _key(item):
    m = item.mutations[0]
    return (str(m.module_path), tuple(m.start_pos), m.operator_name, m.occurrence)


def main(session: str, size: int, seed: int = 0) -> None:
    with use_db(session, WorkDB.Mode.open) as db:
        pending = sorted(db.pending_work_items, key=_key)
        keep = set(random.Random(seed).sample(range(len(pending)), min(size, len(pending))))
        drop = [item.job_id for i, item in enumerate(pending) if i not in keep]
        db.set_multiple_results(
            drop, WorkResult(output="Not sampled", worker_outcome=WorkerOutcome.SKIPPED)
        )
        print(f"{len(keep)} of {len(pending)} pending mutants sampled (seed {seed}).")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__)
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) == 4 else 0)
