"""The HW1 experiments the way a typical notebook reproduces them: the reference `vs_naive.py` measures against.

Written plainly on purpose, as most published reproductions are: a torchvision
`DataLoader` over `datasets.MNIST` with per-sample `ToTensor` and `Normalize`,
one model at a time, `torch.optim.Adam` with its defaults, one synchronous
`mlflow.log_metric` call per logged value, and Hessians from
`torch.autograd.functional.hessian`. The models are defined the way a notebook
writes them, layer by layer; built after the same `torch.manual_seed`, they
start from exactly the weights of hw1track's models. Where the notebook way
has a cheap variant that changes nothing, this takes it (evaluation at batch
1000 with `torch.no_grad`), so that the comparison is not against a straw man.

Every function returns the number of optimizer steps it took, counted in its
loop, so that the harness can check that both sides did the same work.
"""

from __future__ import annotations

from collections.abc import Sequence

import mlflow
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

TRANSFORM = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
EVAL_BATCH = 1000


class DNN(nn.Module):
    """784-500-50-10 (part1_2a, part1_2b)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 500)
        self.fc2 = nn.Linear(500, 50)
        self.fc3 = nn.Linear(50, 10)

    def forward(self, x):
        x = x.view(x.size(0), -1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class WideCNN(nn.Module):
    """conv 8 (3x3) - ReLU - max-pool 2 - dense `width` - ReLU - 10 (part1_3b)."""

    def __init__(self, width: int = 1000):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 14 * 14, width)
        self.fc2 = nn.Linear(width, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        x = x.view(x.size(0), -1)
        return self.fc2(F.relu(self.fc1(x)))


class FunctionNet(nn.Module):
    """1-10-10-10-1 (part1_2c)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(1, 10)
        self.fc2 = nn.Linear(10, 10)
        self.fc3 = nn.Linear(10, 10)
        self.fc4 = nn.Linear(10, 1)

    def forward(self, x):
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = F.relu(self.fc3(x))
        return self.fc4(x)


class ShallowNet(nn.Module):
    """1-500-1 (part1_2b's sinc fit)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(1, 500)
        self.fc2 = nn.Linear(500, 1)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


def mnist_loaders(root: str, batch_size: int, n_train: int | None, n_test: int | None):
    """Shuffled training batches, plus unshuffled evaluation loaders for the training and test sets."""
    train_set = datasets.MNIST(root, train=True, download=False, transform=TRANSFORM)
    test_set = datasets.MNIST(root, train=False, download=False, transform=TRANSFORM)
    if n_train:
        train_set = Subset(train_set, range(n_train))
    if n_test:
        test_set = Subset(test_set, range(n_test))
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True)
    train_eval_loader = DataLoader(train_set, batch_size=EVAL_BATCH)
    test_loader = DataLoader(test_set, batch_size=EVAL_BATCH)
    return train_loader, train_eval_loader, test_loader


def evaluate(model, loader):
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for images, labels in loader:
            outputs = model(images)
            total_loss += F.cross_entropy(outputs, labels, reduction="sum").item()
            correct += (outputs.argmax(dim=1) == labels).sum().item()
            n += labels.size(0)
    model.train()
    return total_loss / n, correct / n


def log_epoch(model, train_eval_loader, test_loader, epoch):
    train_loss, train_acc = evaluate(model, train_eval_loader)
    test_loss, test_acc = evaluate(model, test_loader)
    mlflow.log_metric("train_loss", train_loss, step=epoch)
    mlflow.log_metric("train_acc", train_acc, step=epoch)
    mlflow.log_metric("test_loss", test_loss, step=epoch)
    mlflow.log_metric("test_acc", test_acc, step=epoch)
    return test_acc


def train_classifier(model, loaders, epochs, lr=1e-3):
    """Adam on the cross-entropy, with train and test loss and accuracy logged before training and after each epoch."""
    train_loader, train_eval_loader, test_loader = loaders
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = 0
    test_acc = log_epoch(model, train_eval_loader, test_loader, 0)
    for epoch in range(1, epochs + 1):
        for images, labels in train_loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            steps += 1
        test_acc = log_epoch(model, train_eval_loader, test_loader, epoch)
    return steps, test_acc


def part1_2a(loaders, seeds, batch_size, epochs):
    """DNN 784-500-50-10 trained once per seed, each in its own nested run; returns (steps, test accuracies)."""
    total_steps, accuracies = 0, []
    with mlflow.start_run(run_name="part1_2a"):
        for i, seed in enumerate(seeds):
            with mlflow.start_run(run_name=f"dnn/run{i}", nested=True):
                mlflow.log_params({"model": "dnn", "seed": seed, "lr": 1e-3, "batch_size": batch_size,
                                   "epochs": epochs})
                torch.manual_seed(seed)
                model = DNN()
                steps, test_acc = train_classifier(model, loaders, epochs)
                total_steps += steps
                accuracies.append(test_acc)
    return total_steps, accuracies


def part1_3b_widest(loaders, seed, batch_size, epochs, width=1000):
    """The widest CNN of part1_3b; returns (steps, final test accuracy)."""
    with mlflow.start_run(run_name=f"dense{width}"):
        mlflow.log_params({"width": width, "seed": seed, "lr": 1e-3, "batch_size": batch_size, "epochs": epochs})
        torch.manual_seed(seed)
        model = WideCNN(width)
        return train_classifier(model, loaders, epochs)


def flat_loss(model, x, y):
    """The MSE as a function of one flat vector holding all of `model`'s parameters."""
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]

    def loss(theta):
        params = {name: piece.view(shape) for name, piece, shape in zip(names, torch.split(theta, sizes), shapes)}
        return F.mse_loss(functional_call(model, params, (x,)), y)

    return loss


