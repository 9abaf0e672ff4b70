"""The pretraining loop: the NASNet ImageNet recipe, on 1 CPU process or N GPUs via torchrun.

One step: set ScheduledDropPath progress ``step / total_steps`` -> lr from the schedule ->
forward (logits, aux logits) -> label-smoothed CE + 0.4 * aux CE -> backward (DDP averages
gradients) -> clip by global norm -> TF RMSProp -> EMA update. Everything that changes across steps
is either in the checkpoint or a pure function of ``step`` (lr, drop path, sampler position), which
is what makes a killed run resume to bit-identical state.
"""
from __future__ import annotations

import importlib
import json
import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..durable import OutputLock, atomic_write_json, atomic_write_text
from .checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    load_model_state_strict,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import ConfigError, PretrainConfig, network_config
from .data import (
    GlobalBatchSampler,
    SeededImageFolder,
    batches,
    build_loader,
    check_classes,
    eval_transform,
    train_transform,
)
from .distributed import DistInfo, all_gather_objects, all_reduce_sum, barrier, cleanup, init_distributed
from .optim import LRSchedule, ModelEMA, build_optimizer, set_lr

logger = logging.getLogger("nasnet_det.pretrain")


# ---------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------
def build_model(cfg: PretrainConfig, num_classes: int) -> nn.Module:
    """The network of ``cfg.model``: ``arch`` + ``overrides`` (resolve_network), or an import-path factory."""
    m = cfg.model
    if m.factory:
        return _import_factory(m.factory)(num_classes=num_classes, **dict(m.overrides))
    from nasnet_det.modeling import NASNet

    return NASNet(network_config(cfg, num_classes))


def _import_factory(spec: str):
    """``package.module:function`` -> the function; a missing module or name is one ConfigError."""
    module_name, func = spec.split(":", 1)
    try:
        return getattr(importlib.import_module(module_name), func)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"model.factory={spec!r}: cannot import it ({err})") from None


def build_train_model(cfg: PretrainConfig, num_classes: int, device: torch.device) -> nn.Module:
    """``build_model`` on ``device`` with the train section's model options applied (before any DDP wrap).

    ``train.memory_saving`` checkpoints every cell and the stem conv (``enable_memory_saving``):
    training activation memory drops to the cell boundaries plus one cell's interior for about one
    extra forward of compute, with the same outputs, gradients and state_dict keys; it is what lets a
    batch that does not fit otherwise train. ``train.channels_last`` stores the weights NHWC.
    """
    model = build_model(cfg, num_classes).to(device)
    if cfg.train.memory_saving:
        from nasnet_det.modeling.memory import enable_memory_saving

        try:
            enable_memory_saving(model)
        except TypeError as err:
            raise ConfigError(f"train.memory_saving: {err}") from err
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    """train(), but BN in eval mode when ``freeze_bn`` (running statistics, affine still trained).

    Why: per-process BN batch statistics make an N-process run differ from a 1-process run with the
    same global batch; frozen BN (or SyncBN on GPUs) removes that difference. It is also the usual
    setting for fine-tuning with tiny batches.
    """
    model.train()
    if freeze_bn:
        for mod in model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.eval()


def split_outputs(out) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(out, (tuple, list)):
        return out[0], (out[1] if len(out) > 1 else None)
    return out, None


