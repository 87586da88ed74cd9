"""``rsgeo demo``: the main job end to end on a synthetic city, with a report.

synth (training city, optional unlabelled scenes, a held-out pre/post pair) -> prepare (the
training city's pre- and post-event images with their nDSMs; with unlabelled scenes, RGB
chips of every training and unlabelled image for pretraining) -> pretrain (SelectiveMAE,
tiny ViT; start and end loss reported) -> finetune heights on few labels -> export ONNX ->
predict-height on the held-out pre and post images -> damage-map from the predicted heights
with the pre-event footprints -> evaluate heights (F1^HE, MAE, RMSE vs the true nDSM; each
building's predicted height vs its true one) and damage (building F1 vs the true grades).
The full demo (not ``--quick``) also fine-tunes a random-init model with the same budget and
reports its held-out F1^HE beside the pretrained one. Every step is the library function
its command calls.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

import numpy as np

from rsgeo.damage import damage_map
from rsgeo.data.prepare import prepare
from rsgeo.data.sources import SceneInput, from_synth_dir
from rsgeo.device import resolve_device
from rsgeo.errors import RsgeoError
from rsgeo.finetune import finetune
from rsgeo.footprints.heights import building_heights
from rsgeo.infer.export import export_onnx
from rsgeo.infer.predict import load_model, predict_height_file
from rsgeo.io.atomic import all_or_nothing, atomic_path, claim_folder, replacing
from rsgeo.jsonout import dumps
from rsgeo.metrics.counts import precision_recall_f1
from rsgeo.metrics.height import HeightAccumulator
from rsgeo.pretrain import pretrain
from rsgeo.synth import LANDCOVER, write_scenes
from rsgeo.viz import DAMAGE_COLORS, colorize_classes, colorize_heights

QUICK = dict(train_scenes=2, size=512, chip=64, unlabelled_scenes=0, pretrain_steps=100,
             pretrain_batch=16, finetune_steps=250, train_size=50, batch=8, test_size=384,
             baseline=False)
FULL = dict(train_scenes=4, size=768, chip=64, unlabelled_scenes=0, pretrain_steps=600,
            pretrain_batch=32, finetune_steps=800, train_size=200, batch=16, test_size=768,
            baseline=True)
# ``unlabelled_scenes``: synthetic scenes (other seeds) whose RGB only joins the training
# city's in pretraining (``out/pool``), as a user has more imagery than labels. The demo's
# own pretraining recipe, set explicitly (not the library's defaults): a fixed lr (the
# square-root rule below batch 256 gives 1.25e-5 at batch 16: in 100 steps the loss falls
# 11.9 % there, 22.8 % at 1e-3 and 22.6 % at 3e-4; benchmarks/pretrain_lr.py), a decoder
# much smaller than MAE's 512-wide, 8-deep one, 75 % masking. Tried on the full demo's
# data and budget (seed 0, README "rsgeo demo"): 128 px crops with 4 more unlabelled scenes,
# MAE or FusedMIM (RGB + DSM of unlabelled scenes) instead of SelectiveMAE, finetune
# head_steps=200 (LP-FT): every start still trailed random init (best: MAE at 128 px with
# LP-FT, held-out F1^HE 0.568 vs 0.625; FusedMIM 0.609 vs 0.640 without; FusedMIM with the
# few-label study's 1500 x 64 recipe, 50 labels: 0.437 vs 0.622), so the demo keeps this
# cheapest recipe.
PRETRAIN = dict(method="selectivemae", lr=1e-3, warmup=0.1, mask_ratio=0.75, rec_ratio=0.25,
                decoder_dim=128, decoder_depth=2, decoder_heads=4)
# Fine-tuning, the same for the pretrained and the random-init model.
FINETUNE = dict(lr=5e-4, head_features=32)


def demo_sizes(quick: bool, device: str) -> dict:
    """QUICK or FULL; on a GPU 4x the pretraining steps and batches, 2x the fine-tuning steps."""
    p = dict(QUICK if quick else FULL)
    if resolve_device(device).type == "cuda":  # a GPU: bigger defaults
        p.update(pretrain_steps=p["pretrain_steps"] * 4, finetune_steps=p["finetune_steps"] * 2,
                 pretrain_batch=p["pretrain_batch"] * 4, batch=p["batch"] * 4)
    return p


class Steps:
    """Runs named steps, timing each and logging ``[i/total] name: seconds``."""

    def __init__(self, log, total: int):
        self.log, self.records, self.total = log, [], total

    def __call__(self, name: str, fn):
        t0 = time.perf_counter()
        result = fn()
        dt = time.perf_counter() - t0
        self.records.append({"step": name, "seconds": round(dt, 2)})
        note = ""
        if isinstance(result, dict) and "best" in result:  # fine-tuning
            self.records[-1]["val_share"] = round(result["val_share"], 3)
            note = (f" ({result['step']} steps, {100 * result['val_share']:.0f} % validating, "
                    f"{result['threads']} torch threads)")
        self.log(f"[{len(self.records)}/{self.total}] {name}: {dt:.1f} s{note}")
        return result


def run_demo(out, quick: bool = False, device: str = "auto", seed: int = 0,
             overwrite: bool = False, log=print) -> dict:
    """Run every step into ``out``; returns the summary (step times, metrics, files).

    The full demo (not ``quick``) also fine-tunes a random-init model with the same budget
    (steps, batch, labels, seed and the FINETUNE recipe) and scores it on the same held-out city."""
    p = demo_sizes(quick, device)  # --device cuda without CUDA: refused before anything is written
    out = claim_folder(out, "demo", overwrite=overwrite)
    with replacing(out):  # --overwrite: the earlier demo folder comes back if this one fails
        return demo_steps(out, p, quick, device, seed, log)


def demo_steps(out: Path, p: dict, quick: bool, device: str, seed: int, log) -> dict:
    """Every step of :func:`run_demo` into the claimed folder ``out`` with the sizes ``p``
    (:func:`demo_sizes`); returns the summary."""
    step = Steps(log, total=11 if p["baseline"] else 9)
    test = step("synth city", lambda: synth_cities(out, p, seed))
    chips = out / "chips"
    step("prepare chips", lambda: prepare_chips(out, p, seed))
    pre, metrics = pretrain_step(step, out, p, device, seed, log)
    encoder = pre["encoders"]["encoder"]
    tune = dict(steps=p["finetune_steps"], batch_size=p["batch"], train_size=p["train_size"],
                device=device, seed=seed, log_every=10, **FINETUNE)
    ft = step("finetune heights", lambda: finetune(chips, "height", out / "finetune",
                                                   encoder=encoder, **tune))
    onnx = out / "height.onnx"
    step("export ONNX", lambda: export_onnx(ft["checkpoint"], onnx))
    runner = load_model(onnx, device=device)
    h_pre, h_post = out / "pred_pre_height.tif", out / "pred_post_height.tif"
    tiling = dict(tile=p["chip"] * 2, overlap=p["chip"] // 2)
    step("predict heights", lambda: [predict_height_file(img, onnx, dst, runner=runner, **tiling)
                                     for img, dst in ((test["pre_rgb.tif"], h_pre),
                                                      (test["post_rgb.tif"], h_post))])
    dmg = step("damage map", lambda: damage_map(
        h_pre, h_post, out / "damage.tif", buildings=test["footprints.gpkg"]))
    metrics.update(step("evaluate", lambda: evaluate_demo(
        h_pre, test["pre_ndsm.tif"], out / "damage.gpkg", test["footprints.gpkg"], dmg,
        out / "building_heights.gpkg")))
    if p["baseline"]:
        metrics.update(baseline_step(step, out, test, tune, tiling, device))
        log(f"      held-out F1^HE: pretrained {metrics['height_f1he_1']:.3f}, "
            f"random init {metrics['baseline_height_f1he_1']:.3f} (same fine-tuning budget "
            f"and recipe)")
    step("report", lambda: write_report(out, test, h_pre, metrics, step.records))
    files = {"report": str(out / "report.html"), "report_png": str(out / "report.png"),
             "heights_pre": str(h_pre), "heights_post": str(h_post),
             "damage": str(out / "damage.tif"), "damage_buildings": str(out / "damage.gpkg"),
             "building_heights": str(out / "building_heights.gpkg"),
             "model": str(onnx), "encoder": encoder, "checkpoint": ft["checkpoint"],
             "chips": str(chips)}
    summary = {"steps": step.records,
               "total_seconds": round(sum(s["seconds"] for s in step.records), 1),
               "metrics": metrics, "files": files, "quick": quick}
    write_summary(out, summary)
    return summary


def write_summary(out: Path, summary: dict) -> Path:
    """``out/summary.json``, published only once complete (:func:`atomic_path`): a failed
    or stopped write leaves no torn file behind."""
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(dumps(summary, indent=2))
    return out / "summary.json"


def pretrain_step(step: Steps, out: Path, p: dict, device: str, seed: int, log) -> tuple[dict, dict]:
    """Pretrain on ``out/pool`` (or the labelled chips when there are no unlabelled scenes);
    returns the pretraining summary and the metrics it adds (loss at start and end, lr)."""
    opts = {k: v for k, v in PRETRAIN.items() if k != "method"}
    method = PRETRAIN["method"]
    data = out / "pool" if p["unlabelled_scenes"] else out / "chips"
    pre = step(f"pretrain {method}", lambda: pretrain(
        data, method, "vit-tiny-4", out / "pretrain", steps=p["pretrain_steps"],
        batch_size=p["pretrain_batch"], device=device, seed=seed, log_every=1, **opts))
    curve = loss_curve(Path(pre["run_dir"]) / "metrics.jsonl")
    a, b = curve["end_steps"]
    log(f"      pretraining loss {curve['start']:.3f} (step {curve['start_step']}) -> "
        f"{curve['end']:.3f} (mean of steps {a}-{b}{loss_note()}) "
        f"(lr {pre['lr']:.2g}, {pre['step']} steps of {p['pretrain_batch']} chips)")
    return pre, {"pretrain_loss_start": curve["start"], "pretrain_loss_end": curve["end"],
                 "pretrain_loss_start_step": curve["start_step"],
                 "pretrain_loss_end_steps": f"{a}-{b}", "pretrain_lr": pre["lr"]}


def baseline_step(step: Steps, out: Path, test: dict, tune: dict, tiling: dict,
                  device: str) -> dict:
    """Fine-tune a random-init model with ``tune`` (the pretrained model's budget and
    recipe) and score its held-out pre-event heights: ``baseline_height_*`` metrics."""
    base = step("finetune random init", lambda: finetune(
        out / "chips", "height", out / "baseline", encoder="random", backbone="vit-tiny-4",
        **tune))
    h_base = out / "baseline_pre_height.tif"
    step("predict baseline heights", lambda: predict_height_file(
        test["pre_rgb.tif"], base["checkpoint"], h_base, device=device, **tiling))
    hb = height_metrics(h_base, test["pre_ndsm.tif"])
    return {"baseline_height_f1he_1": hb["f1he_1"], "baseline_height_mae": hb["mae"]}


def loss_note() -> str:
    """``"; 1.0 = each patch's mean colour"`` for a normalised-pixel loss (MAE, SelectiveMAE
    with ``norm_pix_loss``: predicting every target patch's mean scores 1.0), else ``""``."""
    normalised = PRETRAIN["method"] in ("mae", "selectivemae") and PRETRAIN.get("norm_pix_loss", True)
    return "; 1.0 = each patch's mean colour" if normalised else ""


def loss_curve(metrics_jsonl: Path, tail: float = 0.05) -> dict:
    """Pretraining loss at the start and the end of a run from ``RUN/metrics.jsonl``.

    ``start``: the first record's loss (with ``log_every=1``, as the demo pretrains, step 1:
    the untrained model's loss); ``end``: the mean of the last ``tail`` share of the records
    (at least one; a single step's loss is a noisy end). ``start_step``, ``end_steps``
    (first, last) say which steps they are."""
    recs = [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines()
            if line.strip()]
    recs = [r for r in recs if "loss" in r]
    if not recs:
        raise RsgeoError(f"{metrics_jsonl}: no loss was logged")
    k = max(1, int(round(tail * len(recs))))
    return {"start": float(recs[0]["loss"]), "end": float(np.mean([r["loss"] for r in recs[-k:]])),
            "start_step": int(recs[0].get("step", 0)),
            "end_steps": (int(recs[-k].get("step", 0)), int(recs[-1].get("step", 0)))}


def training_scenes(city: Path) -> list[SceneInput]:
    """The training city's scenes before the event and, as a second source (``city-post``),
    after it: post-event RGB with the post-event nDSM. The damage step predicts heights on
    post-event images, so the height model must see rubble (a model trained on pre-event
    images only learns to give any bounded patch, rubble included, a building's height)."""
    pre = from_synth_dir(city)
    post = [SceneInput(rgb=s.post_rgb, ndsm=s.ndsm.with_name(s.ndsm.name.replace("_pre_", "_post_")),
                       source=f"{s.source}-post") for s in pre]
    return pre + post


def unlabelled_images(folders: list[Path]) -> list[SceneInput]:
    """Every pre- and post-event RGB image of the synth ``folders`` as an image-only scene
    (no heights: what pretraining reads)."""
    return [SceneInput(rgb=img, source=folder.name + suffix) for folder in folders
            for s in from_synth_dir(folder) for suffix, img in (("", s.rgb), ("-post", s.post_rgb))]


def prepare_chips(out: Path, p: dict, seed: int) -> None:
    """``out/chips`` (the training city, pre and post, with nDSM and land cover) and, with
    unlabelled scenes, ``out/pool``: RGB chips of the training city and the unlabelled
    scenes for pretraining."""
    prepare(training_scenes(out / "city"), out / "chips", size=p["chip"],
            classes=dict(LANDCOVER), seed=seed)
    if p["unlabelled_scenes"]:
        prepare(unlabelled_images([out / "city", out / "unlabelled"]), out / "pool",
                size=p["chip"], seed=seed)


def synth_cities(out: Path, p: dict, seed: int) -> dict:
    """The training city (``out/city``), unlabelled scenes (``out/unlabelled``, when
    ``p["unlabelled_scenes"]``) and a held-out pre/post pair; returns the held-out files by
    suffix (``pre_rgb.tif``, ``post_rgb.tif``, ``pre_ndsm.tif``, ...)."""
    write_scenes(out / "city", size=p["size"], scenes=p["train_scenes"], seed=seed)
    if p["unlabelled_scenes"]:
        write_scenes(out / "unlabelled", size=p["size"], scenes=p["unlabelled_scenes"],
                     seed=seed + 200, prefix="unlabelled", footprints=False)
    write_scenes(out / "heldout", size=p["test_size"], scenes=1, seed=seed + 100, prefix="test")
    return {k: out / "heldout" / f"test_{seed + 100:03d}_{k}" for k in (
        "pre_rgb.tif", "post_rgb.tif", "pre_ndsm.tif", "post_ndsm.tif", "footprints.gpkg")}


def height_metrics(pred_h, true_h) -> dict:
    """:class:`HeightAccumulator` metrics of a predicted vs a true nDSM (m, nodata -9999)."""
    import rasterio

    acc = HeightAccumulator()
    with rasterio.open(pred_h) as a, rasterio.open(true_h) as b:
        pa, ta = a.read(1), b.read(1)
    acc.update(pa, ta, valid=(pa != -9999) & (ta != -9999))
    return acc.result()


def evaluate_demo(pred_h, true_h, damage_gpkg, truth_gpkg, dmg_summary, heights_gpkg) -> dict:
    """Height metrics of the predicted pre-event nDSM, each building's predicted height
    (``building-heights`` on the true footprints into ``heights_gpkg``, 95th percentile
    against the true roof height) and building-level damage F1."""
    import geopandas as gpd

    h = height_metrics(pred_h, true_h)
    b = building_heights(pred_h, truth_gpkg, heights_gpkg, prefix="predicted_",
                         compare="height_m")["compare"]["p95"]
    pred = gpd.read_file(damage_gpkg)
    truth = gpd.read_file(truth_gpkg)

    def f1(p, t):
        return precision_recall_f1(int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum()))[2]

    g = pred["grade"].to_numpy()
    d = truth["damage"].to_numpy()
    return {"height_mae": h["mae"], "height_rmse": h["rmse"], "height_f1he_1": h["f1he_1"],
            "height_delta1": h["delta1"],
            "damaged_building_f1": f1(np.isin(g, ["major", "destroyed"]), np.isin(d, ["major", "destroyed"])),
            "destroyed_building_f1": f1(g == "destroyed", d == "destroyed"),
            "building_height_mae": b.get("mae"), "building_height_bias": b.get("bias"),
            "buildings": int(len(truth)), "lost_volume_m3": dmg_summary["lost_volume_m3"]}


