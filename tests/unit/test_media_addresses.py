"""The media address policy: where a call's audio may be sent."""

from __future__ import annotations

import pytest

from trunkline.core.addresses import MediaAddressPolicy, is_loopback

STRICT = MediaAddressPolicy.build(deny_cidrs=["10.0.0.0/8", "fd00:10::/64"])


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("::ffff:169.254.169.254", "link-local"),  # the same address, IPv4-mapped
        ("fe80::1", "link-local"),
        ("224.0.0.251", "multicast"),
        ("239.1.2.3", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("10.96.0.10", "denied network 10.0.0.0/8"),
        ("fd00:10::5", "denied network fd00:10::/64"),
        ("pbx.example.com", "not an IP address"),
        ("", "not an IP address"),
        ("1.2.3.4 ", "not an IP address"),
    ],
)
def test_refused_addresses_say_why(address: str, why: str) -> None:
    refusal = STRICT.refusal(address)
    assert refusal is not None and why in refusal
    assert not STRICT.allows(address)


@pytest.mark.parametrize("address", ["203.0.113.5", "192.168.1.20", "172.16.0.9", "2001:db8::5", "11.0.0.1"])
def test_ordinary_addresses_pass(address: str) -> None:
    assert STRICT.refusal(address) is None


def test_loopback_only_when_allowed() -> None:
    allowed = MediaAddressPolicy(allow_loopback=True)
    assert allowed.allows("127.0.0.1") and allowed.allows("::1")
    assert not allowed.allows("169.254.1.1") and not allowed.allows("0.0.0.0")


def test_a_huge_host_name_is_cut_in_the_message() -> None:
    refusal = STRICT.refusal("a" * 10_000)
    assert refusal is not None and len(refusal) < 200


@pytest.mark.parametrize("cidr", ["10.0.0.1/8", "not-a-cidr", "10.0.0.0/33"])
def test_bad_deny_cidrs_are_refused_by_name(cidr: str) -> None:
    with pytest.raises(ValueError, match="media deny CIDR"):
        MediaAddressPolicy.build(deny_cidrs=[cidr])


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("localhost") and not is_loopback("10.0.0.1")
