"""``darknet-kd pipeline EXPERIMENT.ini``: GAN + teacher distillation, end to end.

Stages (each calls an existing command's Python entry point; each writes a marker
``WORK/stages/<stage>.json`` when it completes and is skipped on the next run when its
marker and outputs exist, so a killed pipeline resumes — training stages continue from
their ``--resume`` checkpoint, translation from the images already written):

1. ``drivesim``  — ``darknet-kd drivesim WORK/data --preset P --seed S`` (or a user's
   dataset named in ``[data]``);
2. ``gan``       — ``domain-transfer train --source source.data --target <labelled,unlabelled>``,
   its projected discriminator on the frozen backbone of a source-trained detector
   (``[gan] detector``: ``source`` trains one first, stage ``train:source`` — the student cfg
   on the source training images; or a user's own ``.weights`` with ``detector_cfg``; or
   ``random``, a seeded random frozen backbone);
3. ``translate`` — ``domain-transfer translate`` of the source training list;
4. ``teacher``   — ``darknet-kd train`` of the teacher cfg on source + translated +
   labelled target (``[teacher] translated = no``: without the translations; valid: target val);
5. ``pseudo``    — the threshold with the best F1 on target val
   (:func:`darknet_kd.train.pseudo.sweep_threshold`), ``darknet-kd pseudo-label`` of the
   unlabelled target images, and the audit against their hidden labels (printed);
6. ``student:<row>`` — one per table row, ``darknet-kd train`` or ``darknet-kd distill``
   with the row's data and KD loss, then mAP@0.5 on target val, source test, target test
   and both tests together (``all``);
7. ``table``     — ``WORK/table.md`` and ``WORK/table.json``.

Rows (data: S source train, T labelled target share, G translated source, P pseudo-labelled
unlabelled target, U all target labels):

==============  =============  ===================================================
row             data           loss
==============  =============  ===================================================
lower           S + T          detection
upper           S + U          detection
fitnet/fgd/ld/  S + T + P      detection + that KD loss from the teacher
crosskd
proposed        S + G + T + P  detection + KD (``proposed_kd``; ``auto``: the KD row
                               with the best *target val* mAP)
gan_only        S + G + T      detection             (ablation)
pseudo_only     S + T + P      detection             (ablation)
kd_only         S + T          detection + KD (the proposed row's loss) (ablation)
==============  =============  ===================================================

The experiment file (INI)::

    [experiment]
    work = runs/kd-cpu-0       ; relative to the INI file's folder
    seed = 0
    threads = 2                ; torch threads (0: torch's default)
    device = cpu
    size = 128                 ; optional: train and evaluate both cfgs at this input size
                               ; (WORK/cfg/ copies, anchors scaled; default: the cfgs' own)
    bf16 = yes                 ; optional: bfloat16 autocast for every training on CPU
    [data]
    drivesim = cpu             ; DriveSim preset, or `none` and the keys below
    target = night
    ; source = ...data  lower = ...data  upper = ...data  target_val = list  target_test = list
    ; source_test = list  labelled = list  unlabelled = list  unlabelled_truth = list
    [gan]
    preset = cpu
    iters = 3000
    detector = source          ; the projector's backbone: source (trained here), random, or PATH.weights
    ; detector_cfg = ...cfg    ; with PATH.weights (default: the student cfg)
    ; detector_iters = 2000    ; with source: its max_batches (default: the student's)
    [teacher]
    cfg = cfg/yolov4-tiny-3l-teacher-drivesim.cfg
    max_batches = 2000
    translated = yes           ; train the teacher on the GAN's translations too (the published
                               ; recipe); `no`: source + labelled target only
    [student]
    cfg = cfg/yolov4-tiny-drivesim.cfg
    max_batches = 2000
    kd_weight = 1.0            ; or kd_weight.fgd = ... per loss
    rows = lower, upper, fitnet, fgd, ld, crosskd, proposed, gan_only, pseudo_only, kd_only
    proposed_kd = auto

Paths in the INI are relative to its folder (cfg paths also to the current folder).
"""
from __future__ import annotations

