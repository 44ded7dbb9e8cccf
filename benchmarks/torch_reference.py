"""What plain PyTorch reaches on this CPU for the workshop's model_0_0, without Keras.

The ceiling against which ``pipeline_speed.py --model-type model_0_0`` is read: the same
six 3x3 convolutions (16,16,32,32,64,64 filters, ReLU) and 1x1 softmax output, written
directly in ``torch.nn``, trained with Adam on random 160x192 slices (the dev cache's
axial size), in PyTorch's default NCHW layout and in its channels-last memory format.
Achieved FLOP/s (3x the forward convolutions, as ``pipeline_speed.py`` counts them) is
given as a share of the fp32 matmul rate measured in the same run.

    python benchmarks/torch_reference.py --batch-size 16 --steps 10
"""

from __future__ import annotations

import argparse

import torch
from _common import matmul_gflops, median_seconds

FILTERS = (16, 16, 32, 32, 64, 64)
HEIGHT, WIDTH = 160, 192
CLASSES = 3


def model_0_0() -> torch.nn.Sequential:
    """The workshop's model_0_0 in plain PyTorch (71,987 parameters for 3 classes)."""
    layers: list[torch.nn.Module] = []
    channels = 1
    for filters in FILTERS:
        layers += [torch.nn.Conv2d(channels, filters, 3, padding=1), torch.nn.ReLU()]
        channels = filters
    layers.append(torch.nn.Conv2d(channels, CLASSES, 1))
    return torch.nn.Sequential(*layers)


def forward_flops_per_slice() -> float:
    """2 x multiply-adds of the convolutions for one slice."""
    total, channels = 0.0, 1
    for filters in FILTERS:
        total += 2.0 * HEIGHT * WIDTH * 9 * channels * filters
        channels = filters
    return total + 2.0 * HEIGHT * WIDTH * channels * CLASSES


def step_seconds(layout: str, batch_size: int, steps: int) -> float:
    """Median seconds of one Adam training step."""
    torch.manual_seed(0)
    net = model_0_0()
    images = torch.randn(batch_size, 1, HEIGHT, WIDTH)
    labels = torch.randint(0, CLASSES, (batch_size, HEIGHT, WIDTH))
    if layout == "channels_last":
        net = net.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), 1e-4)

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(images), labels).backward()
        optimizer.step()

    for _ in range(3):  # warm-up
        step()
    return median_seconds(step, steps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"model_0_0 ({sum(p.numel() for p in model_0_0().parameters()):,} parameters), "
          f"batch {args.batch_size} of {HEIGHT}x{WIDTH}")
    for layout in ("NCHW", "channels_last"):
        seconds = step_seconds(layout, args.batch_size, args.steps)
        rate = matmul_gflops()
        achieved = 3 * forward_flops_per_slice() * args.batch_size / seconds / 1e9
        print(f"  {layout:>13}: {args.batch_size / seconds:.1f} slices/s, {achieved:.1f} GFLOP/s "
              f"= {achieved / rate:.0%} of the fp32 matmul rate measured now ({rate:.1f} GFLOP/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
