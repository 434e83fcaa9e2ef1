"""Does CUDA IPC work on this machine, and how fast is the copy it would allow? (issue 18's device path)

Two processes, as a prefill and a decode pod would be: the first allocates a device buffer the
size of an 8K-token state of the 7B f16 bench model (~1 GiB) and shares it (PyTorch sends CUDA
tensors between processes with cudaIpcGetMemHandle / cudaIpcOpenMemHandle); the second opens it,
checks its contents and times a device-to-device copy into its own buffer, against the host path
the TCP hand-off takes (device -> pinned host -> device) in the same process. Prints one JSON line.

    python3 bench/gpu/cuda-ipc-check.py [MiB]
"""
import json
import sys
import time

import torch
import torch.multiprocessing as mp


def timed(fn, reps=5):
    best = float("inf")
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def child(q, answers):
    try:
        shared, expect = q.get(timeout=60)  # opened here through a CUDA IPC handle
        ok = abs(float(shared[:1024].sum()) - expect) < 1e-3
        mine = torch.empty_like(shared)
        s = timed(lambda: mine.copy_(shared))
        pinned = torch.empty(shared.numel(), dtype=shared.dtype, pin_memory=True)
        host = timed(lambda: (pinned.copy_(shared), mine.copy_(pinned)))
        answers.put({"ipc_open": True, "contents_ok": ok, "device_copy_gb_s": shared.numel() * shared.element_size() / s / 1e9,
                     "via_pinned_host_gb_s": shared.numel() * shared.element_size() / host / 1e9})
    except Exception as e:  # the answer says why IPC failed instead of hanging the parent
        answers.put({"ipc_open": False, "error": repr(e)})


def main():
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    if not torch.cuda.is_available():
        print(json.dumps({"cuda": False}))
        return
    ctx = mp.get_context("spawn")
    q, answers = ctx.Queue(), ctx.Queue()
    buf = torch.arange(mib * 2**20 // 2, device="cuda", dtype=torch.float16) % 7
    expect = float(buf[:1024].sum())
    p = ctx.Process(target=child, args=(q, answers))
    p.start()
    q.put((buf, expect))
    got = answers.get(timeout=120)
    p.join(timeout=30)
    got.update({"bytes": buf.numel() * 2, "device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda})
    print(json.dumps(got))


if __name__ == "__main__":
    main()
