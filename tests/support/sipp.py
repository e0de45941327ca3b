"""SIPp processes for tests: a UAS standing in for a carrier or PBX, a UAC for a PBX or carrier."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SCENARIOS = Path(__file__).resolve().parent / "scenarios"  # shared with bench/


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
    """A SIPp UAS (built-in `uas` or a scenario file in tests/support/scenarios) on ip:port."""
    workdir.mkdir(parents=True, exist_ok=True)
    which = ["-sn", scenario] if scenario == "uas" else ["-sf", str(SCENARIOS / scenario)]  # absolute wins
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


def uac_process(
    workdir: Path,
    target: str,
    ip: str,
    callee: str,
    *extra: str,
    calls: int = 1,
    hold_ms: int = 200,
    caller: str = "+14155550100",
) -> subprocess.Popen[str]:
    """A SIPp UAC placing `calls` pbx_call.xml calls as a process of its own: end it with `stop`."""
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [_sipp(), "-sf", str(SCENARIOS / "pbx_call.xml"), target, "-i", ip, "-p", "0", "-s", callee,
         "-key", "caller", caller, "-d", str(hold_ms), "-m", str(calls), "-nostdin", *extra],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def quit_gracefully(host: str, control_port: int) -> None:
    """Tell a SIPp started with `-cp control_port` to place no new calls and exit once its calls end
    (its `q` key, over its UDP remote control)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"q", (host, control_port))


def call_counts(output: str) -> tuple[int, int]:
    """(successful, failed) calls in total, from a SIPp UAC's last statistics screen."""
    found = {
        kind: re.findall(rf"{kind} call\s*\|\s*\d+\s*\|\s*(\d+)", output) for kind in ("Successful", "Failed")
    }
    assert found["Successful"] and found["Failed"], f"not a SIPp statistics screen:\n{output[-2000:]}"
    return int(found["Successful"][-1]), int(found["Failed"][-1])


class Background:
    """A SIPp run (`uac`, `uac_expect`) in a thread, for a call held while the test does something else."""

    def __init__(self, run: Callable[[], SippResult]) -> None:
        self._results: list[SippResult] = []
        self._thread = threading.Thread(target=lambda: self._results.append(run()), daemon=True)
        self._thread.start()

    def result(self, timeout: float = 60) -> SippResult:
        self._thread.join(timeout)
        assert self._results, f"the SIPp run did not finish within {timeout} s"
        return self._results[0]


def stop(proc: subprocess.Popen[str], *, finish_within: float = 0) -> str:
    """Output of a SIPp process; one still running after `finish_within` seconds is terminated (a UAS
    started with `-m N` ends by itself once its calls are done: waiting lets the last BYE arrive)."""
    if finish_within:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=finish_within)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
    out = proc.stdout.read() if proc.stdout else ""
    return out[-3000:]


_UAC_EXPECT = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="expect {status}">
  <send retrans="500"><![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:[caller]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:pbx@[local_ip]:[local_port]>
      Max-Forwards: {max_forwards}
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=pbx 1 1 IN IP4 [local_ip]
      s=-
      c=IN IP4 [local_ip]
      t=0 0
      m=audio [auto_media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="{status}"/>
  <send><![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:[caller]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
</scenario>
"""

_UAS_STATUS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="answer {status}">
  <recv request="INVITE"/>
  <send><![CDATA[
      SIP/2.0 {status} {reason}
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
  ]]></send>
  <recv request="ACK"/>
</scenario>
"""


def write_scenario(workdir: Path, name: str, text: str) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / name
    path.write_text(text)
    return path


def uac_expect(
    workdir: Path, target: str, ip: str, callee: str, status: int, *extra: str, caller: str = "+14155550100",
    max_forwards: int = 70, calls: int = 1,
) -> SippResult:  # fmt: skip
    """A SIPp UAC whose calls succeed only when the edge answers the INVITE with `status`."""
    scenario = write_scenario(workdir, f"expect_{status}.xml",
                              _UAC_EXPECT.format(status=status, max_forwards=max_forwards))  # fmt: skip
    return uac(workdir, target, ip, callee, *extra, calls=calls, scenario=str(scenario), caller=caller)


def uas_status(
    workdir: Path, ip: str, port: int, status: int, reason: str, *extra: str
) -> subprocess.Popen[str]:
    """A SIPp UAS answering every INVITE with `status` (a gateway that is busy or broken)."""
    scenario = write_scenario(
        workdir, f"answer_{status}.xml", _UAS_STATUS.format(status=status, reason=reason)
    )
    return uas(workdir, ip, port, *extra, scenario=str(scenario))


def received(output: str, method: str) -> int:
    """How many `method` requests a SIPp UAS saw, from its last statistics screen."""
    counts = re.findall(rf"-+>\s*{method}\s+(\d+)", output)  # a UAS screen: "----> INVITE  3"
    assert counts or "Messages" in output, "not a SIPp statistics screen"
    return int(counts[-1]) if counts else 0
