"""SIPp processes for tests: a UAS standing in for a carrier or PBX, a UAC for a PBX or carrier."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCENARIOS = Path(__file__).resolve().parents[1] / "integration" / "sipp"


@dataclass
class SippResult:
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _sipp() -> str:
    binary = shutil.which("sipp")
    assert binary, "sipp (Debian sip-tester) is not installed; scripts/test.sh installs it"
    return binary


def uas(workdir: Path, ip: str, port: int, *extra: str, scenario: str = "uas") -> subprocess.Popen[str]:
    """A SIPp UAS (built-in `uas` or a scenario file in tests/integration/sipp) on ip:port."""
    workdir.mkdir(parents=True, exist_ok=True)
    which = ["-sn", scenario] if scenario == "uas" else ["-sf", str(SCENARIOS / scenario)]
    return subprocess.Popen(
        [_sipp(), *which, "-i", ip, "-p", str(port), "-nostdin", "-trace_err", *extra],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def uac(
    workdir: Path, target: str, ip: str, callee: str, *extra: str, calls: int = 1,
    scenario: str = "pbx_call.xml", caller: str = "+14155550100", hold_ms: int = 200, timeout: float = 60,
) -> SippResult:  # fmt: skip
    """Run a SIPp UAC from `ip` to `target` until `calls` calls are done; returns its exit code (0 = all
    calls succeeded) and its output with the error trace."""
    workdir.mkdir(parents=True, exist_ok=True)
    args = [
        _sipp(), "-sf", str(SCENARIOS / scenario), target, "-i", ip, "-p", "0", "-s", callee,
        "-key", "caller", caller, "-d", str(hold_ms), "-m", str(calls), "-nostdin",
        "-timeout", str(int(timeout)), "-timeout_error", "-trace_err", "-trace_stat", *extra,
    ]  # fmt: skip
    proc = subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=timeout + 15)
    errors = "".join(p.read_text(errors="replace")[-3000:] for p in workdir.glob("*_errors.log"))
    return SippResult(proc.returncode, proc.stdout[-3000:] + proc.stderr[-2000:] + errors)


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
    out = proc.stdout.read() if proc.stdout else ""
    return out[-3000:]
