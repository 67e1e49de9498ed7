"""`rbtc-indexer verify` end to end: a real anvil chain driven by the scenario, the indexer's tables, the CLI.

Two scenarios: every kind of activity, and the activity whose effects the logs show (without the pool's
`updateRBTCContribution` and `resolveDispute`, which change participant state without an event of their own).
"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import psycopg
import pytest
from web3 import Web3

from indexer.config import load_config
from indexer.errors import ExitCode
from indexer.runtime.app import Indexer
from indexer.store.status import read_status
from indexer.verify.chain_state import BlockNotCanonical
from indexer.verify.verifier import BlockChoice, Verifier
from projections.engine import registry
from tests.support.anvil import start_anvil
from tests.support.compare import wait_for_model
from tests.support.daemon import cli, write_config
from tests.support.multicall import install_multicall3
from tests.support.scenario import Deployment, ScenarioDriver

SILENT_POOL_ACTIONS = ("update_contribution", "resolve")
SUPPLY = "sum(balances.rbtc_balance)=RBTCSynth.totalSupply"
VAULT_ETH = "sum(balances.fee_vault_wei)=FeeVault.ethBalance"
BURN_COUNT = "count(emergency_burns)=OracleAggregator.totalEmergencyBurns"
TABLE_INVARIANT = "invariant:balances.last_sats=balances.rbtc_balance"


def _start(extra_args: tuple[str, ...] = (), multicall: bool = True):
    node = start_anvil(extra_args)
    w3 = Web3(Web3.HTTPProvider(node.url))
    deployment = Deployment.deploy(w3)
    if multicall:
        install_multicall3(node.url)
    return node, w3, deployment


@pytest.fixture
def chain():
    node, w3, deployment = _start()
    try:
        yield node, w3, deployment
    finally:
        node.stop()


def _driver(w3, deployment, seed: int, users: int, *, every_kind: bool) -> ScenarioDriver:
    driver = ScenarioDriver(w3, deployment, seed=seed, users=users)
    if not every_kind:
        kept = [(k, w) for k, w in zip(driver.kinds, driver.weights, strict=True) if k not in SILENT_POOL_ACTIONS]
        driver.kinds, driver.weights = [k for k, _ in kept], [w for _, w in kept]
    return driver


def _verify(config: Path, *args: str):
    result = cli(config, "verify", "--json", *args)
    document = json.loads(result.stdout) if result.stdout.strip() else None
    return result, document


def _exact(value):
    """JSON carries amounts above 2**53 as decimal strings."""
    return int(value) if isinstance(value, str) and value.lstrip("-").isdigit() else value


def _found(document) -> set[tuple]:
    return {(d["subject"], d["column"], _exact(d["table"]), _exact(d["chain"])) for d in document["differences"]}


def _query(database_url: str, schema: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        cur = conn.execute(sql, params)
        rows = cur.fetchall() if cur.description is not None else []
        conn.commit()
    return rows


def _users_named_by_logs(w3: Web3, deployment: Deployment) -> set[str]:
    """Every address a protocol log names in a topic (the scenario's users and accounts), from the node."""
    logs = w3.eth.get_logs(
        {
            "fromBlock": deployment.start_block,
            "toBlock": w3.eth.block_number,
            "address": [Web3.to_checksum_address(a) for a in deployment.addresses.values()],
        }
    )
    named = {"0x" + bytes(t)[-20:].hex() for lg in logs for t in lg["topics"][1:] if bytes(t)[:12] == bytes(12)}
    return named - {"0x" + "0" * 40} - set(deployment.addresses.values())


@pytest.mark.parametrize("every_kind", [True, False], ids=["every-activity", "activity-the-logs-show"])
def test_verify_after_backfill_reports_no_difference(database_url, schema, chain, tmp_path, every_kind):
    node, w3, deployment = chain
    driver = _driver(w3, deployment, seed=11, users=8, every_kind=every_kind)
    driver.run(160)
    head = w3.eth.block_number
    config = write_config(tmp_path / "c.toml", database_url, schema, node.url, deployment)
    assert cli(config, "run", "--to-block", str(head)).returncode == 0
    result, document = _verify(config)
    assert document is not None, result.stderr
    assert document["differences"] == [], document["differences"]
    assert result.returncode == ExitCode.OK and document["equal"] is True
    assert document["block"] == {
        "number": head,
        "hash": w3.eth.get_block(head)["hash"].to_0x_hex(),
        "chosen": "the block the tables reflect",
    }
    assert document["method"] == "multicall"
    assert document["users_checked"] >= len(_users_named_by_logs(w3, deployment))
    assert {"balances.last_sats", "yield_scales_participants.last_activity_at", BURN_COUNT} <= set(
        document["columns_checked"]
    )
    run = _query(
        database_url, schema, "SELECT outcome, block_number, block_hash, differences, users_checked FROM verify_runs"
    )
    assert run == [("equal", head, document["block"]["hash"], 0, document["users_checked"])]
    status = read_status(database_url, schema)
    assert status["verify"]["indexed_block"] == head and status["verify"]["last_error"] is None
    text = cli(config, "verify")
    assert text.returncode == 0 and "tables equal the chain" in text.stdout, text.stdout + text.stderr
    assert f"verify: last run equal at block {head} (0 differences" in cli(config, "status").stdout
    at_head = cli(config, "verify", "--block", str(head))
    assert at_head.returncode == 0 and f"--block {head}" in at_head.stdout, at_head.stderr
    past = cli(config, "verify", "--block", str(head - 1))
    assert past.returncode == ExitCode.ERROR and f"the tables are at block {head}, past --block {head - 1}" in (
        past.stderr
    )
    bad = cli(config, "verify", "--block", "soon")
    assert bad.returncode == ExitCode.USAGE and "--block 'soon'" in bad.stderr


@pytest.mark.parametrize("every_kind", [True, False], ids=["every-activity", "activity-the-logs-show"])
def test_verify_while_following_live_through_reorgs_reports_no_difference(
    database_url, schema, chain, tmp_path, every_kind
):
    node, w3, deployment = chain
    driver = _driver(w3, deployment, seed=21, users=6, every_kind=every_kind)
    config_path = write_config(tmp_path / "c.toml", database_url, schema, node.url, deployment)
    config = load_config(config_path)
    stop = threading.Event()
    indexer = Indexer(config, stop=stop)
    worker = threading.Thread(target=indexer.run, daemon=True)
    worker.start()
    try:
        driver.run(30)
        w3.provider.make_request("anvil_reorg", [3, []])
        driver.model.recheck_canonical(w3)
        driver.run(20)
        snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
        driver.run(10)
        w3.provider.make_request("evm_revert", [snapshot])
        driver.model.recheck_canonical(w3)
        driver.run(15)
        w3.provider.make_request("evm_mine", [])
        driver.model.recheck_canonical(w3)
        wait_for_model(database_url, schema, driver.model.expected_tables())
        result, document = _verify(config_path)  # the daemon is still running and polling
        assert document is not None, result.stderr
        assert document["differences"] == [], document["differences"]
        assert result.returncode == ExitCode.OK
        assert document["block"]["hash"] == w3.eth.get_block(document["block"]["number"])["hash"].to_0x_hex()
    finally:
        stop.set()
        worker.join(timeout=20)


def test_corrupted_deleted_and_stray_rows_are_named_exactly(database_url, schema, chain, tmp_path):
    node, w3, deployment = chain
    driver = _driver(w3, deployment, seed=7, users=10, every_kind=False)
    driver.run(200)
    head = w3.eth.block_number
    config = write_config(tmp_path / "c.toml", database_url, schema, node.url, deployment)
    assert cli(config, "run", "--to-block", str(head)).returncode == 0
    result, clean = _verify(config)
    assert clean["differences"] == [] and result.returncode == 0, clean["differences"]

    q = lambda sql, *p: _query(database_url, schema, sql, p)  # noqa: E731
    holders = q(
        "SELECT user_address, last_sats, rbtc_balance, fee_vault_wei FROM balances "
        "WHERE rbtc_balance > 0 AND fee_vault_wei > 0 ORDER BY user_address"
    )
    assert len(holders) >= 3, "the scenario must leave three users with rBTC and prepaid fees"
    (a, a_sats, a_rbtc, _), (b, _, _, b_fee), (c, _, _, _) = holders[:3]
    traders = q("SELECT user_address, virtual_usdt FROM yield_scales_participants ORDER BY user_address")
    assert len(traders) >= 2, "the scenario must leave two pool participants"
    (p, p_usdt), (gone_participant, _) = traders[:2]
    burns = q("SELECT tx_hash, log_index, burned_amount, user_address FROM emergency_burns ORDER BY tx_hash, log_index")
    assert len(burns) >= 2, "the scenario must leave two emergency burns"
    (burn_tx, burn_ix, burn_amount, burn_user), (gone_tx, gone_ix, _, gone_user) = burns[:2]
    stray_user, stray_participant = "0x" + "ab" * 20, "0x" + "cd" * 20

    q("UPDATE balances SET rbtc_balance = rbtc_balance + 7 WHERE user_address = %s", a)
    q("UPDATE balances SET fee_vault_wei = fee_vault_wei + 1 WHERE user_address = %s", b)
    q("DELETE FROM balances WHERE user_address = %s", c)
    q("INSERT INTO balances (user_address, updated_block) VALUES (%s, 1)", stray_user)
    q("UPDATE yield_scales_participants SET virtual_usdt = virtual_usdt + 3 WHERE user_address = %s", p)
    q("DELETE FROM yield_scales_participants WHERE user_address = %s", gone_participant)
    q(
        "INSERT INTO yield_scales_participants (user_address, participant_type, joined_at, last_activity_at, "
        "updated_block) VALUES (%s, 0, now(), now(), 1)",
        stray_participant,
    )
    q(
        "UPDATE emergency_burns SET burned_amount = burned_amount + 1 WHERE tx_hash = %s AND log_index = %s",
        burn_tx,
        burn_ix,
    )
    q("DELETE FROM emergency_burns WHERE tx_hash = %s AND log_index = %s", gone_tx, gone_ix)
    stray_burn = ("0x" + "ef" * 32, 0)
    q(
        'INSERT INTO emergency_burns (tx_hash, log_index, block_number, "timestamp", user_address, burned_amount, '
        "reason) VALUES (%s, %s, 1, now(), %s, 5, 'Insufficient fees')",
        *stray_burn,
        a,
    )

    rbtc_sum, fee_sum = q("SELECT sum(rbtc_balance), sum(fee_vault_wei) FROM balances")[0]
    synth = deployment.contracts["rbtc_synth"]
    supply = synth.functions.totalSupply().call(block_identifier=head)
    vault_eth = w3.eth.get_balance(Web3.to_checksum_address(deployment.addresses["fee_vault"]), head)
    expected = {
        (a, "balances.rbtc_balance", int(a_rbtc) + 7, int(a_rbtc)),
        (a, TABLE_INVARIANT, int(a_sats), int(a_rbtc) + 7),
        (b, "balances.fee_vault_wei", int(b_fee) + 1, int(b_fee)),
        (c, "balances.(row)", "absent", "present"),
        (stray_user, "balances.(row)", "present", "absent"),
        (p, "yield_scales_participants.virtual_usdt", int(p_usdt) + 3, int(p_usdt)),
        (gone_participant, "yield_scales_participants.(row)", "absent", "present"),
        (stray_participant, "yield_scales_participants.(row)", "present", "absent"),
        (f"{burn_tx}:{burn_ix}", "emergency_burns.burned_amount", int(burn_amount) + 1, int(burn_amount)),
        (f"{gone_tx}:{gone_ix}", "emergency_burns.(row)", "absent", "present"),
        (f"{stray_burn[0]}:0", "emergency_burns.(row)", "present", "absent"),
        ("global", SUPPLY, int(rbtc_sum), supply),
        ("global", VAULT_ETH, int(fee_sum), vault_eth),
    }
    assert int(rbtc_sum) != supply and int(fee_sum) != vault_eth
    # one burn row deleted and one added: the count still matches, so no count difference is expected
    result, document = _verify(config)
    assert result.returncode == ExitCode.DIFFERENCES, result.stderr
    assert _found(document) == expected
    assert document["differences_total"] == len(expected)
    assert sum(document["differences_by_column"].values()) == len(expected)

    short = cli(config, "verify", "--max-diffs", "2")
    assert short.returncode == ExitCode.DIFFERENCES
    lines = short.stdout.splitlines()
    header = lines.index("subject column table-value chain-value")
    assert len(lines[header + 1 : -1]) == 2 and lines[-1] == f"... {len(expected) - 2} more (raise --max-diffs)"
    assert all(len(line.split()) == 4 for line in lines[header + 1 : -1])
    assert f"{len(expected)} difference(s)" in lines[0]

    only_a = cli(config, "verify", "--json", "--users", a.upper().replace("0X", "0x"))
    mine = json.loads(only_a.stdout)
    assert mine["users_checked"] == 1
    burn_owner = {f"{burn_tx}:{burn_ix}": burn_user, f"{gone_tx}:{gone_ix}": gone_user, f"{stray_burn[0]}:0": a}
    assert _found(mine) == {d for d in expected if d[0] in (a, "global") or burn_owner.get(d[0]) == a}
    runs = q("SELECT outcome, differences FROM verify_runs ORDER BY id")
    assert runs == [
        ("equal", 0),
        ("differences", len(expected)),
        ("differences", len(expected)),
        ("differences", len(_found(mine))),
    ]
    status = read_status(database_url, schema)
    assert status["verify"]["last_error"].startswith(f"{len(_found(mine))} difference(s) at block {head}: ")
    assert status["verify"]["last_run"]["outcome"] == "differences"


def test_a_reorg_between_choosing_the_block_and_reading_state_is_detected_not_reported(
    database_url, schema, chain, tmp_path
):
    node, w3, deployment = chain
    driver = _driver(w3, deployment, seed=4, users=6, every_kind=False)
    driver.run(40)
    driver.run_bulk(1, batch_size=6)  # the last block syncs every user: its state differs from its parent's
    head = w3.eth.block_number
    config = load_config(write_config(tmp_path / "c.toml", database_url, schema, node.url, deployment))
    assert Indexer(config).run(to_block=head) == ExitCode.OK
    synth = deployment.contracts["rbtc_synth"]
    supply_before = synth.functions.totalSupply().call(block_identifier=head)
    pinned: list = []

    def reorg(block) -> None:
        pinned.append(block)
        w3.provider.make_request("anvil_reorg", [1, []])  # the same height now holds an empty block

    indexer = Indexer(config)
    verifier = Verifier(config, indexer.rpc, registry.NAMES, after_pin=reorg)
    with pytest.raises(BlockNotCanonical, match=f"block {head} .* is no longer canonical"):
        verifier.run(BlockChoice())
    assert pinned[0].number == head and w3.eth.get_block(head)["hash"].to_0x_hex() != pinned[0].hash
    # reading by number instead of by hash would have compared another state
    assert synth.functions.totalSupply().call(block_identifier=head) != supply_before
    runs = _query(database_url, schema, "SELECT outcome, differences, error FROM verify_runs")
    assert len(runs) == 1 and runs[0][:2] == ("error", 0) and "no longer canonical" in runs[0][2]
    assert "no longer canonical" in read_status(database_url, schema)["verify"]["last_error"]


def test_unreachable_rpc_is_one_clear_error(database_url, schema, chain, tmp_path):
    node, w3, deployment = chain
    driver = _driver(w3, deployment, seed=2, users=4, every_kind=False)
    driver.run(20)
    good = write_config(tmp_path / "good.toml", database_url, schema, node.url, deployment)
    assert cli(good, "run", "--to-block", str(w3.eth.block_number)).returncode == 0
    dead = write_config(tmp_path / "dead.toml", database_url, schema, "http://user:pw@127.0.0.1:9/apikey", deployment)
    result = cli(dead, "verify")
    assert result.returncode == ExitCode.ERROR
    err = [line for line in result.stderr.splitlines() if line.startswith("rbtc-indexer: error:")]
    assert len(err) == 1 and "cannot reach the chain" in err[0] and "connection failed" in err[0], result.stderr
    assert "Traceback" not in result.stderr and "apikey" not in result.stderr and "pw@" not in result.stderr
    assert result.stdout == ""


def test_a_node_without_state_at_the_block_says_so_and_latest_consistent_verifies(database_url, schema, tmp_path):
    node, w3, deployment = _start(("--prune-history",))
    try:
        driver = _driver(w3, deployment, seed=9, users=4, every_kind=False)
        driver.run(20)
        config = write_config(tmp_path / "c.toml", database_url, schema, node.url, deployment)
        assert cli(config, "run", "--to-block", str(w3.eth.block_number)).returncode == 0
        w3.provider.make_request("anvil_mine", [300])
        result = cli(config, "verify")
        assert result.returncode == ExitCode.ERROR, result.stdout
        assert "has no state at block" in result.stderr and "--block latest-consistent" in result.stderr
        assert "Traceback" not in result.stderr
        head = w3.eth.block_number
        runs: list[subprocess.CompletedProcess[str]] = []
        daemon = threading.Thread(target=lambda: runs.append(cli(config, "run", "--to-block", str(head))), daemon=True)
        daemon.start()
        result, document = _verify(config, "--block", "latest-consistent")
        daemon.join(timeout=60)
        run_said = runs[0].stderr[-3000:] if runs else "(the run had not ended)"
        assert result.returncode == ExitCode.OK, f"{result.stderr}\nthe run beside it: {run_said}"
        assert document["block"]["number"] >= head and document["block"]["chosen"] == "latest consistent"
    finally:
        node.stop()


def test_a_user_list_too_large_for_one_call_is_split_and_batches_replace_a_missing_multicall(
    database_url, schema, tmp_path
):
    node, w3, deployment = _start(("--gas-limit", "8000000"))
    try:
        driver = _driver(w3, deployment, seed=5, users=400, every_kind=False)
        driver.run_bulk(1600, batch_size=40)
        head = w3.eth.block_number
        config_path = write_config(tmp_path / "c.toml", database_url, schema, node.url, deployment)
        config = load_config(config_path)
        assert Indexer(config).run(to_block=head) == ExitCode.OK
        indexer = Indexer(config)
        verifier = Verifier(config, indexer.rpc, registry.NAMES, users_per_request=400)
        result = verifier.run(BlockChoice())
        assert result.differences == [] and result.users_checked >= 400
        assert result.method == "multicall"
        assert verifier.reader.chunk.value < 400  # 2,400 getter calls do not fit under the 8M gas cap
        assert result.chain_requests > 2 + 400 // verifier.reader.chunk.maximum
        missing = config.model_copy(
            update={"chain": config.chain.model_copy(update={"multicall_address": "0x" + "11" * 20})}
        )
        fallback = Verifier(missing, indexer.rpc, registry.NAMES, users_per_request=100)
        result = fallback.run(BlockChoice())
        assert result.method == "batch" and result.differences == [] and result.users_checked >= 400
    finally:
        node.stop()


def test_run_verifies_every_interval_and_reports_in_status_and_metrics(database_url, schema, chain, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    from indexer.config import HttpConfig, IndexerConfig
    from indexer.ops.service import Service

    node, w3, deployment = chain
    driver = _driver(w3, deployment, seed=13, users=6, every_kind=False)
    driver.run(30)
    base = load_config(write_config(tmp_path / "c.toml", database_url, schema, node.url, deployment))
    config = base.model_copy(
        update={
            "indexer": IndexerConfig(verify_interval=5),
            "http": HttpConfig(listen="127.0.0.1:0", enabled=True),
        }
    )
    indexer = Indexer(config)
    service = Service(indexer, env={})
    worker = threading.Thread(target=lambda: service.run(None, None), daemon=True)
    worker.start()
    q = lambda sql: _query(database_url, schema, sql)  # noqa: E731
    try:
        wait = threading.Event()
        for _ in range(300):
            if service.http is not None and q("SELECT to_regclass('verify_runs') IS NOT NULL")[0][0]:
                if q("SELECT count(*) FROM verify_runs")[0][0] >= 1:
                    break
            wait.wait(0.1)
        first = q("SELECT block_number, outcome FROM verify_runs ORDER BY id")
        assert first and first[0] == (w3.eth.block_number, "equal"), first
        driver.run(12)  # more than verify_interval blocks
        for _ in range(300):
            if q("SELECT count(*) FROM verify_runs")[0][0] >= 2:
                break
            wait.wait(0.1)
        runs = q("SELECT block_number, outcome FROM verify_runs ORDER BY id")
        assert len(runs) >= 2 and all(outcome == "equal" for _, outcome in runs), runs
        assert runs[1][0] >= runs[0][0] + 5
        # a corrupted table is reported by the next run, in sync_status, /status and the metrics
        q(
            "UPDATE balances SET wrbtc_balance = wrbtc_balance + 1 WHERE user_address = "
            "(SELECT min(user_address) FROM balances)"
        )
        driver.run(12)
        for _ in range(300):
            if q("SELECT count(*) FROM verify_runs WHERE outcome = 'differences'")[0][0] >= 1:
                break
            wait.wait(0.1)
        assert service.http is not None
        body = _get(f"http://127.0.0.1:{service.http.port}/status")
        status = json.loads(body)["verify"]
        assert status["last_run"]["outcome"] == "differences" and status["last_run"]["differences"] == 1
        assert (
            status["last_error"].startswith("1 difference(s) at block ")
            and "balances.wrbtc_balance (1)" in (status["last_error"])
        )
        metrics = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(_get(f"http://127.0.0.1:{service.http.port}/metrics"))
            for s in family.samples
        }
        assert metrics[("rbtc_indexer_verify_differences", ())] == 1
        assert metrics[("rbtc_indexer_verify_runs_total", (("outcome", "differences"),))] >= 1
        assert metrics[("rbtc_indexer_verify_runs_total", (("outcome", "equal"),))] >= 2
        assert metrics[("rbtc_indexer_verify_block", ())] == status["indexed_block"]
    finally:
        indexer.stop.set()
        worker.join(timeout=30)


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()
