"""FSDP2 (``fully_shard``) on CPU with gloo: two processes, each with half of one global batch, train the sharded
factors of PoLAR, StelLA and LoRA + AdaPreLoRA to what one process trains with the whole batch
(docs/runtime.md, 'Sharded training (FSDP2)'). In fp64, so that what is left is round-off and the comparison
is sharp (in fp32 Adam's 1/(√v + ε) and StelLA's retraction lift the round-off to ≈ 6e-5 of the step). This file
is also the workers' script: ``python tests/test_fsdp.py RANK WORLD FOLDER``."""
import datetime
import os
import subprocess
import sys
from pathlib import Path

import torch

import polar_lib

CASES = {"polar": ("polar", {}), "stella": ("stella", {}), "lora+adaprelora": ("lora+adaprelora", {}),
         "adaprelora-exact": ("lora+adaprelora", {"exact_statistics": True})}  # its m×n G: summed over the ranks
STEPS, GLOBAL_BATCH, LENGTH = 3, 4, 12


def train(case: str, mesh=None, optimizer_first: bool = False) -> dict:
    """Train ``case`` for ``STEPS`` steps on the fp64 tiny Llama (r = 3 on q/v/up: A's rows split 2 + 1): one process
    with the whole batch, or, with a 1-D ``mesh``, this rank's rows of it, each decoder layer and the root
    ``fully_shard``-ed. Returns the trainable parameters before and after (whole) and AdaPreLoRA's statistics ρ, κ
    (replicated on every rank). ``optimizer_first``: the optimizer is made before sharding and its parameters
    switched to the sharded ones by name afterwards, as accelerate's FSDP2 ``prepare`` (the Trainer's path) does."""
    method, overrides = CASES[case]
    base, _ = polar_lib.load_model("tiny-llama", seed=0, dtype=torch.float64)
    model = polar_lib.prepare(base, method, r=3, target_modules=["q_proj", "v_proj", "up_proj"], lora_dropout=0.0)
    start = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    names = {id(p): name for name, p in model.named_parameters()}
    optimizer = polar_lib.make_optimizer(model, method, **overrides) if optimizer_first else None
    rank, world = 0, 1
    if mesh is not None:
        from torch.distributed.fsdp import fully_shard
        for layer in model.base_model.model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        rank, world = mesh.get_local_rank(), mesh.size()
    if optimizer_first:
        sharded = dict(model.named_parameters())
        for group in optimizer.param_groups:
            group["params"] = [sharded[names[id(p)]] for p in group["params"]]
    else:
        optimizer = polar_lib.make_optimizer(model, method, **overrides)
    for step in range(STEPS):
        ids = torch.randint(0, 1000, (GLOBAL_BATCH, LENGTH), generator=torch.Generator().manual_seed(step))
        ids = ids.chunk(world)[rank]  # equal lengths, no padding: the mean of the ranks' mean losses is the global one
        optimizer.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    final = {name: (p.full_tensor() if mesh is not None else p).detach().clone()
             for name, p in model.named_parameters() if p.requires_grad}
    statistics = {f"{key} {name}": value.clone() for key, state in optimizer.state.items() if isinstance(key, str)
                  for name, value in state.items() if name in ("rho", "kappa")}
    return {"start": start, "final": final, "statistics": statistics}


def launch_workers(folder: Path):
    """The two gloo workers, run to the end: (the processes, their stderr)."""
    folder.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on two cores
    workers = [subprocess.Popen([sys.executable, __file__, str(rank), "2", str(folder)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    try:
        errors = [worker.communicate(timeout=300)[1] for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    return workers, errors


def test_fsdp2_two_processes_equal_one_process(tmp_path):
    """2 gloo processes × 2 sequences (FSDP2) = 1 process × 4 sequences, for every case, after 3 steps, with the
    optimizer made after sharding and before it (the Trainer's order)."""
    references = {case: train(case) for case in CASES}
    for attempt in range(2):  # a worker killed by a signal (not by an assertion) on a busy machine: relaunch once
        workers, errors = launch_workers(tmp_path / f"attempt{attempt}")
        if not any(worker.returncode < 0 for worker in workers):
            break
    assert all(worker.returncode == 0 for worker in workers), "\n".join(
        f"rank {rank}: exit {worker.returncode}\n{error[-3000:]}" for rank, (worker, error) in enumerate(zip(workers, errors)))
    tmp_path = tmp_path / f"attempt{attempt}"
    for rank in range(2):
        sharded = torch.load(tmp_path / f"rank{rank}.pt")
        assert sharded.keys() == {(case, first) for case in CASES for first in (False, True)}
        for (case, optimizer_first), result in sharded.items():
            start, final = references[case]["start"], references[case]["final"]
            assert result["final"].keys() == final.keys() and any("lora_A" in name for name in final)
            for name in final:
                moved = torch.linalg.vector_norm(final[name] - start[name])
                assert moved > 0, (case, name)  # every factor and core moved in 3 steps
                difference = torch.linalg.vector_norm(result["final"][name] - final[name])
                # fp64 gradients summed in another order (two halves, then FSDP's average): |δg| ≲ 1e-16·max|g|
                # ≈ 1e-17; Adam passes at worst lr·|δg|/ε ≤ 4e-12 per entry and step, ≤ 3e-10 over 384 entries and
                # 3 steps, on steps ≥ 1.6e-3: ≤ 2e-7; measured ≤ 2e-13; 1e-6 (fp32: ≈ 6e-5; local-shard maths: ≈ 0.3)
                assert difference <= 1e-6 * moved, (case, optimizer_first, name, float(difference / moved))
            statistics = references[case]["statistics"]
            assert result["statistics"].keys() == statistics.keys() and ("adaprelora" in case) == bool(statistics)
            for key in statistics:  # ρ, κ from the whole factors: fp64 round-off, measured ≤ 1e-15 relative; 1e-10
                torch.testing.assert_close(result["statistics"][key], statistics[key], rtol=1e-10, atol=0,
                                           msg=(case, optimizer_first, key))


def main(rank: int, world: int, folder: str) -> None:
    """One FSDP2 worker: every case, results to ``folder/rank<rank>.pt``."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    mesh = init_device_mesh("cpu", (world,))
    torch.save({(case, first): train(case, mesh, first) for case in CASES for first in (False, True)},
               f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
