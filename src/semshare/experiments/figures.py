"""The paper's qualitative figures from any run on any dataset with image files (issue 27).

Figure 3: image queries, each with its top-5 retrieved sentences, each marked correct (it shares a label
with the query image) or not. Figure 4: sentence queries, each with its top-3 retrieved images, the query's
own image marked. Queries and galleries come from the test split (its own gallery, as the tables are
scored); queries are drawn by seed or given (image rows, sentences). Each figure is a PNG and a
self-contained HTML page (thumbnails inlined), both showing what the model read in each query (when the run
has a label classifier) and the labels of every hit.
"""

from __future__ import annotations

import base64
import html
import io
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from semshare.errors import SemshareError
from semshare.fileio import atomic_write_bytes, atomic_write_text

THUMB = 160  # pixels, the longer side of an inlined thumbnail


@dataclass
class Hit:
    rank: int
    row: int
    text: str = ""
    labels: list[str] = field(default_factory=list)
    correct: bool = False  # shares a label with the query (Figure 3) / is the query's own image (Figure 4)


@dataclass
class Query:
    row: int  # the query image's row (Figure 3) or the row the sentence belongs to (-1 for a typed one)
    text: str = ""
    labels: list[str] = field(default_factory=list)
    reading: str = ""
    hits: list[Hit] = field(default_factory=list)


def _reading(run, text: str | None = None, row: int | None = None) -> str:
    try:
        found = run.read_text(text) if text is not None else run.read_image(row)
    except SemshareError:  # a run without a label classifier reads nothing
        return ""
    read = ", ".join(f"{name} {p:.2f}" for name, p in found.labels) or "no label above 0.10"
    return f"read as: {read}" + (f" (weak: {found.why})" if found.weak else "")


def _labels(dataset, row: int) -> list[str]:
    return [dataset.label_names[c] for c in np.flatnonzero(dataset.labels[row])]


def label_line(labels: list[str], width: int) -> str:
    """Label names joined up to `width` characters, whole names only ("+2 more" for the rest): a name cut in
    the middle ("cell phon") reads as another word."""
    shown: list[str] = []
    for name in labels:
        rest = len(labels) - len(shown) - 1
        candidate = ", ".join([*shown, name]) + (f" +{rest} more" if rest else "")
        if shown and len(candidate) > width:
            return ", ".join(shown) + f" +{len(labels) - len(shown)} more"
        shown.append(name)
    return ", ".join(shown)


def image_queries(run, rows: list[int], k: int = 5) -> list[Query]:
    """Figure 3: each image row against the test split's sentences."""
    dataset = run.dataset
    gallery = dataset.split("test")
    items = dataset.text_items(gallery, run.text_source)
    image_emb = run.encode_images(rows=list(rows))
    _, txt = run.embed(gallery, sides=("text",))
    order = {int(i): p for p, i in enumerate(txt.ids)}
    gallery_emb = np.asarray(txt.emb, dtype=np.float32)[[order[int(i)] for i in items.item_ids]]
    gallery_emb /= np.maximum(np.linalg.norm(gallery_emb, axis=1, keepdims=True), 1e-12)
    queries = []
    for row, emb in zip(rows, image_emb):
        query_labels = set(np.flatnonzero(dataset.labels[row]))
        best = np.argsort(-(gallery_emb @ emb), kind="stable")[:k]
        hits = [Hit(rank + 1, int(items.rows[t]), _sentence(items.texts[t]), _labels(dataset, int(items.rows[t])),
                    bool(query_labels & set(np.flatnonzero(dataset.labels[int(items.rows[t])]))))
                for rank, t in enumerate(best)]
        queries.append(Query(int(row), "", _labels(dataset, row), _reading(run, row=int(row)), hits))
    return queries


