"""evaluate.py's one-page report: ``index.html`` in --out-dir.

One self-contained page - inline CSS, no JavaScript, nothing fetched from elsewhere -
that shows every table evaluate.py wrote (rendered from its ``reports.Table``, with
links to its .md, .tex and .csv files), every figure it drew (``<img>``), and links to
its other files (runs.csv, the confusion matrices, ...). Every link is relative to the
folder, so the folder can be moved, archived or served as it is. Only files that exist
in the folder are shown or linked: what evaluate.py wrote this time, not what an
earlier call left there.

This module does not import TensorFlow.
"""

from html import escape
from pathlib import Path
from urllib.parse import quote

from .errors import UserError

INDEX = "index.html"
TABLE_FORMATS = ("md", "tex", "csv")
# What a figure of evaluate.py shows; others are captioned by their file name.
CAPTIONS = {
    "curves.png": "Training curves: accuracy and loss against the epoch, training solid and "
                  "validation dashed; per method the mean over its runs with a ± sample-std "
                  "band (over the runs that reached the epoch).",
    "robustness_by_area.png": "Accuracy on the Random Erasing test set against the erased "
                              "share of the image (bin centres); per method the mean over "
                              "runs with a ± sample-std band.",
    "gradcam.png": "Test images beside every method's Grad-CAM for the true class (first "
                   "run of each method).",
    "occlusion.png": "Accuracy against the occluded share of the image: centre solid, "
                     "random positions dashed.",
    "faithfulness.png": "ROAD: accuracy against the share of pixels removed by noisy linear "
                        "imputation, most relevant first (MoRF, solid: lower is more "
                        "faithful) and least relevant first (LeRF, dashed: higher is more "
                        "faithful); mean over runs with a ± sample-std band.",
    "kshot.png": "Accuracy against the number of training images per class (k), mean with "
                 "sample-std error bars.",
}
STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em;
       color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
section { margin: 1.5em 0 2.5em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
caption { font-weight: bold; text-align: left; padding-bottom: 0.4em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
thead th { background: #f0f0f0; }
td { text-align: right; white-space: nowrap; }
tbody th { text-align: left; font-weight: normal; }
p.note, p.files, figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
"""


def _link(name, text=None):
    return f'<a href="{escape(quote(name))}">{escape(text or name)}</a>'


def index_html(out_dir, tables, figures=(), files=(), title="evaluate.py report"):
    """The page (a string) for the folder ``out_dir``: ``tables`` ({file stem: Table},
    in the order shown), ``figures`` (PNG file names) and ``files`` (other file
    names to link); names that do not exist in ``out_dir`` are left out."""
    out_dir = Path(out_dir)

    def exists(name):
        return (out_dir / name).is_file()

    figures = [name for name in figures if exists(name)]
    files = [name for name in files if exists(name)]
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{escape(title)}</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
             f"<h1>{escape(title)}</h1>",
             f"<p>{len(tables)} table{'s' * (len(tables) != 1)} and {len(figures)} "
             f"figure{'s' * (len(figures) != 1)}, recomputed from the run folders' saved "
             "predictions (and, unless --no-models, their saved models). Every table is "
             "also written as Markdown, LaTeX and CSV.</p>"]
    if tables:
        parts.append("<h2>Tables</h2>")
    for stem, table in tables.items():
        links = [_link(f"{stem}.{suffix}") for suffix in TABLE_FORMATS
                 if exists(f"{stem}.{suffix}")]
        parts += [f'<section id="{escape(stem)}">', table.html().rstrip("\n")]
        if links:
            parts.append(f'<p class="files">{" · ".join(links)}</p>')
        parts.append("</section>")
    if figures:
        parts.append("<h2>Figures</h2>")
    for name in figures:
        caption = CAPTIONS.get(name, name)
        parts += ["<figure>", f'<img src="{escape(quote(name))}" alt="{escape(name)}">',
                  f"<figcaption>{_link(name)}: {escape(caption)}</figcaption>"
                  if caption != name else f"<figcaption>{_link(name)}</figcaption>",
                  "</figure>"]
    if files:
        parts += ["<h2>Files</h2>", "<ul>", *(f"<li>{_link(name)}</li>" for name in files),
                  "</ul>"]
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


def write_index(out_dir, tables, figures=(), files=(), title="evaluate.py report"):
    """Write ``index_html`` as ``<out_dir>/index.html`` (last, after every file it
    shows); returns its file name."""
    path = Path(out_dir) / INDEX
    try:
        path.write_text(index_html(out_dir, tables, figures, files, title), encoding="utf-8")
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror}") from None
    return INDEX
