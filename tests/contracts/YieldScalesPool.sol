// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

interface IRBTCToken {
    function balanceOf(address user) external view returns (uint256);
    function totalSupply() external view returns (uint256);
}

/// @notice Test double of the Yield Scales pool with the upstream arithmetic.
contract YieldScalesPool {
    event ParticipantJoined(address indexed user, uint8 participantType, uint256 amount);
    event ParticipantLeft(address indexed user, uint8 participantType, uint256 amount);
    event YieldCalculated(uint256 totalUSDTVirtual, uint256 totalRBTCSupply, uint256 currentYieldRate);
    event YieldClaimed(address indexed user, uint256 amount);
    event ScalesBalanceUpdated(uint256 usdtScale, uint256 rbtcScale, uint256 timestamp);
    event EmergencyBurnTriggered(address indexed user, uint256 burnedAmount, string reason);
    event BalanceDisputed(address indexed user, uint256 reportedBalance, uint256 oracleBalance);

    error Restricted();
    error ZeroAddress();
    error ZeroValue();
    error AlreadyParticipant();
    error NotParticipant();
    error WrongParticipantType();
    error NoRBTCBalance();
    error NothingToClaim();
    error DisputeAlreadyFiled();

    struct Participant {
        uint8 participantType;
        uint256 virtualUSDTDeposited;
        uint256 rbtcContributed;
        uint256 yieldEarned;
        uint256 yieldClaimed;
        uint256 joinedAt;
        uint256 lastActivityAt;
        uint8 loyaltyTier;
        bool exists;
    }

    string private constant BURN_REASON = "Insufficient fees or balance went to zero";
    uint256 private constant SECONDS_PER_YEAR = 31_536_000;
    uint256 private constant SILVER_AFTER = 15_552_000;

    IRBTCToken public immutable rbtcSynth;
    address public immutable feeVault;
    address public immutable oracle;

    mapping(address => Participant) public participants;
    mapping(address => bool) public isDisputed;
    uint256 public totalParticipants;
    uint256 public totalVirtualUSDT;
    uint256 public totalYieldDistributed;
    uint256 public peakRBTCSupply = 1;
    uint256 public usdtScale = 100;
    uint256 public rbtcScale;
    uint256 public currentYieldRate;

    constructor(address rbtcSynth_, address feeVault_, address oracle_) {
        if (rbtcSynth_ == address(0) || oracle_ == address(0)) revert ZeroAddress();
        rbtcSynth = IRBTCToken(rbtcSynth_);
        feeVault = feeVault_;
        oracle = oracle_;
    }

    modifier onlyOracle() {
        if (msg.sender != oracle) revert Restricted();
        _;
    }

    function joinAsBitcoinHolder(address user) external onlyOracle {
        Participant storage p = participants[user];
        if (p.exists) revert AlreadyParticipant();
        uint256 bal = rbtcSynth.balanceOf(user);
        if (bal == 0) revert NoRBTCBalance();
        p.participantType = 0;
        p.rbtcContributed = bal;
        p.joinedAt = block.timestamp;
        p.lastActivityAt = block.timestamp;
        p.loyaltyTier = 0;
        p.exists = true;
        totalParticipants += 1;
        _updateScales();
        emit ParticipantJoined(user, 0, bal);
    }

    function joinAsTrader(address user, uint256 usdtAmount) external onlyOracle {
        if (usdtAmount == 0) revert ZeroValue();
        Participant storage p = participants[user];
        if (p.exists) {
            if (p.participantType != 1) revert WrongParticipantType();
            p.virtualUSDTDeposited += usdtAmount;
            p.lastActivityAt = block.timestamp;
        } else {
            p.participantType = 1;
            p.virtualUSDTDeposited = usdtAmount;
            p.joinedAt = block.timestamp;
            p.lastActivityAt = block.timestamp;
            p.exists = true;
            totalParticipants += 1;
        }
        totalVirtualUSDT += usdtAmount;
        _updateScales();
        emit ParticipantJoined(user, 1, usdtAmount);
    }

    function updateRBTCContribution(address user, uint256 newContribution) external onlyOracle {
        Participant storage p = participants[user];
        if (!p.exists) revert NotParticipant();
        if (p.participantType != 0) revert WrongParticipantType();
        uint256 old = p.rbtcContributed;
        p.rbtcContributed = newContribution;
        p.lastActivityAt = block.timestamp;
        p.loyaltyTier = _tier(p.joinedAt);
        if (newContribution == 0 && old > 0) {
            emit EmergencyBurnTriggered(user, old, BURN_REASON);
        }
        _updateScales();
    }

    /// @notice Ends a membership (upstream declares ParticipantLeft; this test pool emits it). The lifetime
    ///         yieldClaimed and the dispute flag are kept; a later join starts a new membership.
    function leave(address user) external onlyOracle {
        Participant storage p = participants[user];
        if (!p.exists) revert NotParticipant();
        uint8 kind = p.participantType;
        uint256 amount = kind == 1 ? p.virtualUSDTDeposited : p.rbtcContributed;
        p.virtualUSDTDeposited = 0;
        p.rbtcContributed = 0;
        p.loyaltyTier = 0;
        p.exists = false;
        totalParticipants -= 1;
        emit ParticipantLeft(user, kind, amount);
    }

    function claimYield() external {
        Participant storage p = participants[msg.sender];
        if (!p.exists) revert NotParticipant();
        uint256 owed = _owed(p);
        if (owed == 0) revert NothingToClaim();
        p.yieldClaimed += owed;
        p.lastActivityAt = block.timestamp;
        totalYieldDistributed += owed;
        emit YieldClaimed(msg.sender, owed);
    }

    function disputeBalance(uint256 reportedBalance, uint256 oracleBalance) external {
        if (!participants[msg.sender].exists) revert NotParticipant();
        if (isDisputed[msg.sender]) revert DisputeAlreadyFiled();
        isDisputed[msg.sender] = true;
        emit BalanceDisputed(msg.sender, reportedBalance, oracleBalance);
    }

    function resolveDispute(address user, bool) external onlyOracle {
        isDisputed[user] = false;
    }

    /// @notice Zeroes a holder's (or unknown address's) contribution and logs the burn.
    function emergencyBurn(address user, uint256 amount) external onlyOracle {
        Participant storage p = participants[user];
        if (p.participantType == 0) {
            p.rbtcContributed = 0;
        }
        if (p.exists) {
            p.lastActivityAt = block.timestamp;
            if (p.participantType == 0) p.loyaltyTier = _tier(p.joinedAt);
        }
        emit EmergencyBurnTriggered(user, amount, BURN_REASON);
    }

    function pendingYield(address user) external view returns (uint256) {
        Participant storage p = participants[user];
        if (!p.exists) return 0;
        return _owed(p);
    }

    function getSystemStats()
        external
        view
        returns (uint256, uint256, uint256, uint256, uint256, uint256)
    {
        return (totalParticipants, totalVirtualUSDT, totalYieldDistributed, usdtScale, rbtcScale, currentYieldRate);
    }

    function _updateScales() internal {
        uint256 supply = rbtcSynth.totalSupply();
        if (supply > peakRBTCSupply) peakRBTCSupply = supply;
        rbtcScale = (supply * 100) / peakRBTCSupply;
        usdtScale = 100;
        uint256 rate = (usdtScale * rbtcScale * 500) / 1_000_000;
        if (rate > 2000) rate = 2000;
        currentYieldRate = rate;
        emit ScalesBalanceUpdated(usdtScale, rbtcScale, block.timestamp);
        emit YieldCalculated(totalVirtualUSDT, supply, rate);
    }

    function _tier(uint256 joinedAt) internal view returns (uint8) {
        uint256 elapsed = block.timestamp - joinedAt;
        if (elapsed >= SECONDS_PER_YEAR) return 2;
        if (elapsed >= SILVER_AFTER) return 1;
        return 0;
    }

    function _owed(Participant storage p) internal view returns (uint256) {
        uint256 base = p.participantType == 1 ? p.virtualUSDTDeposited : p.rbtcContributed;
        uint256 mult = p.loyaltyTier == 2 ? 150 : (p.loyaltyTier == 1 ? 125 : 110);
        uint256 gross = (base * currentYieldRate * (block.timestamp - p.lastActivityAt) * mult) /
            (10_000 * SECONDS_PER_YEAR * 100);
        return gross > p.yieldClaimed ? gross - p.yieldClaimed : 0;
    }
}
