"""The protocol ABIs carry every event of the domain reference with the reference's topic0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_utils import keccak

ABI_DIR = Path(__file__).resolve().parents[2] / "abi"

# contract -> event name -> (canonical signature, indexed parameter names, topic0), from reference section 3.
EXPECTED: dict[str, dict[str, tuple[str, tuple[str, ...], str]]] = {
    "OracleAggregator": {
        "Synced": (
            "Synced(address,uint64,int64,uint256,uint32,uint64)",
            ("user",),
            "0xbd74477ace0e09075451becb82bdae1c9a11698b13f8488ab67f55722444eb84",
        ),
        "NeedsTopUp": (
            "NeedsTopUp(address)",
            ("user",),
            "0xe6ec7c6e4cdb93aa15384ef91722c1a7360d09bc1a0ac8632ead03c59fde962d",
        ),
        "EmergencyBurn": (
            "EmergencyBurn(address,uint256,string)",
            ("user",),
            "0x3b2cf963d043e36af901999981442fddfef7d47161e769ac70190990c3bf92e9",
        ),
    },
    "FeeVault": {
        "Deposited": (
            "Deposited(address,uint256)",
            ("user",),
            "0x2da466a7b24304f47e87fa2e1e5a81b9831ce54fec19055ce277ca2f39ba42c4",
        ),
        "Spent": (
            "Spent(address,uint256,address)",
            ("user", "by"),
            "0x5a41af68171a76546ae6bd5ae4bc21a429cf8704319e9a5bff7829f9cb959dd5",
        ),
        "Withdrawn": (
            "Withdrawn(address,uint256)",
            ("user",),
            "0x7084f5476618d8e60b11ef0d7d3f06914655adb8793e28ff7f018d4c76d505d5",
        ),
    },
    "RBTCSynth": {
        "Transfer": (
            "Transfer(address,address,uint256)",
            ("from", "to"),
            "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef",
        ),
        "Approval": (
            "Approval(address,address,uint256)",
            ("owner", "spender"),
            "0x8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925",
        ),
    },
    "VaultWrBTC": {
        "Transfer": (
            "Transfer(address,address,uint256)",
            ("from", "to"),
            "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef",
        ),
        "Approval": (
            "Approval(address,address,uint256)",
            ("owner", "spender"),
            "0x8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925",
        ),
        "Wrapped": (
            "Wrapped(address,uint256)",
            ("user",),
            "0x4700c1726b4198077cd40320a32c45265a1910521eb0ef713dd1d8412413d7fc",
        ),
        "Redeemed": (
            "Redeemed(address,uint256)",
            ("user",),
            "0x4896181ff8f4543cc00db9fe9b6fb7e6f032b7eb772c72ab1ec1b4d2e03b9369",
        ),
        "Slashed": (
            "Slashed(address,uint256)",
            ("user",),
            "0x4ed05e9673c26d2ed44f7ef6a7f2942df0ee3b5e1e17db4b99f9dcd261a339cd",
        ),
    },
    "YieldScalesPool": {
        "ParticipantJoined": (
            "ParticipantJoined(address,uint8,uint256)",
            ("user",),
            "0x33b2c977e77cce98c6276ca9eee6409ba0b2c48b67f80c28d040534c68890351",
        ),
        "ParticipantLeft": (
            "ParticipantLeft(address,uint8,uint256)",
            ("user",),
            "0xfe48eb4f8a3e582a5902259fe782cfbc6c1551718a91242a9f4ebe7f3ce44e15",
        ),
        "YieldCalculated": (
            "YieldCalculated(uint256,uint256,uint256)",
            (),
            "0x699e6d40fdfd2a9b389b4829c32556c6ffbb29a37b8c0b628b77012e2d2d2c45",
        ),
        "YieldClaimed": (
            "YieldClaimed(address,uint256)",
            ("user",),
            "0xc04825ba3f383b602255d2a13065a68e325c65c9e0ed5d031ea2b06f641873af",
        ),
        "ScalesBalanceUpdated": (
            "ScalesBalanceUpdated(uint256,uint256,uint256)",
            (),
            "0xda46b0f43454f2c631182441d767449a47dea3b6e769b678276d76ea467d0867",
        ),
        "EmergencyBurnTriggered": (
            "EmergencyBurnTriggered(address,uint256,string)",
            ("user",),
            "0x8b4a06466c5421ca8d789655bfccbd94e927c7fa44a7e7c43d35bf538aee3ccb",
        ),
        "BalanceDisputed": (
            "BalanceDisputed(address,uint256,uint256)",
            ("user",),
            "0x74e7d494a2826ced25ede146b79abd19ab3b6d31d046f21239090ef39d3b6865",
        ),
    },
}

# Function selectors the reference records (sections 3.1, 3.6, 4.7).
EXPECTED_SELECTORS: dict[str, dict[str, str]] = {
    "OracleAggregator": {
        "sync(address,uint64,bytes)": "0x1bdd9010",
        "executeEmergencyBurn(address)": "0x561b1c7a",
        "lastSats(address)": "0x6be25fe1",
        "registerAndPrepay(address,uint8,bytes32)": "0x460d2e10",
        "resetEmergencyBurnStatus(address)": "0x5374d1d1",
    },
    "YieldScalesPool": {
        "updateRBTCContribution(address,uint256)": "0x8251c97f",
        "participants(address)": "0x09e69ede",
        "isDisputed(address)": "0x8ae8a4d2",
        "getSystemStats()": "0xd1ce59a7",
        "resolveDispute(address,bool)": "0x3738de3f",
        "emergencyBurn(address,uint256)": "0xc151f0f1",
    },
}

REQUIRED_FUNCTIONS: dict[str, set[str]] = {
    "OracleAggregator": {
        "sync",
        "lastSats",
        "executeEmergencyBurn",
        "registerAndPrepay",
        "resetEmergencyBurnStatus",
    },
    "FeeVault": {"depositETH", "spendFrom", "withdrawUnused", "balanceOf"},
    "RBTCSynth": {"balanceOf", "totalSupply", "decimals", "oracleMint", "oracleBurn"},
    "VaultWrBTC": {"balanceOf", "totalSupply", "transfer", "approve", "onWrap", "redeem", "slashFromOracle"},
    "YieldScalesPool": {
        "joinAsBitcoinHolder",
        "joinAsTrader",
        "updateRBTCContribution",
        "claimYield",
        "disputeBalance",
        "resolveDispute",
        "emergencyBurn",
        "participants",
    },
}


def load_abi(contract: str) -> list[dict]:
    """Read one ABI file and check it is a plain list."""
    abi = json.loads((ABI_DIR / f"{contract}.json").read_text())
    assert isinstance(abi, list)
    return abi


def canonical(entry: dict) -> str:
    """Canonical signature of an event or function ABI entry."""
    return f"{entry['name']}({','.join(_type(i) for i in entry['inputs'])})"


def _type(param: dict) -> str:
    if param["type"].startswith("tuple"):
        inner = ",".join(_type(c) for c in param["components"])
        return f"({inner}){param['type'][5:]}"
    return param["type"]


def events_of(contract: str) -> dict[str, dict]:
    """Events of an ABI keyed by name."""
    return {e["name"]: e for e in load_abi(contract) if e["type"] == "event"}


@pytest.mark.parametrize("contract", sorted(EXPECTED))
def test_every_reference_event_present(contract: str) -> None:
    assert set(events_of(contract)) == set(EXPECTED[contract])


@pytest.mark.parametrize(
    ("contract", "event"), [(c, e) for c, events in sorted(EXPECTED.items()) for e in sorted(events)]
)
def test_event_signature_and_topic0(contract: str, event: str) -> None:
    signature, indexed, topic0 = EXPECTED[contract][event]
    entry = events_of(contract)[event]
    assert canonical(entry) == signature
    assert "0x" + keccak(text=signature).hex() == topic0
    assert "0x" + keccak(text=canonical(entry)).hex() == topic0
    assert tuple(i["name"] for i in entry["inputs"] if i["indexed"]) == indexed
    assert entry["anonymous"] is False
    assert all(i["name"] for i in entry["inputs"])


def test_spent_third_parameter_is_by() -> None:
    inputs = events_of("FeeVault")["Spent"]["inputs"]
    assert [i["name"] for i in inputs] == ["user", "amount", "by"]


@pytest.mark.parametrize("contract", sorted(EXPECTED_SELECTORS))
def test_function_selectors(contract: str) -> None:
    functions = {canonical(f): f for f in load_abi(contract) if f["type"] == "function"}
    for signature, selector in EXPECTED_SELECTORS[contract].items():
        assert signature in functions
        assert "0x" + keccak(text=signature)[:4].hex() == selector


@pytest.mark.parametrize("contract", sorted(REQUIRED_FUNCTIONS))
def test_main_functions_present(contract: str) -> None:
    names = {f["name"] for f in load_abi(contract) if f["type"] == "function"}
    assert REQUIRED_FUNCTIONS[contract] <= names
