"""The protos: generated code is fresh, packages are versioned, every message and field is documented."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTOS = sorted((ROOT / "protos").rglob("*.proto"))


def test_generated_code_is_fresh():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr


def test_generated_modules_import_under_trunkline():
    from trunkline.control.v1 import control_pb2, control_pb2_grpc
    from trunkline.media.v1 import media_pb2, media_pb2_grpc

    assert media_pb2.DESCRIPTOR.package == "trunkline.media.v1"
    assert control_pb2.DESCRIPTOR.package == "trunkline.control.v1"
    assert media_pb2_grpc.MediaRelayStub and control_pb2_grpc.ControlStub


@pytest.mark.parametrize("proto", PROTOS, ids=lambda p: p.name)
def test_every_declaration_has_a_comment(proto: Path):
    lines = proto.read_text().splitlines()
    declaration = re.compile(
        r"^\s*(message|enum|service|rpc|oneof)\s|^\s*(repeated\s+)?[\w.]+\s+\w+\s*=\s*\d+;"
    )
    undocumented = [
        f"{proto.name}:{number}: {line.strip()}"
        for number, line in enumerate(lines, start=1)
        if declaration.match(line) and not lines[number - 2].strip().startswith("//")
    ]
    assert not undocumented, "\n".join(undocumented)


def test_timeouts_are_durations():
    text = "\n".join(p.read_text() for p in PROTOS)
    for field in re.findall(r"^\s*(\S+)\s+\w*(?:timeout|interval)\w*\s*=", text, re.M):
        assert field == "google.protobuf.Duration"
