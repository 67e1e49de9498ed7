// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice Test double of rBTC-SYNTH: soulbound, 8 decimals, minted and burned only by the oracle aggregator.
contract RBTCSynth {
    event Transfer(address indexed from, address indexed to, uint256 amount);
    event Approval(address indexed owner, address indexed spender, uint256 amount);

    error Restricted();
    error Soulbound();
    error ZeroAddress();
    error InsufficientBalance();

    string public constant name = "rBTC-SYNTH";
    string public constant symbol = "rBTC-SYNTH";
    uint8 public constant decimals = 8;

    address public immutable oracle;
    uint256 public totalSupply;
    mapping(address => uint256) public balanceOf;

    constructor(address oracle_) {
        if (oracle_ == address(0)) revert ZeroAddress();
        oracle = oracle_;
    }

    modifier onlyOracle() {
        if (msg.sender != oracle) revert Restricted();
        _;
    }

    function oracleMint(address to, uint256 amount) external onlyOracle {
        if (amount == 0) return;
        balanceOf[to] += amount;
        totalSupply += amount;
        emit Transfer(address(0), to, amount);
    }

    function oracleBurn(address from, uint256 amount) external onlyOracle {
        if (amount == 0) return;
        uint256 bal = balanceOf[from];
        if (bal < amount) revert InsufficientBalance();
        balanceOf[from] = bal - amount;
        totalSupply -= amount;
        emit Transfer(from, address(0), amount);
    }

    function allowance(address, address) external pure returns (uint256) {
        return 0;
    }

    function approve(address, uint256) external pure returns (bool) {
        revert Soulbound();
    }

    function transfer(address, uint256) external pure returns (bool) {
        revert Soulbound();
    }

    function transferFrom(address, address, uint256) external pure returns (bool) {
        revert Soulbound();
    }
}
