"""The SIP core runs as mypyc's C extensions wherever the install could build them (setup.py), so the
suite tests the form an edge runs. Extensions are optional at build time: without this test, a build
machine without a compiler or Python headers would pass the suite on the pure-Python fallback."""

from __future__ import annotations

import os

import pytest

from trunkline.sip import message, transaction
from trunkline.sip.compiled import COMPILED, compiled_modules


@pytest.mark.skipif(os.environ.get("TRUNKLINE_PURE") == "1", reason="installed without the extensions")
def test_every_listed_sip_module_is_loaded_compiled() -> None:
    assert compiled_modules() == list(COMPILED)
    assert message.__file__ is not None and not message.__file__.endswith(".py")


def test_the_transaction_tables_cover_every_transaction_kind() -> None:
    # The step table is built from Transaction's subclasses at import: a new kind is in it, with each
    # of its table's steps resolved to a method.
    kinds = transaction.Transaction.__subclasses__()
    assert {k.__name__ for k in kinds} >= {"InviteClient", "NonInviteClient", "InviteServer",
                                            "NonInviteServer", "AnswerRetransmission", "TuTimer"}  # fmt: skip
    for kind in kinds:
        steps = transaction._STEPS[kind]
        assert steps.keys() == kind.TABLE.keys()
        for (_, names), (_, functions) in zip(kind.TABLE.values(), steps.values(), strict=True):
            assert [f.__name__ for f in functions] == ["_" + n for n in names]