def write_report(out: Path, test: dict, pred_h: Path, metrics: dict, steps: list) -> None:
    """report.png (pre RGB, true vs predicted nDSM, damage classes with footprints) + report.html."""
    import geopandas as gpd
    import rasterio
    from PIL import Image, ImageDraw

    with rasterio.open(test["pre_rgb.tif"]) as ds:
        rgb = ds.read().transpose(1, 2, 0)
        transform = ds.transform
    true_h = rasterio.open(test["pre_ndsm.tif"]).read(1)
    ph = rasterio.open(pred_h).read(1)
    cls = rasterio.open(out / "damage.tif").read(1)
    vmax = max(float(np.percentile(true_h, 99.5)), 1.0)
    dmg = np.where(cls[..., None] > 1, colorize_classes(cls, DAMAGE_COLORS),
                   (rgb * 0.5).astype(np.uint8))
    panels = [rgb, colorize_heights(true_h, vmax), colorize_heights(np.where(ph == -9999, 0, ph), vmax), dmg]
    h, w = rgb.shape[:2]
    sheet = Image.new("RGB", (4 * w + 30, h + 24), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (panel, title) in enumerate(zip(panels, ("pre-event RGB", "true nDSM",
                                                    "predicted nDSM", "damage (predicted)"))):
        sheet.paste(Image.fromarray(panel), (i * (w + 10), 24))
        draw.text((i * (w + 10) + 4, 4), title, fill="black")
    inv = ~transform
    for geom in gpd.read_file(test["footprints.gpkg"]).geometry:
        pts = [(3 * (w + 10) + (inv * xy)[0], 24 + (inv * xy)[1]) for xy in
               getattr(geom, "exterior", geom.convex_hull.exterior).coords]
        draw.line(pts, fill=(255, 255, 255), width=1)
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4g}</td></tr>" if isinstance(v, float)
                   else f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in metrics.items())
    srows = "".join(f"<tr><td>{s['step']}</td><td>{s['seconds']:.1f} s</td></tr>" for s in steps)
    publish_report(out, sheet, (
        "<!doctype html><html><head><meta charset='utf-8'><title>rsgeo demo</title></head><body>"
        "<h1>rsgeo demo: heights and damage on a held-out synthetic city</h1>"
        "<img src='report.png' alt='pre RGB, true and predicted nDSM, damage map'>"
        f"<h2>Metrics</h2><table>{rows}</table>{init_section(metrics)}"
        f"<h2>Steps</h2><table>{srows}</table>"
        "</body></html>\n"))