import configparser
import json
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .cfg import sized_cfg
from .data.darknet import DataConfig, label_path, read_data_file, read_list, write_data_file, write_list
from .errors import DarknetKDError
from .fileio import atomic_write

KD_ROWS = ("fitnet", "fgd", "ld", "crosskd")
CHOSEN_KD_ROWS = ("proposed", "kd_only")     # their KD loss is chosen among the KD rows' (proposed_kd)
ALL_ROWS = ("lower", "upper", *KD_ROWS, "proposed", "gan_only", "pseudo_only", "kd_only")
ROW_DATA = {"lower": "S+T", "upper": "S+U", "fitnet": "S+T+P", "fgd": "S+T+P", "ld": "S+T+P", "crosskd": "S+T+P",
            "proposed": "S+G+T+P", "gan_only": "S+G+T", "pseudo_only": "S+T+P", "kd_only": "S+T"}
ROW_TITLE = {"lower": "Lower baseline (labelled target share)", "upper": "Upper baseline (all labels)",
             "fitnet": "FitNets", "fgd": "FGD", "ld": "LD", "crosskd": "CrossKD", "proposed": "GAN + KD (proposed)",
             "gan_only": "ablation: GAN only", "pseudo_only": "ablation: pseudo-labels only",
             "kd_only": "ablation: KD only", "teacher": "teacher"}


class PipelineError(DarknetKDError):
    """A bad experiment file or a stage that failed."""


@dataclass
class Experiment:
    """A parsed experiment INI."""

    path: Path
    ini: configparser.ConfigParser
    lines: dict = field(default_factory=dict)

    @classmethod
    def read(cls, path) -> "Experiment":
        path = Path(path)
        ini = configparser.ConfigParser(inline_comment_prefixes=(";", "#"))
        try:
            text = path.read_text()
        except OSError as e:
            raise PipelineError(f"cannot read the experiment file: {e.strerror}", path) from None
        try:
            ini.read_string(text, source=str(path))
        except configparser.Error as e:
            line = getattr(e, "lineno", None)
            raise PipelineError(str(e).splitlines()[0], path, line) from None
        lines = {}
        section = None
        for n, raw in enumerate(text.splitlines(), 1):
            s = raw.strip()
            if s.startswith("[") and s.endswith("]"):
                section = s[1:-1].strip()
            elif "=" in s and section and not s.startswith((";", "#")):
                lines[(section, s.split("=", 1)[0].strip().lower())] = n
        exp = cls(path, ini, lines)
        known = {"experiment": {"work", "seed", "threads", "device", "workers", "size", "bf16"},
                 "data": {"drivesim", "target", "target_frac", "source", "lower", "upper", "target_val", "target_test",
                          "source_test", "labelled", "unlabelled", "unlabelled_truth", "source_train"},
                 "gan": {"enabled", "preset", "iters", "args", "detector", "detector_cfg", "detector_iters"},
                 "teacher": {"cfg", "max_batches", "batch", "subdivisions", "weights", "translated"},
                 "student": {"cfg", "max_batches", "batch", "subdivisions", "kd_weight", "rows", "proposed_kd",
                             "ld_teacher_iters", "ema"}}
        for sec in ini.sections():
            if sec not in known:
                raise PipelineError(f"unknown section [{sec}] (known: {', '.join(known)})", path)
            for key in ini[sec]:
                if key not in known[sec] and not (sec == "student" and key.startswith("kd_weight.")):
                    raise exp.error(f"unknown key {key!r} in [{sec}]", sec, key)
        return exp

    def error(self, msg, section, key=None) -> PipelineError:
        return PipelineError(msg, self.path, self.lines.get((section, key)))

    def get(self, section, key, default=None):
        if self.ini.has_option(section, key):
            return self.ini.get(section, key).strip()
        return default

    def number(self, section, key, default, kind=int):
        v = self.get(section, key)
        if v is None:
            return default
        try:
            return kind(v)
        except ValueError:
            raise self.error(f"{key} = {v!r} is not a{'n integer' if kind is int else ' number'}", section,
                             key) from None

    def flag(self, section, key, default: bool = False) -> bool:
        v = self.get(section, key)
        if v is None:
            return default
        if v.lower() not in ("1", "yes", "true", "on", "0", "no", "false", "off"):
            raise self.error(f"{key} = {v!r}: yes or no", section, key)
        return v.lower() in ("1", "yes", "true", "on")

    def path_of(self, section, key, default=None) -> Path | None:
        v = self.get(section, key, default)
        if v is None:
            return None
        p = Path(v)
        if p.is_absolute():
            return p
        here = self.path.parent / p
        return here if here.exists() or not p.exists() else p


