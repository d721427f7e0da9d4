"""Peak memory and time of forward+backward: chunked ``token_logprobs`` vs naive full logits.

Naive = ``logits = hidden @ weight.T``, ``log_softmax``, gather the label, entropy ``-(p * log p).sum``,
all [N, V] tensors kept by autograd. Chunked = :func:`archer.algo.token_logprobs` (default chunk).
Both compute the same outputs; the backward uses ``logp.sum() + 0.01 * entropy.sum()`` so both
gradient paths run.

Each (variant, shape) runs in its own subprocess. On CPU the peak is ``ru_maxrss`` of the child (its peak
mark reset through ``/proc/self/clear_refs`` after setup) minus its RSS after the inputs were created (so it counts everything forward+backward allocates, including
the returned gradients of hidden and weight, which both variants must produce); "working" subtracts
those gradient bytes. On CUDA (when present) the peak is ``torch.cuda.max_memory_allocated`` over the
same baseline. Time is the median of ``--repeats`` forward+backward runs after the measured one.

Usage: ``python benchmarks/logprobs_memory.py [--repeats 3] [--device cpu|cuda] [--qwen-n 1024]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

GIB = 2**30
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0) so ru_maxrss only sees what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _naive(hidden, weight, labels):
    import torch

    logits = hidden @ weight.T  # [N, V]
    logsm = torch.log_softmax(logits.float(), dim=-1)  # [N, V]
    logp = logsm.gather(1, labels[:, None]).squeeze(1)
    ent = -(logsm.exp() * logsm).sum(-1)
    return logp, ent


def _chunked(hidden, weight, labels):
    from archer.algo import token_logprobs

    return token_logprobs(hidden, weight, labels)


def child(variant: str, n: int, d: int, v: int, device: str, repeats: int) -> dict:
    import torch

    torch.manual_seed(0)
    fn = {"naive": _naive, "chunked": _chunked}[variant]
    # filled in place: no transient copies that would raise the peak before the measurement
    hidden = torch.empty(n, d, device=device).normal_(std=0.5).requires_grad_()
    weight = torch.empty(v, d, device=device).normal_(std=d**-0.5).requires_grad_()
    labels = torch.randint(0, v, (n,), device=device)

    def step() -> None:
        hidden.grad = None
        weight.grad = None
        logp, ent = fn(hidden, weight, labels)
        (logp.sum() + 0.01 * ent.sum()).backward()
        if device == "cuda":
            torch.cuda.synchronize()

    # warm-up on 8 rows: loads kernels and library pages so they are not counted as the variant's memory
    logp, ent = fn(hidden[:8], weight, labels[:8])
    (logp.sum() + 0.01 * ent.sum()).backward()
    hidden.grad = None
    weight.grad = None
    del logp, ent
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        reset = _reset_peak_rss()
        base = _rss_bytes()
        if not reset and resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 > base:
            print("warning: could not reset the peak RSS; the peak may be overstated", file=sys.stderr)
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    grads = (n * d + v * d) * 4
    return {
        "variant": variant,
        "n": n,
        "d": d,
        "v": v,
        "device": device,
        "peak_bytes": peak,
        "grad_bytes": grads,
        "first_s": first,
        "time_s": statistics.median(times) if times else first,
        "times_s": times,
    }


def run_child(variant: str, n: int, d: int, v: int, device: str, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--child", variant, str(n), str(d), str(v), device, str(repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child {variant} {n}x{d}x{v} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    # 2048: the naive variant peaks near 6.5 GiB RSS there (under the 8 GiB per-process budget of a
    # shared 24 GiB machine); raise it on a bigger machine
    parser.add_argument("--qwen-n", type=int, default=2048, help="N for the Qwen2.5-1.5B shapes")
    parser.add_argument("--only", choices=("all", "toy", "qwen"), default="all", help="which shapes to run")
    parser.add_argument(
        "--out", default=None, help="json artifact (default benchmarks/results/logprobs_memory.json)"
    )
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        variant, n, d, v, device, repeats = args.child
        print(json.dumps(child(variant, int(n), int(d), int(v), device, int(repeats))))
        return 0

    import torch

    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import _artifact as artifact_  # the parent only: the measured children stay free of it

    started = artifact_.start()
    artifact = []
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    shapes = [("toy", 4096, 256, 65536), ("Qwen2.5-1.5B", args.qwen_n, 1536, 151936)]
    shapes = [s for s in shapes if args.only == "all" or (args.only == "toy") == (s[0] == "toy")]
    header = (
        "| shape | N | d | V | device | variant | peak delta (GiB) | working (GiB) | time (s) "
        "| mem ratio (peak / working) | time ratio |"
    )
    print(header)
    print("|" + "---|" * 11)
    for label, n, d, v in shapes:
        res = {var: run_child(var, n, d, v, device, args.repeats) for var in ("naive", "chunked")}
        nv, ch = res["naive"], res["chunked"]
        artifact.append(
            {
                "shape": label,
                **res,
                "peak_ratio": nv["peak_bytes"] / max(ch["peak_bytes"], 1),
                "working_ratio": (nv["peak_bytes"] - nv["grad_bytes"])
                / max(ch["peak_bytes"] - ch["grad_bytes"], 1),
                # separate processes, one after the other: the per-repeat pairs share no state, so
                # the interval is of independent ratios
                "time_ratio": artifact_.ratio(ch["times_s"], nv["times_s"]) if ch["times_s"] else None,
                "time_ratio_of_medians": ch["time_s"] / nv["time_s"],
            }
        )
        for var in ("naive", "chunked"):
            r = res[var]
            work = r["peak_bytes"] - r["grad_bytes"]
            if var == "chunked":
                nv = res["naive"]
                ratio_peak = nv["peak_bytes"] / max(r["peak_bytes"], 1)
                ratio_work = (nv["peak_bytes"] - nv["grad_bytes"]) / max(work, 1)
                ratios = f"{ratio_peak:.1f}x / {ratio_work:.1f}x less | {r['time_s'] / nv['time_s']:.2f}x"
            else:
                ratios = "1 | 1"
            print(
                f"| {label} | {n} | {d} | {v} | {device} | {var} | {r['peak_bytes'] / GIB:.3f} "
                f"| {work / GIB:.3f} | {r['time_s']:.2f} | {ratios} |",
                flush=True,
            )
    settings = {"repeats": args.repeats, "qwen_n": args.qwen_n, "only": args.only, "device": device}
    path = artifact_.write_artifact(
        "logprobs_memory", {"settings": settings, "rows": artifact}, argv=argv, started=started, out=args.out
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
