"""The `rbtc-indexer` command line: run, replay, rebuild, status, verify, migrate."""

from __future__ import annotations

import faulthandler
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import NoReturn, TypeVar

import click
import orjson
import structlog

from indexer.config import load_config
from indexer.errors import ConfigError, ExitCode, IndexerError, exit_code_of
from indexer.ops import logging_setup as logs
from indexer.ops.gc_tuning import tune_for_throughput
from indexer.ops.malloc_tuning import release_large_blocks_promptly
from indexer.runtime import app as app_module
from indexer.runtime.plan import RunPlan
from indexer.runtime.projection_process import LOCK_HANDOVER_WAIT, bind_to_parent, started_by_a_run
from indexer.store import db, replay_queue
from indexer.store.locks import follower_lock
from indexer.store.status import format_status, read_status
from projections.engine import registry
from projections.engine.rebuild import rebuild

log = structlog.get_logger("cli")
T = TypeVar("T")
CONFIG_ENV = "RBTC_INDEXER_CONFIG"


def _fail(message: str, code: int = ExitCode.ERROR) -> NoReturn:
    """One clear line on stderr, then exit with the chosen code."""
    click.echo(f"rbtc-indexer: error: {message}", err=True)
    raise click.exceptions.Exit(code)


def _indexer(ctx: click.Context, stop: threading.Event | None = None) -> app_module.Indexer:
    path = ctx.obj["config_path"]
    if not path:
        _fail(f"no configuration file: pass --config PATH or set {CONFIG_ENV}", ExitCode.USAGE)
    try:
        config = load_config(path)
    except ConfigError as exc:
        _fail(f"bad configuration: {exc}", exit_code_of(exc))
    logs.configure(ctx.obj["log_format"] or config.log.format, config.log.level)
    indexer = app_module.Indexer(config, stop=stop)
    indexer.log_format = ctx.obj["log_format"]
    return indexer


def _guard(action: Callable[[], T]) -> T:
    """Turn expected operational failures into one line and an exit code."""
    try:
        return action()
    except IndexerError as exc:
        _fail(str(exc), exit_code_of(exc))
    except db.TRANSIENT_ERRORS as exc:  # an outage mid-command: one line; the command can simply be run again
        _fail(f"database unavailable: {db.first_line(exc)}", ExitCode.ERROR)


@click.group()
@click.option(
    "--config",
    "config_path",
    envvar=CONFIG_ENV,
    type=click.Path(dir_okay=False),
    help=f"TOML configuration file (or ${CONFIG_ENV}).",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    default=None,
    help="Override log.format from the configuration.",
)
@click.pass_context
def main(ctx: click.Context, config_path: str | None, log_format: str | None) -> None:
    """Event-sourced indexer for the ReserveBTC protocol."""
    tune_for_throughput()
    release_large_blocks_promptly()
    ctx.obj = {"config_path": config_path, "log_format": log_format}


