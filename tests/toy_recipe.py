"""A tiny regression recipe for trainer tests (and the 2-process accelerate run)."""
import sys

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch.utils.data import TensorDataset

from genstudio.train import Recipe, TrainConfig, train


class ToyModel(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, dim: int = 8):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, 32), torch.nn.GELU(), torch.nn.Linear(32, 1))

    def forward(self, x):
        return self.net(x)


def toy_recipe(output_dir, steps=20, **kw) -> Recipe:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = (x[:, :1] * 2 - x[:, 1:2]).tanh()
    torch.manual_seed(0)
    model = ToyModel()

    def loss_fn(m, batch):
        xb, yb = batch
        return torch.nn.functional.mse_loss(m(xb).float(), yb)

    cfg = TrainConfig(output_dir=str(output_dir), steps=steps, batch_size=16, lr=1e-2, save_every=5,
                      log_every=5, progress=False, **kw)
    return Recipe(model, TensorDataset(x, y), loss_fn, cfg, name="toy")


def export(run_dir, to, dtype):
    """The toy recipe's exporter (tests point genstudio.export.find_exporter at it)."""
    from genstudio.export import export_model
    export_model(ToyModel, run_dir, to, dtype)


if __name__ == "__main__":  # accelerate launch --num_processes 2 tests/toy_recipe.py OUT
    from accelerate import PartialState
    out = sys.argv[1]
    recipe = toy_recipe(out, steps=6, ema_decay=None, mixed_precision="no")
    train(recipe)
    state = PartialState()
    # Each rank reports its own in-memory weights after training; the test compares them.
    torch.save(recipe.model.state_dict(), f"{out}/rank{state.process_index}.pt")
