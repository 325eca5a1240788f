"""Worker of ``test_hf_backbone.py::test_torchrun_two_ranks_identical_parameters`` (not a test itself).

``python -m torch.distributed.run --nproc_per_node 2 tests/ddp_hf_worker.py BASE_DIR OUT_DIR``: builds the tiny
Qwen2-VL AttTok model from ``BASE_DIR`` on each rank, trains 3 iterations with MONAI's ``SupervisedTrainer``,
``AttTokTrainStep`` and the prototype EMA handler under ``DistributedDataParallel`` (gloo) with a
``DistributedSampler`` (each rank sees different samples), and writes every parameter and buffer to
``OUT_DIR/rank{r}.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from monai.data import DataLoader
from monai.engines import SupervisedTrainer
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from attok_monai.data.instructions import attok_collate
from attok_monai.engines.steps import AttTokTrainStep
from attok_monai.handlers import PrototypeEMAHandler
from attok_monai.losses import AttTokLoss
from attok_monai.networks.nets.attok_gptv import AttTokGPTv
from attok_monai.networks.nets.hf_qwen2vl import Qwen2VLBackbone
from attok_monai.optimizers import optimizer_param_groups
from tests.test_hf_backbone import VOCAB


def main(base: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    backbone = Qwen2VLBackbone.from_pretrained(base, min_pixels=56 * 56, max_pixels=56 * 56, max_length=128)
    model = AttTokGPTv(backbone, VOCAB)
    lora_b0 = next(p for n, p in model.named_parameters() if "lora_B" in n).detach().clone()
    # ACM theta is used in the loss outside forward: fine for DDP without find_unused_parameters (which would mark
    # it ready twice), as every trainable parameter gets a gradient (ACC's key projection has no bias for this reason).
    net = DistributedDataParallel(model)
    g = torch.Generator().manual_seed(0)
    data = [
        {"image": torch.rand(3, 56, 56, generator=g), "label": i % 3, "question": "what is the grade?", "id": str(i)}
        for i in range(12)
    ]
    sampler = DistributedSampler(data, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=2, sampler=sampler, collate_fn=attok_collate, num_workers=0)
    optimizer = torch.optim.AdamW(optimizer_param_groups(model, 1e-4), lr=1e-2)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, epoch_length=3, train_data_loader=loader, network=net,
        optimizer=optimizer, loss_function=AttTokLoss(), iteration_update=AttTokTrainStep(amp=False),
        train_handlers=[PrototypeEMAHandler(model.book)], decollate=False,
    )
    trainer.run()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state["__initial_lora_b__"] = lora_b0
    state["__final_lora_b__"] = next(p for n, p in model.named_parameters() if "lora_B" in n).detach().clone()
    torch.save(state, Path(out_dir) / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
