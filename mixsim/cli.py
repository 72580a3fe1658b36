"""The ``mixsim`` command line.

A user's mistake ends with one line on stderr naming the file, key and value, and exit code
2; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from mixsim.errors import ConfigError, DivergenceError, MixsimError

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _at_least(low: int):
    """An argparse type: an integer >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= {low}")
        return value

    return parse


def _key_values(pairs: list[str] | None) -> dict:
    values = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{pair!r} is not KEY=VALUE", key="--set")
        values[key.strip()] = value
    return values


def _cmd_list(args) -> int:
    from mixsim import data, problems
    from mixsim.optim import compressors, memory, registry
    from mixsim.protocol import list_protocols

    sections = [
        ("protocols", list_protocols()),
        ("problems", problems.list_problems()),
        ("datasets", data.list_datasets()),
        ("optimizers", _registry_rows(registry._OPTIMIZERS)),
        ("compressors", _registry_rows(compressors._COMPRESSORS)),
        ("memory schemes", [("none", "naive: send the compressed vector, remember nothing")]
         + _registry_rows(memory._MEMORIES)),
    ]
    width = max(len(name) for _, rows in sections for name, _ in rows)
    for title, rows in sections:
        print(f"{title}:")
        for name, summary in rows:
            print(f"  {name:<{width}}  {summary}")
    return 0


def _registry_rows(table: dict) -> list[tuple[str, str]]:
    """``(name, first line of the factory's docstring)`` for a registry of factories."""
    rows = []
    for name, factory in table.items():
        doc = (factory.__doc__ or "").strip().splitlines()
        rows.append((name, doc[0].rstrip(".") if doc else ""))
    return rows


def _is_scenario(path: Path) -> bool:
    from mixsim import _yaml

    try:
        data = _yaml.load(path.read_text())
    except Exception:
        return False
    return isinstance(data, dict) and "communication" not in data and "schedule" not in data \
        and any(key in data for key in ("problem", "data", "optimizer", "steps", "epochs",
                                        "workers", "protocol"))


def _cmd_validate(args) -> int:
    from mixsim.engine import Simulation
    from mixsim.protocol import load_protocol

    path = Path(args.file)
    if not path.is_file():
        raise ConfigError(f"no such file: {args.file}", source=args.file)
    if _is_scenario(path):
        from mixsim.learning import check_scenario

        scenario = check_scenario(path)
        print(f"{args.file}: valid scenario {scenario.name!r}")
        return 0
    protocol = load_protocol(path)
    # Building a small simulation checks every rule's op and arguments too.
    Simulation(protocol, 4).run(4)
    print(f"{args.file}: valid protocol {protocol.name!r}")
    return 0


def _cmd_run(args) -> int:
    from mixsim.learning import run

    overrides = _key_values(args.set)
    out = args.out
    try:
        result = run(args.scenario, out=out, overrides=overrides, seed=args.seed,
                     progress=not args.quiet and sys.stderr.isatty())
    except DivergenceError as exc:
        print(f"mixsim: error: {args.scenario}: {exc}; the metrics so far are kept"
              + (f" in {out}" if out else ""), file=sys.stderr)
        return 3
    if not args.quiet:
        print(_summary_line(result))
    return 0


def _summary_line(result) -> str:
    """The closing line of ``mixsim run``: what ran and what it reached."""
    from mixsim.report import format_number

    s = result.summary
    final = s["final"]
    parts = [f"loss {format_number(final.get('loss'))}"]
    if final.get("test_accuracy") is not None:
        parts.append(f"test accuracy {100 * final['test_accuracy']:.1f}%")
    if not result.scenario.outputs.measure_mixing:
        parts.append("t_mix not measured (outputs.measure_mixing is false)")
    elif s["t_mix"] is None:
        parts.append("t_mix longer than the run")
    else:
        parts.append(f"t_mix {format_number(s['t_mix'])} steps measured "
                     f"(xi {format_number(s['xi'])})")
    where = f"; outputs in {result.out_dir}" if result.out_dir else ""
    return (f"{s['name']}: {format_number(s['steps'])} steps of {s['protocol']} with "
            f"{s['workers']} workers; {', '.join(parts)}{where}")


def _print_table(protocol: str, method: str, results) -> None:
    from mixsim.report import format_number as num

    print(f"{protocol} (method {method})")
    print(f"{'workers':>8} {'t_mix':>20} {'95% CI':>25} {'xi':>8} {'theory':>20} {'runs':>11}")
    for r in results:
        ci = f"[{num(r.ci95[0])}, {num(r.ci95[1])}]" if r.ci95 else "-"
        print(f"{num(r.workers):>8} {num(r.t_mix):>20} {ci:>25} {num(r.xi):>8} "
              f"{num(r.theory):>20} {num(r.runs):>11}")


