"""Command-line entry points. A problem the user can fix ends as one line on stderr
and a non-zero exit; flags are checked before TensorFlow is imported."""

import json
import os
import statistics
import sys
from pathlib import Path

from .config import given_fields, parse_config
from .errors import UserError, caused_by_ctrl_c


def _fail(prog, message, code):
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def train_main(argv=None):
    """``train.py``: train one baseline or distraction model; see ``--help``.

    Ctrl-C at any moment ends as one line and exit 130: here from the flags on
    (TensorFlow's import alone takes seconds), in ``train.py`` while Python imports
    the package."""
    prog = "train.py"
    interrupted = "interrupted"
    try:
        try:
            config = parse_config(argv)
            given = given_fields(argv)
        except (ValueError, UserError) as error:
            return _fail(prog, error, 2)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from .protocols import run_protocol

        log = print if config.verbose else None
        interrupted = ("interrupted; run the same command with --resume to continue from "
                       "the last finished epoch")
        try:
            run_dirs = run_protocol(config, log=log, given=given)
        except UserError as error:
            return _fail(prog, error, 1)
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
            print(f"test accuracy over {len(accuracies)} runs: "
                  f"{statistics.mean(accuracies):.4f} ± {statistics.stdev(accuracies):.4f} "
                  "(mean ± std)")
        return 0
    except KeyboardInterrupt:
        return _fail(prog, interrupted, 130)
    except Exception as error:  # noqa: BLE001 - re-raised unless it is a Ctrl-C
        if caused_by_ctrl_c(error):
            return _fail(prog, interrupted, 130)
        raise


def evaluate_main(argv=None):
    """``evaluate.py``: tables of test metrics, per-class TPR and cost from run folders.
    Ctrl-C at any moment ends as one line and exit 130."""
    try:
        return _evaluate(argv)
    except KeyboardInterrupt:
        return _fail("evaluate.py", "interrupted", 130)
    except Exception as error:  # noqa: BLE001 - re-raised unless it is a Ctrl-C
        if caused_by_ctrl_c(error):
            return _fail("evaluate.py", "interrupted", 130)
        raise


def _evaluate_k_shot(methods, args, prog):
    """evaluate.py on the runs of a k-shot grid: Tables 1-2 of the saliency paper, and
    the saliency figures (Tables 3-4) unless --no-models."""
    from .kshot_reports import FIGURE, write_kshot_reports
    from .report_index import write_index

    try:
        tables = write_kshot_reports(methods, args.out_dir)
        figures = [] if args.no_models else _saliency_figures(methods, args)
        exports = _export(methods, args)
        index = write_index(args.out_dir, tables, [FIGURE, *(path.name for path in figures)],
                            ["runs.csv"])
    except UserError as error:
        return _fail(prog, error, 1)
    for table in tables.values():
        print(table.markdown())
    listed = "".join(f", {name}" for name in [*(path.name for path in figures), index])
    listed += _listed_exports(exports)
    print(f"tables written to {args.out_dir}/: {', '.join(tables)} (.md, .tex, .csv), "
          f"runs.csv, {FIGURE}{listed}; robustness "
          "and inspection are made for runs of the official split only (every seed of a "
          "k-shot grid has its own test set)")
    return 0


def _saliency_figures(methods, args):
    """The saliency methods' figures against the baseline (``saliency_figures``)."""
    from .saliency_figures import is_saliency

    if args.figure_images == 0 or not any(map(is_saliency, methods[1:])):
        return []
    from .runs import check_saved_models

    check_saved_models(methods)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from .saliency_figures import write_saliency_figures

    return write_saliency_figures(methods, Path(args.out_dir), args.figure_images, log=print)


def _export(methods, args):
    """--export: every run's classifier as a TensorFlow SavedModel (``export.py``),
    once the tables are written; the folders written."""
    if not args.export:
        return []
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from .export import export_runs

    return export_runs(methods, args.out_dir, args.export_tflite, args.overwrite_export,
                       log=print)


def _listed_exports(paths):
    """The exports for the final "written to" line, relative to --out-dir."""
    from .export import EXPORT_FOLDER

    return "".join(f", {EXPORT_FOLDER}/{path.name}/" for path in paths)


OCCLUSION_FLAGS = {"occluders": "--occluders", "occlusion_ratios": "--occlusion-ratios",
                   "random_positions": "--random-positions", "pattern_seed": "--pattern-seed"}


def _corruptions(args):
    """evaluate.py's corruptions: the names given, with ``occlusion`` built from the
    occlusion flags (a ``Corruption`` object). ValueError naming a bad flag; UserError
    for a bad --occluders folder - both before any run or model is read."""
    given = [flag for field, flag in OCCLUSION_FLAGS.items() if hasattr(args, field)]
    if "occlusion" not in args.corruptions:
        if given:
            raise ValueError(f"{given[0]} applies to --corruptions occlusion only")
        return list(args.corruptions)
    from .corruptions import occlusion_corruption
    from .occluders import RANDOM_POSITIONS, RATIOS, load_occluders

    built = occlusion_corruption(load_occluders(getattr(args, "occluders", None)),
                                 getattr(args, "occlusion_ratios", RATIOS),
                                 getattr(args, "random_positions", RANDOM_POSITIONS),
                                 getattr(args, "pattern_seed", 0))
    return [built if name == "occlusion" else name for name in args.corruptions]


