"""Train the quickstart's DigitsCNN on the training split of scikit-learn's digits.

Run: python examples/train_digits_cnn.py   (writes examples/digits_cnn.pt, a state_dict)
The held-out split is modeldeploy's own (`digits_split`), so the quickstart evaluates on
samples the model never saw, with the same preprocessing as examples/quickstart.yaml.
"""

from pathlib import Path

import numpy as np
import torch
from digits_cnn import DigitsCNN
from modeldeploy_jobs.data import digits_split
from sklearn.datasets import load_digits
from torch import nn

HERE = Path(__file__).resolve().parent
EPOCHS = 40


def preprocess(images: np.ndarray) -> torch.Tensor:
    """As examples/quickstart.yaml: scale 1/16, mean 0.5, std 0.5, NCHW."""
    return torch.from_numpy(((images * 0.0625 - 0.5) / 0.5).astype(np.float32)[:, None])


def main() -> None:
    torch.manual_seed(0)
    digits = load_digits()
    train, test = digits_split()
    x_train, y_train = preprocess(digits.images[train]), torch.from_numpy(digits.target[train])
    x_test, y_test = preprocess(digits.images[test]), torch.from_numpy(digits.target[test])
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    loss = nn.CrossEntropyLoss()
    for _ in range(EPOCHS):
        model.train()
        for batch in torch.randperm(len(x_train)).split(64):
            optimizer.zero_grad()
            loss(model(x_train[batch]), y_train[batch]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    torch.save(model.state_dict(), HERE / "digits_cnn.pt")
    print(f"held-out accuracy {accuracy:.4f} on {len(test)} digits; wrote {HERE / 'digits_cnn.pt'}")


if __name__ == "__main__":
    main()