@main.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Create or upgrade the schema, the event store and the read tables."""
    indexer = _indexer(ctx)
    applied = _guard(indexer.migrate)
    click.echo(f"schema {indexer.schema}: applied {applied or 'nothing new'}")


@main.command()
@click.option("--only", multiple=True, help="Run only 'follower' or 'projection:NAME' (repeatable).")
@click.option("--to-block", type=int, default=None, help="Exit 0 once every projection has processed this block.")
@click.option("--no-http", is_flag=True, help="Serve no HTTP endpoints (whatever [http] says).")
@click.pass_context
def run(ctx: click.Context, only: tuple[str, ...], to_block: int | None, no_http: bool) -> None:
    """Follow the chain and keep the read tables current (a long-running service)."""
    plan = _guard(lambda: RunPlan.parse(only))
    if not bind_to_parent():
        _fail("the run that started this projection process has already exited")
    stop = threading.Event()
    indexer = _indexer(ctx, stop)
    if started_by_a_run():
        indexer.lock_wait = LOCK_HANDOVER_WAIT
    if no_http:
        config = indexer.config
        indexer.config = config.model_copy(update={"http": config.http.model_copy(update={"enabled": False})})
    _install_signal_handlers(stop)
    from indexer.ops.service import Service  # the service layer imports prometheus and HTTP only when running

    code = _guard(lambda: Service(indexer).run(plan, to_block))
    sys.exit(code)


@main.command()
@click.option("--from-block", type=int, required=True, help="First block to re-ingest.")
@click.option(
    "--timeout",
    type=float,
    default=600.0,
    show_default=True,
    help="How long to wait for a running daemon to perform the replay.",
)
@click.pass_context
def replay(ctx: click.Context, from_block: int, timeout: float) -> None:
    """Re-ingest from a block: revert blocks >= N in the store and fetch them again."""
    indexer = _indexer(ctx)
    _guard(indexer.migrate)
    chain_id = indexer.config.chain.chain_id
    lock = follower_lock(indexer.dsn, indexer.schema, chain_id)
    if _guard(lock.try_acquire):
        try:
            follower = indexer.follower()
            cursor = indexer.store.cursor(chain_id, indexer.config.start_block())
            previous = cursor.indexed_block
            _guard(lambda: follower.replay_from(cursor, from_block))
            click.echo(f"reverted blocks {from_block}..{previous}; re-ingesting up to {previous}")
        finally:
            lock.release()
        code = _guard(lambda: indexer.run(to_block=previous))
        click.echo("replay complete" if code == 0 else f"replay stopped with exit code {code}")
        sys.exit(code)
    # A daemon holds the writer lock: ask it to replay, and wait until it has.
    with db.connection(indexer.dsn, indexer.schema, autocommit=True) as conn:
        request_id = replay_queue.enqueue(conn, chain_id, from_block)
        click.echo(f"replay request {request_id} queued for the running daemon")
        deadline = time.monotonic() + timeout
        error = None
        while time.monotonic() < deadline:
            state = replay_queue.outcome(conn, request_id)
            error = state.error
            if state.done:
                click.echo(f"the daemon reverted blocks from {from_block} and is re-ingesting them")
                return
            if state.failed:
                _fail(f"the running daemon could not perform replay request {request_id}: {error}")
            time.sleep(0.2)
    _fail(
        f"the running daemon did not perform replay request {request_id} within {timeout:.0f}s "
        f"(it stays queued)" + (f"; last attempt: {error}" if error else "")
    )


@main.command()
@click.option("--listen", default=None, help="HOST:PORT to listen on (default: api.listen from the configuration).")
@click.pass_context
def serve(ctx: click.Context, listen: str | None) -> None:
    """Serve the read API (routes, live push, PostgREST subset, status page): stateless, run any number."""
    indexer = _indexer(ctx)
    from indexer.serve.server import serve as run_server  # the web stack is imported only by this command

    if listen is not None:
        try:
            from indexer.ops.http import parse_listen

            parse_listen(listen)
        except ValueError as exc:
            _fail(str(exc), ExitCode.USAGE)
    run_server(indexer.config, listen)


@main.command(name="rebuild")
@click.argument("names", nargs=-1)
@click.pass_context
def rebuild_command(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Rebuild projections (all, or NAMES) from the event store alone, blue/green, decoding every stored log
    again from its raw topics and data with the configured ABIs where they (or the decoder) changed since the
    log was stored. Needs no RPC."""
    indexer = _indexer(ctx)
    projections = _guard(lambda: registry.build(list(names) or None))
    _guard(lambda: db.migrate(indexer.dsn, indexer.schema))
    result = _guard(lambda: rebuild(indexer.dsn, indexer.schema, indexer.store, projections, decoder=indexer.decoder))
    for name in result.projections:
        click.echo(f"rebuilt {name}")
    click.echo(
        f"{len(result.projections)} projection(s) from {result.events_read} stored events in {result.seconds:.2f}s"
        f" ({result.events_redecoded} decoded again with the current ABIs; the others were decoded alike)"
    )


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show head, indexed block, lag and errors of the follower and every projection."""
    indexer = _indexer(ctx)
    document = _guard(lambda: read_status(indexer.dsn, indexer.schema))
    if as_json:
        click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(format_status(document))


@main.command()
@click.option(
    "--block",
    "block",
    default=None,
    metavar="N|latest-consistent",
    help="Compare at block N (the tables must be at it), or wait for a fresh block. Default: the block "
    "every projection has reached.",
)
@click.option("--at-indexed", is_flag=True, help="Compare at the block every projection has reached (the default).")
@click.option("--users", multiple=True, metavar="ADDR[,ADDR...]", help="Check only these users (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--max-diffs", type=click.IntRange(min=0), default=None, help="Print at most K differences.")
@click.option(
    "--wait",
    "wait_seconds",
    type=float,
    default=60.0,
    show_default=True,
    help="How long to wait for the tables to stand at a usable block.",
)
@click.pass_context
def verify(
    ctx: click.Context,
    block: str | None,
    at_indexed: bool,
    users: tuple[str, ...],
    as_json: bool,
    max_diffs: int | None,
    wait_seconds: float,
) -> None:
    """Compare the read tables with on-chain state at one block pinned by hash; exit 5 on differences."""
    from indexer.verify import report
    from indexer.verify.verifier import BlockChoice, Verifier, parse_users

    if at_indexed and block is not None:
        _fail("--at-indexed and --block exclude each other", ExitCode.USAGE)
    indexer = _indexer(ctx)
    choice, wanted = _guard(lambda: (BlockChoice.parse(block, wait_seconds), parse_users(users)))
    _guard(indexer.migrate)
    verifier = _guard(lambda: Verifier(indexer.config, indexer.rpc, registry.NAMES))
    result = _guard(lambda: verifier.run(choice, wanted or None))
    if as_json:
        click.echo(orjson.dumps(report.as_json(result, max_diffs), option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(report.as_text(result, max_diffs))
    sys.exit(ExitCode.OK if result.equal else ExitCode.DIFFERENCES)


def _install_signal_handlers(stop: threading.Event) -> None:
    def handle(signum: int, _frame: object) -> None:
        log.info("shutdown requested", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    # `kill -USR1 <pid>` prints every thread's stack to stderr: a stuck daemon explains itself.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
