"""PyTorch's half of benches/scripts/trainer_vs_pytorch.sh (issue 13, item 7).

Trains the trainer bench's reference MMoE with PyTorch (CPU) on exactly the
rows our trainer trains on (written by `trainer_vs_pytorch write DIR`) and
prints the examples/s of each epoch as one JSON line, like the Rust side.

The model is ours, layer for layer (crates/trainer/src/model.rs): the dense
features standardised with the rows' mean and standard deviation; one
embedding per sparse field (the candidate and query videos share a table,
as do their topics); a shared bottom layer; 8 experts of two layers; one
softmax gate per task over the experts, with gate dropout (a dropped
expert's logit gets -1e9); towers 64 -> 32 -> 1 per task; a shallow tower
(a position x device bias per task, added to the debiased tasks' logits in
training); per task the masked mean of binary cross-entropy on logits or
squared error; each task's last bias starts at its base rate. AdamW on the dense parameters; the embedding tables are
sparse (`nn.Embedding(sparse=True)` with `SparseAdam`), PyTorch's own form of
our lazy Adam over the rows a batch touched.

An epoch is 8 batches of 512 rows in order, timed from the first batch's
slicing to the last optimiser step (forward, loss, backward, updates and the
loss read-back); the first epoch is a warm-up and is not reported.
"""

import argparse
import json
import pathlib
import time

import numpy as np
import torch
from torch import nn


def load(directory):
    d = pathlib.Path(directory)
    h = json.loads((d / "rows.json").read_text())
    n, t = h["rows"], len(h["tasks"])
    rows = {
        "dense": np.fromfile(d / "dense.f32", dtype="<f4").reshape(n, h["dense"]),
        "sparse": np.fromfile(d / "sparse.i64", dtype="<i8").reshape(n, h["sparse"]),
        "labels": np.fromfile(d / "labels.f32", dtype="<f4").reshape(n, t),
        "mask": np.fromfile(d / "mask.f32", dtype="<f4").reshape(n, t),
        "position": np.fromfile(d / "position.u32", dtype="<u4").astype(np.int64),
        "device": np.fromfile(d / "device.u8", dtype="u1").astype(np.int64),
    }
    return h, {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in rows.items()}


