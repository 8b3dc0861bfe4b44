#!/usr/bin/python3
"""Makes the tree-ensemble fixtures in test/fixtures/trees/ (committed; CI does not run this).

Needs Debian's python3-xgboost, python3-sklearn and python3-onnx (apt), run with /usr/bin/python3:

    /usr/bin/python3 scripts/tree-fixtures.py

Writes, per fixture, the model file and <name>.data.json: feature names, the training records
(the calibration set the compiler quantizes on), the held-out records with their labels, and
the original library's predictions on them (margins / probabilities / values and classes).
The data are scikit-learn's bundled copies of the UCI sets (BSD-3-Clause).
"""
import json
import os

import numpy as np
import onnx
from onnx import helper, TensorProto
import sklearn
import xgboost as xgb
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'trees')
SEED = 7


def num(v):
    v = float(v)
    return int(v) if v.is_integer() else v


def rows(a):
    return [[num(v) for v in r] for r in a]


def write_data(name, features, xtr, xte, yte, expected, extra=None):
    doc = {
        'source': f'scikit-learn {sklearn.__version__} bundled data set; xgboost {xgb.__version__}; onnx {onnx.__version__}; scripts/tree-fixtures.py',
        'features': list(features),
        'train': rows(xtr),
        'test': rows(xte),
        'test_labels': [float(v) for v in yte],
        'expected': expected,
    }
    if extra:
        doc.update(extra)
    with open(os.path.join(OUT, f'{name}.data.json'), 'w') as f:
        json.dump(doc, f, separators=(',', ':'))
        f.write('\n')


def breast_cancer():
    d = load_breast_cancer()
    xtr, xte, ytr, yte = train_test_split(d.data, d.target, test_size=0.2, random_state=SEED, stratify=d.target)
    m = xgb.XGBClassifier(n_estimators=50, max_depth=4, learning_rate=0.3, tree_method='hist', objective='binary:logistic', random_state=SEED)
    m.fit(xtr, ytr)
    m.save_model(os.path.join(OUT, 'breast-cancer.xgb.json'))
    margin = m.predict(xte, output_margin=True)
    prob = m.predict_proba(xte)[:, 1]
    write_data('breast-cancer', d.feature_names, xtr, xte, yte, {
        'margin': [float(v) for v in margin],
        'probability': [float(v) for v in prob],
        'class': [int(v) for v in m.predict(xte)],
        'accuracy': float((m.predict(xte) == yte).mean()),
    })


def diabetes():
    d = load_diabetes(scaled=False)
    xtr, xte, ytr, yte = train_test_split(d.data, d.target, test_size=0.2, random_state=SEED)
    m = xgb.XGBRegressor(n_estimators=50, max_depth=3, learning_rate=0.1, tree_method='hist', objective='reg:squarederror', random_state=SEED)
    m.fit(xtr, ytr)
    m.save_model(os.path.join(OUT, 'diabetes.xgb.json'))
    pred = m.predict(xte)
    ss = ((yte - pred) ** 2).sum()
    st = ((yte - yte.mean()) ** 2).sum()
    write_data('diabetes', d.feature_names, xtr, xte, yte, {
        'value': [float(v) for v in pred],
        'r2': float(1 - ss / st),
    })


def forest_onnx(forest, n_features, classes):
    """A TreeEnsembleClassifier node built from the fitted trees' arrays (skl2onnx is not in Debian)."""
    a = {k: [] for k in ['nodes_treeids', 'nodes_nodeids', 'nodes_featureids', 'nodes_values', 'nodes_modes', 'nodes_truenodeids', 'nodes_falsenodeids',
                         'class_treeids', 'class_nodeids', 'class_ids', 'class_weights']}
    n_trees = len(forest.estimators_)
    for t, est in enumerate(forest.estimators_):
        tr = est.tree_
        for i in range(tr.node_count):
            leaf = tr.children_left[i] < 0
            a['nodes_treeids'].append(t)
            a['nodes_nodeids'].append(i)
            a['nodes_featureids'].append(0 if leaf else int(tr.feature[i]))
            a['nodes_values'].append(0.0 if leaf else float(tr.threshold[i]))
            a['nodes_modes'].append('LEAF' if leaf else 'BRANCH_LEQ')
            a['nodes_truenodeids'].append(0 if leaf else int(tr.children_left[i]))
            a['nodes_falsenodeids'].append(0 if leaf else int(tr.children_right[i]))
            if leaf:
                v = tr.value[i][0]
                p = v / v.sum()
                for c in range(len(classes)):
                    a['class_treeids'].append(t)
                    a['class_nodeids'].append(i)
                    a['class_ids'].append(c)
                    a['class_weights'].append(float(p[c] / n_trees))
    node = helper.make_node('TreeEnsembleClassifier', ['X'], ['label', 'probabilities'], domain='ai.onnx.ml',
                            classlabels_int64s=[int(c) for c in classes], post_transform='NONE', **a)
    graph = helper.make_graph([node], 'forest',
                              [helper.make_tensor_value_info('X', TensorProto.FLOAT, [None, n_features])],
                              [helper.make_tensor_value_info('label', TensorProto.INT64, [None]),
                               helper.make_tensor_value_info('probabilities', TensorProto.FLOAT, [None, len(classes)])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 15), helper.make_opsetid('ai.onnx.ml', 3)], producer_name='sealed tree-fixtures.py')
    onnx.checker.check_model(model)
    return model


def digits():
    d = load_digits()
    xtr, xte, ytr, yte = train_test_split(d.data, d.target, test_size=0.2, random_state=SEED, stratify=d.target)
    m = RandomForestClassifier(n_estimators=30, max_depth=4, random_state=SEED)
    m.fit(xtr, ytr)
    onnx.save(forest_onnx(m, d.data.shape[1], m.classes_), os.path.join(OUT, 'digits-rf.onnx'))
    proba = m.predict_proba(xte)
    write_data('digits', [f'pixel{i}' for i in range(64)], xtr, xte, yte, {
        'probability': [[round(float(v), 7) for v in r] for r in proba],
        'class': [int(v) for v in m.predict(xte)],
        'accuracy': float((m.predict(xte) == yte).mean()),
    })


if __name__ == '__main__':
    os.makedirs(OUT, exist_ok=True)
    breast_cancer()
    diabetes()
    digits()
    for f in sorted(os.listdir(OUT)):
        print(f, os.path.getsize(os.path.join(OUT, f)))
