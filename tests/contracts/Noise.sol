// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice An unwatched contract that fills blocks with other logs: many random topics (a saturated logs
///         bloom), chosen topics (to set the bloom bits of a watched address that never emits), and the
///         protocol's own topic0s from another address.
contract Noise {
    function emitMany(uint256 count, uint256 seed) external {
        for (uint256 i = 0; i < count; i++) {
            bytes32 a = keccak256(abi.encode(seed, i, 1));
            bytes32 b = keccak256(abi.encode(seed, i, 2));
            bytes32 c = keccak256(abi.encode(seed, i, 3));
            assembly {
                log3(0, 0, a, b, c)
            }
        }
    }

    function emitTopics(bytes32[] calldata topics) external {
        for (uint256 i = 0; i < topics.length; i++) {
            bytes32 t = topics[i];
            assembly {
                log1(0, 0, t)
            }
        }
    }
}