class Pipeline:
    def __init__(self, exp: Experiment, progress: bool = True):
        self.exp = exp
        self.progress = progress
        self.seed = exp.number("experiment", "seed", 0)
        self.work = exp.path_of("experiment", "work", f"{exp.path.stem}-work").absolute()
        self.threads = exp.number("experiment", "threads", 0)
        self.device = exp.get("experiment", "device", "cpu")
        self.workers = exp.number("experiment", "workers", 2)
        self.size = exp.number("experiment", "size", 0)
        if self.size and (self.size < 32 or self.size % 32):
            raise exp.error(f"size = {self.size}: a positive multiple of 32", "experiment", "size")
        self.bf16 = exp.flag("experiment", "bf16")
        rows = [r.strip() for r in exp.get("student", "rows", ",".join(ALL_ROWS)).split(",") if r.strip()]
        bad = [r for r in rows if r not in ALL_ROWS]
        if bad:
            raise exp.error(f"unknown rows {bad} (known: {', '.join(ALL_ROWS)})", "student", "rows")
        self.rows = rows
        self.proposed_kd = exp.get("student", "proposed_kd", "auto")
        self.teacher_translated = exp.flag("teacher", "translated", True)
        if self.proposed_kd not in ("auto", *KD_ROWS):
            raise exp.error(f"proposed_kd = {self.proposed_kd!r}: auto or one of {', '.join(KD_ROWS)}",
                            "student", "proposed_kd")
        self.gan_enabled = exp.flag("gan", "enabled", True)
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self.timings: dict[str, float] = {}

    # -- bookkeeping -------------------------------------------------------------------------------
    def marker(self, stage: str) -> Path:
        return self.work / "stages" / f"{stage.replace(':', '-')}.json"

    def done(self, stage: str, outputs) -> bool:
        m = self.marker(stage)
        return m.exists() and all(Path(p).exists() for p in outputs)

    def stage(self, name: str, outputs, fn):
        """Run ``fn`` unless the stage's marker and outputs exist; returns the marker's record."""
        outputs = [Path(p) for p in outputs]
        if self.done(name, outputs):
            self.skipped.append(name)
            return json.loads(self.marker(name).read_text())
        self.log(f"== stage {name}")
        t0 = time.time()
        record = fn() or {}
        missing = [str(p) for p in outputs if not p.exists()]
        if missing:
            raise PipelineError(f"stage {name} finished without writing {missing}", self.exp.path)
        record = {"stage": name, "seconds": round(time.time() - t0, 1), **record}
        atomic_write(self.marker(name), json.dumps(record, indent=1, default=str) + "\n")
        self.ran.append(name)
        self.timings[name] = record["seconds"]
        return record

    def log(self, msg: str):
        print(msg, file=sys.stderr if not self.progress else sys.stdout, flush=True)

    def _threads(self):
        if self.threads:
            import torch
            torch.set_num_threads(self.threads)

    def cfg(self, section, default) -> Path:
        """The section's cfg, or with ``[experiment] size`` its copy WORK/cfg/<name> at that input
        size, anchors scaled (darknet_kd.cfg.sized_cfg); the weights keep the cfg's stem."""
        cfg = self.exp.path_of(section, "cfg", default)
        if not self.size:
            return cfg
        return sized_cfg(cfg, self.size, self.work / "cfg", scale_anchors=True)

    # -- datasets ------------------------------------------------------------------------------------
    def dataset(self) -> dict:
        """Paths of the splits: source_train (list), labelled, unlabelled, unlabelled_truth,
        upper_train, target_val, target_test, source_test, names, classes."""
        exp = self.exp
        preset = exp.get("data", "drivesim", "none")
        if preset != "none":
            out = self.work / "data"
            target = exp.get("data", "target", "night")

            def gen():
                from .data.drivesim.dataset import generate

                m = generate(out, preset, self.seed, [target], exp.number("data", "target_frac", 0.2, float),
                             workers=max(1, self.workers), progress=self.progress, overwrite=True)
                return {"images": m["images_written"]}

            self.stage("drivesim", [out / "manifest.json"], gen)
            d = {"source_train": out / "source-train.txt", "labelled": out / f"{target}-labelled.txt",
                 "unlabelled": out / f"{target}-unlabelled.txt",
                 "unlabelled_truth": out / f"{target}-unlabelled-audit.txt",
                 "upper_train": out / f"{target}-upper-train.txt", "target_val": out / f"{target}-val.txt",
                 "target_test": out / f"{target}-test.txt", "source_test": out / "source-test.txt",
                 "source_data": out / "source.data", "names": out / "drivesim.names"}
        else:
            keys = ("source_train", "labelled", "unlabelled", "unlabelled_truth", "target_val", "target_test",
                    "source_test", "source")
            d = {}
            for k in keys:
                p = exp.path_of("data", k)
                if p is None:
                    raise exp.error(f"[data] needs {k} = ... when drivesim = none", "data")
                if not p.exists():
                    raise exp.error(f"{k} = {p}: no such file", "data", k)
                d[k] = p
            d["source_data"] = d.pop("source")
            src = read_data_file(d["source_data"])
            d["names"] = src.resolve("names")
            upper = self.work / "lists" / "upper-train.txt"
            write_list(upper, read_list(d["source_train"]) + read_list(d["labelled"])
                       + read_list(d["unlabelled_truth"]))
            d["upper_train"] = upper
        d["classes"] = len([n for n in Path(d["names"]).read_text().splitlines() if n.strip()])
        return d

    def make_data(self, name: str, lists, valid, ds) -> Path:
        """WORK/lists/<name>.data whose train list concatenates ``lists``."""
        folder = self.work / "lists"
        images = []
        for lst in lists:
            images += read_list(lst)
        write_list(folder / f"{name}.txt", images)
        path = folder / f"{name}.data"
        write_data_file(path, DataConfig(classes=ds["classes"], train=str(folder / f"{name}.txt"), valid=str(valid),
                                         names=str(ds["names"]), backup=str(self.work / "backup")))
        return path

    # -- stages ------------------------------------------------------------------------------------------
    def gan(self, ds) -> Path | None:
        if not self.gan_enabled:
            return None
        out = self.work / "gan"
        exp = self.exp

        detector = self.gan_detector(ds)

        def run():
            from domain_transfer.cli import main as dt_main

            # the target side: the labelled share (its box masks train f_s and the identity semantic
            # term, as the published method uses target labels) and the unlabelled images
            target = f"{ds['labelled']},{ds['unlabelled']}"
            argv = ["train", "--source", str(ds["source_data"]), "--target", target, "--out", str(out),
                    "--preset", exp.get("gan", "preset", "cpu"), "--iters", str(exp.number("gan", "iters", 3000)),
                    "--device", self.device, *detector] + shlex.split(exp.get("gan", "args", ""))
            if self.threads:
                argv += ["--threads", str(self.threads)]
            if not self.progress:
                argv.append("--no-progress")
            if (out / "last.ckpt").exists():
                argv.append("--resume")
            rc = dt_main(argv)
            if rc:
                raise PipelineError(f"domain-transfer {' '.join(argv)} failed with status {rc}")
            return {"command": "domain-transfer " + " ".join(argv)}

        self.stage("gan", [out / "last.ckpt"], run)
        ckpt = out / "last.ckpt"
        tout = self.work / "translated"

        def translate():
            from domain_transfer.translate import translate_dataset

            self._threads()
            s = translate_dataset(ckpt, ds["source_data"], tout, lists=["train"], device=self.device,
                                  progress=self.progress)
            return {"translated": s["translated"], "images": s["images"]}

        self.stage("translate", [tout / "train.txt"], translate)
        return tout / "train.txt"

    def gan_detector(self, ds) -> list[str]:
        """``domain-transfer train`` options naming the detector whose frozen backbone the
        projected discriminator reads (``[gan] detector``); trains the source model first when
        it is ``source``."""
        exp = self.exp
        kind = exp.get("gan", "detector", "source")
        if kind == "random":
            return ["--detector-weights", "random"]
        cfg = exp.path_of("gan", "detector_cfg") or self.cfg("student", "cfg/yolov4-tiny-drivesim.cfg")
        if kind == "source":
            data = self.make_data("source", [ds["source_train"]], ds["source_test"], ds)
            weights = self.train("source", data, cfg, weights_dir=self.work / "source",
                                 iterations=exp.number("gan", "detector_iters", None))
        else:
            weights = exp.path_of("gan", "detector")
            if not weights.exists():
                raise exp.error(f"detector = {kind}: no such .weights file (or say source / random)", "gan", "detector")
        return ["--detector-cfg", str(cfg), "--detector-weights", str(weights)]

    def train(self, name, data, cfg, kd="none", weights_dir=None, section="student", iterations=None):
        """Train (or distill) one model (``iterations``: its max_batches instead of the
        section's); returns the final .weights path."""
        from .train.distill import Distiller
        from .train.trainer import TrainOptions, Trainer

        exp = self.exp
        backup = weights_dir or (self.work / "students" / name)
        stem = Path(cfg).stem
        final = backup / f"{stem}_final.weights"

        def run():
            self._threads()
            ckpt = backup / f"{stem}_last.ckpt"
            opts = TrainOptions(backup=str(backup),
                                max_batches=iterations or exp.number(section, "max_batches", None) or None,
                                batch=exp.number(section, "batch", None) or None,
                                subdivisions=exp.number(section, "subdivisions", None) or None,
                                workers=self.workers, seed=self.seed, resume=ckpt.exists(), device=self.device,
                                bf16=self.bf16,
                                progress=self.progress, ema=exp.number(section, "ema", 0.0, float),
                                save_every=50, map_every=10 ** 9, chart=True)   # validation mAP once, at the end
            if kd == "none":
                summary = Trainer(data, cfg, None, opts).run()
            else:
                w = exp.number("student", f"kd_weight.{kd}", exp.number("student", "kd_weight", 1.0, float), float)
                summary = Distiller(data, cfg, self.teacher_cfg, self.teacher_weights, None, opts, kd=kd, kd_weight=w,
                                    ld_teacher_iters=exp.number("student", "ld_teacher_iters", 200)).run()
            last = backup / f"{stem}_last.weights"
            if not final.exists() and last.exists() and summary["iterations"] >= (opts.max_batches or 0):
                # resumed from a checkpoint that had already finished: _last is the final model
                atomic_write(final, last.read_bytes())
            return {"summary": summary, "kd": kd, "data": str(data)}

        self.stage(f"train:{name}", [final], run)
        return final

    def evaluate(self, name, cfg, weights, ds) -> dict:
        out = self.work / "eval" / f"{name}.json"

        def run():
            from .eval.evaluate import evaluate
            from .model import load

            self._threads()
            model = load(cfg, weights).to(self.device)
            res = {}
            for split, data in self.eval_data(ds).items():
                r = evaluate(model, data, batch_size=16, workers=min(self.workers, 1), device=self.device,
                             progress=False)
                res[split] = float(r.darknet.map)
            atomic_write(out, json.dumps({"name": name, "weights": str(weights), "map": res}, indent=1) + "\n")

        self.stage(f"eval:{name}", [out], run)
        return json.loads(out.read_text())["map"]

    def eval_data(self, ds) -> dict:
        """.data files whose valid= list is each evaluation split: target val, source test,
        target test, and both tests together ("all")."""
        both = self.work / "lists" / "eval-all.txt"
        write_list(both, read_list(ds["source_test"]) + read_list(ds["target_test"]))
        out = {}
        for split, lst in (("val", ds["target_val"]), ("source", ds["source_test"]), ("target", ds["target_test"]),
                           ("all", both)):
            path = self.work / "lists" / f"eval-{split}.data"
            write_data_file(path, DataConfig(classes=ds["classes"], valid=str(lst), names=str(ds["names"])))
            out[split] = read_data_file(path)
        return out

    def teacher(self, ds, translated):
        exp = self.exp
        self.teacher_cfg = self.cfg("teacher", "cfg/yolov4-tiny-3l-teacher-drivesim.cfg")
        given = exp.path_of("teacher", "weights")
        if given is not None:
            self.teacher_weights = given
            return
        lists = [ds["source_train"]] + ([translated] if translated and self.teacher_translated else []) + \
            [ds["labelled"]]
        data = self.make_data("teacher", lists, ds["target_val"], ds)
        self.teacher_weights = self.train("teacher", data, self.teacher_cfg, weights_dir=self.work / "teacher",
                                          section="teacher")

    def pseudo(self, ds) -> Path:
        out = self.work / "pseudo"

        def run():
            from .data.dataset import load_all_labels
            from .detect import pseudo_label
            from .model import load
            from .train.pseudo import audit, format_table, sweep_threshold

            self._threads()
            model = load(self.teacher_cfg, self.teacher_weights).to(self.device)
            val = read_list(ds["target_val"])
            sweep = sweep_threshold(model, val, load_all_labels(val, ds["classes"]), progress=self.progress)
            self.log(format_table(sweep["table"])
                     + f"pseudo-label threshold (best F1 on target val): {sweep['thresh']}")
            names = [n for n in Path(ds["names"]).read_text().splitlines() if n.strip()]
            counts = pseudo_label(model, read_list(ds["unlabelled"]), out, sweep["thresh"], names,
                                  progress=self.progress)
            truth = [label_path(p) for p in read_list(ds["unlabelled_truth"])]
            a = audit(out, truth, num_classes=ds["classes"])
            self.log(f"pseudo-label audit against the hidden labels (IoU 0.5): precision {a['precision']:.3f}, "
                     f"recall {a['recall']:.3f}, F1 {a['f1']:.3f} on {a['images']} images")
            atomic_write(self.work / "pseudo_audit.json",
                         json.dumps({"threshold": sweep, "counts": counts, "audit": a}, indent=1) + "\n")
            return {"thresh": sweep["thresh"], "counts": counts, "precision": a["precision"], "recall": a["recall"]}

        self.stage("pseudo", [out / "train.txt", self.work / "pseudo_audit.json"], run)
        return out / "train.txt"

    # -- the whole run ------------------------------------------------------------------------------------
    def run(self) -> dict:
        exp = self.exp
        self.work.mkdir(parents=True, exist_ok=True)
        ds = self.dataset()
        # rows that need neither the teacher nor the GAN (the baselines) do not wait for them, so a
        # call with rows = lower, upper can run beside one that trains the GAN and the teacher
        need_pl = any("P" in ROW_DATA[r] for r in self.rows)
        need_teacher = need_pl or any(r in (*KD_ROWS, *CHOSEN_KD_ROWS) for r in self.rows)
        need_gan = any("G" in ROW_DATA[r] for r in self.rows) or \
            (need_teacher and exp.path_of("teacher", "weights") is None and self.teacher_translated)
        translated = self.gan(ds) if need_gan else None
        if need_teacher:
            self.teacher(ds, translated)
        pl = self.pseudo(ds) if need_pl else None
        lists = {"S": ds["source_train"], "T": ds["labelled"], "G": translated, "P": pl}
        student_cfg = self.cfg("student", "cfg/yolov4-tiny-drivesim.cfg")
        results = {}
        if need_teacher and exp.path_of("teacher", "weights") is None:
            results["teacher"] = self.evaluate("teacher", self.teacher_cfg, self.teacher_weights, ds)
            if results["teacher"]["val"] < 0.01:
                self.log(f"warning: the teacher's target-val mAP@0.5 is {100 * results['teacher']['val']:.2f} %: "
                         "its pseudo-labels and distillation targets carry no information (train it longer; "
                         "feature losses such as FGD may diverge on a diverged teacher's features)")
        order = [r for r in self.rows if r not in CHOSEN_KD_ROWS] + [r for r in self.rows if r in CHOSEN_KD_ROWS]
        for row in order:
            kd = "none"
            if row in KD_ROWS:
                kd = row
            elif row in CHOSEN_KD_ROWS:
                kd = self.choose_kd(results)
            if row == "upper":
                data = self.make_data(row, [ds["upper_train"]], ds["target_val"], ds)
            else:
                parts = ROW_DATA[row].split("+")
                if "G" in parts and translated is None:
                    raise exp.error(f"row {row} needs the GAN ([gan] enabled = no)", "gan", "enabled")
                data = self.make_data(row, [lists[k] for k in parts], ds["target_val"], ds)
            w = self.train(row, data, student_cfg, kd)
            results[row] = {**self.evaluate(row, student_cfg, w, ds), "kd": kd, "data": ROW_DATA[row]}
        table = self.table(results)
        return {"work": str(self.work), "ran": self.ran, "skipped": self.skipped, "table": table}

    def choose_kd(self, results) -> str:
        if self.proposed_kd != "auto":
            return self.proposed_kd
        done = {r: results[r]["val"] for r in KD_ROWS if r in results}
        if not done:
            raise self.exp.error("proposed_kd = auto needs at least one of the KD rows "
                                 f"({', '.join(KD_ROWS)}) in rows", "student", "proposed_kd")
        return max(done, key=done.get)     # target *validation* mAP, never test

    def table(self, results) -> dict:
        out = {"seed": self.seed, "experiment": str(self.exp.path), "rows": results,
               "proposed_kd": results.get("proposed", {}).get("kd"),
               "command": f"darknet-kd pipeline {self.exp.path}"}
        md = format_markdown({k: {s: [v[s]] for s in ("source", "target", "all", "val")} for k, v in results.items()},
                             f"seed {self.seed}")
        atomic_write(self.work / "table.json", json.dumps(out, indent=1) + "\n")
        atomic_write(self.work / "table.md", md + f"\nCommand: `{out['command']}`\n")
        self.log(md)
        return out