class Mmoe(nn.Module):
    def __init__(self, h, rows):
        super().__init__()
        dim, e = h["embedding_dim"], h["experts"]
        first, second = h["expert_layers"]
        tasks = h["tasks"]
        t = len(tasks)
        self.field_table = h["field_table"]
        self.tables = nn.ModuleList(nn.Embedding(r, dim, sparse=True) for r in h["table_rows"])
        for table in self.tables:
            nn.init.normal_(table.weight, std=0.01)
        dense = rows["dense"]
        self.register_buffer("mean", dense.mean(0, keepdim=True))
        self.register_buffer("inv_std", 1.0 / dense.std(0, keepdim=True).clamp_min(1e-6))
        width = h["dense"] + h["sparse"] * dim
        self.bottom = nn.Linear(width, h["bottom"])
        self.expert_first = nn.Linear(h["bottom"], e * first)
        self.expert_second_w = nn.Parameter(torch.randn(e, first, second) * (2.0 / first) ** 0.5)
        self.expert_second_b = nn.Parameter(torch.zeros(e, 1, second))
        self.gates = nn.Linear(h["bottom"], t * e)
        (tower,) = h["tower_layers"]
        self.tower_w1 = nn.Parameter(torch.randn(t, second, tower) * (2.0 / second) ** 0.5)
        self.tower_b1 = nn.Parameter(torch.zeros(t, 1, tower))
        self.tower_w2 = nn.Parameter(torch.randn(t, tower, 1) * (1.0 / tower) ** 0.5)
        # The last layer starts at each task's base rate, as ours does: the
        # logit of the observed mean for binary tasks, the mean for regression.
        mean = (rows["labels"] * rows["mask"]).sum(0) / rows["mask"].sum(0).clamp_min(1.0)
        binary = torch.tensor([bool(x["binary"]) for x in tasks])
        p = mean.clamp(1e-4, 1 - 1e-4)
        start = torch.where(binary, torch.log(p / (1 - p)), mean)
        self.tower_b2 = nn.Parameter(start.view(t, 1, 1).clone())
        self.p1 = h["max_position"] + 1
        self.bias = nn.Parameter(torch.zeros(h["devices"] * self.p1, t))
        self.register_buffer("debias", torch.tensor([[float(x["debias"]) for x in tasks]]))
        self.register_buffer("binary", torch.tensor([bool(x["binary"]) for x in tasks]))
        self.register_buffer("loss_weight", torch.tensor([float(x["loss_weight"]) for x in tasks]))
        self.e, self.t, self.first, self.gate_dropout = e, t, first, h["gate_dropout"]

    def forward(self, dense, sparse, position, device):
        b = dense.shape[0]
        parts = [(dense - self.mean) * self.inv_std]
        parts += [self.tables[table](sparse[:, f]) for f, table in enumerate(self.field_table)]
        x = torch.cat(parts, 1)
        hidden = torch.relu(self.bottom(x))
        z = torch.relu(self.expert_first(hidden)).view(b, self.e, self.first).transpose(0, 1)  # [E, B, h1]
        z = torch.relu(torch.baddbmm(self.expert_second_b, z, self.expert_second_w))  # [E, B, H]
        experts = z.transpose(0, 1)  # [B, E, H]
        logits = self.gates(hidden).view(b, self.t, self.e)
        if self.training and self.gate_dropout > 0:
            dropped = torch.rand(b, self.t, self.e) < self.gate_dropout
            dropped &= ~dropped.all(-1, keepdim=True)
            logits = logits.masked_fill(dropped, -1e9)
        mixed = torch.softmax(logits, -1) @ experts  # [B, T, H]
        y = torch.relu(torch.baddbmm(self.tower_b1, mixed.transpose(0, 1), self.tower_w1))
        main = torch.baddbmm(self.tower_b2, y, self.tower_w2).squeeze(-1).t()  # [B, T]
        cells = device * self.p1 + position.clamp(0, self.p1 - 1)
        return main + self.bias[cells] * self.debias

    def loss(self, logits, labels, mask):
        bce = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        sq = (logits - labels) ** 2
        per = torch.where(self.binary, bce, sq) * mask
        per_task = per.sum(0) / mask.sum(0).clamp_min(1.0)
        return (per_task * self.loss_weight).sum()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows", help="the folder `trainer_vs_pytorch write` filled")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(7)
    h, rows = load(args.rows)
    model = Mmoe(h, rows)
    tables = [p for n, p in model.named_parameters() if n.startswith("tables.")]
    dense = [p for n, p in model.named_parameters() if not n.startswith("tables.")]
    adamw = torch.optim.AdamW(dense, lr=h["learning_rate"], weight_decay=h["weight_decay"])
    sparse_adam = torch.optim.SparseAdam(tables, lr=h["learning_rate"])
    model.train()
    n, batch = h["rows"], h["batch"]
    rates = []
    for epoch in range(args.epochs + 1):
        start = time.perf_counter()
        total = 0.0
        for s in range(0, n, batch):
            sl = slice(s, min(s + batch, n))
            logits = model(rows["dense"][sl], rows["sparse"][sl], rows["position"][sl], rows["device"][sl])
            loss = model.loss(logits, rows["labels"][sl], rows["mask"][sl])
            adamw.zero_grad(set_to_none=True)
            sparse_adam.zero_grad(set_to_none=True)
            loss.backward()
            adamw.step()
            sparse_adam.step()
            total += loss.item()
        seconds = time.perf_counter() - start
        if not np.isfinite(total):
            raise SystemExit(f"loss is {total}: the model diverged")
        if epoch > 0:
            rates.append(n / seconds)
    print(
        json.dumps(
            {
                "trainer": f"PyTorch {torch.__version__}",
                "threads": str(args.threads),
                "examples_per_s": rates,
                "last_epoch_loss": total / ((n + batch - 1) // batch),
            }
        )
    )


if __name__ == "__main__":
    main()