def open_tensorboard(log_dir: Path):
    """A TensorBoard SummaryWriter that does not import TensorFlow.

    Why: tensorboard falls back to TensorFlow's file system layer whenever TensorFlow is installed,
    which costs ~15 s of import time per process; its own stub does everything a scalar log needs.
    Registering the (empty) ``tensorboard.compat.notf`` module is tensorboard's switch for the stub.
    """
    import sys
    import types

    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(log_dir))


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: nn.Module, loader, info: DistInfo, amp_ctx, channels_last: bool) -> dict:
    """Top-1 / top-5 accuracy (%) and mean CE loss over this rank's shard, summed over ranks."""
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64)  # correct1, correct5, loss_sum, count
    for images, labels in batches(loader):
        images, labels = images.to(info.device, non_blocking=True), labels.to(info.device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with amp_ctx():
            logits, _ = split_outputs(model(images))
        logits = logits.float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit = top.eq(labels[:, None])
        totals += torch.tensor([hit[:, 0].sum().item(), hit.any(dim=1).sum().item(),
                                F.cross_entropy(logits, labels, reduction="sum").item(), labels.numel()],
                               dtype=torch.float64)
    all_reduce_sum(totals, info)
    n = max(1.0, totals[3].item())
    return {"top1": 100.0 * totals[0].item() / n, "top5": 100.0 * totals[1].item() / n,
            "loss": totals[2].item() / n, "count": int(totals[3].item())}


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
def _record_up_to(line: str, step: int) -> bool:
    """Whether a metrics.jsonl line is a record the state at ``step`` includes.

    Summaries are dropped (the resumed run writes its own), and so are torn or garbled lines.
    """
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return (isinstance(record, dict) and record.get("kind") != "summary"
            and isinstance(record.get("step"), int) and record["step"] <= step)


class Pretrainer:
    """Holds the run's state; ``run()`` trains to ``total_steps``, resuming if a checkpoint exists.

    The constructor reads and checks every input (data folders, classes, model, optimizer) and
    writes nothing, so a bad input never touches the output folder; ``run()`` takes the folder.
    """

    def __init__(self, cfg: PretrainConfig) -> None:
        self.cfg = cfg
        t = cfg.train
        self.info = init_distributed(t.device)
        if t.threads > 0:
            torch.set_num_threads(t.threads)
        self.out = Path(t.output_dir)

        d = cfg.data
        self.train_set = SeededImageFolder(
            d.train_dir, train_transform(d.image_size, d.min_crop_area, d.color_jitter, d.cifar_style),
            seed=t.seed, per_class_limit=d.train_subset)
        self.val_set = None
        if d.val_dir:
            self.val_set = SeededImageFolder(d.val_dir, eval_transform(d.image_size, d.eval_resize, d.cifar_style),
                                             seed=t.seed, per_class_limit=d.val_subset)
        num_classes = check_classes(d.train_dir, self.train_set.classes, d.val_dir,
                                    self.val_set.classes if self.val_set else None, cfg.model.num_classes)
        if num_classes > len(self.train_set.classes) and self.info.is_main:
            logger.warning("model.num_classes=%d > %d class folders: the extra logits are never trained",
                           num_classes, len(self.train_set.classes))

        # Same seed on every rank for the weights; DDP also broadcasts rank 0's at wrap time.
        torch.manual_seed(t.seed)
        self.model = build_train_model(cfg, num_classes, self.info.device)
        self.ema = ModelEMA(self.model, cfg.optim.ema_decay, cfg.optim.ema_warmup) if cfg.optim.ema_decay > 0 else None
        # Dropout / drop path streams differ per rank (as on real replicas).
        torch.manual_seed(t.seed + 1000 * self.info.rank)

        self.global_batch = t.batch_size * self.info.world_size
        probe = GlobalBatchSampler(len(self.train_set), t.batch_size, self.info.rank, self.info.world_size, t.seed)
        self.steps_per_epoch = probe.batches_per_epoch
        self.total_steps = t.max_steps if t.max_steps > 0 else max(1, int(round(t.epochs * self.steps_per_epoch)))
        base_lr = cfg.optim.lr * self.global_batch / cfg.optim.lr_batch_size
        self.schedule = LRSchedule(base_lr, self.steps_per_epoch, self.total_steps, cfg.optim.schedule,
                                   cfg.optim.lr_decay_rate, cfg.optim.lr_decay_epochs, cfg.optim.warmup_epochs,
                                   cfg.optim.min_lr)
        self.optimizer = build_optimizer(self.model, cfg, base_lr)
        self.clip = cfg.resolved_clip_norm()

        dev = self.info.device.type
        if t.amp_dtype == "auto":
            self.amp_dtype = torch.bfloat16 if dev == "cpu" else torch.float16
        else:
            self.amp_dtype = getattr(torch, t.amp_dtype)
        self.scaler = torch.amp.GradScaler(dev, enabled=t.amp and self.amp_dtype == torch.float16)

        self.ddp = self.model
        if self.info.distributed:
            ids = [self.info.local_rank] if dev == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.step = 0
        self.writer = None
        self.metrics_file = self.out / "metrics.jsonl"

    # -- helpers ---------------------------------------------------------------------------
    def amp_ctx(self):
        if not self.cfg.train.amp:
            return nullcontext()
        return torch.autocast(self.info.device.type, dtype=self.amp_dtype)

    def own_output(self):
        """The output folder's lock, held by the main process for the whole run (others: a no-op)."""
        return OutputLock(self.out, "pretraining") if self.info.is_main else nullcontext()

    def rewind_metrics(self) -> None:
        """Cut metrics.jsonl back to the records up to ``self.step`` (atomically).

        Why: a run killed after its checkpoint at step s had already logged steps s+1.., which the
        resumed run trains and logs again; without this they would appear twice.
        """
        if not self.info.is_main or not self.metrics_file.exists():
            return
        lines = self.metrics_file.read_text(encoding="utf-8", errors="replace").splitlines()
        atomic_write_text(self.metrics_file, "".join(f"{line}\n" for line in lines if _record_up_to(line, self.step)))

    def log(self, record: dict) -> None:
        if not self.info.is_main:
            return
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k, v in record.items():
                if k not in ("step", "kind") and isinstance(v, (int, float)):
                    self.writer.add_scalar(f"{record.get('kind', 'train')}/{k}", v, record["step"])

    def state(self) -> dict:
        rngs = all_gather_objects(rng_state(), self.info)
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "total_steps": self.total_steps,
            "global_batch": self.global_batch,
            "schedule": self.schedule.state_dict(),
            "rng": rngs,
            "config": self.cfg.to_dict(),
        }

    def save(self) -> None:
        state = self.state()  # collective: every rank takes part in the RNG gather
        if self.info.is_main:
            save_checkpoint(state, self.out, self.step, self.cfg.train.keep_checkpoints)
        barrier(self.info)

    def maybe_resume(self) -> None:
        r = self.cfg.train.resume
        if r == "never":
            return
        path = latest_checkpoint(self.out) if r == "auto" else Path(r)
        if path is None:
            return
        state = load_checkpoint(path)
        if state["config"].get("model") != self.cfg.to_dict()["model"]:
            raise CheckpointError(f"{str(path)!r} was written for model {state['config'].get('model')}, "
                                  f"but this run builds {self.cfg.to_dict()['model']}")
        load_model_state_strict(self.model, state["model"], f"checkpoint {str(path)!r}")
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        if state.get("global_batch") != self.global_batch:
            logger.warning("resuming with global batch %s (checkpoint: %s): not an exact resume",
                           self.global_batch, state.get("global_batch"))
        rngs = state.get("rng") or []
        if self.info.rank < len(rngs):
            set_rng_state(rngs[self.info.rank])
        if self.info.is_main:
            logger.info("resumed from %s at step %d", path, self.step)

    # -- loop ------------------------------------------------------------------------------
    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        cfg, t = self.cfg, self.cfg.train
        set_train_mode(self.ddp, t.freeze_bn)
        net = unwrap(self.ddp)
        if hasattr(net, "set_drop_path_progress"):
            net.set_drop_path_progress(self.step / self.total_steps)
        lr = self.schedule(self.step)
        set_lr(self.optimizer, lr)
        images, labels = images.to(self.info.device, non_blocking=True), labels.to(self.info.device)
        if t.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with self.amp_ctx():
            logits, aux = split_outputs(self.ddp(images))
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.optim.label_smoothing)
            if aux is not None and cfg.optim.aux_loss_weight > 0:
                loss = loss + cfg.optim.aux_loss_weight * F.cross_entropy(
                    aux.float(), labels, label_smoothing=cfg.optim.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        return loss.detach().item(), lr

    def run_eval(self) -> dict:
        if self.val_set is None:
            return {}
        idx = list(range(self.info.rank, len(self.val_set), self.info.world_size))
        loader = build_loader(self.val_set, batch_size=self.cfg.train.batch_size, indices=idx,
                              workers=self.cfg.data.workers, seed=self.cfg.train.seed)
        results = {}
        results.update({f"raw_{k}": v for k, v in evaluate(self.model, loader, self.info, self.amp_ctx,
                                                           self.cfg.train.channels_last).items()})
        if self.ema is not None and self.cfg.train.eval_ema:
            results.update({f"ema_{k}": v for k, v in evaluate(self.ema.module, loader, self.info, self.amp_ctx,
                                                               self.cfg.train.channels_last).items()})
        self.log({"kind": "eval", "step": self.step, **results})
        return results

    def run(self) -> dict:
        """Own the output folder, resume (or start), record the config, train."""
        with self.own_output():
            self.maybe_resume()
            self.rewind_metrics()
            if self.info.is_main:
                atomic_write_json(self.out / "config.json", self.cfg.to_dict())
            return self.train_loop()

    def train_loop(self) -> dict:
        """Train from ``self.step`` to ``total_steps``; checkpoints, evaluations, the final export."""
        t = self.cfg.train
        if self.info.is_main and t.tensorboard:
            self.writer = open_tensorboard(self.out / "tb")
        bar = None
        if self.info.is_main and t.progress_bar:
            from tqdm import tqdm

            bar = tqdm(total=self.total_steps, initial=self.step, desc="pretrain", dynamic_ncols=True)
        eval_every = max(1, int(round(t.eval_every_epochs * self.steps_per_epoch)))
        results: dict = {}
        start = time.time()
        while self.step < self.total_steps:
            epoch, start_batch = divmod(self.step, self.steps_per_epoch)
            sampler = GlobalBatchSampler(len(self.train_set), t.batch_size, self.info.rank, self.info.world_size,
                                         t.seed, epoch, start_batch)
            loader = build_loader(self.train_set, batch_sampler=sampler, workers=self.cfg.data.workers,
                                  seed=t.seed + epoch)
            for images, labels in batches(loader):
                loss, lr = self.train_step(images, labels)
                loss_t = all_reduce_sum(torch.tensor([loss], dtype=torch.float64), self.info)
                global_loss = loss_t.item() / self.info.world_size
                if not math.isfinite(global_loss):
                    raise ConfigError(f"optim.lr: the loss is {global_loss} at step {self.step} (lr {lr:.3g}); "
                                      "lower optim.lr or raise optim.warmup_epochs")
                if self.step % max(1, t.log_every_steps) == 0 or self.step == 1:
                    self.log({"kind": "train", "step": self.step, "loss": global_loss, "lr": lr,
                              "epoch": self.step / self.steps_per_epoch})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{global_loss:.3f}", lr=f"{lr:.3g}")
                end_of_epoch = self.step % self.steps_per_epoch == 0
                if (t.checkpoint_every_steps and self.step % t.checkpoint_every_steps == 0) or end_of_epoch \
                        or self.step == self.total_steps:
                    self.save()
                if self.step % eval_every == 0 or self.step == self.total_steps:
                    results = self.run_eval()
                if self.step >= self.total_steps:
                    break
        if bar is not None:
            bar.close()
        if self.info.is_main:
            self.export_final()
            summary = {"kind": "summary", "step": self.step, "seconds": time.time() - start, **results}
            self.log(summary)
        if self.writer is not None:
            self.writer.close()
        barrier(self.info)
        return results

    def export_final(self) -> Path:
        """EMA (or raw) weights as ``model_final.safetensors`` with the architecture in the metadata."""
        from nasnet_det.weights.io import save_weights

        model = self.ema.module if self.ema is not None else self.model
        path = self.out / "model_final.safetensors"
        save_weights(model.state_dict(), path, model=model, source=f"nasnet_det.pretrain step {self.step}",
                     extra={"pretrain_config": json.dumps(self.cfg.to_dict())})
        return path


def run_pretraining(cfg: PretrainConfig) -> dict:
    trainer = Pretrainer(cfg)
    try:
        return trainer.run()
    finally:
        cleanup(trainer.info)
