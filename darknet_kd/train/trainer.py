"""The Darknet-style trainer: `darknet-kd train DATA CFG [WEIGHTS]`.

It accepts a user's .data/.cfg unchanged and follows `darknet detector train`:
[net] learning_rate, momentum, decay, burn_in (power warm-up), policy/steps/scales,
max_batches, batch/subdivisions (gradient accumulation: ``batch/subdivisions`` images a
forward pass, one update a batch), multi-scale through [yolo] random; it writes
``<backup>/<cfg>_last.weights`` every ``save_every`` iterations, ``_best.weights`` by
validation mAP, ``_final.weights`` at the end, all through a temporary name, plus a
resumable checkpoint ``<cfg>_last.ckpt`` (plain tensors, loaded with weights_only) and a
``chart.png`` (loss and mAP over iterations).

Teacher-student and mean-teacher training subclass :class:`Trainer` and override
:meth:`Trainer.compute_loss` (and :meth:`Trainer.extra_state` for what they must resume).
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..data.darknet import read_data_file
from ..errors import CheckpointError, DataError, TrainingError
from ..fileio import atomic_write
from ..model import Darknet
from .chart import draw_chart
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .schedule import darknet_sgd, learning_rate


@dataclass
class TrainOptions:
    backup: str | None = None          # default: the .data backup= folder
    max_batches: int | None = None     # override [net] max_batches (and scale steps with it)
    batch: int | None = None           # override [net] batch
    subdivisions: int | None = None    # override [net] subdivisions
    workers: int = 2
    seed: int = 0
    deterministic: bool = False
    bf16: bool = False                 # CPU autocast in bfloat16
    amp: bool = False                  # CUDA autocast in float16 with a GradScaler
    ema: float = 0.0                   # EMA decay of the weights (0 = off), e.g. 0.999
    save_every: int = 100
    map_every: int = 0                 # 0: every max_batches/10 iterations (and at the end)
    resume: bool = False
    clear: bool = False                # Darknet's -clear: restart the iteration count of WEIGHTS
    device: str | None = None
    threads: int | None = None
    progress: bool = True
    eval_batch: int = 8
    chart: bool = True
    channels_last: bool = True         # NHWC activations: ~2x faster convolutions on CPU (oneDNN)

    def to_dict(self):
        return asdict(self)


class ModelEMA:
    """Exponential moving average of a model's parameters and buffers (ema ← d·ema + (1−d)·θ)."""

    def __init__(self, model, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model, decay: float | None = None):
        d = self.decay if decay is None else decay
        src = model.state_dict()
        for k, v in self.model.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(src[k].detach().to(v.dtype), alpha=1 - d)
            else:
                v.copy_(src[k])


