"""`semshare extract` speed on the same images, side by side, and the bf16 features against fp32.

  python -m benchmarks.extract_speed speed [--images 48 --before-rev REV --out docs/extract_speed.json]
  python -m benchmarks.extract_speed bf16-check [--images 1000 --out docs/extract_bf16.json]

The images: JPEGs of COCO size (640 x 480) cut, flipped and rescaled from the real photos that ship with
scikit-learn and matplotlib (china.jpg, flower.jpg, grace_hopper.jpg), each with ~9 boxes (COCO's mean) as
VOC XML. `speed` runs, each in its own process on the same folder: the extraction code of `--before-rev`
(today's rate), this tree's extraction in fp32 and bf16 with 0/1 decoding workers, and the backbone alone on
the same images' crops decoded beforehand (the ceiling). `bf16-check`: labelled images (coloured shapes of 10
classes pasted on those photos, pascal-sized by default), extracted in fp32 and in bf16; mAP@all of
image-to-image label retrieval (200 query images against the rest, cosine of the global and of the
mean region feature) under each, and the cosine between the two precisions' features.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from benchmarks.revisions import run_json, source_at
SHAPES = [(color, shape) for color in ("red", "green", "blue", "yellow", "white") for shape in ("box", "disc")]
COLORS = {"red": (220, 30, 30), "green": (30, 190, 40), "blue": (30, 40, 220), "yellow": (230, 220, 40),
          "white": (245, 245, 245)}


def real_photos() -> list:
    from PIL import Image
    import matplotlib
    import sklearn.datasets

    folders = [Path(sklearn.datasets.__file__).parent / "images", Path(matplotlib.get_data_path()) / "sample_data"]
    paths = [folders[0] / "china.jpg", folders[0] / "flower.jpg", folders[1] / "grace_hopper.jpg"]
    return [Image.open(p).convert("RGB") for p in paths]


def make_images(folder: Path, count: int, seed: int, labelled: bool) -> Path:
    """COCO-sized JPEGs from the real photos; labelled: 1-3 pasted shapes (labels, boxes), else ~9 random boxes."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    photos = real_photos()
    (folder / "xml").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        photo = photos[int(rng.integers(len(photos)))]
        scale = rng.uniform(0.6, 1.0)
        w, h = int(photo.width * scale), int(photo.height * scale)
        x, y = int(rng.integers(0, photo.width - w + 1)), int(rng.integers(0, photo.height - h + 1))
        image = photo.crop((x, y, x + w, y + h)).resize((640, 480), Image.BILINEAR)
        if rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        objects, names = [], []
        if labelled:
            draw = ImageDraw.Draw(image)
            for k in rng.choice(len(SHAPES), size=int(rng.integers(1, 4)), replace=False):
                color, shape = SHAPES[k]
                bw, bh = int(rng.integers(80, 260)), int(rng.integers(80, 220))
                x0, y0 = int(rng.integers(0, 640 - bw)), int(rng.integers(0, 480 - bh))
                (draw.rectangle if shape == "box" else draw.ellipse)([x0, y0, x0 + bw, y0 + bh], fill=COLORS[color])
                names.append(f"{color}_{shape}")
                objects.append((x0, y0, x0 + bw, y0 + bh, names[-1]))
        else:
            for _ in range(int(rng.integers(5, 14))):  # COCO: ~9 annotated boxes per image
                bw, bh = int(rng.integers(20, 400)), int(rng.integers(20, 300))
                x0, y0 = int(rng.integers(0, 640 - bw)), int(rng.integers(0, 480 - bh))
                objects.append((x0, y0, x0 + bw, y0 + bh, "thing"))
            names = ["thing"]
        image.save(folder / f"img{i:05d}.jpg", quality=90)
        (folder / "xml" / f"img{i:05d}.xml").write_text("<annotation>" + "".join(
            f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax>"
            f"</bndbox></object>" for a, b, c, d, n in objects) + "</annotation>")
        lines.append(json.dumps({"file_name": f"img{i:05d}.jpg", "captions": [" and ".join(names)],
                                 "labels": sorted(set(names))}))
    (folder / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def run_extract(images: Path, out: Path, precision: str, workers: int) -> float:
    """One extraction (called in a subprocess whose PYTHONPATH picks the code under test)."""
    import inspect

    from semshare.features.annotations.voc import VocInputs
    from semshare.features.extract import ExtractConfig, ExtractRequest, extract_dataset

    fields = inspect.signature(ExtractConfig).parameters
    cfg = ExtractConfig(**({"precision": precision} if "precision" in fields else {}))
    extra = {"workers": workers} if "workers" in inspect.signature(extract_dataset).parameters else {}
    started = time.perf_counter()  # from the call on: the interpreter and torch imports are not the command's
    extract_dataset(ExtractRequest(images, images / "captions.jsonl", out, annotations=VocInputs(voc_dir=images / "xml")), cfg, progress=False, **extra)
    return time.perf_counter() - started


def backbone_alone(images: Path, precision: str, repeats: int = 2) -> dict:
    """The ceiling: the same whole images and crops, decoded and preprocessed beforehand, through the backbone
    in the same batches (each chunk of 32 images: its whole images, then its crops)."""
    import torch

    from semshare.features.annotations.voc import VocInputs
    from semshare.features.extract import ExtractConfig, _Encoder, _ImageInputs, read_items

    items, names, _ = read_items(images / "captions.jsonl", annotations=VocInputs(voc_dir=images / "xml"))
    encoder = _Encoder(ExtractConfig(precision=precision))
    inputs = _ImageInputs(items, images, True, 36, {n: i for i, n in enumerate(names)}, encoder.image_size)
    prepared = [inputs[i] for i in range(len(inputs))]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for begin in range(0, len(prepared), 32):
            chunk = prepared[begin : begin + 32]
            encoder(torch.stack([p.whole for p in chunk]))
            encoder(torch.cat([p.crops for p in chunk]))  # in the encoder's own batches, as extraction runs it
        times.append(time.perf_counter() - started)
    return {"seconds": float(np.median(times)), "crops": int(sum(len(p.crops) for p in prepared))}


def speed(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = make_images(tmp / "images", args.images, seed=0, labelled=False)
        before = source_at(args.before_rev, tmp / "before")
        variants = [("before", before, "fp32", 0)] + [
            (f"now {precision}, {workers} worker{'s' if workers != 1 else ''}", ROOT, precision, workers)
            for precision in ("fp32", "bf16") for workers in (0, 1)]
        results = {"images": args.images, "before_rev": args.before_rev, "threads": os.cpu_count(), "runs": []}
        for repeat in range(args.repeats):
            for name, root, precision, workers in variants:
                out = tmp / f"out-{repeat}-{len(results['runs'])}"
                seconds = run_json(root, __file__, "_extract", str(images), str(out), precision, str(workers))["seconds"]
                results["runs"].append({"variant": name, "seconds": seconds})
                print(f"{name}: {args.images / seconds:.2f} images/s", flush=True)
        for precision in ("fp32", "bf16"):
            alone = run_json(ROOT, __file__, "_alone", str(images), precision)
            results["runs"].append({"variant": f"backbone alone {precision}", **alone})
            print(f"backbone alone {precision}: {args.images / alone['seconds']:.2f} images/s ({alone['crops']} crops)")
    summary = {}
    for run in results["runs"]:
        summary.setdefault(run["variant"], []).append(run["seconds"])
    results["images_per_s"] = {k: args.images / float(np.median(v)) for k, v in summary.items()}
    rate = results["images_per_s"]
    for precision in ("fp32", "bf16"):
        best = max(rate[f"now {precision}, 0 workers"], rate[f"now {precision}, 1 worker"])
        results[f"{precision}_vs_before"] = best / rate["before"]
        results[f"{precision}_vs_backbone_alone"] = best / rate[f"backbone alone {precision}"]
    return results


def bf16_check(args: argparse.Namespace) -> dict:
    from semshare.data.dataset import open_dataset
    from semshare.evaluation.retrieval import MetricSpec, evaluate_direction
    from semshare.features.annotations.voc import VocInputs
    from semshare.features.extract import ExtractConfig, ExtractRequest, extract_dataset

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = make_images(tmp / "images", args.images, seed=1, labelled=True)
        features, seconds = {}, {}
        for precision in ("fp32", "bf16"):
            started = time.perf_counter()
            folder = extract_dataset(ExtractRequest(images, images / "captions.jsonl", tmp / precision, annotations=VocInputs(voc_dir=images / "xml")), ExtractConfig(precision=precision),
                                     progress=False, workers=1)
            seconds[precision] = time.perf_counter() - started
            data = open_dataset(folder)
            mask = np.asarray(data.region_mask).astype(np.float32)[..., None]
            regions = (np.asarray(data.regions, dtype=np.float32) * mask).sum(1) / mask.sum(1)
            features[precision] = {"global": np.asarray(data.image, dtype=np.float32), "mean region": regions,
                                   "labels": np.asarray(data.labels)}
    results = {"images": args.images, "seconds": seconds, "mAP@all": {}, "cosine_fp32_bf16": {}}
    split = min(200, args.images // 5)
    queries, gallery = slice(0, split), slice(split, None)
    for kind in ("global", "mean region"):
        for precision in ("fp32", "bf16"):
            f, labels = features[precision][kind], features[precision]["labels"]
            result = evaluate_direction(f[queries], f[gallery], labels[queries], labels[gallery],
                                        MetricSpec(ndcg_k=(), map_k=(None,)))
            results["mAP@all"][f"{kind} {precision}"] = 100 * result.means()["mAP@all"]
        a, b = features["fp32"][kind], features["bf16"][kind]
        cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        results["cosine_fp32_bf16"][kind] = {"median": float(np.median(cosine)), "min": float(cosine.min())}
        results[f"{kind} mAP difference (points)"] = results["mAP@all"][f"{kind} bf16"] - results["mAP@all"][f"{kind} fp32"]
    return results


def main() -> None:
    if sys.argv[1:2] == ["_extract"]:
        images, out, precision, workers = sys.argv[2:6]
        print(json.dumps({"seconds": run_extract(Path(images), Path(out), precision, int(workers))}))
        return
    if sys.argv[1:2] == ["_alone"]:
        print(json.dumps(backbone_alone(Path(sys.argv[2]), sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["speed", "bf16-check"])
    parser.add_argument("--images", type=int, default=None, help="default 48 (speed), 1000 (bf16-check)")
    parser.add_argument("--before-rev", default="10c95ea", help="the extraction code measured as 'before'")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.images = args.images or (48 if args.mode == "speed" else 1000)
    results = speed(args) if args.mode == "speed" else bf16_check(args)
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
