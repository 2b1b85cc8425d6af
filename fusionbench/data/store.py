"""Prepare the decoded-tensor store (``cache.py``'s split folders): decode each split once, over cores, resumably.

``prepare_split`` decodes a split's clips in a process pool (``media.decode_job`` + the fbank, in the workers) into
``<key>/<split>.partial/``: ``frames.npy`` / ``fbank.npy`` (/ ``waveform.npy``) preallocated for every clip, each
clip written at its row, and a record per finished chunk of ``chunk`` clips (``chunks/<c>.json``: each clip's
presence, padding and skip reason), written after the chunk's rows are fsync'd. A killed prepare (SIGKILL included)
resumes at the first chunk without a record; decoding is deterministic per clip, so the arrays are bit-identical to
an uninterrupted prepare's. When every chunk is recorded the split is completed: the clips left out are compacted
away (rows copied; hard links when none is), the per-clip arrays written, and the folder renamed to ``<split>/``
with its ``COMPLETE`` marker (``cache.complete_split``): readable only once complete. One lock per split
(``<key>/.<split>.lock``): two processes never write one split.

Missing modalities (``data.missing_modality``, fusionbench's rule for a file without an audio or a video stream):
``absent`` keeps the clip with ``has_audio`` / ``has_video`` False and zeros in that modality's tensors (the batch's
``audio_present`` / ``video_present`` masks keep them from the model); ``skip`` leaves it out, listed in ``skipped``
with a reason naming the setting; ``error`` raises ``MediaError`` naming the file, whatever ``data.on_error`` says.

``prepare_config`` (``fusionbench data prepare``; the sweep's ``warm_cache``) does it for every split and the
corrupted test splits of ``eval.conditions``, with a progress line and a throughput line per split.
"""
from __future__ import annotations

import functools
import json
import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from omegaconf import DictConfig

from fusionbench.data.cache import (
    CACHE_VERSION, FBANK_DTYPE, DecodedSplit, SplitCache, atomic_write, fsync_path, complete_split, read_split,
)
from fusionbench.data.datasets.synth import set_lock
from fusionbench.data.features import AudioFeatures, single_thread
from fusionbench.data.media import DecodedClip, MediaError, decode_job
from fusionbench.data.synthetic import ConsoleLine
from fusionbench.errors import UserError

CHUNK_CLIPS = 64  # clips per durable chunk record (≈1–3 s of decoding on 2 cores)
PARALLEL_DECODE_MIN = 200  # decode in a process pool only above this many clips
POLICY_SKIP = "left out by data.missing_modality=skip"
PROGRESS_EVERY_S = 5.0  # a progress line this often when the output is not a terminal


class StoredAudioFeatures(AudioFeatures):
    """``AudioFeatures`` whose ``raw`` fbank is at the store's precision (``cache.FBANK_DTYPE``), so every path that
    recomputes an fbank (a corrupted test set, the per-clip reference path) gives the bits the store holds."""

    def raw(self, waveform: torch.Tensor) -> torch.Tensor:
        return super().raw(waveform).to(FBANK_DTYPE)  # (1, n_mels, target_length)


@dataclass
class SplitPlan:
    """What one split decodes: (manifest row, path, ``decode_clip`` kwargs) per clip, and the geometry."""

    jobs: list[tuple[int, str, dict[str, Any]]]
    num_frames: int
    size: int
    samples: int  # waveform samples per clip
    fbank_shape: tuple[int, int]  # (n_mels, target_length)
    keep_waveform: bool

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-clip array shapes of the rows the store preallocates."""
        out = {"frames": (self.num_frames, self.size, self.size, 3), "fbank": (1, *self.fbank_shape)}
        if self.keep_waveform:
            out["waveform"] = (self.samples,)
        return out


@dataclass
class Decoded:
    """One decoded clip as the store keeps it (numpy, from a worker)."""

    frames: np.ndarray  # uint8 (T, H, W, 3); zeros without video
    fbank: np.ndarray  # float16 (1, n_mels, L); zeros without audio
    waveform: np.ndarray | None  # float32 (S,), where kept
    has_audio: bool
    has_video: bool
    padded_frames: int
    padded_audio_s: float


@dataclass
class SplitStats:
    """What ``prepare_split`` did for one split."""

    split: str
    clips: int  # clips listed
    decoded: int  # decoded by this call
    resumed: int  # found decoded by an earlier (killed) prepare
    kept: int
    skipped: int
    seconds: float
    cached: bool = False  # the split was complete already

    def line(self) -> str:
        if self.cached:
            return f"{self.split}: {self.kept} clips (already prepared)"
        rate = self.decoded / self.seconds if self.seconds > 0 else float("inf")
        extra = [f"{self.resumed} from an earlier prepare"] if self.resumed else []
        extra += [f"{self.skipped} skipped"] if self.skipped else []
        return (f"{self.split}: {self.decoded} clips in {self.seconds:.1f} s ({rate:.1f} clips/s)"
                + (f" ({', '.join(extra)})" if extra else ""))


# ------------------------------------------------------------------------------------------------ decoding


def _decode_features(job: tuple[int, str, dict[str, Any]], audio: AudioFeatures,
                     keep_waveform: bool) -> tuple[int, Decoded | MediaError]:
    """A worker's job: decode one clip (``media.decode_job``) and compute its raw fbank."""
    key, out = decode_job(job)
    if isinstance(out, MediaError):
        return key, out
    return key, _features(out, audio, keep_waveform)