def sentence_queries(run, sentences: list[tuple[int, str]], k: int = 3) -> list[Query]:
    """Figure 4: each (row, sentence) against the test split's images; row -1: a typed sentence."""
    dataset = run.dataset
    gallery = dataset.split("test")
    images = run.encode_images(rows=gallery)
    queries = []
    for row, text in sentences:
        emb = run.encode_texts([text])[0]
        best = np.argsort(-(images @ emb), kind="stable")[:k]
        hits = [Hit(rank + 1, int(gallery[g]), "", _labels(dataset, int(gallery[g])), int(gallery[g]) == row)
                for rank, g in enumerate(best)]
        queries.append(Query(row, text, _labels(dataset, row) if row >= 0 else [], _reading(run, text=text), hits))
    return queries


def _sentence(text) -> str:
    return text if isinstance(text, str) else " ".join(text)


def pick_queries(run, count: int, seed: int, image_rows: list[int] | None = None,
                 texts: list[str] | None = None) -> tuple[list[int], list[tuple[int, str]]]:
    """(image rows for Figure 3, (row, sentence) pairs for Figure 4): given, else drawn from the test split
    (seeded; a drawn sentence is the first caption of a drawn row, so its own image is in the gallery)."""
    dataset = run.dataset
    test = dataset.split("test")
    if not len(test):
        raise SemshareError(f"{dataset.root}: the figures draw queries and galleries from the test split; it is empty")
    rng = np.random.default_rng(seed)
    drawn = [int(r) for r in rng.choice(test, size=min(count, len(test)), replace=False)]
    rows = list(image_rows) if image_rows else drawn
    for row in rows:
        if not 0 <= row < dataset.num_items:
            raise SemshareError(f"--image-ids: expected rows of {dataset.name} (0..{dataset.num_items - 1}), found {row}")
    sentences = [(-1, t) for t in texts] if texts else [(r, _sentence(dataset.captions[r][0])) for r in drawn]
    return rows, sentences


# ---- drawing ----------------------------------------------------------------------------------------------

def _image(dataset, row: int):
    from PIL import Image

    path = dataset.image_files[row]
    if not path:
        return None
    try:
        image = Image.open(path).convert("RGB")
    except OSError:
        return None
    image.thumbnail((THUMB, THUMB))
    return image


def _data_uri(image) -> str:
    if image is None:
        return ""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def write_figure3(run, queries: list[Query], out_dir: Path) -> tuple[Path, Path]:
    from semshare.evaluation.plots import _pyplot

    plt, dataset = _pyplot(), run.dataset
    fig, axes = plt.subplots(len(queries), 2, figsize=(12, 2.6 * len(queries)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 4]})
    for (left, right), query in zip(axes, queries):
        image = _image(dataset, query.row)
        if image is not None:
            left.imshow(image)
        left.set_title(textwrap.fill(f"image {query.row}: {', '.join(query.labels)}", 34), fontsize=7)
        left.axis("off")
        right.axis("off")
        right.text(0, 1, textwrap.fill(query.reading, 150), fontsize=7, va="top", color="#444")
        for i, hit in enumerate(query.hits):
            mark = "✓" if hit.correct else "✗"
            right.text(0, 0.82 - 0.17 * i, f"{mark} {hit.rank}. {hit.text[:110]}  [{', '.join(hit.labels)}]",
                       fontsize=7.5, va="top", color="#1a7f37" if hit.correct else "#b00020")
    fig.suptitle("Figure 3: image queries, top-5 sentences (✓: the sentence's image shares at least one label with "
                 "the query image; ✗: it shares none)", fontsize=9)
    fig.tight_layout()
    png = out_dir / "figure3.png"
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=90, format="png")
    plt.close(fig)
    atomic_write_bytes(png, buffer.getvalue())
    rows = []
    for query in queries:
        hits = "".join(f"<li class=\"{'ok' if h.correct else 'no'}\">{'✓' if h.correct else '✗'} {html.escape(h.text)} "
                       f"<span class=labels>{html.escape(', '.join(h.labels))}</span></li>" for h in query.hits)
        rows.append(f"<tr><td><img src=\"{_data_uri(_image(dataset, query.row))}\" alt=\"image {query.row}\"><br>"
                    f"image {query.row}<br><span class=labels>{html.escape(', '.join(query.labels))}</span></td>"
                    f"<td><div class=reading>{html.escape(query.reading)}</div><ol>{hits}</ol></td></tr>")
    page = _page("Figure 3: image queries, top-5 retrieved sentences", "✓: the sentence's image shares a label "
                 "with the query image", "".join(rows))
    atomic_write_text(out_dir / "figure3.html", page)
    return png, out_dir / "figure3.html"


