"""Compile the Solidity test doubles with solcjs 0.8.24 and write build/<Name>.json artifacts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SOLC_DIR = REPO / ".tools" / "node_modules" / "solc"
BUILD_DIR = HERE / "build"
CONTRACTS = (
    "FeePolicy",
    "FeeVault",
    "Multicall3",
    "Noise",
    "OracleAggregator",
    "RBTCSynth",
    "VaultWrBTC",
    "YieldScalesPool",
)

NODE_SCRIPT = """
const solc = require(process.argv[1]);
let input = '';
process.stdin.on('data', (c) => { input += c; });
process.stdin.on('end', () => { process.stdout.write(solc.compile(input)); });
"""


def standard_input() -> dict:
    """Build the solc standard-JSON input for every contract."""
    sources = {f"{name}.sol": {"content": (HERE / f"{name}.sol").read_text()} for name in CONTRACTS}
    return {
        "language": "Solidity",
        "sources": sources,
        "settings": {
            "optimizer": {"enabled": True, "runs": 200},
            "evmVersion": "paris",
            "metadata": {"bytecodeHash": "none"},
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}},
        },
    }


def compile_all() -> dict:
    """Run solcjs through node and return the standard-JSON output."""
    if not (SOLC_DIR / "index.js").exists():
        raise SystemExit(f"solc not found at {SOLC_DIR}; run `make tools` first")
    proc = subprocess.run(
        ["node", "-e", NODE_SCRIPT, str(SOLC_DIR)],
        input=json.dumps(standard_input()),
        capture_output=True,
        text=True,
        check=True,
    )
    output = json.loads(proc.stdout)
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    for err in output.get("errors", []):
        print(err.get("formattedMessage", err.get("message")), file=sys.stderr)
    if errors:
        raise SystemExit("compilation failed")
    return output


def main() -> None:
    """Compile and write one artifact per contract."""
    output = compile_all()
    BUILD_DIR.mkdir(exist_ok=True)
    for name in CONTRACTS:
        contract = output["contracts"][f"{name}.sol"][name]
        artifact = {"abi": contract["abi"], "bytecode": "0x" + contract["evm"]["bytecode"]["object"]}
        (BUILD_DIR / f"{name}.json").write_text(json.dumps(artifact, indent=1) + "\n")
        print(f"wrote {BUILD_DIR / f'{name}.json'}")


if __name__ == "__main__":
    main()
