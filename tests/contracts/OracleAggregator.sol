// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

interface ISynth {
    function oracleMint(address to, uint256 amount) external;
    function oracleBurn(address from, uint256 amount) external;
}

interface IFeeVault {
    function balanceOf(address user) external view returns (uint256);
    function spendFrom(address user, uint256 amount) external;
    function depositETH(address user) external payable;
}

interface IFeePolicy {
    function quoteFees(address user, int64 deltaSats) external view returns (uint256);
}

/// @notice Test double of the emergency-burn OracleAggregator.
contract OracleAggregator {
    event Synced(
        address indexed user,
        uint64 newBalanceSats,
        int64 deltaSats,
        uint256 feeWei,
        uint32 height,
        uint64 timestamp
    );
    event NeedsTopUp(address indexed user);
    event EmergencyBurn(address indexed user, uint256 burnedAmount, string reason);

    error Restricted();
    error FeeCapExceeded();
    error ZeroAddress();
    error ZeroValue();
    error BalanceOutOfRange();
    error LengthMismatch();

    string private constant BURN_REASON = "Insufficient fees";

    ISynth public immutable synth;
    IFeeVault public immutable feeVault;
    IFeePolicy public immutable feePolicy;
    address public immutable committee;
    uint256 public immutable minConfirmations;
    uint256 public immutable maxFeePerSyncWei;

    mapping(address => uint64) public lastSats;
    mapping(address => bool) public emergencyBurnFlag;
    uint256 public totalEmergencyBurns;

    constructor(
        address synth_,
        address feeVault_,
        address feePolicy_,
        address committee_,
        uint256 minConfirmations_,
        uint256 maxFeePerSyncWei_
    ) {
        if (synth_ == address(0) || feeVault_ == address(0) || feePolicy_ == address(0) || committee_ == address(0))
            revert ZeroAddress();
        synth = ISynth(synth_);
        feeVault = IFeeVault(feeVault_);
        feePolicy = IFeePolicy(feePolicy_);
        committee = committee_;
        minConfirmations = minConfirmations_;
        maxFeePerSyncWei = maxFeePerSyncWei_;
    }

    modifier onlyCommittee() {
        if (msg.sender != committee) revert Restricted();
        _;
    }

    function sync(address user, uint64 newBalanceSats, bytes calldata) external onlyCommittee {
        _sync(user, newBalanceSats);
    }

    /// @notice Bulk sync: each pair behaves exactly like one sync call.
    function syncBatch(address[] calldata users, uint64[] calldata newBalances) external onlyCommittee {
        if (users.length != newBalances.length) revert LengthMismatch();
        for (uint256 i = 0; i < users.length; i++) {
            _sync(users[i], newBalances[i]);
        }
    }

    /// @notice Several committee calls in one transaction (an oracle behind a batcher): each call runs with
    ///         the committee as msg.sender; any failure reverts the whole transaction.
    function multicall(bytes[] calldata calls) external onlyCommittee {
        for (uint256 i = 0; i < calls.length; i++) {
            (bool ok, bytes memory reason) = address(this).delegatecall(calls[i]);
            if (!ok) {
                assembly {
                    revert(add(reason, 32), mload(reason))
                }
            }
        }
    }

    /// @notice Takes a fee from a user's prepaid balance without a sync (a FeeVault Spent with no Synced).
    function collectFee(address user, uint256 amount) external onlyCommittee {
        feeVault.spendFrom(user, amount);
    }

    function executeEmergencyBurn(address user) external onlyCommittee {
        if (lastSats[user] == 0) revert ZeroValue();
        _emergencyBurn(user);
    }

    function resetEmergencyBurnStatus(address user) external onlyCommittee {
        emergencyBurnFlag[user] = false;
    }

    /// @notice Prepays fees for a user; method and checksum are ignored.
    function registerAndPrepay(address user, uint8, bytes32) external payable onlyCommittee {
        if (msg.value == 0) revert ZeroValue();
        feeVault.depositETH{value: msg.value}(user);
    }

    function _sync(address user, uint64 newBalanceSats) internal {
        if (user == address(0)) revert ZeroAddress();
        if (newBalanceSats > uint64(type(int64).max)) revert BalanceOutOfRange();
        uint64 prev = lastSats[user];
        int64 delta = int64(newBalanceSats) - int64(prev);
        if (delta == 0) return;
        uint256 fee = feePolicy.quoteFees(user, delta);
        if (fee > maxFeePerSyncWei) revert FeeCapExceeded();
        if (feeVault.balanceOf(user) < fee) {
            if (delta > 0) {
                emit NeedsTopUp(user);
                revert("needs-topup");
            }
            _emergencyBurn(user);
            return;
        }
        lastSats[user] = newBalanceSats;
        if (delta > 0) {
            synth.oracleMint(user, uint256(uint64(delta)));
        } else {
            synth.oracleBurn(user, uint256(uint64(-delta)));
        }
        feeVault.spendFrom(user, fee);
        emit Synced(user, newBalanceSats, delta, fee, 0, uint64(block.timestamp));
    }

    function _emergencyBurn(address user) internal {
        uint64 prev = lastSats[user];
        lastSats[user] = 0;
        emergencyBurnFlag[user] = true;
        totalEmergencyBurns += 1;
        synth.oracleBurn(user, prev);
        emit EmergencyBurn(user, prev, BURN_REASON);
        emit Synced(user, 0, -int64(prev), 0, 0, uint64(block.timestamp));
    }
}