def _mixing_kwargs(args) -> dict:
    return {
        "runs": args.runs, "method": args.method, "seed": args.seed,
        "params": _key_values(args.set), "starts": args.starts, "d": args.coords,
        "progress": sys.stderr.isatty(),
    }


@contextmanager
def _blame_set():
    """Name ``--set NAME`` for an error in a protocol parameter the user set."""
    try:
        yield
    except ConfigError as exc:
        if exc.source is not None or not (exc.key or "").startswith("params."):
            raise
        raise ConfigError(exc.message, source=f"--set {exc.key[len('params.'):]}") from None


@contextmanager
def _dask_runs(args):
    """``map_runs`` on Dask when ``--scheduler`` or ``--dask-workers`` is given, else None
    (the runs stay in this process)."""
    if args.scheduler is None and args.dask_workers is None:
        yield None
        return
    from mixsim._dask import dask_client, map_runs_on

    with dask_client(args.scheduler, args.dask_workers) as client:
        yield map_runs_on(client)


def _cmd_mixing_time(args) -> int:
    from mixsim._dask import mixing_times
    from mixsim.report import strict_json

    with _blame_set(), _dask_runs(args) as map_runs:
        results = mixing_times([args.protocol], args.workers, map_runs=map_runs,
                               **_mixing_kwargs(args))[args.protocol]
    method = results[0].method if len({r.method for r in results}) == 1 else "auto"
    if args.plot:
        from mixsim.plotting import plot_mixing_times

        plot_mixing_times({args.protocol: results}, args.plot)
    if args.json:
        payload = {"protocol": args.protocol, "method": method,
                   "results": [r.as_dict() for r in results]}
        print(json.dumps(strict_json(payload), allow_nan=False))
    else:
        _print_table(args.protocol, method, results)
    return 0


def _cmd_compare(args) -> int:
    from mixsim._dask import mixing_times
    from mixsim.plotting import plot_mixing_times
    from mixsim.report import strict_json

    with _blame_set(), _dask_runs(args) as map_runs:
        all_results = mixing_times(args.protocols, args.workers, map_runs=map_runs,
                                   **_mixing_kwargs(args))
    if args.plot:
        plot_mixing_times(all_results, args.plot, title=args.title)
    if args.json:
        payload = {name: {"method": rows[0].method, "results": [r.as_dict() for r in rows]}
                   for name, rows in all_results.items()}
        print(json.dumps(strict_json(payload), allow_nan=False))
    else:
        for name, rows in all_results.items():
            _print_table(name, rows[0].method, rows)
    return 0


def _mixing_options(sub) -> None:
    sub.add_argument("--workers", type=_at_least(1), nargs="+", default=[8], metavar="N",
                     help="numbers of workers (default 8)")
    sub.add_argument("--runs", type=_at_least(1), default=100,
                     help="runs for montecarlo (default 100)")
    sub.add_argument("--seed", type=_at_least(0), default=0,
                     help="seed of the first run (default 0)")
    sub.add_argument("--method", default="auto",
                     choices=["auto", "trace", "montecarlo", "spectral"])
    sub.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="protocol parameter override (repeatable)")
    sub.add_argument("--starts", type=_at_least(1), default=None,
                     help="window starts checked per run (default: n)")
    sub.add_argument("--coords", type=_at_least(1), default=None,
                     help="coordinates simulated (default 1; 16 for sparsified protocols)")
    sub.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    sub.add_argument("--plot", metavar="FILE.png", help="plot t_mix against workers")
    sub.add_argument("--scheduler", metavar="ADDRESS",
                     help="run the Monte Carlo runs on this Dask cluster (tcp://HOST:PORT)")
    sub.add_argument("--dask-workers", type=_at_least(1), metavar="K",
                     help="run the Monte Carlo runs on a local Dask cluster of K processes")


def _cmd_sweep(args) -> int:
    from mixsim.sweep import load_sweep, run_sweep

    sweep = load_sweep(args.sweep)
    if args.out:
        from mixsim.report import check_out_dir

        check_out_dir(args.out)
    progress = not args.quiet and sys.stderr.isatty()
    if args.serial:
        if args.scheduler or args.workers:
            raise ConfigError("--serial runs in this process: no --scheduler or --workers",
                              key="--serial")
        outcome = run_sweep(sweep, args.out, retry_failed=args.retry_failed,
                            progress=progress)
    else:
        from mixsim._dask import dask_client

        with dask_client(args.scheduler, args.workers) as client:
            outcome = run_sweep(sweep, args.out, client=client,
                                retry_failed=args.retry_failed, progress=progress)
    if not args.quiet:
        print(f"{sweep.name}: {outcome.total} points ({outcome.done} computed now, "
              f"{outcome.skipped} found in {outcome.out_dir}, {outcome.failed} failed); "
              f"tables in {outcome.out_dir / 'results.csv'} and "
              f"{outcome.out_dir / 'aggregate.csv'}")
    if outcome.failed:
        print(f"mixsim: error: {args.sweep}: {outcome.failed} of {outcome.total} points "
              f"failed (their errors are in {outcome.out_dir / 'results.csv'}); "
              "--retry-failed runs them again", file=sys.stderr)
        return 1
    return 0