# evaluate.py's faithfulness flags: {flag: the FaithfulnessSettings field it sets}.
FAITHFULNESS_FLAGS = {"--deletion-step": "step", "--deletion-substrate": "substrate",
                      "--insertion-sigma": "sigma", "--road-percentiles": "percentiles",
                      "--road-noise": "noise"}


def _faithfulness_flags(parser):
    """evaluate.py's faithfulness flags (``faithfulness.FaithfulnessSettings``): no
    argparse defaults, so that one given with --no-faithfulness or --no-models can be
    refused; their defaults are the papers'."""
    import argparse

    from .faithfulness_reports import FaithfulnessSettings

    defaults = FaithfulnessSettings()
    group = parser.add_argument_group(
        "faithfulness", "the faithfulness table of every run's Grad-CAM: deletion and "
        "insertion AUC (Petsiuk et al., 2018) and ROAD with noisy linear imputation (Rong et "
        "al., 2022), seeded by --erase-seed")
    group.add_argument("--no-faithfulness", action="store_true",
                       help="skip the faithfulness table (it runs every model on many "
                       "perturbed copies of the test set)")
    group.add_argument("--deletion-step", type=int, default=argparse.SUPPRESS, metavar="N",
                       help="deletion and insertion: pixels moved per step (default: the "
                       "image width, Petsiuk et al.'s 224 at 224 px)")
    group.add_argument("--deletion-substrate", choices=("zero", "mean"),
                       default=argparse.SUPPRESS, help="deletion: what a deleted pixel "
                       f"becomes: 0, or the image's mean colour (default: {defaults.substrate})")
    group.add_argument("--insertion-sigma", type=float, default=argparse.SUPPRESS,
                       metavar="S", help="insertion: sigma in pixels of the Gaussian blur the "
                       "insertion starts from (default: 5 x image size / 224, Petsiuk et "
                       "al.'s 5 at 224 px)")
    group.add_argument("--road-percentiles", nargs="+", type=float, default=argparse.SUPPRESS,
                       metavar="P", help="ROAD: percentages of the pixels removed (default: "
                       f"{' '.join(f'{p:g}' for p in defaults.percentiles)})")
    group.add_argument("--road-noise", type=float, default=argparse.SUPPRESS, metavar="S",
                       help="ROAD: std of the noise added to imputed pixels, on the [0, 1] "
                       f"scale (default: {defaults.noise:g})")


def _faithfulness(args):
    """The ``FaithfulnessSettings`` of evaluate.py's flags, or None when the table is
    not made; ValueError naming a bad flag, or one given while the table is off."""
    import dataclasses

    from .faithfulness_reports import FaithfulnessSettings

    given = {flag: getattr(args, flag[2:].replace("-", "_")) for flag in FAITHFULNESS_FLAGS
             if hasattr(args, flag[2:].replace("-", "_"))}
    if args.no_faithfulness or args.no_models:
        if given:
            off = "--no-faithfulness" if args.no_faithfulness else "--no-models"
            raise ValueError(f"{next(iter(given))} does not apply with {off}")
        return None
    values = {FAITHFULNESS_FLAGS[flag]: value for flag, value in given.items()}
    if "percentiles" in values:
        values["percentiles"] = tuple(values["percentiles"])
    settings = dataclasses.replace(FaithfulnessSettings(), seed=args.erase_seed, **values)
    settings.check()
    return settings


