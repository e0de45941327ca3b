"""The address an edge dials for a relay that control picked."""

from __future__ import annotations

import pytest

from trunkline.control.client import dialable


@pytest.mark.parametrize(
    ("grpc_address", "media_address", "expected"),
    [
        ("10.1.2.3:7100", "10.1.2.3", "10.1.2.3:7100"),  # a real address: as registered
        ("0.0.0.0:7100", "10.1.2.3", "10.1.2.3:7100"),  # listening everywhere: the pod's media address
        ("[::]:7100", "fd00::5", "[fd00::5]:7100"),
        ("0.0.0.0:7100", "", "0.0.0.0:7100"),  # nothing better known
        ("relay-0.relays:7100", "10.1.2.3", "relay-0.relays:7100"),  # a host name
    ],
)
def test_a_relay_listening_everywhere_is_dialled_at_its_media_address(
    grpc_address: str, media_address: str, expected: str
) -> None:
    assert dialable(grpc_address, media_address) == expected
