// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice The part of Multicall3 (0xcA11bde05977b3631167028862bE2a173976CA11) that `verify` uses:
/// `aggregate3` runs each call in order and returns every (success, returnData); a failing call reverts the
/// whole batch only when its `allowFailure` is false.
contract Multicall3 {
    struct Call3 {
        address target;
        bool allowFailure;
        bytes callData;
    }

    struct Result {
        bool success;
        bytes returnData;
    }

    function aggregate3(Call3[] calldata calls) public payable returns (Result[] memory returnData) {
        uint256 length = calls.length;
        returnData = new Result[](length);
        for (uint256 i = 0; i < length; i++) {
            Call3 calldata call = calls[i];
            Result memory result = returnData[i];
            (result.success, result.returnData) = call.target.call(call.callData);
            if (!call.allowFailure && !result.success) revert("Multicall3: call failed");
        }
    }

    function getEthBalance(address addr) public view returns (uint256 balance) {
        balance = addr.balance;
    }

    function getBlockNumber() public view returns (uint256 blockNumber) {
        blockNumber = block.number;
    }
}
