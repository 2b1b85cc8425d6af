"""The ``init`` config applied to a freshly built model: pretrained weights from local files, and what they filled.

- ``init.model``: a whole fusionbench checkpoint (a state dict, a Lightning ``.ckpt`` whose ``state_dict`` keys
  start with ``model.``, or safetensors), loaded strictly: any missing, unexpected or mis-shaped key is one error.
- ``init.video`` / ``init.audio``: a ViT checkpoint into the video / audio tower (late, mid, mbt, deepavfusion), or
  into the shared backbone of early / zorro. Pass the same file to both to start every tower from it (MBT starts
  both towers from ImageNet ViT-B/16). Shared backbone with both given: blocks, CLS and final norm from
  ``init.video``, the audio tokenizer (patch embedding, positions) from ``init.audio`` (fusionbench's rule). Two-tower
  fusions share one final LayerNorm: it comes from ``init.video`` when both are given.
- Parameters no checkpoint has (bottlenecks, fusion tokens, readout queries, heads, the other tower) keep their
  random initialisation and are listed as ``not_in_checkpoint``; checkpoint keys that were not used are listed too.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from fusionbench.errors import UserError
from fusionbench.nn import pretrained


@dataclass
class InitReport:
    """What the ``init`` config filled, what it left as initialised, and what it did not use."""

    sources: dict[str, dict[str, str]] = field(default_factory=dict)  # role → {path, layout}
    loaded: list[str] = field(default_factory=list)
    not_in_checkpoint: list[str] = field(default_factory=list)
    unused: dict[str, list[str]] = field(default_factory=dict)  # role → checkpoint keys not used
    adapted: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, str]:
        """Flat tags for the run: sources, layouts and counts."""
        tags = {f"init/{role}_{k}": src[k] for role, src in self.sources.items() for k in ("layout", "sha256")}
        tags |= {"init/loaded": len(self.loaded), "init/not_in_checkpoint": len(self.not_in_checkpoint),
                 "init/unused": sum(len(v) for v in self.unused.values())}
        return {k: str(v) for k, v in tags.items()}

    def line(self) -> str:
        """One line for the console: sources, then counts."""
        src = ", ".join(f"{role} ← {v['path']} ({v['layout']})" for role, v in self.sources.items())
        unused = sum(len(v) for v in self.unused.values())
        return (f"init: {src}: {len(self.loaded)} tensors loaded, {len(self.not_in_checkpoint)} not in the checkpoint "
                f"(initialised as without it), {unused} checkpoint keys unused; details in init_report.json")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def apply_init(model: nn.Module, init: Any) -> InitReport | None:
    """Load what ``init`` names into ``model`` (in place); None when every path is empty (random initialisation)."""
    paths = {role: str(getattr(init, role, "") or "") for role in ("model", "video", "audio")}
    if not any(paths.values()):
        return None
    if paths["model"] and (paths["video"] or paths["audio"]):
        raise UserError("init.model loads the whole model; give it alone, not with init.video / init.audio",
                        where="command line")
    report = InitReport()
    if paths["model"]:
        load_whole(model, paths["model"], report)
    else:
        load_towers(model, paths, str(getattr(init, "inflate", "central")), report)
    filled = set(report.loaded)
    report.not_in_checkpoint = [k for k in model.state_dict() if k not in filled]
    return report


def load_whole(model: nn.Module, path: str, report: InitReport) -> None:
    """Strict: the checkpoint must hold exactly the model's keys, at the model's shapes."""
    state = pretrained.read_state_dict(path)
    if state and all(k.startswith("model.") for k in state):  # a ClassifyTask's Lightning checkpoint
        state = {k.removeprefix("model."): v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state
              and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{name} {len(keys)}: {', '.join(keys[:5])}{', …' if len(keys) > 5 else ''}"
                 for name, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)) if keys]
        raise UserError(f"not a checkpoint of this model ({type(model).__name__}): {'; '.join(parts)}", where=path)
    model.load_state_dict(state, strict=True)
    report.sources["model"] = {"path": path, "layout": "fusionbench", "sha256": file_sha256(path)}
    report.loaded = list(own)


def load_towers(model: nn.Module, paths: dict[str, str], inflate: str, report: InitReport) -> None:
    """``init.video`` / ``init.audio`` ViT checkpoints into their towers or the shared backbone."""
    shared = pretrained.shares_backbone(model)
    both = bool(paths["video"] and paths["audio"])
    for role in ("video", "audio"):  # video first: it owns the shared parts when both are given
        if not paths[role]:
            continue
        ckpt = pretrained.read_vit(paths[role])
        secondary = both and role == "audio"
        entries, used, notes = pretrained.tower_state(
            ckpt, model, role, tokenizer_only=shared and secondary, skip_norm=secondary and not shared
            and hasattr(model, "towers"), inflate=inflate,
        )
        pretrained.load_entries(model, entries, where=paths[role])
        report.sources[role] = {"path": paths[role], "layout": ckpt.layout, "sha256": file_sha256(paths[role])}
        report.loaded += [k for k in entries if k not in report.loaded]
        report.unused[role] = [k for k in ckpt.state if k not in set(used)]
        report.adapted += notes


def file_sha256(path: str) -> str:
    """The checkpoint file's content hash (the config holds only its path)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def log_init(tracked: Any, model: nn.Module, log: Callable[[str], None] = print) -> None:
    """Tags (sources, layouts, counts) and ``init_report.json`` (every key) on the tracked run, from the
    ``init_report`` ``train.build`` left on the model (or on the module a protocol wrapper holds)."""
    report = next((m.init_report for m in model.modules() if getattr(m, "init_report", None) is not None), None)
    if report is None:
        return
    log(report.line())
    tracked.set_tags({**report.summary(), **provenance_tags(report, tracked.pretrain_run_with)})
    tracked.log_text(report.to_json(), "init_report.json")


def provenance_tags(report: InitReport, pretrain_run_with: Callable[[str], str | None]) -> dict[str, str]:
    """``fb.init`` (a leaderboard column) and ``fb.pretrain_run``: where the weights came from.

    ``init.model`` written by a pretraining run of the same store → ``pretrain:<run id>`` (found by the file's
    sha256, so a copied or moved ``encoder.pt`` is still traced; ``fb.pretrain_run`` links the two runs); any other
    file → ``<role>=<file name>`` per role, joined by ``;``. A run without ``init`` is tagged ``random`` when it
    starts (``tracking.tracked_run``)."""
    model = report.sources.get("model")
    run_id = pretrain_run_with(model["sha256"]) if model else None
    if run_id:
        return {"fb.init": f"pretrain:{run_id}", "fb.pretrain_run": run_id}
    return {"fb.init": ";".join(f"{role}={Path(src['path']).name}" for role, src in report.sources.items())}
