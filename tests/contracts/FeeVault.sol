// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice Test double of the ReserveBTC FeeVault: per-user prepaid ETH spent by the oracle aggregator.
contract FeeVault {
    event Deposited(address indexed user, uint256 amount);
    event Spent(address indexed user, uint256 amount, address indexed by);
    event Withdrawn(address indexed user, uint256 amount);

    error Restricted();
    error ZeroAddress();
    error ZeroValue();
    error InsufficientBalance();
    error LengthMismatch();
    error ValueMismatch();
    error TransferFailed();

    address public immutable oracle;
    address public immutable feeCollector;
    mapping(address => uint256) public balanceOf;

    constructor(address oracle_, address feeCollector_) {
        if (oracle_ == address(0) || feeCollector_ == address(0)) revert ZeroAddress();
        oracle = oracle_;
        feeCollector = feeCollector_;
    }

    function depositETH(address user) external payable {
        _credit(user, msg.value);
    }

    /// @notice Bulk deposit: one Deposited per user; the amounts must add up to msg.value.
    function depositMany(address[] calldata users, uint256[] calldata amounts) external payable {
        if (users.length != amounts.length) revert LengthMismatch();
        uint256 total;
        for (uint256 i = 0; i < users.length; i++) {
            total += amounts[i];
            _credit(users[i], amounts[i]);
        }
        if (total != msg.value) revert ValueMismatch();
    }

    function spendFrom(address user, uint256 amount) external {
        if (msg.sender != oracle) revert Restricted();
        if (amount == 0) revert ZeroValue();
        uint256 bal = balanceOf[user];
        if (bal < amount) revert InsufficientBalance();
        balanceOf[user] = bal - amount;
        (bool ok, ) = feeCollector.call{value: amount}("");
        if (!ok) revert TransferFailed();
        emit Spent(user, amount, msg.sender);
    }

    /// @notice Withdraws the caller's entire balance.
    function withdrawUnused() external {
        uint256 amount = balanceOf[msg.sender];
        if (amount == 0) revert ZeroValue();
        balanceOf[msg.sender] = 0;
        (bool ok, ) = msg.sender.call{value: amount}("");
        if (!ok) revert TransferFailed();
        emit Withdrawn(msg.sender, amount);
    }

    receive() external payable {
        revert Restricted();
    }

    fallback() external payable {
        revert Restricted();
    }

    function _credit(address user, uint256 amount) internal {
        if (user == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroValue();
        balanceOf[user] += amount;
        emit Deposited(user, amount);
    }
}
