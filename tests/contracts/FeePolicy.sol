// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice Test double of the ReserveBTC fee policy: percentage of the minted value plus a fixed fee.
contract FeePolicy {
    uint256 public immutable pctBps;
    uint256 public immutable fixedWei;
    uint256 public immutable weiPerSat;

    constructor(uint256 pctBps_, uint256 fixedWei_, uint256 weiPerSat_) {
        pctBps = pctBps_;
        fixedWei = fixedWei_;
        weiPerSat = weiPerSat_;
    }

    /// @notice Fee for a sync: floor(delta * weiPerSat * pctBps / 10000) + fixedWei on a mint, fixedWei otherwise.
    function quoteFees(address, int64 deltaSats) external view returns (uint256) {
        if (deltaSats > 0) {
            return (uint256(uint64(deltaSats)) * weiPerSat * pctBps) / 10_000 + fixedWei;
        }
        return fixedWei;
    }
}
