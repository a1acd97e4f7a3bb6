"""Command-line entry points. A problem the user can fix ends as one line on stderr
and a non-zero exit; flags are checked before TensorFlow is imported."""

import json
import os
import statistics
import sys

from .config import parse_config
from .errors import UserError


def _fail(prog, message, code):
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def train_main(argv=None):
    """``train.py``: train one baseline or distraction model; see ``--help``."""
    prog = "train.py"
    try:
        config = parse_config(argv)
    except (ValueError, UserError) as error:
        return _fail(prog, error, 2)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from .training import run_protocol

    log = print if config.verbose else None
    try:
        run_dirs = run_protocol(config, log=log)
    except UserError as error:
        return _fail(prog, error, 1)
    except KeyboardInterrupt:
        return _fail(prog, "interrupted; run the same command with --resume to continue "
                           "from the last finished epoch", 130)
    accuracies = []
    for run_dir in run_dirs:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        accuracies.append(metrics["test_accuracy"])
        print(
            f"{run_dir}: test accuracy {metrics['test_accuracy']:.4f} "
            f"(best epoch {metrics['best_epoch']} of {metrics['epochs_run']}, "
            f"{metrics['train_seconds']:.0f} s)"
        )
    if len(accuracies) > 1:
        print(f"test accuracy over {len(accuracies)} runs: {statistics.mean(accuracies):.4f} "
              f"± {statistics.stdev(accuracies):.4f} (mean ± std)")
    return 0


def evaluate_main(argv=None):
    """``evaluate.py``: tables of test metrics, per-class TPR and cost from run folders."""
    import argparse

    from .reports import load_methods, write_reports

    prog = "evaluate.py"
    parser = argparse.ArgumentParser(
        prog=prog, description="Paper-style tables (Markdown, LaTeX, CSV) from run folders: "
        "mean ± std over runs, best value in bold, paired t-test against the baseline.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--baseline", nargs="+", required=True, metavar="RUN",
                        help="run folders of the baseline (e.g. models/cars-none-*)")
    parser.add_argument("--method", nargs="+", action="append", default=[], metavar="RUN",
                        help="run folders of one method; repeat for every method")
    parser.add_argument("--out-dir", default="reports", help="folder for the tables")
    parser.error = lambda message: parser.exit(2, f"{prog}: error: {message}\n")
    args = parser.parse_args(argv)
    try:
        methods = load_methods(args.baseline, args.method)
        tables = write_reports(methods, args.out_dir)
    except UserError as error:
        return _fail(prog, error, 1)
    print(tables["metrics"].markdown())
    print(f"tables written to {args.out_dir}/: metrics, per_class_tpr, cost (.md, .tex, .csv) "
          "and runs.csv")
    return 0
