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
    from mixsim import _listing as listing

    if args.name:
        print(listing.describe(args.name))
        return 0
    sections = listing.sections()
    width = max(len(name) for _, rows in sections for name, _ in rows)
    for title, rows in sections:
        print(f"{title}:")
        for name, summary in rows:
            print(f"  {name:<{width}}  {summary}")
    print("\n`mixsim list NAME` shows the parameters, defaults and choices of one.")
    return 0


#: Keys only a protocol file has, and keys only a sweep file has; any other mapping is
#: read as a scenario (every scenario key is optional, so ``seed: -5`` is one).
_PROTOCOL_KEYS = {"summary", "description", "theory", "params", "slots", "view", "target",
                  "schedule", "communication", "consensus", "extends", "sparsify"}
_SWEEP_KEYS = {"kind", "base", "grid", "zip", "seeds", "overrides", "runs", "method",
               "starts", "coords"}


def _file_kind(path: Path) -> str:
    """``"scenario"``, ``"sweep"`` or ``"protocol"`` (also for a file that cannot be read
    as a mapping: the protocol loader then says what is wrong)."""
    from mixsim import _yaml

    try:
        data = _yaml.load(path.read_text())
    except Exception:
        return "protocol"
    if not isinstance(data, dict) and data is not None:
        return "protocol"
    keys = set(data or {})
    if keys & _SWEEP_KEYS:
        return "sweep"
    if keys & _PROTOCOL_KEYS:
        return "protocol"
    return "scenario"


def _cmd_validate(args) -> int:
    from mixsim.engine import Simulation
    from mixsim.protocol import load_protocol

    path = Path(args.file)
    if not path.is_file():
        raise ConfigError(f"no such file: {args.file}", source=args.file)
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"{args.workers}: must be an integer >= 1", key="--workers")
    kind = _file_kind(path)
    if kind == "sweep":
        from mixsim.sweep import load_sweep

        if args.workers is not None:
            raise ConfigError("a sweep sets its own workers; --workers is for protocol and "
                              "scenario files", key="--workers")
        sweep = load_sweep(path)
        print(f"{args.file}: valid sweep {sweep.name!r}: {len(sweep.points)} points")
        return 0
    if kind == "scenario":
        from mixsim.learning import check_scenario

        overrides = {} if args.workers is None else {"workers": args.workers}
        scenario = check_scenario(path, overrides)
        print(f"{args.file}: valid scenario {scenario.name!r}")
        return 0
    protocol = load_protocol(path)
    n = 4 if args.workers is None else args.workers
    # Building a small simulation checks every rule's op and arguments too.
    Simulation(protocol, n).run(n)
    print(f"{args.file}: valid protocol {protocol.name!r} ({n} workers)")
    return 0


def _cmd_run(args) -> int:
    from mixsim.learning import run

    overrides = _key_values(args.set)
    out = args.out
    try:
        result = run(args.scenario, out=out, overrides=overrides, seed=args.seed,
                     progress=not args.quiet and sys.stderr.isatty(),
                     overwrite=args.overwrite)
    except DivergenceError as exc:
        print(f"mixsim: error: {args.scenario}: {exc}; the metrics so far are kept"
              + (f" in {out}" if out else ""), file=sys.stderr)
        return 3
    if not args.quiet:
        choice = result.summary.get("corollary1")
        if choice:
            print(f"step size from Corollary 1 (seed 002 eq. 10): lr = {choice['lr']:.6g} "
                  f"(consensus step {choice['consensus_lr']:.6g}; T = {choice['T']}, "
                  f"t_mix = {choice['t_mix']:g}, xi = {choice['xi']:.4g}, "
                  f"L = {choice['L']:.4g}, sigma^2 = {choice['sigma2']:.4g}, "
                  f"f(x_0) - f(x_T) <= {choice['gap']:.4g}; the rate holds from T >= "
                  f"{choice['horizon']:.4g})")
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
    for r in results:
        if r.scan == "probabilistic":
            print(f"n = {r.workers}: some halvings decided by Lanczos tests; the value is "
                  f"wrong with probability at most {r.failure_probability:.1g}")
        if r.xi_kind != "exact":
            print(f"n = {r.workers}: xi is a certified lower bound (probe scan)")