def _features(out: DecodedClip, audio: AudioFeatures, keep_waveform: bool) -> Decoded:
    n_mels, length = audio.shape
    with single_thread():
        fbank = (audio.raw(torch.from_numpy(out.waveform)).to(FBANK_DTYPE).numpy() if out.has_audio
                 else np.zeros((1, n_mels, length), np.float16))  # (1, n_mels, L)
    return Decoded(out.frames, fbank, out.waveform if keep_waveform else None, bool(out.has_audio),
                   bool(out.video_present), int(out.padded_frames), float(out.padded_audio_s))


def decode_clips(
    jobs: Sequence[tuple[int, str, dict[str, Any]]], audio: AudioFeatures, *, keep_waveform: bool, workers: int = 1,
    min_parallel: int = PARALLEL_DECODE_MIN,
) -> Iterator[tuple[int, Decoded | MediaError]]:
    """(key, ``Decoded`` or the ``MediaError``) per job, in the jobs' order; a process pool of ``workers`` when there
    are at least ``min_parallel`` jobs (the same results)."""
    work = functools.partial(_decode_features, audio=audio, keep_waveform=keep_waveform)
    if workers > 1 and len(jobs) >= max(2, min_parallel):
        # fork, as DataLoader workers do; each child runs its torch ops on one thread (single_thread)
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(min(workers, len(jobs))) as pool:
            yield from pool.imap(work, jobs, chunksize=max(1, min(16, len(jobs) // (8 * workers))))
    else:
        yield from map(work, jobs)


def judge(path: str, result: Decoded | MediaError, *, missing_modality: str, on_error: str) -> str | None:
    """None if the clip is kept, else why it is left out (the module's policies); raises what they raise."""
    if isinstance(result, MediaError):
        if on_error == "raise":
            raise result
        return result.reason
    missing = [kind for kind, present in (("audio", result.has_audio), ("video", result.has_video)) if not present]
    if not missing or missing_modality == "absent":
        return None
    what = " and ".join(f"no {kind} stream" for kind in missing)
    if missing_modality == "error":
        raise MediaError(path, f"{what} (data.missing_modality=error; data.missing_modality=absent keeps such clips "
                               f"with the modality marked absent, =skip leaves them out)")
    return f"{what} ({POLICY_SKIP})"


def is_policy_skip(reason: str) -> bool:
    """A skip by ``data.missing_modality=skip`` (not a decoding failure, which ``data.on_error=raise`` refuses)."""
    return reason.endswith(f"({POLICY_SKIP})")


def decode_split(plan: SplitPlan, audio: AudioFeatures, *, missing_modality: str = "absent", on_error: str = "raise",
                 workers: int = 1, min_parallel: int = PARALLEL_DECODE_MIN) -> DecodedSplit:
    """A split decoded in memory (no store: ``data.cache_dir=""``), the same tensors ``prepare_split`` stores."""
    kept: list[tuple[int, Decoded]] = []
    skipped: list[tuple[str, str]] = []
    paths = {row: path for row, path, _ in plan.jobs}
    for row, result in decode_clips(plan.jobs, audio, keep_waveform=plan.keep_waveform, workers=workers,
                                    min_parallel=min_parallel):
        reason = judge(paths[row], result, missing_modality=missing_modality, on_error=on_error)
        if reason is None:
            kept.append((row, result))
        else:
            skipped.append((str(getattr(result, "path", paths[row])), reason))
    shapes = plan.shapes()

    def stack(name: str, dtype: Any) -> torch.Tensor:
        rows = [getattr(d, name) for _, d in kept]
        return torch.from_numpy(np.stack(rows).astype(dtype, copy=False) if rows
                                else np.zeros((0, *shapes[name]), dtype))

    return DecodedSplit(
        index=torch.tensor([row for row, _ in kept], dtype=torch.int64),
        frames=stack("frames", np.uint8), fbank=stack("fbank", np.float16),
        has_audio=torch.tensor([d.has_audio for _, d in kept], dtype=torch.bool),
        waveform=stack("waveform", np.float32) if plan.keep_waveform else None, skipped=skipped,
        has_video=torch.tensor([d.has_video for _, d in kept], dtype=torch.bool),
        padded_frames=torch.tensor([d.padded_frames for _, d in kept], dtype=torch.int32),
        padded_audio_s=torch.tensor([d.padded_audio_s for _, d in kept], dtype=torch.float32),
    )


# ------------------------------------------------------------------------------------------------ the store


class _Partial:
    """``<split>.partial/``: the preallocated row arrays, the plan they were made for and the chunk records."""

    def __init__(self, path: Path, plan: SplitPlan, chunk: int) -> None:
        self.path, self.plan = path, plan
        want = {"version": CACHE_VERSION, "rows": [r for r, _, _ in plan.jobs], "paths": [p for _, p, _ in plan.jobs],
                "shapes": {k: list(v) for k, v in plan.shapes().items()}}
        try:
            found = json.loads((path / "plan.json").read_text())
        except (OSError, ValueError):
            found = None
        if isinstance(found, dict) and {k: found.get(k) for k in want} == want:
            self.chunk = int(found["chunk"])  # a resumed prepare keeps the chunks it recorded
            self.offsets = {k: int(v) for k, v in found["offsets"].items()}
        else:
            self.chunk = chunk
            self._create(want)
        self.records = path / "chunks"

    def _create(self, plan_json: dict[str, Any]) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        (self.path / "chunks").mkdir(parents=True)
        n = len(self.plan.jobs)
        dtypes = {"frames": np.uint8, "fbank": np.float16, "waveform": np.float32}
        self.offsets = {}
        for name, shape in self.plan.shapes().items():  # sparse files: rows never written (skipped clips) cost nothing
            array = np.lib.format.open_memmap(self.path / f"{name}.npy", mode="w+", dtype=dtypes[name],
                                              shape=(n, *shape))
            self.offsets[name] = int(array.offset)
            del array
            fsync_path(self.path / f"{name}.npy")
        fsync_path(self.path)
        atomic_write(self.path / "plan.json", lambda f: f.write(json.dumps(
            {**plan_json, "chunk": self.chunk, "offsets": self.offsets}).encode()))

    def chunks(self) -> int:
        return -(-len(self.plan.jobs) // self.chunk)

    def record_path(self, c: int) -> Path:
        return self.records / f"{c:06d}.json"

    def done(self) -> set[int]:
        out = set()
        for c in range(self.chunks()):
            try:
                entries = json.loads(self.record_path(c).read_text())
            except (OSError, ValueError):
                continue
            if isinstance(entries, list) and len(entries) == len(self.positions(c)):
                out.add(c)
        return out

    def positions(self, c: int) -> range:
        return range(c * self.chunk, min((c + 1) * self.chunk, len(self.plan.jobs)))


def prepare_split(cache: SplitCache, split: str, plan: SplitPlan, audio: AudioFeatures, *,
                  missing_modality: str = "absent", on_error: str = "raise", workers: int = 1,
                  min_parallel: int = PARALLEL_DECODE_MIN, chunk: int = CHUNK_CLIPS,
                  progress: bool = False) -> tuple[DecodedSplit, SplitStats]:
    """Decode ``plan`` into the store's ``<split>/`` folder (resuming an interrupted prepare) and load it."""
    final = cache.path(split)
    cache.write_meta()
    with set_lock(final):
        start = time.perf_counter()
        data = read_split(final)
        if data is not None:  # another process completed it while this one waited for the lock
            return data, SplitStats(split, len(plan.jobs), 0, 0, len(data), len(data.skipped), 0.0, cached=True)
        partial = _Partial(cache.dir / f"{split}.partial", plan, chunk)
        done = partial.done()
        todo = [pos for c in range(partial.chunks()) if c not in done for pos in partial.positions(c)]
        resumed = len(plan.jobs) - len(todo)
        shown = PrepareProgress(len(plan.jobs), resumed, f"[data] prepare {split}") if progress else None
        _decode_into(partial, todo, audio, missing_modality=missing_modality, on_error=on_error, workers=workers,
                     min_parallel=min_parallel, progress=shown)
        data = _complete(partial, final)
        seconds = time.perf_counter() - start
        if shown is not None:
            shown.close()
        shutil.rmtree(partial.path, ignore_errors=True)
        return data, SplitStats(split, len(plan.jobs), len(todo), resumed, len(data), len(data.skipped), seconds)


def _decode_into(partial: _Partial, todo: list[int], audio: AudioFeatures, *, missing_modality: str, on_error: str,
                 workers: int, min_parallel: int, progress: PrepareProgress | None) -> None:
    """Decode the clips at positions ``todo`` into the partial arrays; record each chunk once its rows are durable."""
    plan = partial.plan
    shapes = plan.shapes()
    fds = {name: os.open(partial.path / f"{name}.npy", os.O_RDWR) for name in shapes}
    row_bytes = {name: int(np.prod(shape)) * {"frames": 1, "fbank": 2, "waveform": 4}[name]
                 for name, shape in shapes.items()}
    jobs = [(pos, plan.jobs[pos][1], plan.jobs[pos][2]) for pos in todo]
    entries: list[list[Any]] = []
    try:
        for pos, result in decode_clips(jobs, audio, keep_waveform=plan.keep_waveform, workers=workers,
                                        min_parallel=min_parallel):
            path = plan.jobs[pos][1]
            reason = judge(path, result, missing_modality=missing_modality, on_error=on_error)
            if reason is None:
                for name, fd in fds.items():
                    os.pwrite(fd, np.ascontiguousarray(getattr(result, name)).tobytes(),
                              partial.offsets[name] + pos * row_bytes[name])
                entries.append([result.has_audio, result.has_video, result.padded_frames, result.padded_audio_s,
                                None])
            else:
                entries.append([False, False, 0, 0.0, reason])
            c = pos // partial.chunk
            if pos == partial.positions(c)[-1]:  # the chunk's last clip (results come in order)
                for fd in fds.values():
                    os.fsync(fd)
                record = json.dumps(entries).encode()
                atomic_write(partial.record_path(c), lambda f: f.write(record))
                entries = []
            if progress is not None:
                progress.update(1)
    finally:
        for fd in fds.values():
            os.close(fd)
    fsync_path(partial.records)


def _complete(partial: _Partial, final: Path) -> DecodedSplit:
    """All chunks recorded: compact the kept rows into a new folder, write the per-clip arrays, rename it into place."""
    plan = partial.plan
    entries = [e for c in range(partial.chunks()) for e in json.loads(partial.record_path(c).read_text())]
    kept = [pos for pos, e in enumerate(entries) if e[4] is None]
    skipped = [(plan.jobs[pos][1], e[4]) for pos, e in enumerate(entries) if e[4] is not None]
    tmp = final.parent / f".{final.name}.final"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name in plan.shapes():
        source = partial.path / f"{name}.npy"
        if len(kept) == len(entries):
            try:
                os.link(source, tmp / f"{name}.npy")  # nothing to compact: the same file under the final name
                continue
            except OSError:
                pass
        _copy_rows(source, tmp / f"{name}.npy", kept)
    small = {"index": (np.int64, [plan.jobs[p][0] for p in kept]),
             "has_audio": (np.bool_, [entries[p][0] for p in kept]),
             "has_video": (np.bool_, [entries[p][1] for p in kept]),
             "padded_frames": (np.int32, [entries[p][2] for p in kept]),
             "padded_audio_s": (np.float32, [entries[p][3] for p in kept])}
    for name, (dtype, values) in small.items():
        np.save(tmp / f"{name}.npy", np.asarray(values, dtype=dtype).reshape(len(kept)), allow_pickle=False)
    complete_split(tmp, final, skipped, len(kept))
    data = read_split(final)
    if data is None:
        raise RuntimeError(f"{final}: the split just written cannot be read back")
    return data


def _copy_rows(source: Path, dest: Path, rows: list[int], block: int = 256) -> None:
    """``dest`` = the ``rows`` of the .npy ``source``, copied in runs of consecutive rows (bounded memory)."""
    src = np.load(source, mmap_mode="r")
    out = np.lib.format.open_memmap(dest, mode="w+", dtype=src.dtype, shape=(len(rows), *src.shape[1:]))
    k = 0
    while k < len(rows):
        j = k
        while j + 1 < len(rows) and j + 1 - k < block and rows[j + 1] == rows[j] + 1:
            j += 1
        out[k : j + 1] = src[rows[k] : rows[j] + 1]
        k = j + 1
    out.flush()
    del out, src


# ------------------------------------------------------------------------------------------------ progress


class PrepareProgress(ConsoleLine):
    """Progress of one split on stderr: a line rewritten in place on a terminal, otherwise one line every
    ``every_s`` seconds (logs); ``close`` ends the in-place line."""

    def __init__(self, total: int, already: int, label: str, stream: Any = None,
                 every_s: float = PROGRESS_EVERY_S) -> None:
        self.total, self.already, self.label, self.stream, self.every_s = total, already, label, stream, every_s
        self.done, self.start = 0, time.perf_counter()
        self.shown = self.start

    def update(self, clips: int) -> None:
        self.done += clips
        now = time.perf_counter()
        if not self._tty() and now - self.shown < self.every_s:
            return
        self.shown = now
        rate = self.done / (now - self.start) if now > self.start else float("inf")
        left = self.total - self.already - self.done
        n = self.already + self.done
        line = (f"{self.label}: {n}/{self.total} clips ({100 * n / max(self.total, 1):.0f} %), {rate:.1f} clips/s, "
                f"~{left / rate if rate > 0 else float('inf'):.0f} s left")
        self._show(line)

    def close(self) -> None:
        if self._tty():
            print("\r\033[K", end="", file=self._out(), flush=True)


# ------------------------------------------------------------------------------------------------ the command


@dataclass
class PrepareReport:
    """``prepare_config``'s result: one ``SplitStats`` per split and the corrupted test splits computed."""

    dataset: str
    store: Path
    splits: list[SplitStats]
    conditions: list[tuple[str, float]]  # (condition, seconds) computed by this call
    conditions_cached: list[str]

    def lines(self) -> list[str]:
        out = [f"[data] {self.dataset} {s.line()}" for s in self.splits]
        if self.conditions or self.conditions_cached:
            parts = [f"{name} in {seconds:.1f} s" for name, seconds in self.conditions]
            parts += [f"{name} (already prepared)" for name in self.conditions_cached]
            out.append(f"[data] corrupted test splits: {', '.join(parts)}")
        out.append(f"[data] store: {self.store}")
        return out


def prepare_config(cfg: DictConfig, *, workers: int | None = None, progress: bool = True,
                   chunk: int = CHUNK_CLIPS) -> PrepareReport:
    """Decode a run config's data into the store: every split, then each corrupting test condition of
    ``eval.conditions``. ``workers`` decode processes (default: the machine's cores)."""
    from fusionbench.config import dataset_name
    from fusionbench.data.datamodule import AVDataModule
    from fusionbench.evaluate.conditions import parse_condition

    if not cfg.data.cache_dir:
        raise UserError("data.cache_dir is empty: there is no store to prepare into (give it a folder)")
    workers = max(1, os.cpu_count() or 1) if workers is None else int(workers)
    conditions = [parse_condition(name) for name in cfg.eval.conditions]
    datamodule = AVDataModule(cfg.data, seed=cfg.seed, conditions=conditions, decode_workers=workers,
                              progress=progress, chunk_clips=chunk, min_parallel=2,
                              test_windows=cfg.eval.test_windows)
    datamodule.setup()
    computed, cached = [], []
    for condition in conditions:
        if condition.corrupts:
            before, start = datamodule.corrupt_count, time.perf_counter()
            datamodule.corrupted_windows("test", condition)
            if datamodule.corrupt_count > before:
                computed.append((condition.name, time.perf_counter() - start))
            else:
                cached.append(condition.name)
    stats = [datamodule.prepare_stats[split] for split in datamodule.prepare_stats]
    return PrepareReport(dataset_name(cfg), datamodule.cache.dir, stats, computed, cached)