def part1_2c(x, y, seeds, phase1_steps, phase2_steps, lr=1e-3, phase2_lr=1e-5):
    """Each net alone: Adam on the MSE, then Adam on ‖∇L‖², then the full Hessian and its eigenvalues.

    Returns (steps, per-model summaries) with the same keys as hw1track's part1_2c.
    """
    steps, summaries = 0, []
    with mlflow.start_run(run_name="part1_2c"):
        for i, seed in enumerate(seeds):
            torch.manual_seed(seed)
            model = FunctionNet().double()
            optimizer = torch.optim.Adam(model.parameters(), lr=lr)
            for _ in range(phase1_steps):
                optimizer.zero_grad()
                loss = F.mse_loss(model(x), y)
                loss.backward()
                optimizer.step()
                steps += 1
            optimizer = torch.optim.Adam(model.parameters(), lr=phase2_lr)
            for _ in range(phase2_steps):
                optimizer.zero_grad()
                loss = F.mse_loss(model(x), y)
                grads = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
                grad_norm_squared = sum((g ** 2).sum() for g in grads)
                grad_norm_squared.backward()
                optimizer.step()
                steps += 1

            loss_of = flat_loss(model, x, y)
            theta = torch.cat([p.detach().flatten() for p in model.parameters()]).requires_grad_()
            final_loss = loss_of(theta)
            (gradient,) = torch.autograd.grad(final_loss, theta)
            hessian = torch.autograd.functional.hessian(loss_of, theta.detach())
            eigenvalues = torch.linalg.eigvalsh((hessian + hessian.T) / 2)
            summary = {"final_loss": final_loss.item(), "final_grad_norm": gradient.norm().item(),
                       "minimal_ratio": (eigenvalues > 0).double().mean().item(),
                       "lambda_min": eigenvalues.min().item(), "lambda_max": eigenvalues.max().item()}
            for key, value in summary.items():
                mlflow.log_metric(key, value, step=i)
            summaries.append(summary)
    return steps, summaries


def part1_2b_sinc(x, y, seed, iterations, lr=1e-3):
    """Full-batch Adam on sinc, logging loss and gradient norm at every iteration and the train loss after it."""
    torch.manual_seed(seed)
    model = ShallowNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = 0
    with mlflow.start_run(run_name="sinc/1-500-1"):
        with torch.no_grad():
            mlflow.log_metric("train_loss", F.mse_loss(model(x), y).item(), step=0)
        for iteration in range(1, iterations + 1):
            optimizer.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            grad_norm = torch.norm(torch.stack([p.grad.norm() for p in model.parameters()]))
            optimizer.step()
            steps += 1
            mlflow.log_metric("loss", loss.item(), step=iteration)
            mlflow.log_metric("grad_norm", grad_norm.item(), step=iteration)
            with torch.no_grad():
                mlflow.log_metric("train_loss", F.mse_loss(model(x), y).item(), step=iteration)
    return steps


def minimise_one_at_a_time(models: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor, *, objective: str,
                           steps: int, lr: float, stop_below: float | None = None,
                           loss=F.mse_loss) -> list[list[tuple[float, float]]]:
    """part1_2c's training one model at a time with torch.optim.Adam: (loss, grad norm) after each of its updates.

    The reference the stacked path (`hw1track.training.full_batch.minimise`) must
    reproduce; tests and benchmarks compare the two.
    """
    records = []
    for model in models:
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=lr, foreach=True)
        record = []
        for step in range(steps + 1):  # the last measurement is at the weights after the last update
            value = loss(model(x), y)
            grads = torch.autograd.grad(value, params, create_graph=objective == "squared_grad_norm")
            squared_norm = sum(g.pow(2).sum() for g in grads)
            record.append((value.item(), squared_norm.sqrt().item()))
            if step == steps or stop_below is not None and squared_norm.sqrt().item() < stop_below:
                break
            if objective == "squared_grad_norm":
                grads = torch.autograd.grad(squared_norm, params)
            for p, g in zip(params, grads):
                p.grad = g.detach()
            optimizer.step()
        records.append(record)
    return records