def gap_recovered(value: float, lower: float, upper: float, min_gap: float = 0.005) -> float | None:
    """Share of the lower → upper gap a method closes (the paper's 76 %: (60.2−51.8)/(62.8−51.8)).
    None when upper does not beat lower by at least ``min_gap`` (0.5 mAP point): a share of a
    missing or negative gap means nothing (e.g. 854 % of a −0.2-point gap)."""
    return (value - lower) / (upper - lower) if upper - lower >= min_gap else None


def _ms(vals) -> str:
    vals = [100 * v for v in vals]
    if len(vals) == 1:
        return f"{vals[0]:.1f}"
    return f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals):.1f}"


def format_markdown(rows: dict, title: str) -> str:
    """rows: name -> {"source": [mAP per seed], "target": [...], "all": [...], "val": [...]}."""
    lines = [f"mAP@0.5 (%), {title}", "",
             "| method | source | target | all | target val | gap recovered (all) | gap recovered (target) |",
             "|---|---|---|---|---|---|---|"]
    mean = {k: {s: statistics.mean(v[s]) for s in v} for k, v in rows.items()}
    for name in ("teacher", *ALL_ROWS):
        if name not in rows:
            continue
        gap = ["", ""]
        if "lower" in mean and "upper" in mean and name not in ("lower", "upper", "teacher"):
            for k, s in enumerate(("all", "target")):
                g = gap_recovered(mean[name][s], mean["lower"][s], mean["upper"][s])
                gap[k] = "n/a (upper ≤ lower)" if g is None else f"{100 * g:.0f} %"
        r = rows[name]
        lines.append(f"| {ROW_TITLE[name]} | {_ms(r['source'])} | {_ms(r['target'])} | {_ms(r['all'])} | "
                     f"{_ms(r['val'])} | {gap[0]} | {gap[1]} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- command

def add_parser(sub):
    p = sub.add_parser("pipeline", help="run an experiment end to end (DriveSim, GAN, teacher, pseudo-labels, "
                                        "students, table); resumes where it stopped")
    p.add_argument("experiment", help="experiment .ini file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def _run(args) -> int:
    res = Pipeline(Experiment.read(args.experiment), progress=not args.quiet).run()
    print(f"stages run: {', '.join(res['ran']) or 'none'}; skipped (outputs present): {len(res['skipped'])}")
    print(f"table: {Path(res['work']) / 'table.md'}")
    return 0
