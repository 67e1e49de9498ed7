// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice Test double of the wrBTC vault: a transferable 8-decimal ERC-20 minted by the linked rBTC token.
contract VaultWrBTC {
    event Transfer(address indexed from, address indexed to, uint256 amount);
    event Approval(address indexed owner, address indexed spender, uint256 amount);
    event Wrapped(address indexed user, uint256 amount);
    event Redeemed(address indexed user, uint256 amount);
    event Slashed(address indexed user, uint256 amount);

    error Restricted();
    error ZeroAddress();
    error ZeroValue();
    error InsufficientBalance();
    error InsufficientAllowance();

    string public constant name = "Wrapped Reserve BTC";
    string public constant symbol = "wrBTC";
    uint8 public constant decimals = 8;

    address public immutable rbtc;
    address public immutable oracle;
    uint256 public totalSupply;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    constructor(address rbtc_, address oracle_) {
        if (rbtc_ == address(0) || oracle_ == address(0)) revert ZeroAddress();
        rbtc = rbtc_;
        oracle = oracle_;
    }

    function onWrap(address user, uint256 amount) external {
        if (msg.sender != rbtc) revert Restricted();
        if (user == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroValue();
        balanceOf[user] += amount;
        totalSupply += amount;
        emit Transfer(address(0), user, amount);
        emit Wrapped(user, amount);
    }

    function redeem(uint256 amount) external {
        if (amount == 0) revert ZeroValue();
        _burn(msg.sender, amount);
        emit Redeemed(msg.sender, amount);
    }

    function slashFromOracle(address user, uint256 amount) external {
        if (msg.sender != oracle) revert Restricted();
        _burn(user, amount);
        emit Slashed(user, amount);
    }

    function approve(address spender, uint256 amount) external returns (bool) {
        allowance[msg.sender][spender] = amount;
        emit Approval(msg.sender, spender, amount);
        return true;
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        _transfer(msg.sender, to, amount);
        return true;
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        if (allowed != type(uint256).max) {
            if (allowed < amount) revert InsufficientAllowance();
            allowance[from][msg.sender] = allowed - amount;
        }
        _transfer(from, to, amount);
        return true;
    }

    function _transfer(address from, address to, uint256 amount) internal {
        if (to == address(0)) revert ZeroAddress();
        uint256 bal = balanceOf[from];
        if (bal < amount) revert InsufficientBalance();
        balanceOf[from] = bal - amount;
        balanceOf[to] += amount;
        emit Transfer(from, to, amount);
    }

    function _burn(address from, uint256 amount) internal {
        uint256 bal = balanceOf[from];
        if (bal < amount) revert InsufficientBalance();
        balanceOf[from] = bal - amount;
        totalSupply -= amount;
        emit Transfer(from, address(0), amount);
    }
}