def write_figure4(run, queries: list[Query], out_dir: Path) -> tuple[Path, Path]:
    from semshare.evaluation.plots import _pyplot

    plt, dataset = _pyplot(), run.dataset
    k = max(len(q.hits) for q in queries)
    fig, axes = plt.subplots(len(queries), k + 1, figsize=(3 * (k + 1), 2.6 * len(queries)), squeeze=False)
    for row_axes, query in zip(axes, queries):
        text_axis = row_axes[0]
        text_axis.axis("off")
        text_axis.text(0, 1, f"\"{textwrap.fill(query.text, 40)}\"\n\n{textwrap.fill(query.reading, 44)}", fontsize=7,
                       va="top")
        for axis, hit in zip(row_axes[1:], query.hits):
            image = _image(dataset, hit.row)
            if image is not None:
                axis.imshow(image)
            axis.set_xticks([])
            axis.set_yticks([])
            colour = "#1a7f37" if hit.correct else "#cccccc"
            for spine in axis.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(4 if hit.correct else 1)
            own = " (its own image)" if hit.correct else ""
            axis.set_title(f"{hit.rank}. image {hit.row}{own}\n{label_line(hit.labels, 48)}", fontsize=6.5)
    fig.suptitle("Figure 4: sentence queries, top-3 images (green frame: the query's own image)", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=90, format="png")
    plt.close(fig)
    png = out_dir / "figure4.png"
    atomic_write_bytes(png, buffer.getvalue())
    rows = []
    for query in queries:
        cells = "".join(f"<td class=\"{'own' if h.correct else ''}\"><img src=\"{_data_uri(_image(dataset, h.row))}\" "
                        f"alt=\"image {h.row}\"><br>{h.rank}. image {h.row}{' (its own image)' if h.correct else ''}"
                        f"<br><span class=labels>{html.escape(', '.join(h.labels))}</span></td>" for h in query.hits)
        rows.append(f"<tr><td class=query>“{html.escape(query.text)}”<div class=reading>{html.escape(query.reading)}"
                    f"</div></td>{cells}</tr>")
    page = _page("Figure 4: sentence queries, top-3 retrieved images", "framed: the query's own image",
                 "".join(rows))
    atomic_write_text(out_dir / "figure4.html", page)
    return png, out_dir / "figure4.html"


def _page(title: str, legend: str, rows: str) -> str:
    return ("<!doctype html><html lang=en><head><meta charset=utf-8><title>" + html.escape(title) + "</title><style>"
            "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}td{vertical-align:top;padding:.4rem;"
            "border-bottom:1px solid #ddd}img{max-width:160px;max-height:160px}.labels{color:#555;font-size:.85em}"
            ".reading{color:#444;font-size:.85em;margin-bottom:.3rem}.ok{color:#1a7f37}.no{color:#b00020}"
            "td.own img{outline:4px solid #1a7f37}td.query{max-width:18rem}</style></head><body><h1>"
            + html.escape(title) + "</h1><p>" + html.escape(legend) + "</p><table>" + rows + "</table></body></html>\n")


def make_figures(run, out_dir: str | Path, count: int = 4, seed: int = 0, image_rows: list[int] | None = None,
                 texts: list[str] | None = None) -> list[Path]:
    """Figures 3 and 4 (PNG + HTML each) into `out_dir`; `run` a search.run.Run with its dataset."""
    if run.dataset is None or not any(run.dataset.image_files):
        raise SemshareError("the figures show images: the run's dataset needs image files (image_files.txt)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, sentences = pick_queries(run, count, seed, image_rows, texts)
    return [*write_figure3(run, image_queries(run, rows), out_dir),
            *write_figure4(run, sentence_queries(run, sentences), out_dir)]