def pick_device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def scale_schedule(net, max_batches: int | None) -> None:
    """``--max-batches N`` rescales [net] steps (and burn_in) to the new length, so a short run keeps
    the cfg's schedule shape."""
    if not max_batches or max_batches == net.max_batches:
        return
    if net.max_batches > 0:
        f = max_batches / net.max_batches
        net.steps = [max(1, int(round(s * f))) for s in net.steps]
        net.step = max(1, int(round(net.step * f)))
        net.burn_in = min(net.burn_in, max(1, max_batches // 4)) if net.burn_in else 0
    net.max_batches = max_batches


class Trainer:
    """One training run.  ``Trainer(data, cfg, weights, opts).run()`` returns a summary dict."""

    kind = "train"

    def __init__(self, data_path, cfg_path, weights=None, opts: TrainOptions | None = None):
        self.opts = opts or TrainOptions()
        o = self.opts
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.device = pick_device(o.device)
        if self.world > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend)
            if self.device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if o.threads:
            torch.set_num_threads(o.threads)
        if o.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        torch.manual_seed(o.seed + self.rank)

        self.data_path = Path(data_path)
        self.data = read_data_file(data_path)
        self.cfg_path = Path(cfg_path)
        self.model = Darknet.from_cfg(cfg_path)
        net = self.model.net
        if o.batch:
            net.batch = o.batch
        if o.subdivisions:
            net.subdivisions = o.subdivisions
        if net.batch % net.subdivisions:
            raise DataError(f"batch={net.batch} is not a multiple of subdivisions={net.subdivisions}", cfg_path)
        scale_schedule(net, o.max_batches)
        if net.max_batches < 1:
            raise DataError("max_batches is 0: set it in [net] or pass --max-batches", cfg_path)
        if self.model.num_classes != self.data.classes:
            raise DataError(f"classes={self.data.classes} in {self.data_path.name}, but the cfg's [yolo] "
                            f"layers have classes={self.model.num_classes}", self.data_path)
        self.iteration = 0
        if weights:
            self.model.load_weights(weights)
            if not o.clear:
                self.iteration = self.model.seen // net.batch
        self.model.to(self.device)
        self.backup = Path(o.backup or self.data.backup or "backup")
        self.stem = self.cfg_path.stem
        self.ckpt_path = self.backup / f"{self.stem}_last.ckpt"
        self.history = {"iters": [], "loss": [], "map_iters": [], "map": []}
        self.best_map = -1.0
        self.avg_loss = None
        self._setup_training()
        if o.resume:
            self._resume()

    # -- pieces subclasses may extend -------------------------------------------------------------
    def _setup_training(self):
        from ..loss.yolo import YoloLoss

        net = self.model.net
        if self.opts.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.criterion = YoloLoss(self.model)
        self.optimizer = darknet_sgd(self.model, net)
        self.scaler = torch.amp.GradScaler("cuda") if (self.opts.amp and self.device.type == "cuda") else None
        self.ema = ModelEMA(self.model, self.opts.ema) if self.opts.ema else None
        self.train_model = self.model
        if self.world > 1:
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def autocast(self):
        if self.opts.bf16 and self.device.type == "cpu":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        if self.opts.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def compute_loss(self, images, targets, infos):
        """Summed (over the mini-batch) loss and its parts for the progress bar."""
        with self.autocast():
            heads = self.train_model(images)
        heads = [h.float().contiguous() for h in heads]
        return self.criterion(heads, targets, tuple(images.shape[-2:]))

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def after_update(self) -> None:
        """Called after every optimiser step (mean teacher updates its EMA here)."""

    # -- data -----------------------------------------------------------------------------------------
    def make_loader(self):
        from ..data.dataset import train_loader

        mini = self.model.net.batch // self.model.net.subdivisions
        # Each DDP rank draws its own sample stream (as Darknet's GPUs each load their own batch).
        return train_loader(self.data, self.model, mini, workers=self.opts.workers,
                            seed=self.opts.seed + 1000003 * self.rank,
                            iteration=self.iteration * self.model.net.subdivisions)

    # -- checkpoints ----------------------------------------------------------------------------------
    def _resume(self):
        if not self.ckpt_path.exists():
            raise CheckpointError("--resume: no checkpoint to resume from", self.ckpt_path)
        ck = load_checkpoint(self.ckpt_path)
        if ck.get("cfg") != self.model.cfg.to_text():
            raise CheckpointError("--resume: the checkpoint was made with a different cfg", self.ckpt_path)
        if ck.get("kind") != self.kind:
            raise CheckpointError(f"--resume: the checkpoint is from `{ck.get('kind')}`, not `{self.kind}`",
                                  self.ckpt_path)
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        if self.ema is not None and "ema" in ck:
            self.ema.model.load_state_dict(ck["ema"])
        self.iteration = int(ck["iteration"])
        self.model.seen = int(ck["seen"])
        self.history = ck["history"]
        self.best_map = float(ck["best_map"])
        self.avg_loss = ck["avg_loss"]
        set_rng_state(ck["rng"])
        self.load_extra_state(ck.get("extra", {}))

    def _sync_buffers(self):
        """DDP keeps parameters equal; batch-norm statistics are per rank: average them."""
        if self.world > 1:
            for b in self.model.buffers():
                if b.dtype.is_floating_point:
                    torch.distributed.all_reduce(b)
                    b.div_(self.world)

    def check_finite(self):
        """Raise a TrainingError naming the first NaN/Inf parameter or buffer (BatchNorm running
        statistics included) of the model and of its EMA. A finite loss does not prove finite
        weights: running statistics can overflow while the training loss stays finite, and the
        model then outputs NaN in eval mode (found only at evaluation, after hours)."""
        for what, m in (("", self.model), ("EMA ", self.ema.model if self.ema else None)):
            if m is None:
                continue
            for name, t in (*m.named_parameters(), *m.named_buffers()):
                if t.is_floating_point() and not torch.isfinite(t).all():
                    raise TrainingError(
                        f"the {what}model's {name} is NaN or infinite at iteration {self.iteration}: the "
                        f"training diverged (lower learning_rate or lengthen burn_in); "
                        f"{self.stem}_last.weights keeps the last finite state", self.cfg_path)

    def save(self, final: bool = False, sync: bool = True):
        if sync:
            self._sync_buffers()  # every rank takes part
        self.check_finite()  # every rank raises alike (DDP keeps them equal): never save a diverged model
        if self.rank != 0:
            return
        m = self.export_model()
        m.seen = self.model.seen
        m.header = self.model.header
        m.save_weights(self.backup / f"{self.stem}_last.weights")
        if final:
            m.save_weights(self.backup / f"{self.stem}_final.weights")
        save_checkpoint(self.ckpt_path, kind=self.kind, cfg=self.model.cfg.to_text(),
                        model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                        ema=self.ema.model.state_dict() if self.ema else None, iteration=self.iteration,
                        seen=self.model.seen, history=self.history, best_map=self.best_map,
                        avg_loss=self.avg_loss, rng=rng_state(), options=self.opts.to_dict(),
                        extra=self.extra_state())

    def export_model(self):
        """The model whose weights are saved and evaluated (the EMA copy when enabled)."""
        return self.ema.model if self.ema is not None else self.model

    # -- evaluation -----------------------------------------------------------------------------------
    def evaluate(self) -> float | None:
        if not self.data.valid:
            return None
        from ..eval.evaluate import evaluate

        result = evaluate(self.export_model(), self.data, batch_size=self.opts.eval_batch,
                          workers=min(self.opts.workers, 1), device=self.device, progress=False)
        return float(result.darknet.map)

    # -- the loop -------------------------------------------------------------------------------------
    def run(self) -> dict:
        net = self.model.net
        o = self.opts
        subdiv, batch = net.subdivisions, net.batch
        map_every = o.map_every or max(1, net.max_batches // 10)
        self.backup.mkdir(parents=True, exist_ok=True)
        loader = self.make_loader()
        batches = iter(loader)
        self.model.train()
        bar = tqdm(total=net.max_batches, initial=self.iteration, disable=not o.progress or self.rank != 0,
                   desc=self.kind, unit="it", dynamic_ncols=True)
        t_start, n_images = time.time(), 0
        last = {}
        while self.iteration < net.max_batches:
            lr = learning_rate(net, self.iteration, self.world)
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            total_loss = 0.0
            parts_sum: dict[str, float] = {}
            for _ in range(subdiv):
                try:
                    images, targets, infos = next(batches)
                except StopIteration:
                    batches = iter(loader)
                    images, targets, infos = next(batches)
                images, targets = images.to(self.device, non_blocking=True), targets.to(self.device)
                if o.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                loss, parts = self.compute_loss(images, targets, infos)
                if not torch.isfinite(loss):
                    raise TrainingError(f"loss is {loss.item()} at iteration {self.iteration}: lower "
                                        "learning_rate, check the labels (or, distilling, the teacher)",
                                        self.cfg_path)
                scaled = loss / batch  # Darknet: summed deltas, update scaled by lr/batch
                if self.scaler is not None:
                    self.scaler.scale(scaled).backward()
                else:
                    scaled.backward()
                total_loss += loss.item()
                for k, v in parts.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + float(v)
                n_images += images.shape[0]
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                # Ramp the decay up at the start (a fresh EMA of a random model is useless).
                self.ema.update(self.model, min(o.ema, (1 + self.iteration) / (10 + self.iteration)))
            self.after_update()
            self.iteration += 1
            self.model.seen += batch * self.world
            per_image = total_loss / batch
            self.avg_loss = per_image if self.avg_loss is None else 0.9 * self.avg_loss + 0.1 * per_image
            self.history["iters"].append(self.iteration)
            self.history["loss"].append(self.avg_loss)
            rate = n_images / max(time.time() - t_start, 1e-9)
            last = {"loss": f"{self.avg_loss:.3f}", **{k: f"{v / batch:.3f}" for k, v in parts_sum.items()
                                                      if k in ("box", "obj", "cls", "kd")},
                    "lr": f"{lr:.2e}", "img/s": f"{rate * self.world:.1f}", "size": images.shape[-1]}
            bar.set_postfix(last, refresh=False)
            bar.update(1)
            end = self.iteration >= net.max_batches
            save_now = self.iteration % o.save_every == 0 or end
            if save_now:  # before evaluating: a failed evaluation never loses the weights
                self.save(final=end)
            if self.iteration % map_every == 0 or end:
                m = self.evaluate() if self.rank == 0 else None
                if m is not None:
                    self.history["map_iters"].append(self.iteration)
                    self.history["map"].append(m)
                    bar.write(f"iteration {self.iteration}: mAP@0.5 = {100 * m:.2f} %"
                              f" (best {100 * max(self.best_map, m):.2f} %)")
                    if m > self.best_map:
                        self.best_map = m
                        self.export_model().save_weights(self.backup / f"{self.stem}_best.weights")
                    if save_now:  # the checkpoint carries the new mAP history (rank 0 only: no sync)
                        self.save(final=end, sync=False)
            if save_now and o.chart and self.rank == 0:
                draw_chart(self.backup / "chart.png", self.history["iters"], self.history["loss"],
                           self.history["map_iters"], self.history["map"],
                           f"{self.kind} {self.stem}  (iteration {self.iteration}/{net.max_batches})",
                           net.max_batches)
        bar.close()
        summary = {"iterations": self.iteration, "final_loss": self.avg_loss,
                   "best_map": self.best_map if self.best_map >= 0 else None,
                   "images_per_s": n_images * self.world / max(time.time() - t_start, 1e-9),
                   "weights": str(self.backup / f"{self.stem}_final.weights")}
        if self.rank == 0:
            atomic_write(self.backup / f"{self.stem}_summary.json", json.dumps(summary, indent=2) + "\n")
        if self.world > 1:  # no rank leaves (and tears its process group down) while another still works
            torch.distributed.barrier()
        return summary


def shutdown_distributed():
    """End a torchrun run cleanly: every rank meets at a barrier, then drops its process group
    (a rank tearing gloo down while its peer still talks to it can abort the peer)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def add_train_arguments(p):
    """Options shared by `train`, `distill` and `adapt`."""
    p.add_argument("--backup", help="output folder (default: backup= of the .data file)")
    p.add_argument("--max-batches", type=int, help="override [net] max_batches (steps are rescaled)")
    p.add_argument("--batch", type=int, help="override [net] batch")
    p.add_argument("--subdivisions", type=int, help="override [net] subdivisions")
    p.add_argument("--workers", type=int, default=2, help="data loader processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms (exact resume)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast on CPU")
    p.add_argument("--amp", action="store_true", help="float16 autocast + GradScaler on CUDA")
    p.add_argument("--ema", type=float, default=0.0, help="EMA decay of the weights (e.g. 0.999; 0 = off)")
    p.add_argument("--save-every", type=int, default=100, help="iterations between _last.weights/checkpoints")
    p.add_argument("--map-every", type=int, default=0, help="iterations between mAP evaluations "
                   "(default max_batches/10)")
    p.add_argument("--resume", action="store_true", help="continue from <backup>/<cfg>_last.ckpt")
    p.add_argument("--clear", action="store_true", help="restart the iteration count of WEIGHTS (Darknet -clear)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--nchw", action="store_true", help="keep NCHW activations (default: channels-last, faster on CPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def options_from_args(args) -> TrainOptions:
    return TrainOptions(backup=args.backup, max_batches=args.max_batches, batch=args.batch,
                        subdivisions=args.subdivisions, workers=args.workers, seed=args.seed,
                        deterministic=args.deterministic, bf16=args.bf16, amp=args.amp, ema=args.ema,
                        save_every=args.save_every, map_every=args.map_every, resume=args.resume,
                        clear=args.clear, device=args.device, threads=args.threads, progress=not args.quiet,
                        channels_last=not args.nchw)


def add_parser(sub):
    p = sub.add_parser("train", help="train a detector (darknet detector train DATA CFG [WEIGHTS])")
    p.add_argument("data")
    p.add_argument("cfg")
    p.add_argument("weights", nargs="?")
    add_train_arguments(p)
    p.set_defaults(func=run_command)


def run_command(args):
    summary = Trainer(args.data, args.cfg, args.weights, options_from_args(args)).run()
    print(json.dumps(summary, indent=2))
    shutdown_distributed()
    return 0
