"""Training throughput of each model architecture (samples per second), CPU and GPU if present.

    python -m benchmarks.bench_training [--threads 1] [--batch 16] [--steps 20]

Plain training (:func:`fedmi.client.training.loop.train_local`, bf16 autocast on a GPU) and DP-SGD
(:func:`fedmi.client.training.loop.train_local` with :class:`fedmi.client.privacy.dp_sgd.DPSGD`: Poisson sampling, per-sample clipping, noise,
the model's own ``grad_sample_mode``). Synthetic inputs on the task grid; the numbers are
for comparing later changes, not a test.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from fedmi.client.privacy.dp_sgd import DPSGD
from fedmi.client.training.loop import TrainSettings, train_local
from fedmi.shared.model import ARCHITECTURES, ModelSpec, build_model


def throughput(
    device: torch.device, batch: int, steps: int, arch: str = "regional", dp: bool = False
) -> float:
    """Samples per second of one epoch over ``batch × steps`` synthetic scans."""
    spec = ModelSpec(arch=arch)
    n = batch * steps
    x = torch.randn(n, *spec.in_shape)
    if arch == "regional":
        x = x.abs() + 0.5  # regional ratios are positive
    y = (torch.rand(n) > 0.5).float()
    settings = TrainSettings(
        epochs=1, batch_size=batch, augment=False, learning_rate=1e-3, optimizer="adamw"
    )

    def once(xs: torch.Tensor, ys: torch.Tensor) -> None:
        model = build_model(spec)
        if dp:
            train_local(
                model,
                xs,
                ys,
                settings,
                privacy=DPSGD(noise_multiplier=1.0, max_grad_norm=1.0),
                device=device,
            )
        else:
            train_local(model, xs, ys, settings, device=device)

    once(x[: batch * 2], y[: batch * 2])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    once(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--skip-cpu", action="store_true", help="only the GPU (when there is one)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = {"cpu_threads": args.threads, "batch": args.batch}
    devices = [("cpu", torch.device("cpu"), args.steps)]
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
        devices.append(("gpu", torch.device("cuda"), args.steps * 10))
    for arch in ARCHITECTURES:
        for name, device, steps in devices:
            if name == "cpu" and args.skip_cpu:
                continue
            plain = throughput(device, args.batch, steps, arch)
            private = throughput(device, args.batch, steps, arch, dp=True)
            out[f"{arch}_{name}_samples_per_s"] = round(plain, 1)
            out[f"{arch}_{name}_dp_samples_per_s"] = round(private, 1)
            out[f"{arch}_{name}_dp_time_ratio"] = round(plain / private, 2)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