def _cmd_plot(args) -> int:
    from mixsim.sweep import plot_sweep

    out = args.out or str(Path(args.sweep_dir) / f"{args.metric}-vs-{args.x}.png")
    if args.out:
        from mixsim.report import make_out_dir

        make_out_dir(Path(args.out).parent)
    plot_sweep(args.sweep_dir, out, metric=args.metric, x=args.x, group=args.group,
               rows=args.rows, logx=args.logx, logy=args.logy)
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``mixsim`` command."""
    parser = _Parser(prog="mixsim", description="Simulate weakly consistent parallel learning.")
    from mixsim import __version__

    parser.add_argument("--version", action="version", version=f"mixsim {__version__}")
    subs = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub = subs.add_parser("list", help="list the protocol catalog")
    sub.set_defaults(func=_cmd_list)

    sub = subs.add_parser("run", help="run a learning scenario")
    sub.add_argument("scenario", help="scenario YAML file")
    sub.add_argument("--out", help="output folder (default: the scenario's outputs.dir)")
    sub.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a dotted scenario key, e.g. optimizer.method.lr=0.01")
    sub.add_argument("--seed", type=_at_least(0), default=None,
                     help="override the scenario's seed")
    sub.add_argument("--quiet", action="store_true", help="no progress bar, no summary line")
    sub.set_defaults(func=_cmd_run)

    sub = subs.add_parser("validate",
                          help="check a protocol or scenario file (exit 0 when valid)")
    sub.add_argument("file")
    sub.set_defaults(func=_cmd_validate)

    sub = subs.add_parser("mixing-time", help="mixing time of a protocol")
    sub.add_argument("protocol", help="catalog name or protocol file")
    _mixing_options(sub)
    sub.set_defaults(func=_cmd_mixing_time)

    sub = subs.add_parser("compare", help="mixing times of several protocols, one plot")
    sub.add_argument("protocols", nargs="+", help="catalog names or protocol files")
    sub.add_argument("--title", default=None, help="plot title")
    _mixing_options(sub)
    sub.set_defaults(func=_cmd_compare)

    sub = subs.add_parser("sweep", help="run a grid of scenarios and seeds on Dask (resumable)")
    sub.add_argument("sweep", help="sweep YAML file")
    sub.add_argument("--out", help="output folder (default out/NAME)")
    sub.add_argument("--scheduler", metavar="ADDRESS",
                     help="an existing Dask cluster (tcp://HOST:PORT); default: a local one")
    sub.add_argument("--workers", "--dask-workers", dest="workers", type=_at_least(1),
                     metavar="K",
                     help="processes of the local Dask cluster (default: number of cores)")
    sub.add_argument("--retry-failed", action="store_true",
                     help="run again the points recorded as failed")
    sub.add_argument("--serial", action="store_true",
                     help="run the points one after another in this process (no Dask)")
    sub.add_argument("--quiet", action="store_true", help="no progress bar, no summary line")
    sub.set_defaults(func=_cmd_sweep)

    sub = subs.add_parser("plot", help="plot a metric of a sweep against an axis")
    sub.add_argument("sweep_dir", metavar="SWEEP_OUT_DIR", help="output folder of a sweep")
    sub.add_argument("--metric", required=True, help="metric column, e.g. loss or t_mix")
    sub.add_argument("--x", required=True, help="axis on the x axis (e.g. optimizer.method.lr)")
    sub.add_argument("--group", help="axis drawn as one line per value")
    sub.add_argument("--rows", choices=["final", "all"], default="final",
                     help="learning runs: last evaluation (default) or every one (--x step)")
    sub.add_argument("--logx", action="store_true", help="logarithmic x axis")
    sub.add_argument("--logy", action="store_true", help="logarithmic y axis")
    sub.add_argument("--out", help="PNG file (default SWEEP_OUT_DIR/METRIC-vs-X.png)")
    sub.set_defaults(func=_cmd_plot)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mixsim`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "quiet", False):
            return args.func(args)
        from mixsim._numba import announce_compilation

        with announce_compilation():
            return args.func(args)
    except MixsimError as exc:
        print(f"mixsim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mixsim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`mixsim list | head`): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
