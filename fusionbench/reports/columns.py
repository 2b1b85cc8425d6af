"""The column contract of runs.csv / leaderboard.csv / robustness.csv, and condition names → kind, level, order."""
from __future__ import annotations

import re


RUN_KEYS = ["run_id", "fusion", "dataset", "preset", "config_hash", "protocol", "init", "seed", "condition", "status"]
# protocol: train.protocol (finetune | linear_probe); init: where the weights came from (random, pretrain:<run id> of
# the pretraining run that saved init.model, or <role>=<file name>; tags fb.protocol / fb.init, fusionbench.init)
RUN_DEFAULTS = {"protocol": "finetune", "init": "random"}  # runs recorded before the tags existed
COST_METRICS = {  # runs.csv column → MLflow metric
    "params": "model/params",
    "gflops": "model/gflops",
    "gflops_masked": "model/gflops_masked",
    "gflops_fwd_bwd": "model/gflops_fwd_bwd",  # one training step's FLOPs per clip (FlopCounterMode)
    "train_clips_s": "cost/train_clips_s",  # training clips per second of fit wall time (validation included)
    "peak_mem_mb": "cost/peak_mem_mb",  # CUDA max allocated; CPU peak RSS growth over the fit
    "train_s": "time/train_s",
    "test_s": "time/test_s",
    "epochs": "train/epochs",  # epochs run: fewer than train.max_epochs where train.stop_val_loss stopped the run
}
KNOWN_METRICS = ["top1", "top5", "mAP", "loss"]  # runs.csv metric columns come in this order, others after, sorted
PROBE_METRICS = {  # column → MLflow metric of the run's leak probe (accuracy of one modality alone; its ceiling)
    "leak_probe_audio": "data/leak_probe/audio",
    "leak_probe_video": "data/leak_probe/video",
    "leak_probe_ceiling": "data/leak_probe/ceiling",
    "leak_probe_tolerance": "data/leak_probe/tolerance",
}
PROBE_MODALITIES = ("audio", "video")
PROBE_TOLERANCE = 0.05  # the probe's smallest tolerance: used where a run logged none
# leak_probe_leak: "none", or the leaking modalities joined by ";"; empty where no probe was recorded
PROBE_COLUMNS = ["leak_probe_set", *PROBE_METRICS, "leak_probe_leak"]
REFERENCE_METRICS = {  # column → MLflow metric logged by train.py: what a model that learnt nothing scores
    "chance": "data/chance",  # 1 / num_classes (top-1 of a uniform guess); absent for multi-label sets
    "majority": "data/majority_test",  # the most frequent test class's share (top-1 of always naming it)
    "num_classes": "data/num_classes",
}
# runs.csv = RUN_KEYS + metric columns (KNOWN_METRICS first) + list(COST_METRICS) + PROBE_COLUMNS
#            + list(REFERENCE_METRICS)

LEADERBOARD_COLUMNS = [
    "fusion", "dataset", "protocol", "init", "condition", "metric", "mean", "std", "n_seeds", "ci95_low", "ci95_high",
    "params", "gflops", "train_clips_s", "peak_mem_mb", "preset", "config_hash",
    *PROBE_METRICS, "leak_probe_leak",  # the entry's probe (mean over its runs; leak: any run's)
    "chance", "majority",  # the entry's reference rates (mean over its runs; NaN where not logged)
]
ROBUSTNESS_COLUMNS = [
    "fusion", "dataset", "preset", "config_hash", "protocol", "init", "kind", "metric", "levels", "clean", "mean_corrupted",
    "auc", "relative_auc", "effective_robustness", "n_seeds",
    "chance", "majority",  # relative_auc / effective_robustness are NaN unless clean is above both (see robustness)
]
GROUP = ["fusion", "dataset", "preset", "config_hash", "protocol", "init"]
ENTRY_COST = ["params", "gflops", "train_clips_s", "peak_mem_mb"]  # an entry's cost beside its scores (run means)
PARETO_X = {  # leaderboard.csv column → the Pareto plot's x-axis label (any cost can be the x-axis)
    "gflops": "GFLOPs per clip (forward)",
    "params": "parameters",
    "train_clips_s": "training clips / s (higher is cheaper)",
    "peak_mem_mb": "peak memory (MiB)",
}  # one leaderboard entry (seeds are averaged within it)
CLEAN_CONDITIONS = ["av", "audio_only", "video_only"]
CORRUPTION_KINDS = ["audio_snr", "video_noise", "video_occlusion", "video_occlusion_black"]
_CORRUPTION = re.compile(r"^(audio_snr|video_noise|video_occlusion_black|video_occlusion)_(-?\d+(?:\.\d+)?)$")
BOUNDED_METRICS = ("top1", "top5", "mAP")  # fractions in [0, 1]: their CIs are clipped to it, shown in percent
BASELINE = "late"  # effective robustness is measured against late fusion's clean → corrupted relation
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}




def condition_kind(name: str) -> tuple[str | None, float]:
    """(corruption kind, level) of a condition name; (None, 0) for clean conditions and unknown names."""
    match = _CORRUPTION.match(name)
    return (match.group(1), float(match.group(2))) if match else (None, 0.0)


def severity(kind: str, level: float) -> float:
    """Larger = more corrupted (SNR goes the other way)."""
    return -level if kind == "audio_snr" else level


def condition_order(name: str) -> tuple:
    """av, audio_only, video_only; then corruptions by kind and increasing severity; then anything else."""
    if name in CLEAN_CONDITIONS:
        return (0, CLEAN_CONDITIONS.index(name), 0.0, name)
    kind, level = condition_kind(name)
    if kind is not None:
        return (1, CORRUPTION_KINDS.index(kind), severity(kind, level), name)
    return (2, 0, 0.0, name)


