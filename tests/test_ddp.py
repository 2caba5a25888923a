"""Distributed data parallel on CPU: two gloo processes end with identical, trained weights."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from aef_lite import AEFConfig, AEFModel
from aef_lite.config import TrainConfig
from aef_lite.train import train


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, out: str, cfg: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    result = train(AEFConfig.tiny(), TrainConfig(**cfg))
    torch.save({"model": result.model.state_dict(), "text": result.text_tower.state_dict(),
                "history": result.history}, Path(out) / f"rank{rank}.pt")


def test_two_cpu_ranks_stay_in_sync(tmp_path: Path) -> None:
    cfg = dict(steps=3, batch_size=4, max_frames=4, log_every=1, val_every=1000, ckpt_every=1000,
               out_dir=str(tmp_path / "run"), progress=False)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), cfg), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for part in ("model", "text"):
        for k, v in r0[part].items():
            assert torch.equal(v, r1[part][k]), f"{part}.{k} differs between ranks"
    torch.manual_seed(TrainConfig().seed)
    initial = AEFModel(AEFConfig.tiny()).state_dict()
    changed = [k for k, v in r0["model"].items() if v.is_floating_point() and not torch.equal(v, initial[k])]
    assert changed, "training changed no weight"
    for prefix in ("decoders.s2", "decoders.landsat"):  # rank 0 saw Landsat, rank 1 Sentinel-2
        assert any(k.startswith(prefix) for k in changed), f"no {prefix} weight trained: gradients not shared"
    drop_timing = [[{k: v for k, v in h.items() if k != "steps_per_s"} for h in r["history"]] for r in (r0, r1)]
    assert drop_timing[0] == drop_timing[1], "logged losses are all-reduced"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["ckpt_000003.pt", "history.jsonl"]
