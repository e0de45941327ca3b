"""The soak of `bench/soak.py` (the same run, through its command line), short enough for CI: two
edges behind one address, calls at 1/s for 2 minutes, an edge SIGKILLed (and a new one started)
every 30 s, Redis SIGSTOPped for 10 s every 60 s. At the end PostgreSQL holds exactly one CDR per call
SIPp placed, and no relay session or channel is left (bench/README-soak.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import soak


@pytest.mark.timeout(600)  # about 150 s; the suite's 300 s default leaves too little on a loaded machine
def test_a_short_soak_leaves_one_cdr_per_call_and_nothing_behind(tmp_path: Path) -> None:
    figures = soak.run(["--minutes", "2", "--rate", "1", "--kill-every", "30", "--stall-every", "60",
                        "--workdir", str(tmp_path)])  # fmt: skip
    report = figures.report()
    assert figures.kills >= 2 and figures.stalls >= 1, report  # the failures did happen
    assert figures.placed == 120, report
    assert figures.succeeded >= figures.placed // 2, report  # it carried calls, not only refusals
    assert figures.rows == figures.placed and figures.duplicates == 0, report
    assert figures.sessions == 0 and figures.channels == 0, report
    assert figures.ok, report
