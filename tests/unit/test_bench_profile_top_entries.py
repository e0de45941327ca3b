"""bench/profile_edge.py's reading of py-spy's raw output: own and cumulative shares per function."""

from __future__ import annotations

from pathlib import Path

from bench.profile_edge import top_entries


def test_own_and_cumulative_shares_of_collapsed_stacks(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(
        "<module> (trunkline:8);run (runners.py:118);parse (/x/sip/message.py:40) 60\n"
        "<module> (trunkline:8);run (runners.py:118);send (/x/sip/transport.py:226) 30\n"
        "<module> (trunkline:8);run (runners.py:118) 10\n"
        "not a sample line\n"
    )
    own, cumulative = top_entries(raw, top=5)
    assert own == [("parse (message.py)", 60.0), ("send (transport.py)", 30.0), ("run (runners.py)", 10.0)]
    # The frames under every sample (entry point, event loop) are left out of the cumulative list.
    assert cumulative == [("parse (message.py)", 60.0), ("send (transport.py)", 30.0)]