def _evaluate(argv):
    import argparse

    from .config import OneLineParser
    from .corruptions import CORRUPTIONS, DEFAULT
    from .occluders import RANDOM_POSITIONS, RATIOS
    from .plots import training_curves, write_curves
    from .report_index import write_index
    from .reports import UNPRINTED_TABLES, data_files, write_evaluation
    from .runs import check_saved_models, load_methods

    prog = "evaluate.py"
    parser = OneLineParser(
        prog=prog, description="Paper-style tables (Markdown, LaTeX, CSV) from run folders: "
        "mean ± std over runs, best value in bold, paired t-test against the baseline.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--baseline", nargs="+", required=True, metavar="RUN",
                        help="run folders of the baseline (e.g. models/cars-none-*)")
    parser.add_argument("--method", nargs="+", action="append", default=[], metavar="RUN",
                        help="run folders of one method; repeat for every method")
    parser.add_argument("--out-dir", default="reports", help="folder for the tables")
    parser.add_argument("--no-models", action="store_true",
                        help="tables from the saved predictions only: skip the robustness "
                        "test and the inspection, which load every model and the test images")
    parser.add_argument("--corruptions", nargs="+", choices=list(CORRUPTIONS),
                        default=list(DEFAULT), metavar="NAME",
                        help="test-set corruptions of the robustness test, one table per "
                        "setting of each (occlusion: Table 2 of Cen et al. 2021 and "
                        f"occlusion.png); choices: {', '.join(CORRUPTIONS)}")
    # The occlusion flags have no argparse default, so that giving one without
    # --corruptions occlusion can be refused; their defaults are the paper's.
    occlusion = parser.add_argument_group(
        "occlusion", "the synthetic occluders of --corruptions occlusion (Cen et al. 2021, "
        "Sec. 4.1)")
    occlusion.add_argument("--occluders", default=argparse.SUPPRESS, metavar="DIR",
                           help="folder of RGBA images whose alpha is the occluder's mask "
                           "(default: the three shipped in playing_distraction/assets/"
                           "occluders)")
    occlusion.add_argument("--occlusion-ratios", nargs="+", type=float,
                           default=argparse.SUPPRESS, metavar="R",
                           help="shares of the image the occluder's opaque pixels cover "
                           f"(default: {' '.join(map(str, RATIOS))})")
    occlusion.add_argument("--random-positions", type=int, default=argparse.SUPPRESS,
                           metavar="N", help="random positions per occluder and ratio, "
                           f"besides the centre (default: {RANDOM_POSITIONS})")
    occlusion.add_argument("--pattern-seed", type=int, default=argparse.SUPPRESS,
                           metavar="S", help="seed of the random positions (default: 0)")
    _faithfulness_flags(parser)
    parser.add_argument("--erase-seed", type=int, default=0,
                        help="seed of every corrupted test set (the same for every model)")
    parser.add_argument("--figure-images", type=int, default=4,
                        help="test images in the Grad-CAM figure (0: no figure)")
    serving = parser.add_argument_group(
        "serving export", "every run's classifier as a TensorFlow SavedModel in "
        "OUT_DIR/export/<run folder name>/ (signature serving_default: float32 RGB in "
        "[0, 1] -> logits) with export.json (class names, image size, input and output)")
    serving.add_argument("--export", action="store_true",
                         help="write the SavedModels, after the tables")
    serving.add_argument("--export-tflite", action="store_true",
                         help="--export, and model.tflite in each export folder")
    serving.add_argument("--overwrite-export", action="store_true",
                         help="replace earlier exports (refused without it)")
    args = parser.parse_args(argv)
    if args.figure_images < 0:
        return _fail(prog, "--figure-images must be 0 or more", 2)
    export_flag = "--export-tflite" if args.export_tflite else "--export"
    args.export = args.export or args.export_tflite
    if args.overwrite_export and not args.export:
        return _fail(prog, "--overwrite-export applies to --export only", 2)
    if args.export and args.no_models:
        return _fail(prog, f"{export_flag} exports the saved models, which --no-models "
                     "skips: give one of them", 2)
    try:
        corruptions = _corruptions(args)
        faithfulness = _faithfulness(args)
    except ValueError as error:
        return _fail(prog, error, 2)
    except UserError as error:
        return _fail(prog, error, 1)
    try:
        methods = load_methods(args.baseline, args.method)
        if args.export:  # a clash or an earlier export is refused before any slow work
            from .export import check_exports

            check_exports(methods, args.out_dir, args.overwrite_export)
        if methods[0].runs[0].k_shot:
            return _evaluate_k_shot(methods, args, prog)
        curves = training_curves(methods)  # a run without its history fails before slow work
        model_results = None
        if not args.no_models:
            # A damaged model.keras is found before TensorFlow is imported, and before
            # --out-dir is made (evaluate_models makes it, for the figure).
            check_saved_models(methods)
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            from .evaluation import evaluate_models

            model_results = evaluate_models(
                methods, args.erase_seed, Path(args.out_dir) / "gradcam.png",
                args.figure_images, log=print, corruptions=corruptions, checked=True,
                faithfulness=faithfulness)
        tables, written = write_evaluation(methods, args.out_dir, model_results)
        written.append(write_curves(curves, args.out_dir))
        figures = [] if args.no_models else _saliency_figures(methods, args)
        exports = _export(methods, args)
        gradcam = ["gradcam.png"] if model_results is not None and model_results.figure else []
        shown = [*gradcam, *written, *(path.name for path in figures)]
        index = write_index(args.out_dir, tables, shown, data_files(methods, model_results))
    except UserError as error:
        return _fail(prog, error, 1)
    except OSError as error:
        return _fail(prog, f"cannot write to {args.out_dir}: {error.strerror}", 1)
    for stem, table in tables.items():
        if stem not in UNPRINTED_TABLES:
            print(table.markdown())
    rows = ", corruptions.csv" if model_results is not None and model_results.corrupted else ""
    figure = "".join(f", {name}" for name in [*shown, index]) + _listed_exports(exports)
    print(f"tables written to {args.out_dir}/: {', '.join(tables)} (.md, .tex, .csv), "
          f"runs.csv{rows}, confusion_<method>.csv{figure}")
    return 0