def _mixing_kwargs(args) -> dict:
    return {
        "runs": args.runs, "method": args.method, "seed": args.seed,
        "params": _key_values(args.set), "starts": args.starts, "d": args.coords,
        "progress": sys.stderr.isatty(), "scan": args.scan,
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

    _check_plot(args)
    with _blame_set(), _dask_runs(args) as map_runs:
        results = mixing_times([args.protocol], args.workers, map_runs=map_runs,
                               **_mixing_kwargs(args))[args.protocol]
    method = results[0].method if len({r.method for r in results}) == 1 else "auto"
    checks = _lemma1_checks(args, results) if args.check else None
    if args.plot:
        from mixsim.plotting import plot_mixing_times

        plot_mixing_times({args.protocol: results}, args.plot)
    if args.json:
        rows = [r.as_dict() for r in results]
        for row, check in zip(rows, checks or [], strict=False):
            row["lemma1"] = _lemma1_dict(check)
        payload = {"protocol": args.protocol, "method": method, "results": rows}
        print(json.dumps(strict_json(payload), allow_nan=False))
    else:
        _print_table(args.protocol, method, results)
        for r, check in zip(results, checks or [], strict=False):
            print(f"n = {r.workers}: {check.message()}")
    if checks and not all(check.holds for check in checks):
        print(f"mixsim: {args.protocol}: Lemma 1 does not hold on the trace with the "
              "measured t_mix and xi", file=sys.stderr)
        return 1
    return 0


def _lemma1_checks(args, results) -> list:
    """Lemma 1 on the trace of the run with ``--seed``, for each number of workers.

    The run is simulated again (same seed, same operators) for ``2 t_mix + n`` steps, and
    every window of it is checked against that run's t_mix and the reported xi.
    """
    import math

    from threadpoolctl import threadpool_limits

    from mixsim.engine import Simulation
    from mixsim.protocol import load_protocol

    protocol = load_protocol(args.protocol, _key_values(args.set))
    d = args.coords or (16 if protocol.sparsify is not None else 1)
    checks = []
    for r in results:
        if r.method == "spectral":
            raise ConfigError("--check needs the operators of a run: use --method trace or "
                              "montecarlo", key="--check")
        # Run 0 of a Monte Carlo sample is the run with --seed.
        t_mix = float(r.samples[0]) if r.samples.size else float(r.t_mix)
        steps = 2 * math.ceil(t_mix) + r.workers
        trace = Simulation(protocol, r.workers, d=d, seed=args.seed).run(steps).trace
        # Many small SVDs: one BLAS thread each is far faster than threads fighting over
        # them (as for the mixing-time runs themselves).
        with threadpool_limits(limits=1):
            checks.append(trace.check_lemma1(t_mix, r.xi, coordinates=d,
                                             progress=sys.stderr.isatty()))
    return checks


def _lemma1_dict(check) -> dict:
    return {"holds": check.holds, "t_mix": check.t_mix, "xi": check.xi,
            "steps": check.steps, "windows": check.windows,
            "worst_ratio": check.worst_ratio, "worst_window": list(check.worst_window),
            "violation": None if check.violation is None else list(check.violation),
            "trace_xi": check.trace_xi}


def _check_plot(args) -> None:
    """``--plot FILE.png`` is checked before anything is computed, and its folder made."""
    if args.plot:
        from mixsim.report import check_out_file, make_out_dir

        check_out_file(args.plot, "--plot")
        make_out_dir(Path(args.plot).parent, "--plot")


def _cmd_compare(args) -> int:
    from mixsim._dask import mixing_times
    from mixsim.plotting import plot_mixing_times
    from mixsim.report import strict_json

    _check_plot(args)
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
                     help="window starts checked per run (default: n up to 256 slots, "
                          "then 65536 / n, at least 16)")
    sub.add_argument("--scan", default="auto", choices=["auto", "exact", "probes"],
                     help="exact dense scan, probe scan, or exact up to 256 slots (default)")
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
    for point, reason in outcome.recomputed:
        axes = ", ".join(f"{k}={v!r}" for k, v in {**point.axes, "seed": point.seed}.items())
        print(f"mixsim: note: point {point.key[:12]} ({axes}) recomputed; its file: {reason}",
              file=sys.stderr)
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
        from mixsim.report import check_out_file, make_out_dir

        check_out_file(args.out, "--out")
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

    sub = subs.add_parser("list", help="list protocols, problems, datasets, optimizers, "
                                       "compressors; or the details of one")
    sub.add_argument("name", nargs="?", help="show the parameters, defaults and choices of "
                                             "this protocol, problem, dataset, ...")
    sub.set_defaults(func=_cmd_list)

    sub = subs.add_parser("run", help="run a learning scenario")
    sub.add_argument("scenario", help="scenario YAML file")
    sub.add_argument("--out", help="output folder (default: the scenario's outputs.dir)")
    sub.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a dotted scenario key, e.g. optimizer.method.lr=0.01")
    sub.add_argument("--seed", type=_at_least(0), default=None,
                     help="override the scenario's seed")
    sub.add_argument("--quiet", action="store_true", help="no progress bar, no summary line")
    sub.add_argument("--overwrite", action="store_true",
                     help="replace the outputs of another scenario in the output folder")
    sub.set_defaults(func=_cmd_run)

    sub = subs.add_parser("validate",
                          help="check a protocol, scenario or sweep file (exit 0 when valid)")
    sub.add_argument("file")
    sub.add_argument("--workers", type=int, metavar="N",
                     help="simulated workers to check a protocol (default 4) or scenario with")
    sub.set_defaults(func=_cmd_validate)

    sub = subs.add_parser("mixing-time", help="mixing time of a protocol")
    sub.add_argument("protocol", help="catalog name or protocol file")
    _mixing_options(sub)
    sub.add_argument("--check", action="store_true",
                     help="check Lemma 1 (seed 002 eq. 2) on every window of the --seed run's "
                          "trace with the measured t_mix and xi (exit 1 when it breaks)")
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
