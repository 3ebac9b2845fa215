"""Training throughput of each model architecture (samples per second), CPU and GPU if present.

    python -m benchmarks.bench_training [--threads 1] [--batch 16] [--steps 20]

Synthetic inputs on the task grid; the number is for comparing later changes, not a test.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from client.training import TrainSettings, train_local
from shared.model import ARCHITECTURES, ModelSpec, build_model


def throughput(device: torch.device, batch: int, steps: int, arch: str = "regional") -> float:
    spec = ModelSpec(arch=arch)
    model = build_model(spec)
    n = batch * steps
    x = torch.randn(n, *spec.in_shape)
    y = (torch.rand(n) > 0.5).float()
    settings = TrainSettings(epochs=1, batch_size=batch, augment=False)
    train_local(model, x[: batch * 2], y[: batch * 2], settings, device=device)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    train_local(model, x, y, settings, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = {"cpu_threads": args.threads, "batch": args.batch}
    for arch in ARCHITECTURES:
        cpu = throughput(torch.device("cpu"), args.batch, args.steps, arch)
        out[f"{arch}_cpu_samples_per_s"] = round(cpu, 1)
        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
            gpu = throughput(torch.device("cuda"), args.batch, args.steps * 10, arch)
            out[f"{arch}_gpu_samples_per_s"] = round(gpu, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