def publish_report(out: Path, sheet, page: str) -> None:
    """``out/report.png`` (the PIL image ``sheet``) and ``out/report.html`` (``page``),
    published together once both are complete (:func:`all_or_nothing`), or neither."""
    with all_or_nothing():
        with atomic_path(out / "report.png") as tmp:
            sheet.save(tmp, format="PNG")
        with atomic_path(out / "report.html") as tmp:
            tmp.write_text(page)


def init_section(m: dict) -> str:
    """HTML: the pretraining loss at start and end and, in the full demo, the held-out
    F1^HE and MAE of the pretrained model beside a random-init one tuned with the same budget."""
    method = PRETRAIN["method"]
    text = (f"<h2>Pretraining and initialisation</h2><p>pretraining loss ({method}): "
            f"start {m['pretrain_loss_start']:.3f}, end {m['pretrain_loss_end']:.3f} "
            f"(step {m['pretrain_loss_start_step']}; mean of steps {m['pretrain_loss_end_steps']}; "
            f"{loss_note()}; lr {m['pretrain_lr']:.2g})</p>")
    if "baseline_height_f1he_1" not in m:
        return text + "<p>random-init baseline: only in the full demo (without --quick)</p>"
    return text + (
        "<table><tr><th>initialisation (same fine-tuning budget and recipe)</th><th>F1^HE</th>"
        "<th>MAE (m)</th></tr>"
        f"<tr><td>pretrained ({method})</td><td>{m['height_f1he_1']:.3f}</td>"
        f"<td>{m['height_mae']:.2f}</td></tr>"
        f"<tr><td>random init</td><td>{m['baseline_height_f1he_1']:.3f}</td>"
        f"<td>{m['baseline_height_mae']:.2f}</td></tr></table>")
